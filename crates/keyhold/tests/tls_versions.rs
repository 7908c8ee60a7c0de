//! TLS protocol versions: the XKS API requires TLS 1.2 or later, so a TLS 1.2 and a TLS 1.3
//! client connect and a TLS 1.1 client fails the handshake.

mod common;

use std::sync::{Arc, Mutex, Weak};

use common::{CurlOutput, DataDir, Server, shared};

struct Fixture {
    // Declared first so the server stops before the data directory is deleted.
    server: Server,
    _data: DataDir,
}

static FIXTURE: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());

fn fixture() -> Arc<Fixture> {
    shared(&FIXTURE, || {
        let data = DataDir::init();
        let server = Server::start(&data);
        Fixture {
            server,
            _data: data,
        }
    })
}

/// GETs `/ping` with curl's verbose output, which names the negotiated protocol.
fn ping_with(fixture: &Fixture, tls_args: &[&str]) -> CurlOutput {
    let mut args: Vec<String> = tls_args.iter().map(|arg| (*arg).to_owned()).collect();
    args.push("-v".to_owned());
    args.push(fixture.server.url("/ping"));
    fixture.server.curl(&args, None)
}

fn assert_connects_with(output: &CurlOutput, version: &str) {
    assert!(output.exit.success(), "curl failed: {}", output.stderr);
    assert_eq!(output.status, 200, "/ping: {}", output.body);
    assert!(
        output
            .stderr
            .contains(&format!("SSL connection using {version} ")),
        "the connection must use {version}:\n{}",
        output.stderr
    );
}

#[test]
fn tls12_client_connects() {
    let fixture = fixture();
    let output = ping_with(&fixture, &["--tls-max", "1.2"]);
    assert_connects_with(&output, "TLSv1.2");
}

#[test]
fn tls13_client_connects() {
    let fixture = fixture();
    let output = ping_with(&fixture, &["--tlsv1.3"]);
    assert_connects_with(&output, "TLSv1.3");
}

#[test]
fn tls11_client_fails_handshake() {
    let fixture = fixture();
    let output = ping_with(&fixture, &["--tlsv1.1", "--tls-max", "1.1"]);
    assert!(
        !output.exit.success(),
        "a TLS 1.1 client must fail, but got HTTP {}",
        output.status
    );
    assert_eq!(output.status, 0, "no HTTP status may arrive");
    // The client did offer TLS 1.1, and the server responded with an alert. A client that
    // refused to offer TLS 1.1 would fail without reaching the server.
    assert!(
        output
            .stderr
            .contains("TLSv1.1 (OUT), TLS handshake, Client hello"),
        "curl must have sent a TLS 1.1 ClientHello:\n{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("(IN), TLS alert"),
        "the server must answer with a TLS alert:\n{}",
        output.stderr
    );
}
