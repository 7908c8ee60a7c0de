//! Keyhold nodes sharing one PostgreSQL database. The CLI on any node's data directory changes
//! what every server serves, ciphertexts from one node decrypt on another, and the store's
//! rules hold through the CLI. Health responses list the live nodes, and clients that retry on
//! another node ride out the loss of one.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::postgres_server::{OWNER, PASSWORD, Postgres};
use common::{
    Credential, DataDir, Server, decrypt_with_key as decrypt, encrypt_request,
    encrypt_with_key as encrypt, encrypted_with_key as encrypted, health_request, metadata_version,
    sigv4_args, unb64, wait_for,
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
    let mut server_two = Server::start(&second);

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

    // A node stops cleanly on SIGTERM after its admin API used the database: the PostgreSQL
    // client must not be dropped on a thread that runs tokio, where it panics.
    let status = server_two.terminate();
    let log = server_two.log();
    assert!(
        !log.contains("panicked"),
        "node 2 panicked on shutdown:\n{log}"
    );
    assert!(status.success(), "node 2 exited with {status}:\n{log}");
}

/// How long a killed node may stay in the others' fleet lists: its last heartbeat must age past
/// the server's five-second liveness limit, and the others refresh their lists once a second.
const FLEET_LEAVE_LIMIT: Duration = Duration::from_secs(10);

#[test]
fn three_nodes_enforce_changes_within_a_second() {
    let postgres = Postgres::start();
    let data = three_nodes(&postgres);
    let first = &data[0];
    first.create_domain("acme", &[]);
    let credential = first.create_credential("acme");
    first.create_key("acme", "k1", &[]);
    let servers: Vec<Server> = data.iter().map(Server::start).collect();
    for server in &servers {
        encrypted(server, &credential, "k1");
    }

    // Each delay runs from the moment the CLI command returned to the first response that
    // shows the change on a node.
    first.run_ok(&["key", "disable", "acme", "k1"]);
    let key_disable = worst_delay(&servers, |server| {
        encrypt(server, &credential, "k1").status == 400
    });
    first.run_ok(&["key", "enable", "acme", "k1"]);
    worst_delay(&servers, |server| {
        encrypt(server, &credential, "k1").status == 200
    });

    first.run_ok(&["domain", "disable", "acme"]);
    let kill_switch = worst_delay(&servers, |server| {
        encrypt(server, &credential, "k1").status == 400
    });
    first.run_ok(&["domain", "enable", "acme"]);
    worst_delay(&servers, |server| {
        encrypt(server, &credential, "k1").status == 200
    });

    first.run_ok(&["credential", "revoke", "acme", &credential.access_key_id]);
    let revocation = worst_delay(&servers, |server| {
        encrypt(server, &credential, "k1").status == 401
    });

    eprintln!(
        "worst delay over 3 nodes: key disable {key_disable:?}, domain kill switch \
         {kill_switch:?}, credential revocation {revocation:?}"
    );
    for (change, delay) in [
        ("key disable", key_disable),
        ("domain kill switch", kill_switch),
        ("credential revocation", revocation),
    ] {
        assert!(
            delay <= PROPAGATION_LIMIT,
            "{change} took {delay:?} to reach every node"
        );
    }
}

#[test]
fn health_lists_live_fleet() {
    let postgres = Postgres::start();
    let data = three_nodes(&postgres);
    data[0].create_domain("acme", &[]);
    let credential = data[0].create_credential("acme");
    let mut servers: Vec<Server> = data.iter().map(Server::start).collect();
    let ids = ["node-1", "node-2", "node-3"];

    for (index, server) in servers.iter().enumerate() {
        let listed = wait_for(FLEET_LEAVE_LIMIT, || {
            let health = fleet_health(server, &credential);
            (sorted_ids(&health) == ids).then_some(health)
        });
        let (health, delay) = listed.unwrap_or_else(|| {
            panic!(
                "node {} does not list three nodes: {}",
                index + 1,
                fleet_health(server, &credential)
            )
        });
        eprintln!("node {} listed three nodes after {delay:?}", index + 1);
        assert_eq!(health["xksProxyFleetSize"], 3, "{health}");
        assert_eq!(health["ekmFleetDetails"][0]["id"], ids[index], "{health}");
        for member in health["ekmFleetDetails"].as_array().into_iter().flatten() {
            assert_eq!(member["healthStatus"], "ACTIVE", "{health}");
            assert!(
                member["model"]
                    .as_str()
                    .is_some_and(|model| model.contains("Keyhold")),
                "{health}"
            );
        }
    }

    let killed_at = Instant::now();
    kill(&servers.remove(2));
    for (index, server) in servers.iter().enumerate() {
        let left = wait_for(FLEET_LEAVE_LIMIT, || {
            let health = fleet_health(server, &credential);
            (sorted_ids(&health) == ids[..2]).then_some(health)
        });
        let (health, _) = left.unwrap_or_else(|| {
            panic!(
                "node {} still lists the killed node: {}",
                index + 1,
                fleet_health(server, &credential)
            )
        });
        eprintln!(
            "node {} listed two nodes {:?} after the SIGKILL",
            index + 1,
            killed_at.elapsed()
        );
        assert_eq!(health["xksProxyFleetSize"], 2, "{health}");
    }

    // Without the database a node keeps its last fleet list and reports itself DEGRADED.
    postgres.stop();
    let degraded = wait_for(FLEET_LEAVE_LIMIT, || {
        let health = fleet_health(&servers[0], &credential);
        (health["ekmFleetDetails"][0]["healthStatus"] == "DEGRADED").then_some(health)
    });
    let (health, _) = degraded.unwrap_or_else(|| {
        panic!(
            "node 1 is not DEGRADED without the database: {}",
            fleet_health(&servers[0], &credential)
        )
    });
    assert_eq!(sorted_ids(&health), ids[..2], "{health}");
    assert_eq!(health["xksProxyFleetSize"], 2, "{health}");
    assert_eq!(health["ekmFleetDetails"][1]["id"], "node-2", "{health}");
}

#[test]
fn clients_ride_out_node_loss() {
    const CLIENTS: usize = 3;
    const REQUESTS_PER_CLIENT: usize = 60;
    const LOAD_LIMIT: Duration = Duration::from_secs(60);
    // The node dies once this many requests were sent, well before the load ends.
    const KILL_AFTER: usize = 40;

    let postgres = Postgres::start();
    let data = three_nodes(&postgres);
    data[0].create_domain("acme", &[]);
    let credential = data[0].create_credential("acme");
    data[0].create_key("acme", "k1", &[]);
    let servers: Vec<Server> = data.iter().map(Server::start).collect();

    let sent = AtomicUsize::new(0);
    let retried = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let killed = AtomicBool::new(false);
    let started = Instant::now();
    let body = encrypt_request(b"data key", None).to_string();
    let path = credential.path("/keys/k1/encrypt");
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (servers, sent, retried, failed) = (&servers, &sent, &retried, &failed);
            let (body, path, credential) = (&body, &path, &credential);
            scope.spawn(move || {
                for request in 0..REQUESTS_PER_CLIENT {
                    if started.elapsed() > LOAD_LIMIT {
                        break;
                    }
                    let target = (client + request) % servers.len();
                    sent.fetch_add(1, Ordering::Relaxed);
                    if post_succeeds(&servers[target], credential, path, body) {
                        continue;
                    }
                    retried.fetch_add(1, Ordering::Relaxed);
                    let other = (target + 1) % servers.len();
                    if !post_succeeds(&servers[other], credential, path, body) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let killed = &killed;
        let (servers, sent) = (&servers, &sent);
        scope.spawn(move || {
            while sent.load(Ordering::Relaxed) < KILL_AFTER && started.elapsed() < LOAD_LIMIT {
                std::thread::sleep(Duration::from_millis(10));
            }
            kill(&servers[2]);
            killed.store(true, Ordering::Relaxed);
        });
    });
    let (sent, retried, failed) = (sent.into_inner(), retried.into_inner(), failed.into_inner());
    eprintln!(
        "{CLIENTS} clients, node 3 killed after {KILL_AFTER} requests: {sent} requests sent, \
         {retried} retried on another node, {failed} failed, in {:?}",
        started.elapsed()
    );
    assert!(killed.into_inner(), "node 3 was not killed");
    assert_eq!(
        sent,
        CLIENTS * REQUESTS_PER_CLIENT,
        "the load hit its time limit"
    );
    assert!(retried > 0, "no request reached the killed node");
    assert_eq!(failed, 0, "{failed} requests failed on two nodes");

    // Once the killed node has left the fleet list, a restart brings it back into the others'
    // lists, and it lists them.
    let ids = ["node-1", "node-2", "node-3"];
    let left = wait_for(FLEET_LEAVE_LIMIT, || {
        (sorted_ids(&fleet_health(&servers[0], &credential)) == ids[..2]).then_some(())
    });
    assert!(
        left.is_some(),
        "node 1 still lists the killed node: {}",
        fleet_health(&servers[0], &credential)
    );
    let restarted = Server::start(&data[2]);
    for (name, server) in [("node 1", &servers[0]), ("node 3", &restarted)] {
        let joined = wait_for(FLEET_LEAVE_LIMIT, || {
            (sorted_ids(&fleet_health(server, &credential)) == ids).then_some(())
        });
        let ((), delay) = joined.unwrap_or_else(|| {
            panic!(
                "{name} does not list the restarted node: {}",
                fleet_health(server, &credential)
            )
        });
        eprintln!("{name} listed the restarted node after {delay:?}");
    }
}

#[test]
fn postgres_schema_migrates_from_version_2() {
    let postgres = Postgres::start();
    let database = postgres.create_database();
    let data = node(&postgres, &database, "node-1", None);
    data.create_domain("acme", &[]);
    let mut config: postgres::Config = postgres.url(OWNER, &database).parse().expect("url");
    config.password(PASSWORD);
    let mut owner = config.connect(postgres::NoTls).expect("connect as owner");
    owner
        .batch_execute("DROP TABLE nodes; UPDATE meta SET schema_version = 2")
        .expect("turn the schema back into version 2");

    // Any command that opens the store migrates it.
    data.run_ok(&["key", "list", "acme"]);
    let version: i64 = owner
        .query_one("SELECT schema_version FROM meta", &[])
        .expect("schema version")
        .get(0);
    assert_eq!(version, 3);
    let has_nodes: bool = owner
        .query_one("SELECT to_regclass('nodes') IS NOT NULL", &[])
        .expect("look up the nodes table")
        .get(0);
    assert!(has_nodes, "the migration did not create the nodes table");
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

/// Creates three nodes on one new database, sharing the first node's root key.
fn three_nodes(postgres: &Postgres) -> Vec<DataDir> {
    let database = postgres.create_database();
    let first = node(postgres, &database, "node-1", None);
    let second = node(postgres, &database, "node-2", Some(&first));
    let third = node(postgres, &database, "node-3", Some(&first));
    vec![first, second, third]
}

/// Polls every server at once until `enforced` holds on each, and returns the longest time a
/// server took. Waits up to three times [`PROPAGATION_LIMIT`] before it panics, so a slow
/// change still gets its delay printed before the caller checks the limit.
fn worst_delay(servers: &[Server], enforced: impl Fn(&Server) -> bool + Sync) -> Duration {
    let changed_at = Instant::now();
    let enforced = &enforced;
    std::thread::scope(|scope| {
        let pollers: Vec<_> = servers
            .iter()
            .map(|server| {
                scope.spawn(move || {
                    while !enforced(server) {
                        assert!(
                            changed_at.elapsed() < 3 * PROPAGATION_LIMIT,
                            "change not enforced by the server on port {}",
                            server.port()
                        );
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    changed_at.elapsed()
                })
            })
            .collect();
        pollers
            .into_iter()
            .map(|poller| poller.join().expect("poller thread"))
            .max()
            .unwrap_or_default()
    })
}

/// Sends a GetHealthStatus request for the credential's domain and returns the response body.
fn fleet_health(server: &Server, credential: &Credential) -> Value {
    let response = server.post(credential, &credential.path("/health"), &health_request());
    assert_eq!(response.status, 200, "health: {}", response.body);
    response.json()
}

/// Returns the `ekmFleetDetails` ids of a health response, sorted.
fn sorted_ids(health: &Value) -> Vec<String> {
    let mut ids: Vec<String> = health["ekmFleetDetails"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|member| member["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

/// Sends one signed POST and returns whether it got a 200. A refused or reset connection
/// counts as a failure instead of panicking.
fn post_succeeds(server: &Server, credential: &Credential, path: &str, body: &str) -> bool {
    let mut args = sigv4_args(credential);
    args.push(server.url(path));
    let output = server.curl(&args, Some(body.as_bytes()));
    output.exit.success() && output.status == 200
}

/// Kills the server process with SIGKILL, so it cannot deregister or finish requests.
fn kill(server: &Server) {
    let status = Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {} failed", server.pid());
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
