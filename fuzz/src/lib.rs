//! Fuzz targets for the Keyhold code that parses untrusted input: SigV4 requests, XKS request
//! bodies, `ciphertextMetadata`, `keyhold.toml` and backup files.
//!
//! Each target is a function of the raw bytes a fuzzer generates. The AFL++ binaries in
//! `src/bin` call them under `cargo afl`. `crates/keyhold/tests/fuzz_corpus.rs` compiles these
//! files as a module and calls them on every committed corpus and regression file under plain
//! `cargo test`, so the files refer to each other with `super::`, never `crate::`. A target
//! returns normally for any input the code rejects. It panics only on a bug: the code under
//! test panicked, or a property the target checks did not hold.

pub mod backup;
pub mod ciphertext_metadata;
pub mod config;
pub mod sigv4;
pub mod xks_body;

/// Function that runs the code under test on one input and panics on a bug.
pub type Target = fn(&[u8]);

/// Every target by the name of its binary and of its folders under `corpus/` and
/// `regressions/`.
pub const TARGETS: [(&str, Target); 6] = [
    ("sigv4", sigv4::run),
    ("xks_body", xks_body::run),
    ("ciphertext_metadata", ciphertext_metadata::run),
    ("config", config::run),
    ("backup_file", backup::run_file),
    ("backup_payload", backup::run_payload),
];
