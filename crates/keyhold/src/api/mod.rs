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
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use tracing::field;

use crate::admin::metrics::Metrics;
use crate::audit::{self, AuditLog, AuditRecord};
use crate::keystore::model::Protection;
use crate::keystore::snapshot::Snapshot;
use crate::service::health;
use error::{ErrorName, XksError};
use request::process;
pub(crate) use response::node_health;
use response::{error_response, finish, method_not_allowed, ping};
use route::Operation;

/// Largest request body read, in bytes. It leaves room for the largest plaintext and AAD
/// Keyhold accepts, base64-encoded, plus metadata.
pub const MAX_BODY_LEN: usize = 256 * 1024;

/// Default for [`XksState::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// Default for [`XksState::body_read_timeout`].
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared state of the XKS listener.
#[derive(Debug)]
pub struct XksState {
    /// The current snapshot, replaced whole when the store changes.
    pub snapshot: ArcSwap<Snapshot>,
    /// This node, for health reports.
    pub node: health::NodeInfo,
    /// False while the store cannot be read, so the snapshot may be stale.
    pub storage_current: AtomicBool,
    /// The other live nodes as of the last heartbeat round, which the refresher replaces.
    /// While the store cannot be read, it keeps the last list it read.
    pub peers: ArcSwap<Vec<health::Peer>>,
    /// Accepted SigV4 regions; empty accepts any.
    pub allowed_regions: Vec<String>,
    /// Per-domain request quotas.
    pub quotas: throttle::DomainQuotas,
    /// The last deep health check.
    pub health: health::HealthCache,
    /// Where every request is recorded.
    pub audit: AuditLog,
    /// Maximum time a request may wait for the HSM.
    pub time_budget: Duration,
    /// Maximum time a client may take to send a request body after its headers.
    pub body_read_timeout: Duration,
    /// Counters and histograms for `/metrics`.
    pub metrics: Metrics,
    /// When the refresher last confirmed the snapshot current, Unix milliseconds.
    pub checked_at_millis: AtomicU64,
    /// Requests in progress; at the limit, new ones get `ThrottlingException`.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Maximum number of requests in progress at once.
    pub max_in_flight: usize,
    /// Quota of domains that set none; `None` means no quota.
    pub default_quota_rps: Option<u32>,
}

impl XksState {
    /// Creates the state around a first snapshot.
    pub fn new(
        snapshot: Snapshot,
        node: health::NodeInfo,
        allowed_regions: Vec<String>,
        audit: AuditLog,
        time_budget: Duration,
    ) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            node,
            storage_current: AtomicBool::new(true),
            peers: ArcSwap::from_pointee(Vec::new()),
            allowed_regions,
            quotas: throttle::DomainQuotas::default(),
            health: health::HealthCache::default(),
            audit,
            time_budget,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            metrics: Metrics::default(),
            checked_at_millis: AtomicU64::new(crate::keystore::unix_now_millis()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_IN_FLIGHT)),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            default_quota_rps: None,
        }
    }
}

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    /// Client address and port.
    pub peer: Option<String>,
    /// Subject common name or first DNS name of the client certificate, with mutual TLS.
    pub client_subject: Option<String>,
}

/// Handles one HTTP request on the XKS listener.
pub async fn handle(
    state: Arc<XksState>,
    connection: Arc<ConnectionInfo>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
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
    // The global limit protects every domain when the node as a whole is overloaded.
    let Ok(_in_flight) = state.in_flight.clone().try_acquire_owned() else {
        state.metrics.observe_throttled("");
        return finish(
            Err(XksError::new(
                ErrorName::Throttling,
                format!(
                    "the key manager is at its limit of {} requests in progress; retry",
                    state.max_in_flight
                ),
            )),
            started,
        );
    };
    let operation_name = target.operation.as_str();
    let mut record = AuditRecord {
        node: state.node.id.clone(),
        kind: "xks",
        domain: snapshot
            .domain_by_prefix(&target.prefix)
            .map(|domain| domain.domain.id.clone()),
        key_id: (!target.key_id.is_empty()).then(|| target.key_id.clone()),
        operation: target.operation.as_str().to_owned(),
        client_address: connection.peer.clone(),
        mtls_subject: connection.client_subject.clone(),
        ..AuditRecord::default()
    };
    let span = tracing::debug_span!(
        "xks",
        operation = target.operation.as_str(),
        prefix = %target.prefix,
        key_id = target.key_id.as_str(),
        kms_request_id = field::Empty,
        kms_operation = field::Empty,
    );

    // Without a limit, a client that stops mid-body would hold its connection forever.
    let body = tokio::time::timeout(state.body_read_timeout, read_body(body))
        .await
        .unwrap_or_else(|_| {
            Err(XksError::validation(format!(
                "request body not received within {:?}",
                state.body_read_timeout
            )))
        });
    let result = match body {
        Err(error) => Err(error),
        Ok(body) if target.needs_hsm => {
            // PKCS#11 calls block, so they run on the blocking pool unless the operator declared
            // the module fast with `inline_calls`. Requests beyond the number of sessions wait
            // here, at most the session wait, because on the pool they would only hold threads.
            // The time budget turns a slow HSM into a retryable error before AWS KMS times out.
            // A health check mostly returns the cached deep check, and its own HSM probe
            // tolerates busy sessions, so it takes no permit and never runs inline.
            let deadline = tokio::time::Instant::now() + state.time_budget;
            let is_health = target.operation == Operation::Health;
            let hsm = snapshot.hsm.clone().filter(|_| !is_health);
            let inline = hsm.as_ref().is_some_and(|hsm| hsm.inline_calls());
            let slot = async {
                match &hsm {
                    Some(hsm) => hsm.reserve_session().await,
                    None => Ok(None),
                }
            };
            match tokio::time::timeout_at(deadline, slot).await {
                Err(_) => Err(span.in_scope(|| hsm_timeout(&state))),
                Ok(Err(error)) => Err(span.in_scope(|| {
                    request::service_error(crate::service::ServiceError::from_hsm(error))
                })),
                Ok(Ok(_slot)) if inline => span
                    .in_scope(|| process(&state, &snapshot, &target, &parts, &body, &mut record)),
                Ok(Ok(slot)) => {
                    let task_span = span.clone();
                    let task_state = state.clone();
                    let operation = target.operation;
                    let blocking = tokio::task::spawn_blocking(move || {
                        let _slot = slot;
                        task_span.in_scope(|| {
                            let result = process(
                                &task_state,
                                &snapshot,
                                &target,
                                &parts,
                                &body,
                                &mut record,
                            );
                            (result, record)
                        })
                    });
                    match tokio::time::timeout_at(deadline, blocking).await {
                        Ok(Ok((result, filled))) => {
                            record = filled;
                            result
                        }
                        Ok(Err(error)) => {
                            span.in_scope(|| tracing::error!(%error, "XKS request task failed"));
                            record = AuditRecord {
                                operation: operation.as_str().to_owned(),
                                ..AuditRecord::default()
                            };
                            Err(XksError::internal())
                        }
                        Err(_) => {
                            record = AuditRecord {
                                operation: operation.as_str().to_owned(),
                                ..AuditRecord::default()
                            };
                            Err(span.in_scope(|| hsm_timeout(&state)))
                        }
                    }
                }
            }
        }
        Ok(body) => {
            span.in_scope(|| process(&state, &snapshot, &target, &parts, &body, &mut record))
        }
    };
    let result = span.in_scope(|| audit(&state, operation_name, record, result, started));
    span.in_scope(|| finish(result, started))
}

/// Logs and builds the error of a request whose HSM work outlasted the time budget.
fn hsm_timeout(state: &XksState) -> XksError {
    tracing::warn!(budget = ?state.time_budget, "XKS request exceeded its time budget");
    XksError::new(
        ErrorName::DependencyTimeout,
        "the key manager's HSM did not answer within the request time budget; retry",
    )
}

/// Writes the audit record of a request. In fail-closed mode a record that cannot be queued
/// turns a successful crypto result into `InternalException`, so no unaudited use succeeds.
fn audit(
    state: &XksState,
    operation: &'static str,
    mut record: AuditRecord,
    result: Result<Vec<u8>, XksError>,
    started: Instant,
) -> Result<Vec<u8>, XksError> {
    let elapsed = started.elapsed();
    record.time = audit::now_rfc3339();
    record.latency_us = Some(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    match &result {
        Ok(_) => record.result = "success".to_owned(),
        Err(error) => {
            record.result = error.name().as_str().to_owned();
            match error.name() {
                ErrorName::AccessDenied => record.denied_by = Some(error.message().to_owned()),
                ErrorName::Throttling => state
                    .metrics
                    .observe_throttled(record.domain.as_deref().unwrap_or_default()),
                _ => {}
            }
        }
    }
    let result_name = match &result {
        Ok(_) => "success",
        Err(error) => error.name().as_str(),
    };
    state.metrics.observe_request(
        record.domain.as_deref().unwrap_or_default(),
        operation,
        result_name,
        elapsed,
    );
    match state.audit.record(record) {
        Ok(()) => result,
        Err(error) => {
            tracing::error!(%error, "XKS request rejected because its audit record cannot be written");
            Err(XksError::internal())
        }
    }
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

/// Reads a request body into a buffer that is wiped when dropped, as an encrypt body carries
/// the plaintext.
async fn read_body(body: Incoming) -> Result<crate::crypto::Wiped, XksError> {
    match Limited::new(body, MAX_BODY_LEN).collect().await {
        Ok(collected) => Ok(crate::crypto::Wiped::new(collected.to_bytes().to_vec())),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(XksError::new(
            ErrorName::UnsupportedOperation,
            format!("request body exceeds the maximum of {MAX_BODY_LEN} bytes"),
        )),
        Err(error) => Err(XksError::validation(format!(
            "cannot read request body: {error}"
        ))),
    }
}
