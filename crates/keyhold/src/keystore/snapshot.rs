//! The in-memory snapshot the XKS data path reads: domains by URI path prefix, their active
//! credentials and their keys with unwrapped material.
//!
//! A snapshot is immutable. The server builds a new one when the store's revision changes and
//! swaps it in atomically, so a request sees one consistent view and never touches the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::auth::Sigv4Secret;
use crate::crypto::DataKey;
use crate::hsm::Hsm;
use crate::policy::{Effect, Policy, Rule};

use super::model::{Domain, KeyInfo, Protection, StoredMaterial, VersionState, is_hsm_label_of};
use super::root::{RootOfTrust, WrapContext};
use super::store::Dataset;

/// Name of the system key used by the deep health check.
pub const HEALTH_KEY_NAME: &str = "xks-health";

/// Label of the HSM object used by the deep health check when the root of trust is an HSM.
pub const HSM_HEALTH_KEY_LABEL: &str = "keyhold/health";

/// A consistent view of everything the XKS data path needs.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Store revision the snapshot was built from.
    pub revision: i64,
    domains_by_prefix: HashMap<String, Arc<DomainView>>,
    /// Key for the deep health check; `None` when missing or not unwrappable.
    pub health_key: Option<DataKey>,
    /// The HSM, when the root of trust is one. It contains the HSM-resident keys.
    pub hsm: Option<Arc<Hsm>>,
    /// Rows that could not be used, for the operator; never contains secrets.
    pub problems: Vec<String>,
    /// Bindings learned on first use and not yet recorded: domain, key, KMS key ARN.
    pending_bindings: PendingBindings,
}

/// Bindings learned on first use, shared by a snapshot and its domains.
type PendingBindings = Arc<Mutex<Vec<(String, String, String)>>>;

/// One domain with its credentials and keys.
#[derive(Debug)]
pub struct DomainView {
    /// The domain's attributes.
    pub domain: Domain,
    credentials: HashMap<String, Sigv4Secret>,
    keys: HashMap<String, KeyView>,
    hsm_keys: usize,
    /// The domain's secondary authorization policy.
    pub policy: Option<Policy>,
    pending_bindings: PendingBindings,
}

/// One key with the material of its versions.
#[derive(Debug)]
pub struct KeyView {
    /// The key's attributes.
    pub info: KeyInfo,
    /// The key's own secondary authorization policy.
    pub policy: Option<Policy>,
    /// The KMS key ARN learned on first use, before the store records it.
    learned: OnceLock<String>,
    /// Versions sorted by number. A vector, because a key has few versions and a map node
    /// would reserve room for many inline AES keys per key.
    versions: Vec<(u32, VersionMaterial)>,
}

/// The usable form of a version's material.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "most versions are software keys; boxing them would add a pointer chase per request"
)]
enum VersionMaterial {
    /// Unwrapped material; `None` when it did not unwrap.
    Software(Option<DataKey>),
    /// Label of the HSM object.
    Hsm(String),
    /// Disabled; the material is not loaded.
    Disabled,
    /// Erased.
    Destroyed,
}

/// Result of looking up a key version.
#[derive(Debug)]
pub enum VersionLookup<'a> {
    /// Usable material in memory.
    Ready(&'a DataKey),
    /// Material inside the HSM, used through its label.
    Hsm(&'a str),
    /// The version exists but its material did not unwrap; the snapshot's problems name the cause.
    Unavailable,
    /// The version is disabled.
    Disabled,
    /// The version's material was destroyed.
    Destroyed,
    /// No such version.
    Missing,
}

impl Snapshot {
    /// Builds a snapshot, unwrapping every secret with `root`.
    ///
    /// A row that fails to unwrap does not stop the build: the version or credential becomes
    /// unusable and a line naming it is added to `problems`.
    pub fn build(dataset: Dataset, root: &dyn RootOfTrust) -> Self {
        let mut problems = Vec::new();
        let pending_bindings = PendingBindings::default();
        let mut domains: HashMap<String, DomainView> = dataset
            .domains
            .into_iter()
            .map(|domain| {
                let policy = parse_policy(
                    domain.policy.as_deref(),
                    &format!("domain {}", domain.id),
                    &mut problems,
                );
                let view = DomainView {
                    domain,
                    credentials: HashMap::new(),
                    keys: HashMap::new(),
                    hsm_keys: 0,
                    policy,
                    pending_bindings: pending_bindings.clone(),
                };
                (view.domain.id.clone(), view)
            })
            .collect();

        for (credential, wrapped) in dataset.credentials {
            let context = WrapContext::Credential {
                domain_id: &credential.domain_id,
                access_key_id: &credential.access_key_id,
            };
            let secret = root
                .unwrap(context, &wrapped)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok());
            match (domains.get_mut(&credential.domain_id), secret) {
                (Some(view), Some(secret)) => {
                    view.credentials
                        .insert(credential.access_key_id, Sigv4Secret::new(secret));
                }
                _ => problems.push(format!(
                    "credential {} of domain {} did not unwrap under the root key",
                    credential.access_key_id, credential.domain_id
                )),
            }
        }

        for (info, versions) in dataset.keys {
            let mut unwrapped = Vec::with_capacity(versions.len());
            for version in versions {
                let context = WrapContext::KeyVersion {
                    domain_id: &info.domain_id,
                    key_id: &info.key_id,
                    version: version.version,
                };
                let material = match (version.state, version.material) {
                    (VersionState::Destroyed, _) | (_, StoredMaterial::Destroyed) => {
                        VersionMaterial::Destroyed
                    }
                    (VersionState::Disabled, _) => VersionMaterial::Disabled,
                    (VersionState::Enabled, material) => match material {
                        StoredMaterial::Wrapped(wrapped) => {
                            let key = root
                                .unwrap(context, &wrapped)
                                .ok()
                                .and_then(|material| DataKey::new(&material).ok());
                            if key.is_none() {
                                problems.push(format!(
                                "version {} of key {} in domain {} did not unwrap under the root key",
                                version.version, info.key_id, info.domain_id
                            ));
                            }
                            VersionMaterial::Software(key)
                        }
                        StoredMaterial::Hsm(label) => {
                            if !is_hsm_label_of(
                                &label,
                                &info.domain_id,
                                &info.key_id,
                                version.version,
                            ) {
                                problems.push(format!(
                                "version {} of key {} in domain {} names HSM object {label:?}, which belongs to another key",
                                version.version, info.key_id, info.domain_id
                            ));
                                VersionMaterial::Software(None)
                            } else {
                                VersionMaterial::Hsm(label)
                            }
                        }
                        StoredMaterial::Destroyed => VersionMaterial::Destroyed,
                    },
                };
                unwrapped.push((version.version, material));
            }
            let key_policy = parse_policy(
                info.policy.as_deref(),
                &format!("key {} in domain {}", info.key_id, info.domain_id),
                &mut problems,
            );
            if let Some(view) = domains.get_mut(&info.domain_id) {
                if info.protection == Protection::Hsm {
                    view.hsm_keys += 1;
                }
                view.keys.insert(
                    info.key_id.clone(),
                    KeyView {
                        learned: OnceLock::new(),
                        policy: key_policy,
                        info,
                        versions: unwrapped,
                    },
                );
            }
        }

        let health_key = dataset
            .system_keys
            .iter()
            .find(|(name, _)| name == HEALTH_KEY_NAME)
            .and_then(|(name, wrapped)| {
                let material = root.unwrap(WrapContext::SystemKey { name }, wrapped).ok()?;
                DataKey::new(&material).ok()
            });
        if health_key.is_none() {
            problems.push(format!(
                "system key {HEALTH_KEY_NAME} is missing or did not unwrap"
            ));
        }

        Self {
            revision: dataset.revision,
            domains_by_prefix: domains
                .into_values()
                .map(|view| (view.domain.uri_prefix.clone(), Arc::new(view)))
                .collect(),
            health_key,
            hsm: root.hsm().cloned(),
            pending_bindings,
            problems,
        }
    }

    /// Finds the domain serving a URI path prefix.
    pub fn domain_by_prefix(&self, prefix: &str) -> Option<&Arc<DomainView>> {
        self.domains_by_prefix.get(prefix)
    }

    /// Number of domains.
    pub fn domain_count(&self) -> usize {
        self.domains_by_prefix.len()
    }

    /// Takes the bindings learned since the last call, for the store.
    pub fn take_pending_bindings(&self) -> Vec<(String, String, String)> {
        std::mem::take(
            &mut *self
                .pending_bindings
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Copies bindings learned in `previous` that the store has not recorded yet, so a new
    /// snapshot does not forget them.
    pub fn carry_learned_bindings(&self, previous: &Snapshot) {
        for (prefix, domain) in &self.domains_by_prefix {
            let Some(old_domain) = previous.domains_by_prefix.get(prefix) else {
                continue;
            };
            for (key_id, key) in &domain.keys {
                if key.info.bound_kms_key_arn.is_some() || !key.info.learn_binding {
                    continue;
                }
                if let Some(learned) = old_domain
                    .keys
                    .get(key_id)
                    .and_then(|old| old.learned.get())
                {
                    let _ = key.learned.set(learned.clone());
                }
            }
        }
    }
}

/// Parses a stored policy. A policy that does not parse denies every request, so a damaged row
/// never opens access.
fn parse_policy(text: Option<&str>, owner: &str, problems: &mut Vec<String>) -> Option<Policy> {
    let text = text?;
    match Policy::parse(text) {
        Ok(policy) => Some(policy),
        Err(error) => {
            problems.push(format!(
                "policy of {owner} is unusable and denies every request: {error}"
            ));
            Some(Policy {
                rules: vec![Rule {
                    name: "stored-policy-is-invalid".to_owned(),
                    effect: Effect::Deny,
                    accounts: None,
                    principals: None,
                    operations: None,
                    source_vpcs: None,
                    source_vpces: None,
                    via_services: None,
                }],
            })
        }
    }
}

impl DomainView {
    /// The secret of an active credential of this domain.
    pub fn credential(&self, access_key_id: &str) -> Option<&Sigv4Secret> {
        self.credentials.get(access_key_id)
    }

    /// Checks a key's binding learned on first use. The first ARN to reach a key becomes its
    /// binding and is queued for the store; any other ARN is refused.
    pub fn check_learned_binding(&self, key: &KeyView, kms_key_arn: &str) -> bool {
        let mut learned_now = false;
        let bound = key.learned.get_or_init(|| {
            learned_now = true;
            kms_key_arn.to_owned()
        });
        if learned_now {
            self.pending_bindings
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((
                    key.info.domain_id.clone(),
                    key.info.key_id.clone(),
                    kms_key_arn.to_owned(),
                ));
        }
        bound == kms_key_arn
    }

    /// Number of HSM-resident keys in this domain.
    pub fn hsm_key_count(&self) -> usize {
        self.hsm_keys
    }

    /// A key of this domain.
    pub fn key(&self, key_id: &str) -> Option<&KeyView> {
        self.keys.get(key_id)
    }
}

impl KeyView {
    /// The material of a version.
    pub fn version(&self, version: u32) -> VersionLookup<'_> {
        let found = self
            .versions
            .binary_search_by_key(&version, |(number, _)| *number)
            .ok()
            .map(|index| &self.versions[index].1);
        match found {
            Some(VersionMaterial::Software(Some(key))) => VersionLookup::Ready(key),
            Some(VersionMaterial::Hsm(label)) => VersionLookup::Hsm(label),
            Some(VersionMaterial::Software(None)) => VersionLookup::Unavailable,
            Some(VersionMaterial::Disabled) => VersionLookup::Disabled,
            Some(VersionMaterial::Destroyed) => VersionLookup::Destroyed,
            None => VersionLookup::Missing,
        }
    }
}
