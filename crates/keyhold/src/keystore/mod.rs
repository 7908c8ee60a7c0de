//! Metadata and encryption at rest: the SQLite store, the root of trust, the in-memory snapshot,
//! and [`KeyStore`], which creates objects with freshly generated, wrapped secrets.
//!
//! The XKS wire format is not known here; the data path reads a [`snapshot::Snapshot`].

pub mod backup;
pub mod lifecycle;
pub mod model;
pub mod root;
pub mod snapshot;
pub mod store;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::auth::Sigv4Secret;
use crate::crypto;
use crate::hsm::{HsmError, HsmKey};
use model::{
    CredentialInfo, Domain, DomainStatus, KeyInfo, KeyStatus, KeyUsage, Protection, StoredMaterial,
    StoredVersion, VersionState,
};
use root::{RootError, RootOfTrust, WrapContext};
use snapshot::{HEALTH_KEY_NAME, HSM_HEALTH_KEY_LABEL, Snapshot};
use store::{Store, StoreError};

/// Length of generated access key ids; the XKS API allows 20 to 30 characters of `[A-Z2-7]`.
const ACCESS_KEY_ID_LEN: usize = 24;

/// Prefix of generated access key ids, so secret scanners and people can recognize them.
const ACCESS_KEY_ID_PREFIX: &str = "KH";

/// Largest per-domain request quota, in requests per second; far above what one node serves.
pub const MAX_QUOTA_RPS: u32 = 1_000_000;

/// Attributes of a domain to create.
#[derive(Debug, Clone, Default)]
pub struct NewDomain {
    /// Domain id.
    pub id: String,
    /// Name shown to people; defaults to the id.
    pub display_name: Option<String>,
    /// URI path prefix; defaults to `/domains/<id>`.
    pub uri_prefix: Option<String>,
    /// Request quota in requests per second; `None` means no quota.
    pub quota_rps: Option<u32>,
}

/// Attributes of a key to create.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Owning domain.
    pub domain_id: String,
    /// External key id; defaults to a random UUID.
    pub key_id: Option<String>,
    /// Name shown to people; defaults to the key id.
    pub name: Option<String>,
    /// Free text.
    pub description: String,
    /// Allowed operations.
    pub usage: KeyUsage,
    /// The only `kmsKeyArn` allowed to use the key.
    pub bound_kms_key_arn: Option<String>,
    /// Bind the key to the first `kmsKeyArn` that uses it.
    pub learn_binding: bool,
    /// Location of the material.
    pub protection: Protection,
    /// Automatic rotation period in seconds.
    pub rotation_period_secs: Option<i64>,
}

impl NewKey {
    /// A key with the given id and encrypt and decrypt usage, the form AWS KMS requires.
    pub fn with_id(domain_id: &str, key_id: &str) -> Self {
        Self {
            domain_id: domain_id.to_owned(),
            key_id: Some(key_id.to_owned()),
            name: None,
            description: String::new(),
            usage: KeyUsage::ENCRYPT_DECRYPT,
            bound_kms_key_arn: None,
            learn_binding: false,
            protection: Protection::Software,
            rotation_period_secs: None,
        }
    }
}

/// Failure of a key store operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed or rejected the change.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The root of trust failed.
    #[error(transparent)]
    Root(#[from] RootError),
    /// An argument breaks a rule.
    #[error("{0}")]
    Invalid(String),
}

/// The store together with the root of trust that wraps its secrets.
pub struct KeyStore {
    store: Store,
    root: Arc<dyn RootOfTrust>,
}

impl KeyStore {
    /// Combines an open store with a root of trust.
    pub fn new(store: Store, root: Box<dyn RootOfTrust>) -> Self {
        Self {
            store,
            root: Arc::from(root),
        }
    }

    /// Another store connection sharing this root of trust, so an HSM is opened only once
    /// per process.
    pub fn with_store(&self, store: Store) -> Self {
        Self {
            store,
            root: Arc::clone(&self.root),
        }
    }

    /// Read access to the store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Write access to the store, for changes that need no secret.
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The root of trust.
    pub fn root(&self) -> &dyn RootOfTrust {
        self.root.as_ref()
    }

    /// Creates a domain; the URI path prefix defaults to `/domains/<id>`.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Invalid`] for a bad id, prefix or quota and [`Error::Store`] when the id
    /// or prefix is taken.
    pub fn create_domain(&mut self, new: &NewDomain) -> Result<Domain, Error> {
        let id = new.id.as_str();
        model::validate_domain_id(id).map_err(Error::Invalid)?;
        let uri_prefix = new
            .uri_prefix
            .clone()
            .unwrap_or_else(|| format!("/domains/{id}"));
        model::validate_uri_prefix(&uri_prefix).map_err(Error::Invalid)?;
        if new.quota_rps == Some(0) {
            return Err(Error::Invalid(
                "quota must be at least 1 request per second; omit it for no quota".to_owned(),
            ));
        }
        if let Some(quota) = new.quota_rps.filter(|quota| *quota > MAX_QUOTA_RPS) {
            return Err(Error::Invalid(format!(
                "quota of {quota} requests per second is above the maximum of {MAX_QUOTA_RPS}; omit it for no quota"
            )));
        }
        let domain = Domain {
            id: id.to_owned(),
            display_name: new.display_name.clone().unwrap_or_else(|| id.to_owned()),
            uri_prefix,
            status: DomainStatus::Enabled,
            quota_rps: new.quota_rps,
            policy: None,
            created_at: unix_now(),
        };
        self.store.create_domain(&domain)?;
        Ok(domain)
    }

    /// Creates a SigV4 credential for a domain and returns it with its secret, which is shown
    /// once and then exists only wrapped.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Store`] when the domain is missing or has two active credentials.
    pub fn create_credential(
        &mut self,
        domain_id: &str,
    ) -> Result<(CredentialInfo, Sigv4Secret), Error> {
        let mut secret_bytes = Zeroizing::new([0u8; 32]);
        crypto::fill_random(secret_bytes.as_mut()).map_err(RootError::from)?;
        let secret = Sigv4Secret::new(STANDARD.encode(secret_bytes.as_ref()));

        let credential = CredentialInfo {
            access_key_id: generate_access_key_id()?,
            domain_id: domain_id.to_owned(),
            created_at: unix_now(),
            revoked_at: None,
        };
        let context = WrapContext::Credential {
            domain_id,
            access_key_id: &credential.access_key_id,
        };
        let wrapped = self.root.wrap(context, secret.expose().as_bytes())?;
        self.store.add_credential(&credential, &wrapped)?;
        Ok((credential, secret))
    }

    /// Creates a software-protected key with fresh material as version 1.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Invalid`] for a bad key id or ARN and [`Error::Store`] when the id is
    /// taken.
    pub fn create_key(&mut self, new: &NewKey) -> Result<KeyInfo, Error> {
        let domain_id = new.domain_id.as_str();
        let key_id = match &new.key_id {
            Some(id) => id.clone(),
            None => generate_key_id()?,
        };
        model::validate_key_id(&key_id).map_err(Error::Invalid)?;
        if let Some(arn) = &new.bound_kms_key_arn
            && (arn.len() > 2048 || !arn.starts_with("arn:") || !arn.contains(":kms:"))
        {
            return Err(Error::Invalid(format!(
                "invalid KMS key ARN {arn:?} to bind: expected arn:aws:kms:REGION:ACCOUNT:key/ID, at most 2048 characters"
            )));
        }
        let now = unix_now();
        let key = KeyInfo {
            domain_id: domain_id.to_owned(),
            key_id: key_id.clone(),
            name: new.name.clone().unwrap_or_else(|| key_id.clone()),
            description: new.description.clone(),
            usage: new.usage,
            status: KeyStatus::Enabled,
            protection: new.protection,
            primary_version: 1,
            bound_kms_key_arn: new.bound_kms_key_arn.clone(),
            learn_binding: new.learn_binding && new.bound_kms_key_arn.is_none(),
            rotation_period_secs: new.rotation_period_secs,
            deletion_at: None,
            policy: None,
            created_at: now,
        };
        if new.protection == Protection::Hsm && self.store.key(domain_id, &key_id).is_ok() {
            return Err(StoreError::AlreadyExists(format!(
                "key {key_id:?} already exists in domain {domain_id:?}; key ids are never reused"
            ))
            .into());
        }
        let material = self.new_material(&key, 1)?;
        let first = StoredVersion {
            version: 1,
            state: VersionState::Enabled,
            material,
            created_at: now,
        };
        if let Err(error) = self.store.create_key(&key, &first) {
            // Remove the HSM object this call made, unless another call created the same key
            // meanwhile and now owns the object under that label.
            if let (StoredMaterial::Hsm(label), Some(hsm)) = (&first.material, self.root.hsm())
                && !matches!(error, StoreError::AlreadyExists(_))
                && let Err(cleanup) = hsm.destroy_key(label)
            {
                tracing::warn!(%cleanup, label, "cannot remove the HSM object of a key that was not stored");
            }
            return Err(error.into());
        }
        Ok(key)
    }

    /// Makes the material of a new version, in memory and wrapped or inside the HSM.
    fn new_material(&self, key: &KeyInfo, version: u32) -> Result<StoredMaterial, Error> {
        Ok(match key.protection {
            Protection::Software => StoredMaterial::Wrapped(self.wrap_new_material(key, version)?),
            Protection::Hsm => StoredMaterial::Hsm(self.generate_in_hsm(key, version)?),
        })
    }

    fn wrap_new_material(&self, key: &KeyInfo, version: u32) -> Result<Vec<u8>, Error> {
        let material = crypto::generate_key().map_err(RootError::from)?;
        let context = WrapContext::KeyVersion {
            domain_id: &key.domain_id,
            key_id: &key.key_id,
            version,
        };
        Ok(self.root.wrap(context, material.as_ref())?)
    }

    /// Generates a version's material inside the HSM and returns its label.
    fn generate_in_hsm(&self, key: &KeyInfo, version: u32) -> Result<String, Error> {
        let hsm = self.root.hsm().ok_or_else(|| {
            Error::Invalid(
                "HSM protection needs an HSM root of trust: set provider = \"pkcs11\" in the \
                 [root_of_trust] section of keyhold.toml"
                    .to_owned(),
            )
        })?;
        // A random suffix keeps labels unique even when two processes make the same version
        // at once; only the one whose row is stored keeps its object.
        let mut suffix = [0u8; 8];
        crypto::fill_random(&mut suffix).map_err(RootError::from)?;
        let label = format!(
            "{}/{}",
            model::hsm_label(&key.domain_id, &key.key_id, version),
            hex::encode(suffix)
        );
        hsm.generate_key(&label).map_err(RootError::from)?;
        Ok(label)
    }

    /// Creates the health-check keys unless they exist: one wrapped in the store and, with an
    /// HSM root of trust, one inside the HSM. Returns whether any was created.
    ///
    /// # Errors
    ///
    /// Returns [`Error`] when the store or the root of trust fails.
    pub fn ensure_health_key(&mut self) -> Result<bool, Error> {
        let mut created = false;
        if let Some(hsm) = self.root.hsm() {
            match hsm.key_protection(HsmKey::Label(HSM_HEALTH_KEY_LABEL)) {
                Ok(_) => {}
                Err(HsmError::KeyNotFound(_)) => {
                    hsm.generate_key(HSM_HEALTH_KEY_LABEL)
                        .map_err(RootError::from)?;
                    created = true;
                }
                Err(error) => return Err(RootError::from(error).into()),
            }
        }
        let material = crypto::generate_key().map_err(RootError::from)?;
        let context = WrapContext::SystemKey {
            name: HEALTH_KEY_NAME,
        };
        let wrapped = self.root.wrap(context, material.as_ref())?;
        let stored = self
            .store
            .insert_system_key(HEALTH_KEY_NAME, &wrapped, unix_now())?;
        Ok(created || stored)
    }

    /// Reads the store and builds a snapshot.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Store`] when the store cannot be read.
    pub fn load_snapshot(&mut self) -> Result<Snapshot, Error> {
        let dataset = self.store.load()?;
        Ok(Snapshot::build(dataset, self.root.as_ref()))
    }
}

/// Current time as Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Current time as Unix milliseconds.
pub fn unix_now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Formats Unix seconds as an RFC 3339 UTC time, or the number itself if out of range.
pub fn format_time(unix_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|moment| {
            moment
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_secs.to_string())
}

fn generate_access_key_id() -> Result<String, Error> {
    const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut random = [0u8; ACCESS_KEY_ID_LEN];
    crypto::fill_random(&mut random).map_err(RootError::from)?;
    let mut id = String::with_capacity(ACCESS_KEY_ID_LEN);
    id.push_str(ACCESS_KEY_ID_PREFIX);
    // 256 is a multiple of 32, so taking each byte modulo 32 keeps the characters uniform.
    id.extend(
        random[ACCESS_KEY_ID_PREFIX.len()..]
            .iter()
            .map(|byte| char::from(BASE32[usize::from(byte % 32)])),
    );
    Ok(id)
}

/// Generates a random UUID (version 4) to serve as an external key id.
fn generate_key_id() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    crypto::fill_random(&mut bytes).map_err(RootError::from)?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(id: &str, uri_prefix: Option<&str>) -> NewDomain {
        NewDomain {
            id: id.to_owned(),
            uri_prefix: uri_prefix.map(str::to_owned),
            ..NewDomain::default()
        }
    }

    fn open_key_store(dir: &std::path::Path) -> KeyStore {
        let store = Store::open(&dir.join("keyhold.db")).expect("open store");
        let root = root::FileRootKey::create(&dir.join("root.key")).expect("root key");
        KeyStore::new(store, Box::new(root))
    }

    #[test]
    fn access_key_ids_follow_xks_format() {
        let id = generate_access_key_id().expect("random");
        assert_eq!(id.len(), ACCESS_KEY_ID_LEN);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
    }

    #[test]
    fn credentials_limited_to_two_active() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut keys = open_key_store(dir.path());
        keys.create_domain(&domain("acme", None)).expect("domain");
        let (first, secret) = keys.create_credential("acme").expect("first");
        assert!((43..=64).contains(&secret.expose().len()));
        keys.create_credential("acme").expect("second");
        let third = keys.create_credential("acme").expect_err("third must fail");
        assert!(
            third.to_string().contains("2 active credentials"),
            "{third}"
        );
        keys.store_mut()
            .revoke_credential("acme", &first.access_key_id, unix_now())
            .expect("revoke");
        keys.create_credential("acme").expect("room after revoke");
    }

    #[test]
    fn changes_increment_revision_and_reach_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut keys = open_key_store(dir.path());
        let start = keys.store().revision().expect("revision");
        keys.ensure_health_key().expect("health key");
        assert!(
            !keys.ensure_health_key().expect("second call"),
            "health key created twice"
        );
        keys.create_domain(&domain("acme", Some("/tenant/acme")))
            .expect("domain");
        let key = keys
            .create_key(&NewKey::with_id("acme", "k1"))
            .expect("key");
        assert!(keys.store().revision().expect("revision") > start);

        let snapshot = keys.load_snapshot().expect("snapshot");
        assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
        assert!(snapshot.health_key.is_some());
        let domain = snapshot
            .domain_by_prefix("/tenant/acme")
            .expect("domain by prefix");
        let view = domain.key(&key.key_id).expect("key in snapshot");
        assert!(matches!(view.version(1), snapshot::VersionLookup::Ready(_)));
        assert!(matches!(view.version(2), snapshot::VersionLookup::Missing));
    }

    #[test]
    fn duplicate_ids_and_prefixes_rejected() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut keys = open_key_store(dir.path());
        keys.create_domain(&domain("acme", None)).expect("domain");
        assert!(keys.create_domain(&domain("acme", Some("/other"))).is_err());
        let taken = keys
            .create_domain(&domain("beta", Some("/domains/acme")))
            .expect_err("taken");
        assert!(
            taken.to_string().contains("used by domain \"acme\""),
            "{taken}"
        );
        keys.create_key(&NewKey::with_id("acme", "k1"))
            .expect("key");
        assert!(keys.create_key(&NewKey::with_id("acme", "k1")).is_err());
        assert!(keys.create_key(&NewKey::with_id("nope", "k1")).is_err());
        let huge_quota = NewDomain {
            id: "huge".to_owned(),
            quota_rps: Some(MAX_QUOTA_RPS + 1),
            ..NewDomain::default()
        };
        assert!(keys.create_domain(&huge_quota).is_err());
        let zero_quota = NewDomain {
            quota_rps: Some(0),
            ..domain("zero", None)
        };
        assert!(keys.create_domain(&zero_quota).is_err());
    }

    #[test]
    fn database_holds_no_clear_secret() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut keys = open_key_store(dir.path());
        keys.create_domain(&domain("acme", None)).expect("domain");
        let (_, secret) = keys.create_credential("acme").expect("credential");
        drop(keys);
        let mut bytes = std::fs::read(dir.path().join("keyhold.db")).expect("read db");
        if let Ok(wal) = std::fs::read(dir.path().join("keyhold.db-wal")) {
            bytes.extend(wal);
        }
        let needle = secret.expose().as_bytes();
        assert!(!bytes.windows(needle.len()).any(|window| window == needle));
    }
}
