//! The XKS listener: TLS, routing by URI path prefix, SigV4, request bodies and XKS errors.
//!
//! [`handle`] turns one HTTP request into one response. It reads the current snapshot once, so a
//! request never sees half of a change, and it never touches the database. The operations
//! themselves live in [`crate::service`].

pub mod body;
pub mod error;
pub mod listener;
mod request;
mod response;
pub mod route;
pub mod throttle;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use tracing::field;

use crate::keystore::model::Protection;
use crate::keystore::snapshot::Snapshot;
use crate::service::health;
use error::{ErrorName, XksError};
use request::process;
use response::{error_response, finish, method_not_allowed, node_health, ping};
use route::Operation;

/// Largest request body read, in bytes. It leaves room for the largest plaintext and AAD
/// Keyhold accepts, base64-encoded, plus metadata.
pub const MAX_BODY_LEN: usize = 256 * 1024;

/// Shared state of the XKS listener.
#[derive(Debug)]
pub struct XksState {
    /// The current snapshot, replaced whole when the store changes.
    pub snapshot: ArcSwap<Snapshot>,
    /// This node, for health reports.
    pub node: health::NodeInfo,
    /// False while the store cannot be read, so the snapshot may be stale.
    pub storage_current: AtomicBool,
    /// Accepted SigV4 regions; empty accepts any.
    pub allowed_regions: Vec<String>,
    /// Per-domain request quotas.
    pub quotas: throttle::DomainQuotas,
    /// The last deep health check.
    pub health: health::HealthCache,
}

impl XksState {
    /// Creates the state around a first snapshot.
    pub fn new(snapshot: Snapshot, node: health::NodeInfo, allowed_regions: Vec<String>) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            node,
            storage_current: AtomicBool::new(true),
            allowed_regions,
            quotas: throttle::DomainQuotas::default(),
            health: health::HealthCache::default(),
        }
    }
}

/// Handles one HTTP request on the XKS listener.
pub async fn handle(state: Arc<XksState>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    match parts.uri.path() {
        "/ping" => return ping(&parts.method),
        "/health" => return node_health(state, &parts.method).await,
        _ => {}
    }

    let snapshot = state.snapshot.load_full();
    let target = match resolve(&snapshot, &parts) {
        Ok(target) => target,
        Err(response) => return *response,
    };
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(error) => return finish(Err(error), started),
    };

    let span = tracing::debug_span!(
        "xks",
        operation = target.operation.as_str(),
        prefix = %target.prefix,
        key_id = target.key_id.as_str(),
        kms_request_id = field::Empty,
        kms_operation = field::Empty,
    );
    let result = if target.needs_hsm {
        // PKCS#11 calls block, so they run on the blocking pool, never on an async worker.
        let task_span = span.clone();
        let blocking = tokio::task::spawn_blocking(move || {
            task_span.in_scope(|| process(&state, &snapshot, &target, &parts, &body))
        });
        blocking.await.unwrap_or_else(|error| {
            span.in_scope(|| tracing::error!(%error, "XKS request task failed"));
            Err(XksError::internal())
        })
    } else {
        span.in_scope(|| process(&state, &snapshot, &target, &parts, &body))
    };
    span.in_scope(|| finish(result, started))
}

/// What a request addresses, once routing has succeeded.
#[derive(Debug)]
struct Target {
    prefix: String,
    operation: Operation,
    key_id: String,
    needs_hsm: bool,
}

/// Routes a request, returning the ready response for paths and methods that are not served.
fn resolve(
    snapshot: &Snapshot,
    parts: &hyper::http::request::Parts,
) -> Result<Target, Box<Response<Full<Bytes>>>> {
    let fail = |error: XksError| Box::new(error_response(&error));
    let route = route::parse(parts.uri.path()).ok_or_else(|| {
        fail(XksError::new(
            ErrorName::InvalidUriPath,
            "URI path is not an XKS API path; expected <prefix>/kms/xks/v1/...",
        ))
    })?;
    let domain = snapshot.domain_by_prefix(route.prefix).ok_or_else(|| {
        fail(XksError::new(
            ErrorName::InvalidUriPath,
            "no key store is served at this URI path prefix; check XksProxyUriPath",
        ))
    })?;
    let (operation, key_id) = route.target.ok_or_else(|| {
        fail(XksError::new(
            ErrorName::InvalidUriPath,
            "unknown XKS API path; expected /kms/xks/v1/health or /kms/xks/v1/keys/<id>/{metadata,encrypt,decrypt}",
        ))
    })?;
    if parts.method != Method::POST {
        return Err(Box::new(method_not_allowed(&parts.method)));
    }
    let key_id = key_id.unwrap_or_default();
    let needs_hsm = snapshot.hsm.is_some()
        && match operation {
            Operation::Health => true,
            Operation::KeyMetadata => false,
            Operation::Encrypt | Operation::Decrypt => domain
                .key(key_id)
                .is_some_and(|key| key.info.protection == Protection::Hsm),
        };
    Ok(Target {
        prefix: route.prefix.to_owned(),
        operation,
        key_id: key_id.to_owned(),
        needs_hsm,
    })
}

async fn read_body(body: Incoming) -> Result<Vec<u8>, XksError> {
    match Limited::new(body, MAX_BODY_LEN).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(XksError::new(
            ErrorName::UnsupportedOperation,
            format!("request body exceeds the maximum of {MAX_BODY_LEN} bytes"),
        )),
        Err(error) => Err(XksError::validation(format!(
            "cannot read request body: {error}"
        ))),
    }
}
