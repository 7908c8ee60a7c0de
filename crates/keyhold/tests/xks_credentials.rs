//! SigV4 credential rotation against a running server: two active credentials per domain, no
//! third, and revocation that reaches the server without a restart.

mod common;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use common::{Credential, DataDir, HttpResponse, Server, health_request, shared, wait_for};

/// Domain whose two credentials are both used.
const PAIR_DOMAIN: &str = "pair";
/// Domain that already has two active credentials when a third is requested.
const FULL_DOMAIN: &str = "full";
/// Domain whose first credential is revoked while the server runs.
const REVOKE_DOMAIN: &str = "revoke";

/// Maximum time a revocation may take to reach the running server. The server polls the store
/// every 200 ms, and `keyhold credential revoke --help` states that running servers reject a
/// revoked credential within a second.
const REVOCATION_DEADLINE: Duration = Duration::from_secs(1);

struct Fixture {
    // Declared first so the server stops before the data directory is deleted.
    server: Server,
    pair: [Credential; 2],
    revoke: [Credential; 2],
    data: DataDir,
}

static FIXTURE: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());

fn fixture() -> Arc<Fixture> {
    shared(&FIXTURE, || {
        let data = DataDir::init();
        let credential_pair = |domain: &str| {
            data.create_domain(domain, &[]);
            [
                data.create_credential(domain),
                data.create_credential(domain),
            ]
        };
        let pair = credential_pair(PAIR_DOMAIN);
        let revoke = credential_pair(REVOKE_DOMAIN);
        credential_pair(FULL_DOMAIN);
        let server = Server::start(&data);
        Fixture {
            server,
            pair,
            revoke,
            data,
        }
    })
}

fn health(fixture: &Fixture, credential: &Credential) -> HttpResponse {
    fixture
        .server
        .post(credential, &credential.path("/health"), &health_request())
}

#[test]
fn two_credentials_both_work() {
    let fixture = fixture();
    for (index, credential) in fixture.pair.iter().enumerate() {
        let response = health(&fixture, credential);
        assert_eq!(
            response.status, 200,
            "credential {index} of the pair: {}",
            response.body
        );
    }
}

#[test]
fn third_credential_is_rejected() {
    let fixture = fixture();
    let output = fixture.data.run(&["credential", "create", FULL_DOMAIN]);
    assert!(
        !output.status.success(),
        "a third active credential must be rejected; stdout: {}",
        output.stdout
    );
    assert!(
        output.stderr.contains("active credentials"),
        "stderr must say why: {}",
        output.stderr
    );
    assert!(
        !output.stdout.contains("RawSecretAccessKey"),
        "no credential may be printed: {}",
        output.stdout
    );

    let list = fixture
        .data
        .run_ok(&["credential", "list", FULL_DOMAIN, "--output", "json"]);
    let credentials: serde_json::Value =
        serde_json::from_str(&list).expect("credential list prints JSON");
    assert_eq!(
        credentials.as_array().map(Vec::len),
        Some(2),
        "the domain must still have exactly two credentials: {list}"
    );
}

#[test]
fn revoked_credential_fails_within_a_second() {
    let fixture = fixture();
    let [revoked, kept] = &fixture.revoke;
    let before = health(&fixture, revoked);
    assert_eq!(before.status, 200, "before revocation: {}", before.body);

    fixture.data.run_ok(&[
        "credential",
        "revoke",
        REVOKE_DOMAIN,
        &revoked.access_key_id,
    ]);
    // The delay runs from the end of the revoke command, when the change is committed, to the
    // end of the first request that fails.
    let (response, delay) = wait_for(Duration::from_secs(5), || {
        let response = health(&fixture, revoked);
        (response.status != 200).then_some(response)
    })
    .expect("the revoked credential still works after 5 seconds");
    eprintln!("revocation reached the running server after {delay:?}");

    assert_eq!(response.status, 401, "after revocation: {}", response.body);
    assert_eq!(
        response.error_name().as_deref(),
        Some("AuthenticationFailedException"),
        "after revocation: {}",
        response.body
    );
    assert!(
        delay <= REVOCATION_DEADLINE,
        "revocation took {delay:?}, more than {REVOCATION_DEADLINE:?}"
    );

    let other = health(&fixture, kept);
    assert_eq!(
        other.status, 200,
        "the domain's other credential must keep working: {}",
        other.body
    );
}
