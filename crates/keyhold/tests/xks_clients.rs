//! The four XKS APIs through two independent SigV4 clients: curl `--aws-sigv4` and Python
//! botocore's `SigV4Auth`. Both talk HTTPS to one shared `keyhold serve` on 127.0.0.1.

mod common;

use std::sync::{Arc, Mutex, Weak};

use common::{
    Credential, DataDir, HttpResponse, Server, assert_single_line, b64, decrypt_request,
    encrypt_request, expected_integrity_value, health_request, key_metadata_request, shared, unb64,
};
use serde_json::Value;

const DOMAIN: &str = "clients";
const KEY_ID: &str = "round-trip";

/// Plaintext of the encrypt tests. Its 37 bytes make the base64 form end in padding.
const PLAINTEXT: &[u8] = b"two independent SigV4 clients agree!!";

/// AAD of the encrypt tests, in the shape AWS KMS uses for encryption contexts.
const AAD: &[u8] = b"project=keyhold,department=integration-tests";

/// Maximum `ciphertextMetadata` length the XKS API allows, in bytes.
const MAX_CIPHERTEXT_METADATA_LEN: usize = 20;

struct Fixture {
    // Declared first so the server stops before the data directory is deleted.
    server: Server,
    credential: Credential,
    _data: DataDir,
}

static FIXTURE: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());

fn fixture() -> Arc<Fixture> {
    shared(&FIXTURE, || {
        let data = DataDir::init();
        data.create_domain(DOMAIN, &[]);
        let credential = data.create_credential(DOMAIN);
        data.create_key(DOMAIN, KEY_ID, &[]);
        let server = Server::start(&data);
        Fixture {
            server,
            credential,
            _data: data,
        }
    })
}

/// A SigV4 client that sends one signed POST.
#[derive(Debug, Clone, Copy)]
enum Client {
    Curl,
    Botocore,
}

impl Client {
    fn post(self, fixture: &Fixture, api: &str, body: &Value) -> HttpResponse {
        let path = fixture.credential.path(api);
        match self {
            Self::Curl => fixture.server.post(&fixture.credential, &path, body),
            Self::Botocore => fixture
                .server
                .post_botocore(&fixture.credential, &path, body),
        }
    }
}

fn check_health(client: Client) {
    let fixture = fixture();
    let response = client.post(&fixture, "/health", &health_request());
    assert_eq!(response.status, 200, "{client:?} health: {}", response.body);
    assert_single_line(&response, "health");

    let body = response.json();
    let fleet_size = body["xksProxyFleetSize"].as_u64().unwrap_or(0);
    assert!(fleet_size > 0, "xksProxyFleetSize must be above 0: {body}");
    for field in ["xksProxyVendor", "xksProxyModel", "ekmVendor"] {
        assert!(
            body[field].as_str().is_some_and(|value| !value.is_empty()),
            "{field} must be a non-empty string: {body}"
        );
    }
    let fleet = body["ekmFleetDetails"]
        .as_array()
        .unwrap_or_else(|| panic!("ekmFleetDetails must be an array: {body}"));
    assert!(
        (1..=10).contains(&fleet.len()),
        "ekmFleetDetails must have 1 to 10 entries: {body}"
    );
    assert_eq!(
        fleet[0]["healthStatus"], "ACTIVE",
        "a fresh server must report ACTIVE: {body}"
    );
}

fn check_key_metadata(client: Client) {
    let fixture = fixture();
    let api = format!("/keys/{KEY_ID}/metadata");
    let response = client.post(&fixture, &api, &key_metadata_request());
    assert_eq!(
        response.status, 200,
        "{client:?} metadata: {}",
        response.body
    );
    assert_single_line(&response, "metadata");

    let body = response.json();
    assert_eq!(body["keySpec"], "AES_256", "keySpec: {body}");
    assert_eq!(body["keyStatus"], "ENABLED", "keyStatus: {body}");
    let usage: Vec<&str> = body["keyUsage"]
        .as_array()
        .unwrap_or_else(|| panic!("keyUsage must be an array: {body}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(usage.contains(&"ENCRYPT"), "keyUsage lacks ENCRYPT: {body}");
    assert!(usage.contains(&"DECRYPT"), "keyUsage lacks DECRYPT: {body}");
}

fn encrypt(client: Client, fixture: &Fixture) -> Value {
    let api = format!("/keys/{KEY_ID}/encrypt");
    let response = client.post(fixture, &api, &encrypt_request(PLAINTEXT, Some(AAD)));
    assert_eq!(
        response.status, 200,
        "{client:?} encrypt: {}",
        response.body
    );
    assert_single_line(&response, "encrypt");
    response.json()
}

fn check_encrypt(client: Client) {
    let fixture = fixture();
    let body = encrypt(client, &fixture);
    let field = |name: &str| {
        let text = body[name]
            .as_str()
            .unwrap_or_else(|| panic!("encrypt response lacks {name}: {body}"));
        unb64(text, name)
    };
    let ciphertext = field("ciphertext");
    let iv = field("initializationVector");
    let tag = field("authenticationTag");
    let metadata = field("ciphertextMetadata");

    assert_eq!(
        ciphertext.len(),
        PLAINTEXT.len(),
        "GCM ciphertext must be as long as the plaintext"
    );
    assert_ne!(
        ciphertext, PLAINTEXT,
        "ciphertext must differ from plaintext"
    );
    assert!(
        iv.len() == 12 || iv.len() == 16,
        "initializationVector must be 12 or 16 bytes, got {}",
        iv.len()
    );
    assert_eq!(tag.len(), 16, "authenticationTag must be 16 bytes");
    assert!(
        metadata.len() <= MAX_CIPHERTEXT_METADATA_LEN,
        "ciphertextMetadata must be at most 20 bytes, got {}",
        metadata.len()
    );
    assert_eq!(
        body["ciphertextDataIntegrityValue"].as_str(),
        Some(expected_integrity_value(AAD, &metadata, &iv, &ciphertext, &tag).as_str()),
        "ciphertextDataIntegrityValue must be SHA-256 over AAD, metadata, IV, ciphertext and tag"
    );
}

fn check_decrypt(client: Client) {
    let fixture = fixture();
    let encrypted = encrypt(client, &fixture);
    let api = format!("/keys/{KEY_ID}/decrypt");
    let response = client.post(&fixture, &api, &decrypt_request(&encrypted, Some(AAD)));
    assert_eq!(
        response.status, 200,
        "{client:?} decrypt: {}",
        response.body
    );
    assert_single_line(&response, "decrypt");
    assert_eq!(
        response.field("plaintext"),
        b64(PLAINTEXT),
        "decrypt must return the encrypted plaintext"
    );
}

#[test]
fn curl_health_reports_active_fleet() {
    check_health(Client::Curl);
}

#[test]
fn curl_key_metadata_reports_aes_256() {
    check_key_metadata(Client::Curl);
}

#[test]
fn curl_encrypt_returns_integrity_value() {
    check_encrypt(Client::Curl);
}

#[test]
fn curl_decrypt_returns_plaintext() {
    check_decrypt(Client::Curl);
}

#[test]
fn botocore_health_reports_active_fleet() {
    check_health(Client::Botocore);
}

#[test]
fn botocore_key_metadata_reports_aes_256() {
    check_key_metadata(Client::Botocore);
}

#[test]
fn botocore_encrypt_returns_integrity_value() {
    check_encrypt(Client::Botocore);
}

#[test]
fn botocore_decrypt_returns_plaintext() {
    check_decrypt(Client::Botocore);
}

#[test]
fn curl_ciphertext_decrypts_with_botocore() {
    let fixture = fixture();
    let encrypted = encrypt(Client::Curl, &fixture);
    let api = format!("/keys/{KEY_ID}/decrypt");
    let response = Client::Botocore.post(&fixture, &api, &decrypt_request(&encrypted, Some(AAD)));
    assert_eq!(response.status, 200, "botocore decrypt: {}", response.body);
    assert_eq!(
        response.field("plaintext"),
        b64(PLAINTEXT),
        "botocore must decrypt what curl encrypted"
    );
}
