//! Prometheus metrics on the admin listener, and throttling: per-domain quotas that keep one
//! flooding domain from slowing another, the default quota and the global in-flight limit.

mod common;

use std::time::{Duration, Instant};

use common::{Credential, DataDir, HttpResponse, Server, encrypt_request};

fn encrypt(server: &Server, credential: &Credential) -> HttpResponse {
    server.post(
        credential,
        &credential.path("/keys/k1/encrypt"),
        &encrypt_request(b"x", None),
    )
}

/// Sends `count` encrypts over one connection and returns the statuses.
fn burst(server: &Server, credential: &Credential, count: usize) -> Vec<u16> {
    server
        .curl_burst(
            credential,
            &credential.path("/keys/k1/encrypt"),
            &encrypt_request(b"x", None),
            count,
        )
        .into_iter()
        .map(|response| response.status)
        .collect()
}

#[test]
fn metrics_count_requests_by_domain_and_result() {
    let data = DataDir::init();
    data.create_domain("acme", &[]);
    let credential = data.create_credential("acme");
    data.create_key("acme", "k1", &[]);
    let server = Server::start(&data);
    for _ in 0..3 {
        assert_eq!(encrypt(&server, &credential).status, 200);
    }
    let wrong = credential.with_secret("BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB");
    assert_eq!(encrypt(&server, &wrong).status, 401);

    let metrics_with = |token: Option<&str>| {
        let mut args = Vec::new();
        if let Some(token) = token {
            args.extend(["-H".to_owned(), format!("Authorization: Bearer {token}")]);
        }
        args.push(server.admin_url("/metrics"));
        server.admin_curl(&args)
    };
    assert_eq!(
        metrics_with(None).status,
        401,
        "metrics need an operator token"
    );
    let metrics = metrics_with(Some(&data.operator_token()));
    assert_eq!(metrics.status, 200, "{}", metrics.stderr);
    let text = metrics.body;
    for expected in [
        "keyhold_xks_requests_total{domain=\"acme\",operation=\"Encrypt\",result=\"success\"} 3",
        "keyhold_xks_requests_total{domain=\"acme\",operation=\"Encrypt\",result=\"AuthenticationFailedException\"} 1",
        "keyhold_xks_request_duration_seconds_count{operation=\"Encrypt\"} 4",
        "keyhold_storage_up 1",
        "keyhold_audit_writable 1",
        "keyhold_nodes 1",
        "# TYPE keyhold_cache_age_seconds gauge",
    ] {
        assert!(
            text.contains(expected),
            "metrics lack {expected:?}:\n{text}"
        );
    }
    let on_xks = server.get("/metrics");
    assert_eq!(
        on_xks.status, 404,
        "metrics are not served on the XKS listener"
    );
}

#[test]
fn flooding_domain_does_not_throttle_another() {
    let data = DataDir::init();
    data.create_domain("flood", &["--quota", "20"]);
    data.create_domain("calm", &["--quota", "20"]);
    let flood = data.create_credential("flood");
    let calm = data.create_credential("calm");
    data.create_key("flood", "k1", &[]);
    data.create_key("calm", "k1", &[]);
    let server = Server::start(&data);

    let (flood_statuses, calm_statuses) = std::thread::scope(|scope| {
        let flooders: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| burst(&server, &flood, 60)))
            .collect();
        let calm_client = scope.spawn(|| {
            let mut statuses = Vec::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(1500) {
                statuses.push(encrypt(&server, &calm).status);
                std::thread::sleep(Duration::from_millis(150));
            }
            statuses
        });
        let flood_statuses: Vec<u16> = flooders
            .into_iter()
            .flat_map(|worker| worker.join().expect("flood worker"))
            .collect();
        (flood_statuses, calm_client.join().expect("calm worker"))
    });

    let throttled = flood_statuses
        .iter()
        .filter(|status| **status == 429)
        .count();
    eprintln!(
        "flooding domain: {throttled} of {} throttled; calm domain: {:?}",
        flood_statuses.len(),
        calm_statuses
    );
    assert!(throttled > 100, "the flooding domain must be throttled");
    assert!(
        flood_statuses
            .iter()
            .all(|status| *status == 200 || *status == 429),
        "flood statuses: {flood_statuses:?}"
    );
    assert!(
        calm_statuses.len() >= 5,
        "the calm domain sent too few requests"
    );
    assert!(
        calm_statuses.iter().all(|status| *status == 200),
        "the calm domain was affected: {calm_statuses:?}"
    );
}

#[test]
fn default_quota_applies_to_domains_without_one() {
    let data = DataDir::init();
    data.configure(&[("# default_quota_rps = 1800", "default_quota_rps = 3")]);
    data.create_domain("acme", &[]);
    let credential = data.create_credential("acme");
    data.create_key("acme", "k1", &[]);
    let server = Server::start(&data);
    let statuses = burst(&server, &credential, 20);
    let throttled = statuses.iter().filter(|status| **status == 429).count();
    assert!(
        throttled >= 10,
        "a default quota of 3/s must throttle a burst: {statuses:?}"
    );
}

#[test]
fn in_flight_limit_rejects_excess_requests() {
    let data = DataDir::init();
    data.configure(&[("max_in_flight = 1024", "max_in_flight = 1")]);
    data.create_domain("acme", &[]);
    let credential = data.create_credential("acme");
    data.create_key("acme", "k1", &[]);
    let server = Server::start(&data);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| burst(&server, &credential, 40)))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("worker"))
            .collect()
    });
    let throttled = statuses.iter().filter(|status| **status == 429).count();
    eprintln!(
        "{throttled} of {} requests over the in-flight limit",
        statuses.len()
    );
    assert!(
        throttled > 0,
        "overlapping requests must meet the limit of 1"
    );
    assert!(
        statuses
            .iter()
            .all(|status| *status == 200 || *status == 429)
    );
}
