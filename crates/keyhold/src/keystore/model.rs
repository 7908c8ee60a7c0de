//! Domains, credentials, keys and key versions as stored, with the rules for their ids.

use std::fmt;

use serde::Serialize;

/// Suffix every XKS URI path ends with, after the domain's prefix.
pub const XKS_PATH_SUFFIX: &str = "/kms/xks/v1";

/// Most active SigV4 credentials a domain may have at once.
pub const MAX_ACTIVE_CREDENTIALS: usize = 2;

/// Longest `XksProxyUriPath` AWS KMS accepts, in characters.
const MAX_URI_PATH_LEN: usize = 128;

/// Status of a domain; `Disabled` is the domain kill switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DomainStatus {
    /// Serves requests.
    Enabled,
    /// Rejects every request with `InvalidStateException`.
    Disabled,
}

/// Status of an external key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyStatus {
    /// Usable for the operations in its usage.
    Enabled,
    /// Rejects encrypt and decrypt with `InvalidStateException`.
    Disabled,
    /// Waiting for its deletion date; rejects encrypt and decrypt with `InvalidStateException`.
    PendingDeletion,
    /// Material destroyed; the id stays as a tombstone and requests get `KeyNotFoundException`.
    Destroyed,
}

impl KeyStatus {
    /// Returns the stored and displayed name, such as `PENDING_DELETION`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "ENABLED",
            Self::Disabled => "DISABLED",
            Self::PendingDeletion => "PENDING_DELETION",
            Self::Destroyed => "DESTROYED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Enabled,
            Self::Disabled,
            Self::PendingDeletion,
            Self::Destroyed,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// State of one key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VersionState {
    /// Decrypts, and encrypts when primary.
    Enabled,
    /// Its ciphertexts fail with `InvalidStateException` until it is enabled again.
    Disabled,
    /// Material erased for good.
    Destroyed,
}

impl VersionState {
    /// Returns the stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "ENABLED",
            Self::Disabled => "DISABLED",
            Self::Destroyed => "DESTROYED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Enabled, Self::Disabled, Self::Destroyed]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// Protection of a key\'s material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protection {
    /// Material wrapped under the root key and used in Keyhold's memory.
    Software,
    /// Material generated inside the HSM as a non-extractable object; every operation runs there.
    Hsm,
}

impl Protection {
    /// Parses `software` or `hsm`.
    ///
    /// # Errors
    ///
    /// Returns a message naming the accepted values.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "software" => Ok(Self::Software),
            "hsm" => Ok(Self::Hsm),
            other => Err(format!("unknown protection {other:?}; use software or hsm")),
        }
    }

    /// `software` or `hsm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Software => "software",
            Self::Hsm => "hsm",
        }
    }
}

/// The operations a key allows; never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUsage {
    encrypt: bool,
    decrypt: bool,
}

impl KeyUsage {
    /// Both encrypt and decrypt, the usage AWS KMS requires of a key it creates.
    pub const ENCRYPT_DECRYPT: Self = Self {
        encrypt: true,
        decrypt: true,
    };

    /// Builds a usage from its two flags; `None` when both are false.
    pub fn new(encrypt: bool, decrypt: bool) -> Option<Self> {
        (encrypt || decrypt).then_some(Self { encrypt, decrypt })
    }

    /// Parses a comma-separated list such as `encrypt,decrypt` (case-insensitive).
    ///
    /// # Errors
    ///
    /// Returns a message naming the unknown word, or saying the list is empty.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut usage = Self {
            encrypt: false,
            decrypt: false,
        };
        for word in text
            .split(',')
            .map(str::trim)
            .filter(|word| !word.is_empty())
        {
            match word.to_ascii_lowercase().as_str() {
                "encrypt" => usage.encrypt = true,
                "decrypt" => usage.decrypt = true,
                _ => {
                    return Err(format!(
                        "unknown key usage {word:?}; use encrypt, decrypt or encrypt,decrypt"
                    ));
                }
            }
        }
        if !usage.encrypt && !usage.decrypt {
            return Err("key usage must name encrypt, decrypt or both".to_owned());
        }
        Ok(usage)
    }

    /// Returns whether encrypt is allowed.
    pub fn encrypt(self) -> bool {
        self.encrypt
    }

    /// Returns whether decrypt is allowed.
    pub fn decrypt(self) -> bool {
        self.decrypt
    }

    /// Returns the usage as XKS `keyUsage` strings.
    pub fn names(self) -> Vec<&'static str> {
        let mut names = Vec::with_capacity(2);
        if self.encrypt {
            names.push("ENCRYPT");
        }
        if self.decrypt {
            names.push("DECRYPT");
        }
        names
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = [(self.encrypt, "encrypt"), (self.decrypt, "decrypt")]
            .into_iter()
            .filter_map(|(allowed, word)| allowed.then_some(word))
            .collect();
        f.write_str(&words.join(","))
    }
}

impl Serialize for KeyUsage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(serializer)
    }
}

/// A tenant: its own URI path prefix, credentials and keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Domain {
    /// Id matching `[a-z0-9-]{1,63}`.
    pub id: String,
    /// Name shown to people.
    pub display_name: String,
    /// Path before `/kms/xks/v1`, empty or starting with `/`.
    pub uri_prefix: String,
    /// Kill switch state.
    pub status: DomainStatus,
    /// Request quota in requests per second; `None` means no quota.
    pub quota_rps: Option<u32>,
    /// Secondary authorization policy as JSON; `None` allows every authenticated request.
    pub policy: Option<String>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
}

impl Domain {
    /// Returns the `XksProxyUriPath` that AWS KMS is configured with.
    pub fn xks_uri_path(&self) -> String {
        format!("{}{XKS_PATH_SUFFIX}", self.uri_prefix)
    }
}

/// A SigV4 credential's public part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialInfo {
    /// Access key id, 24 characters of `[A-Z2-7]`.
    pub access_key_id: String,
    /// Owning domain.
    pub domain_id: String,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Revocation time, Unix seconds; `None` while active.
    pub revoked_at: Option<i64>,
}

/// An external key's attributes, without material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// Owning domain.
    pub domain_id: String,
    /// The XKS `externalKeyId`.
    pub key_id: String,
    /// Name shown to people.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Allowed operations.
    pub usage: KeyUsage,
    /// Enabled or disabled.
    pub status: KeyStatus,
    /// Location of the material.
    pub protection: Protection,
    /// Version used for new encryptions.
    pub primary_version: u32,
    /// The only `kmsKeyArn` allowed to use the key; `None` allows any.
    pub bound_kms_key_arn: Option<String>,
    /// Whether the key binds itself to the first `kmsKeyArn` that uses it.
    pub learn_binding: bool,
    /// Automatic rotation period in seconds; `None` rotates only on request.
    pub rotation_period_secs: Option<i64>,
    /// When a key pending deletion is destroyed, Unix seconds.
    pub deletion_at: Option<i64>,
    /// Secondary authorization policy of this key as JSON, checked after the domain's.
    pub policy: Option<String>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
}

/// One version of a key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// Version number, from 1.
    pub version: u32,
    /// Enabled, disabled or destroyed.
    pub state: VersionState,
    /// Location of the material.
    pub material: StoredMaterial,
    /// Creation time, Unix seconds.
    pub created_at: i64,
}

/// The material of a stored version.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredMaterial {
    /// Wrapped by the root of trust.
    Wrapped(Vec<u8>),
    /// Label of a non-extractable HSM object.
    Hsm(String),
    /// Erased.
    Destroyed,
}

impl fmt::Debug for StoredMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wrapped(_) => f.write_str("Wrapped(..)"),
            Self::Hsm(label) => f.debug_tuple("Hsm").field(label).finish(),
            Self::Destroyed => f.write_str("Destroyed"),
        }
    }
}

/// The start of the HSM object label of a key version; a random suffix follows after `/`. It
/// names the domain, key and version, so a row moved onto another key is detected.
pub fn hsm_label(domain_id: &str, key_id: &str, version: u32) -> String {
    format!("keyhold/{domain_id}/{key_id}/v{version}")
}

/// Whether `label` is an HSM object label of this key version.
pub fn is_hsm_label_of(label: &str, domain_id: &str, key_id: &str, version: u32) -> bool {
    label
        .strip_prefix(&hsm_label(domain_id, key_id, version))
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|suffix| !suffix.is_empty() && !suffix.contains('/'))
}

/// Checks a domain id against `[a-z0-9-]{1,63}`.
///
/// # Errors
///
/// Returns a message that shows the rule.
pub fn validate_domain_id(id: &str) -> Result<(), String> {
    // A leading '-' would read as an option on every later command line.
    let valid = (1..=63).contains(&id.len())
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid domain id {id:?}: use 1 to 63 characters of lower-case letters, digits and '-', starting with a letter or digit"
        ))
    }
}

/// Checks an external key id against `[A-Za-z0-9._-]{1,128}`, the XKS rule.
///
/// # Errors
///
/// Returns a message that shows the rule.
pub fn validate_key_id(id: &str) -> Result<(), String> {
    if is_valid_key_id(id) {
        Ok(())
    } else {
        Err(format!(
            "invalid key id {id:?}: use 1 to 128 characters of letters, digits, '.', '_' and '-', other than \".\" and \"..\""
        ))
    }
}

/// Returns whether `id` is a well-formed external key id. `.` and `..` are excluded although the XKS
/// pattern allows them, because HTTP clients remove such path segments before sending.
pub fn is_valid_key_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a URI path prefix: empty, or `/` followed by segments of `[A-Za-z0-9_-]` separated
/// by single `/`, so that the whole `XksProxyUriPath` fits in 128 characters and matches the
/// pattern AWS KMS enforces.
///
/// # Errors
///
/// Returns a message that shows the rule.
pub fn validate_uri_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    let segments_valid = prefix.strip_prefix('/').is_some_and(|rest| {
        rest.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
    });
    if !segments_valid {
        return Err(format!(
            "invalid URI path prefix {prefix:?}: start with '/', use letters, digits, '_' and '-' \
             in segments separated by single '/', with no trailing '/'"
        ));
    }
    if prefix.contains("/kms/xks/") || prefix.ends_with("/kms/xks") {
        return Err(format!(
            "invalid URI path prefix {prefix:?}: it must not contain /kms/xks"
        ));
    }
    if prefix.len() + XKS_PATH_SUFFIX.len() > MAX_URI_PATH_LEN {
        return Err(format!(
            "URI path prefix {prefix:?} is too long: the full path {prefix}{XKS_PATH_SUFFIX} must \
             fit in {MAX_URI_PATH_LEN} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_parses_subsets() {
        assert_eq!(
            KeyUsage::parse("encrypt,decrypt"),
            Ok(KeyUsage::ENCRYPT_DECRYPT)
        );
        let encrypt_only = KeyUsage::parse("ENCRYPT").expect("valid");
        assert!(encrypt_only.encrypt(), "encrypt allowed");
        assert!(!encrypt_only.decrypt(), "decrypt not allowed");
        assert_eq!(encrypt_only.names(), vec!["ENCRYPT"]);
        assert!(KeyUsage::parse("").is_err());
        assert!(KeyUsage::parse("encrypt,sign").is_err());
    }

    #[test]
    fn domain_ids_follow_rule() {
        assert!(validate_domain_id("acme-1").is_ok());
        for bad in ["", "Acme", "a_b", "-x", "--", &"a".repeat(64)] {
            assert!(validate_domain_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_ids_follow_xks_rule() {
        assert!(validate_key_id("Key_1.v-2").is_ok());
        assert!(validate_key_id(&"k".repeat(128)).is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"k".repeat(129)] {
            assert!(validate_key_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uri_prefixes_follow_kms_pattern() {
        for good in ["", "/domains/acme", "/a_b-c/1"] {
            assert!(validate_uri_prefix(good).is_ok(), "{good}");
        }
        let too_long = format!("/{}", "a".repeat(117));
        for bad in [
            "acme",
            "/acme/",
            "//acme",
            "/a.b",
            "/x/kms/xks/v1",
            "/x/kms/xks",
            &too_long,
        ] {
            assert!(validate_uri_prefix(bad).is_err(), "{bad}");
        }
        assert!(validate_uri_prefix(&format!("/{}", "a".repeat(116))).is_ok());
    }
}
