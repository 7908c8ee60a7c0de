//! XKS error responses from a running server. A table of bad requests produces every error name
//! that Keyhold returns for them, each with its exact HTTP status. Further tests cover 405 for
//! GET on the API paths and the minimum input sizes the XKS API requires.
//!
//! AccessDeniedException and ThrottlingException need a bound key and a domain quota; they are
//! tested in `xks_limits.rs`. DependencyTimeoutException needs an HSM whose session pool is
//! busy; it is tested in `hsm.rs`.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};

use common::{
    Credential, DataDir, HttpResponse, Server, assert_error_message_format, assert_single_line,
    b64, decrypt_request, encrypt_request, health_request, key_metadata_request, shared, unb64,
    unix_now,
};
use serde_json::{Value, json};

const DOMAIN: &str = "errors";
const KEY_ID: &str = "main";
const DISABLED_KEY_ID: &str = "disabled";
const ENCRYPT_ONLY_KEY_ID: &str = "encrypt-only";
/// Two keys whose stored wrapped material is swapped, so neither unwraps.
const CORRUPT_KEY_IDS: [&str; 2] = ["corrupt-a", "corrupt-b"];

const PLAINTEXT: &[u8] = b"error table plaintext";
const AAD: &[u8] = b"tenant=errors";

/// Maximum plaintext length Keyhold accepts, in bytes. One more byte gets
/// UnsupportedOperationException.
const MAX_PLAINTEXT_LEN: usize = 65_536;

/// Clock skew beyond the 5 minutes SigV4 allows, in seconds.
const STALE_SECS: i64 = 6 * 60;

/// Clock skew inside the 5 minutes SigV4 allows, in seconds.
const TOLERATED_SECS: i64 = 4 * 60;

/// The error names and statuses the table must produce, from the XKS API's error table.
const EXPECTED_ERRORS: [(&str, u16); 9] = [
    ("ValidationException", 400),
    ("InvalidStateException", 400),
    ("InvalidCiphertextException", 400),
    ("InvalidKeyUsageException", 400),
    ("AuthenticationFailedException", 401),
    ("KeyNotFoundException", 404),
    ("InvalidUriPathException", 404),
    ("UnsupportedOperationException", 501),
    ("InternalException", 500),
];

struct Fixture {
    // Declared first so the server stops before the data directory is deleted.
    server: Server,
    credential: Credential,
    revoked: Credential,
    _data: DataDir,
}

static FIXTURE: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());

fn fixture() -> Arc<Fixture> {
    shared(&FIXTURE, || {
        let data = DataDir::init();
        data.create_domain(DOMAIN, &[]);
        let credential = data.create_credential(DOMAIN);
        let revoked = data.create_credential(DOMAIN);
        data.run_ok(&["credential", "revoke", DOMAIN, &revoked.access_key_id]);

        data.create_key(DOMAIN, KEY_ID, &[]);
        data.create_key(DOMAIN, DISABLED_KEY_ID, &[]);
        data.run_ok(&["key", "disable", DOMAIN, DISABLED_KEY_ID]);
        data.create_key(DOMAIN, ENCRYPT_ONLY_KEY_ID, &["--usage", "encrypt"]);
        for key_id in CORRUPT_KEY_IDS {
            data.create_key(DOMAIN, key_id, &[]);
        }
        swap_wrapped_material(&data);

        let server = Server::start(&data);
        Fixture {
            server,
            credential,
            revoked,
            _data: data,
        }
    })
}

/// Swaps the stored wrapped material of the two corrupt keys' version 1 rows. Each value is
/// still a well-formed wrapped key, but bound to the other key, so unwrapping fails.
fn swap_wrapped_material(data: &DataDir) {
    let [first, second] = CORRUPT_KEY_IDS;
    data.run_sql(&format!(
        "CREATE TEMP TABLE saved AS
             SELECT key_id, wrapped_material FROM key_versions
             WHERE domain_id = '{DOMAIN}' AND key_id IN ('{first}', '{second}') AND version = 1;
         UPDATE key_versions
             SET wrapped_material = (
                 SELECT wrapped_material FROM saved
                 WHERE saved.key_id = CASE key_versions.key_id
                     WHEN '{first}' THEN '{second}' ELSE '{first}' END)
             WHERE domain_id = '{DOMAIN}' AND key_id IN ('{first}', '{second}') AND version = 1;"
    ));
}

impl Fixture {
    fn post(&self, api: &str, body: &Value) -> HttpResponse {
        self.server
            .post(&self.credential, &self.credential.path(api), body)
    }

    fn encrypt_ok(&self, key_id: &str) -> Value {
        let response = self.post(
            &format!("/keys/{key_id}/encrypt"),
            &encrypt_request(PLAINTEXT, Some(AAD)),
        );
        assert_eq!(
            response.status, 200,
            "setup encrypt with {key_id}: {}",
            response.body
        );
        response.json()
    }
}

/// One bad request and the error it must produce.
struct Case {
    name: String,
    error_name: &'static str,
    status: u16,
    response: HttpResponse,
}

fn case(
    name: impl Into<String>,
    error_name: &'static str,
    status: u16,
    response: HttpResponse,
) -> Case {
    Case {
        name: name.into(),
        error_name,
        status,
        response,
    }
}

/// Returns a copy of a base64 field with the first bit of its last byte flipped.
fn flip_last_bit(body: &Value, field: &str) -> String {
    let mut bytes = unb64(
        body[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} missing: {body}")),
        field,
    );
    let last = bytes
        .last_mut()
        .unwrap_or_else(|| panic!("{field} is empty"));
    *last ^= 0x01;
    b64(&bytes)
}

fn validation_cases(fixture: &Fixture, encrypted: &Value) -> Vec<Case> {
    let encrypt_api = format!("/keys/{KEY_ID}/encrypt");
    let mut bad_base64 = encrypt_request(PLAINTEXT, None);
    bad_base64["plaintext"] = json!("not base64!");
    let mut missing_plaintext = encrypt_request(PLAINTEXT, None);
    missing_plaintext
        .as_object_mut()
        .expect("object")
        .remove("plaintext");
    let mut wrong_algorithm = encrypt_request(PLAINTEXT, None);
    wrong_algorithm["encryptionAlgorithm"] = json!("AES_CBC");
    let mut short_iv = decrypt_request(encrypted, Some(AAD));
    short_iv["initializationVector"] = json!(b64(&[0u8; 8]));
    let mut empty_metadata = health_request();
    empty_metadata["requestMetadata"] = json!({});
    // serde_json quotes the string in its message, so Keyhold must clean it to printable ASCII.
    let non_ascii_metadata = json!({"requestMetadata": "caf\u{e9} \u{2603}"});
    let not_json = fixture.server.post_bytes(
        &fixture.credential,
        &fixture.credential.path(&encrypt_api),
        b"not json",
    );

    vec![
        case(
            "plaintext that is not base64",
            "ValidationException",
            400,
            fixture.post(&encrypt_api, &bad_base64),
        ),
        case(
            "encrypt without plaintext",
            "ValidationException",
            400,
            fixture.post(&encrypt_api, &missing_plaintext),
        ),
        case(
            "encryptionAlgorithm AES_CBC",
            "ValidationException",
            400,
            fixture.post(&encrypt_api, &wrong_algorithm),
        ),
        case(
            "{} on health",
            "ValidationException",
            400,
            fixture.post("/health", &json!({})),
        ),
        case(
            "empty requestMetadata on health",
            "ValidationException",
            400,
            fixture.post("/health", &empty_metadata),
        ),
        case(
            "requestMetadata that is a non-ASCII string",
            "ValidationException",
            400,
            fixture.post("/health", &non_ascii_metadata),
        ),
        case(
            "8-byte initializationVector",
            "ValidationException",
            400,
            fixture.post(&format!("/keys/{KEY_ID}/decrypt"), &short_iv),
        ),
        case(
            "body that is not JSON",
            "ValidationException",
            400,
            not_json,
        ),
    ]
}

fn state_and_usage_cases(fixture: &Fixture, encrypted: &Value) -> Vec<Case> {
    let encrypt_only_ciphertext = fixture.encrypt_ok(ENCRYPT_ONLY_KEY_ID);
    vec![
        case(
            "encrypt with a disabled key",
            "InvalidStateException",
            400,
            fixture.post(
                &format!("/keys/{DISABLED_KEY_ID}/encrypt"),
                &encrypt_request(PLAINTEXT, Some(AAD)),
            ),
        ),
        case(
            "decrypt with a disabled key",
            "InvalidStateException",
            400,
            fixture.post(
                &format!("/keys/{DISABLED_KEY_ID}/decrypt"),
                &decrypt_request(encrypted, Some(AAD)),
            ),
        ),
        case(
            "decrypt with an encrypt-only key",
            "InvalidKeyUsageException",
            400,
            fixture.post(
                &format!("/keys/{ENCRYPT_ONLY_KEY_ID}/decrypt"),
                &decrypt_request(&encrypt_only_ciphertext, Some(AAD)),
            ),
        ),
    ]
}

fn ciphertext_cases(fixture: &Fixture, encrypted: &Value) -> Vec<Case> {
    let decrypt_api = format!("/keys/{KEY_ID}/decrypt");
    let mut changed_tag = decrypt_request(encrypted, Some(AAD));
    changed_tag["authenticationTag"] = json!(flip_last_bit(encrypted, "authenticationTag"));
    let mut changed_ciphertext = decrypt_request(encrypted, Some(AAD));
    changed_ciphertext["ciphertext"] = json!(flip_last_bit(encrypted, "ciphertext"));
    let changed_aad = decrypt_request(encrypted, Some(b"tenant=errorz"));
    let missing_aad = decrypt_request(encrypted, None);
    let mut changed_metadata = decrypt_request(encrypted, Some(AAD));
    changed_metadata["ciphertextMetadata"] = json!(flip_last_bit(encrypted, "ciphertextMetadata"));
    let mut missing_metadata = decrypt_request(encrypted, Some(AAD));
    missing_metadata
        .as_object_mut()
        .expect("object")
        .remove("ciphertextMetadata");
    let mut long_iv = decrypt_request(encrypted, Some(AAD));
    long_iv["initializationVector"] = json!(b64(&[0u8; 16]));

    vec![
        case(
            "changed authenticationTag",
            "InvalidCiphertextException",
            400,
            fixture.post(&decrypt_api, &changed_tag),
        ),
        case(
            "changed ciphertext",
            "InvalidCiphertextException",
            400,
            fixture.post(&decrypt_api, &changed_ciphertext),
        ),
        case(
            "changed additionalAuthenticatedData",
            "InvalidCiphertextException",
            400,
            fixture.post(&decrypt_api, &changed_aad),
        ),
        case(
            "missing additionalAuthenticatedData",
            "InvalidCiphertextException",
            400,
            fixture.post(&decrypt_api, &missing_aad),
        ),
        case(
            "changed ciphertextMetadata",
            "InvalidCiphertextException",
            400,
            fixture.post(&decrypt_api, &changed_metadata),
        ),
        case(
            "missing ciphertextMetadata",
            "InvalidCiphertextException",
            400,
            fixture.post(&decrypt_api, &missing_metadata),
        ),
        case(
            "16-byte initializationVector Keyhold never made",
            "InvalidCiphertextException",
            400,
            fixture.post(&decrypt_api, &long_iv),
        ),
    ]
}

fn authentication_cases(fixture: &Fixture) -> Vec<Case> {
    let path = fixture.credential.path("/health");
    let server = &fixture.server;
    let unsigned = server
        .curl(
            &[
                "-H".to_owned(),
                "Content-Type: application/json".to_owned(),
                "--data-binary".to_owned(),
                health_request().to_string(),
                server.url(&path),
            ],
            None,
        )
        .into_response();
    let other_service = server
        .curl(
            &[
                "--aws-sigv4".to_owned(),
                "aws:amz:us-east-1:kms".to_owned(),
                "--user".to_owned(),
                format!(
                    "{}:{}",
                    fixture.credential.access_key_id, fixture.credential.secret_access_key
                ),
                "-H".to_owned(),
                "Content-Type: application/json".to_owned(),
                "--data-binary".to_owned(),
                health_request().to_string(),
                server.url(&path),
            ],
            None,
        )
        .into_response();
    let signed_body = health_request().to_string();
    let changed_body = signed_body.replace("KmsHealthCheck", "KmsHealthCheckX");

    vec![
        case(
            "wrong secret access key",
            "AuthenticationFailedException",
            401,
            server.post(
                &fixture
                    .credential
                    .with_secret("d3JvbmcgeHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg="),
                &path,
                &health_request(),
            ),
        ),
        case(
            "unknown access key id",
            "AuthenticationFailedException",
            401,
            server.post(
                &fixture
                    .credential
                    .with_access_key_id("KHAAAAAAAAAAAAAAAAAAAAAA"),
                &path,
                &health_request(),
            ),
        ),
        case(
            "X-Amz-Date 6 minutes in the past",
            "AuthenticationFailedException",
            401,
            server.post_signed_at(
                &fixture.credential,
                &path,
                &health_request(),
                unix_now() - STALE_SECS,
            ),
        ),
        case(
            "X-Amz-Date 6 minutes in the future",
            "AuthenticationFailedException",
            401,
            server.post_signed_at(
                &fixture.credential,
                &path,
                &health_request(),
                unix_now() + STALE_SECS,
            ),
        ),
        case(
            "access key id of 600 characters",
            "AuthenticationFailedException",
            401,
            server.post(
                &fixture.credential.with_access_key_id(&"A".repeat(600)),
                &path,
                &health_request(),
            ),
        ),
        case(
            "credential scope for service kms",
            "AuthenticationFailedException",
            401,
            other_service,
        ),
        case(
            "body changed after signing",
            "AuthenticationFailedException",
            401,
            server.post_signed(
                &fixture.credential,
                &path,
                &signed_body,
                &changed_body,
                unix_now(),
            ),
        ),
        case(
            "revoked credential",
            "AuthenticationFailedException",
            401,
            server.post(&fixture.revoked, &path, &health_request()),
        ),
        case(
            "request without Authorization",
            "AuthenticationFailedException",
            401,
            unsigned,
        ),
    ]
}

fn path_cases(fixture: &Fixture) -> Vec<Case> {
    let server = &fixture.server;
    let credential = &fixture.credential;
    vec![
        case(
            "metadata of an unknown key",
            "KeyNotFoundException",
            404,
            fixture.post("/keys/no-such-key/metadata", &key_metadata_request()),
        ),
        case(
            "encrypt with an unknown key",
            "KeyNotFoundException",
            404,
            fixture.post(
                "/keys/no-such-key/encrypt",
                &encrypt_request(PLAINTEXT, Some(AAD)),
            ),
        ),
        case(
            "unknown URI path prefix",
            "InvalidUriPathException",
            404,
            server.post(
                credential,
                "/domains/nobody/kms/xks/v1/health",
                &health_request(),
            ),
        ),
        case(
            "unknown operation under a known prefix",
            "InvalidUriPathException",
            404,
            fixture.post(&format!("/keys/{KEY_ID}/sign"), &key_metadata_request()),
        ),
        case(
            "API version v2 under a known prefix",
            "InvalidUriPathException",
            404,
            server.post(
                credential,
                &format!("/domains/{DOMAIN}/kms/xks/v2/health"),
                &health_request(),
            ),
        ),
        case(
            "path without /kms/xks/",
            "InvalidUriPathException",
            404,
            server.post(
                credential,
                &format!("/domains/{DOMAIN}/health"),
                &health_request(),
            ),
        ),
    ]
}

fn size_and_internal_cases(fixture: &Fixture) -> Vec<Case> {
    let oversized = vec![0x5a_u8; MAX_PLAINTEXT_LEN + 1];
    let mut cases = vec![case(
        "plaintext of 65,537 bytes",
        "UnsupportedOperationException",
        501,
        fixture.post(
            &format!("/keys/{KEY_ID}/encrypt"),
            &encrypt_request(&oversized, None),
        ),
    )];
    for key_id in CORRUPT_KEY_IDS {
        cases.push(case(
            format!("encrypt with {key_id}, whose stored material was swapped"),
            "InternalException",
            500,
            fixture.post(
                &format!("/keys/{key_id}/encrypt"),
                &encrypt_request(PLAINTEXT, Some(AAD)),
            ),
        ));
    }
    cases
}

#[test]
fn bad_requests_return_exact_errors() {
    let fixture = fixture();
    let encrypted = fixture.encrypt_ok(KEY_ID);

    let mut cases = validation_cases(&fixture, &encrypted);
    cases.extend(state_and_usage_cases(&fixture, &encrypted));
    cases.extend(ciphertext_cases(&fixture, &encrypted));
    cases.extend(authentication_cases(&fixture));
    cases.extend(path_cases(&fixture));
    cases.extend(size_and_internal_cases(&fixture));

    let mut produced = BTreeSet::new();
    for case in &cases {
        let response = &case.response;
        assert_eq!(
            response.error_name().as_deref(),
            Some(case.error_name),
            "{}: errorName; status {} body {}",
            case.name,
            response.status,
            response.body
        );
        assert_eq!(
            response.status, case.status,
            "{}: HTTP status of {}",
            case.name, case.error_name
        );
        assert_single_line(response, &case.name);
        assert_error_message_format(response, &case.name);
        produced.insert(case.error_name);
    }

    for (name, status) in EXPECTED_ERRORS {
        assert!(
            produced.contains(name),
            "no case produced {name} ({status})"
        );
    }
}

#[test]
fn hand_signed_request_within_skew_succeeds() {
    // The stale-date cases use this signer, so it must produce valid signatures for those cases
    // to mean anything.
    let fixture = fixture();
    let path = fixture.credential.path("/health");
    for skew in [-TOLERATED_SECS, 0, TOLERATED_SECS] {
        let response = fixture.server.post_signed_at(
            &fixture.credential,
            &path,
            &health_request(),
            unix_now() + skew,
        );
        assert_eq!(
            response.status, 200,
            "X-Amz-Date {skew} s from now: {}",
            response.body
        );
    }
}

#[test]
fn get_on_api_paths_returns_405() {
    let fixture = fixture();
    for api in [
        "/health".to_owned(),
        format!("/keys/{KEY_ID}/metadata"),
        format!("/keys/{KEY_ID}/encrypt"),
        format!("/keys/{KEY_ID}/decrypt"),
    ] {
        let response = fixture.server.get(&fixture.credential.path(&api));
        assert_eq!(response.status, 405, "GET {api}: {}", response.body);
        // The XKS API defines no error name for 405, so no XKS error body may claim one.
        assert!(
            response.body.is_empty(),
            "GET {api} body: {}",
            response.body
        );
    }
}

#[test]
fn minimum_sizes_round_trip() {
    // The XKS API requires at least 4,300 bytes of plaintext and 8,192 bytes of AAD.
    let fixture = fixture();
    let plaintext: Vec<u8> = (0..4_300_u32).map(|i| (i % 251) as u8).collect();
    let aad: Vec<u8> = (0..8_192_u32).map(|i| (i % 241) as u8).collect();

    let encrypt = fixture.post(
        &format!("/keys/{KEY_ID}/encrypt"),
        &encrypt_request(&plaintext, Some(&aad)),
    );
    assert_eq!(encrypt.status, 200, "encrypt: {}", encrypt.body);

    let decrypt = fixture.post(
        &format!("/keys/{KEY_ID}/decrypt"),
        &decrypt_request(&encrypt.json(), Some(&aad)),
    );
    assert_eq!(decrypt.status, 200, "decrypt: {}", decrypt.body);
    assert_eq!(
        decrypt.field("plaintext"),
        b64(&plaintext),
        "decrypt must return the 4,300-byte plaintext"
    );
}
