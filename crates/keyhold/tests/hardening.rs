//! Resource limits and clean failure: stalled request bodies, the connection limit, and an
//! `init` that fails part-way.

mod common;

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{DataDir, KEYHOLD, Server};

#[test]
fn stalled_body_is_answered_and_closed() {
    let data = DataDir::init();
    data.configure(&[("body_read_timeout_secs = 10", "body_read_timeout_secs = 1")]);
    data.create_domain("acme", &[]);
    let server = Server::start(&data);

    // openssl s_client keeps the connection open while its stdin is open, so the body never
    // completes; the server must answer and close on its own.
    let mut client = std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(format!("127.0.0.1:{}", server.port()))
        .args(["-servername", "localhost"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run openssl s_client");
    let started = Instant::now();
    let mut stdin = client.stdin.take().expect("s_client stdin");
    stdin
        .write_all(
            b"POST /domains/acme/kms/xks/v1/health HTTP/1.1\r\nHost: localhost\r\n\
              Content-Length: 1000\r\n\r\n{",
        )
        .expect("send a partial request");
    let output = wait_with_timeout(client, Duration::from_secs(10));
    drop(stdin);
    let elapsed = started.elapsed();
    let response = String::from_utf8_lossy(&output);
    assert!(response.starts_with("HTTP/1.1 400"), "response: {response}");
    assert!(
        response.contains("request body not received"),
        "response: {response}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "the server waited {elapsed:?}"
    );
}

/// Waits for a child to exit, killing it after `timeout`, and returns its stdout.
fn wait_with_timeout(mut child: std::process::Child, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait for child").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("collect output").stdout
}

#[test]
fn connection_limit_makes_new_clients_wait() {
    let data = DataDir::init();
    data.configure(&[("max_connections = 4096", "max_connections = 3")]);
    let server = Server::start(&data);

    // Plain TCP connections that never start TLS hold their slots until the handshake
    // timeout.
    let idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", server.port())).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let blocked = server.curl(
        &["--max-time".to_owned(), "1".to_owned(), server.url("/ping")],
        None,
    );
    assert_eq!(
        blocked.status, 0,
        "a fourth connection must wait: {}",
        blocked.body
    );

    drop(idle);
    let served = common::wait_for(Duration::from_secs(5), || {
        let ping = server.curl(&[server.url("/ping")], None);
        (ping.status == 200).then_some(())
    });
    assert!(
        served.is_some(),
        "clients must be served once connections close"
    );
}

#[test]
fn failed_init_leaves_nothing_behind() {
    let data = DataDir::empty();
    let output = std::process::Command::new(KEYHOLD)
        .arg("--data-dir")
        .arg(data.path())
        .args(["init", "--pkcs11-module", "/usr/lib/softhsm/libsofthsm2.so"])
        .args([
            "--token-label",
            "nothing",
            "--pin-env",
            "KEYHOLD_TEST_UNSET_PIN",
        ])
        .env_remove("KEYHOLD_TEST_UNSET_PIN")
        .output()
        .expect("run keyhold init");
    assert!(!output.status.success(), "init without a PIN must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("KEYHOLD_TEST_UNSET_PIN"),
        "stderr: {stderr}"
    );
    assert!(
        !data.path().exists(),
        "a failed init must remove what it created"
    );

    data.run_ok(&["init"]);
    assert!(
        data.path().join("root.key").exists(),
        "init must work after a failure"
    );
}

#[test]
fn init_restricts_an_existing_directory() {
    use std::os::unix::fs::PermissionsExt as _;

    let data = DataDir::empty();
    std::fs::create_dir(data.path()).expect("create directory");
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    data.run_ok(&["init"]);
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    };
    assert_eq!(mode(data.path()), 0o700, "data directory");
    assert_eq!(mode(&data.path().join("keyhold.db")), 0o600, "database");
}

#[test]
fn serve_refuses_a_directory_others_can_reach() {
    use std::os::unix::fs::PermissionsExt as _;

    let data = DataDir::init();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let output = std::process::Command::new(KEYHOLD)
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run keyhold serve");
    assert!(
        !output.status.success(),
        "serve must refuse a group-readable data directory"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("chmod 700"),
        "the error says how to fix it: {stderr}"
    );
}

#[test]
fn server_disables_core_dumps_and_says_so() {
    let data = DataDir::init();
    let server = Server::start(&data);
    let log = server.log();
    assert!(log.contains("core dumps disabled"), "{log}");
    assert!(log.contains("process not dumpable"), "{log}");
    let pid = server.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let core = limits
        .lines()
        .find(|line| line.starts_with("Max core file size"))
        .expect("core limit line");
    let values: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(
        &values[4..6],
        ["0", "0"],
        "soft and hard core limits: {core}"
    );
}
