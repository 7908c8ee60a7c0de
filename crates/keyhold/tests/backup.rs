//! `keyhold backup` end to end. A backup restored into a new installation with another root key
//! decrypts ciphertexts made before and after a rotation. Conflicts, changed bytes and wrong
//! passphrases are rejected before anything is written. HSM-resident keys restore only into an
//! installation on that HSM.

mod common;

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{
    CliOutput, Credential, DataDir, KEYHOLD, KMS_KEY_ARN, Server, decrypt_request, encrypt_request,
    metadata_version, unb64,
};
use serde_json::Value;

/// Plaintext of every encrypt request in these tests.
const PLAINTEXT: &[u8] = b"data key to keep";

/// Environment variable that carries the passphrase in the passphrase tests.
const PASSPHRASE_ENV: &str = "KEYHOLD_TEST_BACKUP_PASSPHRASE";

/// SoftHSMv2's PKCS#11 module as Debian installs it.
const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Environment variable that carries the HSM user PIN.
const PIN_ENV: &str = "KEYHOLD_TEST_HSM_PIN";

/// Runs `keyhold --data-dir DIR ARGS...` with extra environment variables.
fn run_with_env(data: &DataDir, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut command = Command::new(KEYHOLD);
    command
        .arg("--data-dir")
        .arg(data.path())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("KEYHOLD_DATA_DIR")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("run the keyhold binary");
    CliOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn run_ok_with_env(data: &DataDir, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run_with_env(data, args, env);
    assert!(
        output.status.success(),
        "keyhold {args:?} failed with {}\nstdout: {}\nstderr: {}",
        output.status,
        output.stdout,
        output.stderr
    );
    output.stdout
}

/// Runs a command that must fail and returns its stderr.
fn run_err(data: &DataDir, args: &[&str]) -> String {
    let output = data.run(args);
    assert!(
        !output.status.success(),
        "keyhold {args:?} succeeded but must fail\nstdout: {}",
        output.stdout
    );
    output.stderr
}

/// Writes a file with mode 0600 that must not exist yet.
fn write_private(path: &Path, bytes: &[u8]) {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create private file");
    file.write_all(bytes).expect("write private file");
}

/// Writes a key file of 32 random bytes next to the data directory.
fn key_file(data: &DataDir) -> PathBuf {
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).expect("random key");
    let path = data.scratch().join("backup.key");
    write_private(&path, &key);
    path
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

fn encrypted(server: &Server, credential: &Credential, key_id: &str) -> Value {
    let path = credential.path(&format!("/keys/{key_id}/encrypt"));
    let response = server.post(credential, &path, &encrypt_request(PLAINTEXT, None));
    assert_eq!(response.status, 200, "encrypt {key_id}: {}", response.body);
    response.json()
}

fn assert_decrypts(server: &Server, credential: &Credential, key_id: &str, encrypted: &Value) {
    let path = credential.path(&format!("/keys/{key_id}/decrypt"));
    let response = server.post(credential, &path, &decrypt_request(encrypted, None));
    assert_eq!(response.status, 200, "decrypt {key_id}: {}", response.body);
    assert_eq!(
        unb64(&response.field("plaintext"), "plaintext"),
        PLAINTEXT,
        "decrypt {key_id}"
    );
}

/// Collects the JSON listings of an installation's domains, credentials, keys and versions.
fn listings(data: &DataDir, domains: &[&str]) -> Vec<(String, Value)> {
    let mut commands: Vec<Vec<String>> = vec![vec!["domain".into(), "list".into()]];
    for domain in domains {
        commands.push(vec!["credential".into(), "list".into(), (*domain).into()]);
        commands.push(vec!["key".into(), "list".into(), (*domain).into()]);
        let keys: Value =
            serde_json::from_str(&data.run_ok(&["key", "list", domain, "--output", "json"]))
                .expect("key list JSON");
        for key in keys.as_array().expect("key list array") {
            let key_id = key["keyId"].as_str().expect("keyId").to_owned();
            commands.push(vec![
                "key".into(),
                "version".into(),
                "list".into(),
                (*domain).into(),
                key_id,
            ]);
        }
    }
    commands
        .into_iter()
        .map(|mut command| {
            command.extend(["--output".into(), "json".into()]);
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            let json = serde_json::from_str(&data.run_ok(&args)).expect("listing JSON");
            (command.join(" "), json)
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A source installation with domain `acme` (a revoked and an active credential, key
/// `orders` rotated once between two ciphertexts, and a disabled key `archive` with a binding,
/// a rotation period and a policy) and domain `beta` with one key.
struct Source {
    data: DataDir,
    credential: Credential,
    revoked: Credential,
    before_rotation: Value,
    after_rotation: Value,
}

fn source() -> Source {
    let data = DataDir::init();
    data.create_domain("acme", &["--quota", "500", "--display-name", "Acme Corp"]);
    let revoked = data.create_credential("acme");
    data.run_ok(&["credential", "revoke", "acme", &revoked.access_key_id]);
    let credential = data.create_credential("acme");
    data.create_key("acme", "orders", &[]);
    data.create_key(
        "acme",
        "archive",
        &[
            "--bind-kms-key-arn",
            KMS_KEY_ARN,
            "--rotation-period",
            "90d",
            "--description",
            "cold storage",
        ],
    );
    let policy = data.scratch().join("policy.json");
    fs::write(
        &policy,
        r#"{"rules":[{"name":"test-account","effect":"allow","accounts":["111122223333"]}]}"#,
    )
    .expect("write policy");
    data.run_ok(&[
        "policy",
        "set",
        "acme",
        "--key",
        "archive",
        "--file",
        path_arg(&policy),
    ]);
    data.run_ok(&["key", "disable", "acme", "archive"]);
    data.create_domain("beta", &[]);
    data.create_key("beta", "b1", &[]);

    let server = Server::start(&data);
    let before_rotation = encrypted(&server, &credential, "orders");
    drop(server);
    data.run_ok(&["key", "rotate", "acme", "orders"]);
    let server = Server::start(&data);
    let after_rotation = encrypted(&server, &credential, "orders");
    drop(server);
    assert_eq!(metadata_version(&before_rotation), 1);
    assert_eq!(metadata_version(&after_rotation), 2);

    Source {
        data,
        credential,
        revoked,
        before_rotation,
        after_rotation,
    }
}

/// Makes a key-file backup of the source and returns the backup and key file paths.
fn key_file_backup(source: &Source) -> (PathBuf, PathBuf) {
    let key = key_file(&source.data);
    let backup = source.data.scratch().join("keyhold.backup");
    let stdout = source.data.run_ok(&[
        "backup",
        "create",
        "--output",
        path_arg(&backup),
        "--key-file",
        path_arg(&key),
    ]);
    assert!(
        stdout.contains("2 domains, 2 credentials, 3 keys and 4 key versions"),
        "{stdout}"
    );
    (backup, key)
}

#[test]
fn restore_into_new_installation_decrypts_old_ciphertexts() {
    let source = source();
    let (backup, key) = key_file_backup(&source);
    let mode = fs::metadata(&backup)
        .expect("stat backup")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "backup file mode");

    let target = DataDir::init();
    let source_root = fs::read(source.data.path().join("root.key")).expect("source root key");
    let target_root = fs::read(target.path().join("root.key")).expect("target root key");
    assert_ne!(
        source_root, target_root,
        "the installations share a root key"
    );
    let restored = target.run_ok(&[
        "backup",
        "restore",
        path_arg(&backup),
        "--key-file",
        path_arg(&key),
    ]);
    assert!(
        restored.contains("Restored 2 domains, 2 credentials, 3 keys and 4 key versions"),
        "{restored}"
    );

    let expected = listings(&source.data, &["acme", "beta"]);
    let actual = listings(&target, &["acme", "beta"]);
    for ((command, expected), (_, actual)) in expected.iter().zip(&actual) {
        assert_eq!(
            actual, expected,
            "`keyhold {command}` differs after restore"
        );
    }
    let policy = ["policy", "show", "acme", "--key", "archive"];
    assert_eq!(target.run_ok(&policy), source.data.run_ok(&policy));

    let server = Server::start(&target);
    assert_decrypts(
        &server,
        &source.credential,
        "orders",
        &source.before_rotation,
    );
    assert_decrypts(
        &server,
        &source.credential,
        "orders",
        &source.after_rotation,
    );
    let after = encrypted(&server, &source.credential, "orders");
    assert_eq!(metadata_version(&after), 2, "version 2 stays primary");
    let path = source.revoked.path("/keys/orders/encrypt");
    let revoked = server.post(&source.revoked, &path, &encrypt_request(PLAINTEXT, None));
    assert_eq!(revoked.status, 401, "revoked credential: {}", revoked.body);
    assert_eq!(
        revoked.error_name().as_deref(),
        Some("AuthenticationFailedException")
    );
}

#[test]
fn backup_file_holds_no_clear_secret_or_name() {
    let source = source();
    let (backup, key) = key_file_backup(&source);
    let bytes = fs::read(&backup).expect("read backup");
    for (what, needle) in [
        (
            "active secret",
            source.credential.secret_access_key.as_bytes(),
        ),
        (
            "revoked secret",
            source.revoked.secret_access_key.as_bytes(),
        ),
        ("access key id", source.credential.access_key_id.as_bytes()),
        ("key description", b"cold storage".as_slice()),
        ("KMS key ARN", KMS_KEY_ARN.as_bytes()),
    ] {
        assert!(
            !contains(&bytes, needle),
            "the backup file contains the {what}"
        );
    }

    let inspect = source.data.run(&[
        "backup",
        "inspect",
        path_arg(&backup),
        "--key-file",
        path_arg(&key),
    ]);
    assert!(inspect.status.success(), "{}", inspect.stderr);
    for secret in [&source.credential, &source.revoked] {
        let secret = secret.secret_access_key.as_str();
        assert!(!inspect.stdout.contains(secret), "inspect printed a secret");
        assert!(!inspect.stderr.contains(secret), "inspect printed a secret");
    }
}

#[test]
fn restore_with_existing_domain_is_rejected() {
    let source = source();
    let (backup, key) = key_file_backup(&source);
    let target = DataDir::init();
    target.create_domain("acme", &[]);
    target.create_key("acme", "orders", &[]);
    let before = listings(&target, &["acme"]);

    let restore = [
        "backup",
        "restore",
        path_arg(&backup),
        "--key-file",
        path_arg(&key),
    ];
    let stderr = run_err(&target, &restore);
    for expected in [
        "nothing was restored",
        "domain \"acme\" already exists",
        "key \"orders\" in domain \"acme\" already exists",
        "--skip-existing",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from: {stderr}"
        );
    }
    assert!(
        !stderr.contains("domain \"beta\""),
        "beta does not conflict: {stderr}"
    );
    assert_eq!(
        listings(&target, &["acme"]),
        before,
        "the refused restore changed data"
    );

    let mut skipping = restore.to_vec();
    skipping.push("--skip-existing");
    let stdout = target.run_ok(&skipping);
    assert!(
        stdout.contains("Skipped: domain \"acme\" already exists"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Skipped: key \"orders\" in domain \"acme\" already exists"),
        "{stdout}"
    );
    assert!(stdout.contains("Restored 1 domain,"), "{stdout}");
    let keys: Value =
        serde_json::from_str(&target.run_ok(&["key", "list", "beta", "--output", "json"]))
            .expect("key list JSON");
    assert_eq!(keys[0]["keyId"], "b1");
}

#[test]
fn tampered_backup_is_rejected_before_writing() {
    let source = source();
    let (backup, key) = key_file_backup(&source);
    let original = fs::read(&backup).expect("read backup");
    let target = DataDir::init();
    let before = listings(&target, &[]);

    let salt_byte = 30;
    let cases = [
        ("payload byte", original.len() / 2, None),
        ("header salt byte", salt_byte, None),
        ("last byte removed", 0, Some(original.len() - 1)),
    ];
    for (case, index, truncate) in cases {
        let mut changed = original.clone();
        match truncate {
            Some(len) => changed.truncate(len),
            None => changed[index] ^= 0x01,
        }
        let path = target
            .scratch()
            .join(format!("{}.backup", case.replace(' ', "-")));
        fs::write(&path, &changed).expect("write changed backup");
        let args = [
            "backup",
            "restore",
            path_arg(&path),
            "--key-file",
            path_arg(&key),
        ];
        let stderr = run_err(&target, &args);
        let expected = if truncate.is_some() {
            "backup file is truncated"
        } else {
            "backup did not authenticate"
        };
        assert!(stderr.contains(expected), "{case}: {stderr}");
        assert_eq!(listings(&target, &[]), before, "{case}: data changed");
    }
}

#[test]
fn passphrase_backup_inspects_and_restores() {
    let source = source();
    let backup = source.data.scratch().join("passphrase.backup");
    let backup_arg = path_arg(&backup);
    let passphrase = "correct horse battery staple";
    let env = [(PASSPHRASE_ENV, passphrase)];

    let short = run_with_env(
        &source.data,
        &[
            "backup",
            "create",
            "--output",
            backup_arg,
            "--passphrase-env",
            PASSPHRASE_ENV,
        ],
        &[(PASSPHRASE_ENV, "too short")],
    );
    assert!(
        !short.status.success(),
        "a 9-character passphrase was accepted"
    );
    assert!(short.stderr.contains("at least 12"), "{}", short.stderr);
    assert!(!backup.exists(), "a rejected create wrote a file");

    run_ok_with_env(
        &source.data,
        &[
            "backup",
            "create",
            "--output",
            backup_arg,
            "--domain",
            "acme",
            "--passphrase-env",
            PASSPHRASE_ENV,
        ],
        &env,
    );
    let inspect = run_ok_with_env(
        &source.data,
        &[
            "backup",
            "inspect",
            backup_arg,
            "--passphrase-env",
            PASSPHRASE_ENV,
            "--output",
            "json",
        ],
        &env,
    );
    let summary: Value = serde_json::from_str(&inspect).expect("inspect JSON");
    assert_eq!(summary["domains"], 1);
    assert_eq!(summary["domainFilter"], "acme");
    assert_eq!(summary["credentials"], 2);
    assert_eq!(summary["revokedCredentials"], 1);
    assert_eq!(summary["keys"], 2);
    assert_eq!(summary["versions"], 3);
    assert!(
        summary["keyDerivation"]
            .as_str()
            .is_some_and(|text| text.contains("Argon2id")),
        "{summary}"
    );
    assert!(
        summary["sourceNode"]
            .as_str()
            .is_some_and(|node| !node.is_empty())
    );
    assert!(
        summary["createdAt"]
            .as_str()
            .is_some_and(|time| time.ends_with('Z'))
    );

    let wrong = run_with_env(
        &source.data,
        &[
            "backup",
            "inspect",
            backup_arg,
            "--passphrase-env",
            PASSPHRASE_ENV,
        ],
        &[(PASSPHRASE_ENV, "correct horse battery stapler")],
    );
    assert!(!wrong.status.success(), "a wrong passphrase was accepted");
    assert!(
        wrong.stderr.contains("did not authenticate"),
        "{}",
        wrong.stderr
    );

    let target = DataDir::init();
    let open_file = target.scratch().join("open-passphrase");
    fs::write(&open_file, format!("{passphrase}\n")).expect("write passphrase file");
    fs::set_permissions(&open_file, fs::Permissions::from_mode(0o644)).expect("chmod");
    let restore_open = [
        "backup",
        "restore",
        backup_arg,
        "--passphrase-file",
        path_arg(&open_file),
    ];
    let stderr = run_err(&target, &restore_open);
    assert!(stderr.contains("chmod 600"), "{stderr}");

    let private_file = target.scratch().join("passphrase");
    write_private(&private_file, format!("{passphrase}\n").as_bytes());
    target.run_ok(&[
        "backup",
        "restore",
        backup_arg,
        "--passphrase-file",
        path_arg(&private_file),
    ]);
    let server = Server::start(&target);
    assert_decrypts(
        &server,
        &source.credential,
        "orders",
        &source.before_rotation,
    );
    assert_decrypts(
        &server,
        &source.credential,
        "orders",
        &source.after_rotation,
    );
}

#[test]
fn backup_never_overwrites_a_file() {
    let data = DataDir::init();
    data.create_domain("acme", &[]);
    let key = key_file(&data);
    let backup = data.scratch().join("existing.backup");
    fs::write(&backup, b"keep me").expect("write existing file");
    let stderr = run_err(
        &data,
        &[
            "backup",
            "create",
            "--output",
            path_arg(&backup),
            "--key-file",
            path_arg(&key),
        ],
    );
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(fs::read(&backup).expect("read file"), b"keep me");
}

/// A SoftHSMv2 token directory and configuration shared by the HSM installations of a test.
struct Token {
    conf: PathBuf,
}

impl Token {
    /// Creates the token `backup-test` in a directory beside `data`.
    fn new(data: &DataDir) -> Self {
        let tokens = data.scratch().join("tokens");
        fs::create_dir(&tokens).expect("create token directory");
        let conf = data.scratch().join("softhsm2.conf");
        fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("write SoftHSMv2 configuration");
        let init = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", "backup-test"])
            .args(["--pin", "1234", "--so-pin", "5678"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("run softhsm2-util; scripts/test installs the softhsm2 package");
        assert!(
            init.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        Self { conf }
    }

    fn env(&self) -> [(&'static str, &str); 2] {
        [
            ("SOFTHSM2_CONF", self.conf.to_str().expect("UTF-8 path")),
            (PIN_ENV, "1234"),
        ]
    }

    /// Runs `keyhold init` on this token with its own root key label.
    fn init(&self, data: &DataDir, root_key_label: &str) {
        run_ok_with_env(
            data,
            &[
                "init",
                "--pkcs11-module",
                SOFTHSM_MODULE,
                "--token-label",
                "backup-test",
                "--pin-env",
                PIN_ENV,
                "--root-key-label",
                root_key_label,
            ],
            &self.env(),
        );
    }
}

#[test]
fn hsm_keys_restore_only_onto_their_hsm() {
    let source = DataDir::empty();
    let token = Token::new(&source);
    let env = token.env();
    token.init(&source, "source-root");
    run_ok_with_env(&source, &["domain", "create", "acme"], &env);
    let stdout = run_ok_with_env(&source, &["credential", "create", "acme"], &env);
    let configuration: Value = serde_json::from_str(&stdout).expect("credential JSON");
    let credential = Credential {
        access_key_id: configuration["XksProxyAuthenticationCredential"]["AccessKeyId"]
            .as_str()
            .expect("AccessKeyId")
            .to_owned(),
        secret_access_key: configuration["XksProxyAuthenticationCredential"]["RawSecretAccessKey"]
            .as_str()
            .expect("RawSecretAccessKey")
            .to_owned(),
        uri_path: configuration["XksProxyUriPath"]
            .as_str()
            .expect("XksProxyUriPath")
            .to_owned(),
    };
    let create_key = |key_id: &str, protection: &str| {
        run_ok_with_env(
            &source,
            &[
                "key",
                "create",
                "acme",
                "--key-id",
                key_id,
                "--protection",
                protection,
            ],
            &env,
        );
    };
    create_key("hsm-key", "hsm");
    create_key("sw-key", "software");
    let server = Server::start_with_env(&source, &env);
    let hsm_ciphertext = encrypted(&server, &credential, "hsm-key");
    let sw_ciphertext = encrypted(&server, &credential, "sw-key");
    drop(server);

    let key = key_file(&source);
    let backup = source.scratch().join("hsm.backup");
    let created = run_with_env(
        &source,
        &[
            "backup",
            "create",
            "--output",
            path_arg(&backup),
            "--key-file",
            path_arg(&key),
        ],
        &env,
    );
    assert!(created.status.success(), "{}", created.stderr);
    assert!(
        created.stderr.contains("HSM vendor's own backup tools"),
        "{}",
        created.stderr
    );
    let restore = [
        "backup",
        "restore",
        path_arg(&backup),
        "--key-file",
        path_arg(&key),
    ];

    let file_root = DataDir::init();
    let stderr = run_err(&file_root, &restore);
    assert!(
        stderr.contains("key \"hsm-key\" in domain \"acme\""),
        "{stderr}"
    );
    assert!(stderr.contains("HSM vendor's own backup tools"), "{stderr}");
    assert!(stderr.contains("nothing was restored"), "{stderr}");
    assert_eq!(listings(&file_root, &[]), listings(&DataDir::init(), &[]));

    let hsm_target = DataDir::empty();
    token.init(&hsm_target, "target-root");
    run_ok_with_env(&hsm_target, &restore, &env);
    let server = Server::start_with_env(&hsm_target, &env);
    assert_decrypts(&server, &credential, "hsm-key", &hsm_ciphertext);
    assert_decrypts(&server, &credential, "sw-key", &sw_ciphertext);
}
