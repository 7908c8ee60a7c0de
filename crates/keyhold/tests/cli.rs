//! The `keyhold` command line: `init` safety, file modes, JSON output, errors on stderr, and key
//! status changes that reach a running server without a restart.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use common::{Credential, DataDir, HttpResponse, Server, encrypt_request, shared, wait_for};
use serde_json::Value;

const DOMAIN: &str = "cli";

/// Key disabled by `disabled_key_fails_within_a_second`.
const DISABLE_KEY_ID: &str = "to-disable";
/// Key disabled and enabled again by `key_enable_restores_service`.
const ENABLE_KEY_ID: &str = "to-enable";

/// Maximum time a key status change may take to reach the running server. The server polls the
/// store every 200 ms.
const STATUS_DEADLINE: Duration = Duration::from_secs(1);

/// Files `init` creates, relative to the data directory.
const INIT_FILES: [&str; 6] = [
    "keyhold.toml",
    "root.key",
    "keyhold.db",
    "tls/ca.pem",
    "tls/server.pem",
    "tls/server.key",
];

struct Fixture {
    // Declared first so the server stops before the data directory is deleted.
    server: Server,
    credential: Credential,
    data: DataDir,
}

static FIXTURE: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());

/// Returns the shared served data directory for the tests that change keys while it runs.
fn served() -> Arc<Fixture> {
    shared(&FIXTURE, || {
        let data = DataDir::init();
        data.create_domain(DOMAIN, &[]);
        let credential = data.create_credential(DOMAIN);
        data.create_key(DOMAIN, DISABLE_KEY_ID, &[]);
        data.create_key(DOMAIN, ENABLE_KEY_ID, &[]);
        let server = Server::start(&data);
        Fixture {
            server,
            credential,
            data,
        }
    })
}

impl Fixture {
    fn encrypt(&self, key_id: &str) -> HttpResponse {
        let path = self.credential.path(&format!("/keys/{key_id}/encrypt"));
        self.server.post(
            &self.credential,
            &path,
            &encrypt_request(b"status change", None),
        )
    }
}

fn read_init_files(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    INIT_FILES
        .iter()
        .map(|name| {
            let contents =
                fs::read(dir.join(name)).unwrap_or_else(|error| panic!("read {name}: {error}"));
            (*name, contents)
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|error| panic!("stat {}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn parse_json(text: &str, command: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|error| panic!("{command} printed invalid JSON ({error}): {text}"))
}

#[test]
fn init_twice_keeps_files() {
    let data = DataDir::init();
    let before = read_init_files(data.path());

    let second = data.run(&["init"]);
    assert!(
        !second.status.success(),
        "a second init must fail; stdout: {}",
        second.stdout
    );
    assert!(
        second.stderr.contains("already initialized"),
        "stderr must say why: {}",
        second.stderr
    );

    let after = read_init_files(data.path());
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        assert!(old == new, "a second init changed {name}");
    }
}

#[test]
fn init_makes_secret_files_private() {
    let data = DataDir::init();
    let root_key = data.path().join("root.key");
    assert_eq!(
        fs::metadata(&root_key).expect("stat root.key").len(),
        32,
        "root.key must hold a 32-byte key"
    );
    assert_eq!(mode(&root_key), 0o600, "mode of root.key");
    assert_eq!(
        mode(&data.path().join("tls/server.key")),
        0o600,
        "mode of tls/server.key"
    );
    assert_eq!(mode(data.path()), 0o700, "mode of the data directory");
}

#[test]
fn list_and_show_print_json() {
    let data = DataDir::init();
    data.create_domain("json", &[]);
    let credential = data.create_credential("json");
    data.create_key("json", "json-key", &["--usage", "encrypt"]);

    let domains = data.run_ok(&["domain", "list", "--output", "json"]);
    let domains = parse_json(&domains, "domain list");
    assert_eq!(domains[0]["id"], "json", "domain list: {domains}");

    let domain = data.run_ok(&["domain", "show", "json", "--output", "json"]);
    let domain = parse_json(&domain, "domain show");
    assert_eq!(
        domain["xksProxyUriPath"], "/domains/json/kms/xks/v1",
        "domain show: {domain}"
    );

    let keys = data.run_ok(&["key", "list", "json", "--output", "json"]);
    let keys = parse_json(&keys, "key list");
    assert_eq!(keys[0]["keyId"], "json-key", "key list: {keys}");

    let key = data.run_ok(&["key", "show", "json", "json-key", "--output", "json"]);
    let key = parse_json(&key, "key show");
    assert_eq!(key["keyId"], "json-key", "key show: {key}");
    assert_eq!(key["domainId"], "json", "key show: {key}");

    let credentials = data.run_ok(&["credential", "list", "json", "--output", "json"]);
    assert!(
        !credentials.contains(&credential.secret_access_key),
        "credential list must never print a secret: {credentials}"
    );
    let credentials = parse_json(&credentials, "credential list");
    assert_eq!(
        credentials[0]["accessKeyId"],
        credential.access_key_id.as_str(),
        "credential list: {credentials}"
    );
}

#[test]
fn errors_go_to_stderr() {
    let data = DataDir::init();
    data.create_domain("errors", &[]);
    data.create_key("errors", "existing", &[]);
    let uninitialized = DataDir::empty();

    let cases: [(&DataDir, &[&str]); 9] = [
        (&data, &["domain", "show", "missing"]),
        (&data, &["domain", "create", "Not_A_Valid_Id"]),
        (&data, &["key", "create", "missing-domain"]),
        (&data, &["key", "create", "errors", "--key-id", "bad id!"]),
        (&data, &["key", "create", "errors", "--key-id", "existing"]),
        (&data, &["key", "create", "errors", "--usage", "sign"]),
        (&data, &["key", "show", "errors", "missing"]),
        (
            &data,
            &["credential", "revoke", "errors", "KHAAAAAAAAAAAAAAAAAAAAAA"],
        ),
        (&uninitialized, &["domain", "list"]),
    ];
    for (dir, args) in cases {
        let output = dir.run(args);
        assert!(
            !output.status.success(),
            "keyhold {args:?} must fail; stdout: {}",
            output.stdout
        );
        assert!(
            output.stderr.starts_with("error: "),
            "keyhold {args:?} must explain the error on stderr: {:?}",
            output.stderr
        );
        assert!(
            output.stdout.is_empty(),
            "keyhold {args:?} must print nothing on stdout: {:?}",
            output.stdout
        );
    }
}

#[test]
fn usage_errors_exit_with_2() {
    let data = DataDir::init();
    let output = data.run(&["key", "create"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "missing argument: {}",
        output.stderr
    );
    assert!(
        output.stderr.contains("DOMAIN"),
        "stderr must name the missing argument: {}",
        output.stderr
    );
    assert!(
        output.stdout.is_empty(),
        "stdout must stay empty: {}",
        output.stdout
    );
}

#[test]
fn disabled_key_fails_within_a_second() {
    let fixture = served();
    let before = fixture.encrypt(DISABLE_KEY_ID);
    assert_eq!(before.status, 200, "before disable: {}", before.body);

    fixture
        .data
        .run_ok(&["key", "disable", DOMAIN, DISABLE_KEY_ID]);
    let (response, delay) = wait_for(Duration::from_secs(5), || {
        let response = fixture.encrypt(DISABLE_KEY_ID);
        (response.status != 200).then_some(response)
    })
    .expect("the disabled key still encrypts after 5 seconds");
    eprintln!("key disable reached the running server after {delay:?}");

    assert_eq!(response.status, 400, "after disable: {}", response.body);
    assert_eq!(
        response.error_name().as_deref(),
        Some("InvalidStateException"),
        "after disable: {}",
        response.body
    );
    assert!(
        delay <= STATUS_DEADLINE,
        "disable took {delay:?}, more than {STATUS_DEADLINE:?}"
    );
}

#[test]
fn key_enable_restores_service() {
    let fixture = served();
    fixture
        .data
        .run_ok(&["key", "disable", DOMAIN, ENABLE_KEY_ID]);
    wait_for(Duration::from_secs(5), || {
        (fixture.encrypt(ENABLE_KEY_ID).status == 400).then_some(())
    })
    .expect("the key never became disabled on the server");

    fixture
        .data
        .run_ok(&["key", "enable", DOMAIN, ENABLE_KEY_ID]);
    let (response, delay) = wait_for(Duration::from_secs(5), || {
        let response = fixture.encrypt(ENABLE_KEY_ID);
        (response.status == 200).then_some(response)
    })
    .expect("the enabled key still fails after 5 seconds");
    eprintln!("key enable reached the running server after {delay:?}");

    assert!(
        response.json()["ciphertext"].is_string(),
        "encrypt after enable: {}",
        response.body
    );
    assert!(
        delay <= STATUS_DEADLINE,
        "enable took {delay:?}, more than {STATUS_DEADLINE:?}"
    );
}
