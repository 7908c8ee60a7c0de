//! Whole domains in and out of the store, for backup and restore.
//!
//! Reading returns every row of the chosen domains, revoked credentials and destroyed versions
//! included, in one read transaction. Restoring inserts rows in one write transaction and first
//! checks them against the rows already stored, so it never overwrites anything and a failure
//! leaves nothing behind. Secrets stay wrapped here: the caller unwraps and re-wraps them.

use std::collections::HashMap;
use std::fmt;

use super::sql::{Isolation, Sql, params};
use super::{
    KEY_COLUMNS, Store, StoreError, credential_from_row, domain_from_row, insert_domain,
    insert_key, insert_version, key_from_row, version_from_row,
};
use crate::keystore::model::{
    CredentialInfo, Domain, KeyInfo, KeyStatus, MAX_ACTIVE_CREDENTIALS, StoredVersion,
};

/// A credential with its secret wrapped under the store's root of trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    /// Public part.
    pub info: CredentialInfo,
    /// Secret wrapped for this credential's place.
    pub wrapped_secret: Vec<u8>,
}

/// A key with every stored field and all its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Attributes.
    pub info: KeyInfo,
    /// Status that cancelling a scheduled deletion restores; set only while pending deletion.
    pub status_before_deletion: Option<KeyStatus>,
    /// Versions, oldest first.
    pub versions: Vec<StoredVersion>,
}

/// A domain with all its credentials and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRecord {
    /// Attributes.
    pub domain: Domain,
    /// Credentials, active and revoked, oldest first.
    pub credentials: Vec<CredentialRecord>,
    /// Keys ordered by id.
    pub keys: Vec<KeyRecord>,
}

/// Rows to insert in one restore: new domains, and credentials and keys that belong to them or
/// to domains that exist already.
#[derive(Debug, Default)]
pub struct RestoreSet {
    /// Domains to create.
    pub domains: Vec<Domain>,
    /// Credentials to create.
    pub credentials: Vec<CredentialRecord>,
    /// Keys to create with their versions.
    pub keys: Vec<KeyRecord>,
}

/// Ids of the objects a restore would create, checked against the store before anything is
/// written.
#[derive(Debug, Default)]
pub struct RestoreIds {
    /// Domain ids with their URI path prefixes.
    pub domains: Vec<(String, String)>,
    /// Credentials by domain id and access key id, with whether they are active.
    pub credentials: Vec<(String, String, bool)>,
    /// Keys by domain id and key id.
    pub keys: Vec<(String, String)>,
}

/// An object of a restore that the store already has, or that would break a store rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// A domain with this id exists.
    DomainId {
        /// Domain id.
        domain_id: String,
    },
    /// Another domain uses this URI path prefix.
    UriPrefix {
        /// Domain id in the restore.
        domain_id: String,
        /// The prefix.
        uri_prefix: String,
        /// Domain that uses it in the store.
        owner: String,
    },
    /// A credential with this access key id exists, in any domain.
    AccessKeyId {
        /// Domain id in the restore.
        domain_id: String,
        /// Access key id.
        access_key_id: String,
    },
    /// The domain exists and has this key id; key ids are never reused.
    KeyId {
        /// Domain id.
        domain_id: String,
        /// Key id.
        key_id: String,
    },
    /// The restored active credentials and those of the existing domain exceed the limit.
    ActiveCredentials {
        /// Domain id.
        domain_id: String,
        /// Active credentials the domain has in the store.
        stored: usize,
        /// Active credentials the restore would add.
        restored: usize,
    },
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DomainId { domain_id } => write!(f, "domain {domain_id:?} already exists"),
            Self::UriPrefix {
                domain_id,
                uri_prefix,
                owner,
            } => write!(
                f,
                "URI path prefix {uri_prefix:?} of domain {domain_id:?} is already used by \
                 domain {owner:?}"
            ),
            Self::AccessKeyId {
                domain_id,
                access_key_id,
            } => write!(
                f,
                "credential {access_key_id} of domain {domain_id:?} already exists"
            ),
            Self::KeyId { domain_id, key_id } => {
                write!(f, "key {key_id:?} in domain {domain_id:?} already exists")
            }
            Self::ActiveCredentials {
                domain_id,
                stored,
                restored,
            } => write!(
                f,
                "domain {domain_id:?} has {stored} active credentials, and {restored} more \
                 would exceed the limit of {MAX_ACTIVE_CREDENTIALS}"
            ),
        }
    }
}

impl RestoreSet {
    /// Collects the ids of the objects this set creates.
    pub fn ids(&self) -> RestoreIds {
        RestoreIds {
            domains: self
                .domains
                .iter()
                .map(|domain| (domain.id.clone(), domain.uri_prefix.clone()))
                .collect(),
            credentials: self
                .credentials
                .iter()
                .map(|credential| {
                    (
                        credential.info.domain_id.clone(),
                        credential.info.access_key_id.clone(),
                        credential.info.revoked_at.is_none(),
                    )
                })
                .collect(),
            keys: self
                .keys
                .iter()
                .map(|key| (key.info.domain_id.clone(), key.info.key_id.clone()))
                .collect(),
        }
    }
}

impl Store {
    /// Reads every domain, or only `domain_id`, with all credentials, keys and versions, in
    /// one read transaction so the result is consistent.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when `domain_id` names no domain, and [`StoreError`] on
    /// a database failure or a corrupt row.
    pub fn read_domains_for_backup(
        &mut self,
        domain_id: Option<&str>,
    ) -> Result<Vec<DomainRecord>, StoreError> {
        let tx = self.conn.transaction(Isolation::Snapshot)?;
        if let Some(id) = domain_id {
            super::domain_exists(&tx, id)?;
        }
        let mut records = read_domains(&tx, domain_id)?;
        let positions: HashMap<String, usize> = records
            .iter()
            .enumerate()
            .map(|(index, record)| (record.domain.id.clone(), index))
            .collect();
        for credential in read_credentials(&tx, domain_id)? {
            let index = position(&positions, &credential.info.domain_id)?;
            records[index].credentials.push(credential);
        }
        for key in read_keys(&tx, domain_id)? {
            let index = position(&positions, &key.info.domain_id)?;
            records[index].keys.push(key);
        }
        tx.commit()?;
        Ok(records)
    }

    /// Lists the objects of a restore that conflict with what the store has.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] on a database failure.
    pub fn restore_conflicts(&self, ids: &RestoreIds) -> Result<Vec<Conflict>, StoreError> {
        find_conflicts(&self.conn, ids)
    }

    /// Inserts a restore set in one transaction, after checking again that nothing in it
    /// conflicts with the store: another process may have written since the caller checked.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::AlreadyExists`] listing the conflicts, [`StoreError::NotFound`]
    /// when a credential or key belongs to a domain that is neither stored nor restored, and
    /// [`StoreError::Sqlite`] on a database failure. Nothing is written then.
    pub fn restore(&mut self, set: &RestoreSet) -> Result<(), StoreError> {
        let ids = set.ids();
        self.write(|tx| {
            let conflicts = find_conflicts(tx, &ids)?;
            if !conflicts.is_empty() {
                let list: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
                return Err(StoreError::AlreadyExists(format!(
                    "objects written since the restore was checked: {}",
                    list.join("; ")
                )));
            }
            for domain in &set.domains {
                insert_domain(tx, domain)?;
            }
            for credential in &set.credentials {
                super::domain_exists(tx, &credential.info.domain_id)?;
                insert_credential(tx, credential)?;
            }
            for key in &set.keys {
                super::domain_exists(tx, &key.info.domain_id)?;
                insert_key(tx, &key.info, key.status_before_deletion)?;
                for version in &key.versions {
                    insert_version(tx, &key.info.domain_id, &key.info.key_id, version)?;
                }
            }
            Ok(())
        })
    }
}

/// Looks up the index of a domain's record. A row of a domain that was not read is corrupt.
fn position(positions: &HashMap<String, usize>, domain_id: &str) -> Result<usize, StoreError> {
    positions
        .get(domain_id)
        .copied()
        .ok_or_else(|| StoreError::Corrupt(format!("row of unknown domain {domain_id:?}")))
}

fn read_domains(tx: &impl Sql, domain_id: Option<&str>) -> Result<Vec<DomainRecord>, StoreError> {
    let rows = tx.query(
        &format!(
            "SELECT {} FROM domains WHERE CAST(?1 AS TEXT) IS NULL OR id = ?1 ORDER BY id",
            super::DOMAIN_COLUMNS
        ),
        params![domain_id],
    )?;
    rows.iter()
        .map(|row| {
            Ok(DomainRecord {
                domain: domain_from_row(row)?,
                credentials: Vec::new(),
                keys: Vec::new(),
            })
        })
        .collect()
}

fn read_credentials(
    tx: &impl Sql,
    domain_id: Option<&str>,
) -> Result<Vec<CredentialRecord>, StoreError> {
    let rows = tx.query(
        "SELECT access_key_id, domain_id, created_at, revoked_at, wrapped_secret
         FROM credentials WHERE CAST(?1 AS TEXT) IS NULL OR domain_id = ?1
         ORDER BY domain_id, created_at, access_key_id",
        params![domain_id],
    )?;
    rows.iter()
        .map(|row| {
            Ok(CredentialRecord {
                info: credential_from_row(row)?,
                wrapped_secret: row.get(4)?,
            })
        })
        .collect()
}

/// Reads keys with their versions and the status a cancelled deletion restores.
fn read_keys(tx: &impl Sql, domain_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
    let infos = tx
        .query(
            &format!(
                "{KEY_COLUMNS} WHERE CAST(?1 AS TEXT) IS NULL OR domain_id = ?1 ORDER BY domain_id, key_id"
            ),
            params![domain_id],
        )?
        .iter()
        .map(key_from_row)
        .collect::<Result<Vec<KeyInfo>, StoreError>>()?;

    let mut keys = Vec::with_capacity(infos.len());
    for info in infos {
        let status_before_deletion = status_before_deletion(tx, &info)?;
        let versions = tx
            .query(
                "SELECT domain_id, key_id, version, state, wrapped_material, hsm_label, created_at
                 FROM key_versions WHERE domain_id = ?1 AND key_id = ?2 ORDER BY version",
                params![&info.domain_id, &info.key_id],
            )?
            .iter()
            .map(version_from_row)
            .collect::<Result<Vec<StoredVersion>, StoreError>>()?;
        keys.push(KeyRecord {
            info,
            status_before_deletion,
            versions,
        });
    }
    Ok(keys)
}

fn status_before_deletion(tx: &impl Sql, key: &KeyInfo) -> Result<Option<KeyStatus>, StoreError> {
    let text: Option<String> = tx
        .query_one(
            "SELECT status_before_deletion FROM keys WHERE domain_id = ?1 AND key_id = ?2",
            params![&key.domain_id, &key.key_id],
        )?
        .get(0)?;
    text.map(|text| {
        KeyStatus::parse(&text).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "key {:?} has status before deletion {text:?}",
                key.key_id
            ))
        })
    })
    .transpose()
}

fn find_conflicts(conn: &impl Sql, ids: &RestoreIds) -> Result<Vec<Conflict>, StoreError> {
    let mut conflicts = Vec::new();
    for (domain_id, uri_prefix) in &ids.domains {
        if domain_taken(conn, domain_id)? {
            conflicts.push(Conflict::DomainId {
                domain_id: domain_id.clone(),
            });
            continue;
        }
        let owner: Option<String> = conn
            .query_opt(
                "SELECT id FROM domains WHERE uri_prefix = ?1",
                params![uri_prefix],
            )?
            .map(|row| row.get(0))
            .transpose()?;
        if let Some(owner) = owner {
            conflicts.push(Conflict::UriPrefix {
                domain_id: domain_id.clone(),
                uri_prefix: uri_prefix.clone(),
                owner,
            });
        }
    }

    let mut restored_active: Vec<(&str, usize)> = Vec::new();
    for (domain_id, access_key_id, active) in &ids.credentials {
        let taken: bool = conn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM credentials WHERE access_key_id = ?1)",
                params![access_key_id],
            )?
            .get(0)?;
        if taken {
            conflicts.push(Conflict::AccessKeyId {
                domain_id: domain_id.clone(),
                access_key_id: access_key_id.clone(),
            });
        } else if *active {
            match restored_active.iter_mut().find(|(id, _)| id == domain_id) {
                Some((_, count)) => *count += 1,
                None => restored_active.push((domain_id, 1)),
            }
        }
    }
    for (domain_id, restored) in restored_active {
        let stored: i64 = conn
            .query_one(
                "SELECT COUNT(*) FROM credentials WHERE domain_id = ?1 AND revoked_at IS NULL",
                params![domain_id],
            )?
            .get(0)?;
        let stored = usize::try_from(stored).unwrap_or(usize::MAX);
        if stored.saturating_add(restored) > MAX_ACTIVE_CREDENTIALS {
            conflicts.push(Conflict::ActiveCredentials {
                domain_id: domain_id.to_owned(),
                stored,
                restored,
            });
        }
    }

    for (domain_id, key_id) in &ids.keys {
        let taken: bool = conn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM keys WHERE domain_id = ?1 AND key_id = ?2)",
                params![domain_id, key_id],
            )?
            .get(0)?;
        if taken {
            conflicts.push(Conflict::KeyId {
                domain_id: domain_id.clone(),
                key_id: key_id.clone(),
            });
        }
    }
    Ok(conflicts)
}

fn domain_taken(conn: &impl Sql, domain_id: &str) -> Result<bool, StoreError> {
    conn.query_one(
        "SELECT EXISTS (SELECT 1 FROM domains WHERE id = ?1)",
        params![domain_id],
    )?
    .get(0)
}

fn insert_credential(tx: &impl Sql, credential: &CredentialRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO credentials (access_key_id, domain_id, wrapped_secret, created_at,
             revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            &credential.info.access_key_id,
            &credential.info.domain_id,
            &credential.wrapped_secret,
            credential.info.created_at,
            credential.info.revoked_at
        ],
    )?;
    Ok(())
}
