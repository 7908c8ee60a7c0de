//! Conformance of the served admin API to its own OpenAPI document, checked by schemathesis
//! (PyPI), an independent property-based tester.
//!
//! The checks: no server errors, only documented status codes, bodies and content types that
//! match the schemas, rejected invalid input, and no route that works without a token.

mod common;

use std::process::Command;

use common::{DataDir, Server};
use serde_json::json;

/// Maximum time in seconds that schemathesis spends generating and sending requests.
const BUDGET_SECS: &str = "60";

#[test]
fn served_api_matches_its_openapi_document() {
    let probe = Command::new("schemathesis").arg("--version").output();
    assert!(
        probe.as_ref().is_ok_and(|output| output.status.success()),
        "schemathesis is missing; scripts/test installs it with pip: {probe:?}"
    );

    let data = DataDir::init();
    let server = Server::start(&data);
    let operator = data.operator_token();
    // The objects the document's path examples name, so the examples reach real handlers.
    for (method, path, body) in [
        ("POST", "/v1/domains", json!({"id": "acme"})),
        ("POST", "/v1/domains/acme/keys", json!({"keyId": "orders"})),
        (
            "POST",
            "/v1/domains/acme/key-stores",
            json!({"name": "prod-eu", "customKeyStoreId": "cks-0123456789abcdef0",
                   "region": "eu-west-1", "accountId": "111122223333"}),
        ),
        (
            "POST",
            "/v1/principals",
            json!({"name": "alice", "roles": [{"role": "key-creator", "domain": "acme"}]}),
        ),
        (
            "POST",
            "/v1/principals",
            json!({"name": "conformance", "roles": [{"role": "operator"}]}),
        ),
    ] {
        let (status, answer) = server.admin(method, path, &operator, Some(&body));
        assert_eq!(status, 201, "{path}: {answer}");
    }
    server.admin("POST", "/v1/domains/acme/credentials", &operator, None);
    let (status, token) = server.admin(
        "POST",
        "/v1/principals/conformance/tokens",
        &operator,
        Some(&json!({})),
    );
    assert_eq!(status, 201, "{token}");
    let token = token["token"].as_str().expect("token");

    let report = data.scratch().join("schemathesis.txt");
    let output = Command::new("schemathesis")
        .current_dir(data.scratch())
        .env("NO_COLOR", "1")
        .args(["run", &server.admin_url("/openapi.json")])
        .arg("--tls-verify")
        .arg(data.ca_file())
        .args(["-H", &format!("Authorization: Bearer {token}")])
        // Every check except positive_data_acceptance: some rules, such as "confirm must be
        // true" or a policy's rule grammar, are not JSON Schema, so schema-valid requests may
        // rightly get 400.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args([
            "--max-time",
            BUDGET_SECS,
            "--workers",
            "1",
            "--request-timeout",
            "10",
        ])
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    std::fs::write(&report, stdout.as_bytes()).expect("keep the report");
    let summary: String = stdout
        .lines()
        .skip_while(|line| !line.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{summary}");
    assert!(
        output.status.success(),
        "schemathesis found differences between the API and its document:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (_, document) = server.admin("GET", "/openapi.json", "", None);
    let operations: usize = document["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, serde_json::Map::len))
        .sum();
    assert!(
        stdout.contains(&format!("Tested: {operations}")),
        "schemathesis did not test all {operations} operations:\n{summary}"
    );
    assert!(
        !server.log().contains("panicked"),
        "the server panicked:\n{}",
        server.log()
    );
}
