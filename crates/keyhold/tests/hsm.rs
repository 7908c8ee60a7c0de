//! End-to-end tests of the PKCS#11 root of trust and HSM-resident keys on a real SoftHSMv2
//! token that each test creates in its own temporary directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    CliOutput, Credential, DataDir, HttpResponse, KEYHOLD, Server, decrypt_request,
    encrypt_request, expected_integrity_value, health_request, unb64, wait_for,
};
use serde_json::Value;

/// SoftHSMv2's PKCS#11 module as Debian installs it.
const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// User PIN of the test token.
const PIN: &str = "1234";

/// Environment variable that carries the PIN to Keyhold.
const PIN_ENV: &str = "KEYHOLD_TEST_HSM_PIN";

/// Token label of the test token.
const TOKEN: &str = "keyhold-test";

/// A SoftHSMv2 configuration with its own token directory, and a Keyhold data directory whose
/// root of trust is a token there.
struct HsmSetup {
    data: DataDir,
    conf: PathBuf,
    tokens: PathBuf,
}

impl HsmSetup {
    /// Creates a token, runs `keyhold init` against it, and creates domain `acme` with a
    /// credential, an HSM-resident key `hsm-key` and a software key `sw-key`.
    fn new() -> (Self, Credential) {
        let data = DataDir::empty();
        let tokens = data.scratch().join("tokens");
        std::fs::create_dir(&tokens).expect("create token directory");
        let conf = data.scratch().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("write SoftHSMv2 configuration");
        let setup = Self { data, conf, tokens };

        let init_token = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN])
            .args(["--pin", PIN, "--so-pin", "5678"])
            .env("SOFTHSM2_CONF", &setup.conf)
            .output()
            .expect("run softhsm2-util; scripts/test installs the softhsm2 package");
        assert!(
            init_token.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&init_token.stderr)
        );

        setup.run_ok(&[
            "init",
            "--pkcs11-module",
            SOFTHSM_MODULE,
            "--token-label",
            TOKEN,
            "--pin-env",
            PIN_ENV,
        ]);
        setup.run_ok(&["domain", "create", "acme"]);
        let credential = setup.credential("acme");
        setup.run_ok(&[
            "key",
            "create",
            "acme",
            "--key-id",
            "hsm-key",
            "--protection",
            "hsm",
        ]);
        setup.run_ok(&["key", "create", "acme", "--key-id", "sw-key"]);
        (setup, credential)
    }

    fn env(&self) -> [(&'static str, String); 2] {
        [
            ("SOFTHSM2_CONF", self.conf.display().to_string()),
            (PIN_ENV, PIN.to_owned()),
        ]
    }

    /// Runs a CLI command with the HSM environment.
    fn run(&self, args: &[&str]) -> CliOutput {
        self.run_with_pin(args, PIN)
    }

    fn run_with_pin(&self, args: &[&str], pin: &str) -> CliOutput {
        let output = Command::new(KEYHOLD)
            .arg("--data-dir")
            .arg(self.data.path())
            .args(args)
            .env_remove("RUST_LOG")
            .env("SOFTHSM2_CONF", &self.conf)
            .env(PIN_ENV, pin)
            .stdin(Stdio::null())
            .output()
            .expect("run the keyhold binary");
        CliOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "keyhold {args:?} failed: {}",
            output.stderr
        );
        output.stdout
    }

    fn credential(&self, domain: &str) -> Credential {
        let stdout = self.run_ok(&["credential", "create", domain]);
        let configuration: Value = serde_json::from_str(&stdout).expect("credential JSON");
        let field = |pointer: &str| {
            configuration
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("credential output lacks {pointer}"))
                .to_owned()
        };
        Credential {
            access_key_id: field("/XksProxyAuthenticationCredential/AccessKeyId"),
            secret_access_key: field("/XksProxyAuthenticationCredential/RawSecretAccessKey"),
            uri_path: field("/XksProxyUriPath"),
        }
    }

    fn serve(&self) -> Server {
        let env = self.env();
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        Server::start_with_env(&self.data, &env)
    }

    /// Changes a setting of the `[root_of_trust]` section in keyhold.toml.
    fn set_config(&self, from: &str, to: &str) {
        let path = self.data.path().join("keyhold.toml");
        let text = std::fs::read_to_string(&path).expect("read keyhold.toml");
        assert!(text.contains(from), "keyhold.toml lacks {from:?}");
        std::fs::write(&path, text.replace(from, to)).expect("write keyhold.toml");
    }

    /// Runs `serve` expecting it to fail at start-up, and returns its stderr.
    fn serve_failure(&self, pin: &str) -> String {
        let mut child = Command::new(KEYHOLD)
            .arg("--data-dir")
            .arg(self.data.path())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env("SOFTHSM2_CONF", &self.conf)
            .env(PIN_ENV, pin)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyhold serve");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait for keyhold serve") {
                assert!(!status.success(), "serve exited successfully");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve kept running although its HSM settings are wrong");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("collect serve output");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

fn encrypt(server: &Server, credential: &Credential, key_id: &str, aad: &[u8]) -> HttpResponse {
    let path = credential.path(&format!("/keys/{key_id}/encrypt"));
    server.post(
        credential,
        &path,
        &encrypt_request(b"data key bytes", Some(aad)),
    )
}

fn decrypt(
    server: &Server,
    credential: &Credential,
    key_id: &str,
    encrypted: &Value,
    aad: &[u8],
) -> HttpResponse {
    let path = credential.path(&format!("/keys/{key_id}/decrypt"));
    server.post(credential, &path, &decrypt_request(encrypted, Some(aad)))
}

fn health_status(server: &Server, credential: &Credential) -> String {
    let response = server.post(credential, &credential.path("/health"), &health_request());
    assert_eq!(response.status, 200, "health: {}", response.body);
    response.json()["ekmFleetDetails"][0]["healthStatus"]
        .as_str()
        .expect("healthStatus")
        .to_owned()
}

fn node_status(server: &Server) -> String {
    let response = server.get("/health");
    response.json()["status"]
        .as_str()
        .expect("status")
        .to_owned()
}

/// Turns on `inline_calls`, so PKCS#11 calls run on the thread serving the request.
fn call_inline(setup: &HsmSetup) {
    setup.set_config("inline_calls = false", "inline_calls = true");
}

#[test]
fn software_and_hsm_keys_round_trip() {
    let (setup, credential) = HsmSetup::new();
    round_trip(&setup.serve(), &credential);
}

#[test]
fn inline_calls_round_trip() {
    let (setup, credential) = HsmSetup::new();
    call_inline(&setup);
    round_trip(&setup.serve(), &credential);
}

fn round_trip(server: &Server, credential: &Credential) {
    for key_id in ["hsm-key", "sw-key"] {
        let aad = b"project=hsm";
        let encrypted = encrypt(server, credential, key_id, aad);
        assert_eq!(
            encrypted.status, 200,
            "{key_id} encrypt: {}",
            encrypted.body
        );
        let body = encrypted.json();
        let field = |name: &str| unb64(body[name].as_str().expect(name), name);
        assert_eq!(
            field("initializationVector").len(),
            12,
            "{key_id} IV length"
        );
        assert_eq!(field("authenticationTag").len(), 16, "{key_id} tag length");
        let expected = expected_integrity_value(
            aad,
            &field("ciphertextMetadata"),
            &field("initializationVector"),
            &field("ciphertext"),
            &field("authenticationTag"),
        );
        assert_eq!(
            body["ciphertextDataIntegrityValue"].as_str(),
            Some(expected.as_str()),
            "{key_id} integrity value"
        );

        let decrypted = decrypt(server, credential, key_id, &body, aad);
        assert_eq!(
            decrypted.status, 200,
            "{key_id} decrypt: {}",
            decrypted.body
        );
        assert_eq!(
            unb64(&decrypted.field("plaintext"), "plaintext"),
            b"data key bytes",
            "{key_id} plaintext"
        );

        let changed = decrypt(server, credential, key_id, &body, b"project=other");
        assert_eq!(
            changed.status, 400,
            "{key_id} changed AAD: {}",
            changed.body
        );
        assert_eq!(
            changed.error_name().as_deref(),
            Some("InvalidCiphertextException"),
            "{key_id} changed AAD"
        );
    }
    assert_eq!(health_status(server, credential), "ACTIVE");
    assert_eq!(node_status(server), "ACTIVE");
}

#[test]
fn hsm_key_is_sensitive_and_not_extractable() {
    let (setup, _) = HsmSetup::new();
    let shown: Value = serde_json::from_str(
        &setup.run_ok(&["key", "show", "acme", "hsm-key", "--output", "json"]),
    )
    .expect("key show JSON");
    assert_eq!(shown["protection"], "hsm");
    assert_eq!(shown["hsmObject"]["extractable"], false, "CKA_EXTRACTABLE");
    assert_eq!(shown["hsmObject"]["sensitive"], true, "CKA_SENSITIVE");
    let label = shown["hsmObject"]["label"].as_str().expect("label");
    assert!(
        label.starts_with("keyhold/acme/hsm-key/v1/"),
        "HSM object label names domain, key and version: {label}"
    );
}

#[test]
fn no_root_key_file_with_hsm_root() {
    let (setup, _) = HsmSetup::new();
    assert!(
        !setup.data.path().join("root.key").exists(),
        "an HSM root of trust must not leave a root-key file"
    );
    let config = std::fs::read_to_string(setup.data.path().join("keyhold.toml")).expect("config");
    assert!(config.contains("provider = \"pkcs11\""), "{config}");
    assert!(
        !config.contains(PIN),
        "the PIN must not be written to keyhold.toml"
    );
}

#[test]
fn wrong_pin_fails_start_clearly() {
    let (setup, _) = HsmSetup::new();
    let stderr = setup.serve_failure("9999");
    assert!(stderr.contains("CKR_PIN_INCORRECT"), "stderr: {stderr}");
    assert!(stderr.contains("check the PIN"), "stderr: {stderr}");
    let listed = setup.run_with_pin(&["key", "list", "acme"], "9999");
    assert!(!listed.status.success(), "CLI must fail with a wrong PIN");
}

#[test]
fn missing_token_fails_start_clearly() {
    let (setup, _) = HsmSetup::new();
    setup.set_config(
        "token_label = \"keyhold-test\"",
        "token_label = \"no-such-token\"",
    );
    let stderr = setup.serve_failure(PIN);
    assert!(
        stderr.contains("no initialized token labelled \"no-such-token\""),
        "stderr: {stderr}"
    );
}

#[test]
fn token_loss_degrades_and_recovers() {
    let (setup, credential) = HsmSetup::new();
    let server = setup.serve();
    assert_eq!(encrypt(&server, &credential, "hsm-key", b"a").status, 200);

    let away = setup.data.scratch().join("tokens-away");
    std::fs::rename(&setup.tokens, &away).expect("move the token directory away");

    let failed = encrypt(&server, &credential, "hsm-key", b"a");
    assert_eq!(failed.status, 500, "HSM key without token: {}", failed.body);
    assert_eq!(failed.error_name().as_deref(), Some("InternalException"));
    let software = encrypt(&server, &credential, "sw-key", b"a");
    assert_eq!(
        software.status, 200,
        "software key without token: {}",
        software.body
    );

    // The health result is cached for up to a second.
    let unavailable = wait_for(Duration::from_secs(5), || {
        (health_status(&server, &credential) == "UNAVAILABLE").then_some(())
    });
    assert!(
        unavailable.is_some(),
        "domain with an HSM key must report UNAVAILABLE"
    );
    assert_eq!(node_status(&server), "DEGRADED");
    let log = server.log();
    assert!(
        log.contains("C_EncryptInit returned CKR_OBJECT_HANDLE_INVALID"),
        "the log must name the PKCS#11 function and return code:\n{log}"
    );

    std::fs::rename(&away, &setup.tokens).expect("restore the token directory");
    let recovered = wait_for(Duration::from_secs(10), || {
        (encrypt(&server, &credential, "hsm-key", b"a").status == 200).then_some(())
    });
    let (_, delay) = recovered.expect("HSM key must work again once the token is back");
    eprintln!("HSM key usable again {delay:?} after the token directory returned");
    let active = wait_for(Duration::from_secs(5), || {
        (health_status(&server, &credential) == "ACTIVE").then_some(())
    });
    assert!(active.is_some(), "health must return to ACTIVE");
    assert_eq!(node_status(&server), "ACTIVE");
}

#[test]
fn busy_session_pool_times_out() {
    let (setup, credential) = HsmSetup::new();
    setup.set_config("sessions = 4", "sessions = 1");
    setup.set_config("session_wait_ms = 100", "session_wait_ms = 0");
    busy_pool_times_out(&setup.serve(), &credential);
}

#[test]
fn inline_calls_busy_pool_times_out() {
    let (setup, credential) = HsmSetup::new();
    setup.set_config("sessions = 4", "sessions = 1");
    call_inline(&setup);
    setup.set_config("session_wait_ms = 100", "session_wait_ms = 0");
    busy_pool_times_out(&setup.serve(), &credential);
}

fn busy_pool_times_out(server: &Server, credential: &Credential) {
    // Many connections at once make requests overlap on the single session; with no wait,
    // every overlap fails at once instead of queueing.
    let path = credential.path("/keys/hsm-key/encrypt");
    let body = encrypt_request(&vec![7u8; 32 * 1024], Some(&vec![1u8; 8192]));
    let responses: Vec<HttpResponse> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..12)
            .map(|_| scope.spawn(|| server.curl_burst(credential, &path, &body, 40)))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("curl worker"))
            .collect()
    });

    let timeouts = responses
        .iter()
        .filter(|response| response.status == 503)
        .count();
    let successes = responses
        .iter()
        .filter(|response| response.status == 200)
        .count();
    eprintln!(
        "{} requests: {successes} succeeded, {timeouts} timed out",
        responses.len()
    );
    assert!(timeouts > 0, "no request waited for the single session");
    assert!(successes > 0, "no request got the session");
    assert_eq!(timeouts + successes, responses.len(), "unexpected statuses");
    let timed_out = responses
        .iter()
        .find(|response| response.status == 503)
        .expect("a timed-out response");
    assert_eq!(
        timed_out.error_name().as_deref(),
        Some("DependencyTimeoutException")
    );
}

/// The file must exist for these tests; a missing module is a setup error, not a skip.
#[test]
fn softhsm_module_is_installed() {
    assert!(
        Path::new(SOFTHSM_MODULE).exists(),
        "{SOFTHSM_MODULE} is missing; scripts/test installs the softhsm2 package"
    );
}

#[test]
fn slow_hsm_answers_within_time_budget() {
    let (setup, credential) = HsmSetup::new();
    setup.set_config("sessions = 4", "sessions = 1");
    setup.set_config("session_wait_ms = 100", "session_wait_ms = 5000");
    let path = setup.data.path().join("keyhold.toml");
    let text = std::fs::read_to_string(&path).expect("read keyhold.toml");
    std::fs::write(
        &path,
        text.replace("time_budget_ms = 200", "time_budget_ms = 1"),
    )
    .expect("write keyhold.toml");
    let server = setup.serve();

    // Requests queue for the single session much longer than the budget allows.
    let path = credential.path("/keys/hsm-key/encrypt");
    let body = encrypt_request(&vec![7u8; 32 * 1024], Some(&vec![1u8; 8192]));
    let started = Instant::now();
    let responses: Vec<HttpResponse> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..12)
            .map(|_| scope.spawn(|| server.curl_burst(&credential, &path, &body, 20)))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("curl worker"))
            .collect()
    });
    let over_budget: Vec<&HttpResponse> = responses
        .iter()
        .filter(|response| response.status == 503)
        .collect();
    eprintln!(
        "{} of {} requests exceeded the 1 ms budget; all answered in {:?}",
        over_budget.len(),
        responses.len(),
        started.elapsed()
    );
    assert!(
        !over_budget.is_empty(),
        "no request exceeded the time budget"
    );
    assert!(
        over_budget
            .iter()
            .all(|response| response.error_name().as_deref() == Some("DependencyTimeoutException")),
        "over-budget requests get DependencyTimeoutException"
    );
    assert!(
        over_budget
            .iter()
            .any(|response| response.body.contains("time budget")),
        "the message names the time budget"
    );
    assert!(
        responses
            .iter()
            .all(|response| response.status == 200 || response.status == 503),
        "unexpected statuses"
    );
}
