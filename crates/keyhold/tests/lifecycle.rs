//! Key lifecycle on a running server: rotation behind a fixed key id, version states, the
//! domain kill switch, scheduled deletion with tombstones, automatic rotation and policies.

mod common;

use std::time::Duration;

use common::{
    Credential, DataDir, HttpResponse, Server, decrypt_with_key as decrypt, encrypt_request,
    encrypt_with_key as encrypt, encrypted_with_key as encrypted, health_request,
    key_metadata_request, metadata_version, unb64, wait_for,
};
use serde_json::Value;

/// How long a CLI change may take to reach the running server.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(1);

/// A data directory with domain `acme`, a credential and key `k1`, whose server runs the
/// scheduler every second.
fn setup() -> (DataDir, Credential) {
    let data = DataDir::init();
    let config = data.path().join("keyhold.toml");
    let text = std::fs::read_to_string(&config).expect("read keyhold.toml");
    assert!(
        text.contains("scheduler_interval_secs = 60"),
        "template changed"
    );
    std::fs::write(
        &config,
        text.replace(
            "scheduler_interval_secs = 60",
            "scheduler_interval_secs = 1",
        ),
    )
    .expect("write keyhold.toml");
    data.create_domain("acme", &[]);
    let credential = data.create_credential("acme");
    data.create_key("acme", "k1", &[]);
    (data, credential)
}

fn assert_error(response: &HttpResponse, status: u16, name: &str, case: &str) {
    assert_eq!(response.status, status, "{case}: {}", response.body);
    assert_eq!(response.error_name().as_deref(), Some(name), "{case}");
}

/// Waits until `probe` holds, and returns how long that took.
fn delay_until(limit: Duration, probe: impl FnMut() -> bool) -> Duration {
    let mut probe = probe;
    let waited = wait_for(limit + Duration::from_secs(4), || probe().then_some(()));
    let (_, delay) = waited.expect("the change never reached the server");
    delay
}

#[test]
fn rotation_keeps_old_ciphertexts_decrypting() {
    let (data, credential) = setup();
    let server = Server::start(&data);
    let before = encrypted(&server, &credential, "k1");
    assert_eq!(metadata_version(&before), 1);

    let rotated = data.run_ok(&["key", "rotate", "acme", "k1"]);
    assert!(rotated.contains("version 2 is now primary"), "{rotated}");
    let delay = delay_until(PROPAGATION_LIMIT, || {
        metadata_version(&encrypted(&server, &credential, "k1")) == 2
    });
    eprintln!("rotation reached the server after {delay:?}");
    assert!(delay <= PROPAGATION_LIMIT, "rotation took {delay:?}");

    let after = encrypted(&server, &credential, "k1");
    for (name, ciphertext) in [("version 1", &before), ("version 2", &after)] {
        let response = decrypt(&server, &credential, "k1", ciphertext);
        assert_eq!(response.status, 200, "{name}: {}", response.body);
        assert_eq!(
            unb64(&response.field("plaintext"), "plaintext"),
            b"data key"
        );
    }

    let versions: Value = serde_json::from_str(
        &data.run_ok(&["key", "version", "list", "acme", "k1", "--output", "json"]),
    )
    .expect("version list JSON");
    assert_eq!(versions.as_array().map(Vec::len), Some(2), "{versions}");
    assert_eq!(versions[1]["primary"], true);
    assert_eq!(versions[0]["state"], "ENABLED");
}

#[test]
fn disabled_and_destroyed_versions_stop_decrypting() {
    let (data, credential) = setup();
    let server = Server::start(&data);
    let old = encrypted(&server, &credential, "k1");
    data.run_ok(&["key", "rotate", "acme", "k1"]);

    let primary = data.run(&["key", "version", "disable", "acme", "k1", "2"]);
    assert!(
        !primary.status.success(),
        "disabling the primary version must fail"
    );
    assert!(
        primary.stderr.contains("rotate the key before changing it"),
        "{}",
        primary.stderr
    );

    data.run_ok(&["key", "version", "disable", "acme", "k1", "1"]);
    let delay = delay_until(PROPAGATION_LIMIT, || {
        decrypt(&server, &credential, "k1", &old).status == 400
    });
    assert!(delay <= PROPAGATION_LIMIT, "version disable took {delay:?}");
    let disabled = decrypt(&server, &credential, "k1", &old);
    assert_error(&disabled, 400, "InvalidStateException", "disabled version");
    assert!(disabled.body.contains("version 1"), "{}", disabled.body);
    assert_eq!(
        encrypt(&server, &credential, "k1").status,
        200,
        "primary still encrypts"
    );

    data.run_ok(&["key", "version", "enable", "acme", "k1", "1"]);
    delay_until(PROPAGATION_LIMIT, || {
        decrypt(&server, &credential, "k1", &old).status == 200
    });

    let unconfirmed = data.run(&["key", "version", "destroy", "acme", "k1", "1"]);
    assert!(
        !unconfirmed.status.success(),
        "destroy without --yes must fail"
    );
    assert!(
        unconfirmed.stderr.contains("--yes"),
        "{}",
        unconfirmed.stderr
    );
    data.run_ok(&["key", "version", "destroy", "acme", "k1", "1", "--yes"]);
    delay_until(PROPAGATION_LIMIT, || {
        decrypt(&server, &credential, "k1", &old).status == 400
    });
    let destroyed = decrypt(&server, &credential, "k1", &old);
    assert_error(
        &destroyed,
        400,
        "InvalidStateException",
        "destroyed version",
    );
    assert!(destroyed.body.contains("destroyed"), "{}", destroyed.body);
    let again = data.run(&["key", "version", "enable", "acme", "k1", "1"]);
    assert!(
        !again.status.success(),
        "a destroyed version cannot be enabled"
    );
}

#[test]
fn domain_kill_switch_within_one_second() {
    let (data, credential) = setup();
    let server = Server::start(&data);
    let ciphertext = encrypted(&server, &credential, "k1");

    data.run_ok(&["domain", "disable", "acme"]);
    let delay = delay_until(PROPAGATION_LIMIT, || {
        encrypt(&server, &credential, "k1").status == 400
    });
    eprintln!("domain kill switch reached the server after {delay:?}");
    assert!(delay <= PROPAGATION_LIMIT, "kill switch took {delay:?}");
    assert_error(
        &encrypt(&server, &credential, "k1"),
        400,
        "InvalidStateException",
        "encrypt in a disabled domain",
    );
    assert_error(
        &decrypt(&server, &credential, "k1", &ciphertext),
        400,
        "InvalidStateException",
        "decrypt in a disabled domain",
    );
    let metadata = server.post(
        &credential,
        &credential.path("/keys/k1/metadata"),
        &key_metadata_request(),
    );
    assert_error(
        &metadata,
        400,
        "InvalidStateException",
        "metadata in a disabled domain",
    );

    data.run_ok(&["domain", "enable", "acme"]);
    let delay = delay_until(PROPAGATION_LIMIT, || {
        decrypt(&server, &credential, "k1", &ciphertext).status == 200
    });
    eprintln!("domain enable reached the server after {delay:?}");
    assert!(delay <= PROPAGATION_LIMIT, "enable took {delay:?}");
}

#[test]
fn scheduled_deletion_leaves_a_tombstone() {
    let (data, credential) = setup();
    let server = Server::start(&data);
    let ciphertext = encrypted(&server, &credential, "k1");

    let too_short = data.run(&["key", "schedule-deletion", "acme", "k1", "--days", "3"]);
    assert!(!too_short.status.success(), "3 days must be rejected");
    assert!(too_short.stderr.contains("7 to 30"), "{}", too_short.stderr);

    data.run_ok(&["key", "schedule-deletion", "acme", "k1", "--days", "7"]);
    delay_until(PROPAGATION_LIMIT, || {
        encrypt(&server, &credential, "k1").status == 400
    });
    assert_error(
        &decrypt(&server, &credential, "k1", &ciphertext),
        400,
        "InvalidStateException",
        "decrypt while pending deletion",
    );
    let shown: Value =
        serde_json::from_str(&data.run_ok(&["key", "show", "acme", "k1", "--output", "json"]))
            .expect("key show JSON");
    assert_eq!(shown["status"], "PENDING_DELETION");

    let canceled = data.run_ok(&["key", "cancel-deletion", "acme", "k1"]);
    assert!(canceled.contains("ENABLED"), "{canceled}");
    delay_until(PROPAGATION_LIMIT, || {
        decrypt(&server, &credential, "k1", &ciphertext).status == 200
    });

    data.run_ok(&["key", "schedule-deletion", "acme", "k1", "--days", "7"]);
    // Move the deletion date into the past, as if the waiting period had run out.
    data.run_sql("UPDATE keys SET deletion_at = 0 WHERE key_id = 'k1'");
    let delay = delay_until(Duration::from_secs(5), || {
        encrypt(&server, &credential, "k1").status == 404
    });
    eprintln!("scheduled deletion ran {delay:?} after its date passed");
    assert_error(
        &decrypt(&server, &credential, "k1", &ciphertext),
        404,
        "KeyNotFoundException",
        "decrypt with a destroyed key",
    );
    let metadata = server.post(
        &credential,
        &credential.path("/keys/k1/metadata"),
        &key_metadata_request(),
    );
    assert_error(
        &metadata,
        404,
        "KeyNotFoundException",
        "metadata of a destroyed key",
    );

    let shown: Value =
        serde_json::from_str(&data.run_ok(&["key", "show", "acme", "k1", "--output", "json"]))
            .expect("key show JSON");
    assert_eq!(shown["status"], "DESTROYED");
    let reused = data.run(&["key", "create", "acme", "--key-id", "k1"]);
    assert!(
        !reused.status.success(),
        "a destroyed key id must never be reused"
    );
    let cancel = data.run(&["key", "cancel-deletion", "acme", "k1"]);
    assert!(!cancel.status.success(), "a destroyed key cannot come back");

    let remaining = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             print(c.execute(\"SELECT COUNT(*) FROM key_versions WHERE key_id = 'k1' \
             AND wrapped_material IS NOT NULL\").fetchone()[0])",
        )
        .arg(data.path().join("keyhold.db"))
        .output()
        .expect("run python3");
    assert_eq!(
        String::from_utf8_lossy(&remaining.stdout).trim(),
        "0",
        "wrapped material must be erased from the database"
    );
}

#[test]
fn automatic_rotation_runs_on_schedule() {
    let (data, credential) = setup();
    data.create_key("acme", "auto", &["--rotation-period", "1d"]);
    let bad = data.run(&["key", "set-rotation", "acme", "auto", "--period", "5m"]);
    assert!(
        !bad.status.success(),
        "a period in minutes must be rejected"
    );
    let server = Server::start(&data);
    assert_eq!(
        metadata_version(&encrypted(&server, &credential, "auto")),
        1
    );

    // Age the primary version past the rotation period.
    data.run_sql("UPDATE key_versions SET created_at = created_at - 90000 WHERE key_id = 'auto'");
    let delay = delay_until(Duration::from_secs(5), || {
        metadata_version(&encrypted(&server, &credential, "auto")) == 2
    });
    eprintln!("automatic rotation took effect after {delay:?}");
    std::thread::sleep(Duration::from_millis(2500));
    let versions: Value = serde_json::from_str(
        &data.run_ok(&["key", "version", "list", "acme", "auto", "--output", "json"]),
    )
    .expect("version list JSON");
    assert_eq!(
        versions.as_array().map(Vec::len),
        Some(2),
        "exactly one rotation per period: {versions}"
    );
    assert_eq!(
        metadata_version(&encrypted(&server, &credential, "k1")),
        1,
        "k1 has no period"
    );
}

#[test]
fn policies_deny_with_the_rule_name() {
    let (data, credential) = setup();
    data.create_key("acme", "k2", &[]);
    let policy_file = data.scratch().join("policy.json");
    std::fs::write(
        &policy_file,
        r#"{"rules":[
            {"name":"only-our-account","effect":"allow","accounts":["111122223333"]},
            {"name":"no-contractors","effect":"deny","principals":["arn:aws:iam::*:user/contractor-*"]}
        ]}"#,
    )
    .expect("write policy");
    let policy_path = policy_file.to_string_lossy().into_owned();
    data.run_ok(&["policy", "set", "acme", "--file", &policy_path]);
    let key_policy = data.scratch().join("key-policy.json");
    std::fs::write(
        &key_policy,
        r#"{"rules":[{"name":"k2-no-decrypt","effect":"deny","operations":["Decrypt"]}]}"#,
    )
    .expect("write key policy");
    let key_policy_path = key_policy.to_string_lossy().into_owned();
    data.run_ok(&[
        "policy",
        "set",
        "acme",
        "--key",
        "k2",
        "--file",
        &key_policy_path,
    ]);

    let broken = data.scratch().join("broken.json");
    std::fs::write(&broken, r#"{"rules":[{"name":"x","effect":"perhaps"}]}"#).expect("write");
    let rejected = data.run(&["policy", "set", "acme", "--file", &broken.to_string_lossy()]);
    assert!(
        !rejected.status.success(),
        "an invalid policy must be rejected"
    );

    let server = Server::start(&data);
    let path = credential.path("/keys/k1/encrypt");
    let allowed = server.post(&credential, &path, &encrypt_request(b"x", None));
    assert_eq!(allowed.status, 200, "our account: {}", allowed.body);

    let mut contractor = encrypt_request(b"x", None);
    contractor["requestMetadata"]["awsPrincipalArn"] =
        Value::from("arn:aws:iam::111122223333:user/contractor-bob");
    let denied = server.post(&credential, &path, &contractor);
    assert_error(&denied, 403, "AccessDeniedException", "contractor");
    assert!(denied.body.contains("no-contractors"), "{}", denied.body);
    assert!(
        server.log().contains("no-contractors"),
        "the log must name the rule"
    );

    let mut other_account = encrypt_request(b"x", None);
    other_account["requestMetadata"]["kmsKeyArn"] =
        Value::from("arn:aws:kms:us-east-1:999999999999:key/other");
    let denied = server.post(&credential, &path, &other_account);
    assert_error(&denied, 403, "AccessDeniedException", "other account");

    let k2 = encrypted(&server, &credential, "k2");
    let denied = decrypt(&server, &credential, "k2", &k2);
    assert_error(&denied, 403, "AccessDeniedException", "key policy");
    assert!(denied.body.contains("k2-no-decrypt"), "{}", denied.body);

    let health = server.post(&credential, &credential.path("/health"), &health_request());
    assert_eq!(
        health.status, 200,
        "health is never subject to policy: {}",
        health.body
    );

    data.run_ok(&["policy", "clear", "acme"]);
    delay_until(PROPAGATION_LIMIT, || {
        server.post(&credential, &path, &contractor).status == 200
    });
}

#[test]
fn binding_learned_on_first_use_persists() {
    let (data, credential) = setup();
    data.create_key("acme", "learner", &["--bind-on-first-use"]);
    let first_arn = "arn:aws:kms:us-east-1:111122223333:key/first";
    let other_arn = "arn:aws:kms:us-east-1:111122223333:key/other";
    let path = credential.path("/keys/learner/encrypt");
    let request = |arn: &str| common::encrypt_request_for(b"x", None, arn);

    let server = Server::start(&data);
    let first = server.post(&credential, &path, &request(first_arn));
    assert_eq!(
        first.status, 200,
        "the first ARN binds the key: {}",
        first.body
    );
    let other = server.post(&credential, &path, &request(other_arn));
    assert_error(
        &other,
        403,
        "AccessDeniedException",
        "another ARN after the binding",
    );
    assert_eq!(
        server.post(&credential, &path, &request(first_arn)).status,
        200
    );

    let recorded = wait_for(Duration::from_secs(5), || {
        let shown: Value = serde_json::from_str(
            &data.run_ok(&["key", "show", "acme", "learner", "--output", "json"]),
        )
        .expect("key show JSON");
        (shown["boundKmsKeyArn"] == first_arn).then_some(())
    });
    assert!(
        recorded.is_some(),
        "the learned binding must reach the store"
    );
    drop(server);

    let restarted = Server::start(&data);
    let other = restarted.post(&credential, &path, &request(other_arn));
    assert_error(
        &other,
        403,
        "AccessDeniedException",
        "another ARN after a restart",
    );
    assert_eq!(
        restarted
            .post(&credential, &path, &request(first_arn))
            .status,
        200
    );
}
