//! Start-up: send each operation once, check that the responses are correct XKS responses, and
//! keep the request bodies as templates for the run. Decrypt bodies carry the ciphertext of
//! an encrypt made here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::client::Connection;
use crate::signing::{RequestTemplate, Signer};
use crate::workload::{Mix, Operation, Payload, decrypt_body, operation_path, request_body};

/// Checked requests, ready to be sent again and again.
#[derive(Debug)]
pub(crate) struct Workload {
    /// The credential that signs every request.
    pub(crate) signer: Signer,
    /// One template per operation of the mix, indexed by [`Operation::index`].
    pub(crate) templates: [Option<RequestTemplate>; 4],
    /// The order in which each connection sends operations.
    pub(crate) cycle: Vec<Operation>,
}

/// Inputs of the start-up requests and of the templates.
#[derive(Debug)]
pub(crate) struct WorkloadSettings<'a> {
    /// `XksProxyUriPath`.
    pub(crate) uri_path: &'a str,
    /// External key id.
    pub(crate) key_id: &'a str,
    /// Operations and weights.
    pub(crate) mix: &'a Mix,
    /// Encrypt and decrypt inputs.
    pub(crate) payload: &'a Payload,
}

/// Sends each operation of the mix once, checks the responses and returns the templates.
///
/// # Errors
///
/// Returns an error naming the operation when a request fails or a response is not a correct
/// XKS response.
pub(crate) async fn prepare(
    connection: &mut Connection,
    signer: Signer,
    settings: &WorkloadSettings<'_>,
    timeout: Duration,
) -> anyhow::Result<Workload> {
    let mut id_bytes = [0u8; 8];
    keyhold::crypto::fill_random(&mut id_bytes).context("cannot draw a random request id")?;
    let request_id = format!("keyhold-bench-{}", hex_string(&id_bytes));
    let payload = settings.payload;

    let mut templates: [Option<RequestTemplate>; 4] = Default::default();
    for op in settings.mix.operations() {
        let body = if op == Operation::Decrypt {
            let encrypt = request_body(Operation::Encrypt, &request_id, payload);
            let response = exchange(
                connection,
                &signer,
                settings,
                Operation::Encrypt,
                &encrypt,
                timeout,
            )
            .await?;
            check_encrypt(&response, payload)
                .context("start-up encrypt returned a wrong response")?;
            decrypt_body(&request_id, payload, &response)
        } else {
            request_body(op, &request_id, payload)
        };
        let response = exchange(connection, &signer, settings, op, &body, timeout).await?;
        let checked = match op {
            Operation::Health => check_health(&response),
            Operation::Metadata => check_metadata(&response),
            Operation::Encrypt => check_encrypt(&response, payload),
            Operation::Decrypt => check_decrypt(&response, payload),
        };
        checked.with_context(|| format!("start-up {op} returned a wrong response"))?;
        let path = operation_path(settings.uri_path, settings.key_id, op);
        templates[op.index()] = Some(RequestTemplate::new(path, Bytes::from(body.to_string())));
    }
    Ok(Workload {
        signer,
        templates,
        cycle: settings.mix.cycle(),
    })
}

/// Sends one request and returns the JSON of a 200 response.
async fn exchange(
    connection: &mut Connection,
    signer: &Signer,
    settings: &WorkloadSettings<'_>,
    op: Operation,
    body: &Value,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let path = operation_path(settings.uri_path, settings.key_id, op);
    let mut template = RequestTemplate::new(path.clone(), Bytes::from(body.to_string()));
    let request = template
        .request(signer, unix_now())
        .map_err(anyhow::Error::msg)?;
    let (status, response) = connection
        .send(request, timeout)
        .await
        .map_err(|error| anyhow::anyhow!("start-up {op} request to {path} failed: {error}"))?;
    if status != StatusCode::OK {
        bail!(
            "start-up {op} request to {path} failed with HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&response[..response.len().min(600)])
        );
    }
    serde_json::from_slice(&response)
        .with_context(|| format!("start-up {op} response from {path} is not JSON"))
}

/// Returns the XKS `errorName` of an error response, or `HTTP <status>` when the body has none.
pub(crate) fn error_name(status: StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorBody {
        error_name: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) if !error.error_name.is_empty() => error.error_name,
        _ => format!("HTTP {}", status.as_u16()),
    }
}

/// Current time as Unix seconds, for `X-Amz-Date`.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

fn check_health(response: &Value) -> anyhow::Result<()> {
    for field in [
        "xksProxyFleetSize",
        "xksProxyVendor",
        "xksProxyModel",
        "ekmVendor",
        "ekmFleetDetails",
    ] {
        if response.get(field).is_none() {
            bail!("health response lacks {field}");
        }
    }
    Ok(())
}

fn check_metadata(response: &Value) -> anyhow::Result<()> {
    if response["keySpec"] != "AES_256" {
        bail!("keySpec is {}, expected \"AES_256\"", response["keySpec"]);
    }
    let usage = response["keyUsage"]
        .as_array()
        .context("keyUsage is not an array")?;
    for needed in ["ENCRYPT", "DECRYPT"] {
        if !usage.iter().any(|value| value == needed) {
            bail!("keyUsage {usage:?} lacks {needed}");
        }
    }
    if !response["keyStatus"].is_string() {
        bail!("keyStatus is missing");
    }
    Ok(())
}

fn decode_field(response: &Value, field: &str) -> anyhow::Result<Vec<u8>> {
    let text = response[field]
        .as_str()
        .with_context(|| format!("{field} is missing"))?;
    STANDARD
        .decode(text)
        .with_context(|| format!("{field} is not standard base64"))
}

fn check_encrypt(response: &Value, payload: &Payload) -> anyhow::Result<()> {
    let ciphertext = decode_field(response, "ciphertext")?;
    let iv = decode_field(response, "initializationVector")?;
    let tag = decode_field(response, "authenticationTag")?;
    let metadata = match response.get("ciphertextMetadata") {
        Some(_) => decode_field(response, "ciphertextMetadata")?,
        None => Vec::new(),
    };
    if ciphertext.len() != payload.plaintext.len() {
        bail!(
            "ciphertext is {} bytes for a {}-byte plaintext",
            ciphertext.len(),
            payload.plaintext.len()
        );
    }
    if iv.len() != 12 && iv.len() != 16 {
        bail!(
            "initializationVector is {} bytes, expected 12 or 16",
            iv.len()
        );
    }
    if tag.len() != 16 {
        bail!("authenticationTag is {} bytes, expected 16", tag.len());
    }
    if payload.integrity_value {
        let expected =
            keyhold::crypto::integrity_value(&payload.aad, &metadata, &iv, &ciphertext, &tag);
        let received = decode_field(response, "ciphertextDataIntegrityValue")?;
        if received != expected {
            bail!(
                "ciphertextDataIntegrityValue does not match SHA-256(AAD || metadata || IV || ciphertext || tag)"
            );
        }
    }
    Ok(())
}

fn check_decrypt(response: &Value, payload: &Payload) -> anyhow::Result<()> {
    if decode_field(response, "plaintext")? != payload.plaintext {
        bail!("decrypt returned a plaintext other than the one encrypted");
    }
    Ok(())
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn payload() -> Payload {
        Payload {
            plaintext: b"Hello World!".to_vec(),
            aad: b"project=nile,department=marketing".to_vec(),
            integrity_value: true,
            kms_key_arn: "arn".to_owned(),
        }
    }

    /// Returns the XKS specification's published encrypt example, with its integrity value.
    fn spec_encrypt_response() -> Value {
        json!({
            "ciphertext": "ghxkK1txeDNn3q8Y",
            "ciphertextMetadata": "a2V5X3ZlcnNpb249MQ==",
            "initializationVector": "HMrlRw85cAJUd5Ax",
            "authenticationTag": "vBxN2ncH1oEkR8WVXpmyYQ==",
            "ciphertextDataIntegrityValue": "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=",
        })
    }

    #[test]
    fn encrypt_check_accepts_spec_example() {
        assert!(check_encrypt(&spec_encrypt_response(), &payload()).is_ok());
    }

    #[test]
    fn encrypt_check_rejects_wrong_integrity_value() {
        let mut response = spec_encrypt_response();
        response["ciphertextDataIntegrityValue"] = json!(STANDARD.encode([0u8; 32]));
        let error = check_encrypt(&response, &payload()).expect_err("mismatch");
        assert!(error.to_string().contains("does not match"), "{error}");
    }

    #[test]
    fn encrypt_check_rejects_bad_lengths() {
        let mut short_tag = spec_encrypt_response();
        short_tag["authenticationTag"] = json!("AAAA");
        assert!(check_encrypt(&short_tag, &payload()).is_err());
        let mut missing = spec_encrypt_response();
        missing
            .as_object_mut()
            .expect("object")
            .remove("ciphertext");
        assert!(check_encrypt(&missing, &payload()).is_err());
    }

    #[test]
    fn metadata_check_needs_aes_and_both_usages() {
        let good = json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"});
        assert!(check_metadata(&good).is_ok());
        let encrypt_only =
            json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT"], "keyStatus": "ENABLED"});
        assert!(check_metadata(&encrypt_only).is_err());
    }

    #[test]
    fn error_name_from_body_or_status() {
        let body = br#"{"errorName":"ThrottlingException","errorMessage":"slow down"}"#;
        assert_eq!(
            error_name(StatusCode::TOO_MANY_REQUESTS, body),
            "ThrottlingException"
        );
        assert_eq!(error_name(StatusCode::BAD_GATEWAY, b"<html>"), "HTTP 502");
    }
}
