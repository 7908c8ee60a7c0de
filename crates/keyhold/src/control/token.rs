//! Admin API bearer tokens: `khat_<id>_<secret>`, stored as a SHA-256 digest of the whole token.
//!
//! The id is public (it names the token in lists and audit records); the secret carries 256
//! random bits, so a plain digest is enough and no slow hash is needed. A presented token is
//! found by its id and its digest compared in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::crypto::{self, CryptoError};

/// Prefix of every admin token, so leaked tokens are easy to find in logs and repositories.
pub const TOKEN_PREFIX: &str = "khat_";

const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
const SECRET_CHARS: usize = 43;

/// A freshly made token: the text is shown once and then dropped.
pub struct NewToken {
    /// Public id.
    pub id: String,
    /// The whole token, zeroized on drop.
    pub text: Zeroizing<String>,
    /// SHA-256 of the whole token, the only form stored.
    pub digest: [u8; 32],
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Makes a new random token.
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

/// Splits a presented token into its id, or `None` when it does not have the token's shape.
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

/// Whether `token` hashes to `stored`, compared in constant time.
pub fn matches(token: &str, stored: &[u8]) -> bool {
    let digest = crypto::sha256(token.as_bytes());
    stored.len() == digest.len() && bool::from(digest.ct_eq(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_match_only_their_digest() {
        let token = generate().expect("random");
        assert_eq!(id_of(&token.text), Some(token.id.as_str()));
        assert!(matches(&token.text, &token.digest));

        let other = generate().expect("random");
        assert_ne!(token.id, other.id);
        assert!(!matches(&token.text, &other.digest));
        assert!(!matches(&token.text, &token.digest[..31]));
    }

    #[test]
    fn malformed_tokens_have_no_id() {
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
    fn debug_output_hides_the_token() {
        let token = generate().expect("random");
        let shown = format!("{token:?}");
        assert!(!shown.contains(token.text.as_str()));
        assert!(shown.contains(&token.id));
    }
}
