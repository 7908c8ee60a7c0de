//! Per-domain request quotas (`keyhold domain create ID --quota RPS`), which return 429
//! ThrottlingException when exceeded, and keys bound to one KMS key ARN (`keyhold key create
//! DOMAIN --bind-kms-key-arn ARN`), which return 403 AccessDeniedException for any other ARN.

mod common;

use std::sync::{Arc, Mutex, Weak};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{
    Credential, DataDir, HttpResponse, Server, assert_error_message_format, b64,
    decrypt_request_for, encrypt_request, encrypt_request_for, key_metadata_request, shared,
};
use serde_json::Value;

/// Quota of every throttled domain, in requests per second.
const QUOTA: u32 = 2;
const QUOTA_ARG: &str = "2";

/// Number of requests in one burst, far more than `QUOTA` allows in the fraction of a second
/// they take.
const BURST_LEN: usize = 20;

/// Key created in every quota domain.
const KEY_ID: &str = "k";

const THROTTLED_DOMAIN: &str = "throttled";
const REFILL_DOMAIN: &str = "refill";
const QUOTA_A_DOMAIN: &str = "quota-a";
const QUOTA_B_DOMAIN: &str = "quota-b";
const UNLIMITED_DOMAIN: &str = "unlimited";

const BOUND_DOMAIN: &str = "bound";
const BOUND_KEY_ID: &str = "bound-key";
const UNBOUND_KEY_ID: &str = "unbound-key";

/// The KMS key the bound key belongs to.
const BOUND_ARN: &str =
    "arn:aws:kms:us-east-1:111122223333:key/aaaaaaaa-1111-2222-3333-444444444444";
/// An unrelated KMS key.
const OTHER_ARN: &str =
    "arn:aws:kms:us-east-1:444455556666:key/bbbbbbbb-5555-6666-7777-888888888888";
/// The bound ARN with one more character, which a prefix match would accept.
const EXTENDED_ARN: &str =
    "arn:aws:kms:us-east-1:111122223333:key/aaaaaaaa-1111-2222-3333-4444444444445";

const PLAINTEXT: &[u8] = b"limits plaintext";

struct Fixture {
    // Declared first so the server stops before the data directory is deleted.
    server: Server,
    throttled: Credential,
    refill: Credential,
    quota_a: Credential,
    quota_b: Credential,
    unlimited: Credential,
    bound: Credential,
    data: DataDir,
}

static FIXTURE: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());

fn fixture() -> Arc<Fixture> {
    shared(&FIXTURE, || {
        let data = DataDir::init();
        let domain = |id: &str, extra_args: &[&str]| {
            data.create_domain(id, extra_args);
            data.create_key(id, KEY_ID, &[]);
            data.create_credential(id)
        };
        let throttled = domain(THROTTLED_DOMAIN, &["--quota", QUOTA_ARG]);
        let refill = domain(REFILL_DOMAIN, &["--quota", QUOTA_ARG]);
        let quota_a = domain(QUOTA_A_DOMAIN, &["--quota", QUOTA_ARG]);
        let quota_b = domain(QUOTA_B_DOMAIN, &["--quota", QUOTA_ARG]);
        let unlimited = domain(UNLIMITED_DOMAIN, &[]);

        data.create_domain(BOUND_DOMAIN, &[]);
        let bound = data.create_credential(BOUND_DOMAIN);
        data.create_key(
            BOUND_DOMAIN,
            BOUND_KEY_ID,
            &["--bind-kms-key-arn", BOUND_ARN],
        );
        data.create_key(BOUND_DOMAIN, UNBOUND_KEY_ID, &[]);

        let server = Server::start(&data);
        Fixture {
            server,
            throttled,
            refill,
            quota_a,
            quota_b,
            unlimited,
            bound,
            data,
        }
    })
}

impl Fixture {
    fn encrypt(&self, credential: &Credential, key_id: &str, body: &Value) -> HttpResponse {
        let path = credential.path(&format!("/keys/{key_id}/encrypt"));
        self.server.post(credential, &path, body)
    }

    fn decrypt(&self, credential: &Credential, key_id: &str, body: &Value) -> HttpResponse {
        let path = credential.path(&format!("/keys/{key_id}/decrypt"));
        self.server.post(credential, &path, body)
    }

    /// Sends `BURST_LEN` encrypt requests over one connection. Returns the responses and the
    /// wall time the burst took.
    fn burst(&self, credential: &Credential) -> (Vec<HttpResponse>, Duration) {
        let started = Instant::now();
        let responses = self.server.curl_burst(
            credential,
            &credential.path(&format!("/keys/{KEY_ID}/encrypt")),
            &encrypt_request(PLAINTEXT, None),
            BURST_LEN,
        );
        (responses, started.elapsed())
    }
}

fn count_status(responses: &[HttpResponse], status: u16) -> usize {
    responses
        .iter()
        .filter(|response| response.status == status)
        .count()
}

fn assert_access_denied(response: &HttpResponse, case: &str) {
    assert_eq!(response.status, 403, "{case}: {}", response.body);
    assert_eq!(
        response.error_name().as_deref(),
        Some("AccessDeniedException"),
        "{case}: {}",
        response.body
    );
    assert_error_message_format(response, case);
}

#[test]
fn quota_excess_returns_throttling() {
    let fixture = fixture();
    let (responses, elapsed) = fixture.burst(&fixture.throttled);
    let succeeded = count_status(&responses, 200);
    let throttled = count_status(&responses, 429);
    eprintln!("{BURST_LEN} requests in {elapsed:?}: {succeeded} succeeded, {throttled} throttled");

    assert_eq!(
        responses[0].status, 200,
        "the first request is within the quota: {}",
        responses[0].body
    );
    assert!(
        throttled > 0,
        "a burst of {BURST_LEN} must exceed {QUOTA} requests/s"
    );
    for response in responses.iter().filter(|response| response.status != 200) {
        assert_eq!(response.status, 429, "over quota: {}", response.body);
        assert_eq!(
            response.error_name().as_deref(),
            Some("ThrottlingException"),
            "over quota: {}",
            response.body
        );
        assert_error_message_format(response, "ThrottlingException");
    }

    // Any quota of r requests per second lets at most about r * (T + 2) requests through in
    // T seconds: one second's burst, one more window at a boundary, and the refill during T.
    let allowed = 2 * QUOTA as usize + (f64::from(QUOTA) * elapsed.as_secs_f64()).ceil() as usize;
    assert!(
        succeeded <= allowed,
        "{succeeded} of {BURST_LEN} requests in {elapsed:?} succeeded, above the {allowed} a quota of {QUOTA}/s allows"
    );
}

#[test]
fn quota_refills_after_a_second() {
    let fixture = fixture();
    let (responses, _) = fixture.burst(&fixture.refill);
    assert!(
        count_status(&responses, 429) > 0,
        "the burst must use up the quota"
    );

    sleep(Duration::from_millis(1100));
    let response = fixture.encrypt(&fixture.refill, KEY_ID, &encrypt_request(PLAINTEXT, None));
    assert_eq!(
        response.status, 200,
        "one second after the burst the quota must allow a request: {}",
        response.body
    );
}

#[test]
fn quota_is_per_domain() {
    let fixture = fixture();
    let (responses, _) = fixture.burst(&fixture.quota_a);
    assert!(
        count_status(&responses, 429) > 0,
        "the burst must use up the quota of {QUOTA_A_DOMAIN}"
    );

    let response = fixture.encrypt(&fixture.quota_b, KEY_ID, &encrypt_request(PLAINTEXT, None));
    assert_eq!(
        response.status, 200,
        "{QUOTA_B_DOMAIN} must not share the quota of {QUOTA_A_DOMAIN}: {}",
        response.body
    );
}

#[test]
fn domain_without_quota_is_not_throttled() {
    let fixture = fixture();
    let (responses, elapsed) = fixture.burst(&fixture.unlimited);
    assert_eq!(
        count_status(&responses, 200),
        BURST_LEN,
        "every request of the burst ({elapsed:?}) must succeed: {:?}",
        responses
            .iter()
            .map(|response| response.status)
            .collect::<Vec<_>>()
    );
}

#[test]
fn bound_key_serves_its_kms_key() {
    let fixture = fixture();
    let encrypted = fixture.encrypt(
        &fixture.bound,
        BOUND_KEY_ID,
        &encrypt_request_for(PLAINTEXT, None, BOUND_ARN),
    );
    assert_eq!(encrypted.status, 200, "encrypt: {}", encrypted.body);

    let decrypted = fixture.decrypt(
        &fixture.bound,
        BOUND_KEY_ID,
        &decrypt_request_for(&encrypted.json(), None, BOUND_ARN),
    );
    assert_eq!(decrypted.status, 200, "decrypt: {}", decrypted.body);
    assert_eq!(
        decrypted.field("plaintext"),
        b64(PLAINTEXT),
        "decrypt must return the plaintext"
    );
}

#[test]
fn bound_key_denies_other_arn_on_encrypt() {
    let fixture = fixture();
    for (case, arn) in [
        ("unrelated ARN", OTHER_ARN),
        ("bound ARN plus a suffix", EXTENDED_ARN),
    ] {
        let response = fixture.encrypt(
            &fixture.bound,
            BOUND_KEY_ID,
            &encrypt_request_for(PLAINTEXT, None, arn),
        );
        assert_access_denied(&response, case);
    }
}

#[test]
fn bound_key_denies_other_arn_on_decrypt() {
    let fixture = fixture();
    let encrypted = fixture.encrypt(
        &fixture.bound,
        BOUND_KEY_ID,
        &encrypt_request_for(PLAINTEXT, None, BOUND_ARN),
    );
    assert_eq!(encrypted.status, 200, "encrypt: {}", encrypted.body);

    let response = fixture.decrypt(
        &fixture.bound,
        BOUND_KEY_ID,
        &decrypt_request_for(&encrypted.json(), None, OTHER_ARN),
    );
    assert_access_denied(&response, "decrypt with an unrelated ARN");
}

#[test]
fn bound_key_metadata_needs_no_arn() {
    // AWS KMS calls GetKeyMetadata from CreateKey, before the KMS key and its ARN exist, so the
    // request carries no kmsKeyArn.
    let fixture = fixture();
    let path = fixture
        .bound
        .path(&format!("/keys/{BOUND_KEY_ID}/metadata"));
    let response = fixture
        .server
        .post(&fixture.bound, &path, &key_metadata_request());
    assert_eq!(response.status, 200, "metadata: {}", response.body);
    assert_eq!(response.field("keyStatus"), "ENABLED", "{}", response.body);
}

#[test]
fn unbound_key_serves_any_arn() {
    let fixture = fixture();
    let response = fixture.encrypt(
        &fixture.bound,
        UNBOUND_KEY_ID,
        &encrypt_request_for(PLAINTEXT, None, OTHER_ARN),
    );
    assert_eq!(response.status, 200, "encrypt: {}", response.body);
}

#[test]
fn key_show_reports_bound_arn() {
    let fixture = fixture();
    let output = fixture.data.run_ok(&[
        "key",
        "show",
        BOUND_DOMAIN,
        BOUND_KEY_ID,
        "--output",
        "json",
    ]);
    let key: Value = serde_json::from_str(&output).expect("key show prints JSON");
    assert_eq!(key["boundKmsKeyArn"], BOUND_ARN, "key show: {key}");
}
