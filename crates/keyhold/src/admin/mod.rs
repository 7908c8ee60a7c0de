//! Admin listener, served over TLS on its own address (default `127.0.0.1:9443`) apart from the
//! XKS listener.
//!
//! It serves the admin REST API under `/v1`, with bearer tokens and roles (see
//! [`crate::control`]), and its OpenAPI document at `/openapi.json`. Operators also get
//! `/metrics` in the Prometheus text format. Load balancers get `/health` and `/ping`, which
//! need no token.

pub mod metrics;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};

use crate::api::{ConnectionInfo, XksState, node_health};
use crate::control::{ApiError, ApiRequest, ApiResponse, MAX_BODY_BYTES, SharedControl};

/// Maximum time that a client may take to send an admin request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared state of the admin listener.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// State of the XKS server, for health and metrics.
    pub xks: Arc<XksState>,
    /// Control plane that runs admin API requests.
    pub control: SharedControl,
    /// OpenAPI document, rendered once at startup.
    pub openapi: Bytes,
}

/// Routes one request on the admin listener and builds its response.
pub async fn handle(
    state: AdminState,
    _connection: Arc<ConnectionInfo>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match path.as_str() {
        "/health" => node_health(state.xks, &method).await,
        "/ping" | "/metrics" | "/openapi.json"
            if method != Method::GET && method != Method::HEAD =>
        {
            status(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD are allowed\n",
                Some("GET, HEAD"),
            )
        }
        "/ping" => status(StatusCode::OK, "pong\n", None),
        "/openapi.json" => {
            let mut response = Response::new(Full::new(state.openapi.clone()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        "/metrics" => metrics(state, &request).await,
        _ if path == "/v1" || path.starts_with("/v1/") => api(state, request).await,
        _ => status(
            StatusCode::NOT_FOUND,
            "not found; the admin API is under /v1 (see /openapi.json), and /metrics, /health \
             and /ping are here too\n",
            None,
        ),
    }
}

/// Serves `/metrics` to callers with an operator token.
async fn metrics(state: AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let authorization = header_text(request, AUTHORIZATION);
    let control = state.control.clone();
    let principal =
        tokio::task::spawn_blocking(move || control.authenticate(authorization.as_deref())).await;

    match principal {
        Ok(Ok(principal)) if principal.is_operator() => {
            let text = state.xks.metrics.render(&gauges(&state.xks));
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        Ok(Ok(_)) => api_error(&ApiError::forbidden(
            "metrics cover every domain, so they need an operator token",
        )),
        Ok(Err(error)) => api_error(&error),
        Err(error) => api_error(&ApiError::internal("the metrics task failed", &error)),
    }
}

/// Returns a header value as text, or `None` when it is missing or not visible ASCII.
fn header_text(request: &Request<Incoming>, name: hyper::header::HeaderName) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Authenticates the caller, then reads the body and runs the request on a blocking thread,
/// because the store is synchronous. A caller without a valid token learns nothing from the
/// body checks.
async fn api(state: AdminState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let authorization = header_text(&request, AUTHORIZATION);
    let content_type = header_text(&request, CONTENT_TYPE);
    let control = state.control.clone();
    let principal =
        match tokio::task::spawn_blocking(move || control.authenticate(authorization.as_deref()))
            .await
        {
            Ok(Ok(principal)) => principal,
            Ok(Err(error)) => return api_error(&error),
            Err(error) => {
                return api_error(&ApiError::internal("the admin API task failed", &error));
            }
        };

    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(error) => return api_error(&error),
    };
    if !body.is_empty() && !content_type.as_deref().is_some_and(is_json_media_type) {
        return api_error(&ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ));
    }

    let call = ApiRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        body,
    };
    let control = state.control.clone();
    match tokio::task::spawn_blocking(move || control.dispatch(&principal, &call)).await {
        Ok(response) => api_response(&response),
        Err(error) => api_error(&ApiError::internal("the admin API task failed", &error)),
    }
}

/// Reads a request body of at most [`MAX_BODY_BYTES`] within [`BODY_READ_TIMEOUT`].
async fn read_body(body: Incoming) -> Result<Vec<u8>, ApiError> {
    let collected = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(body, MAX_BODY_BYTES).collect(),
    )
    .await;
    match collected {
        Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds the maximum of {MAX_BODY_BYTES} bytes"),
        )),
        Ok(Err(error)) => {
            tracing::debug!(%error, "failed to read an admin request body");
            Err(ApiError::invalid(format!(
                "failed to read the request body: {error}"
            )))
        }
        Err(_) => Err(ApiError::invalid(format!(
            "the body did not arrive whole within {} s",
            BODY_READ_TIMEOUT.as_secs()
        ))),
    }
}

/// Returns whether a `Content-Type` value is `application/json`, with or without parameters.
fn is_json_media_type(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn api_error(error: &ApiError) -> Response<Full<Bytes>> {
    api_response(&ApiResponse {
        status: error.status,
        body: error.body(),
        allow: None,
        audit_target: None,
    })
}

/// Builds the HTTP response: pretty JSON, the `Allow` header for 405 and `WWW-Authenticate`
/// for 401.
fn api_response(api_response: &ApiResponse) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_vec_pretty(&api_response.body).unwrap_or_default();
    text.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = api_response.status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(allow) = api_response
        .allow
        .as_deref()
        .and_then(|allow| HeaderValue::from_str(allow).ok())
    {
        response.headers_mut().insert(ALLOW, allow);
    }
    if api_response.status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
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

/// Builds a plain-text response, with an `Allow` header when given.
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
