//! Two Keyhold nodes sharing one PostgreSQL database: the CLI on either node's data directory
//! changes what both servers serve, ciphertexts from one node decrypt on the other, and the
//! store's rules hold through the CLI.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use common::postgres_server::{OWNER, PASSWORD, Postgres};
use common::{
    Credential, DataDir, HttpResponse, Server, decrypt_request, encrypt_request, unb64, wait_for,
};
use serde_json::Value;

/// How long a change may take to reach a server: the servers poll the store's revision every
/// 200 ms, so one second leaves room for a slow test machine.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(1);

#[test]
fn two_nodes_share_one_postgres_database() {
    let postgres = Postgres::start_with_tls();
    let database = postgres.create_database();
    let first = node(&postgres, &database, "node-1", None);
    let second = node(&postgres, &database, "node-2", Some(&first));

    first.create_domain("acme", &[]);
    let credential = first.create_credential("acme");
    first.create_key("acme", "k1", &[]);
    let listed: Value =
        serde_json::from_str(&second.run_ok(&["key", "list", "acme", "--output", "json"]))
            .expect("key list JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    let server_one = Server::start(&first);
    let server_two = Server::start(&second);

    // The admin API works on the shared database: a token made with one node's CLI is
    // accepted by the other node's admin listener, and a change made there reaches both.
    first.run_ok(&["principal", "create", "ops", "--role", "operator"]);
    let token = first.run_ok(&["token", "create", "ops"]).trim().to_owned();
    let (status, keys) = server_two.admin("GET", "/v1/domains/acme/keys", &token, None);
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["keys"][0]["keyId"], "k1", "{keys}");
    let (status, created) = server_two.admin(
        "POST",
        "/v1/domains/acme/keys",
        &token,
        Some(&serde_json::json!({"keyId": "made-by-api"})),
    );
    assert_eq!(status, 201, "{created}");
    let listed = first.run_ok(&["key", "show", "acme", "made-by-api", "--output", "json"]);
    assert!(listed.contains("made-by-api"), "{listed}");

    // A ciphertext made on one node decrypts on the other.
    let ciphertext = encrypted(&server_one, &credential, "k1");
    let response = decrypt(&server_two, &credential, "k1", &ciphertext);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        unb64(&response.field("plaintext"), "plaintext"),
        b"data key"
    );

    // The kill switch set through one node's CLI reaches both servers.
    second.run_ok(&["domain", "disable", "acme"]);
    for (name, server) in [("node 1", &server_one), ("node 2", &server_two)] {
        let reached = wait_for(PROPAGATION_LIMIT, || {
            (encrypt(server, &credential, "k1").status == 400).then_some(())
        });
        let ((), delay) = reached.unwrap_or_else(|| panic!("kill switch did not reach {name}"));
        eprintln!("kill switch reached {name} after {delay:?}");
    }
    first.run_ok(&["domain", "enable", "acme"]);
    for (name, server) in [("node 1", &server_one), ("node 2", &server_two)] {
        let reached = wait_for(PROPAGATION_LIMIT, || {
            (decrypt(server, &credential, "k1", &ciphertext).status == 200).then_some(())
        });
        assert!(reached.is_some(), "domain enable did not reach {name}");
    }

    // Rotation on one node changes the primary version on both.
    let rotated = first.run_ok(&["key", "rotate", "acme", "k1"]);
    assert!(rotated.contains("version 2 is now primary"), "{rotated}");
    for (name, server) in [("node 1", &server_one), ("node 2", &server_two)] {
        let reached = wait_for(PROPAGATION_LIMIT, || {
            (metadata_version(&encrypted(server, &credential, "k1")) == 2).then_some(())
        });
        assert!(reached.is_some(), "rotation did not reach {name}");
    }
    let old = decrypt(&server_two, &credential, "k1", &ciphertext);
    assert_eq!(old.status, 200, "version 1 ciphertext: {}", old.body);

    // A disabled key stops encrypting on both nodes.
    second.run_ok(&["key", "disable", "acme", "k1"]);
    for (name, server) in [("node 1", &server_one), ("node 2", &server_two)] {
        let reached = wait_for(PROPAGATION_LIMIT, || {
            (encrypt(server, &credential, "k1").status == 400).then_some(())
        });
        assert!(reached.is_some(), "key disable did not reach {name}");
    }
    first.run_ok(&["key", "enable", "acme", "k1"]);

    // The limit of two active credentials applies across nodes, and revocation frees a place.
    let second_credential = second.create_credential("acme");
    let third = first.run(&["credential", "create", "acme"]);
    assert!(
        !third.status.success(),
        "a third active credential was accepted"
    );
    assert!(
        third.stderr.contains("active credentials"),
        "{}",
        third.stderr
    );
    second.run_ok(&[
        "credential",
        "revoke",
        "acme",
        &second_credential.access_key_id,
    ]);
    let replacement = first.create_credential("acme");
    assert_ne!(replacement.access_key_id, second_credential.access_key_id);

    // Scheduled deletion and its cancellation, made on different nodes.
    first.run_ok(&["key", "schedule-deletion", "acme", "k1", "--days", "7"]);
    assert_eq!(key_status(&second, "k1"), "PENDING_DELETION");
    let canceled = second.run_ok(&["key", "cancel-deletion", "acme", "k1"]);
    assert!(canceled.contains("ENABLED"), "{canceled}");
    assert_eq!(key_status(&first, "k1"), "ENABLED");

    let mut superuser = postgres.superuser();
    let sessions = superuser
        .query_one(
            "SELECT count(*) FILTER (WHERE ssl), count(*) FILTER (WHERE NOT ssl)
             FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE usename = $1",
            &[&OWNER],
        )
        .expect("query TLS sessions");
    let (encrypted, plain): (i64, i64) = (sessions.get(0), sessions.get(1));
    assert!(encrypted >= 2, "{encrypted} TLS sessions for two servers");
    assert_eq!(plain, 0, "a node connected without TLS");

    for (name, server) in [("node 1", &server_one), ("node 2", &server_two)] {
        assert!(
            !server.log().contains(PASSWORD),
            "{name} logged the database password"
        );
    }
}

#[test]
fn backup_moves_between_sqlite_and_postgres() {
    let postgres = Postgres::start();
    let sqlite = DataDir::init();
    sqlite.create_domain("acme", &[]);
    let credential = sqlite.create_credential("acme");
    sqlite.create_key("acme", "k1", &[]);
    sqlite.run_ok(&["key", "rotate", "acme", "k1"]);
    let ciphertext = {
        let server = Server::start(&sqlite);
        encrypted(&server, &credential, "k1")
    };
    let key_file = sqlite.scratch().join("backup.key");
    std::fs::write(&key_file, [0x5a; 32]).expect("write backup key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod backup key");

    // SQLite to PostgreSQL: the restored node decrypts what the SQLite node encrypted.
    let to_postgres = node(&postgres, &postgres.create_database(), "node-1", None);
    restore(&sqlite, &to_postgres, &key_file);
    assert_eq!(listing(&to_postgres), listing(&sqlite));
    let server = Server::start(&to_postgres);
    let response = decrypt(&server, &credential, "k1", &ciphertext);
    assert_eq!(response.status, 200, "{}", response.body);
    drop(server);

    // PostgreSQL back to a new SQLite data directory.
    let back = DataDir::init();
    restore(&to_postgres, &back, &key_file);
    assert_eq!(listing(&back), listing(&sqlite));
}

#[test]
fn node_serves_from_cache_while_database_is_down() {
    let postgres = Postgres::start();
    let data = node(&postgres, &postgres.create_database(), "node-1", None);
    data.create_domain("acme", &[]);
    let credential = data.create_credential("acme");
    data.create_key("acme", "k1", &[]);
    let server = Server::start(&data);
    let ciphertext = encrypted(&server, &credential, "k1");
    assert_eq!(health(&server)["storage"], "current");

    // Without the database the node keeps serving from its snapshot and reports DEGRADED.
    postgres.stop();
    let degraded = wait_for(Duration::from_secs(10), || {
        (health(&server)["status"] == "DEGRADED").then_some(())
    });
    assert!(degraded.is_some(), "health: {}", health(&server));
    assert_eq!(
        health(&server)["storage"],
        "unreadable; serving the last snapshot"
    );
    let response = decrypt(&server, &credential, "k1", &ciphertext);
    assert_eq!(
        response.status, 200,
        "decrypt from cache: {}",
        response.body
    );
    let change = data.run(&["domain", "disable", "acme"]);
    assert!(
        !change.status.success(),
        "a change succeeded without the database"
    );
    assert!(change.stderr.contains("PostgreSQL"), "{}", change.stderr);

    // After the database returns, the node reconnects and applies changes again.
    postgres.restart();
    let current = wait_for(Duration::from_secs(15), || {
        (health(&server)["storage"] == "current").then_some(())
    });
    assert!(current.is_some(), "health: {}", health(&server));
    data.run_ok(&["domain", "disable", "acme"]);
    let reached = wait_for(PROPAGATION_LIMIT, || {
        (encrypt(&server, &credential, "k1").status == 400).then_some(())
    });
    assert!(reached.is_some(), "kill switch after reconnecting");
    // The refresh thread and the audit writer each have a connection, and each warns once.
    let log = server.log();
    let warnings = log.matches("PostgreSQL connection lost").count();
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings for one outage:\n{log}"
    );
}

/// Returns the node's `/health` body.
fn health(server: &Server) -> Value {
    server.get("/health").json()
}

/// Backs up every domain of `source` and restores it into `target`.
fn restore(source: &DataDir, target: &DataDir, key_file: &Path) {
    let backup = target.scratch().join("restore.backup");
    let key_file = key_file.to_str().expect("UTF-8 path");
    let backup_arg = backup.to_str().expect("UTF-8 path");
    source.run_ok(&[
        "backup",
        "create",
        "--output",
        backup_arg,
        "--key-file",
        key_file,
    ]);
    let restored = target.run_ok(&["backup", "restore", backup_arg, "--key-file", key_file]);
    assert!(restored.starts_with("Restored"), "{restored}");
}

/// Returns the JSON listings of domain `acme`'s keys and credentials and of `k1`'s versions.
fn listing(data: &DataDir) -> Vec<Value> {
    [
        &["key", "list", "acme", "--output", "json"][..],
        &["key", "version", "list", "acme", "k1", "--output", "json"][..],
        &["credential", "list", "acme", "--output", "json"][..],
    ]
    .iter()
    .map(|args| serde_json::from_str(&data.run_ok(args)).expect("listing JSON"))
    .collect()
}

/// Creates a data directory whose `[storage]` names the shared database, over TLS when the
/// cluster has a CA file. A second node takes the first node's root key, as all nodes of a
/// cluster must.
fn node(postgres: &Postgres, database: &str, id: &str, first: Option<&DataDir>) -> DataDir {
    let data = DataDir::init();
    if let Some(first) = first {
        std::fs::copy(first.path().join("root.key"), data.path().join("root.key"))
            .expect("copy the root key");
    }
    let mut storage = format!(
        "backend = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"",
        postgres.url(OWNER, database),
        postgres.password_file().display()
    );
    // A cluster started with TLS gets TLS connections.
    if postgres.ca_file().exists() {
        storage.push_str(&format!("\nca_file = \"{}\"", postgres.ca_file().display()));
    }
    data.configure(&[
        ("backend = \"sqlite\"\npath = \"keyhold.db\"", &storage),
        ("# node_id = \"keyhold-1\"", &format!("node_id = \"{id}\"")),
    ]);
    data
}

fn key_status(data: &DataDir, key_id: &str) -> String {
    let key_json: Value =
        serde_json::from_str(&data.run_ok(&["key", "show", "acme", key_id, "--output", "json"]))
            .expect("key show JSON");
    key_json["status"].as_str().unwrap_or_default().to_owned()
}

fn encrypt(server: &Server, credential: &Credential, key_id: &str) -> HttpResponse {
    let path = credential.path(&format!("/keys/{key_id}/encrypt"));
    server.post(credential, &path, &encrypt_request(b"data key", None))
}

fn decrypt(
    server: &Server,
    credential: &Credential,
    key_id: &str,
    encrypted: &Value,
) -> HttpResponse {
    let path = credential.path(&format!("/keys/{key_id}/decrypt"));
    server.post(credential, &path, &decrypt_request(encrypted, None))
}

fn encrypted(server: &Server, credential: &Credential, key_id: &str) -> Value {
    let response = encrypt(server, credential, key_id);
    assert_eq!(response.status, 200, "encrypt {key_id}: {}", response.body);
    response.json()
}

/// The key version named in an encrypt response's `ciphertextMetadata`: a format byte, then
/// the version as a big-endian 32-bit integer.
fn metadata_version(encrypted: &Value) -> u32 {
    let metadata = unb64(
        encrypted["ciphertextMetadata"]
            .as_str()
            .expect("ciphertextMetadata"),
        "ciphertextMetadata",
    );
    assert_eq!(metadata.len(), 5, "metadata: {metadata:?}");
    u32::from_be_bytes([metadata[1], metadata[2], metadata[3], metadata[4]])
}
