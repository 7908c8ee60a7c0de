//! Admin API bearer tokens of the form `khat_<id>_<secret>`, stored as a SHA-256 digest of the
//! whole token.
//!
//! The id is public, because it names the token in lists and audit records. The secret has 256
//! random bits, so a plain digest is enough and no slow password hash is needed. The server
//! looks up a presented token by its id and compares its digest in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::crypto::{self, CryptoError};

/// Prefix of every admin token, which makes leaked tokens easy to find in logs and repositories.
pub const TOKEN_PREFIX: &str = "khat_";

/// Random bytes in the id, which is written as 16 lowercase hex digits.
const ID_BYTES: usize = 8;
/// Random bytes in the secret.
const SECRET_BYTES: usize = 32;
/// Length of the secret in unpadded URL-safe base64: 32 bytes need 43 characters.
const SECRET_CHARS: usize = 43;

/// Newly generated token. The caller shows its text once and then drops it.
pub struct NewToken {
    /// Public token id.
    pub id: String,
    /// Whole token text, zeroized on drop.
    pub text: Zeroizing<String>,
    /// SHA-256 digest of the whole token, the only form that the store keeps.
    pub digest: [u8; 32],
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Generates a new random token and its digest.
///
/// # Errors
///
/// Returns [`CryptoError`] when the system random generator fails.
pub fn generate() -> Result<NewToken, CryptoError> {
    let mut id = [0u8; ID_BYTES];
    crypto::fill_random(&mut id)?;
    let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
    crypto::fill_random(secret.as_mut())?;
    let id = hex::encode(id);
    let text = Zeroizing::new(format!(
        "{TOKEN_PREFIX}{id}_{}",
        URL_SAFE_NO_PAD.encode(secret.as_ref())
    ));
    let digest = crypto::sha256(text.as_bytes());
    Ok(NewToken { id, text, digest })
}

/// Returns the id of a presented token, or `None` when the text does not have the form
/// `khat_<16 hex digits>_<43 base64url characters>`.
pub fn id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == ID_BYTES * 2
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = secret.len() == SECRET_CHARS
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(id)
}

/// Returns whether the SHA-256 digest of `token` equals `stored`, compared in constant time.
pub fn matches(token: &str, stored: &[u8]) -> bool {
    let digest = crypto::sha256(token.as_bytes());
    stored.len() == digest.len() && bool::from(digest.ct_eq(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_round_trip() {
        let token = generate().expect("random");
        assert_eq!(id_of(&token.text), Some(token.id.as_str()));
        assert!(matches(&token.text, &token.digest));

        let other = generate().expect("random");
        assert_ne!(token.id, other.id);
        assert!(!matches(&token.text, &other.digest));
        assert!(!matches(&token.text, &token.digest[..31]));
    }

    #[test]
    fn malformed_token_has_no_id() {
        let token = generate().expect("random");
        let text = token.text.as_str();
        for bad in [
            "",
            "khat_",
            &text[1..],
            &text[..text.len() - 1],
            &text.replace("khat_", "KHAT_"),
            &format!("{text}x"),
            "khat_0123456789abcdef_short",
            "khat_0123456789ABCDEF_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(id_of(bad), None, "accepted {bad:?}");
        }
    }

    #[test]
    fn debug_output_hides_token() {
        let token = generate().expect("random");
        let shown = format!("{token:?}");
        assert!(!shown.contains(token.text.as_str()));
        assert!(shown.contains(&token.id));
    }
}
