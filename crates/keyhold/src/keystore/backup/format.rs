//! The backup file format and its encryption. This module seals and opens a payload; what the
//! payload contains is left to the manifest module.
//!
//! A file is a 59-byte header followed by the sealed payload. Integers are big-endian:
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `KHBACKUP` |
//! | 8 | 2 | format version, 1 |
//! | 10 | 1 | key source: 1 = passphrase through Argon2id, 2 = key file through HKDF-SHA256 |
//! | 11 | 4 | Argon2id memory in KiB (0 for a key file) |
//! | 15 | 4 | Argon2id iterations (0 for a key file) |
//! | 19 | 4 | Argon2id lanes (0 for a key file) |
//! | 23 | 16 | random salt |
//! | 39 | 12 | random AES-GCM nonce |
//! | 51 | 8 | length of the sealed payload: ciphertext and 16-byte tag |
//! | 59 | … | AES-256-GCM ciphertext, then the tag |
//!
//! The whole header is the AAD, so a changed header byte fails authentication like a changed
//! ciphertext byte. The file must end exactly where the length field states.

use argon2::{Algorithm, Argon2, Params, Version};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use zeroize::Zeroizing;

use super::BackupError;
use crate::crypto::{self, IV_LEN, KEY_LEN, TAG_LEN};

/// First bytes of every backup file.
pub(super) const MAGIC: &[u8; 8] = b"KHBACKUP";

/// Format version this build writes and reads.
pub(super) const FORMAT_VERSION: u16 = 1;

/// Length of the header, which is authenticated as AAD.
pub(super) const HEADER_LEN: usize = 59;

/// Length of the random salt.
const SALT_LEN: usize = 16;

/// HKDF `info` for the key derived from a key file, so that key serves no other purpose.
const HKDF_INFO: &[u8] = b"keyhold/backup/v1";

/// Largest Argon2id memory accepted from a header, 1 GiB. A changed header cannot make a
/// restore allocate more before authentication fails.
const MAX_MEMORY_KIB: u32 = 1 << 20;

/// Largest Argon2id iteration and lane counts accepted from a header.
const MAX_ITERATIONS: u32 = 16;
const MAX_LANES: u32 = 16;

/// Source of the backup key. `Debug` shows only the kind.
pub enum KeySource {
    /// A passphrase, stretched with Argon2id.
    Passphrase(Zeroizing<String>),
    /// 32 random bytes from a key file, expanded with HKDF-SHA256 and a per-file salt.
    KeyFile(Zeroizing<[u8; KEY_LEN]>),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Passphrase(_) => f.write_str("KeySource::Passphrase(redacted)"),
            Self::KeyFile(_) => f.write_str("KeySource::KeyFile(redacted)"),
        }
    }
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes over the memory.
    pub iterations: u32,
    /// Degree of parallelism.
    pub lanes: u32,
}

impl Argon2Params {
    /// 64 MiB, 3 iterations and 4 lanes: the second recommended option of RFC 9106 (Argon2),
    /// meant for systems with much less than the 2 GiB of its first option.
    pub const RFC_9106_SECOND: Self = Self {
        memory_kib: 64 * 1024,
        iterations: 3,
        lanes: 4,
    };
}

/// Derivation of a backup's key, as its header records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDerivation {
    /// From a passphrase with Argon2id.
    Argon2id(Argon2Params),
    /// From a key file with HKDF-SHA256.
    KeyFile,
}

impl std::fmt::Display for KeyDerivation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Argon2id(params) => write!(
                f,
                "passphrase (Argon2id, {} KiB, {} iterations, {} lanes)",
                params.memory_kib, params.iterations, params.lanes
            ),
            Self::KeyFile => f.write_str("key file (HKDF-SHA256)"),
        }
    }
}

/// The fields of a header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    derivation: KeyDerivation,
    salt: [u8; SALT_LEN],
    nonce: [u8; IV_LEN],
    sealed_len: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let (kind, params) = match self.derivation {
            KeyDerivation::Argon2id(params) => (1u8, params),
            KeyDerivation::KeyFile => (
                2u8,
                Argon2Params {
                    memory_kib: 0,
                    iterations: 0,
                    lanes: 0,
                },
            ),
        };
        let mut header = [0u8; HEADER_LEN];
        header[0..8].copy_from_slice(MAGIC);
        header[8..10].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        header[10] = kind;
        header[11..15].copy_from_slice(&params.memory_kib.to_be_bytes());
        header[15..19].copy_from_slice(&params.iterations.to_be_bytes());
        header[19..23].copy_from_slice(&params.lanes.to_be_bytes());
        header[23..39].copy_from_slice(&self.salt);
        header[39..51].copy_from_slice(&self.nonce);
        header[51..59].copy_from_slice(&self.sealed_len.to_be_bytes());
        header
    }

    /// Parses and checks the header at the start of `file`, and checks the file's length.
    fn decode(file: &[u8]) -> Result<Self, BackupError> {
        if file.len() >= MAGIC.len() && &file[..MAGIC.len()] != MAGIC {
            return Err(BackupError::NotABackup);
        }
        if file.len() < HEADER_LEN {
            return Err(BackupError::Truncated {
                expected: HEADER_LEN as u64,
                found: file.len() as u64,
            });
        }
        let version = u16::from_be_bytes([file[8], file[9]]);
        if version != FORMAT_VERSION {
            return Err(BackupError::UnsupportedVersion(version));
        }
        let params = Argon2Params {
            memory_kib: read_u32(&file[11..15]),
            iterations: read_u32(&file[15..19]),
            lanes: read_u32(&file[19..23]),
        };
        let derivation = match file[10] {
            1 => KeyDerivation::Argon2id(check_params(params)?),
            2 if params.memory_kib == 0 && params.iterations == 0 && params.lanes == 0 => {
                KeyDerivation::KeyFile
            }
            2 => {
                return Err(BackupError::InvalidHeader(
                    "a key-file backup must have zero Argon2id parameters".to_owned(),
                ));
            }
            other => {
                return Err(BackupError::InvalidHeader(format!(
                    "unknown key source {other}"
                )));
            }
        };
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&file[23..39]);
        let mut nonce = [0u8; IV_LEN];
        nonce.copy_from_slice(&file[39..51]);
        let mut sealed_len = [0u8; 8];
        sealed_len.copy_from_slice(&file[51..59]);
        let header = Self {
            derivation,
            salt,
            nonce,
            sealed_len: u64::from_be_bytes(sealed_len),
        };

        let found = (file.len() - HEADER_LEN) as u64;
        if header.sealed_len < TAG_LEN as u64 {
            return Err(BackupError::InvalidHeader(format!(
                "payload length {} is shorter than the {TAG_LEN}-byte tag",
                header.sealed_len
            )));
        }
        if found < header.sealed_len {
            return Err(BackupError::Truncated {
                // A changed length field can be close to u64::MAX.
                expected: (HEADER_LEN as u64).saturating_add(header.sealed_len),
                found: file.len() as u64,
            });
        }
        if found > header.sealed_len {
            return Err(BackupError::TrailingData {
                extra: found - header.sealed_len,
            });
        }
        Ok(header)
    }
}

/// Encrypts `plaintext` in place under a key derived from `source` and returns the backup
/// file. With a passphrase, `params` sets the Argon2id cost.
///
/// # Errors
///
/// Returns [`BackupError::Kdf`] for unusable Argon2id parameters and [`BackupError::Crypto`]
/// when no random salt or nonce could be drawn.
pub(super) fn seal(
    mut plaintext: Zeroizing<Vec<u8>>,
    source: &KeySource,
    params: Argon2Params,
) -> Result<Vec<u8>, BackupError> {
    let derivation = match source {
        KeySource::Passphrase(_) => KeyDerivation::Argon2id(params),
        KeySource::KeyFile(_) => KeyDerivation::KeyFile,
    };
    let mut salt = [0u8; SALT_LEN];
    crypto::fill_random(&mut salt)?;
    let mut nonce = [0u8; IV_LEN];
    crypto::fill_random(&mut nonce)?;
    let header = Header {
        derivation,
        salt,
        nonce,
        sealed_len: (plaintext.len() + TAG_LEN) as u64,
    }
    .encode();

    let key = derive_key(derivation, &salt, source)?;
    // Reserving room for the tag first keeps the buffer from moving, so no copy of the
    // plaintext is left behind in freed memory.
    plaintext.reserve_exact(TAG_LEN);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(&header[..]),
        &mut *plaintext,
    )
    .map_err(|_| crypto::CryptoError::InvalidLength)?;

    let mut file = Vec::with_capacity(HEADER_LEN + plaintext.len());
    file.extend_from_slice(&header);
    file.extend_from_slice(&plaintext);
    Ok(file)
}

/// Checks the header, derives the key and authenticates and decrypts the payload. Nothing of
/// the payload is returned unless the whole file authenticates.
///
/// # Errors
///
/// Returns [`BackupError::Authentication`] for a wrong passphrase or key file or a changed
/// file, and the header errors of [`BackupError`] for a file that is not a backup, is
/// truncated or has extra bytes.
pub(super) fn open(
    file: &[u8],
    source: &KeySource,
) -> Result<(Zeroizing<Vec<u8>>, KeyDerivation), BackupError> {
    let header = Header::decode(file)?;
    let key = derive_key(header.derivation, &header.salt, source)?;
    let mut buffer = Zeroizing::new(Vec::with_capacity(file.len() - HEADER_LEN));
    buffer.extend_from_slice(&file[HEADER_LEN..]);
    let plaintext_len = key
        .open_in_place(
            Nonce::assume_unique_for_key(header.nonce),
            Aad::from(&file[..HEADER_LEN]),
            &mut buffer[..],
        )
        .map_err(|_| BackupError::Authentication)?
        .len();
    buffer.truncate(plaintext_len);
    Ok((buffer, header.derivation))
}

fn derive_key(
    derivation: KeyDerivation,
    salt: &[u8; SALT_LEN],
    source: &KeySource,
) -> Result<LessSafeKey, BackupError> {
    match (derivation, source) {
        (KeyDerivation::Argon2id(params), KeySource::Passphrase(passphrase)) => {
            let params = Params::new(
                params.memory_kib,
                params.iterations,
                params.lanes,
                Some(KEY_LEN),
            )
            .map_err(|error| BackupError::Kdf(error.to_string()))?;
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
                .map_err(|error| BackupError::Kdf(error.to_string()))?;
            let unbound = UnboundKey::new(&AES_256_GCM, key.as_ref())
                .map_err(|_| crypto::CryptoError::InvalidLength)?;
            Ok(LessSafeKey::new(unbound))
        }
        (KeyDerivation::KeyFile, KeySource::KeyFile(material)) => {
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(material.as_ref());
            let okm = prk
                .expand(&[HKDF_INFO], &AES_256_GCM)
                .map_err(|_| crypto::CryptoError::InvalidLength)?;
            Ok(LessSafeKey::new(UnboundKey::from(okm)))
        }
        (KeyDerivation::Argon2id(_), KeySource::KeyFile(_)) => Err(BackupError::WrongKeySource(
            "the backup is encrypted under a passphrase, but a key file was given".to_owned(),
        )),
        (KeyDerivation::KeyFile, KeySource::Passphrase(_)) => Err(BackupError::WrongKeySource(
            "the backup is encrypted under a key file, but a passphrase was given".to_owned(),
        )),
    }
}

/// Rejects Argon2id parameters outside what a restore is willing to spend.
fn check_params(params: Argon2Params) -> Result<Argon2Params, BackupError> {
    let in_range = (1..=MAX_LANES).contains(&params.lanes)
        && (1..=MAX_ITERATIONS).contains(&params.iterations)
        && (8 * params.lanes..=MAX_MEMORY_KIB).contains(&params.memory_kib);
    if in_range {
        Ok(params)
    } else {
        Err(BackupError::InvalidHeader(format!(
            "Argon2id parameters {params:?} are outside the accepted range (1 to {MAX_LANES} \
             lanes, 1 to {MAX_ITERATIONS} iterations, 8 KiB per lane to {MAX_MEMORY_KIB} KiB)"
        )))
    }
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut buffer = [0u8; 4];
    buffer.copy_from_slice(bytes);
    u32::from_be_bytes(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Argon2id parameters small enough to run hundreds of derivations in a test.
    const TEST_PARAMS: Argon2Params = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        lanes: 1,
    };

    fn passphrase(text: &str) -> KeySource {
        KeySource::Passphrase(Zeroizing::new(text.to_owned()))
    }

    fn key_file(byte: u8) -> KeySource {
        KeySource::KeyFile(Zeroizing::new([byte; KEY_LEN]))
    }

    fn sealed(source: &KeySource) -> Vec<u8> {
        let plaintext = Zeroizing::new(b"manifest and secrets".to_vec());
        seal(plaintext, source, TEST_PARAMS).expect("seal")
    }

    #[test]
    fn sealed_file_opens_with_same_key() {
        for source in [passphrase("correct horse battery"), key_file(7)] {
            let file = sealed(&source);
            assert_eq!(&file[..8], MAGIC);
            assert_eq!(file.len(), HEADER_LEN + 20 + TAG_LEN);
            let (plaintext, _) = open(&file, &source).expect("open");
            assert_eq!(plaintext.as_slice(), b"manifest and secrets");
        }
    }

    #[test]
    fn header_records_key_derivation() {
        let file = sealed(&passphrase("correct horse battery"));
        let (_, derivation) = open(&file, &passphrase("correct horse battery")).expect("open");
        assert_eq!(derivation, KeyDerivation::Argon2id(TEST_PARAMS));
        let (_, derivation) = open(&sealed(&key_file(1)), &key_file(1)).expect("open");
        assert_eq!(derivation, KeyDerivation::KeyFile);
    }

    #[test]
    fn changed_byte_anywhere_is_rejected() {
        for source in [passphrase("correct horse battery"), key_file(7)] {
            let file = sealed(&source);
            for index in 0..file.len() {
                let mut changed = file.clone();
                changed[index] ^= 0x01;
                assert!(
                    open(&changed, &source).is_err(),
                    "byte {index} of {source:?} changed without detection"
                );
            }
        }
    }

    #[test]
    fn truncated_or_extended_file_is_rejected() {
        let source = key_file(7);
        let file = sealed(&source);
        for len in 0..file.len() {
            let result = open(&file[..len], &source);
            assert!(result.is_err(), "file cut to {len} bytes was accepted");
        }
        let cut = open(&file[..file.len() - 1], &source).expect_err("one byte short");
        assert!(matches!(cut, BackupError::Truncated { .. }), "{cut}");
        let mut extended = file.clone();
        extended.push(0);
        let extra = open(&extended, &source).expect_err("one byte extra");
        assert!(
            matches!(extra, BackupError::TrailingData { extra: 1 }),
            "{extra}"
        );
    }

    #[test]
    fn wrong_passphrase_or_key_file_is_rejected() {
        let file = sealed(&passphrase("correct horse battery"));
        let wrong = open(&file, &passphrase("correct horse battery!")).expect_err("wrong");
        assert!(matches!(wrong, BackupError::Authentication), "{wrong}");
        let kind = open(&file, &key_file(7)).expect_err("key file for passphrase backup");
        assert!(matches!(kind, BackupError::WrongKeySource(_)), "{kind}");

        let file = sealed(&key_file(7));
        let wrong = open(&file, &key_file(8)).expect_err("wrong key file");
        assert!(matches!(wrong, BackupError::Authentication), "{wrong}");
    }

    #[test]
    fn other_files_and_versions_are_named() {
        let source = key_file(7);
        let other = open(b"SQLite format 3\0 and more bytes", &source).expect_err("not a backup");
        assert!(matches!(other, BackupError::NotABackup), "{other}");
        let mut newer = sealed(&source);
        newer[9] = 2;
        let version = open(&newer, &source).expect_err("newer format");
        assert!(
            matches!(version, BackupError::UnsupportedVersion(2)),
            "{version}"
        );
    }

    #[test]
    fn oversized_kdf_parameters_are_rejected_before_derivation() {
        let source = passphrase("correct horse battery");
        let mut file = sealed(&source);
        file[11..15].copy_from_slice(&(MAX_MEMORY_KIB + 1).to_be_bytes());
        let error = open(&file, &source).expect_err("too much memory");
        assert!(matches!(error, BackupError::InvalidHeader(_)), "{error}");
    }

    #[test]
    fn nonces_and_salts_differ_between_files() {
        let source = key_file(7);
        let first = sealed(&source);
        let second = sealed(&source);
        assert_ne!(first[23..51], second[23..51]);
        assert_ne!(first[HEADER_LEN..], second[HEADER_LEN..]);
    }
}
