//! The sample deployment files in `deploy/` that docs/deployment.md describes: the node
//! configuration loads with Keyhold's own configuration loader, the HAProxy configuration passes
//! `haproxy -c`, and the systemd unit passes `systemd-analyze verify`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use keyhold::config::Settings;
use keyhold::keystore::store::StorageTarget;

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(name)
}

#[test]
fn node_config_sample_loads() {
    let text = std::fs::read_to_string(sample("keyhold.toml")).expect("read the sample");
    let settings = Settings::parse(Path::new("/var/lib/keyhold"), &text)
        .unwrap_or_else(|error| panic!("deploy/keyhold.toml is invalid: {error}"));

    assert!(
        matches!(settings.storage, StorageTarget::Postgres(_)),
        "the sample is for several nodes on PostgreSQL"
    );
    assert_eq!(settings.node_id, "keyhold-a1");
    assert_eq!(settings.xks_endpoint, "https://xks.example.com");
    assert!(settings.admin_listen.is_some(), "the admin listener is on");
}

#[test]
fn haproxy_sample_is_valid() {
    let probe = Command::new("haproxy").arg("-v").output();
    assert!(
        probe.is_ok_and(|output| output.status.success()),
        "haproxy is missing; scripts/test installs the Debian package"
    );
    let output = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(sample("haproxy.cfg"))
        .output()
        .expect("run haproxy -c");
    assert!(
        output.status.success(),
        "haproxy rejects deploy/haproxy.cfg: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn systemd_unit_sample_is_valid() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is missing; install the Debian package systemd");
    };
    assert!(probe.status.success());

    // The unit names the installed binary; point it at the one under test for the check.
    let unit = std::fs::read_to_string(sample("keyhold.service")).expect("read the unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/keyhold "), "{unit}");
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("keyhold.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/keyhold", common::KEYHOLD),
    )
    .expect("write the unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze verify");
    let messages = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && messages.trim().is_empty(),
        "systemd-analyze finds problems in deploy/keyhold.service: {messages}"
    );
}
