//! The audit log: one hash-chained JSON line per XKS request, written off the request path.
//!
//! Requests hand an [`AuditRecord`] to an [`AuditLog`], which queues it for the writer thread
//! in [`writer`]. The writer gives every line a sequence number and the SHA-256 of the line
//! before it, rotates files by size or day without breaking the chain, and reports whether it
//! can write. With the default fail-closed mode, crypto requests fail while it cannot.
//! [`chain`] verifies files. Records carry metadata only: never plaintext, key material,
//! tokens or secrets.

pub mod chain;
pub mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use serde::Serialize;

/// One audited event, before the writer adds its sequence number and chain hash.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Time of the event, RFC 3339 in UTC.
    pub time: String,
    /// Node that handled the request.
    pub node: String,
    /// `xks` for a request on the XKS API, `admin` for an administrative change.
    pub kind: &'static str,
    /// Domain id, when the path named a known domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// External key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Key version used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_version: Option<u32>,
    /// XKS operation, or the administrative action.
    pub operation: String,
    /// `requestMetadata.kmsOperation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_operation: Option<String>,
    /// `requestMetadata.kmsRequestId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_request_id: Option<String>,
    /// `requestMetadata.awsPrincipalArn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_principal_arn: Option<String>,
    /// `requestMetadata.kmsKeyArn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    /// `requestMetadata.kmsViaService`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_via_service: Option<String>,
    /// `requestMetadata.awsSourceVpc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_source_vpc: Option<String>,
    /// `requestMetadata.awsSourceVpce`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_source_vpce: Option<String>,
    /// Client IP address and port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    /// Subject of the client's TLS certificate, with mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls_subject: Option<String>,
    /// Principal of an administrative change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Object an administrative change acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `success`, or the XKS error name.
    pub result: String,
    /// For a denial, the policy rule or binding that denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<String>,
    /// Time from receiving the request to sending the response, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
}

/// What to do when records cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Reject crypto requests with `InternalException` until writing works again.
    Closed,
    /// Keep serving and count the records that were lost.
    Open,
}

/// The request side of the audit log: a bounded queue to the writer and its health.
#[derive(Debug, Clone)]
pub struct AuditLog {
    sender: SyncSender<AuditRecord>,
    health: Arc<AuditHealth>,
    mode: FailureMode,
}

/// State the writer shares with the request side.
#[derive(Debug, Default)]
pub struct AuditHealth {
    writable: AtomicBool,
    dropped: AtomicU64,
    written: AtomicU64,
}

impl AuditHealth {
    /// Whether the last write succeeded and nothing is waiting to be written again.
    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// Records lost because the queue was full or writing failed in fail-open mode.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn set_writable(&self, writable: bool) {
        self.writable.store(writable, Ordering::Release);
    }
}

/// Why a record could not be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The writer cannot write, or the queue is full, and the mode is fail-closed.
    #[error("the audit log cannot be written; requests are rejected until it can")]
    Unavailable,
}

impl AuditLog {
    /// Whether a crypto request may proceed: always in fail-open mode, and while the writer can
    /// write in fail-closed mode.
    ///
    /// # Errors
    ///
    /// Returns [`AuditError::Unavailable`] in fail-closed mode while writing fails.
    pub fn check_writable(&self) -> Result<(), AuditError> {
        if self.mode == FailureMode::Closed && !self.health.is_writable() {
            return Err(AuditError::Unavailable);
        }
        Ok(())
    }

    /// Queues a record without blocking.
    ///
    /// # Errors
    ///
    /// Returns [`AuditError::Unavailable`] in fail-closed mode when the queue is full or the
    /// writer has stopped; in fail-open mode the record is counted as dropped instead.
    pub fn record(&self, record: AuditRecord) -> Result<(), AuditError> {
        match self.sender.try_send(record) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.health.dropped.fetch_add(1, Ordering::Relaxed);
                match self.mode {
                    FailureMode::Closed => Err(AuditError::Unavailable),
                    FailureMode::Open => Ok(()),
                }
            }
        }
    }

    /// The writer's health, for metrics and health reports.
    pub fn health(&self) -> &AuditHealth {
        &self.health
    }
}

/// Current time as RFC 3339 with milliseconds, in UTC.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&format).unwrap_or_default()
}
