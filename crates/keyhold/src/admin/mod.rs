//! The admin listener: `/metrics` in the Prometheus text format, `/health` and `/ping`, over
//! TLS on its own address (default `127.0.0.1:9443`), apart from the XKS listener.
//!
//! TODO: bearer tokens and roles are not checked here yet, so the listener must stay on a
//! loopback or otherwise private address.

pub mod metrics;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::api::{ConnectionInfo, XksState, node_health};

/// Answers one request on the admin listener.
pub async fn handle(
    state: Arc<XksState>,
    _connection: Arc<ConnectionInfo>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    match request.uri().path() {
        "/health" => node_health(state, &method).await,
        "/ping" | "/metrics" if method != Method::GET && method != Method::HEAD => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is allowed\n",
            Some("GET, HEAD"),
        ),
        "/ping" => status(StatusCode::OK, "pong\n", None),
        "/metrics" => {
            let text = state.metrics.render(&gauges(&state));
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /health or /ping\n",
            None,
        ),
    }
}

fn gauges(state: &XksState) -> metrics::Gauges {
    let now = crate::keystore::unix_now_millis();
    let checked = state.checked_at_millis.load(Ordering::Relaxed);
    let audit = state.audit.health();
    metrics::Gauges {
        cache_age_secs: now.saturating_sub(checked) as f64 / 1000.0,
        storage_up: state.storage_current.load(Ordering::Relaxed),
        hsm_up: state
            .health
            .last()
            .and_then(|check| check.hsm.map(|hsm| hsm.is_ok())),
        audit_writable: audit.is_writable(),
        audit_written: audit.written(),
        audit_dropped: audit.dropped(),
        nodes: 1,
    }
}

fn status(
    code: StatusCode,
    text: &'static str,
    allow: Option<&'static str>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Some(allow) = allow {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    response
}
