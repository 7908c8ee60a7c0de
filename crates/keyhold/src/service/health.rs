//! GetHealthStatus: a deep check that encrypts and decrypts with the dedicated health key.
//!
//! The check never uses a customer key, so health polls leave no crypto activity on keys that
//! back KMS keys.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::crypto;
use crate::hsm::{Hsm, HsmError, HsmKey};
use crate::keystore::model::DomainStatus;
use crate::keystore::snapshot::{DomainView, HSM_HEALTH_KEY_LABEL, Snapshot};

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

    /// Parses an XKS `healthStatus` string, or returns `None` for any other text.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ACTIVE" => Some(Self::Active),
            "DEGRADED" => Some(Self::Degraded),
            "UNAVAILABLE" => Some(Self::Unavailable),
            _ => None,
        }
    }
}

/// How often a node records its heartbeat in the store.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Maximum age of a node's last heartbeat for health responses to list it. Five heartbeat
/// intervals let a node miss a few beats, for example during a database failover, before it
/// leaves the fleet list.
pub const NODE_LIVENESS: Duration = Duration::from_secs(5);

/// Maximum number of `ekmFleetDetails` entries: the XKS API allows 1 to 10.
pub const MAX_FLEET_DETAILS: usize = 10;

/// Another live node of the fleet, as its last heartbeat recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Node id.
    pub id: String,
    /// Model string the node reported.
    pub model: String,
    /// Health status the node reported.
    pub status: HealthStatus,
}

/// Facts about this node that health reports carry.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node id, unique in the fleet.
    pub id: String,
    /// Model string: product, version and root of trust.
    pub model: String,
}

/// Response data of GetHealthStatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// Number of live proxy instances, this node included.
    pub fleet_size: u32,
    /// `xksProxyModel`.
    pub proxy_model: String,
    /// One entry per key manager instance, this node first and at most
    /// [`MAX_FLEET_DETAILS`]: id, model and status.
    pub nodes: Vec<(String, String, HealthStatus)>,
}

/// Maximum time a deep-check result is reused. The XKS API allows up to one minute; one second
/// keeps HSM traffic from health polls negligible while failures still show at once.
pub const CHECK_MAX_AGE: Duration = Duration::from_secs(1);

/// Outcome of one deep check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Round trip with the health key in memory.
    pub software: Result<(), String>,
    /// Round trip with the health key inside the HSM; `None` without an HSM.
    pub hsm: Option<Result<(), String>>,
}

/// How long every HSM probe may find all sessions busy before the check reports the HSM
/// failed. A pool busy with requests is no sign of a fault, but one that stays busy this long
/// suggests calls that do not return.
pub const HSM_BUSY_GRACE: Duration = Duration::from_secs(5);

/// The last deep-check result and when it was taken.
#[derive(Debug, Default)]
pub struct HealthCache {
    last: Mutex<Option<(Instant, CheckResult)>>,
    /// Since when every HSM probe found no free session; `None` once a probe got one.
    hsm_busy_since: Mutex<Option<Instant>>,
}

impl HealthCache {
    /// The last result, however old, without running a check.
    pub fn last(&self) -> Option<CheckResult> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref().map(|(_, result)| result.clone())
    }

    /// Returns a result no older than [`CHECK_MAX_AGE`], running the check when needed. With an
    /// HSM this may block on PKCS#11 calls.
    pub fn check(&self, snapshot: &Snapshot) -> CheckResult {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < CHECK_MAX_AGE
        {
            return result.clone();
        }
        let previous_hsm = last.as_ref().and_then(|(_, result)| result.hsm.clone());
        let result = CheckResult {
            software: deep_check(snapshot),
            hsm: snapshot
                .hsm
                .as_deref()
                .map(|hsm| self.judge_hsm_probe(hsm_check(hsm), previous_hsm)),
        };
        if let Err(error) = &result.software {
            tracing::error!(%error, "deep health check failed");
        }
        if let Some(Err(error)) = &result.hsm {
            tracing::error!(%error, "HSM deep health check failed");
        }
        *last = Some((Instant::now(), result.clone()));
        result
    }

    /// Turns an HSM probe into a check result. A probe that found every session busy keeps the
    /// previous result until the sessions have stayed busy for [`HSM_BUSY_GRACE`].
    fn judge_hsm_probe(
        &self,
        probe: HsmProbe,
        previous: Option<Result<(), String>>,
    ) -> Result<(), String> {
        let mut busy_since = self
            .hsm_busy_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match probe {
            HsmProbe::Passed => {
                *busy_since = None;
                Ok(())
            }
            HsmProbe::Failed(error) => {
                *busy_since = None;
                Err(error)
            }
            HsmProbe::Busy(error) => {
                let busy_for = busy_since.get_or_insert_with(Instant::now).elapsed();
                if busy_for < HSM_BUSY_GRACE {
                    tracing::debug!(%error, ?busy_for, "HSM health probe found every session busy");
                    previous.unwrap_or(Ok(()))
                } else {
                    Err(format!(
                        "{error}; every session has been busy for {}s",
                        busy_for.as_secs()
                    ))
                }
            }
        }
    }
}

/// Outcome of one HSM round trip.
#[derive(Debug)]
enum HsmProbe {
    Passed,
    /// No session was free within the session wait.
    Busy(String),
    Failed(String),
}

/// The node's status: `UNAVAILABLE` when software keys fail, `DEGRADED` when the HSM fails or
/// the store cannot be read, otherwise `ACTIVE`. `hsm_keys` is true when the caller depends on
/// HSM-resident keys, which makes an HSM failure `UNAVAILABLE` for it.
pub fn node_status(check: &CheckResult, storage_current: bool, hsm_keys: bool) -> HealthStatus {
    let hsm_failed = matches!(check.hsm, Some(Err(_)));
    if check.software.is_err() || (hsm_failed && hsm_keys) {
        HealthStatus::Unavailable
    } else if hsm_failed || !storage_current {
        HealthStatus::Degraded
    } else {
        HealthStatus::Active
    }
}

/// Builds the health report for a domain's health request. `peers` are the other live nodes
/// from the last heartbeat round, and this node comes first with its current status.
///
/// # Errors
///
/// Returns [`ServiceError::DomainDisabled`] when the domain's kill switch is on.
pub fn health(
    domain: &DomainView,
    node: &NodeInfo,
    check: &CheckResult,
    storage_current: bool,
    peers: &[Peer],
) -> Result<HealthReport, ServiceError> {
    if domain.domain.status == DomainStatus::Disabled {
        return Err(ServiceError::DomainDisabled(domain.domain.id.clone()));
    }
    let status = node_status(check, storage_current, domain.hsm_key_count() > 0);
    let (fleet_size, nodes) = fleet_details(node, status, peers);
    Ok(HealthReport {
        fleet_size,
        proxy_model: format!("{VENDOR} {}", env!("CARGO_PKG_VERSION")),
        nodes,
    })
}

/// Counts the live nodes and lists at most [`MAX_FLEET_DETAILS`] of them, this node first
/// with `status`. A peer with this node's id is skipped, so the node is never counted twice.
fn fleet_details(
    node: &NodeInfo,
    status: HealthStatus,
    peers: &[Peer],
) -> (u32, Vec<(String, String, HealthStatus)>) {
    let mut nodes = vec![(node.id.clone(), node.model.clone(), status)];
    let others = peers.iter().filter(|peer| peer.id != node.id);
    nodes.extend(
        others
            .clone()
            .take(MAX_FLEET_DETAILS - 1)
            .map(|peer| (peer.id.clone(), peer.model.clone(), peer.status)),
    );
    let fleet_size = u32::try_from(others.count() + 1).unwrap_or(u32::MAX);
    (fleet_size, nodes)
}

/// Encrypts and decrypts 32 random bytes with the HSM health key.
fn hsm_check(hsm: &Hsm) -> HsmProbe {
    let failed = |error: HsmError| match error {
        HsmError::Timeout(_) => HsmProbe::Busy(error.to_string()),
        other => HsmProbe::Failed(other.to_string()),
    };
    let mut probe = zeroize::Zeroizing::new([0u8; crypto::KEY_LEN]);
    let mut iv = [0u8; crypto::IV_LEN];
    if let Err(error) =
        crypto::fill_random(probe.as_mut()).and_then(|()| crypto::fill_random(&mut iv))
    {
        return HsmProbe::Failed(error.to_string());
    }
    let key = HsmKey::Label(HSM_HEALTH_KEY_LABEL);
    let (ciphertext, tag) = match hsm.encrypt(key, &iv, probe.as_ref(), HEALTH_AAD) {
        Ok(sealed) => sealed,
        Err(error) => return failed(error),
    };
    match hsm.decrypt(key, &iv, &ciphertext, &tag, HEALTH_AAD) {
        Ok(opened) if *opened == *probe => HsmProbe::Passed,
        Ok(_) => HsmProbe::Failed("HSM health key round trip returned different bytes".to_owned()),
        Err(error) => failed(error),
    }
}

/// AAD of health-check encryptions, so they can never pass for customer ciphertexts.
const HEALTH_AAD: &[u8] = b"keyhold health check";

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
    let sealed = key
        .seal(probe.as_ref(), HEALTH_AAD)
        .map_err(|error| error.to_string())?;
    let opened = key
        .open(&sealed.iv, &sealed.ciphertext, &sealed.tag, HEALTH_AAD)
        .map_err(|error| error.to_string())?;
    if *opened == *probe {
        Ok(())
    } else {
        Err("health key round trip returned different bytes".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_hsm_keeps_last_result_within_grace() {
        let cache = HealthCache::default();
        let busy = || HsmProbe::Busy("no free HSM session within 0ns".to_owned());

        assert_eq!(cache.judge_hsm_probe(busy(), Some(Ok(()))), Ok(()));
        assert_eq!(cache.judge_hsm_probe(busy(), None), Ok(()));
        let failed = Err("device error".to_owned());
        assert_eq!(cache.judge_hsm_probe(busy(), Some(failed.clone())), failed);

        // Busy for longer than the grace period counts as a failure.
        let long_ago = Instant::now().checked_sub(HSM_BUSY_GRACE + Duration::from_secs(1));
        *cache.hsm_busy_since.lock().expect("lock") = long_ago;
        let error = cache
            .judge_hsm_probe(busy(), Some(Ok(())))
            .expect_err("busy past the grace period");
        assert!(error.contains("every session has been busy for"), "{error}");

        // A probe that gets a session ends the busy period.
        assert_eq!(cache.judge_hsm_probe(HsmProbe::Passed, None), Ok(()));
        assert!(cache.hsm_busy_since.lock().expect("lock").is_none());
        assert_eq!(cache.judge_hsm_probe(busy(), Some(Ok(()))), Ok(()));
    }

    fn check(software: bool, hsm: Option<bool>) -> CheckResult {
        let outcome = |ok: bool| if ok { Ok(()) } else { Err("failed".to_owned()) };
        CheckResult {
            software: outcome(software),
            hsm: hsm.map(outcome),
        }
    }

    #[test]
    fn fleet_lists_this_node_first() {
        let node = NodeInfo {
            id: "node-05".to_owned(),
            model: "this model".to_owned(),
        };
        let peers: Vec<Peer> = (0..12)
            .map(|index| Peer {
                id: format!("node-{index:02}"),
                model: "peer model".to_owned(),
                status: HealthStatus::Degraded,
            })
            .collect();

        let (size, nodes) = fleet_details(&node, HealthStatus::Active, &peers);
        assert_eq!(size, 12);
        assert_eq!(nodes.len(), MAX_FLEET_DETAILS);
        assert_eq!(nodes[0].0, "node-05");
        assert_eq!(nodes[0].2, HealthStatus::Active);
        assert_eq!(nodes[1].0, "node-00");
        assert!(nodes[1..].iter().all(|entry| entry.0 != "node-05"));

        let (alone, nodes) = fleet_details(&node, HealthStatus::Degraded, &[]);
        assert_eq!(alone, 1);
        assert_eq!(
            nodes,
            [(
                "node-05".to_owned(),
                "this model".to_owned(),
                HealthStatus::Degraded
            )]
        );
    }

    #[test]
    fn status_parses_its_strings() {
        for status in [
            HealthStatus::Active,
            HealthStatus::Degraded,
            HealthStatus::Unavailable,
        ] {
            assert_eq!(HealthStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(HealthStatus::parse("active"), None);
    }

    #[test]
    fn status_reflects_failures() {
        assert_eq!(
            node_status(&check(true, None), true, false),
            HealthStatus::Active
        );
        assert_eq!(
            node_status(&check(true, Some(true)), true, true),
            HealthStatus::Active
        );
        assert_eq!(
            node_status(&check(true, None), false, false),
            HealthStatus::Degraded
        );
        assert_eq!(
            node_status(&check(true, Some(false)), true, false),
            HealthStatus::Degraded
        );
        assert_eq!(
            node_status(&check(true, Some(false)), true, true),
            HealthStatus::Unavailable
        );
        assert_eq!(
            node_status(&check(false, None), true, false),
            HealthStatus::Unavailable
        );
    }
}
