//! The XKS operations on a snapshot, one file per operation, free of the wire format.
//!
//! Inputs arrive decoded and validated for shape by the API layer; this layer checks the domain
//! and key state, usage and the ciphertext, and does the cryptography. Errors are
//! [`ServiceError`] values that the API layer maps to XKS error names in one place.

pub mod decrypt;
pub mod encrypt;
pub mod health;
pub mod metadata;

use crate::crypto::{self, DataKey, IV_LEN, Sealed};
use crate::hsm::{Hsm, HsmError, HsmKey};
use crate::keystore::model::{DomainStatus, KeyStatus};
use crate::keystore::snapshot::{DomainView, KeyView, VersionLookup};
use crate::policy::RequestContext;

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
    /// The key is scheduled for deletion.
    #[error("key {0} is pending deletion")]
    KeyPendingDeletion(String),
    /// The version named in the ciphertext is disabled or destroyed.
    #[error("version {version} of key {key_id} is {state}")]
    VersionUnusable {
        /// The key.
        key_id: String,
        /// The version.
        version: u32,
        /// `disabled` or `destroyed`.
        state: &'static str,
    },
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
    /// A dependency such as the HSM did not respond in time.
    #[error("{0}")]
    DependencyTimeout(String),
    /// A failure inside Keyhold; the text is for the log, not the client.
    #[error("{0}")]
    Internal(String),
}

/// The material of one key version: in memory, or an object inside the HSM.
#[derive(Debug, Clone, Copy)]
enum Cipher<'a> {
    Software(&'a DataKey),
    Hsm(&'a Hsm, &'a str),
}

impl Cipher<'_> {
    /// Encrypts under a fresh random IV.
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, ServiceError> {
        match self {
            Self::Software(key) => key
                .seal(plaintext, aad)
                .map_err(|error| ServiceError::Internal(format!("encryption failed: {error}"))),
            Self::Hsm(hsm, label) => {
                let mut iv = [0u8; IV_LEN];
                crypto::fill_random(&mut iv)
                    .map_err(|error| ServiceError::Internal(error.to_string()))?;
                let (ciphertext, tag) = hsm
                    .encrypt(HsmKey::Label(label), &iv, plaintext, aad)
                    .map_err(ServiceError::from_hsm)?;
                Ok(Sealed {
                    iv,
                    ciphertext,
                    tag,
                })
            }
        }
    }

    /// Decrypts; a tag that does not verify is [`ServiceError::InvalidCiphertext`].
    fn open(
        &self,
        iv: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        aad: &[u8],
    ) -> Result<crypto::Wiped, ServiceError> {
        match self {
            Self::Software(key) => key
                .open(iv, ciphertext, tag, aad)
                .map_err(|_| tag_mismatch()),
            Self::Hsm(hsm, label) => hsm
                .decrypt(HsmKey::Label(label), iv, ciphertext, tag, aad)
                .map_err(ServiceError::from_hsm),
        }
    }
}

fn tag_mismatch() -> ServiceError {
    ServiceError::InvalidCiphertext(
        "authentication failed: the ciphertext, IV, tag, AAD or metadata was changed",
    )
}

impl ServiceError {
    /// Maps an HSM error: a session timeout is a dependency timeout, a failed tag is a bad
    /// ciphertext, and anything else is internal, with the PKCS#11 function and code for the log.
    pub fn from_hsm(error: HsmError) -> Self {
        match error {
            HsmError::Timeout(_) => ServiceError::DependencyTimeout(error.to_string()),
            HsmError::TagMismatch => tag_mismatch(),
            other => ServiceError::Internal(format!("HSM failure: {other}")),
        }
    }
}

/// Resolves a key version to its material.
fn cipher<'a>(
    key: &'a KeyView,
    version: u32,
    hsm: Option<&'a Hsm>,
) -> Result<Option<Cipher<'a>>, ServiceError> {
    match key.version(version) {
        VersionLookup::Ready(data_key) => Ok(Some(Cipher::Software(data_key))),
        VersionLookup::Hsm(label) => match hsm {
            Some(hsm) => Ok(Some(Cipher::Hsm(hsm, label))),
            None => Err(ServiceError::Internal(format!(
                "version {version} of key {} is in an HSM, but no HSM is configured",
                key.info.key_id
            ))),
        },
        VersionLookup::Unavailable => Err(ServiceError::Internal(format!(
            "version {version} of key {} is not available",
            key.info.key_id
        ))),
        VersionLookup::Disabled => Err(ServiceError::VersionUnusable {
            key_id: key.info.key_id.clone(),
            version,
            state: "disabled",
        }),
        VersionLookup::Destroyed => Err(ServiceError::VersionUnusable {
            key_id: key.info.key_id.clone(),
            version,
            state: "destroyed",
        }),
        VersionLookup::Missing => Ok(None),
    }
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

/// Applies the key binding, then the policies.
fn authorize(
    domain: &DomainView,
    key: &KeyView,
    request: &RequestContext<'_>,
) -> Result<(), ServiceError> {
    if let Some(bound) = &key.info.bound_kms_key_arn
        && request.kms_key_arn != Some(bound.as_str())
    {
        return Err(ServiceError::AccessDenied(format!(
            "key {} is bound to another KMS key ARN",
            key.info.key_id
        )));
    }
    if key.info.bound_kms_key_arn.is_none()
        && key.info.learn_binding
        && !request
            .kms_key_arn
            .is_some_and(|arn| domain.check_learned_binding(key, arn))
    {
        return Err(ServiceError::AccessDenied(format!(
            "key {} is bound to the first KMS key ARN that used it",
            key.info.key_id
        )));
    }
    check_policies(domain, key, request)
}

/// Applies the domain's policy, then the key's; both must allow the request.
fn check_policies(
    domain: &DomainView,
    key: &KeyView,
    request: &RequestContext<'_>,
) -> Result<(), ServiceError> {
    let policies = [
        ("domain policy", domain.policy.as_ref()),
        ("key policy", key.policy.as_ref()),
    ];
    for (owner, policy) in policies {
        if let Some(Err(reason)) = policy.map(|policy| policy.evaluate(request)) {
            tracing::info!(%reason, owner, "request denied by policy");
            return Err(ServiceError::AccessDenied(format!("{owner}: {reason}")));
        }
    }
    Ok(())
}

/// Finds an enabled key in an enabled domain that the request may use.
fn usable_key<'d>(
    domain: &'d DomainView,
    key_id: &str,
    request: &RequestContext<'_>,
) -> Result<&'d KeyView, ServiceError> {
    if domain.domain.status == DomainStatus::Disabled {
        return Err(ServiceError::DomainDisabled(domain.domain.id.clone()));
    }
    // A destroyed key is a tombstone: its id can never be used or reused.
    let key = domain
        .key(key_id)
        .filter(|key| key.info.status != KeyStatus::Destroyed)
        .ok_or_else(|| ServiceError::KeyNotFound(key_id.to_owned()))?;
    authorize(domain, key, request)?;
    match key.info.status {
        KeyStatus::Enabled => {}
        KeyStatus::Disabled => return Err(ServiceError::KeyDisabled(key_id.to_owned())),
        KeyStatus::PendingDeletion | KeyStatus::Destroyed => {
            return Err(ServiceError::KeyPendingDeletion(key_id.to_owned()));
        }
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
