//! The store's behaviour, checked the same way on SQLite and on a real PostgreSQL server that
//! the test starts, plus races between PostgreSQL connections that stand for several nodes.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::postgres_server::{OWNER, Postgres};
use keyhold::keystore::model::{
    CredentialInfo, Domain, DomainStatus, KeyInfo, KeyStatus, KeyUsage, Protection, StoredMaterial,
    StoredVersion, VersionState,
};
use keyhold::keystore::store::backup::RestoreSet;
use keyhold::keystore::store::{
    KeyStoreRow, PostgresTarget, PrincipalRow, RoleRow, Store, StoreError, TokenRow,
};

const NOW: i64 = 1_700_000_000;

#[test]
fn sqlite_store_behaviour() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut store = Store::open(&dir.path().join("keyhold.db")).expect("open store");
    check_behaviour(&mut store);

    let mut copy = Store::open(&dir.path().join("copy.db")).expect("open copy");
    check_backup_round_trip(&mut store, &mut copy);
}

#[test]
fn postgres_store_behaviour() {
    let server = Postgres::start();
    let target = new_target(&server);
    let mut store = Store::connect_postgres(&target).expect("connect to PostgreSQL");
    check_behaviour(&mut store);

    // Round trips between the backends: PostgreSQL to SQLite and back to a new database.
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut sqlite = Store::open(&dir.path().join("copy.db")).expect("open SQLite copy");
    check_backup_round_trip(&mut store, &mut sqlite);
    let mut second = Store::connect_postgres(&new_target(&server)).expect("second database");
    check_backup_round_trip(&mut sqlite, &mut second);
}

#[test]
fn postgres_schema_migrates_once_under_concurrent_starts() {
    let server = Postgres::start();
    let target = new_target(&server);
    let nodes = 4;
    let barrier = Arc::new(Barrier::new(nodes));
    let handles: Vec<_> = (0..nodes)
        .map(|_| {
            let target = target.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                Store::connect_postgres(&target).map(|store| store.revision())
            })
        })
        .collect();
    for handle in handles {
        let revision = handle.join().expect("thread").expect("connect and migrate");
        assert_eq!(revision.expect("revision"), 0);
    }

    let mut store = Store::connect_postgres(&target).expect("connect again");
    assert!(store.domains().expect("domains").is_empty());
    store.create_domain(&domain("acme")).expect("create domain");
    assert_eq!(store.revision().expect("revision"), 1);
}

#[test]
fn postgres_writers_race_safely() {
    let server = Postgres::start();
    let target = new_target(&server);
    let mut store = Store::connect_postgres(&target).expect("connect");
    store.create_domain(&domain("acme")).expect("create domain");
    store
        .create_key(&key("acme", "k1"), &version(1))
        .expect("create key");
    let before = store.revision().expect("revision");

    // Eight nodes add a credential each at the same moment: the limit of two still applies.
    let results = race(&target, 8, |store, node| {
        store.add_credential(&credential("acme", &access_key_id(node)), b"wrapped")
    });
    let added = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(added, 2, "results: {results:?}");
    for result in results.iter().filter_map(|result| result.as_ref().err()) {
        assert!(
            matches!(result, StoreError::Rejected(_)),
            "unexpected error {result:?}"
        );
    }
    let active = store
        .credentials("acme")
        .expect("credentials")
        .into_iter()
        .filter(|credential| credential.revoked_at.is_none())
        .count();
    assert_eq!(active, 2);

    // Eight nodes rotate the same key from primary version 1: exactly one rotation wins.
    let results = race(&target, 8, |store, node| {
        let number = u32::try_from(node).expect("small") + 2;
        store.add_primary_version("acme", "k1", 1, &version(number))
    });
    let won = results
        .iter()
        .filter(|result| matches!(result, Ok(true)))
        .count();
    assert_eq!(won, 1, "results: {results:?}");
    assert!(results.iter().all(Result::is_ok), "results: {results:?}");
    assert_eq!(store.versions("acme", "k1").expect("versions").len(), 2);

    // Eight nodes destroy the same due key: exactly one reports the destruction.
    store
        .schedule_deletion("acme", "k1", NOW)
        .expect("schedule deletion");
    let results = race(&target, 8, |store, _| {
        store.destroy_due_key("acme", "k1", NOW)
    });
    let destroyed = results
        .iter()
        .filter(|result| matches!(result, Ok(Some(_))))
        .count();
    assert_eq!(destroyed, 1, "results: {results:?}");

    // Eight nodes create the same principal: one succeeds, the others find it taken.
    let results = race(&target, 8, |store, _| {
        store.create_principal(&PrincipalRow {
            name: "alice".to_owned(),
            roles: Vec::new(),
            created_at: NOW,
            created_by: "cli:root".to_owned(),
        })
    });
    let created = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(created, 1, "results: {results:?}");
    for result in results.iter().filter_map(|result| result.as_ref().err()) {
        assert!(
            matches!(result, StoreError::AlreadyExists(_)),
            "unexpected error {result:?}"
        );
    }

    // Each committed write incremented the revision once: two credentials, eight rotation
    // attempts (seven found the primary moved), the scheduling and eight destruction attempts.
    // Rejected credentials rolled back.
    let changes = 2 + 8 + 1 + 8;
    assert_eq!(store.revision().expect("revision"), before + changes);
}

#[test]
fn postgres_change_wakes_a_waiting_node() {
    let server = Postgres::start();
    let target = new_target(&server);
    let listener = Store::connect_postgres(&target).expect("connect listener");
    let mut writer = Store::connect_postgres(&target).expect("connect writer");

    // The first call subscribes; nothing has changed since.
    assert!(
        !listener
            .wait_for_change(Duration::from_millis(50))
            .expect("wait")
    );
    let handle = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        writer
            .create_domain(&domain("acme"))
            .expect("create domain");
    });
    let started = Instant::now();
    let changed = listener
        .wait_for_change(Duration::from_secs(5))
        .expect("wait for change");
    let delay = started.elapsed();
    handle.join().expect("writer thread");
    eprintln!("change notification arrived after {delay:?}, 100 ms of it before the write");
    assert!(changed, "no notification within 5 s");
    assert!(
        delay < Duration::from_secs(2),
        "notification took {delay:?}"
    );
    assert_eq!(listener.revision().expect("revision"), 1);
}

#[test]
fn postgres_scheduler_lock_admits_one_node() {
    let server = Postgres::start();
    let target = new_target(&server);
    let first = Store::connect_postgres(&target).expect("connect first node");
    let second = Store::connect_postgres(&target).expect("connect second node");

    assert!(first.try_lock_scheduler().expect("first lock"));
    assert!(!second.try_lock_scheduler().expect("second lock while held"));
    first.unlock_scheduler().expect("unlock");
    assert!(
        second
            .try_lock_scheduler()
            .expect("second lock after unlock")
    );
    // A node whose session ends releases the lock. The server ends the session shortly after
    // the client disconnects, so the first node may have to try a few times.
    drop(second);
    let started = Instant::now();
    while !first
        .try_lock_scheduler()
        .expect("lock after the holder left")
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the lock outlived its session"
        );
        thread::sleep(Duration::from_millis(20));
    }
    first.unlock_scheduler().expect("unlock again");
}

#[test]
fn sqlite_scheduler_lock_always_succeeds() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let first = Store::open(&dir.path().join("keyhold.db")).expect("open store");
    let second = Store::open(&dir.path().join("keyhold.db")).expect("open again");
    assert!(first.try_lock_scheduler().expect("lock"));
    assert!(second.try_lock_scheduler().expect("lock again"));
}

#[test]
fn sqlite_wait_for_change_sleeps() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(&dir.path().join("keyhold.db")).expect("open store");
    let started = Instant::now();
    assert!(
        !store
            .wait_for_change(Duration::from_millis(50))
            .expect("wait")
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[test]
fn postgres_store_reconnects_after_lost_connection() {
    let server = Postgres::start();
    let target = new_target(&server);
    let mut store = Store::connect_postgres(&target).expect("connect");
    store.create_domain(&domain("acme")).expect("create domain");

    let mut superuser = server.superuser();
    let terminated = superuser
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&OWNER],
        )
        .expect("terminate sessions");
    assert_eq!(terminated.len(), 1);

    // The statement that finds the connection broken fails; the next one reconnects.
    let failures = (0..2)
        .map(|_| store.domains())
        .take_while(Result::is_err)
        .count();
    assert!(
        failures <= 1,
        "{failures} reads failed after the connection was lost"
    );
    assert_eq!(
        store.domains().expect("domains after reconnecting").len(),
        1
    );
    store
        .set_domain_status("acme", DomainStatus::Disabled)
        .expect("write after reconnecting");
}

#[test]
fn postgres_tls_checks_the_server_certificate() {
    let server = Postgres::start_with_tls();
    let mut target = new_target(&server);
    target.ca_file = Some(server.ca_file());
    let mut store = Store::connect_postgres(&target).expect("connect over TLS");
    store
        .create_domain(&domain("acme"))
        .expect("write over TLS");

    let mut superuser = server.superuser();
    let sessions: i64 = superuser
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE usename = $1 AND ssl",
            &[&OWNER],
        )
        .expect("query TLS sessions")
        .get(0);
    assert_eq!(sessions, 1, "the store's session does not use TLS");

    // A CA that did not sign the server certificate is rejected.
    let other = tempfile::tempdir().expect("temporary directory");
    keyhold::api::tls::write_dev_certificates(other.path()).expect("write other certificates");
    let mut wrong_ca = target.clone();
    wrong_ca.ca_file = Some(other.path().join("ca.pem"));
    let error = Store::connect_postgres(&wrong_ca).expect_err("certificate from another CA");
    assert!(matches!(error, StoreError::Postgres(_)), "{error:?}");

    // sslmode=require without a CA file is a configuration error, not a silent downgrade.
    let mut no_ca = target.clone();
    no_ca.ca_file = None;
    no_ca.url.push_str("&sslmode=require");
    let message = Store::connect_postgres(&no_ca)
        .expect_err("sslmode=require without a CA file")
        .to_string();
    assert!(message.contains("ca_file"), "{message}");
}

#[test]
fn postgres_url_with_password_is_rejected() {
    let target = PostgresTarget {
        url: "postgresql://keyhold:secret@127.0.0.1:1/keyhold".to_owned(),
        password_file: None,
        ca_file: None,
    };
    let error = Store::connect_postgres(&target).expect_err("password in url");
    let message = error.to_string();
    assert!(message.contains("contains a password"), "{message}");
    assert!(!message.contains("secret"), "{message}");
}

#[test]
fn postgres_password_file_readable_by_others_is_rejected() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("password");
    std::fs::write(&path, "secret").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let target = PostgresTarget {
        url: "postgresql://keyhold@127.0.0.1:1/keyhold".to_owned(),
        password_file: Some(path),
        ca_file: None,
    };
    let message = Store::connect_postgres(&target)
        .expect_err("readable password file")
        .to_string();
    assert!(message.contains("chmod 600"), "{message}");
}

/// Runs `change` on `nodes` connections at once and returns each result.
fn race<T: Send + 'static>(
    target: &PostgresTarget,
    nodes: usize,
    change: impl Fn(&mut Store, usize) -> Result<T, StoreError> + Send + Sync + 'static,
) -> Vec<Result<T, StoreError>> {
    let change = Arc::new(change);
    let barrier = Arc::new(Barrier::new(nodes));
    let handles: Vec<_> = (0..nodes)
        .map(|node| {
            let mut store = Store::connect_postgres(target).expect("connect");
            let change = change.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                change(&mut store, node)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|handle| handle.join().expect("thread"))
        .collect()
}

/// Drives every kind of change through the store and checks what it reads back.
fn check_behaviour(store: &mut Store) {
    let revision = store.revision().expect("revision");

    // Domains.
    store.create_domain(&domain("acme")).expect("create domain");
    assert!(matches!(
        store.create_domain(&domain("acme")),
        Err(StoreError::AlreadyExists(_))
    ));
    let mut clash = domain("other");
    clash.uri_prefix = "/domains/acme".to_owned();
    assert!(matches!(
        store.create_domain(&clash),
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.domain("acme").expect("domain"), domain("acme"));
    assert!(matches!(
        store.domain("missing"),
        Err(StoreError::NotFound(_))
    ));
    store
        .set_domain_status("acme", DomainStatus::Disabled)
        .expect("disable domain");
    assert_eq!(
        store.domain("acme").expect("domain").status,
        DomainStatus::Disabled
    );
    store
        .set_policy("acme", None, Some(r#"{"allow":[]}"#))
        .expect("domain policy");
    assert_eq!(
        store.domain("acme").expect("domain").policy.as_deref(),
        Some(r#"{"allow":[]}"#)
    );
    assert_eq!(store.domains().expect("domains").len(), 1);

    // Credentials: at most two active.
    let first = access_key_id(1);
    for node in 1..=2 {
        store
            .add_credential(&credential("acme", &access_key_id(node)), b"wrapped")
            .expect("add credential");
    }
    assert!(matches!(
        store.add_credential(&credential("acme", &access_key_id(3)), b"wrapped"),
        Err(StoreError::Rejected(_))
    ));
    store
        .revoke_credential("acme", &first, NOW + 1)
        .expect("revoke");
    assert!(matches!(
        store.revoke_credential("acme", &first, NOW + 2),
        Err(StoreError::NotFound(_))
    ));
    store
        .add_credential(&credential("acme", &access_key_id(3)), b"wrapped")
        .expect("add after revoking");
    let credentials = store.credentials("acme").expect("credentials");
    assert_eq!(credentials.len(), 3);
    assert_eq!(credentials[0].revoked_at, Some(NOW + 1));

    // Keys, rotation and version states.
    store
        .create_key(&key("acme", "k1"), &version(1))
        .expect("create key");
    assert!(matches!(
        store.create_key(&key("acme", "k1"), &version(1)),
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.key("acme", "k1").expect("key"), key("acme", "k1"));
    assert!(
        store
            .add_primary_version("acme", "k1", 1, &version(2))
            .expect("rotate")
    );
    assert!(
        !store
            .add_primary_version("acme", "k1", 1, &version(3))
            .expect("stale rotation")
    );
    assert_eq!(store.key("acme", "k1").expect("key").primary_version, 2);
    assert!(matches!(
        store.set_version_state("acme", "k1", 2, VersionState::Disabled),
        Err(StoreError::Rejected(_))
    ));
    store
        .set_version_state("acme", "k1", 1, VersionState::Disabled)
        .expect("disable version 1");
    let versions = store.versions("acme", "k1").expect("versions");
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].state, VersionState::Disabled);
    store.destroy_version("acme", "k1", 1).expect("destroy v1");
    let versions = store.versions("acme", "k1").expect("versions");
    assert_eq!(versions[0].material, StoredMaterial::Destroyed);
    assert_eq!(versions[0].state, VersionState::Destroyed);

    store
        .set_key_status("acme", "k1", KeyStatus::Disabled)
        .expect("disable key");
    store
        .set_rotation_period("acme", "k1", Some(60))
        .expect("rotation period");
    let due = store.due_rotations(NOW + 61).expect("due rotations");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].primary_version, 2);
    assert!(store.due_rotations(NOW + 59).expect("due").is_empty());
    store
        .set_policy("acme", Some("k1"), Some("{}"))
        .expect("key policy");

    // Bindings are learned once.
    let mut learning = key("acme", "k2");
    learning.learn_binding = true;
    store
        .create_key(&learning, &version(1))
        .expect("create key 2");
    assert!(
        store
            .learn_key_binding("acme", "k2", "arn:first")
            .expect("learn")
    );
    assert!(
        !store
            .learn_key_binding("acme", "k2", "arn:second")
            .expect("learn again")
    );

    // Scheduled deletion, cancellation and destruction.
    store
        .schedule_deletion("acme", "k1", NOW + 100)
        .expect("schedule");
    assert!(matches!(
        store.schedule_deletion("acme", "k1", NOW + 100),
        Err(StoreError::Rejected(_))
    ));
    assert!(matches!(
        store.set_key_status("acme", "k1", KeyStatus::Enabled),
        Err(StoreError::Rejected(_))
    ));
    assert_eq!(
        store.cancel_deletion("acme", "k1").expect("cancel"),
        KeyStatus::Disabled
    );
    store
        .schedule_deletion("acme", "k1", NOW + 100)
        .expect("schedule again");
    assert!(store.due_deletions(NOW + 99).expect("due").is_empty());
    assert_eq!(
        store.due_deletions(NOW + 100).expect("due"),
        vec![("acme".to_owned(), "k1".to_owned())]
    );
    assert!(
        store
            .destroy_due_key("acme", "k1", NOW + 99)
            .expect("not due")
            .is_none()
    );
    assert!(
        store
            .destroy_due_key("acme", "k1", NOW + 100)
            .expect("destroy")
            .is_some()
    );
    assert_eq!(
        store.key("acme", "k1").expect("tombstone").status,
        KeyStatus::Destroyed
    );
    assert!(
        store
            .destroy_due_key("acme", "k1", NOW + 100)
            .expect("again")
            .is_none()
    );

    // System keys and the snapshot.
    assert!(
        store
            .insert_system_key("health", b"wrapped", NOW)
            .expect("insert")
    );
    assert!(
        !store
            .insert_system_key("health", b"other", NOW)
            .expect("insert again")
    );
    let dataset = store.load().expect("load");
    assert_eq!(dataset.domains.len(), 1);
    assert_eq!(dataset.credentials.len(), 2);
    assert_eq!(dataset.keys.len(), 2);
    assert_eq!(dataset.keys[0].1.len(), 2);
    assert_eq!(
        dataset.system_keys,
        vec![("health".to_owned(), b"wrapped".to_vec())]
    );
    assert_eq!(dataset.revision, store.revision().expect("revision"));
    assert!(dataset.revision > revision);

    check_control_plane(store);
    check_audit_state(store);
}

/// Principals, tokens and external key stores.
fn check_control_plane(store: &mut Store) {
    let principal = PrincipalRow {
        name: "alice".to_owned(),
        roles: vec![
            RoleRow {
                role: "domain-admin".to_owned(),
                domain: Some("acme".to_owned()),
            },
            RoleRow {
                role: "operator".to_owned(),
                domain: None,
            },
        ],
        created_at: NOW,
        created_by: "cli:root".to_owned(),
    };
    store
        .create_principal(&principal)
        .expect("create principal");
    assert!(matches!(
        store.create_principal(&principal),
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.principal("alice").expect("principal"), principal);
    assert_eq!(store.principals(Some("acme")).expect("by domain").len(), 1);

    let token = TokenRow {
        id: "kht_1".to_owned(),
        principal: "alice".to_owned(),
        digest: vec![7; 32],
        description: "ci".to_owned(),
        created_at: NOW,
        expires_at: Some(NOW + 3600),
        revoked_at: None,
        last_used_at: None,
    };
    store.insert_token(&token).expect("insert token");
    store.touch_token("kht_1", NOW + 10).expect("touch");
    store.touch_token("kht_1", NOW + 20).expect("touch again");
    assert_eq!(
        store
            .token("kht_1")
            .expect("token")
            .expect("exists")
            .last_used_at,
        Some(NOW + 10)
    );
    store
        .revoke_token("alice", "kht_1", NOW + 30)
        .expect("revoke");
    assert!(matches!(
        store.revoke_token("alice", "kht_1", NOW + 31),
        Err(StoreError::Rejected(_))
    ));
    assert_eq!(store.tokens("alice").expect("tokens").len(), 1);

    let key_store = KeyStoreRow {
        domain_id: "acme".to_owned(),
        name: "main".to_owned(),
        custom_key_store_id: "cks-1234567890abcdef0".to_owned(),
        region: "us-east-1".to_owned(),
        account_id: "111122223333".to_owned(),
        created_at: NOW,
    };
    store
        .insert_key_store(&key_store)
        .expect("insert key store");
    assert!(matches!(
        store.insert_key_store(&key_store),
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        store.key_stores("acme").expect("key stores"),
        vec![key_store]
    );
    store.delete_key_store("acme", "main").expect("delete");
    assert!(matches!(
        store.key_store("acme", "main"),
        Err(StoreError::NotFound(_))
    ));

    store.delete_principal("alice").expect("delete principal");
    assert!(store.token("kht_1").expect("token").is_none());
}

/// Audit chain heads, queued admin events and the per-node cursor.
fn check_audit_state(store: &mut Store) {
    assert_eq!(store.audit_head("node-1").expect("head"), None);
    store
        .record_audit_head("node-1", 5, "abc", NOW)
        .expect("record head");
    store
        .record_audit_head("node-1", 6, "def", NOW)
        .expect("record head again");
    assert_eq!(
        store.audit_head("node-1").expect("head"),
        Some((6, "def".to_owned()))
    );

    for action in ["domain create", "key rotate", "key disable"] {
        store
            .record_admin_event(
                "2026-01-01T00:00:00Z",
                "cli:root",
                action,
                "acme",
                "success",
            )
            .expect("record event");
    }
    let events = store.admin_events_after(0, 2).expect("events");
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].action, "key rotate");
    let rest = store.admin_events_after(events[1].id, 10).expect("rest");
    assert_eq!(rest.len(), 1);
    assert_eq!(store.audited_admin_event("node-1").expect("cursor"), 0);
    store
        .set_audited_admin_event("node-1", rest[0].id)
        .expect("set cursor");
    assert_eq!(
        store.audited_admin_event("node-1").expect("cursor"),
        rest[0].id
    );
}

/// Copies every domain of `source` into the empty `target` and checks the copy is identical.
fn check_backup_round_trip(source: &mut Store, target: &mut Store) {
    let records = source.read_domains_for_backup(None).expect("read backup");
    assert!(!records.is_empty());
    let mut set = RestoreSet::default();
    for record in &records {
        set.domains.push(record.domain.clone());
        set.credentials.extend(record.credentials.iter().cloned());
        set.keys.extend(record.keys.iter().cloned());
    }
    assert!(
        target
            .restore_conflicts(&set.ids())
            .expect("conflicts")
            .is_empty()
    );
    target.restore(&set).expect("restore");
    assert_eq!(
        target.read_domains_for_backup(None).expect("read copy"),
        records
    );
    assert!(matches!(
        target.restore(&set),
        Err(StoreError::AlreadyExists(_))
    ));
}

/// Returns the settings of a new database on `server`, with the password in a file.
fn new_target(server: &Postgres) -> PostgresTarget {
    PostgresTarget {
        url: server.url(OWNER, &server.create_database()),
        password_file: Some(server.password_file()),
        ca_file: None,
    }
}

fn domain(id: &str) -> Domain {
    Domain {
        id: id.to_owned(),
        display_name: format!("{id} Inc."),
        uri_prefix: format!("/domains/{id}"),
        status: DomainStatus::Enabled,
        quota_rps: Some(100),
        policy: None,
        created_at: NOW,
    }
}

fn access_key_id(node: usize) -> String {
    format!("AKIAKEYHOLDTEST{node:05}")
}

fn credential(domain_id: &str, access_key_id: &str) -> CredentialInfo {
    CredentialInfo {
        access_key_id: access_key_id.to_owned(),
        domain_id: domain_id.to_owned(),
        created_at: NOW,
        revoked_at: None,
    }
}

fn key(domain_id: &str, key_id: &str) -> KeyInfo {
    KeyInfo {
        domain_id: domain_id.to_owned(),
        key_id: key_id.to_owned(),
        name: key_id.to_owned(),
        description: String::new(),
        usage: KeyUsage::new(true, true).expect("usage"),
        status: KeyStatus::Enabled,
        protection: Protection::Software,
        primary_version: 1,
        bound_kms_key_arn: None,
        learn_binding: false,
        rotation_period_secs: None,
        deletion_at: None,
        policy: None,
        created_at: NOW,
    }
}

fn version(number: u32) -> StoredVersion {
    StoredVersion {
        version: number,
        state: VersionState::Enabled,
        material: StoredMaterial::Wrapped(vec![u8::try_from(number).unwrap_or(0); 60]),
        created_at: NOW,
    }
}
