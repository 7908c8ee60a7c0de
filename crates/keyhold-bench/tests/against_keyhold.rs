//! Runs `keyhold-bench` against a real `keyhold` server on 127.0.0.1 for about a second.
//!
//! The test builds the `keyhold` binary with `cargo build --workspace --bin keyhold` unless
//! `KEYHOLD_BIN` names one. With `--workspace`, Cargo resolves the same dependency features as
//! for this test, so the build reuses the test's artifacts and takes well under a second.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Maximum wait for the server to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Kills the server when the test ends, whether it passed or not.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keyhold_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KEYHOLD_BIN") {
        return PathBuf::from(path);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "--workspace", "--bin", "keyhold"]);
    // Cargo sets these for the test process. Build scripts that watch them (ring watches
    // CARGO_MANIFEST_DIR) would otherwise run again and rebuild everything above them.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_test = [
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&name.as_ref());
        if set_for_test {
            command.env_remove(name.as_ref());
        }
    }
    let status = command.status().expect("run cargo build --bin keyhold");
    assert!(
        status.success(),
        "cargo build --bin keyhold failed: {status}"
    );
    let bench = Path::new(env!("CARGO_BIN_EXE_keyhold-bench"));
    let binary = bench.with_file_name("keyhold");
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

fn keyhold(binary: &Path, dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(binary)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run keyhold");
    assert!(
        output.status.success(),
        "keyhold {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn wait_until_listening(address: SocketAddr, server: &mut Server) {
    let started = Instant::now();
    while TcpStream::connect(address).is_err() {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("keyhold serve exited early: {status}");
        }
        assert!(
            started.elapsed() < STARTUP_TIMEOUT,
            "keyhold serve did not listen on {address} within {STARTUP_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn closed_loop_against_keyhold_has_no_errors() {
    let binary = keyhold_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    keyhold(&binary, &data, &["init"]);
    keyhold(&binary, &data, &["domain", "create", "acme"]);
    let credential = keyhold(&binary, &data, &["credential", "create", "acme"]);
    keyhold(&binary, &data, &["key", "create", "acme", "--key-id", "k1"]);

    let config: Value = serde_json::Deserializer::from_slice(&credential.stdout)
        .into_iter()
        .next()
        .expect("credential create printed JSON")
        .expect("valid JSON");
    let access_key_id = config["XksProxyAuthenticationCredential"]["AccessKeyId"]
        .as_str()
        .expect("AccessKeyId");
    let secret = config["XksProxyAuthenticationCredential"]["RawSecretAccessKey"]
        .as_str()
        .expect("RawSecretAccessKey");
    let uri_path = config["XksProxyUriPath"].as_str().expect("XksProxyUriPath");

    let port = free_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut server = Server(
        Command::new(&binary)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "serve",
                "--listen",
                &address.to_string(),
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keyhold serve"),
    );
    wait_until_listening(address, &mut server);
    let server_pid = server.0.id().to_string();

    let output = Command::new(env!("CARGO_BIN_EXE_keyhold-bench"))
        .args(["--url", &format!("https://localhost:{port}")])
        .args(["--uri-path", uri_path, "--key-id", "k1"])
        .args(["--access-key-id", access_key_id])
        .arg("--ca-file")
        .arg(data.join("tls/ca.pem"))
        .args(["--op", "encrypt:2,decrypt:2,health,metadata"])
        .args([
            "--connections",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
        ])
        .args(["--aad-size", "64", "--server-pid", &server_pid])
        .args(["--output", "json", "--quiet"])
        .env("XKS_SECRET_ACCESS_KEY", secret)
        .output()
        .expect("run keyhold-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "keyhold-bench failed: {stderr}");

    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report:#}");
    assert!(
        report["throughput"].as_f64().is_some_and(|t| t > 0.0),
        "{report:#}"
    );
    assert!(
        report["requests"].as_u64().is_some_and(|n| n > 0),
        "{report:#}"
    );
    let operations = report["operations"].as_array().expect("per-operation rows");
    assert_eq!(operations.len(), 4, "{report:#}");
    let latency = &report["latency_us"];
    assert!(
        latency["p50"].as_u64() <= latency["p99"].as_u64(),
        "{report:#}"
    );
    assert!(
        latency["p99"].as_u64() <= latency["max"].as_u64(),
        "{report:#}"
    );
    assert!(
        report["server_cpu"]["us_per_request"]
            .as_f64()
            .is_some_and(|us| us >= 0.0),
        "{report:#}"
    );
}

#[test]
fn wrong_secret_fails_at_startup() {
    let binary = keyhold_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    keyhold(&binary, &data, &["init"]);
    keyhold(&binary, &data, &["domain", "create", "acme"]);
    let credential = keyhold(&binary, &data, &["credential", "create", "acme"]);
    let config: Value = serde_json::Deserializer::from_slice(&credential.stdout)
        .into_iter()
        .next()
        .expect("credential create printed JSON")
        .expect("valid JSON");
    let access_key_id = config["XksProxyAuthenticationCredential"]["AccessKeyId"]
        .as_str()
        .expect("AccessKeyId");

    let port = free_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut server = Server(
        Command::new(&binary)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "serve",
                "--listen",
                &address.to_string(),
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keyhold serve"),
    );
    wait_until_listening(address, &mut server);

    let output = Command::new(env!("CARGO_BIN_EXE_keyhold-bench"))
        .args(["--url", &format!("https://127.0.0.1:{port}")])
        .args(["--uri-path", "/domains/acme/kms/xks/v1", "--op", "health"])
        .args(["--access-key-id", access_key_id])
        .arg("--ca-file")
        .arg(data.join("tls/ca.pem"))
        .args(["--duration", "1s", "--quiet"])
        .env(
            "XKS_SECRET_ACCESS_KEY",
            "c2VjcmV0IHRoYXQgZG9lcyBub3QgbWF0Y2ggdGhlIGtleQ==",
        )
        .output()
        .expect("run keyhold-bench");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AuthenticationFailedException"), "{stderr}");
}
