//! Requests of the load generator: the operations, their mix and the request bodies.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// Account id in the ARNs the generator sends; proxies treat ARNs as opaque strings.
const ACCOUNT_ID: &str = "111122223333";

/// One XKS API operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Operation {
    /// GetHealthStatus.
    Health,
    /// GetKeyMetadata.
    Metadata,
    /// Encrypt.
    Encrypt,
    /// Decrypt.
    Decrypt,
}

impl Operation {
    /// All operations, in report order.
    pub(crate) const ALL: [Operation; 4] = [
        Operation::Health,
        Operation::Metadata,
        Operation::Encrypt,
        Operation::Decrypt,
    ];

    /// Returns the name used on the command line and in reports.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Operation::Health => "health",
            Operation::Metadata => "metadata",
            Operation::Encrypt => "encrypt",
            Operation::Decrypt => "decrypt",
        }
    }

    /// Position in [`Operation::ALL`], for per-operation arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Returns the `kmsOperation` that AWS KMS sends with this XKS operation.
    fn kms_operation(self) -> &'static str {
        match self {
            Operation::Health => "KmsHealthCheck",
            Operation::Metadata => "CreateKey",
            Operation::Encrypt => "Encrypt",
            Operation::Decrypt => "Decrypt",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Operation::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Operations with integer weights, sent in a fixed interleaved order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mix {
    weights: Vec<(Operation, u32)>,
}

impl Mix {
    /// Parses `OP[:WEIGHT],...`, for example `encrypt` or `encrypt:4,decrypt:4,health:1`.
    ///
    /// # Errors
    ///
    /// Returns a message naming the invalid part.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut weights: Vec<(Operation, u32)> = Vec::new();
        for part in text.split(',') {
            let (name, weight) = match part.split_once(':') {
                Some((name, weight)) => {
                    let weight = weight
                        .parse::<u32>()
                        .ok()
                        .filter(|w| (1..=1000).contains(w));
                    let weight = weight.ok_or_else(|| {
                        format!(
                            "invalid weight in {part:?}; expected a whole number from 1 to 1000"
                        )
                    })?;
                    (name, weight)
                }
                None => (part, 1),
            };
            let operation = Operation::parse(name.trim()).ok_or_else(|| {
                format!("unknown operation {name:?}; expected health, metadata, encrypt or decrypt")
            })?;
            if weights.iter().any(|(op, _)| *op == operation) {
                return Err(format!("operation {operation} is listed twice"));
            }
            weights.push((operation, weight));
        }
        Ok(Self { weights })
    }

    /// Returns the distinct operations, in the order given.
    pub(crate) fn operations(&self) -> impl Iterator<Item = Operation> + '_ {
        self.weights.iter().map(|(op, _)| *op)
    }

    /// Reports whether more than one operation is sent.
    pub(crate) fn is_mixed(&self) -> bool {
        self.weights.len() > 1
    }

    /// Returns one cycle of the mix with the operations interleaved, so `a:2,b:2` gives
    /// `a b a b`.
    pub(crate) fn cycle(&self) -> Vec<Operation> {
        let max_weight = self.weights.iter().map(|(_, w)| *w).max().unwrap_or(0);
        let mut cycle = Vec::new();
        for round in 0..max_weight {
            for (op, weight) in &self.weights {
                if round < *weight {
                    cycle.push(*op);
                }
            }
        }
        cycle
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (op, weight)) in self.weights.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            if self.is_mixed() {
                write!(f, "{op}:{weight}")?;
            } else {
                write!(f, "{op}")?;
            }
        }
        Ok(())
    }
}

/// Inputs of the encrypt and decrypt requests.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    /// Random plaintext for encrypt.
    pub(crate) plaintext: Vec<u8>,
    /// Random AAD, empty for none.
    pub(crate) aad: Vec<u8>,
    /// Whether encrypt requests the ciphertext data integrity value.
    pub(crate) integrity_value: bool,
    /// `requestMetadata.kmsKeyArn`.
    pub(crate) kms_key_arn: String,
}

/// Returns the ARN sent as `kmsKeyArn` when none is given.
pub(crate) fn default_kms_key_arn(region: &str) -> String {
    format!("arn:aws:kms:{region}:{ACCOUNT_ID}:key/keyhold-bench")
}

/// Returns the request path of an operation under an `XksProxyUriPath`.
pub(crate) fn operation_path(uri_path: &str, key_id: &str, op: Operation) -> String {
    let base = uri_path.trim_end_matches('/');
    match op {
        Operation::Health => format!("{base}/health"),
        Operation::Metadata => format!("{base}/keys/{key_id}/metadata"),
        Operation::Encrypt => format!("{base}/keys/{key_id}/encrypt"),
        Operation::Decrypt => format!("{base}/keys/{key_id}/decrypt"),
    }
}

/// Builds the `requestMetadata` AWS KMS sends with an operation.
fn request_metadata(op: Operation, request_id: &str, kms_key_arn: &str) -> Value {
    let mut metadata = json!({
        "kmsRequestId": request_id,
        "kmsOperation": op.kms_operation(),
    });
    if op != Operation::Health {
        metadata["awsPrincipalArn"] =
            json!(format!("arn:aws:iam::{ACCOUNT_ID}:role/keyhold-bench"));
    }
    if matches!(op, Operation::Encrypt | Operation::Decrypt) {
        metadata["kmsKeyArn"] = json!(kms_key_arn);
    }
    metadata
}

/// Builds the body of a health, metadata or encrypt request.
pub(crate) fn request_body(op: Operation, request_id: &str, payload: &Payload) -> Value {
    let mut body = json!({
        "requestMetadata": request_metadata(op, request_id, &payload.kms_key_arn),
    });
    if op == Operation::Encrypt {
        body["plaintext"] = json!(STANDARD.encode(&payload.plaintext));
        body["encryptionAlgorithm"] = json!("AES_GCM");
        if !payload.aad.is_empty() {
            body["additionalAuthenticatedData"] = json!(STANDARD.encode(&payload.aad));
        }
        if payload.integrity_value {
            body["ciphertextDataIntegrityValueAlgorithm"] = json!("SHA_256");
        }
    }
    body
}

/// Builds a decrypt body that sends back the fields of an encrypt response unchanged.
pub(crate) fn decrypt_body(request_id: &str, payload: &Payload, encrypted: &Value) -> Value {
    let mut body = json!({
        "requestMetadata": request_metadata(Operation::Decrypt, request_id, &payload.kms_key_arn),
        "encryptionAlgorithm": "AES_GCM",
    });
    for field in [
        "ciphertext",
        "ciphertextMetadata",
        "initializationVector",
        "authenticationTag",
    ] {
        if let Some(value) = encrypted.get(field) {
            body[field] = value.clone();
        }
    }
    if !payload.aad.is_empty() {
        body["additionalAuthenticatedData"] = json!(STANDARD.encode(&payload.aad));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Payload {
        Payload {
            plaintext: vec![7; 32],
            aad: vec![1, 2, 3],
            integrity_value: true,
            kms_key_arn: default_kms_key_arn("eu-west-1"),
        }
    }

    #[test]
    fn encrypt_body_carries_payload() {
        let body = request_body(Operation::Encrypt, "r-4", &payload());
        assert_eq!(body["plaintext"], STANDARD.encode([7u8; 32]));
        assert_eq!(body["additionalAuthenticatedData"], "AQID");
        assert_eq!(body["ciphertextDataIntegrityValueAlgorithm"], "SHA_256");
        assert_eq!(body["requestMetadata"]["kmsOperation"], "Encrypt");
        assert_eq!(
            body["requestMetadata"]["kmsKeyArn"],
            "arn:aws:kms:eu-west-1:111122223333:key/keyhold-bench"
        );
    }

    #[test]
    fn health_body_has_only_required_metadata() {
        let body = request_body(Operation::Health, "r-5", &payload());
        let metadata = body["requestMetadata"].as_object().expect("object");
        let mut names: Vec<&str> = metadata.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["kmsOperation", "kmsRequestId"]);
        assert!(body.get("plaintext").is_none());
    }

    #[test]
    fn decrypt_body_echoes_encrypt_response() {
        let encrypted = json!({
            "ciphertext": "Y3Q=",
            "initializationVector": "aXY=",
            "authenticationTag": "dGFn",
            "ciphertextMetadata": "bWQ=",
            "ciphertextDataIntegrityValue": "ignored",
        });
        let body = decrypt_body("r-6", &payload(), &encrypted);
        for field in [
            "ciphertext",
            "initializationVector",
            "authenticationTag",
            "ciphertextMetadata",
        ] {
            assert_eq!(body[field], encrypted[field], "{field}");
        }
        assert!(body.get("ciphertextDataIntegrityValue").is_none());
        assert_eq!(body["additionalAuthenticatedData"], "AQID");
    }

    #[test]
    fn mix_parses_weights() {
        let mix = Mix::parse("encrypt:2,decrypt:2,health").expect("valid");
        assert_eq!(
            mix.cycle(),
            [
                Operation::Encrypt,
                Operation::Decrypt,
                Operation::Health,
                Operation::Encrypt,
                Operation::Decrypt
            ]
        );
        assert!(mix.is_mixed());
        assert_eq!(mix.to_string(), "encrypt:2,decrypt:2,health:1");
        assert_eq!(
            Mix::parse("metadata").expect("valid").to_string(),
            "metadata"
        );
    }

    #[test]
    fn mix_rejects_bad_input() {
        for text in [
            "",
            "sign",
            "encrypt:0",
            "encrypt:x",
            "encrypt,encrypt",
            "health:1001",
        ] {
            assert!(Mix::parse(text).is_err(), "accepted {text:?}");
        }
    }
}
