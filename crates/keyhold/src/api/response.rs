//! Building responses: JSON bodies, XKS errors, 405, and the unauthenticated `/ping` and
//! `/health` endpoints.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Response, StatusCode};

use crate::service::health;

use super::XksState;
use super::error::XksError;

pub(super) fn finish(result: Result<Vec<u8>, XksError>, started: Instant) -> Response<Full<Bytes>> {
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match result {
        Ok(body) => {
            tracing::debug!(latency_us, "XKS request succeeded");
            json_response(StatusCode::OK, body)
        }
        Err(error) => {
            tracing::debug!(
                latency_us,
                error = error.name().as_str(),
                message = error.message(),
                "XKS request failed"
            );
            error_response(&error)
        }
    }
}

pub(super) fn error_response(error: &XksError) -> Response<Full<Bytes>> {
    json_response(error.name().status(), error.to_json())
}

pub(super) fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The XKS API requires 405 for any method but POST on its paths. It defines no error name for
/// this case, so the response has no XKS error body; the `Allow` header names POST.
pub(super) fn method_not_allowed(method: &Method) -> Response<Full<Bytes>> {
    tracing::debug!(%method, "method not allowed on an XKS path");
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("POST"));
    response
}

/// Unauthenticated node health for operators and load balancers: the status and which part
/// failed, without error details. 200 unless the node is `UNAVAILABLE`, then 503.
pub(crate) async fn node_health(state: Arc<XksState>, method: &Method) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let snapshot = state.snapshot.load_full();
    let checked = {
        let state = state.clone();
        let snapshot = snapshot.clone();
        tokio::task::spawn_blocking(move || state.health.check(&snapshot)).await
    };
    let Ok(check) = checked else {
        return error_response(&XksError::internal());
    };
    let storage_current = state.storage_current.load(Ordering::Relaxed);
    let status = health::node_status(&check, storage_current, false);
    let body = serde_json::json!({
        "status": status.as_str(),
        "keyService": if check.software.is_ok() { "ok" } else { "failed" },
        "hsm": check.hsm.as_ref().map(|hsm| if hsm.is_ok() { "ok" } else { "failed" }),
        "storage": if storage_current { "current" } else { "unreadable; serving the last snapshot" },
    });
    let code = if status == health::HealthStatus::Unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(code, body.to_string().into_bytes())
}

/// Unauthenticated liveness probe for load balancers.
pub(super) fn ping(method: &Method) -> Response<Full<Bytes>> {
    if method == Method::GET || method == Method::HEAD {
        let mut response = Response::new(Full::new(Bytes::from_static(b"pong\n")));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}
