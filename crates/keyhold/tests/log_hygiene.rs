//! The server log at trace level after encrypt and decrypt requests: it names each request's
//! kmsRequestId, as the XKS API recommends, and contains no plaintext, SigV4 secret or root key.

mod common;

use common::{Credential, DataDir, Server, b64, decrypt_request, encrypt_request, unb64};
use serde_json::json;

const DOMAIN: &str = "logs";
const KEY_ID: &str = "log-key";

/// Plaintext that is easy to find in a log.
const PLAINTEXT: &[u8] = b"KEYHOLD-LOG-CANARY-PLAINTEXT-7f3a9c1e";
const AAD: &[u8] = b"KEYHOLD-LOG-CANARY-AAD";

/// kmsRequestId values of the encrypt and the decrypt request.
const REQUEST_IDS: [&str; 2] = ["log-canary-encrypt-0001", "log-canary-decrypt-0002"];

/// Message of the line Keyhold logs at debug level for every successful XKS request.
const SUCCESS_MESSAGE: &str = "XKS request succeeded";

/// The complete log of a server that served one encrypt and one decrypt, with the secrets that
/// must not appear in it.
struct TraceRun {
    log: Vec<u8>,
    credential: Credential,
    root_key: Vec<u8>,
}

/// Starts a server with `RUST_LOG=trace`, encrypts and decrypts `PLAINTEXT`, stops the server
/// and returns its log.
fn encrypt_and_decrypt_with_trace_log() -> TraceRun {
    let data = DataDir::init();
    data.create_domain(DOMAIN, &[]);
    let credential = data.create_credential(DOMAIN);
    data.create_key(DOMAIN, KEY_ID, &[]);
    let root_key = std::fs::read(data.path().join("root.key")).expect("read root.key");
    let server = Server::start_with_env(&data, &[("RUST_LOG", "trace")]);

    let mut encrypt_body = encrypt_request(PLAINTEXT, Some(AAD));
    encrypt_body["requestMetadata"]["kmsRequestId"] = json!(REQUEST_IDS[0]);
    let path = credential.path(&format!("/keys/{KEY_ID}/encrypt"));
    let encrypted = server.post(&credential, &path, &encrypt_body);
    assert_eq!(encrypted.status, 200, "encrypt: {}", encrypted.body);

    let mut decrypt_body = decrypt_request(&encrypted.json(), Some(AAD));
    decrypt_body["requestMetadata"]["kmsRequestId"] = json!(REQUEST_IDS[1]);
    let path = credential.path(&format!("/keys/{KEY_ID}/decrypt"));
    let decrypted = server.post(&credential, &path, &decrypt_body);
    assert_eq!(decrypted.status, 200, "decrypt: {}", decrypted.body);
    assert_eq!(
        unb64(&decrypted.field("plaintext"), "plaintext"),
        PLAINTEXT,
        "decrypt must return the canary plaintext"
    );

    // Stop the server first, so the log also covers lines written after the responses.
    let log_path = server.log_path().to_owned();
    drop(server);
    let log = std::fs::read(&log_path).expect("read server log");
    TraceRun {
        log,
        credential,
        root_key,
    }
}

/// Returns whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Returns the first 2,000 characters of a log, for failure messages.
fn log_start(log: &[u8]) -> String {
    String::from_utf8_lossy(log).chars().take(2000).collect()
}

#[test]
fn trace_log_omits_plaintext_and_secrets() {
    let run = encrypt_and_decrypt_with_trace_log();
    let log = &run.log;

    // The log must cover both requests, or the checks below would pass on an empty log.
    let successes = String::from_utf8_lossy(log)
        .matches(SUCCESS_MESSAGE)
        .count();
    assert!(
        successes >= 2,
        "the trace log must have a {SUCCESS_MESSAGE:?} line for each request, found {successes}; log starts with:\n{}",
        log_start(log)
    );

    let secret = run.credential.secret_access_key.as_bytes();
    let forbidden: [(&str, Vec<u8>); 7] = [
        ("plaintext", PLAINTEXT.to_vec()),
        ("base64 plaintext", b64(PLAINTEXT).into_bytes()),
        ("secret access key", secret.to_vec()),
        ("root key bytes", run.root_key.clone()),
        ("hex root key", hex::encode(&run.root_key).into_bytes()),
        (
            "upper-case hex root key",
            hex::encode_upper(&run.root_key).into_bytes(),
        ),
        ("base64 root key", b64(&run.root_key).into_bytes()),
    ];
    for (name, needle) in forbidden {
        assert!(
            !contains(log, &needle),
            "the server log contains the {name}"
        );
    }
}

#[test]
fn request_log_names_kms_request_id() {
    let run = encrypt_and_decrypt_with_trace_log();
    for request_id in REQUEST_IDS {
        assert!(
            contains(&run.log, request_id.as_bytes()),
            "the log must name kmsRequestId {request_id}; log starts with:\n{}",
            log_start(&run.log)
        );
    }
}

#[test]
fn json_log_lines_carry_request_fields() {
    let data = DataDir::init();
    let config = data.path().join("keyhold.toml");
    let text = std::fs::read_to_string(&config).expect("read keyhold.toml");
    assert!(text.contains("format = \"text\""), "template changed");
    std::fs::write(
        &config,
        text.replace("format = \"text\"", "format = \"json\""),
    )
    .expect("write");
    data.create_domain(DOMAIN, &[]);
    let credential = data.create_credential(DOMAIN);
    data.create_key(DOMAIN, KEY_ID, &[]);
    let server = Server::start_with_env(&data, &[("RUST_LOG", "debug")]);
    let mut body = encrypt_request(PLAINTEXT, None);
    body["requestMetadata"]["kmsRequestId"] = json!("json-log-request-0003");
    let path = credential.path(&format!("/keys/{KEY_ID}/encrypt"));
    assert_eq!(server.post(&credential, &path, &body).status, 200);
    let log = server.log();
    drop(server);

    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
        })
        .collect();
    let success = lines
        .iter()
        .find(|line| line["fields"]["message"] == SUCCESS_MESSAGE)
        .expect("the request outcome is logged");
    assert_eq!(
        success["span"]["kms_request_id"], "json-log-request-0003",
        "{success}"
    );
    assert_eq!(success["span"]["operation"], "Encrypt", "{success}");
}
