//! One authenticated XKS request: SigV4, quota, body parsing, and the call into the service
//! layer for its operation.

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use crate::audit::AuditRecord;
use crate::auth::sigv4::{self, RequestParts};
use crate::keystore::snapshot::{DomainView, Snapshot};
use crate::policy::RequestContext;
use crate::service::{self, decrypt, encrypt, health, metadata};

use super::error::{ErrorName, XksError};
use super::route::Operation;
use super::{Target, XksState, body};

pub(super) fn process(
    state: &XksState,
    snapshot: &Snapshot,
    target: &Target,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    audit: &mut AuditRecord,
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
    request.process(audit)
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
    fn process(&self, audit: &mut AuditRecord) -> Result<Vec<u8>, XksError> {
        sigv4::verify(
            &self.signed,
            |access_key_id| self.domain.credential(access_key_id),
            &self.state.allowed_regions,
            SystemTime::now(),
        )
        .map_err(|error| XksError::from(&error))?;

        if let Some(rate) = self
            .domain
            .domain
            .quota_rps
            .or(self.state.default_quota_rps)
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
            audit.kms_request_id.clone_from(&metadata.kms_request_id);
            audit.kms_operation.clone_from(&metadata.kms_operation);
            audit
                .aws_principal_arn
                .clone_from(&metadata.aws_principal_arn);
            audit.kms_key_arn.clone_from(&metadata.kms_key_arn);
            audit.kms_via_service.clone_from(&metadata.kms_via_service);
            audit.aws_source_vpc.clone_from(&metadata.aws_source_vpc);
            audit.aws_source_vpce.clone_from(&metadata.aws_source_vpce);
        }

        if self.operation != Operation::Health {
            self.state.audit.check_writable().map_err(|error| {
                tracing::error!(%error, "XKS request rejected: audit log not writable");
                XksError::internal()
            })?;
        }
        let response = match self.operation {
            Operation::Health => self.health()?,
            Operation::KeyMetadata => self.key_metadata(&request)?,
            Operation::Encrypt => self.encrypt(&request, audit)?,
            Operation::Decrypt => self.decrypt(&request, audit)?,
        };
        Ok(response)
    }

    fn health(&self) -> Result<Vec<u8>, XksError> {
        let storage_current = self.state.storage_current.load(Ordering::Relaxed);
        let check = self.state.health.check(self.snapshot);
        let peers = self.state.peers.load();
        let report = health::health(
            self.domain,
            &self.state.node,
            &check,
            storage_current,
            &peers,
        )
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

    fn key_metadata(&self, request: &body::RequestBody<'_>) -> Result<Vec<u8>, XksError> {
        let metadata = metadata::key_metadata(self.domain, self.key_id, &request_context(request))
            .map_err(service_error)?;
        to_json(&body::KeyMetadataResponse {
            key_spec: metadata.key_spec,
            key_usage: metadata.key_usage,
            key_status: metadata.key_status,
        })
    }

    fn encrypt(
        &self,
        request: &body::RequestBody<'_>,
        audit: &mut AuditRecord,
    ) -> Result<Vec<u8>, XksError> {
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
        audit.key_version = Some(output.version);
        let object = body::Base64Object::with_capacity(output.ciphertext.len() + 96)
            .field("authenticationTag", &output.tag)
            .field("ciphertext", &output.ciphertext)
            .field("ciphertextMetadata", &output.metadata)
            .field("initializationVector", &output.iv);
        Ok(match output.integrity_value {
            Some(value) => object.field("ciphertextDataIntegrityValue", &value),
            None => object,
        }
        .finish())
    }

    fn decrypt(
        &self,
        request: &body::RequestBody<'_>,
        audit: &mut AuditRecord,
    ) -> Result<Vec<u8>, XksError> {
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
        audit.key_version = Some(output.version);
        Ok(body::Base64Object::with_capacity(output.plaintext.len())
            .field("plaintext", &output.plaintext)
            .finish())
    }
}

/// The request metadata fields that the key binding and the policies check.
pub(super) fn request_context<'a>(request: &'a body::RequestBody<'_>) -> RequestContext<'a> {
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
pub(super) fn service_error(error: service::ServiceError) -> XksError {
    if let service::ServiceError::Internal(cause) = &error {
        tracing::error!(%cause, "XKS request failed inside the key manager");
    }
    XksError::from(error)
}

pub(super) fn to_json(value: &impl serde::Serialize) -> Result<Vec<u8>, XksError> {
    serde_json::to_vec(value).map_err(|error| {
        tracing::error!(%error, "cannot serialize XKS response");
        XksError::internal()
    })
}
