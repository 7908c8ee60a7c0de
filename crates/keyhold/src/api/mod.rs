//! The XKS listener: TLS, routing by URI path prefix, SigV4, request bodies and XKS errors.
//!
//! [`handle`] turns one HTTP request into one response. It reads the current snapshot once, so a
//! request never sees half of a change, and it never touches the database. The operations
//! themselves live in [`crate::service`].

pub mod body;
pub mod error;
pub mod listener;
pub mod route;
pub mod throttle;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tracing::field;

use crate::auth::sigv4::{self, RequestParts};
use crate::keystore::model::Protection;
use crate::keystore::snapshot::{DomainView, Snapshot};
use crate::policy::RequestContext;
use crate::service::{self, decrypt, encrypt, health, metadata};
use error::{ErrorName, XksError};
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

fn process(
    state: &XksState,
    snapshot: &Snapshot,
    target: &Target,
    parts: &hyper::http::request::Parts,
    body: &[u8],
) -> Result<Vec<u8>, XksError> {
    let domain = snapshot
        .domain_by_prefix(&target.prefix)
        .ok_or_else(XksError::internal)?;
    let request = XksRequest {
        state,
        snapshot,
        domain,
        operation: target.operation,
        key_id: &target.key_id,
        signed: RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or_default(),
            headers: &parts.headers,
            body,
        },
    };
    request.process()
}

/// One request with everything it needs, before authentication.
struct XksRequest<'a> {
    state: &'a XksState,
    snapshot: &'a Snapshot,
    domain: &'a DomainView,
    operation: Operation,
    key_id: &'a str,
    signed: RequestParts<'a>,
}

impl XksRequest<'_> {
    fn process(&self) -> Result<Vec<u8>, XksError> {
        sigv4::verify(
            &self.signed,
            |access_key_id| self.domain.credential(access_key_id),
            &self.state.allowed_regions,
            SystemTime::now(),
        )
        .map_err(|error| XksError::from(&error))?;

        if let Some(rate) = self.domain.domain.quota_rps
            && !self
                .state
                .quotas
                .try_acquire(&self.domain.domain.id, rate, Instant::now())
        {
            return Err(XksError::new(
                ErrorName::Throttling,
                format!(
                    "request rate exceeds this key store's quota of {rate} requests per second"
                ),
            ));
        }

        let request = body::parse_request(self.signed.body, self.operation)?;
        if let Some(metadata) = &request.request_metadata {
            let span = tracing::Span::current();
            span.record("kms_request_id", metadata.kms_request_id.as_deref());
            span.record("kms_operation", metadata.kms_operation.as_deref());
        }

        let response = match self.operation {
            Operation::Health => self.health()?,
            Operation::KeyMetadata => self.key_metadata(&request)?,
            Operation::Encrypt => self.encrypt(&request)?,
            Operation::Decrypt => self.decrypt(&request)?,
        };
        Ok(response)
    }

    fn health(&self) -> Result<Vec<u8>, XksError> {
        let storage_current = self.state.storage_current.load(Ordering::Relaxed);
        let check = self.state.health.check(self.snapshot);
        let report = health::health(self.domain, &self.state.node, &check, storage_current)
            .map_err(service_error)?;
        to_json(&body::HealthResponse {
            xks_proxy_fleet_size: report.fleet_size,
            xks_proxy_vendor: health::VENDOR,
            xks_proxy_model: report.proxy_model,
            ekm_vendor: health::VENDOR,
            ekm_fleet_details: report
                .nodes
                .into_iter()
                .map(|(id, model, status)| body::FleetMember {
                    id,
                    model,
                    health_status: status.as_str(),
                })
                .collect(),
        })
    }

    fn key_metadata(&self, request: &body::RequestBody) -> Result<Vec<u8>, XksError> {
        let metadata = metadata::key_metadata(self.domain, self.key_id, &request_context(request))
            .map_err(service_error)?;
        to_json(&body::KeyMetadataResponse {
            key_spec: metadata.key_spec,
            key_usage: metadata.key_usage,
            key_status: metadata.key_status,
        })
    }

    fn encrypt(&self, request: &body::RequestBody) -> Result<Vec<u8>, XksError> {
        let inputs = body::encrypt_inputs(request)?;
        let output = encrypt::encrypt(
            self.domain,
            self.snapshot.hsm.as_deref(),
            &encrypt::EncryptInput {
                key_id: self.key_id,
                request: request_context(request),
                plaintext: &inputs.data,
                aad: inputs.aad.as_deref(),
                integrity_value: inputs.integrity_value,
            },
        )
        .map_err(service_error)?;
        to_json(&body::EncryptResponse {
            authentication_tag: body::base64(&output.tag),
            ciphertext: body::base64(&output.ciphertext),
            ciphertext_metadata: body::base64(&output.metadata),
            initialization_vector: body::base64(&output.iv),
            ciphertext_data_integrity_value: output
                .integrity_value
                .map(|value| body::base64(&value)),
        })
    }

    fn decrypt(&self, request: &body::RequestBody) -> Result<Vec<u8>, XksError> {
        let inputs = body::decrypt_inputs(request)?;
        let output = decrypt::decrypt(
            self.domain,
            self.snapshot.hsm.as_deref(),
            &decrypt::DecryptInput {
                key_id: self.key_id,
                request: request_context(request),
                ciphertext: &inputs.data,
                iv: &inputs.iv,
                tag: &inputs.tag,
                aad: inputs.aad.as_deref(),
                metadata: inputs.metadata.as_deref(),
            },
        )
        .map_err(service_error)?;
        to_json(&body::DecryptResponse {
            plaintext: zeroize::Zeroizing::new(body::base64(&output.plaintext)),
        })
    }
}

/// The request metadata fields that the key binding and the policies check.
fn request_context(request: &body::RequestBody) -> RequestContext<'_> {
    let Some(metadata) = request.request_metadata.as_ref() else {
        return RequestContext::default();
    };
    RequestContext {
        kms_key_arn: metadata.kms_key_arn.as_deref(),
        principal_arn: metadata.aws_principal_arn.as_deref(),
        operation: metadata.kms_operation.as_deref(),
        source_vpc: metadata.aws_source_vpc.as_deref(),
        source_vpce: metadata.aws_source_vpce.as_deref(),
        via_service: metadata.kms_via_service.as_deref(),
    }
}

/// Converts a service error, logging internal causes that the client does not see.
fn service_error(error: service::ServiceError) -> XksError {
    if let service::ServiceError::Internal(cause) = &error {
        tracing::error!(%cause, "XKS request failed inside the key manager");
    }
    XksError::from(error)
}

fn to_json(value: &impl serde::Serialize) -> Result<Vec<u8>, XksError> {
    serde_json::to_vec(value).map_err(|error| {
        tracing::error!(%error, "cannot serialize XKS response");
        XksError::internal()
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

fn finish(result: Result<Vec<u8>, XksError>, started: Instant) -> Response<Full<Bytes>> {
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

fn error_response(error: &XksError) -> Response<Full<Bytes>> {
    json_response(error.name().status(), error.to_json())
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The XKS API requires 405 for any method but POST on its paths; the body still explains.
fn method_not_allowed(method: &Method) -> Response<Full<Bytes>> {
    let error = XksError::validation(format!(
        "method {method} is not allowed; XKS APIs accept POST"
    ));
    let mut response = json_response(StatusCode::METHOD_NOT_ALLOWED, error.to_json());
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("POST"));
    response
}

/// Unauthenticated node health for operators and load balancers: the status and which part
/// failed, without error details. 200 unless the node is `UNAVAILABLE`, then 503.
async fn node_health(state: Arc<XksState>, method: &Method) -> Response<Full<Bytes>> {
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
        "node": state.node.id,
        "keyService": if check.software.is_ok() { "ok" } else { "failed" },
        "hsm": check.hsm.as_ref().map(|hsm| if hsm.is_ok() { "ok" } else { "failed" }),
        "storage": if storage_current { "current" } else { "unreadable; serving the last snapshot" },
        "revision": snapshot.revision,
    });
    let code = if status == health::HealthStatus::Unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(code, body.to_string().into_bytes())
}

/// Unauthenticated liveness probe for load balancers.
fn ping(method: &Method) -> Response<Full<Bytes>> {
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
