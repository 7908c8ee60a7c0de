//! The audit log of a running server: one chained record per XKS request, verification that
//! finds each kind of tampering, and the fail-closed and fail-open modes.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    Credential, DataDir, HttpResponse, Server, decrypt_request, encrypt_request, health_request,
    wait_for,
};
use keyhold::audit::chain::{self, Finding};
use keyhold::audit::writer::ChainHead;
use serde_json::Value;

/// A plaintext easy to find in a file.
const PLAINTEXT: &[u8] = b"audit-canary-plaintext-7f3a";

fn setup(config: &[(&str, &str)]) -> (DataDir, Credential) {
    let data = DataDir::init();
    data.configure(config);
    data.create_domain("acme", &[]);
    let credential = data.create_credential("acme");
    data.create_key("acme", "k1", &[]);
    (data, credential)
}

fn audit_file(data: &DataDir) -> PathBuf {
    data.path().join("audit").join("audit.log")
}

fn encrypt(server: &Server, credential: &Credential) -> HttpResponse {
    server.post(
        credential,
        &credential.path("/keys/k1/encrypt"),
        &encrypt_request(PLAINTEXT, Some(b"aad")),
    )
}

/// Reads the XKS request records once the writer has written at least `count`; records of
/// administrative actions are left out.
fn records(data: &DataDir, count: usize) -> Vec<Value> {
    let read = || -> Vec<Value> {
        std::fs::read_to_string(audit_file(data))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("audit line is JSON"))
            .filter(|line: &Value| line["kind"] == "xks")
            .collect()
    };
    let waited = wait_for(Duration::from_secs(5), || {
        let lines = read();
        (lines.len() >= count).then_some(lines)
    });
    waited
        .unwrap_or_else(|| panic!("fewer than {count} audit records after 5 s: {:?}", read()))
        .0
}

/// The chain head the server recorded in the store, read with Python's sqlite3.
fn recorded_head(data: &DataDir) -> Option<ChainHead> {
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             r = c.execute('SELECT seq, hash FROM audit_heads').fetchone() \
                 if c.execute(\"SELECT 1 FROM sqlite_master WHERE name = 'audit_heads'\").fetchone() \
                 else None; \
             print(*(r or ()))",
        )
        .arg(data.path().join("keyhold.db"))
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&output.stdout);
    let (seq, hash) = text.trim().split_once(' ')?;
    Some(ChainHead {
        seq: seq.parse().expect("seq"),
        hash: hash.to_owned(),
    })
}

fn verify_copy(lines: &[&str], dir: &Path, head: Option<&ChainHead>) -> Result<u64, Finding> {
    let copy = dir.join("copy.log");
    std::fs::write(&copy, lines.join("\n") + "\n").expect("write copy");
    chain::verify(&[copy], head).map(|verified| verified.lines)
}

#[test]
fn every_request_is_recorded_without_secrets() {
    let (data, credential) = setup(&[]);
    data.create_key(
        "acme",
        "bound",
        &["--bind-kms-key-arn", "arn:aws:kms:us-east-1:1:key/x"],
    );
    let server = Server::start(&data);

    let encrypted = encrypt(&server, &credential);
    assert_eq!(encrypted.status, 200, "{}", encrypted.body);
    let decrypted = server.post(
        &credential,
        &credential.path("/keys/k1/decrypt"),
        &decrypt_request(&encrypted.json(), Some(b"aad")),
    );
    assert_eq!(decrypted.status, 200, "{}", decrypted.body);
    let bad_secret = credential.with_secret("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(encrypt(&server, &bad_secret).status, 401);
    let denied = server.post(
        &credential,
        &credential.path("/keys/bound/encrypt"),
        &encrypt_request(PLAINTEXT, None),
    );
    assert_eq!(denied.status, 403, "{}", denied.body);
    let health = server.post(&credential, &credential.path("/health"), &health_request());
    assert_eq!(health.status, 200);

    let lines = records(&data, 5);
    assert_eq!(lines.len(), 5, "one record per request");
    let encrypt_record = &lines[0];
    for field in [
        "seq",
        "prev",
        "time",
        "node",
        "domain",
        "keyId",
        "keyVersion",
        "operation",
        "kmsOperation",
        "kmsRequestId",
        "awsPrincipalArn",
        "kmsKeyArn",
        "clientAddress",
        "result",
        "latencyUs",
    ] {
        assert!(
            encrypt_record.get(field).is_some(),
            "encrypt record lacks {field}: {encrypt_record}"
        );
    }
    assert_eq!(encrypt_record["result"], "success");
    assert_eq!(encrypt_record["keyVersion"], 1);
    assert_eq!(lines[1]["operation"], "Decrypt");
    assert_eq!(lines[2]["result"], "AuthenticationFailedException");
    assert_eq!(lines[3]["result"], "AccessDeniedException");
    assert!(
        lines[3]["deniedBy"]
            .as_str()
            .is_some_and(|reason| reason.contains("bound")),
        "a denial names what denied: {}",
        lines[3]
    );
    assert_eq!(lines[4]["operation"], "GetHealthStatus");

    let bytes = std::fs::read(audit_file(&data)).expect("read audit file");
    let text = String::from_utf8_lossy(&bytes);
    for secret in [
        String::from_utf8_lossy(PLAINTEXT).into_owned(),
        common::b64(PLAINTEXT),
        credential.secret_access_key.clone(),
        encrypted.field("ciphertext"),
    ] {
        assert!(
            !text.contains(&secret),
            "the audit file contains {secret:?}"
        );
    }

    let files = vec![audit_file(&data)];
    let verified = chain::verify(&files, None).expect("the chain verifies");
    assert!(verified.lines >= 5, "{} lines", verified.lines);
}

#[test]
fn verification_finds_each_tampering() {
    let (data, credential) = setup(&[]);
    let server = Server::start(&data);
    for _ in 0..8 {
        assert_eq!(encrypt(&server, &credential).status, 200);
    }
    records(&data, 8);
    let line_count = || {
        std::fs::read_to_string(audit_file(&data))
            .unwrap_or_default()
            .lines()
            .count() as u64
    };
    let head = wait_for(Duration::from_secs(5), || {
        recorded_head(&data).filter(|head| head.seq >= 8 && head.seq == line_count())
    })
    .expect("the store records the chain head after a sync")
    .0;
    drop(server);

    let text = std::fs::read_to_string(audit_file(&data)).expect("read audit file");
    let lines: Vec<&str> = text.lines().collect();
    let scratch = data.scratch();
    assert_eq!(
        verify_copy(&lines, scratch, Some(&head)).expect("intact"),
        lines.len() as u64
    );

    let edited_line = lines[3].replace("\"success\"", "\"failure\"");
    let mut edited = lines.clone();
    edited[3] = &edited_line;
    let finding = verify_copy(&edited, scratch, Some(&head)).expect_err("edited");
    assert_eq!(
        finding.line, 5,
        "an edit breaks the link to the next line: {finding}"
    );

    let mut deleted = lines.clone();
    deleted.remove(3);
    let finding = verify_copy(&deleted, scratch, Some(&head)).expect_err("deleted");
    assert!(finding.problem.contains("missing"), "{finding}");
    assert_eq!(finding.line, 4);

    let mut inserted = lines.clone();
    inserted.insert(5, lines[2]);
    let finding = verify_copy(&inserted, scratch, Some(&head)).expect_err("inserted");
    assert_eq!(finding.line, 6, "{finding}");

    let mut reordered = lines.clone();
    reordered.swap(2, 6);
    let finding = verify_copy(&reordered, scratch, Some(&head)).expect_err("reordered");
    assert_eq!(finding.line, 3, "{finding}");

    let truncated = &lines[..6];
    assert!(
        verify_copy(truncated, scratch, None).is_ok(),
        "a cut tail still chains"
    );
    let finding = verify_copy(truncated, scratch, Some(&head)).expect_err("truncated");
    assert!(finding.problem.contains("truncated"), "{finding}");
}

#[test]
fn unwritable_log_fails_closed_and_recovers() {
    let (data, credential) = setup(&[]);
    let audit_dir = data.path().join("audit");
    std::fs::create_dir(&audit_dir).expect("create audit dir");
    // Every write to /dev/full fails with "no space left on device".
    symlink("/dev/full", audit_dir.join("audit.log")).expect("link the audit file to /dev/full");
    let server = Server::start(&data);

    let failing = wait_for(Duration::from_secs(5), || {
        let response = encrypt(&server, &credential);
        (response.status == 500).then_some(response)
    });
    let (response, _) = failing.expect("requests must fail while the audit log is full");
    assert_eq!(response.error_name().as_deref(), Some("InternalException"));
    assert!(
        server.log().contains("cannot write the audit log"),
        "{}",
        server.log()
    );
    let health = server.post(&credential, &credential.path("/health"), &health_request());
    assert_eq!(
        health.status, 200,
        "health is not a key use: {}",
        health.body
    );

    std::fs::remove_file(audit_dir.join("audit.log")).expect("remove the link");
    let recovered = wait_for(Duration::from_secs(5), || {
        (encrypt(&server, &credential).status == 200).then_some(())
    });
    let (_, delay) = recovered.expect("requests must succeed once the log is writable");
    eprintln!("audit writes resumed {delay:?} after the disk had room again");
    assert!(
        server.log().contains("audit log writable again"),
        "{}",
        server.log()
    );
    let lines = records(&data, 1);
    assert!(lines.iter().all(|line| line["seq"].as_u64().is_some()));
}

#[test]
fn unwritable_log_fails_open_when_configured() {
    let (data, credential) = setup(&[("fail_open = false", "fail_open = true")]);
    let audit_dir = data.path().join("audit");
    std::fs::create_dir(&audit_dir).expect("create audit dir");
    symlink("/dev/full", audit_dir.join("audit.log")).expect("link the audit file to /dev/full");
    let server = Server::start(&data);
    for request in 0..20 {
        let response = encrypt(&server, &credential);
        assert_eq!(
            response.status, 200,
            "request {request} in fail-open mode: {}",
            response.body
        );
    }
    assert!(
        server.log().contains("cannot write the audit log"),
        "{}",
        server.log()
    );
}

#[test]
fn admin_actions_are_recorded_with_their_principal() {
    let (data, credential) = setup(&[]);
    let server = Server::start(&data);
    data.run_ok(&["key", "rotate", "acme", "k1"]);
    let refused = data.run(&["key", "version", "destroy", "acme", "k1", "1"]);
    assert!(!refused.status.success(), "destroy without --yes must fail");
    assert_eq!(encrypt(&server, &credential).status, 200);

    let admin = wait_for(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(audit_file(&data)).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("audit line is JSON"))
            .filter(|line: &Value| line["kind"] == "admin")
            .collect();
        (lines.len() >= 7).then_some(lines)
    })
    .expect("administrative actions reach the audit log")
    .0;
    let actions: Vec<&str> = admin
        .iter()
        .filter_map(|line| line["operation"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "principal create",
            "token create",
            "domain create",
            "credential create",
            "key create",
            "key rotate",
            "key version destroy"
        ],
        "actions made by init, before and after the server started, in order"
    );
    let rotate = &admin[5];
    assert_eq!(rotate["target"], "acme/k1");
    assert_eq!(rotate["result"], "success");
    assert!(
        rotate["principal"]
            .as_str()
            .is_some_and(|principal| principal.starts_with("cli:")),
        "{rotate}"
    );
    assert!(
        admin[6]["result"]
            .as_str()
            .is_some_and(|result| result.starts_with("error: ")),
        "a refused action is recorded with its error: {}",
        admin[6]
    );
    let text = std::fs::read_to_string(audit_file(&data)).expect("read audit file");
    assert!(
        !text.contains(&credential.secret_access_key),
        "no secret in admin records"
    );
}

#[test]
fn cli_verify_checks_chain_and_recorded_head() {
    let (data, credential) = setup(&[]);
    let server = Server::start(&data);
    for _ in 0..6 {
        assert_eq!(encrypt(&server, &credential).status, 200);
    }
    records(&data, 6);
    let synced = wait_for(Duration::from_secs(5), || {
        recorded_head(&data).filter(|head| head.seq >= 6)
    });
    assert!(synced.is_some(), "the head is recorded after a sync");
    drop(server);

    let ok = data.run_ok(&["audit", "verify"]);
    assert!(ok.starts_with("OK: "), "{ok}");
    assert!(ok.contains("reaches the head the store recorded"), "{ok}");

    let text = std::fs::read_to_string(audit_file(&data)).expect("read audit file");
    let lines: Vec<&str> = text.lines().collect();
    let copy = data.scratch().join("edited.log");
    let edited = lines[2].replacen("\"success\"", "\"failure\"", 1);
    let mut tampered = lines.clone();
    tampered[2] = &edited;
    std::fs::write(&copy, tampered.join("\n") + "\n").expect("write copy");
    let copy_arg = copy.to_string_lossy().into_owned();
    let broken = data.run(&["audit", "verify", &copy_arg, "--no-head"]);
    assert!(!broken.status.success(), "an edited copy must fail");
    assert!(broken.stderr.contains("edited.log:4"), "{}", broken.stderr);

    // Removing the first records of the node's own log is a deletion too.
    let own_log = audit_file(&data);
    let original = std::fs::read_to_string(&own_log).expect("read audit file");
    std::fs::write(&own_log, lines[2..].join("\n") + "\n").expect("cut the first records");
    let cut_head = data.run(&["audit", "verify"]);
    assert!(
        !cut_head.status.success(),
        "deleted first records must fail"
    );
    assert!(
        cut_head.stderr.contains("records 1 to 2 were deleted"),
        "{}",
        cut_head.stderr
    );
    std::fs::write(&own_log, original).expect("restore the audit file");

    let truncated = data.scratch().join("truncated.log");
    std::fs::write(&truncated, lines[..lines.len() - 2].join("\n") + "\n").expect("write");
    let truncated_arg = truncated.to_string_lossy().into_owned();
    let cut = data.run(&["audit", "verify", &truncated_arg]);
    assert!(
        !cut.status.success(),
        "a truncated file must fail against the head"
    );
    assert!(cut.stderr.contains("truncated"), "{}", cut.stderr);
}
