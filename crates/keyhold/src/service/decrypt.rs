//! Decrypt: find the key version named in `ciphertextMetadata`, rebuild the framed AAD and open.

use crate::crypto::{self, IV_LEN, TAG_LEN};
use crate::hsm::Hsm;
use crate::keystore::snapshot::DomainView;
use crate::policy::RequestContext;

use super::{ServiceError, cipher, decode_metadata, usable_key};

/// A decoded decrypt request.
#[derive(Debug, Clone, Copy)]
pub struct DecryptInput<'a> {
    /// The external key id.
    pub key_id: &'a str,
    /// The request metadata that the key binding and the policies check.
    pub request: RequestContext<'a>,
    /// Ciphertext bytes.
    pub ciphertext: &'a [u8],
    /// The IV from the encryption.
    pub iv: &'a [u8],
    /// The 16-byte tag.
    pub tag: &'a [u8],
    /// Request AAD; `None` and empty are equivalent.
    pub aad: Option<&'a [u8]>,
    /// The `ciphertextMetadata` returned by encrypt.
    pub metadata: Option<&'a [u8]>,
}

/// The result of a decryption.
#[derive(Debug)]
pub struct DecryptOutput {
    /// The plaintext, wiped on drop.
    pub plaintext: crate::crypto::Wiped,
    /// The key version used.
    pub version: u32,
}

/// Decrypts with the key version named in the metadata.
///
/// # Errors
///
/// Returns [`ServiceError`] for a disabled domain or key, a missing key, a key without
/// decrypt usage, or inputs that do not authenticate.
pub fn decrypt(
    domain: &DomainView,
    hsm: Option<&Hsm>,
    input: &DecryptInput<'_>,
) -> Result<DecryptOutput, ServiceError> {
    let key = usable_key(domain, input.key_id, &input.request)?;
    if !key.info.usage.decrypt() {
        return Err(ServiceError::UsageNotAllowed {
            key_id: input.key_id.to_owned(),
            operation: "decrypt",
        });
    }
    if input.iv.len() != IV_LEN {
        return Err(ServiceError::InvalidCiphertext(
            "initializationVector is not 12 bytes; Keyhold only makes 12-byte IVs",
        ));
    }
    if input.tag.len() != TAG_LEN {
        return Err(ServiceError::InvalidCiphertext(
            "authenticationTag is not 16 bytes",
        ));
    }

    let version = decode_metadata(input.metadata)?;
    let cipher = cipher(key, version, hsm)?.ok_or(ServiceError::InvalidCiphertext(
        "ciphertextMetadata names a key version that does not exist",
    ))?;

    let metadata = input.metadata.unwrap_or_default();
    let framed = crypto::frame_aad(input.aad.unwrap_or_default(), metadata).map_err(|_| {
        ServiceError::TooLarge(format!(
            "additionalAuthenticatedData exceeds the maximum of {} bytes",
            crypto::MAX_FRAMED_AAD_LEN
        ))
    })?;
    let plaintext = cipher.open(input.iv, input.ciphertext, input.tag, &framed)?;
    Ok(DecryptOutput { plaintext, version })
}
