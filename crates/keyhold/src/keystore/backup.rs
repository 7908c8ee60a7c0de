//! Backup and restore: one encrypted, authenticated file with every domain, credential, key
//! and key version of an installation, or of one domain.
//!
//! Making a backup unwraps each secret with the current root of trust. It seals the secrets and
//! a JSON manifest of all metadata under a backup key, derived from a passphrase (Argon2id) or a
//! key file. The `format` submodule describes the file layout. Restoring re-wraps each secret under the
//! target installation's root of trust, which may differ from the source's, and inserts
//! everything in one store transaction after checking for conflicts. HSM-resident keys are
//! carried as references to their HSM objects, because their material never leaves the HSM.
//! System keys such as the health-check key are not backed up, because every installation
//! makes its own.
//!
//! Reading and writing the files the passphrase or key come from is left to the CLI.

mod format;
mod manifest;

use std::ops::Range;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::model::{Protection, StoredMaterial, StoredVersion};
use super::root::{RootError, RootOfTrust, WrapContext};
use super::store::StoreError;
use super::store::backup::{
    Conflict, CredentialRecord, DomainRecord, KeyRecord, RestoreIds, RestoreSet,
};
use super::{KeyStore, unix_now};
use crate::crypto::CryptoError;
use crate::hsm::{HsmError, HsmKey};
pub use format::{Argon2Params, KeyDerivation, KeySource};
use manifest::{CredentialEntry, DomainEntry, KeyEntry, Manifest, MaterialEntry, VersionEntry};

/// Failure of a backup, inspection or restore.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file does not start with the backup magic bytes.
    #[error("not a Keyhold backup file: it does not start with the backup signature")]
    NotABackup,
    /// The file was written in a format this build cannot read.
    #[error(
        "backup format version {0} is not supported; this Keyhold reads version {supported}",
        supported = format::FORMAT_VERSION
    )]
    UnsupportedVersion(u16),
    /// The file ends before the length its header states.
    #[error("backup file is truncated: it has {found} bytes, but its header announces {expected}")]
    Truncated {
        /// Bytes the header announces.
        expected: u64,
        /// Bytes found.
        found: u64,
    },
    /// The file goes on after the length its header states.
    #[error("backup file has {extra} unexpected bytes after its end, so it was changed")]
    TrailingData {
        /// Bytes after the end.
        extra: u64,
    },
    /// A header field has a value this build does not accept.
    #[error("invalid backup header: {0}")]
    InvalidHeader(String),
    /// A passphrase was given for a key-file backup, or the other way round.
    #[error("{0}")]
    WrongKeySource(String),
    /// The AES-GCM tag did not verify.
    #[error(
        "backup did not authenticate: the passphrase or key file is wrong, or the file was \
         changed or damaged"
    )]
    Authentication,
    /// The authenticated payload breaks a rule of the format.
    #[error("backup payload is invalid: {0}")]
    Malformed(String),
    /// Argon2id rejected its parameters or failed.
    #[error("backup key derivation failed: {0}")]
    Kdf(String),
    /// A stored secret did not unwrap under the current root of trust.
    #[error("{object} did not unwrap under the root of trust, so it cannot be backed up")]
    Unwrap {
        /// The credential or key version.
        object: String,
        /// The cause.
        source: RootError,
    },
    /// Objects of the backup exist in the target installation.
    #[error("{}", conflict_list(.0))]
    Conflicts(Vec<Conflict>),
    /// The backup has HSM-resident keys and the target has no HSM.
    #[error(
        "the backup contains HSM-resident keys ({}), but this installation's root of trust is \
         not an HSM. Their material never leaves the HSM and is not in the backup: restore the \
         HSM objects with the HSM vendor's own backup tools, then restore this backup into an \
         installation whose root of trust is that HSM; nothing was restored",
        .0.join(", ")
    )]
    HsmRequired(Vec<String>),
    /// HSM objects that restored keys refer to are not in the target's HSM.
    #[error(
        "the HSM of this installation lacks objects that HSM-resident keys of the backup refer \
         to ({}). Restore them with the HSM vendor's own backup tools, then run the restore \
         again; nothing was restored",
        .0.join(", ")
    )]
    HsmObjectsMissing(Vec<String>),
    /// The backup file could not be written.
    #[error("cannot write backup file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The root of trust failed.
    #[error(transparent)]
    Root(#[from] RootError),
    /// A cryptographic primitive failed.
    #[error("backup cryptography failed: {0}")]
    Crypto(#[from] CryptoError),
}

fn conflict_list(conflicts: &[Conflict]) -> String {
    let count = match conflicts.len() {
        1 => "1 object".to_owned(),
        count => format!("{count} objects"),
    };
    let mut text =
        format!("{count} of the backup conflict with this installation, so nothing was restored:");
    for conflict in conflicts {
        text.push_str(&format!("\n  {conflict}"));
    }
    text
}

/// Receives progress counted in keys, for a progress bar.
pub trait Progress {
    /// Sets the number of keys the operation handles.
    fn start(&self, keys: u64);
    /// Counts one more key as done.
    fn key_done(&self);
}

/// No progress display.
impl Progress for () {
    fn start(&self, _keys: u64) {}
    fn key_done(&self) {}
}

/// Options of [`create`].
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Back up only this domain; `None` backs up all domains.
    pub domain: Option<String>,
    /// Node id recorded as the source.
    pub source_node: String,
    /// Argon2id cost when the key source is a passphrase.
    pub argon2: Argon2Params,
}

/// A decrypted backup. The secrets stay in one zeroizing buffer; `Debug` shows only counts.
pub struct Contents {
    plaintext: Zeroizing<Vec<u8>>,
    manifest: Manifest,
    secrets: Vec<Range<usize>>,
    derivation: KeyDerivation,
}

impl std::fmt::Debug for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contents")
            .field("domains", &self.manifest.domains.len())
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

/// Origin and object counts of a backup, without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Node id of the source installation.
    pub source_node: String,
    /// Keyhold version that made the backup.
    pub keyhold_version: String,
    /// The one domain the backup was limited to.
    pub domain_filter: Option<String>,
    /// Derivation of the backup key.
    pub derivation: KeyDerivation,
    /// Counts per domain.
    pub domains: Vec<DomainSummary>,
}

/// Counts of one domain's objects in a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSummary {
    /// Domain id.
    pub id: String,
    /// Credentials, revoked ones included.
    pub credentials: usize,
    /// Revoked credentials.
    pub revoked_credentials: usize,
    /// Keys.
    pub keys: usize,
    /// HSM-resident keys, carried as references.
    pub hsm_keys: usize,
    /// Key versions, destroyed ones included.
    pub versions: usize,
}

impl Summary {
    /// Sums one count over all domains.
    pub fn total(&self, count: impl Fn(&DomainSummary) -> usize) -> usize {
        self.domains.iter().map(count).sum()
    }
}

/// Counts of the objects a restore created, and the objects it skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Domains created.
    pub domains: usize,
    /// Credentials created.
    pub credentials: usize,
    /// Keys created.
    pub keys: usize,
    /// Key versions created.
    pub versions: usize,
    /// One sentence per object skipped because it exists, naming it and the reason.
    pub skipped: Vec<String>,
}

/// Makes a backup of all domains, or of the one in `options`, and returns the file's bytes
/// with a summary of its contents.
///
/// # Errors
///
/// Returns [`BackupError::Store`] when the store cannot be read or the domain does not exist,
/// and [`BackupError::Unwrap`] naming a secret that the current root of trust cannot unwrap.
pub fn create(
    key_store: &mut KeyStore,
    options: &CreateOptions,
    source: &KeySource,
    progress: &dyn Progress,
) -> Result<(Vec<u8>, Summary), BackupError> {
    let records = key_store
        .store_mut()
        .read_domains_for_backup(options.domain.as_deref())?;
    let total_keys: usize = records.iter().map(|record| record.keys.len()).sum();
    progress.start(total_keys as u64);

    let root = key_store.root();
    let mut secrets = Vec::new();
    let mut domains = Vec::with_capacity(records.len());
    for record in &records {
        domains.push(domain_entry(root, record, &mut secrets, progress)?);
    }
    let manifest = Manifest {
        created_at: unix_now(),
        source_node: options.source_node.clone(),
        keyhold_version: env!("CARGO_PKG_VERSION").to_owned(),
        domain_filter: options.domain.clone(),
        domains,
    };

    let plaintext = manifest::encode(&manifest, &secrets)?;
    drop(secrets);
    let file = format::seal(plaintext, source, options.argon2)?;
    let derivation = match source {
        KeySource::Passphrase(_) => KeyDerivation::Argon2id(options.argon2),
        KeySource::KeyFile(_) => KeyDerivation::KeyFile,
    };
    Ok((file, summarize(&manifest, derivation)))
}

/// Authenticates, decrypts and checks a backup file.
///
/// # Errors
///
/// Returns [`BackupError::Authentication`] for a wrong passphrase or key file or a changed
/// file, other [`BackupError`] variants for a file that is not a backup, is truncated or was
/// written by a newer format, and [`BackupError::Malformed`] for an invalid payload.
pub fn open(file: &[u8], source: &KeySource) -> Result<Contents, BackupError> {
    let (plaintext, derivation) = format::open(file, source)?;
    let (manifest, secrets) = manifest::decode(&plaintext)?;
    manifest::validate(&manifest, &secrets)?;
    Ok(Contents {
        plaintext,
        manifest,
        secrets,
        derivation,
    })
}

/// Decodes and checks a decrypted backup payload: the steps of [`open`] after authentication.
///
/// Fuzz targets call this, because a changed file fails authentication in [`open`] and so
/// never reaches these steps.
///
/// # Errors
///
/// Returns [`BackupError::Malformed`] for an invalid payload.
pub fn check_payload(plaintext: &[u8]) -> Result<(), BackupError> {
    let (manifest, secrets) = manifest::decode(plaintext)?;
    manifest::validate(&manifest, &secrets)
}

impl Contents {
    /// Counts of what the backup contains.
    pub fn summary(&self) -> Summary {
        summarize(&self.manifest, self.derivation)
    }

    fn secret(&self, index: u32) -> Result<&[u8], BackupError> {
        usize::try_from(index)
            .ok()
            .and_then(|index| self.secrets.get(index))
            .and_then(|range| self.plaintext.get(range.clone()))
            .ok_or_else(|| BackupError::Malformed(format!("missing secret {index}")))
    }
}

/// Restores a backup into `key_store`, re-wrapping every secret under its root of trust, in
/// one store transaction.
///
/// Objects that exist already are conflicts. Without `skip_existing` the restore writes
/// nothing and returns them all. With it, they are skipped and listed in the report. A domain
/// whose id exists is not changed, but the credentials and keys of the backup that it lacks
/// are added to it. A domain whose URI path prefix another domain uses is skipped with
/// everything in it.
///
/// # Errors
///
/// Returns [`BackupError::Conflicts`], [`BackupError::HsmRequired`] when the backup has
/// HSM-resident keys and the root of trust is not an HSM, [`BackupError::HsmObjectsMissing`]
/// when the HSM lacks their objects, and [`BackupError::Store`] or [`BackupError::Root`] when
/// the store or root of trust fails. Nothing is written in any of these cases.
pub fn restore(
    key_store: &mut KeyStore,
    contents: &Contents,
    skip_existing: bool,
    progress: &dyn Progress,
) -> Result<RestoreReport, BackupError> {
    let conflicts = key_store
        .store()
        .restore_conflicts(&all_ids(&contents.manifest))?;
    if !conflicts.is_empty() && !skip_existing {
        return Err(BackupError::Conflicts(conflicts));
    }
    let plan = plan(&contents.manifest, &conflicts);
    check_hsm_objects(key_store.root(), &plan)?;

    let total_keys: usize = plan.domains.iter().map(|domain| domain.keys.len()).sum();
    progress.start(total_keys as u64);
    let set = rewrap(key_store.root(), contents, &plan, progress)?;
    key_store.store_mut().restore(&set)?;
    Ok(RestoreReport {
        domains: set.domains.len(),
        credentials: set.credentials.len(),
        keys: set.keys.len(),
        versions: set.keys.iter().map(|key| key.versions.len()).sum(),
        skipped: plan.skipped,
    })
}

/// Writes a backup file that must not exist yet, readable and writable by its owner only.
/// A file left incomplete by a failed write is removed.
///
/// # Errors
///
/// Returns [`BackupError::Io`] when the file exists or cannot be written.
pub fn write_backup_file(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    crate::files::write_new(path, bytes, 0o600).map_err(|source| BackupError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Builds the manifest entry of a domain, unwrapping its secrets into `secrets`.
fn domain_entry(
    root: &dyn RootOfTrust,
    record: &DomainRecord,
    secrets: &mut Vec<Zeroizing<Vec<u8>>>,
    progress: &dyn Progress,
) -> Result<DomainEntry, BackupError> {
    let domain = &record.domain;
    let mut credentials = Vec::with_capacity(record.credentials.len());
    for credential in &record.credentials {
        let info = &credential.info;
        let context = WrapContext::Credential {
            domain_id: &domain.id,
            access_key_id: &info.access_key_id,
        };
        let secret = root
            .unwrap(context, &credential.wrapped_secret)
            .map_err(|source| BackupError::Unwrap {
                object: format!(
                    "credential {} of domain {:?}",
                    info.access_key_id, domain.id
                ),
                source,
            })?;
        credentials.push(CredentialEntry {
            access_key_id: info.access_key_id.clone(),
            created_at: info.created_at,
            revoked_at: info.revoked_at,
            secret: push_secret(secrets, secret)?,
        });
    }

    let mut keys = Vec::with_capacity(record.keys.len());
    for key in &record.keys {
        keys.push(key_entry(root, key, secrets)?);
        progress.key_done();
    }
    Ok(DomainEntry {
        id: domain.id.clone(),
        display_name: domain.display_name.clone(),
        uri_prefix: domain.uri_prefix.clone(),
        status: format!("{:?}", domain.status).to_uppercase(),
        quota_rps: domain.quota_rps,
        policy: domain.policy.clone(),
        created_at: domain.created_at,
        credentials,
        keys,
    })
}

fn key_entry(
    root: &dyn RootOfTrust,
    key: &KeyRecord,
    secrets: &mut Vec<Zeroizing<Vec<u8>>>,
) -> Result<KeyEntry, BackupError> {
    let info = &key.info;
    let mut versions = Vec::with_capacity(key.versions.len());
    for version in &key.versions {
        let material = match &version.material {
            StoredMaterial::Wrapped(wrapped) => {
                let context = WrapContext::KeyVersion {
                    domain_id: &info.domain_id,
                    key_id: &info.key_id,
                    version: version.version,
                };
                let material =
                    root.unwrap(context, wrapped)
                        .map_err(|source| BackupError::Unwrap {
                            object: format!(
                                "version {} of key {:?} in domain {:?}",
                                version.version, info.key_id, info.domain_id
                            ),
                            source,
                        })?;
                MaterialEntry::Software {
                    secret: push_secret(secrets, material)?,
                }
            }
            StoredMaterial::Hsm(label) => MaterialEntry::Hsm {
                label: label.clone(),
            },
            StoredMaterial::Destroyed => MaterialEntry::Destroyed,
        };
        versions.push(VersionEntry {
            version: version.version,
            state: version.state.as_str().to_owned(),
            created_at: version.created_at,
            material,
        });
    }
    Ok(KeyEntry {
        key_id: info.key_id.clone(),
        name: info.name.clone(),
        description: info.description.clone(),
        usage_encrypt: info.usage.encrypt(),
        usage_decrypt: info.usage.decrypt(),
        status: info.status.as_str().to_owned(),
        status_before_deletion: key.status_before_deletion.map(|s| s.as_str().to_owned()),
        protection: info.protection.as_str().to_owned(),
        primary_version: info.primary_version,
        bound_kms_key_arn: info.bound_kms_key_arn.clone(),
        learn_binding: info.learn_binding,
        rotation_period_secs: info.rotation_period_secs,
        deletion_at: info.deletion_at,
        policy: info.policy.clone(),
        created_at: info.created_at,
        versions,
    })
}

fn push_secret(
    secrets: &mut Vec<Zeroizing<Vec<u8>>>,
    secret: Zeroizing<Vec<u8>>,
) -> Result<u32, BackupError> {
    let index = u32::try_from(secrets.len())
        .map_err(|_| BackupError::Malformed("more than 2^32 secrets".to_owned()))?;
    secrets.push(secret);
    Ok(index)
}

fn summarize(manifest: &Manifest, derivation: KeyDerivation) -> Summary {
    let domains = manifest
        .domains
        .iter()
        .map(|domain| DomainSummary {
            id: domain.id.clone(),
            credentials: domain.credentials.len(),
            revoked_credentials: domain
                .credentials
                .iter()
                .filter(|credential| credential.revoked_at.is_some())
                .count(),
            keys: domain.keys.len(),
            hsm_keys: domain
                .keys
                .iter()
                .filter(|key| key.protection == Protection::Hsm.as_str())
                .count(),
            versions: domain.keys.iter().map(|key| key.versions.len()).sum(),
        })
        .collect();
    Summary {
        created_at: manifest.created_at,
        source_node: manifest.source_node.clone(),
        keyhold_version: manifest.keyhold_version.clone(),
        domain_filter: manifest.domain_filter.clone(),
        derivation,
        domains,
    }
}

/// Collects the ids of everything in a backup.
fn all_ids(manifest: &Manifest) -> RestoreIds {
    let mut ids = RestoreIds::default();
    for domain in &manifest.domains {
        ids.domains
            .push((domain.id.clone(), domain.uri_prefix.clone()));
        for credential in &domain.credentials {
            ids.credentials.push((
                domain.id.clone(),
                credential.access_key_id.clone(),
                credential.revoked_at.is_none(),
            ));
        }
        for key in &domain.keys {
            ids.keys.push((domain.id.clone(), key.key_id.clone()));
        }
    }
    ids
}

/// The part of a backup a restore writes, after skipping conflicts.
struct Plan<'a> {
    domains: Vec<PlannedDomain<'a>>,
    skipped: Vec<String>,
}

struct PlannedDomain<'a> {
    entry: &'a DomainEntry,
    /// False when a domain with this id exists and receives the credentials and keys.
    create: bool,
    credentials: Vec<&'a CredentialEntry>,
    keys: Vec<&'a KeyEntry>,
}

/// Decides what to restore when `conflicts` are to be skipped.
fn plan<'a>(manifest: &'a Manifest, conflicts: &[Conflict]) -> Plan<'a> {
    let mut plan = Plan {
        domains: Vec::new(),
        skipped: Vec::new(),
    };
    for entry in &manifest.domains {
        let id = entry.id.as_str();
        let prefix_taken = conflicts.iter().find(
            |conflict| matches!(conflict, Conflict::UriPrefix { domain_id, .. } if domain_id == id),
        );
        if let Some(conflict) = prefix_taken {
            plan.skipped.push(format!(
                "{conflict}; skipped the domain with its {} credentials and {} keys",
                entry.credentials.len(),
                entry.keys.len()
            ));
            continue;
        }
        let exists = conflicts.contains(&Conflict::DomainId {
            domain_id: id.to_owned(),
        });
        if exists {
            plan.skipped.push(format!(
                "domain {id:?} already exists; its credentials and keys that it lacks are added"
            ));
        }
        let too_many_active = conflicts.iter().find(|conflict| {
            matches!(conflict, Conflict::ActiveCredentials { domain_id, .. } if domain_id == id)
        });
        let mut credentials = Vec::new();
        for credential in &entry.credentials {
            let conflict = Conflict::AccessKeyId {
                domain_id: id.to_owned(),
                access_key_id: credential.access_key_id.clone(),
            };
            if conflicts.contains(&conflict) {
                plan.skipped.push(conflict.to_string());
            } else if let (Some(conflict), None) = (too_many_active, credential.revoked_at) {
                plan.skipped.push(format!(
                    "active credential {} of domain {id:?}, because {conflict}",
                    credential.access_key_id
                ));
            } else {
                credentials.push(credential);
            }
        }
        let mut keys = Vec::new();
        for key in &entry.keys {
            let conflict = Conflict::KeyId {
                domain_id: id.to_owned(),
                key_id: key.key_id.clone(),
            };
            if conflicts.contains(&conflict) {
                plan.skipped.push(conflict.to_string());
            } else {
                keys.push(key);
            }
        }
        plan.domains.push(PlannedDomain {
            entry,
            create: !exists,
            credentials,
            keys,
        });
    }
    plan
}

/// Checks that every HSM-resident key to restore can find its objects in the target's HSM.
fn check_hsm_objects(root: &dyn RootOfTrust, plan: &Plan<'_>) -> Result<(), BackupError> {
    let hsm_keys: Vec<(&str, &KeyEntry)> = plan
        .domains
        .iter()
        .flat_map(|domain| {
            domain
                .keys
                .iter()
                .map(|key| (domain.entry.id.as_str(), *key))
        })
        .filter(|(_, key)| key.protection == Protection::Hsm.as_str())
        .collect();
    if hsm_keys.is_empty() {
        return Ok(());
    }
    let Some(hsm) = root.hsm() else {
        return Err(BackupError::HsmRequired(
            hsm_keys
                .iter()
                .map(|(domain_id, key)| format!("key {:?} in domain {domain_id:?}", key.key_id))
                .collect(),
        ));
    };
    let mut missing = Vec::new();
    for (domain_id, key) in hsm_keys {
        for version in &key.versions {
            let MaterialEntry::Hsm { label } = &version.material else {
                continue;
            };
            match hsm.key_protection(HsmKey::Label(label)) {
                Ok(_) => {}
                Err(HsmError::KeyNotFound(_)) => missing.push(format!(
                    "{label} for version {} of key {:?} in domain {domain_id:?}",
                    version.version, key.key_id
                )),
                Err(error) => return Err(RootError::from(error).into()),
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(BackupError::HsmObjectsMissing(missing))
    }
}

/// Builds the rows to insert, wrapping each secret for its place under `root`.
fn rewrap(
    root: &dyn RootOfTrust,
    contents: &Contents,
    plan: &Plan<'_>,
    progress: &dyn Progress,
) -> Result<RestoreSet, BackupError> {
    let mut set = RestoreSet::default();
    for domain in &plan.domains {
        let domain_id = domain.entry.id.as_str();
        if domain.create {
            set.domains.push(domain.entry.to_domain()?);
        }
        for credential in &domain.credentials {
            let info = credential.to_info(domain_id);
            let context = WrapContext::Credential {
                domain_id,
                access_key_id: &info.access_key_id,
            };
            let wrapped_secret = root.wrap(context, contents.secret(credential.secret)?)?;
            set.credentials.push(CredentialRecord {
                info,
                wrapped_secret,
            });
        }
        for key in &domain.keys {
            set.keys.push(key_record(root, contents, domain_id, key)?);
            progress.key_done();
        }
    }
    Ok(set)
}

fn key_record(
    root: &dyn RootOfTrust,
    contents: &Contents,
    domain_id: &str,
    key: &KeyEntry,
) -> Result<KeyRecord, BackupError> {
    let (info, status_before_deletion) = key.to_info(domain_id)?;
    let mut versions = Vec::with_capacity(key.versions.len());
    for version in &key.versions {
        let material = match &version.material {
            MaterialEntry::Software { secret } => {
                let context = WrapContext::KeyVersion {
                    domain_id,
                    key_id: &info.key_id,
                    version: version.version,
                };
                StoredMaterial::Wrapped(root.wrap(context, contents.secret(*secret)?)?)
            }
            MaterialEntry::Hsm { label } => StoredMaterial::Hsm(label.clone()),
            MaterialEntry::Destroyed => StoredMaterial::Destroyed,
        };
        versions.push(StoredVersion {
            version: version.version,
            state: version.state()?,
            material,
            created_at: version.created_at,
        });
    }
    Ok(KeyRecord {
        info,
        status_before_deletion,
        versions,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::keystore::model::{DomainStatus, KeyInfo, KeyStatus, VersionState, hsm_label};
    use crate::keystore::root::FileRootKey;
    use crate::keystore::store::Store;
    use crate::keystore::{NewDomain, NewKey};

    /// Argon2id parameters small enough for unit tests.
    const TEST_ARGON2: Argon2Params = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        lanes: 1,
    };

    /// Opens a key store with its own database and root-key file named `name` in `dir`.
    fn key_store(dir: &Path, name: &str) -> KeyStore {
        let store = Store::open(&dir.join(format!("{name}.db"))).expect("open store");
        let root = FileRootKey::create(&dir.join(format!("{name}.key"))).expect("root key");
        KeyStore::new(store, Box::new(root))
    }

    fn key_file() -> KeySource {
        KeySource::KeyFile(Zeroizing::new([42; crate::crypto::KEY_LEN]))
    }

    fn options(domain: Option<&str>) -> CreateOptions {
        CreateOptions {
            domain: domain.map(str::to_owned),
            source_node: "node-a".to_owned(),
            argon2: TEST_ARGON2,
        }
    }

    fn create_domain(keys: &mut KeyStore, id: &str, uri_prefix: Option<&str>) {
        keys.create_domain(&NewDomain {
            id: id.to_owned(),
            uri_prefix: uri_prefix.map(str::to_owned),
            ..NewDomain::default()
        })
        .expect("create domain");
    }

    /// Domain `acme` with every kind of state a backup must carry, and a plain domain `beta`.
    fn populated(dir: &Path) -> KeyStore {
        let mut keys = key_store(dir, "source");
        keys.create_domain(&NewDomain {
            id: "acme".to_owned(),
            display_name: Some("Acme Corp".to_owned()),
            uri_prefix: Some("/tenants/acme".to_owned()),
            quota_rps: Some(50),
        })
        .expect("domain");
        let store = keys.store_mut();
        store
            .set_policy("acme", None, Some(r#"{"rules":[]}"#))
            .expect("domain policy");
        store
            .set_domain_status("acme", DomainStatus::Disabled)
            .expect("disable domain");
        let (revoked, _) = keys.create_credential("acme").expect("credential");
        keys.store_mut()
            .revoke_credential("acme", &revoked.access_key_id, 1_700_000_000)
            .expect("revoke");
        keys.create_credential("acme").expect("active credential");

        keys.create_key(&NewKey::with_id("acme", "rotated"))
            .expect("key");
        keys.rotate_key("acme", "rotated").expect("rotate");
        keys.rotate_key("acme", "rotated").expect("rotate");
        keys.store_mut()
            .set_version_state("acme", "rotated", 1, VersionState::Disabled)
            .expect("disable version");
        keys.destroy_version("acme", "rotated", 2)
            .expect("destroy version");

        keys.create_key(&NewKey {
            bound_kms_key_arn: Some("arn:aws:kms:us-east-1:111122223333:key/x".to_owned()),
            rotation_period_secs: Some(86_400),
            description: "payments".to_owned(),
            ..NewKey::with_id("acme", "pending")
        })
        .expect("key");
        keys.store_mut()
            .set_key_status("acme", "pending", KeyStatus::Disabled)
            .expect("disable key");
        keys.store_mut()
            .set_policy("acme", Some("pending"), Some(r#"{"rules":[]}"#))
            .expect("key policy");
        keys.schedule_deletion("acme", "pending", 7)
            .expect("schedule deletion");

        create_domain(&mut keys, "beta", None);
        keys.create_credential("beta").expect("credential");
        keys.create_key(&NewKey::with_id("beta", "b1"))
            .expect("key");
        keys
    }

    /// Reads every row of a key store and unwraps each secret, so two installations whose root
    /// keys differ can be compared.
    fn unwrapped_rows(keys: &mut KeyStore) -> Vec<(DomainRecord, Vec<Vec<u8>>)> {
        let records = keys
            .store_mut()
            .read_domains_for_backup(None)
            .expect("read");
        let root = keys.root();
        records
            .into_iter()
            .map(|mut record| {
                let mut secrets = Vec::new();
                for credential in &mut record.credentials {
                    let context = WrapContext::Credential {
                        domain_id: &credential.info.domain_id,
                        access_key_id: &credential.info.access_key_id,
                    };
                    let secret = root.unwrap(context, &credential.wrapped_secret);
                    secrets.push(secret.expect("credential unwraps").to_vec());
                    credential.wrapped_secret.clear();
                }
                for key in &mut record.keys {
                    for version in &mut key.versions {
                        if let StoredMaterial::Wrapped(wrapped) = &mut version.material {
                            let context = WrapContext::KeyVersion {
                                domain_id: &key.info.domain_id,
                                key_id: &key.info.key_id,
                                version: version.version,
                            };
                            let material = root.unwrap(context, wrapped);
                            secrets.push(material.expect("material unwraps").to_vec());
                            wrapped.clear();
                        }
                    }
                }
                (record, secrets)
            })
            .collect()
    }

    fn restore_all(target: &mut KeyStore, file: &[u8], skip: bool) -> RestoreReport {
        let contents = open(file, &key_file()).expect("open backup");
        restore(target, &contents, skip, &()).expect("restore")
    }

    #[test]
    fn restore_rewraps_everything_under_another_root() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = populated(dir.path());
        let (file, summary) =
            create(&mut source, &options(None), &key_file(), &()).expect("create");
        assert_eq!(summary.domains.len(), 2);
        assert_eq!(summary.total(|domain| domain.revoked_credentials), 1);
        assert_eq!(summary.total(|domain| domain.versions), 5);

        let mut target = key_store(dir.path(), "target");
        let report = restore_all(&mut target, &file, false);
        assert_eq!(report.domains, 2);
        assert_eq!(report.credentials, 3);
        assert_eq!(report.keys, 3);
        assert_eq!(report.versions, 5);
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);

        let expected = unwrapped_rows(&mut source);
        let restored = unwrapped_rows(&mut target);
        assert_eq!(restored, expected);
        let pending = &restored[0].0.keys[0];
        assert_eq!(pending.info.status, KeyStatus::PendingDeletion);
        assert_eq!(pending.status_before_deletion, Some(KeyStatus::Disabled));

        let snapshot = target.load_snapshot().expect("snapshot");
        let unusable: Vec<_> = snapshot
            .problems
            .iter()
            .filter(|problem| !problem.contains("system key"))
            .collect();
        assert!(unusable.is_empty(), "{unusable:?}");
    }

    #[test]
    fn full_backup_rejects_any_changed_byte_or_truncation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = key_store(dir.path(), "source");
        create_domain(&mut source, "acme", None);
        source.create_credential("acme").expect("credential");
        source
            .create_key(&NewKey::with_id("acme", "k1"))
            .expect("key");
        let (file, _) = create(&mut source, &options(None), &key_file(), &()).expect("create");
        assert!(open(&file, &key_file()).is_ok());

        for index in 0..file.len() {
            let mut changed = file.clone();
            changed[index] ^= 0x80;
            assert!(
                open(&changed, &key_file()).is_err(),
                "changed byte {index} was not detected"
            );
        }
        for len in 0..file.len() {
            assert!(
                open(&file[..len], &key_file()).is_err(),
                "file cut to {len} bytes was accepted"
            );
        }
    }

    #[test]
    fn passphrase_backup_round_trips() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = populated(dir.path());
        let passphrase = || KeySource::Passphrase(Zeroizing::new("a long passphrase".to_owned()));
        let (file, created) =
            create(&mut source, &options(None), &passphrase(), &()).expect("create");
        let contents = open(&file, &passphrase()).expect("open");
        assert_eq!(contents.summary(), created);
        assert_eq!(created.derivation, KeyDerivation::Argon2id(TEST_ARGON2));
        assert_eq!(created.source_node, "node-a");

        let wrong = KeySource::Passphrase(Zeroizing::new("a long passphrasE".to_owned()));
        let error = open(&file, &wrong).expect_err("wrong passphrase");
        assert!(matches!(error, BackupError::Authentication), "{error}");
    }

    #[test]
    fn backup_of_one_domain_holds_only_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = populated(dir.path());
        let (file, summary) =
            create(&mut source, &options(Some("beta")), &key_file(), &()).expect("create");
        assert_eq!(summary.domain_filter.as_deref(), Some("beta"));
        let ids: Vec<&str> = summary.domains.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["beta"]);

        let mut target = key_store(dir.path(), "target");
        restore_all(&mut target, &file, false);
        let domains = target.store().domains().expect("domains");
        assert_eq!(domains.len(), 1);
        let missing = create(&mut source, &options(Some("nope")), &key_file(), &());
        assert!(matches!(
            missing,
            Err(BackupError::Store(StoreError::NotFound(_)))
        ));
    }

    #[test]
    fn conflicts_are_listed_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = populated(dir.path());
        let (file, _) = create(&mut source, &options(None), &key_file(), &()).expect("create");

        let mut target = key_store(dir.path(), "target");
        create_domain(&mut target, "acme", Some("/elsewhere"));
        target
            .create_key(&NewKey::with_id("acme", "rotated"))
            .expect("key");
        let revision = target.store().revision().expect("revision");
        let contents = open(&file, &key_file()).expect("open");
        let error = restore(&mut target, &contents, false, &()).expect_err("conflicts");
        let BackupError::Conflicts(conflicts) = &error else {
            panic!("expected conflicts, got {error}");
        };
        assert!(conflicts.contains(&Conflict::DomainId {
            domain_id: "acme".to_owned()
        }));
        assert!(conflicts.contains(&Conflict::KeyId {
            domain_id: "acme".to_owned(),
            key_id: "rotated".to_owned()
        }));
        assert_eq!(conflicts.len(), 2, "{error}");
        assert!(error.to_string().contains("domain \"acme\" already exists"));
        assert_eq!(target.store().revision().expect("revision"), revision);
        assert_eq!(target.store().domains().expect("domains").len(), 1);

        let report = restore(&mut target, &contents, true, &()).expect("skip existing");
        assert_eq!(report.domains, 1, "only beta is new");
        assert_eq!(report.keys, 2, "pending and b1");
        assert_eq!(report.credentials, 3);
        assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
        let acme = target.store().domain("acme").expect("acme");
        assert_eq!(
            acme.uri_prefix, "/elsewhere",
            "an existing domain is never changed"
        );
        assert_eq!(target.store().keys("acme").expect("keys").len(), 2);
    }

    #[test]
    fn domain_with_taken_prefix_is_skipped_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = populated(dir.path());
        let (file, _) = create(&mut source, &options(None), &key_file(), &()).expect("create");
        let mut target = key_store(dir.path(), "target");
        create_domain(&mut target, "other", Some("/domains/beta"));

        let contents = open(&file, &key_file()).expect("open");
        let error = restore(&mut target, &contents, false, &()).expect_err("prefix taken");
        assert!(
            error.to_string().contains(
                "\"/domains/beta\" of domain \"beta\" is already used by domain \"other\""
            ),
            "{error}"
        );
        let report = restore(&mut target, &contents, true, &()).expect("skip existing");
        assert_eq!(report.domains, 1);
        assert_eq!(report.keys, 2);
        assert!(
            report.skipped[0].contains("1 credentials and 1 keys"),
            "{:?}",
            report.skipped
        );
        assert!(target.store().domain("beta").is_err());
    }

    #[test]
    fn active_credentials_beyond_limit_are_conflicts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = populated(dir.path());
        let (file, _) =
            create(&mut source, &options(Some("acme")), &key_file(), &()).expect("create");
        let mut target = key_store(dir.path(), "target");
        create_domain(&mut target, "acme", None);
        target.create_credential("acme").expect("first");
        target.create_credential("acme").expect("second");

        let contents = open(&file, &key_file()).expect("open");
        let error = restore(&mut target, &contents, false, &()).expect_err("limit");
        assert!(
            error.to_string().contains("exceed the limit of 2"),
            "{error}"
        );
        let report = restore(&mut target, &contents, true, &()).expect("skip existing");
        assert_eq!(report.credentials, 1, "only the revoked credential fits");
        let active = target
            .store()
            .credentials("acme")
            .expect("credentials")
            .iter()
            .filter(|credential| credential.revoked_at.is_none())
            .count();
        assert_eq!(active, 2);
    }

    #[test]
    fn hsm_key_references_need_an_hsm_root() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = key_store(dir.path(), "source");
        create_domain(&mut source, "acme", None);
        let key = KeyInfo {
            protection: Protection::Hsm,
            ..source
                .create_key(&NewKey::with_id("acme", "template"))
                .expect("key")
        };
        let hsm_key = KeyInfo {
            key_id: "in-hsm".to_owned(),
            ..key
        };
        let label = format!("{}/0011223344556677", hsm_label("acme", "in-hsm", 1));
        let version = StoredVersion {
            version: 1,
            state: VersionState::Enabled,
            material: StoredMaterial::Hsm(label.clone()),
            created_at: 0,
        };
        source
            .store_mut()
            .create_key(&hsm_key, &version)
            .expect("store HSM key row");
        let (file, summary) =
            create(&mut source, &options(None), &key_file(), &()).expect("create");
        assert_eq!(summary.total(|domain| domain.hsm_keys), 1);
        let contents = open(&file, &key_file()).expect("open");
        assert!(
            contents.manifest.domains[0]
                .keys
                .iter()
                .any(|key| key.versions[0].material
                    == MaterialEntry::Hsm {
                        label: label.clone()
                    })
        );

        let mut target = key_store(dir.path(), "target");
        let error = restore(&mut target, &contents, false, &()).expect_err("no HSM");
        assert!(matches!(error, BackupError::HsmRequired(_)), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("key \"in-hsm\" in domain \"acme\""),
            "{message}"
        );
        assert!(
            message.contains("HSM vendor's own backup tools"),
            "{message}"
        );
        assert!(target.store().domains().expect("domains").is_empty());
    }

    #[test]
    fn secret_that_does_not_unwrap_stops_the_backup() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = key_store(dir.path(), "source");
        create_domain(&mut source, "acme", None);
        source.create_credential("acme").expect("credential");
        let store = Store::open(&dir.path().join("source.db")).expect("open store");
        let other_root = FileRootKey::create(&dir.path().join("other.key")).expect("root key");
        let mut mismatched = KeyStore::new(store, Box::new(other_root));
        let error =
            create(&mut mismatched, &options(None), &key_file(), &()).expect_err("wrong root");
        assert!(
            error
                .to_string()
                .contains("did not unwrap under the root of trust"),
            "{error}"
        );
    }

    #[test]
    fn backup_file_is_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("backup.khb");
        write_backup_file(&path, b"first").expect("write");
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let error = write_backup_file(&path, b"second").expect_err("exists");
        assert!(matches!(error, BackupError::Io { .. }), "{error}");
        assert_eq!(fs::read(&path).expect("read"), b"first");
    }
}
