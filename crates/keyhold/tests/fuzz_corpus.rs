//! Replays every file of the fuzz corpus and of the fuzz regressions through its target, so
//! that an input that once crashed stays a test after its fix. Also checks that the seeds still
//! reach the code behind each parser's first checks.
//!
//! The targets are the source files of the `fuzz/` crate, compiled into this test, because that
//! crate lives outside the workspace to keep AFL++ out of normal builds.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use keyhold::api::route::Operation;

// Items that only the AFL++ binaries use are unused here, and `pub` is for those binaries.
#[allow(dead_code, unreachable_pub)]
#[path = "../../../fuzz/src/lib.rs"]
mod keyhold_fuzz;

use keyhold_fuzz::{TARGETS, backup, config, sigv4, xks_body};

/// Files of one target under `corpus/` or `regressions/`, sorted; empty when the folder does
/// not exist.
fn inputs(folder: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(folder)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("read corpus folder entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

#[test]
fn every_input_runs_without_panic() {
    let mut failures = Vec::new();
    for (target, run) in TARGETS {
        let files = [inputs("corpus", target), inputs("regressions", target)].concat();
        for path in files {
            let data = read(&path);
            if panic::catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
}

#[test]
fn every_target_has_seeds() {
    for (target, _) in TARGETS {
        assert!(
            !inputs("corpus", target).is_empty(),
            "corpus/{target} has no seed"
        );
    }
}

#[test]
fn sigv4_seeds_verify() {
    for path in inputs("corpus", "sigv4") {
        let result = sigv4::verify(&read(&path));
        assert!(
            matches!(result, Some(Ok(_))),
            "{} does not verify: {result:?}",
            path.display()
        );
    }
}

#[test]
fn xks_body_seeds_are_valid() {
    for path in inputs("corpus", "xks_body") {
        let operations = xks_body::valid_operations(&read(&path));
        assert!(
            !operations.is_empty(),
            "{} is valid for no operation",
            path.display()
        );
    }
}

#[test]
fn xks_body_seeds_cover_every_operation() {
    let mut covered = Vec::new();
    for path in inputs("corpus", "xks_body") {
        covered.extend(xks_body::valid_operations(&read(&path)));
    }
    for operation in [
        Operation::Health,
        Operation::KeyMetadata,
        Operation::Encrypt,
        Operation::Decrypt,
    ] {
        assert!(
            covered.contains(&operation),
            "no seed is valid for {}",
            operation.as_str()
        );
    }
}

#[test]
fn config_seeds_are_valid() {
    for path in inputs("corpus", "config") {
        let result = config::parse(&read(&path));
        assert!(
            matches!(result, Some(Ok(_))),
            "{} is not a valid keyhold.toml: {result:?}",
            path.display()
        );
    }
}

#[test]
fn backup_file_seeds_open_or_need_a_passphrase() {
    for path in inputs("corpus", "backup_file") {
        match backup::open(&read(&path)) {
            Ok(_) | Err(keyhold::keystore::backup::BackupError::WrongKeySource(_)) => {}
            Err(error) => panic!("{} does not open: {error}", path.display()),
        }
    }
}

#[test]
fn backup_payload_seeds_are_valid() {
    for path in inputs("corpus", "backup_payload") {
        let data = read(&path);
        if let Err(error) = keyhold::keystore::backup::check_payload(&data) {
            panic!("{} is not a valid payload: {error}", path.display());
        }
    }
}
