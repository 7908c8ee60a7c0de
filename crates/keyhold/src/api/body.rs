//! Request and response bodies of the XKS API, and their validation.
//!
//! Requests deserialize leniently: unknown fields, including new `requestMetadata` fields AWS
//! KMS may add, are ignored. Required fields are `Option`s checked by hand, so a missing field
//! gets a `ValidationException` that names it. Binary fields are standard base64 with padding.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::error::{ErrorName, XksError};
use super::route::Operation;

/// Largest plaintext or ciphertext accepted, in bytes; larger inputs get
/// `UnsupportedOperationException`. The XKS API requires at least 4,300.
pub const MAX_DATA_LEN: usize = 65_536;

/// Largest AAD accepted, in bytes, because the framing carries its length in 16 bits. The XKS
/// API requires at least 8,192.
pub const MAX_AAD_LEN: usize = crate::crypto::MAX_FRAMED_AAD_LEN;

/// Largest `ciphertextMetadata` the XKS API allows, in bytes.
pub const MAX_METADATA_LEN: usize = 20;

/// Largest `requestMetadata` string accepted. AWS KMS sends ARNs of up to 2,048 characters.
pub const MAX_METADATA_FIELD_LEN: usize = 4096;

/// The only `encryptionAlgorithm` of XKS v1.
const ENCRYPTION_ALGORITHM: &str = "AES_GCM";

/// The only `ciphertextDataIntegrityValueAlgorithm` of XKS v1.
const INTEGRITY_ALGORITHM: &str = "SHA_256";

/// `requestMetadata` as sent by AWS KMS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMetadata {
    /// KMS request id, opaque.
    pub kms_request_id: Option<String>,
    /// KMS API that caused the call.
    pub kms_operation: Option<String>,
    /// Caller's principal ARN.
    pub aws_principal_arn: Option<String>,
    /// KMS key ARN.
    pub kms_key_arn: Option<String>,
    /// Source VPC, for calls through a VPC endpoint.
    pub aws_source_vpc: Option<String>,
    /// Source VPC endpoint.
    pub aws_source_vpce: Option<String>,
    /// The AWS service that called KMS.
    pub kms_via_service: Option<String>,
}

/// A base64 field as sent, borrowed from the request body. When the JSON string had escapes it
/// is an owned copy instead, which is wiped when dropped because it may contain a plaintext.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Base64Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl std::ops::Deref for Base64Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for Base64Text<'_> {
    fn from(text: String) -> Self {
        Self(Cow::Owned(text))
    }
}

impl Drop for Base64Text<'_> {
    fn drop(&mut self) {
        if let Cow::Owned(text) = &mut self.0 {
            zeroize::Zeroize::zeroize(text);
        }
    }
}

/// A request body of any operation; fields an operation does not use are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestBody<'a> {
    /// Required in every operation.
    pub request_metadata: Option<RequestMetadata>,
    /// Encrypt input.
    #[serde(borrow)]
    pub plaintext: Option<Base64Text<'a>>,
    /// Encrypt and decrypt: must be `AES_GCM`.
    pub encryption_algorithm: Option<String>,
    /// Encrypt and decrypt, optional.
    #[serde(borrow)]
    pub additional_authenticated_data: Option<Base64Text<'a>>,
    /// Encrypt, optional: `SHA_256` asks for the integrity value.
    pub ciphertext_data_integrity_value_algorithm: Option<String>,
    /// Decrypt input.
    #[serde(borrow)]
    pub ciphertext: Option<Base64Text<'a>>,
    /// Decrypt, optional.
    pub ciphertext_metadata: Option<String>,
    /// Decrypt input.
    pub initialization_vector: Option<String>,
    /// Decrypt input.
    pub authentication_tag: Option<String>,
}

/// Decoded crypto inputs of an encrypt or decrypt request.
#[derive(Debug, Default)]
pub struct CryptoInputs {
    /// Plaintext (encrypt) or ciphertext (decrypt).
    pub data: crate::crypto::Wiped,
    /// AAD, if sent.
    pub aad: Option<Vec<u8>>,
    /// Decrypt: metadata, if sent.
    pub metadata: Option<Vec<u8>>,
    /// Decrypt: IV.
    pub iv: Vec<u8>,
    /// Decrypt: tag.
    pub tag: Vec<u8>,
    /// Encrypt: whether the integrity value was requested.
    pub integrity_value: bool,
}

/// Parses a body and checks the metadata fields the operation requires.
///
/// # Errors
///
/// Returns `ValidationException` naming the problem.
pub fn parse_request(body: &[u8], operation: Operation) -> Result<RequestBody<'_>, XksError> {
    // serde reads a struct from a JSON array too, taking the fields by position.
    let first = body
        .iter()
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return Err(XksError::validation(
            "request body is not a JSON object; send the XKS request fields in one object",
        ));
    }
    let request: RequestBody<'_> = serde_json::from_slice(body).map_err(|error| {
        XksError::validation(format!("request body is not a valid XKS request: {error}"))
    })?;
    let metadata = request
        .request_metadata
        .as_ref()
        .ok_or_else(|| XksError::validation("missing requestMetadata"))?;

    require(&metadata.kms_request_id, "requestMetadata.kmsRequestId")?;
    require(&metadata.kms_operation, "requestMetadata.kmsOperation")?;
    if operation != Operation::Health {
        require(
            &metadata.aws_principal_arn,
            "requestMetadata.awsPrincipalArn",
        )?;
    }
    if matches!(operation, Operation::Encrypt | Operation::Decrypt) {
        require(&metadata.kms_key_arn, "requestMetadata.kmsKeyArn")?;
    }
    let optional = [
        (&metadata.aws_source_vpc, "requestMetadata.awsSourceVpc"),
        (&metadata.aws_source_vpce, "requestMetadata.awsSourceVpce"),
        (&metadata.kms_via_service, "requestMetadata.kmsViaService"),
        (&metadata.kms_key_arn, "requestMetadata.kmsKeyArn"),
        (
            &metadata.aws_principal_arn,
            "requestMetadata.awsPrincipalArn",
        ),
    ];
    for (value, name) in optional {
        if value
            .as_ref()
            .is_some_and(|value| value.len() > MAX_METADATA_FIELD_LEN)
        {
            return Err(too_long_field(name));
        }
    }
    Ok(request)
}

/// Decodes and checks the inputs of an encrypt request.
///
/// # Errors
///
/// Returns `ValidationException` for a missing or malformed field and
/// `UnsupportedOperationException` for input larger than Keyhold supports.
pub fn encrypt_inputs(request: &RequestBody<'_>) -> Result<CryptoInputs, XksError> {
    check_algorithm(request)?;
    let integrity_value = match request.ciphertext_data_integrity_value_algorithm.as_deref() {
        None => false,
        Some(INTEGRITY_ALGORITHM) => true,
        Some(other) => {
            return Err(XksError::validation(format!(
                "unsupported ciphertextDataIntegrityValueAlgorithm {other:?}; the only value is \
                 {INTEGRITY_ALGORITHM}"
            )));
        }
    };
    let plaintext = required_base64(request.plaintext.as_deref(), "plaintext")?;
    check_data_len(plaintext.len(), "plaintext")?;
    Ok(CryptoInputs {
        data: crate::crypto::Wiped::new(plaintext),
        aad: optional_aad(request)?,
        integrity_value,
        ..CryptoInputs::default()
    })
}

/// Decodes and checks the inputs of a decrypt request.
///
/// # Errors
///
/// Returns `ValidationException` for a missing or malformed field and
/// `UnsupportedOperationException` for input larger than Keyhold supports.
pub fn decrypt_inputs(request: &RequestBody<'_>) -> Result<CryptoInputs, XksError> {
    check_algorithm(request)?;
    let ciphertext = required_base64(request.ciphertext.as_deref(), "ciphertext")?;
    check_data_len(ciphertext.len(), "ciphertext")?;
    let iv = required_base64(
        request.initialization_vector.as_deref(),
        "initializationVector",
    )?;
    if iv.len() != 12 && iv.len() != 16 {
        return Err(XksError::validation(format!(
            "initializationVector must be 12 or 16 bytes, got {}",
            iv.len()
        )));
    }
    let tag = required_base64(request.authentication_tag.as_deref(), "authenticationTag")?;
    if tag.len() != 16 {
        return Err(XksError::validation(format!(
            "authenticationTag must be 16 bytes, got {}",
            tag.len()
        )));
    }
    let metadata = request
        .ciphertext_metadata
        .as_deref()
        .map(|text| decode_base64(text, "ciphertextMetadata"))
        .transpose()?;
    if let Some(metadata) = &metadata
        && metadata.len() > MAX_METADATA_LEN
    {
        return Err(XksError::validation(format!(
            "ciphertextMetadata must be at most {MAX_METADATA_LEN} bytes, got {}",
            metadata.len()
        )));
    }
    Ok(CryptoInputs {
        data: crate::crypto::Wiped::new(ciphertext),
        aad: optional_aad(request)?,
        metadata,
        iv,
        tag,
        integrity_value: false,
    })
}

/// Encodes bytes as standard base64.
pub fn base64(bytes: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(bytes)
}

/// GetHealthStatus response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// Number of proxy instances.
    pub xks_proxy_fleet_size: u32,
    /// Proxy vendor.
    pub xks_proxy_vendor: &'static str,
    /// Proxy model and version.
    pub xks_proxy_model: String,
    /// Key manager vendor.
    pub ekm_vendor: &'static str,
    /// Key manager instances.
    pub ekm_fleet_details: Vec<FleetMember>,
}

/// One `ekmFleetDetails` entry.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetMember {
    /// Instance id.
    pub id: String,
    /// Instance model.
    pub model: String,
    /// `ACTIVE`, `DEGRADED` or `UNAVAILABLE`.
    pub health_status: &'static str,
}

/// GetKeyMetadata response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyMetadataResponse {
    /// `AES_256`.
    pub key_spec: &'static str,
    /// `ENCRYPT` and/or `DECRYPT`.
    pub key_usage: Vec<&'static str>,
    /// `ENABLED` or `DISABLED`.
    pub key_status: &'static str,
}

/// A response object whose values are all base64 strings, such as the encrypt and decrypt
/// responses. Values are encoded straight into the body: base64 needs no JSON escaping, so
/// there is no intermediate string and no scan for characters to escape.
#[derive(Debug)]
pub struct Base64Object {
    body: String,
}

impl Base64Object {
    /// Starts an object whose encoded values total about `value_bytes` bytes before encoding.
    pub fn with_capacity(value_bytes: usize) -> Self {
        let mut body = String::with_capacity(value_bytes / 3 * 4 + 192);
        body.push('{');
        Self { body }
    }

    /// Appends the field `name`, which must need no JSON escaping, with `value` in base64.
    #[must_use]
    pub fn field(mut self, name: &str, value: &[u8]) -> Self {
        debug_assert!(name.bytes().all(|byte| byte.is_ascii_alphanumeric()));
        if self.body.len() > 1 {
            self.body.push(',');
        }
        self.body.push('"');
        self.body.push_str(name);
        self.body.push_str("\":\"");
        base64_simd::STANDARD.encode_append(value, &mut self.body);
        self.body.push('"');
        self
    }

    /// Closes the object and returns the body.
    pub fn finish(mut self) -> Vec<u8> {
        self.body.push('}');
        self.body.into_bytes()
    }
}

fn require(value: &Option<String>, name: &str) -> Result<(), XksError> {
    match value {
        None => Err(XksError::validation(format!("missing {name}"))),
        Some(value) if value.is_empty() => Err(XksError::validation(format!("empty {name}"))),
        Some(value) if value.len() > MAX_METADATA_FIELD_LEN => Err(too_long_field(name)),
        Some(_) => Ok(()),
    }
}

fn too_long_field(name: &str) -> XksError {
    XksError::validation(format!(
        "{name} is longer than {MAX_METADATA_FIELD_LEN} characters"
    ))
}

fn check_algorithm(request: &RequestBody<'_>) -> Result<(), XksError> {
    match request.encryption_algorithm.as_deref() {
        Some(ENCRYPTION_ALGORITHM) => Ok(()),
        None => Err(XksError::validation("missing encryptionAlgorithm")),
        Some(other) => Err(XksError::validation(format!(
            "unsupported encryptionAlgorithm {other:?}; the only value is {ENCRYPTION_ALGORITHM}"
        ))),
    }
}

fn check_data_len(len: usize, name: &str) -> Result<(), XksError> {
    if len > MAX_DATA_LEN {
        return Err(XksError::new(
            ErrorName::UnsupportedOperation,
            format!("{name} of {len} bytes exceeds the maximum of {MAX_DATA_LEN} bytes"),
        ));
    }
    Ok(())
}

fn optional_aad(request: &RequestBody<'_>) -> Result<Option<Vec<u8>>, XksError> {
    let aad = request
        .additional_authenticated_data
        .as_deref()
        .map(|text| decode_base64(text, "additionalAuthenticatedData"))
        .transpose()?;
    if let Some(aad) = &aad
        && aad.len() > MAX_AAD_LEN
    {
        return Err(XksError::new(
            ErrorName::UnsupportedOperation,
            format!(
                "additionalAuthenticatedData of {} bytes exceeds the maximum of {MAX_AAD_LEN} bytes",
                aad.len()
            ),
        ));
    }
    Ok(aad)
}

fn required_base64(value: Option<&str>, name: &str) -> Result<Vec<u8>, XksError> {
    let text = value.ok_or_else(|| XksError::validation(format!("missing {name}")))?;
    decode_base64(text, name)
}

/// Decodes standard base64 with padding. `base64_simd` decodes a 4 KiB field about three
/// times as fast as the `base64` crate, and a test checks that both accept the same inputs.
fn decode_base64(text: &str, name: &str) -> Result<Vec<u8>, XksError> {
    base64_simd::STANDARD.decode_to_vec(text).map_err(|_| {
        XksError::validation(format!(
            "{name} is not valid base64; use the standard alphabet with '=' padding"
        ))
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The SIMD codec must accept and reject exactly what the `base64` crate's standard
        /// engine does, including bad padding and non-zero trailing bits.
        #[test]
        fn decoding_agrees_with_the_base64_crate(text in "[A-Za-z0-9+/=_ -]{0,40}") {
            let expected = STANDARD.decode(&text).ok();
            prop_assert_eq!(decode_base64(&text, "field").ok(), expected);
        }

        #[test]
        fn decoding_agrees_on_near_valid_text(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            position in any::<prop::sample::Index>(),
            replacement in "[A-Za-z0-9+/=]",
        ) {
            let mut text = STANDARD.encode(&bytes);
            if !text.is_empty() {
                let at = position.index(text.len());
                text.replace_range(at..=at, &replacement);
            }
            let expected = STANDARD.decode(&text).ok();
            prop_assert_eq!(decode_base64(&text, "field").ok(), expected);
        }

        #[test]
        fn encoding_agrees_with_the_base64_crate(
            bytes in proptest::collection::vec(any::<u8>(), 0..5000),
        ) {
            prop_assert_eq!(base64(&bytes), STANDARD.encode(&bytes));
        }
    }

    const METADATA: &str = r#""requestMetadata":{"kmsRequestId":"r","kmsOperation":"Encrypt","awsPrincipalArn":"p","kmsKeyArn":"k","futureField":{"nested":1}}"#;

    fn encrypt_body(fields: &str) -> Vec<u8> {
        format!("{{{METADATA},{fields}}}").into_bytes()
    }

    fn validation_message(result: Result<CryptoInputs, XksError>) -> String {
        let error = result.expect_err("must fail");
        assert_eq!(error.name(), ErrorName::Validation, "{error}");
        error.message().to_owned()
    }

    #[test]
    fn base64_object_is_the_json_serde_would_write() {
        let body = Base64Object::with_capacity(4)
            .field("ciphertext", b"\x00\xff\x10")
            .field("authenticationTag", b"")
            .finish();
        let expected = serde_json::json!({"ciphertext": "AP8Q", "authenticationTag": ""});
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(parsed, expected);
        assert_eq!(body, br#"{"ciphertext":"AP8Q","authenticationTag":""}"#);
        assert_eq!(Base64Object::with_capacity(0).finish(), b"{}");
    }

    #[test]
    fn non_object_bodies_are_rejected() {
        let object = encrypt_body(r#""plaintext":"QUFB","encryptionAlgorithm":"AES_GCM""#);
        assert!(parse_request(&object, Operation::Encrypt).is_ok());
        let mut padded = b" \n\t".to_vec();
        padded.extend_from_slice(&object);
        assert!(parse_request(&padded, Operation::Encrypt).is_ok());

        let array = format!(r#"[{{{METADATA}}},"QUFB","AES_GCM",null,null,null,null,null,null]"#);
        for body in [array.as_bytes(), b"[]", b"null", b"\"text\"", b"", b"  "] {
            let error = parse_request(body, Operation::Encrypt).expect_err("not an object");
            assert_eq!(error.name(), ErrorName::Validation);
            assert!(error.message().contains("not a JSON object"), "{error}");
        }
    }

    #[test]
    fn unknown_metadata_fields_are_accepted() {
        let body = encrypt_body(r#""plaintext":"SGVsbG8=","encryptionAlgorithm":"AES_GCM""#);
        let request = parse_request(&body, Operation::Encrypt).expect("valid");
        let inputs = encrypt_inputs(&request).expect("valid");
        assert_eq!(&*inputs.data, b"Hello");
        assert!(!inputs.integrity_value);
    }

    #[test]
    fn missing_metadata_fields_are_named() {
        let body = br#"{"requestMetadata":{"kmsOperation":"KmsHealthCheck"}}"#;
        let error = parse_request(body, Operation::Health).expect_err("must fail");
        assert_eq!(error.message(), "missing requestMetadata.kmsRequestId");
        let body = br#"{"requestMetadata":{"kmsRequestId":"r","kmsOperation":"CreateKey"}}"#;
        let error = parse_request(body, Operation::KeyMetadata).expect_err("must fail");
        assert_eq!(error.message(), "missing requestMetadata.awsPrincipalArn");
        assert!(parse_request(b"{}", Operation::Health).is_err());
        assert!(parse_request(b"not json", Operation::Health).is_err());
    }

    #[test]
    fn encrypt_rejects_bad_fields() {
        let cases = [
            (
                r#""plaintext":"SGVsbG8","encryptionAlgorithm":"AES_GCM""#,
                "plaintext is not valid base64",
            ),
            (
                r#""plaintext":"SGVsbG8=","encryptionAlgorithm":"AES_CBC""#,
                "unsupported encryptionAlgorithm",
            ),
            (r#""plaintext":"SGVsbG8=""#, "missing encryptionAlgorithm"),
            (r#""encryptionAlgorithm":"AES_GCM""#, "missing plaintext"),
            (
                r#""plaintext":"SGVsbG8=","encryptionAlgorithm":"AES_GCM","ciphertextDataIntegrityValueAlgorithm":"MD5""#,
                "unsupported ciphertextDataIntegrityValueAlgorithm",
            ),
        ];
        for (fields, expected) in cases {
            let body = encrypt_body(fields);
            let request = parse_request(&body, Operation::Encrypt).expect("parses");
            let message = validation_message(encrypt_inputs(&request));
            assert!(message.contains(expected), "{fields}: {message}");
        }
    }

    #[test]
    fn decrypt_checks_lengths() {
        let base = r#""ciphertext":"AAAA","encryptionAlgorithm":"AES_GCM","authenticationTag":"AAAAAAAAAAAAAAAAAAAAAA==""#;
        let cases = [
            (
                format!(r#"{base},"initializationVector":"AAAAAAAAAAAAAAAA""#),
                None,
            ),
            (
                format!(r#"{base},"initializationVector":"AAAAAAAAAAAAAAAAAAAAAA==""#),
                None,
            ),
            (
                format!(r#"{base},"initializationVector":"AAAAAAAA""#),
                Some("12 or 16 bytes"),
            ),
            (
                format!(
                    r#"{base},"initializationVector":"AAAAAAAAAAAAAAAA","ciphertextMetadata":"{}""#,
                    base64(&[0u8; 21])
                ),
                Some("at most 20 bytes"),
            ),
        ];
        for (fields, expected) in cases {
            let body = encrypt_body(&fields);
            let request = parse_request(&body, Operation::Decrypt).expect("parses");
            match expected {
                None => assert!(decrypt_inputs(&request).is_ok(), "{fields}"),
                Some(expected) => {
                    let message = validation_message(decrypt_inputs(&request));
                    assert!(message.contains(expected), "{message}");
                }
            }
        }
    }

    #[test]
    fn oversized_plaintext_is_unsupported() {
        let plaintext = base64(&vec![0u8; MAX_DATA_LEN + 1]);
        let body = encrypt_body(&format!(
            r#""plaintext":"{plaintext}","encryptionAlgorithm":"AES_GCM""#
        ));
        let request = parse_request(&body, Operation::Encrypt).expect("parses");
        let error = encrypt_inputs(&request).expect_err("too large");
        assert_eq!(error.name(), ErrorName::UnsupportedOperation);
    }
}
