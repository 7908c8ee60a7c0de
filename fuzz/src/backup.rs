//! Backup files: the header, the length checks and the authenticated decryption of the
//! payload, then the payload itself, which a fuzzer reaches only through its own target because
//! any changed file fails authentication.

use keyhold::keystore::backup::{self, BackupError, Contents, KeySource};
use zeroize::Zeroizing;

/// The 32-byte key file that the seed backups were made with (`keyhold backup create
/// --key-file`). It exists only in this crate and its corpus.
pub const KEY_FILE: [u8; 32] = *b"keyhold fuzz backup key file 32B";

/// Opens a backup file with [`KEY_FILE`].
///
/// A passphrase is never tried: Argon2id with the costs a header may name (up to 1 GiB and 16
/// passes) would make single inputs run for seconds. Passphrase files still have their header
/// checked before the key source mismatch is reported.
pub fn open(data: &[u8]) -> Result<Contents, BackupError> {
    backup::open(data, &KeySource::KeyFile(Zeroizing::new(KEY_FILE)))
}

/// Runs the target on one whole backup file.
pub fn run_file(data: &[u8]) {
    match open(data) {
        Ok(contents) => {
            let summary = contents.summary();
            let _ = summary.total(|domain| domain.versions);
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

/// Runs the target on one decrypted payload.
pub fn run_payload(data: &[u8]) {
    if let Err(error) = backup::check_payload(data) {
        let _ = error.to_string();
    }
}
