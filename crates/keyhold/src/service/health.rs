//! GetHealthStatus: a deep check that encrypts and decrypts with the dedicated health key.
//!
//! The check never uses a customer key, so health polls leave no crypto activity on keys that
//! back KMS keys.

use crate::crypto;
use crate::keystore::model::DomainStatus;
use crate::keystore::snapshot::{DomainView, Snapshot};

use super::ServiceError;

/// Vendor reported as `xksProxyVendor` and `ekmVendor`.
pub const VENDOR: &str = "Keyhold";

/// Health of one key manager instance, as the XKS API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// Healthy.
    Active,
    /// Unhealthy but serving.
    Degraded,
    /// Cannot serve.
    Unavailable,
}

impl HealthStatus {
    /// The XKS `healthStatus` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Degraded => "DEGRADED",
            Self::Unavailable => "UNAVAILABLE",
        }
    }
}

/// Facts about this node that health reports carry.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node id, unique in the fleet.
    pub id: String,
    /// Model string: product, version and root of trust.
    pub model: String,
}

/// The answer to GetHealthStatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// Number of proxy instances.
    pub fleet_size: u32,
    /// `xksProxyModel`.
    pub proxy_model: String,
    /// One entry per key manager instance: id, model and status.
    pub nodes: Vec<(String, String, HealthStatus)>,
}

/// Runs the deep check for a domain's health request.
///
/// `storage_current` is false when the server could not read the store at its last poll, so it
/// is serving from an older snapshot.
///
/// # Errors
///
/// Returns [`ServiceError::DomainDisabled`] when the domain's kill switch is on.
pub fn health(
    domain: &DomainView,
    snapshot: &Snapshot,
    node: &NodeInfo,
    storage_current: bool,
) -> Result<HealthReport, ServiceError> {
    if domain.domain.status == DomainStatus::Disabled {
        return Err(ServiceError::DomainDisabled(domain.domain.id.clone()));
    }
    let status = match (deep_check(snapshot), storage_current) {
        (Err(_), _) => HealthStatus::Unavailable,
        (Ok(()), false) => HealthStatus::Degraded,
        (Ok(()), true) => HealthStatus::Active,
    };
    Ok(HealthReport {
        fleet_size: 1,
        proxy_model: format!("{VENDOR} {}", env!("CARGO_PKG_VERSION")),
        nodes: vec![(node.id.clone(), node.model.clone(), status)],
    })
}

/// Encrypts and decrypts 32 random bytes with the health key.
///
/// # Errors
///
/// Returns a description of the failed step.
pub fn deep_check(snapshot: &Snapshot) -> Result<(), String> {
    let key = snapshot
        .health_key
        .as_ref()
        .ok_or_else(|| "the health key is missing or did not unwrap".to_owned())?;
    let probe = crypto::generate_key().map_err(|error| error.to_string())?;
    let framed =
        crypto::frame_aad(b"keyhold health check", b"").map_err(|error| error.to_string())?;
    let sealed = key
        .seal(probe.as_ref(), &framed)
        .map_err(|error| error.to_string())?;
    let opened = key
        .open(&sealed.iv, &sealed.ciphertext, &sealed.tag, &framed)
        .map_err(|error| error.to_string())?;
    if opened.as_slice() == probe.as_ref() {
        Ok(())
    } else {
        Err("health key round trip returned different bytes".to_owned())
    }
}
