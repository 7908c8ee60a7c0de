//! Encrypt: seal under the key's primary version, add the integrity value when asked, and
//! decrypt once as a self-test before anything is returned.

use crate::crypto::{self, IV_LEN, TAG_LEN};
use crate::hsm::Hsm;
use crate::keystore::snapshot::DomainView;
use crate::policy::RequestContext;

use super::{METADATA_LEN, ServiceError, cipher, encode_metadata, usable_key};

/// A decoded encrypt request.
#[derive(Debug, Clone, Copy)]
pub struct EncryptInput<'a> {
    /// The external key id.
    pub key_id: &'a str,
    /// The request metadata that the key binding and the policies check.
    pub request: RequestContext<'a>,
    /// Bytes to encrypt.
    pub plaintext: &'a [u8],
    /// Request AAD; `None` and empty are equivalent.
    pub aad: Option<&'a [u8]>,
    /// Whether the client asked for the SHA-256 ciphertext data integrity value.
    pub integrity_value: bool,
}

/// The result of an encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptOutput {
    /// Ciphertext, as long as the plaintext.
    pub ciphertext: Vec<u8>,
    /// The IV drawn for this encryption.
    pub iv: [u8; IV_LEN],
    /// The GCM tag.
    pub tag: [u8; TAG_LEN],
    /// Keyhold's metadata naming the key version.
    pub metadata: [u8; METADATA_LEN],
    /// The integrity value, when requested.
    pub integrity_value: Option<[u8; 32]>,
    /// The key version used.
    pub version: u32,
}

/// Encrypts with the key's primary version.
///
/// # Errors
///
/// Returns [`ServiceError`] for a disabled domain or key, a missing key, a key without
/// encrypt usage, an AAD too long to frame, or an internal failure (including a failed
/// self-test decrypt).
pub fn encrypt(
    domain: &DomainView,
    hsm: Option<&Hsm>,
    input: &EncryptInput<'_>,
) -> Result<EncryptOutput, ServiceError> {
    let key = usable_key(domain, input.key_id, &input.request)?;
    if !key.info.usage.encrypt() {
        return Err(ServiceError::UsageNotAllowed {
            key_id: input.key_id.to_owned(),
            operation: "encrypt",
        });
    }
    let version = key.info.primary_version;
    let cipher = cipher(key, version, hsm)?.ok_or_else(|| {
        ServiceError::Internal(format!(
            "primary version {version} of key {} does not exist",
            input.key_id
        ))
    })?;

    let aad = input.aad.unwrap_or_default();
    let metadata = encode_metadata(version);
    let framed = crypto::frame_aad(aad, &metadata).map_err(|_| {
        ServiceError::TooLarge(format!(
            "additionalAuthenticatedData of {} bytes exceeds the maximum of {} bytes",
            aad.len(),
            crypto::MAX_FRAMED_AAD_LEN
        ))
    })?;
    let sealed = cipher.seal(input.plaintext, &framed)?;

    // The integrity value is computed before the self-test, so a corruption between the two
    // cannot go unnoticed.
    let integrity_value = input.integrity_value.then(|| {
        crypto::integrity_value(aad, &metadata, &sealed.iv, &sealed.ciphertext, &sealed.tag)
    });
    if input.integrity_value {
        let opened = cipher
            .open(&sealed.iv, &sealed.ciphertext, &sealed.tag, &framed)
            .map_err(|error| match error {
                // A timeout stays a timeout, so the client retries; any other failure of the
                // self-test means the ciphertext must not be returned.
                ServiceError::DependencyTimeout(_) => error,
                other => ServiceError::Internal(format!("self-test decrypt failed: {other}")),
            })?;
        if *opened != *input.plaintext {
            return Err(ServiceError::Internal(
                "self-test decrypt returned different bytes".to_owned(),
            ));
        }
    }

    Ok(EncryptOutput {
        ciphertext: sealed.ciphertext,
        iv: sealed.iv,
        tag: sealed.tag,
        metadata,
        integrity_value,
        version,
    })
}
