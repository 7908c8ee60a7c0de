//! The XKS operations on a snapshot, one file per operation, free of the wire format.
//!
//! Inputs arrive decoded and validated for shape by the API layer; this layer checks the domain
//! and key state, usage and the ciphertext, and does the cryptography. Errors are
//! [`ServiceError`] values that the API layer maps to XKS error names in one place.

pub mod decrypt;
pub mod encrypt;
pub mod health;
pub mod metadata;

use crate::keystore::model::{DomainStatus, KeyStatus};
use crate::keystore::snapshot::{DomainView, KeyView};

/// Format byte of Keyhold's `ciphertextMetadata`: AES-256-GCM with the XKS AAD framing, followed
/// by the key version as a 32-bit big-endian number.
const METADATA_FORMAT_V1: u8 = 1;

/// Length of Keyhold's `ciphertextMetadata`.
pub const METADATA_LEN: usize = 5;

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The domain's kill switch is on.
    #[error("domain {0} is disabled")]
    DomainDisabled(String),
    /// The key does not exist in the domain.
    #[error("key {0} not found")]
    KeyNotFound(String),
    /// The key is disabled.
    #[error("key {0} is disabled")]
    KeyDisabled(String),
    /// The key's usage does not include the operation.
    #[error("key {key_id} does not allow {operation}")]
    UsageNotAllowed {
        /// The key.
        key_id: String,
        /// `encrypt` or `decrypt`.
        operation: &'static str,
    },
    /// Keyhold's authorization rules reject the caller.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The ciphertext inputs cannot have been made by this key, or were changed.
    #[error("invalid ciphertext: {0}")]
    InvalidCiphertext(&'static str),
    /// An input is larger than Keyhold supports.
    #[error("{0}")]
    TooLarge(String),
    /// A failure inside Keyhold; the text is for the log, not the client.
    #[error("{0}")]
    Internal(String),
}

/// Encodes the `ciphertextMetadata` for a key version.
pub fn encode_metadata(version: u32) -> [u8; METADATA_LEN] {
    let mut metadata = [0u8; METADATA_LEN];
    metadata[0] = METADATA_FORMAT_V1;
    metadata[1..].copy_from_slice(&version.to_be_bytes());
    metadata
}

/// Decodes the key version from a `ciphertextMetadata`.
///
/// # Errors
///
/// Returns [`ServiceError::InvalidCiphertext`] when the metadata is absent or not Keyhold's.
pub fn decode_metadata(metadata: Option<&[u8]>) -> Result<u32, ServiceError> {
    let metadata = metadata.ok_or(ServiceError::InvalidCiphertext(
        "ciphertextMetadata is missing; Keyhold sets it on every encryption",
    ))?;
    match metadata {
        [METADATA_FORMAT_V1, version @ ..] if version.len() == 4 => {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(version);
            Ok(u32::from_be_bytes(bytes))
        }
        _ => Err(ServiceError::InvalidCiphertext(
            "ciphertextMetadata was not made by Keyhold",
        )),
    }
}

/// Finds an enabled key in an enabled domain that `kms_key_arn` may use.
fn usable_key<'d>(
    domain: &'d DomainView,
    key_id: &str,
    kms_key_arn: &str,
) -> Result<&'d KeyView, ServiceError> {
    if domain.domain.status == DomainStatus::Disabled {
        return Err(ServiceError::DomainDisabled(domain.domain.id.clone()));
    }
    let key = domain
        .key(key_id)
        .ok_or_else(|| ServiceError::KeyNotFound(key_id.to_owned()))?;
    if let Some(bound) = &key.info.bound_kms_key_arn
        && bound != kms_key_arn
    {
        return Err(ServiceError::AccessDenied(format!(
            "key {key_id} is bound to another KMS key ARN"
        )));
    }
    if key.info.status != KeyStatus::Enabled {
        return Err(ServiceError::KeyDisabled(key_id.to_owned()));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_version() {
        let metadata = encode_metadata(7);
        assert_eq!(metadata, [1, 0, 0, 0, 7]);
        assert_eq!(decode_metadata(Some(&metadata)), Ok(7));
    }

    #[test]
    fn foreign_metadata_is_invalid_ciphertext() {
        for metadata in [&b""[..], b"key_version=1", &[2, 0, 0, 0, 1], &[1, 0, 0, 1]] {
            assert!(matches!(
                decode_metadata(Some(metadata)),
                Err(ServiceError::InvalidCiphertext(_))
            ));
        }
        assert!(decode_metadata(None).is_err());
    }
}
