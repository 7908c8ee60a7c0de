//! The root of trust: wraps and unwraps key material and SigV4 secrets for storage.
//!
//! Wrapped values are `0x01 || IV (12 bytes) || ciphertext || tag (16 bytes)`, AES-256-GCM under
//! the root key. The AAD binds the value to its place (domain, key id and version, or domain and
//! access key id), so a wrapped value copied onto another row fails to unwrap.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::config::{Pkcs11Section, RootOfTrustSettings};
use crate::crypto::{self, DataKey, IV_LEN, KEY_LEN, TAG_LEN};
use crate::hsm::{Hsm, HsmConfig, HsmError, HsmKey};

/// Format byte of wrapped values.
const WRAP_FORMAT_V1: u8 = 1;

/// Domain-separation label at the start of every wrapping AAD.
const WRAP_LABEL: &[u8] = b"keyhold/wrap/v1";

/// What a wrapped value is, bound into its AAD.
#[derive(Debug, Clone, Copy)]
pub enum WrapContext<'a> {
    /// Material of one key version.
    KeyVersion {
        /// Domain id.
        domain_id: &'a str,
        /// External key id.
        key_id: &'a str,
        /// Version number.
        version: u32,
    },
    /// A SigV4 secret access key.
    Credential {
        /// Domain id.
        domain_id: &'a str,
        /// Access key id.
        access_key_id: &'a str,
    },
    /// A key Keyhold uses itself, such as the health-check key.
    SystemKey {
        /// Name of the system key.
        name: &'a str,
    },
}

impl WrapContext<'_> {
    /// Encodes the context as length-prefixed fields after a label and a kind byte.
    fn to_aad(self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64);
        aad.extend_from_slice(WRAP_LABEL);
        let push_field = |aad: &mut Vec<u8>, field: &str| {
            // Ids are at most 128 bytes, so the length always fits.
            aad.extend_from_slice(&u16::try_from(field.len()).unwrap_or(u16::MAX).to_be_bytes());
            aad.extend_from_slice(field.as_bytes());
        };
        match self {
            WrapContext::KeyVersion {
                domain_id,
                key_id,
                version,
            } => {
                aad.push(1);
                push_field(&mut aad, domain_id);
                push_field(&mut aad, key_id);
                aad.extend_from_slice(&version.to_be_bytes());
            }
            WrapContext::Credential {
                domain_id,
                access_key_id,
            } => {
                aad.push(2);
                push_field(&mut aad, domain_id);
                push_field(&mut aad, access_key_id);
            }
            WrapContext::SystemKey { name } => {
                aad.push(3);
                push_field(&mut aad, name);
            }
        }
        aad
    }
}

/// Failure of the root of trust.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// The root-key file could not be read or written.
    #[error("root-key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The root-key file is not 32 bytes long.
    #[error("root-key file {path} must contain exactly 32 bytes, found {len}")]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Bytes found.
        len: usize,
    },
    /// The root-key file is readable or writable by other users.
    #[error(
        "root-key file {path} has mode {mode:o}, so other users can access it; run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// The file's permission bits.
        mode: u32,
    },
    /// A wrapped value did not unwrap: it is corrupt, was moved to another row, or was made
    /// under another root key.
    #[error("wrapped value did not unwrap under the root key")]
    Unwrap,
    /// A cryptographic primitive failed.
    #[error("root-key cryptography failed: {0}")]
    Crypto(#[from] crypto::CryptoError),
    /// The HSM failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The HSM PIN could not be read.
    #[error("{0}")]
    Pin(String),
}

/// A root of trust that wraps secrets for storage.
pub trait RootOfTrust: Send + Sync {
    /// Wraps `secret` for the place described by `context`.
    ///
    /// # Errors
    ///
    /// Returns a [`RootError`] when the provider fails.
    fn wrap(&self, context: WrapContext<'_>, secret: &[u8]) -> Result<Vec<u8>, RootError>;

    /// Unwraps a value made by [`RootOfTrust::wrap`] with the same context.
    ///
    /// # Errors
    ///
    /// Returns [`RootError::Unwrap`] when the value or context does not match.
    fn unwrap(
        &self,
        context: WrapContext<'_>,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, RootError>;

    /// A short description for logs and health, such as `root-key file /path`.
    fn describe(&self) -> String;

    /// The HSM behind this root of trust, which can also hold HSM-resident keys.
    fn hsm(&self) -> Option<&Arc<Hsm>> {
        None
    }
}

/// Opens the configured root of trust. With `create_hsm_root`, a missing root key in the HSM
/// is generated; otherwise a missing root key is an error.
///
/// # Errors
///
/// Returns [`RootError`] naming the file, the PIN source or the HSM step that failed.
pub fn open_root_of_trust(
    settings: &RootOfTrustSettings,
    create_hsm_root: bool,
) -> Result<Box<dyn RootOfTrust>, RootError> {
    match settings {
        RootOfTrustSettings::File(path) => Ok(Box::new(FileRootKey::load(path)?)),
        RootOfTrustSettings::Pkcs11(section) => {
            let config = HsmConfig {
                module: section.module.clone(),
                token_label: section.token_label.clone(),
                pin: read_pin(section)?,
                root_key_label: section.root_key_label.clone(),
                sessions: section.sessions,
                session_wait: Duration::from_millis(section.session_wait_ms),
                inline_calls: section.inline_calls,
            };
            let hsm = if create_hsm_root {
                Hsm::open_or_create_root(config)?
            } else {
                Hsm::open(config)?
            };
            Ok(Box::new(Pkcs11Root { hsm: Arc::new(hsm) }))
        }
    }
}

/// Reads the user PIN from the configured environment variable or file.
fn read_pin(section: &Pkcs11Section) -> Result<AuthPin, RootError> {
    if let Some(variable) = &section.pin_env {
        let pin = std::env::var(variable).map_err(|_| {
            RootError::Pin(format!(
                "environment variable {variable} with the HSM user PIN is not set"
            ))
        })?;
        return Ok(AuthPin::from(pin));
    }
    let Some(path) = &section.pin_file else {
        return Err(RootError::Pin("no HSM PIN source configured".to_owned()));
    };
    let mode = fs::metadata(path)
        .map_err(|source| RootError::Io {
            path: path.clone(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(RootError::Pin(format!(
            "HSM PIN file {} has mode {:o}, so other users can read it; run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|source| RootError::Io {
        path: path.clone(),
        source,
    })?);
    Ok(AuthPin::from(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// A root key inside an HSM; wrapping and unwrapping run there with `CKM_AES_GCM`.
pub struct Pkcs11Root {
    hsm: Arc<Hsm>,
}

impl RootOfTrust for Pkcs11Root {
    fn wrap(&self, context: WrapContext<'_>, secret: &[u8]) -> Result<Vec<u8>, RootError> {
        let mut iv = [0u8; IV_LEN];
        crypto::fill_random(&mut iv)?;
        let (ciphertext, tag) = self
            .hsm
            .encrypt(HsmKey::Root, &iv, secret, &context.to_aad())?;
        Ok(encode_wrapped(&iv, &ciphertext, &tag))
    }

    fn unwrap(
        &self,
        context: WrapContext<'_>,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, RootError> {
        let (iv, ciphertext, tag) = decode_wrapped(wrapped)?;
        match self
            .hsm
            .decrypt(HsmKey::Root, iv, ciphertext, tag, &context.to_aad())
        {
            Ok(secret) => Ok(Zeroizing::new(secret.to_vec())),
            Err(HsmError::TagMismatch) => Err(RootError::Unwrap),
            Err(error) => Err(error.into()),
        }
    }

    fn describe(&self) -> String {
        self.hsm.describe()
    }

    fn hsm(&self) -> Option<&Arc<Hsm>> {
        Some(&self.hsm)
    }
}

fn encode_wrapped(iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> Vec<u8> {
    let mut wrapped = Vec::with_capacity(1 + iv.len() + ciphertext.len() + tag.len());
    wrapped.push(WRAP_FORMAT_V1);
    wrapped.extend_from_slice(iv);
    wrapped.extend_from_slice(ciphertext);
    wrapped.extend_from_slice(tag);
    wrapped
}

/// IV, ciphertext and tag of a wrapped value.
type WrappedParts<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// Splits a wrapped value into IV, ciphertext and tag.
fn decode_wrapped(wrapped: &[u8]) -> Result<WrappedParts<'_>, RootError> {
    if wrapped.len() < 1 + IV_LEN + TAG_LEN || wrapped[0] != WRAP_FORMAT_V1 {
        return Err(RootError::Unwrap);
    }
    let (iv, rest) = wrapped[1..].split_at(IV_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    Ok((iv, ciphertext, tag))
}

/// A root key kept in a file of 32 random bytes, readable by its owner only.
pub struct FileRootKey {
    key: DataKey,
    path: PathBuf,
}

impl std::fmt::Debug for FileRootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRootKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileRootKey {
    /// Creates a new root-key file with mode 0600. Fails if the file exists.
    ///
    /// # Errors
    ///
    /// Returns [`RootError::Io`] when the file exists or cannot be written.
    pub fn create(path: &Path) -> Result<Self, RootError> {
        let material = crypto::generate_key()?;
        crate::files::write_new(path, material.as_ref(), 0o600).map_err(|source| {
            RootError::Io {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(Self {
            key: DataKey::new(material.as_ref())?,
            path: path.to_owned(),
        })
    }

    /// Loads a root-key file, rejecting one that other users can access.
    ///
    /// # Errors
    ///
    /// Returns [`RootError::TooOpen`], [`RootError::BadLength`] or [`RootError::Io`].
    pub fn load(path: &Path) -> Result<Self, RootError> {
        let io_error = |source| RootError::Io {
            path: path.to_owned(),
            source,
        };
        let mode = fs::metadata(path).map_err(io_error)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(RootError::TooOpen {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        let material = Zeroizing::new(fs::read(path).map_err(io_error)?);
        if material.len() != KEY_LEN {
            return Err(RootError::BadLength {
                path: path.to_owned(),
                len: material.len(),
            });
        }
        Ok(Self {
            key: DataKey::new(&material)?,
            path: path.to_owned(),
        })
    }
}

impl RootOfTrust for FileRootKey {
    fn wrap(&self, context: WrapContext<'_>, secret: &[u8]) -> Result<Vec<u8>, RootError> {
        let sealed = self.key.seal(secret, &context.to_aad())?;
        Ok(encode_wrapped(&sealed.iv, &sealed.ciphertext, &sealed.tag))
    }

    fn unwrap(
        &self,
        context: WrapContext<'_>,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, RootError> {
        let (iv, ciphertext, tag) = decode_wrapped(wrapped)?;
        let secret = self
            .key
            .open(iv, ciphertext, tag, &context.to_aad())
            .map_err(|_| RootError::Unwrap)?;
        Ok(Zeroizing::new(secret.to_vec()))
    }

    fn describe(&self) -> String {
        format!("root-key file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version_context(version: u32) -> WrapContext<'static> {
        WrapContext::KeyVersion {
            domain_id: "acme",
            key_id: "k1",
            version,
        }
    }

    #[test]
    fn wrapped_value_is_bound_to_its_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = FileRootKey::create(&dir.path().join("root.key")).expect("create");
        let wrapped = root.wrap(version_context(1), b"material").expect("wrap");
        assert_eq!(
            root.unwrap(version_context(1), &wrapped)
                .expect("unwrap")
                .as_slice(),
            b"material"
        );
        assert!(matches!(
            root.unwrap(version_context(2), &wrapped),
            Err(RootError::Unwrap)
        ));
        let other_key = WrapContext::KeyVersion {
            domain_id: "acme",
            key_id: "k2",
            version: 1,
        };
        assert!(matches!(
            root.unwrap(other_key, &wrapped),
            Err(RootError::Unwrap)
        ));
        assert!(!wrapped.windows(8).any(|window| window == b"material"));
    }

    #[test]
    fn root_key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("root.key");
        let created = FileRootKey::create(&path).expect("create");
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let wrapped = created.wrap(version_context(1), b"x").expect("wrap");
        let loaded = FileRootKey::load(&path).expect("load");
        assert!(loaded.unwrap(version_context(1), &wrapped).is_ok());
        assert!(
            FileRootKey::create(&path).is_err(),
            "create must not overwrite"
        );
    }

    #[test]
    fn load_rejects_group_readable_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("root.key");
        FileRootKey::create(&path).expect("create");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let error = FileRootKey::load(&path).expect_err("must reject");
        assert!(error.to_string().contains("chmod 600"), "{error}");
    }
}
