//! The admin API over HTTPS: every route against every role, the self-service flow from
//! operator to key creator to a working XKS key, credential rotation without downtime, tokens
//! that expire and are revoked, and JSON errors with stable codes.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Credential, DataDir, Server, encrypt_request};
use serde_json::{Value, json};

/// Custom key store id used in the CLI flow.
const STORE_ID: &str = "cks-0123456789abcdef0";

/// Returns the access key ids in the output of `credential list --output json`.
fn credentials_of(output: &common::CliOutput) -> Vec<String> {
    let list: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {} {}", output.stdout, output.stderr));
    list.as_array()
        .expect("array")
        .iter()
        .map(|credential| credential["accessKeyId"].as_str().expect("id").to_owned())
        .collect()
}

/// The roles of the table test, each held by its own principal.
const ROLES: [&str; 5] = ["operator", "admin", "creator", "auditor", "outsider"];

/// Creates a principal with one role through the API and returns a token for it.
fn principal_with_token(server: &Server, operator: &str, name: &str, role: &Value) -> String {
    let (status, body) = server.admin(
        "POST",
        "/v1/principals",
        operator,
        Some(&json!({ "name": name, "roles": [role] })),
    );
    assert_eq!(status, 201, "create principal {name}: {body}");
    let (status, body) = server.admin(
        "POST",
        &format!("/v1/principals/{name}/tokens"),
        operator,
        Some(&json!({ "description": "test" })),
    );
    assert_eq!(status, 201, "create token for {name}: {body}");
    body["token"]
        .as_str()
        .expect("token in response")
        .to_owned()
}

/// Asserts that an admin API response is an error with this HTTP status and error code.
#[track_caller]
fn assert_api_error(status: u16, body: &Value, expected_status: u16, expected_code: &str) {
    assert_eq!(status, expected_status, "HTTP status of {body}");
    assert_eq!(
        body["error"]["code"].as_str(),
        Some(expected_code),
        "error code of {body}"
    );
}

struct Fixture {
    /// Kept so the data directory outlives the server.
    _data: DataDir,
    server: Server,
    /// Tokens in the order of [`ROLES`].
    tokens: Vec<String>,
}

impl Fixture {
    fn new() -> Self {
        let data = DataDir::init();
        let server = Server::start(&data);
        let operator = data.operator_token();
        for domain in ["acme", "other"] {
            let (status, body) = server.admin(
                "POST",
                "/v1/domains",
                &operator,
                Some(&json!({ "id": domain })),
            );
            assert_eq!(status, 201, "{body}");
        }
        let tokens = vec![
            operator.clone(),
            principal_with_token(
                &server,
                &operator,
                "admin",
                &json!({"role": "domain-admin", "domain": "acme"}),
            ),
            principal_with_token(
                &server,
                &operator,
                "creator",
                &json!({"role": "key-creator", "domain": "acme"}),
            ),
            principal_with_token(
                &server,
                &operator,
                "auditor",
                &json!({"role": "auditor", "domain": "acme"}),
            ),
            principal_with_token(
                &server,
                &operator,
                "outsider",
                &json!({"role": "domain-admin", "domain": "other"}),
            ),
        ];
        Self {
            _data: data,
            server,
            tokens,
        }
    }

    fn token(&self, role: &str) -> &str {
        let index = ROLES
            .iter()
            .position(|name| *name == role)
            .expect("known role");
        &self.tokens[index]
    }
}

/// One row of the access table: a route template, a concrete request and the roles allowed.
struct Row {
    method: &'static str,
    template: &'static str,
    path: &'static str,
    body: Option<Value>,
    allowed: &'static [&'static str],
}

const ALL: &[&str] = &["operator", "admin", "creator", "auditor", "outsider"];
const OP: &[&str] = &["operator"];
const ADMIN: &[&str] = &["operator", "admin"];
const READERS: &[&str] = &["operator", "admin", "auditor"];
const MEMBERS: &[&str] = &["operator", "admin", "creator", "auditor"];
const CREATORS: &[&str] = &["operator", "admin", "creator"];

fn row(
    method: &'static str,
    template: &'static str,
    path: &'static str,
    body: Option<Value>,
    allowed: &'static [&'static str],
) -> Row {
    Row {
        method,
        template,
        path,
        body,
        allowed,
    }
}

fn access_table() -> Vec<Row> {
    let key_store = json!({
        "name": "eu", "customKeyStoreId": "cks-1234567890abcdef0",
        "region": "eu-west-1", "accountId": "111122223333"
    });
    let policy = json!({ "policy": { "rules": [{ "effect": "allow" }] } });
    vec![
        row("GET", "/v1/whoami", "/v1/whoami", None, ALL),
        row("GET", "/v1/domains", "/v1/domains", None, ALL),
        row(
            "POST",
            "/v1/domains",
            "/v1/domains",
            Some(json!({"id": "new"})),
            OP,
        ),
        row(
            "GET",
            "/v1/domains/{domain}",
            "/v1/domains/acme",
            None,
            MEMBERS,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/disable",
            "/v1/domains/acme/disable",
            None,
            ADMIN,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/enable",
            "/v1/domains/acme/enable",
            None,
            ADMIN,
        ),
        row(
            "GET",
            "/v1/domains/{domain}/credentials",
            "/v1/domains/acme/credentials",
            None,
            READERS,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/credentials",
            "/v1/domains/acme/credentials",
            None,
            ADMIN,
        ),
        row(
            "DELETE",
            "/v1/domains/{domain}/credentials/{accessKeyId}",
            "/v1/domains/acme/credentials/AAAAAAAAAAAAAAAAAAAAAAAA",
            None,
            ADMIN,
        ),
        row(
            "GET",
            "/v1/domains/{domain}/keys",
            "/v1/domains/acme/keys",
            None,
            MEMBERS,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/keys",
            "/v1/domains/acme/keys",
            Some(json!({})),
            CREATORS,
        ),
        row(
            "GET",
            "/v1/domains/{domain}/keys/{keyId}",
            "/v1/domains/acme/keys/k1",
            None,
            MEMBERS,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/keys/{keyId}/enable",
            "/v1/domains/acme/keys/k1/enable",
            None,
            ADMIN,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/keys/{keyId}/disable",
            "/v1/domains/acme/keys/k1/disable",
            None,
            ADMIN,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/keys/{keyId}/rotate",
            "/v1/domains/acme/keys/k1/rotate",
            None,
            ADMIN,
        ),
        row(
            "PUT",
            "/v1/domains/{domain}/keys/{keyId}/rotation",
            "/v1/domains/acme/keys/k1/rotation",
            Some(json!({"period": "90d"})),
            ADMIN,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/keys/{keyId}/schedule-deletion",
            "/v1/domains/acme/keys/gone/schedule-deletion",
            Some(json!({"days": 7})),
            ADMIN,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/keys/{keyId}/cancel-deletion",
            "/v1/domains/acme/keys/gone/cancel-deletion",
            None,
            ADMIN,
        ),
        row(
            "GET",
            "/v1/domains/{domain}/keys/{keyId}/versions",
            "/v1/domains/acme/keys/k1/versions",
            None,
            READERS,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/keys/{keyId}/versions/{version}/enable",
            "/v1/domains/acme/keys/k1/versions/1/enable",
            None,
            ADMIN,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/keys/{keyId}/versions/{version}/disable",
            "/v1/domains/acme/keys/k1/versions/9/disable",
            None,
            ADMIN,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/keys/{keyId}/versions/{version}/destroy",
            "/v1/domains/acme/keys/k1/versions/9/destroy",
            Some(json!({"confirm": true})),
            ADMIN,
        ),
        row(
            "GET",
            "/v1/domains/{domain}/policy",
            "/v1/domains/acme/policy",
            None,
            READERS,
        ),
        row(
            "PUT",
            "/v1/domains/{domain}/policy",
            "/v1/domains/acme/policy",
            Some(policy.clone()),
            ADMIN,
        ),
        row(
            "DELETE",
            "/v1/domains/{domain}/policy",
            "/v1/domains/acme/policy",
            None,
            ADMIN,
        ),
        row(
            "GET",
            "/v1/domains/{domain}/keys/{keyId}/policy",
            "/v1/domains/acme/keys/k1/policy",
            None,
            READERS,
        ),
        row(
            "PUT",
            "/v1/domains/{domain}/keys/{keyId}/policy",
            "/v1/domains/acme/keys/k1/policy",
            Some(policy),
            ADMIN,
        ),
        row(
            "DELETE",
            "/v1/domains/{domain}/keys/{keyId}/policy",
            "/v1/domains/acme/keys/k1/policy",
            None,
            ADMIN,
        ),
        row(
            "GET",
            "/v1/domains/{domain}/key-stores",
            "/v1/domains/acme/key-stores",
            None,
            MEMBERS,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/key-stores",
            "/v1/domains/acme/key-stores",
            Some(key_store),
            ADMIN,
        ),
        row(
            "GET",
            "/v1/domains/{domain}/key-stores/{name}",
            "/v1/domains/acme/key-stores/eu",
            None,
            MEMBERS,
        ),
        row(
            "GET",
            "/v1/domains/{domain}/key-stores/{name}/setup",
            "/v1/domains/acme/key-stores/eu/setup",
            None,
            ADMIN,
        ),
        row(
            "POST",
            "/v1/domains/{domain}/self-service/keys",
            "/v1/domains/acme/self-service/keys",
            Some(json!({"keyName": "orders", "keyStore": "eu"})),
            CREATORS,
        ),
        row(
            "DELETE",
            "/v1/domains/{domain}/key-stores/{name}",
            "/v1/domains/acme/key-stores/eu",
            None,
            ADMIN,
        ),
        row(
            "GET",
            "/v1/domains/{domain}/principals",
            "/v1/domains/acme/principals",
            None,
            READERS,
        ),
        row(
            "GET",
            "/v1/domains/{domain}/audit",
            "/v1/domains/acme/audit",
            None,
            READERS,
        ),
        row("GET", "/v1/audit", "/v1/audit", None, OP),
        row("GET", "/v1/principals", "/v1/principals", None, OP),
        row(
            "POST",
            "/v1/principals",
            "/v1/principals",
            Some(json!({"name": "made", "roles": [{"role": "auditor", "domain": "acme"}]})),
            ADMIN,
        ),
        row(
            "GET",
            "/v1/principals/{principal}",
            "/v1/principals/target",
            None,
            ADMIN,
        ),
        row(
            "GET",
            "/v1/principals/{principal}/tokens",
            "/v1/principals/target/tokens",
            None,
            ADMIN,
        ),
        row(
            "POST",
            "/v1/principals/{principal}/tokens",
            "/v1/principals/target/tokens",
            Some(json!({})),
            ADMIN,
        ),
        row(
            "DELETE",
            "/v1/principals/{principal}/tokens/{tokenId}",
            "/v1/principals/target/tokens/0000000000000000",
            None,
            ADMIN,
        ),
        row(
            "DELETE",
            "/v1/principals/{principal}",
            "/v1/principals/target",
            None,
            ADMIN,
        ),
    ]
}

#[test]
fn every_route_checks_every_role() {
    let fixture = Fixture::new();
    let server = &fixture.server;
    let operator = fixture.token("operator").to_owned();
    for (method, path, body) in [
        ("POST", "/v1/domains/acme/keys", json!({"keyId": "k1"})),
        ("POST", "/v1/domains/acme/keys", json!({"keyId": "gone"})),
        (
            "POST",
            "/v1/principals",
            json!({"name": "target", "roles": [{"role": "key-creator", "domain": "acme"}]}),
        ),
    ] {
        let (status, answer) = server.admin(method, path, &operator, Some(&body));
        assert_eq!(status, 201, "{path}: {answer}");
    }

    let table = access_table();
    let mut checked = 0;
    for row in &table {
        // Denied roles first, so the allowed calls cannot change what a denial depends on.
        let denied: Vec<&str> = ROLES
            .iter()
            .copied()
            .filter(|role| !row.allowed.contains(role))
            .collect();
        for role in denied.iter().copied().chain(row.allowed.iter().copied()) {
            let (status, answer) =
                server.admin(row.method, row.path, fixture.token(role), row.body.as_ref());
            let call = format!("{role} {} {}", row.method, row.path);
            if row.allowed.contains(&role) {
                assert_ne!(status, 401, "{call} was rejected: {answer}");
                assert_ne!(status, 403, "{call} was rejected: {answer}");
            } else {
                assert_eq!(status, 403, "{call} was not rejected: {answer}");
                assert_eq!(
                    answer["error"]["code"].as_str(),
                    Some("forbidden"),
                    "{call}: {answer}"
                );
            }
            checked += 1;
        }
        let (status, answer) = server.admin(row.method, row.path, "", row.body.as_ref());
        let call = format!("{} {} without a token", row.method, row.path);
        assert_eq!(status, 401, "{call}: {answer}");
        assert_eq!(
            answer["error"]["code"].as_str(),
            Some("unauthenticated"),
            "{call}: {answer}"
        );
    }

    // The table covers exactly the routes the server documents.
    let (status, document) = server.admin("GET", "/openapi.json", "", None);
    assert_eq!(status, 200);
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .map(|method| (method.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let tested: BTreeSet<(String, String)> = table
        .iter()
        .map(|row| (row.method.to_owned(), row.template.to_owned()))
        .collect();
    assert_eq!(
        documented, tested,
        "routes documented but not tested, or the reverse"
    );
    eprintln!(
        "checked {checked} calls: {} routes x {} roles, plus one call without a token per route",
        table.len(),
        ROLES.len()
    );
}

#[test]
fn domain_list_shows_own_domains() {
    let fixture = Fixture::new();
    let ids = |role: &str| -> Vec<String> {
        let (status, answer) =
            fixture
                .server
                .admin("GET", "/v1/domains", fixture.token(role), None);
        assert_eq!(status, 200, "{answer}");
        answer["domains"]
            .as_array()
            .expect("domains")
            .iter()
            .map(|domain| domain["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(ids("operator"), ["acme", "other"]);
    assert_eq!(ids("creator"), ["acme"]);
    assert_eq!(ids("outsider"), ["other"]);
}

/// Encrypts 32 bytes with `key_id` and returns the HTTP status.
fn encrypt_status(server: &Server, credential: &Credential, key_id: &str) -> u16 {
    let path = credential.path(&format!("/keys/{key_id}/encrypt"));
    server
        .post(
            credential,
            &path,
            &encrypt_request(b"0123456789abcdef0123456789abcdef", None),
        )
        .status
}

fn credential_of(answer: &Value) -> Credential {
    let field = |pointer: &str| {
        answer
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no {pointer} in {answer}"))
            .to_owned()
    };
    Credential {
        access_key_id: field("/proxyConfiguration/XksProxyAuthenticationCredential/AccessKeyId"),
        secret_access_key: field(
            "/proxyConfiguration/XksProxyAuthenticationCredential/RawSecretAccessKey",
        ),
        uri_path: field("/proxyConfiguration/XksProxyUriPath"),
    }
}

#[test]
fn self_service_key_serves_kms() {
    let data = DataDir::init();
    let server = Server::start(&data);
    let operator = data.operator_token();

    // Operator: a domain and its administrator.
    let (status, answer) = server.admin(
        "POST",
        "/v1/domains",
        &operator,
        Some(&json!({"id": "acme"})),
    );
    assert_eq!(status, 201, "{answer}");
    let admin = principal_with_token(
        &server,
        &operator,
        "acme-admin",
        &json!({"role": "domain-admin", "domain": "acme"}),
    );

    // Domain admin: a credential, a registered key store, a key creator and an auditor.
    let (status, answer) = server.admin("POST", "/v1/domains/acme/credentials", &admin, None);
    assert_eq!(status, 201, "{answer}");
    let credential = credential_of(&answer);
    let (status, answer) = server.admin(
        "POST",
        "/v1/domains/acme/key-stores",
        &admin,
        Some(&json!({
            "name": "prod-eu", "customKeyStoreId": "cks-0123456789abcdef0",
            "region": "eu-west-1", "accountId": "111122223333"
        })),
    );
    assert_eq!(status, 201, "{answer}");
    let creator = principal_with_token(
        &server,
        &admin,
        "dev",
        &json!({"role": "key-creator", "domain": "acme"}),
    );
    let auditor = principal_with_token(
        &server,
        &admin,
        "sec",
        &json!({"role": "auditor", "domain": "acme"}),
    );
    let (status, answer) = server.admin(
        "POST",
        "/v1/principals",
        &admin,
        Some(&json!({"name": "boss", "roles": [{"role": "operator"}]})),
    );
    assert_eq!(
        status, 403,
        "a domain admin cannot make operators: {answer}"
    );

    // Key creator: one call with a key name and a key store name.
    let (status, created) = server.admin(
        "POST",
        "/v1/domains/acme/self-service/keys",
        &creator,
        Some(&json!({"keyName": "orders-db", "keyStore": "prod-eu"})),
    );
    assert_eq!(status, 201, "{created}");
    let key_id = created["xksKeyId"].as_str().expect("xksKeyId").to_owned();
    let aws_cli = created["awsCli"].as_str().expect("awsCli");
    for expected in [
        "aws kms create-key",
        "--origin EXTERNAL_KEY_STORE",
        "--custom-key-store-id cks-0123456789abcdef0",
        &format!("--xks-key-id {key_id}"),
    ] {
        assert!(
            aws_cli.contains(expected),
            "{expected:?} missing from {aws_cli}"
        );
    }
    let terraform = created["terraform"].as_str().expect("terraform");
    assert!(terraform.contains(&format!("\"{key_id}\"")), "{terraform}");
    assert!(terraform.contains("cks-0123456789abcdef0"), "{terraform}");
    let (status, again) = server.admin(
        "POST",
        "/v1/domains/acme/self-service/keys",
        &creator,
        Some(&json!({"keyName": "orders-db", "keyStore": "prod-eu"})),
    );
    assert_api_error(status, &again, 409, "conflict");
    let (status, missing) = server.admin(
        "POST",
        "/v1/domains/acme/self-service/keys",
        &creator,
        Some(&json!({"keyName": "x", "keyStore": "nope"})),
    );
    assert_api_error(status, &missing, 404, "not_found");

    // The key works for AWS KMS at once; the key creator cannot turn it off.
    let deadline = Instant::now() + Duration::from_secs(5);
    while encrypt_status(&server, &credential, &key_id) != 200 {
        assert!(
            Instant::now() < deadline,
            "the new key never served encrypt"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = server.admin(
        "POST",
        &format!("/v1/domains/acme/keys/{key_id}/disable"),
        &creator,
        None,
    );
    assert_eq!(status, 403);

    // Domain admin: the key store setup for the AWS side.
    let (status, setup) = server.admin(
        "GET",
        "/v1/domains/acme/key-stores/prod-eu/setup",
        &admin,
        None,
    );
    assert_eq!(status, 200, "{setup}");
    assert_eq!(
        setup["proxyConfigurationFile"]["XksProxyUriPath"],
        "/domains/acme/kms/xks/v1"
    );
    assert!(
        !setup.to_string().contains(&credential.secret_access_key),
        "the setup answer never repeats a secret"
    );
    for field in ["publicEndpointCommand", "vpcEndpointServiceCommand"] {
        let command = setup[field].as_str().expect("command");
        assert!(
            command.contains("aws kms create-custom-key-store"),
            "{command}"
        );
        assert!(command.contains(&credential.access_key_id), "{command}");
    }
    assert!(
        setup["vpcEndpointServiceTemplate"]
            .as_str()
            .is_some_and(|template| template.contains("cks.kms.eu-west-1.amazonaws.com"))
    );

    // Auditor: reads the audit records of the domain, including the self-service creation.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, records) =
            server.admin("GET", "/v1/domains/acme/audit?limit=1000", &auditor, None);
        assert_eq!(status, 200, "{records}");
        let records = records["records"].as_array().expect("records").clone();
        let made = records.iter().any(|record| {
            record["operation"] == "key self-service create"
                && record["principal"]
                    .as_str()
                    .is_some_and(|principal| principal.starts_with("token:dev "))
        });
        let encrypted = records
            .iter()
            .any(|record| record["keyId"] == key_id.as_str() && record["result"] == "success");
        if made && encrypted {
            assert!(
                records.iter().all(|record| record["domain"] == "acme"
                    || record["target"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("acme"))),
                "records of other domains leaked"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit records missing: {records:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _) = server.admin(
        "POST",
        "/v1/domains/acme/keys",
        &auditor,
        Some(&json!({"keyId": "nope"})),
    );
    assert_eq!(status, 403);
    drop(data);
}

#[test]
fn credential_rotation_and_revocation() {
    let data = DataDir::init();
    let server = Server::start(&data);
    let operator = data.operator_token();
    server.admin(
        "POST",
        "/v1/domains",
        &operator,
        Some(&json!({"id": "acme"})),
    );
    server.admin(
        "POST",
        "/v1/domains/acme/keys",
        &operator,
        Some(&json!({"keyId": "k1"})),
    );
    let (_, first) = server.admin("POST", "/v1/domains/acme/credentials", &operator, None);
    let first = credential_of(&first);
    let (_, second) = server.admin("POST", "/v1/domains/acme/credentials", &operator, None);
    let second = credential_of(&second);
    let deadline = Instant::now() + Duration::from_secs(5);
    while encrypt_status(&server, &second, "k1") != 200 {
        assert!(
            Instant::now() < deadline,
            "the second credential never worked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(encrypt_status(&server, &first, "k1"), 200, "both work");

    let (status, answer) = server.admin(
        "DELETE",
        &format!("/v1/domains/acme/credentials/{}", first.access_key_id),
        &operator,
        None,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "REVOKED");
    let revoked_at = Instant::now();
    let delay = loop {
        let status = encrypt_status(&server, &first, "k1");
        if status == 401 {
            break revoked_at.elapsed();
        }
        assert_eq!(status, 200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the revoked credential still worked after a second"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        encrypt_status(&server, &second, "k1"),
        200,
        "the second still works"
    );
    let (_, list) = server.admin("GET", "/v1/domains/acme/credentials", &operator, None);
    let status_of = |access_key_id: &str| {
        list["credentials"]
            .as_array()
            .expect("credentials")
            .iter()
            .find(|credential| credential["accessKeyId"] == access_key_id)
            .map(|credential| credential["status"].clone())
    };
    assert_eq!(status_of(&first.access_key_id), Some(json!("REVOKED")));
    assert_eq!(status_of(&second.access_key_id), Some(json!("ACTIVE")));
    eprintln!("revoked credential rejected after {} ms", delay.as_millis());
}

#[test]
fn token_expiry_revocation_and_storage() {
    let data = DataDir::init();
    let server = Server::start(&data);
    let operator = data.operator_token();
    let token = principal_with_token(&server, &operator, "bot", &json!({"role": "operator"}));
    assert_eq!(server.admin("GET", "/v1/whoami", &token, None).0, 200);

    let id = token.split('_').nth(1).expect("token id").to_owned();
    let (status, answer) = server.admin(
        "DELETE",
        &format!("/v1/principals/bot/tokens/{id}"),
        &token,
        None,
    );
    assert_eq!(
        status, 200,
        "a principal may revoke its own token: {answer}"
    );
    let (status, answer) = server.admin("GET", "/v1/whoami", &token, None);
    assert_api_error(status, &answer, 401, "unauthenticated");

    // A token one byte off, an expired token and a token of a deleted principal all fail the
    // same way.
    let (_, created) = server.admin(
        "POST",
        "/v1/principals/bot/tokens",
        &operator,
        Some(&json!({"expiresInDays": 1})),
    );
    let live = created["token"].as_str().expect("token").to_owned();
    assert_eq!(server.admin("GET", "/v1/whoami", &live, None).0, 200);
    let mut tampered = live.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    assert_eq!(server.admin("GET", "/v1/whoami", &tampered, None).0, 401);
    let live_id = live.split('_').nth(1).expect("id");
    data.run_sql(&format!(
        "UPDATE admin_tokens SET expires_at = 1 WHERE id = '{live_id}'"
    ));
    assert_eq!(server.admin("GET", "/v1/whoami", &live, None).0, 401);
    let orphan = principal_with_token(&server, &operator, "gone", &json!({"role": "operator"}));
    let (status, answer) = server.admin("DELETE", "/v1/principals/gone", &operator, None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(server.admin("GET", "/v1/whoami", &orphan, None).0, 401);

    let (status, bad) = server.admin(
        "POST",
        "/v1/principals/bot/tokens",
        &operator,
        Some(&json!({"expiresInDays": 0})),
    );
    assert_api_error(status, &bad, 400, "invalid_request");

    // Only digests are stored.
    let database = std::fs::read(data.path().join("keyhold.db")).expect("database");
    for secret in [&token, &live] {
        let needle = secret.rsplit('_').next().expect("secret part").as_bytes();
        assert!(
            !database
                .windows(needle.len())
                .any(|window| window == needle),
            "a token secret is in the database"
        );
    }
}

#[test]
fn bearer_scheme_any_case() {
    let data = DataDir::init();
    let server = Server::start(&data);
    let operator = data.operator_token();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = server.admin_curl(&[
            "-H".to_owned(),
            format!("Authorization: {scheme} {operator}"),
            server.admin_url("/v1/whoami"),
        ]);
        assert_eq!(response.status, 200, "{scheme}: {}", response.body);
    }
}

#[test]
fn errors_have_stable_codes() {
    let data = DataDir::init();
    let server = Server::start(&data);
    let operator = data.operator_token();
    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        ("GET", "/v1/domains/nope", None, 404, "not_found"),
        ("GET", "/v1/nothing", None, 404, "not_found"),
        (
            "PATCH",
            "/v1/domains",
            Some(json!({})),
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/v1/domains",
            Some(json!({"id": "Bad Id"})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/domains",
            Some(json!({"id": "a", "colour": "red"})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/domains",
            Some(json!([1, 2])),
            400,
            "invalid_request",
        ),
        // An empty array must not pass for an object whose fields are all optional.
        (
            "POST",
            "/v1/domains/acme/keys",
            Some(json!([])),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/domains/acme/keys",
            Some(Value::Null),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/principals",
            Some(json!({"name": "x", "roles": []})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/principals",
            Some(json!({"name": "x", "roles": [{"role": "auditor"}]})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/principals",
            Some(json!({"name": "x", "roles": [{"role": "king"}]})),
            400,
            "invalid_request",
        ),
        ("GET", "/v1/audit?limit=0", None, 400, "invalid_request"),
    ];
    for (method, path, body, status, code) in cases {
        let (got, answer) = server.admin(method, path, &operator, body.as_ref());
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(
            answer["error"]["code"].as_str(),
            Some(code),
            "{method} {path}: {answer}"
        );
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(
            message.len() > 10,
            "{method} {path}: message {message:?} says too little"
        );
    }
    server.admin(
        "POST",
        "/v1/domains",
        &operator,
        Some(&json!({"id": "acme"})),
    );
    let (status, answer) = server.admin(
        "POST",
        "/v1/domains",
        &operator,
        Some(&json!({"id": "acme"})),
    );
    assert_api_error(status, &answer, 409, "conflict");

    // A body that is not declared JSON, and one over the size limit.
    let plain = server.admin_curl(&[
        "-H".to_owned(),
        format!("Authorization: Bearer {operator}"),
        "-H".to_owned(),
        "Content-Type: text/plain".to_owned(),
        "--data-binary".to_owned(),
        "{\"id\":\"x\"}".to_owned(),
        server.admin_url("/v1/domains"),
    ]);
    assert_eq!(plain.status, 415, "{}", plain.body);
    let large = json!({"id": "x", "displayName": "a".repeat(70_000)});
    let (status, answer) = server.admin("POST", "/v1/domains", &operator, Some(&large));
    assert_api_error(status, &answer, 413, "payload_too_large");
}

#[test]
fn cli_remote_server_with_token() {
    let data = DataDir::init();
    data.configure(&[(
        "# public_endpoint = \"https://xks.example.com\"",
        "public_endpoint = \"https://xks.example.com\"",
    )]);
    let server = Server::start(&data);
    let url = server.admin_url("");
    let ca = data.ca_file();
    let ca = ca.to_str().expect("UTF-8 path");
    let as_token = |token: &str, args: &[&str]| {
        let mut full = vec!["--server", url.as_str(), "--ca-cert", ca];
        full.extend_from_slice(args);
        data.run_with_env(&full, &[("KEYHOLD_TOKEN", token)])
    };
    let operator = data.operator_token();
    for args in [
        &["domain", "create", "acme"][..],
        &["credential", "create", "acme"],
        &[
            "key-store",
            "register",
            "acme",
            "prod-eu",
            "--custom-key-store-id",
            STORE_ID,
            "--region",
            "eu-west-1",
            "--account-id",
            "111122223333",
        ],
        &["principal", "create", "dev", "--role", "key-creator:acme"],
    ] {
        let output = as_token(&operator, args);
        assert!(output.status.success(), "{args:?}: {}", output.stderr);
    }
    let created = as_token(
        &operator,
        &["token", "create", "dev", "--expires-in-days", "1"],
    );
    assert!(created.status.success(), "{}", created.stderr);
    let dev = created.stdout.trim().to_owned();
    assert!(dev.starts_with("khat_"), "{}", created.stdout);

    let files = data.scratch().join("kms");
    let files_arg = files.to_str().expect("UTF-8 path");
    let made = as_token(
        &dev,
        &[
            "key",
            "self-service",
            "acme",
            "--name",
            "orders db",
            "--key-store",
            "prod-eu",
            "--output-dir",
            files_arg,
        ],
    );
    assert!(made.status.success(), "{}", made.stderr);
    assert!(
        made.stdout.contains("aws kms create-key"),
        "{}",
        made.stdout
    );
    let script = std::fs::read_to_string(files.join("create-key.sh")).expect("create-key.sh");
    assert!(script.contains("--origin EXTERNAL_KEY_STORE"), "{script}");
    assert!(files.join("kms-key.tf").exists());

    // The same roles hold for the CLI: a key creator cannot disable keys or see credentials.
    let listed = as_token(&dev, &["key", "list", "acme", "--output", "json"]);
    assert!(listed.status.success(), "{}", listed.stderr);
    let keys: Value = serde_json::from_str(&listed.stdout).expect("JSON list");
    let key_id = keys[0]["keyId"].as_str().expect("key id").to_owned();
    let refused = as_token(&dev, &["key", "disable", "acme", &key_id]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        refused.stderr.contains("(forbidden, HTTP 403)"),
        "{}",
        refused.stderr
    );
    let refused = as_token(&dev, &["credential", "list", "acme"]);
    assert!(refused.stderr.contains("forbidden"), "{}", refused.stderr);

    let wrong = as_token(
        "khat_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &["domain", "list"],
    );
    assert!(
        wrong.stderr.contains("(unauthenticated, HTTP 401)"),
        "{}",
        wrong.stderr
    );
    let no_token = data.run(&["--server", &url, "--ca-cert", ca, "domain", "list"]);
    assert!(
        no_token.stderr.contains("KEYHOLD_TOKEN"),
        "{}",
        no_token.stderr
    );
    let not_admin = as_token(&operator, &["audit", "verify"]);
    assert!(!not_admin.status.success());
    assert!(
        not_admin
            .stderr
            .contains("--server works with the admin commands"),
        "{}",
        not_admin.stderr
    );

    // The setup files of the key store, and every emitted file checked by the tools that read
    // them: cfn-lint for the template, python-hcl2 for Terraform, shlex and bash for commands.
    let setup = as_token(
        &operator,
        &[
            "key-store",
            "setup",
            "acme",
            "prod-eu",
            "--output-dir",
            files_arg,
        ],
    );
    assert!(setup.status.success(), "{}", setup.stderr);
    let credential = &credentials_of(&as_token(
        &operator,
        &["credential", "list", "acme", "--output", "json"],
    ))[0];
    let description = format!("orders db (self-service, custom key store {STORE_ID})");
    let sidecars = [
        (
            "create-key.sh",
            json!({"command": ["aws", "kms", "create-key"], "parameters": {
                "--origin": "EXTERNAL_KEY_STORE", "--custom-key-store-id": STORE_ID,
                "--xks-key-id": key_id, "--key-spec": "SYMMETRIC_DEFAULT",
                "--key-usage": "ENCRYPT_DECRYPT", "--region": "eu-west-1",
                "--description": description}}),
        ),
        (
            "kms-key.tf",
            json!({"resource_type": "aws_kms_key", "resource_name": format!("prod-eu_{key_id}"),
                "attributes": {"region": "eu-west-1", "custom_key_store_id": STORE_ID,
                "xks_key_id": key_id, "key_usage": "ENCRYPT_DECRYPT",
                "customer_master_key_spec": "SYMMETRIC_DEFAULT", "description": description}}),
        ),
        (
            "vpc-endpoint-service.cfn.yaml",
            json!({"regions": ["eu-west-1"],
                "allowed_principals": ["cks.kms.eu-west-1.amazonaws.com"],
                "parameter_defaults": {"TargetPort": 443, "PrivateDnsName": "xks.example.com"}}),
        ),
    ];
    let store_command = |connectivity: &str| {
        let mut parameters = json!({
            "--custom-key-store-name": "prod-eu", "--custom-key-store-type": "EXTERNAL_KEY_STORE",
            "--xks-proxy-uri-endpoint": "https://xks.example.com",
            "--xks-proxy-uri-path": "/domains/acme/kms/xks/v1",
            "--xks-proxy-authentication-credential": {
                "AccessKeyId": credential,
                "RawSecretAccessKey": keyhold::kms_setup::SECRET_PLACEHOLDER},
            "--xks-proxy-connectivity": connectivity, "--region": "eu-west-1"});
        if connectivity == "VPC_ENDPOINT_SERVICE" {
            parameters["--xks-proxy-vpc-endpoint-service-name"] =
                json!(keyhold::kms_setup::ENDPOINT_SERVICE_NAME_PLACEHOLDER);
        }
        json!({"command": ["aws", "kms", "create-custom-key-store"], "parameters": parameters})
    };
    let mut sidecars = sidecars.to_vec();
    sidecars.push((
        "create-custom-key-store-public.sh",
        store_command("PUBLIC_ENDPOINT"),
    ));
    sidecars.push((
        "create-custom-key-store-vpc.sh",
        store_command("VPC_ENDPOINT_SERVICE"),
    ));
    for (name, expected) in &sidecars {
        std::fs::write(
            files.join(format!("{name}.expected.json")),
            expected.to_string(),
        )
        .expect("write sidecar");
    }
    let checked = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/check_templates.py"
        ))
        .arg(&files)
        .output()
        .expect("run the template checker");
    let report = String::from_utf8_lossy(&checked.stdout);
    eprintln!("{report}");
    assert!(
        checked.status.success(),
        "emitted files failed their checks:\n{report}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(report.contains("5 passed, 0 failed"), "{report}");

    // Changes made through the server are in the data directory the local CLI reads.
    let local = data.run_ok(&["key", "show", "acme", &key_id, "--output", "json"]);
    let key: Value = serde_json::from_str(&local).expect("JSON");
    assert_eq!(key["name"], "orders db");
}

#[test]
fn token_never_outlives_its_creator() {
    let data = DataDir::init();
    let server = Server::start(&data);
    let operator = data.operator_token();
    principal_with_token(&server, &operator, "bot", &json!({"role": "operator"}));
    let (status, short) = server.admin(
        "POST",
        "/v1/principals/bot/tokens",
        &operator,
        Some(&json!({"expiresInDays": 1})),
    );
    assert_eq!(status, 201, "{short}");
    let short_token = short["token"].as_str().expect("token");
    let short_expiry = short["expiresAt"].as_str().expect("expiry").to_owned();

    for body in [json!({}), json!({"expiresInDays": 30})] {
        let (status, minted) = server.admin(
            "POST",
            "/v1/principals/bot/tokens",
            short_token,
            Some(&body),
        );
        assert_eq!(status, 201, "{minted}");
        assert_eq!(
            minted["expiresAt"].as_str(),
            Some(short_expiry.as_str()),
            "a token made with a one-day token expires with it: {minted}"
        );
    }
}

#[test]
fn audit_names_what_was_created() {
    let data = DataDir::init();
    let server = Server::start(&data);
    let operator = data.operator_token();
    server.admin(
        "POST",
        "/v1/domains",
        &operator,
        Some(&json!({"id": "acme"})),
    );
    principal_with_token(
        &server,
        &operator,
        "dev",
        &json!({"role": "key-creator", "domain": "acme"}),
    );
    let (_, credential) = server.admin("POST", "/v1/domains/acme/credentials", &operator, None);
    let access_key_id = credential["credential"]["accessKeyId"]
        .as_str()
        .expect("access key id")
        .to_owned();

    let expected = [
        ("domain create", "acme".to_owned()),
        ("principal create", "dev (key-creator:acme)".to_owned()),
        ("credential create", format!("acme/{access_key_id}")),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, answer) = server.admin("GET", "/v1/audit?limit=1000", &operator, None);
        assert_eq!(status, 200, "{answer}");
        let records = answer["records"].as_array().expect("records").clone();
        let found = |action: &str, target: &str| {
            records
                .iter()
                .any(|record| record["operation"] == action && record["target"] == target)
        };
        let token_recorded = records.iter().any(|record| {
            record["operation"] == "token create"
                && record["target"]
                    .as_str()
                    .is_some_and(|target| target.starts_with("dev/"))
        });
        if expected
            .iter()
            .all(|(action, target)| found(action, target))
            && token_recorded
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit records lack the created objects: {records:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn unauthenticated_calls_learn_nothing_from_bodies() {
    let data = DataDir::init();
    let server = Server::start(&data);
    let plain = server.admin_curl(&[
        "-H".to_owned(),
        "Content-Type: text/plain".to_owned(),
        "--data-binary".to_owned(),
        "x".repeat(70_000),
        server.admin_url("/v1/domains"),
    ]);
    assert_eq!(plain.status, 401, "{}", plain.body);

    let head = server.admin_curl(&[
        "-I".to_owned(),
        "-H".to_owned(),
        format!("Authorization: Bearer {}", data.operator_token()),
        server.admin_url("/v1/whoami"),
    ]);
    assert_eq!(head.status, 200, "HEAD works where GET does: {}", head.body);
}
