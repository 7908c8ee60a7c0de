//! Crash safety: `keyhold` is killed with SIGKILL at random moments while it creates keys and
//! credentials, rotates keys and runs scheduled deletions. After every kill the database must
//! pass SQLite's integrity check, hold every change that was acknowledged, show no half-made
//! object, and every ciphertext made before must still decrypt.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{DataDir, KEYHOLD, Server, decrypt_request, encrypt_request};
use serde_json::Value;

const ROUNDS: usize = 200;

/// Reads the state that the checks need with Python's sqlite3, which shares no code with
/// Keyhold's SQLite build.
const INSPECT: &str = r#"
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
keys = {k: {"status": s, "primary": p} for k, s, p in
        c.execute("SELECT key_id, status, primary_version FROM keys")}
for k, v, state, wrapped, label in c.execute(
        "SELECT key_id, version, state, wrapped_material IS NOT NULL, hsm_label IS NOT NULL "
        "FROM key_versions"):
    keys.setdefault(k, {"status": None, "primary": None}).setdefault("versions", {})[str(v)] = [state, bool(wrapped or label)]
print(json.dumps({
    "integrity": c.execute("PRAGMA integrity_check").fetchone()[0],
    "keys": keys,
    "credentials": [r[0] for r in c.execute("SELECT access_key_id FROM credentials")],
}))
"#;

struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (self.0 >> 33) % bound
    }
}

fn inspect(data: &DataDir) -> Value {
    let output = Command::new("python3")
        .arg("-c")
        .arg(INSPECT)
        .arg(data.path().join("keyhold.db"))
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("inspection JSON")
}

/// Runs a CLI command and kills it after `delay`; returns whether it finished successfully
/// before the kill, which means the change was acknowledged.
fn run_and_kill(data: &DataDir, args: &[&str], delay: Duration) -> bool {
    let mut child = Command::new(KEYHOLD)
        .arg("--data-dir")
        .arg(data.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn keyhold");
    std::thread::sleep(delay);
    let finished = child.try_wait().expect("poll keyhold");
    if finished.is_none() {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for keyhold");
    finished.is_some() && status.success()
}

/// Checks the invariants after a kill.
fn check(data: &DataDir, round: usize, created: &[String], rotations: &BTreeMap<String, u64>) {
    let state = inspect(data);
    assert_eq!(state["integrity"], "ok", "round {round}: integrity check");
    let keys = state["keys"].as_object().expect("keys");
    for (key_id, key) in keys {
        assert!(
            !key["status"].is_null(),
            "round {round}: versions of missing key {key_id}"
        );
        let versions = key["versions"].as_object();
        let versions =
            versions.unwrap_or_else(|| panic!("round {round}: key {key_id} has no version"));
        let primary = key["primary"].as_u64().expect("primary").to_string();
        assert!(
            versions.contains_key(&primary),
            "round {round}: {key_id} lacks its primary version"
        );
        let destroyed = key["status"] == "DESTROYED";
        for (version, entry) in versions {
            let has_material = entry[1].as_bool().expect("material flag");
            assert_eq!(
                has_material, !destroyed,
                "round {round}: {key_id} v{version}: material present {has_material} in a {} key",
                key["status"]
            );
        }
    }
    for key_id in created {
        assert!(
            keys.contains_key(key_id),
            "round {round}: acknowledged key {key_id} lost"
        );
    }
    for (key_id, count) in rotations {
        let versions = keys[key_id]["versions"]
            .as_object()
            .map_or(0, |v| v.len() as u64);
        assert!(
            versions > *count,
            "round {round}: acknowledged rotations of {key_id} lost"
        );
    }
}

#[test]
fn acknowledged_changes_survive_sigkill() {
    let data = DataDir::init();
    data.create_domain("acme", &[]);
    let credential = data.create_credential("acme");
    data.create_key("acme", "base", &[]);
    data.create_key("acme", "doomed", &[]);

    let server = Server::start(&data);
    let path = credential.path("/keys/base/encrypt");
    let ciphertext = server.post(
        &credential,
        &path,
        &encrypt_request(b"before the kills", None),
    );
    assert_eq!(ciphertext.status, 200, "{}", ciphertext.body);
    drop(server);

    let mut random = Random(0x5eed);
    let mut created = Vec::new();
    let mut rotations: BTreeMap<String, u64> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for round in 0..ROUNDS {
        let delay = Duration::from_millis(random.below(40));
        let operation = match random.below(4) {
            0 => {
                let key_id = format!("k{round}");
                if run_and_kill(
                    &data,
                    &["key", "create", "acme", "--key-id", &key_id],
                    delay,
                ) {
                    created.push(key_id);
                }
                "key create"
            }
            1 => {
                if run_and_kill(&data, &["key", "rotate", "acme", "base"], delay) {
                    *rotations.entry("base".to_owned()).or_default() += 1;
                }
                "key rotate"
            }
            2 => {
                // A credential that is created is revoked again, so the domain keeps room.
                if run_and_kill(&data, &["credential", "create", "acme"], delay) {
                    let state = inspect(&data);
                    let ids = state["credentials"]
                        .as_array()
                        .expect("credentials")
                        .clone();
                    for id in ids.iter().filter_map(Value::as_str) {
                        if id != credential.access_key_id {
                            let _ = data.run(&["credential", "revoke", "acme", id]);
                        }
                    }
                }
                "credential create"
            }
            _ => {
                let key_id = format!("d{round}");
                data.create_key("acme", &key_id, &[]);
                data.run_ok(&["key", "schedule-deletion", "acme", &key_id, "--days", "7"]);
                data.run_sql(&format!(
                    "UPDATE keys SET deletion_at = 0 WHERE key_id = '{key_id}'"
                ));
                // The server runs the deletion at start; kill it while it may be erasing.
                let mut child = Command::new(KEYHOLD)
                    .arg("--data-dir")
                    .arg(data.path())
                    .args([
                        "serve",
                        "--listen",
                        "127.0.0.1:0",
                        "--admin-listen",
                        "127.0.0.1:0",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn keyhold serve");
                std::thread::sleep(Duration::from_millis(5 + random.below(60)));
                let _ = child.kill();
                let _ = child.wait();
                "scheduled deletion"
            }
        };
        *counts.entry(operation).or_insert(0) += 1;
        check(&data, round, &created, &rotations);
    }

    let server = Server::start(&data);
    let decrypted = server.post(
        &credential,
        &credential.path("/keys/base/decrypt"),
        &decrypt_request(&ciphertext.json(), None),
    );
    assert_eq!(
        decrypted.status, 200,
        "old ciphertext after the kills: {}",
        decrypted.body
    );
    eprintln!(
        "ran {ROUNDS} SIGKILL rounds ({counts:?}); after each: integrity check, {} acknowledged keys, {} acknowledged rotations, no key without versions, no half-destroyed key; the ciphertext from before still decrypts",
        created.len(),
        rotations.values().sum::<u64>()
    );
    // Let the scheduler settle, then check once more with the server running.
    std::thread::sleep(Duration::from_millis(300));
    check(&data, ROUNDS, &created, &rotations);
}
