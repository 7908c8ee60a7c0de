//! Lifecycle changes in the store: the domain kill switch, rotation, version states, scheduled
//! deletion and its tombstones, rotation periods and policies.
//!
//! Each change is one transaction that checks the state it expects, so two nodes or two CLI
//! calls racing on the same key cannot both apply a change.

use super::sql::{Backend, Sql, params};
use super::{Store, StoreError, domain_exists, insert_version, key_status, version_from_row};
use crate::keystore::model::{DomainStatus, KeyStatus, StoredVersion, VersionState};

/// A key whose automatic rotation is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRotation {
    /// Domain id.
    pub domain_id: String,
    /// Key id.
    pub key_id: String,
    /// The primary version the rotation replaces.
    pub primary_version: u32,
}

/// What destroying a key or version left to clean up outside the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destroyed {
    /// Labels of HSM objects that held the destroyed material.
    pub hsm_labels: Vec<String>,
}

impl Store {
    /// Sets a domain's status: `Disabled` is the kill switch.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when the domain does not exist.
    pub fn set_domain_status(&mut self, id: &str, status: DomainStatus) -> Result<(), StoreError> {
        let text = match status {
            DomainStatus::Enabled => "ENABLED",
            DomainStatus::Disabled => "DISABLED",
        };
        self.write(|tx| {
            domain_exists(tx, id)?;
            tx.execute(
                "UPDATE domains SET status = ?2 WHERE id = ?1",
                params![id, text],
            )?;
            Ok(())
        })
    }

    /// Adds a new primary version, provided the primary is still `expected_primary`; returns
    /// false when another rotation came first.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] for a missing key and [`StoreError::Rejected`] for a key
    /// pending deletion or destroyed.
    pub fn add_primary_version(
        &mut self,
        domain_id: &str,
        key_id: &str,
        expected_primary: u32,
        version: &StoredVersion,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let status = key_status(tx, domain_id, key_id)?;
            if matches!(status, KeyStatus::PendingDeletion | KeyStatus::Destroyed) {
                return Err(StoreError::Rejected(format!(
                    "key {key_id:?} is {} and cannot be rotated",
                    status.as_str()
                )));
            }
            let changed = tx.execute(
                "UPDATE keys SET primary_version = ?4
                 WHERE domain_id = ?1 AND key_id = ?2 AND primary_version = ?3",
                params![domain_id, key_id, expected_primary, version.version],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            insert_version(tx, domain_id, key_id, version)?;
            Ok(true)
        })
    }

    /// Lists a key's versions, oldest first.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when the domain or key does not exist.
    pub fn versions(
        &self,
        domain_id: &str,
        key_id: &str,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        key_status(&self.conn, domain_id, key_id)?;
        self.conn
            .query(
                "SELECT domain_id, key_id, version, state, wrapped_material, hsm_label, created_at
                 FROM key_versions WHERE domain_id = ?1 AND key_id = ?2 ORDER BY version",
                params![domain_id, key_id],
            )?
            .iter()
            .map(version_from_row)
            .collect()
    }

    /// Enables or disables a version other than the primary.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Rejected`] for the primary version or a destroyed version, and
    /// [`StoreError::NotFound`] for a missing version.
    pub fn set_version_state(
        &mut self,
        domain_id: &str,
        key_id: &str,
        version: u32,
        state: VersionState,
    ) -> Result<(), StoreError> {
        debug_assert!(state != VersionState::Destroyed, "use destroy_version");
        self.write(|tx| {
            check_changeable_version(tx, domain_id, key_id, version)?;
            tx.execute(
                "UPDATE key_versions SET state = ?4
                 WHERE domain_id = ?1 AND key_id = ?2 AND version = ?3",
                params![domain_id, key_id, version, state.as_str()],
            )?;
            Ok(())
        })
    }

    /// Erases a version's material for good; it must not be the primary version.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Rejected`] for the primary version or a destroyed version, and
    /// [`StoreError::NotFound`] for a missing version.
    pub fn destroy_version(
        &mut self,
        domain_id: &str,
        key_id: &str,
        version: u32,
    ) -> Result<Destroyed, StoreError> {
        let destroyed = self.write(|tx| {
            check_changeable_version(tx, domain_id, key_id, version)?;
            let label: Option<String> = tx
                .query_one(
                    "SELECT hsm_label FROM key_versions
                     WHERE domain_id = ?1 AND key_id = ?2 AND version = ?3",
                    params![domain_id, key_id, version],
                )?
                .get(0)?;
            tx.execute(
                "UPDATE key_versions SET state = 'DESTROYED', wrapped_material = NULL
                 WHERE domain_id = ?1 AND key_id = ?2 AND version = ?3",
                params![domain_id, key_id, version],
            )?;
            Ok(Destroyed {
                hsm_labels: label.into_iter().collect(),
            })
        })?;
        self.scrub()?;
        Ok(destroyed)
    }

    /// Puts a key in `PENDING_DELETION` until `deletion_at`.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Rejected`] when the key is already pending deletion or destroyed.
    pub fn schedule_deletion(
        &mut self,
        domain_id: &str,
        key_id: &str,
        deletion_at: i64,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let status = key_status(tx, domain_id, key_id)?;
            if !matches!(status, KeyStatus::Enabled | KeyStatus::Disabled) {
                return Err(StoreError::Rejected(format!(
                    "key {key_id:?} is already {}",
                    status.as_str()
                )));
            }
            tx.execute(
                "UPDATE keys SET status = 'PENDING_DELETION', status_before_deletion = status,
                     deletion_at = ?3
                 WHERE domain_id = ?1 AND key_id = ?2",
                params![domain_id, key_id, deletion_at],
            )?;
            Ok(())
        })
    }

    /// Cancels a scheduled deletion and restores the status the key had before.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Rejected`] when the key is not pending deletion.
    pub fn cancel_deletion(
        &mut self,
        domain_id: &str,
        key_id: &str,
    ) -> Result<KeyStatus, StoreError> {
        self.write(|tx| {
            let status = key_status(tx, domain_id, key_id)?;
            if status != KeyStatus::PendingDeletion {
                return Err(StoreError::Rejected(format!(
                    "key {key_id:?} is {}, not PENDING_DELETION",
                    status.as_str()
                )));
            }
            tx.execute(
                "UPDATE keys SET status = COALESCE(status_before_deletion, 'DISABLED'),
                     status_before_deletion = NULL, deletion_at = NULL
                 WHERE domain_id = ?1 AND key_id = ?2",
                params![domain_id, key_id],
            )?;
            key_status(tx, domain_id, key_id)
        })
    }

    /// Destroys a key whose deletion date has passed: every version's material is erased and
    /// the key stays as a `DESTROYED` tombstone. Returns `None` when the key is not due, so a
    /// second node racing on the same key does nothing.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] on a database failure.
    pub fn destroy_due_key(
        &mut self,
        domain_id: &str,
        key_id: &str,
        now: i64,
    ) -> Result<Option<Destroyed>, StoreError> {
        let destroyed = self.write(|tx| {
            let changed = tx.execute(
                "UPDATE keys SET status = 'DESTROYED'
                 WHERE domain_id = ?1 AND key_id = ?2 AND status = 'PENDING_DELETION'
                     AND deletion_at <= ?3",
                params![domain_id, key_id, now],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            let labels = tx
                .query(
                    "SELECT hsm_label FROM key_versions
                     WHERE domain_id = ?1 AND key_id = ?2 AND hsm_label IS NOT NULL
                         AND state <> 'DESTROYED'",
                    params![domain_id, key_id],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect::<Result<Vec<String>, _>>()?;
            tx.execute(
                "UPDATE key_versions SET state = 'DESTROYED', wrapped_material = NULL
                 WHERE domain_id = ?1 AND key_id = ?2",
                params![domain_id, key_id],
            )?;
            Ok(Some(Destroyed { hsm_labels: labels }))
        })?;
        if destroyed.is_some() {
            self.scrub()?;
        }
        Ok(destroyed)
    }

    /// Keys pending deletion whose date has passed.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] on a database failure.
    pub fn due_deletions(&self, now: i64) -> Result<Vec<(String, String)>, StoreError> {
        self.conn
            .query(
                "SELECT domain_id, key_id FROM keys
                 WHERE status = 'PENDING_DELETION' AND deletion_at <= ?1",
                params![now],
            )?
            .iter()
            .map(|row| Ok((row.get(0)?, row.get(1)?)))
            .collect()
    }

    /// Keys with a rotation period whose primary version is at least that old.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] on a database failure.
    pub fn due_rotations(&self, now: i64) -> Result<Vec<DueRotation>, StoreError> {
        self.conn
            .query(
                "SELECT k.domain_id, k.key_id, k.primary_version FROM keys k
                 JOIN key_versions v ON v.domain_id = k.domain_id AND v.key_id = k.key_id
                     AND v.version = k.primary_version
                 WHERE k.rotation_period_secs IS NOT NULL
                     AND k.status IN ('ENABLED', 'DISABLED')
                     AND v.created_at + k.rotation_period_secs <= ?1",
                params![now],
            )?
            .iter()
            .map(|row| {
                Ok(DueRotation {
                    domain_id: row.get(0)?,
                    key_id: row.get(1)?,
                    primary_version: row.get(2)?,
                })
            })
            .collect()
    }

    /// Records the KMS key ARN a key learned on first use, unless it has a binding already.
    /// Returns whether this ARN is now the binding.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] on a database failure.
    pub fn learn_key_binding(
        &mut self,
        domain_id: &str,
        key_id: &str,
        kms_key_arn: &str,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE keys SET bound_kms_key_arn = ?3
                 WHERE domain_id = ?1 AND key_id = ?2 AND learn_binding <> 0
                     AND bound_kms_key_arn IS NULL",
                params![domain_id, key_id, kms_key_arn],
            )?;
            let bound: Option<String> = tx
                .query_one(
                    "SELECT bound_kms_key_arn FROM keys WHERE domain_id = ?1 AND key_id = ?2",
                    params![domain_id, key_id],
                )?
                .get(0)?;
            Ok(bound.as_deref() == Some(kms_key_arn))
        })
    }

    /// Sets or clears a key's automatic rotation period.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] for a missing key.
    pub fn set_rotation_period(
        &mut self,
        domain_id: &str,
        key_id: &str,
        period_secs: Option<i64>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            key_status(tx, domain_id, key_id)?;
            tx.execute(
                "UPDATE keys SET rotation_period_secs = ?3 WHERE domain_id = ?1 AND key_id = ?2",
                params![domain_id, key_id, period_secs],
            )?;
            Ok(())
        })
    }

    /// Sets or clears the policy of a domain, or of one of its keys.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] for a missing domain or key.
    pub fn set_policy(
        &mut self,
        domain_id: &str,
        key_id: Option<&str>,
        policy: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            match key_id {
                Some(key_id) => {
                    key_status(tx, domain_id, key_id)?;
                    tx.execute(
                        "UPDATE keys SET policy = ?3 WHERE domain_id = ?1 AND key_id = ?2",
                        params![domain_id, key_id, policy],
                    )?;
                }
                None => {
                    domain_exists(tx, domain_id)?;
                    tx.execute(
                        "UPDATE domains SET policy = ?2 WHERE id = ?1",
                        params![domain_id, policy],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Takes the cluster-wide lock for scheduled rotations and deletions without waiting, and
    /// returns whether this connection holds it now. On PostgreSQL this is a session-level
    /// advisory lock, so one node runs the scheduled work while the others skip that round.
    /// The server releases it when the session ends. SQLite serves one node, so it always
    /// succeeds there.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Postgres`] on a database failure.
    pub fn try_lock_scheduler(&self) -> Result<bool, StoreError> {
        if self.conn.backend() == Backend::Sqlite {
            return Ok(true);
        }
        self.conn
            .query_one(
                "SELECT pg_try_advisory_lock(?1)",
                params![super::postgres::SCHEDULER_LOCK],
            )?
            .get(0)
    }

    /// Releases the lock taken by [`Store::try_lock_scheduler`].
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Postgres`] on a database failure.
    pub fn unlock_scheduler(&self) -> Result<(), StoreError> {
        if self.conn.backend() == Backend::Postgres {
            self.conn.query_one(
                "SELECT pg_advisory_unlock(?1)",
                params![super::postgres::SCHEDULER_LOCK],
            )?;
        }
        Ok(())
    }

    /// Removes erased material from the database files as far as the backend allows.
    ///
    /// SQLite overwrites freed pages (`secure_delete`) and truncates the write-ahead log, so the
    /// material lingers neither in free pages nor in old log frames. PostgreSQL keeps the old
    /// row versions until a vacuum, so this vacuums `key_versions`.
    fn scrub(&mut self) -> Result<(), StoreError> {
        if let Some(conn) = self.conn.sqlite() {
            let mut statement = conn.prepare("PRAGMA wal_checkpoint(TRUNCATE)")?;
            let mut rows = statement.query([])?;
            while rows.next()?.is_some() {}
            return Ok(());
        }
        // NOTE: VACUUM frees the dead row versions but need not overwrite their bytes, and the
        // PostgreSQL write-ahead log and its archives keep the old rows until they are recycled.
        debug_assert_eq!(self.conn.backend(), Backend::Postgres);
        self.conn.execute("VACUUM key_versions", &[])?;
        Ok(())
    }
}

/// Checks that a version exists, is not the primary and is not destroyed.
fn check_changeable_version(
    tx: &impl Sql,
    domain_id: &str,
    key_id: &str,
    version: u32,
) -> Result<(), StoreError> {
    key_status(tx, domain_id, key_id)?;
    let row = tx
        .query_opt(
            "SELECT v.state, k.primary_version FROM key_versions v
             JOIN keys k ON k.domain_id = v.domain_id AND k.key_id = v.key_id
             WHERE v.domain_id = ?1 AND v.key_id = ?2 AND v.version = ?3",
            params![domain_id, key_id, version],
        )?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "version {version} of key {key_id:?} in domain {domain_id:?}"
            ))
        })?;
    let state: String = row.get(0)?;
    let primary: u32 = row.get(1)?;
    if version == primary {
        return Err(StoreError::Rejected(format!(
            "version {version} is the primary version of key {key_id:?}, which is always enabled; rotate the key before changing it"
        )));
    }
    if state == VersionState::Destroyed.as_str() {
        return Err(StoreError::Rejected(format!(
            "version {version} of key {key_id:?} is destroyed"
        )));
    }
    Ok(())
}
