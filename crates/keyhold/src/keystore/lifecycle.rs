//! Lifecycle operations that need the root of trust or the HSM besides the store: rotation,
//! destruction of versions and keys, and the scheduled work a server runs.

use super::model::{StoredVersion, VersionState};
use super::{Error, KeyStore, unix_now};

/// Shortest and longest waiting period before a scheduled deletion, in days.
pub const DELETION_WAIT_DAYS: std::ops::RangeInclusive<u32> = 7..=30;

/// What one run of the scheduled work did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduledWork {
    /// Keys rotated because their rotation period passed: domain, key, new version.
    pub rotated: Vec<(String, String, u32)>,
    /// Keys destroyed because their deletion date passed: domain, key.
    pub destroyed: Vec<(String, String)>,
}

impl KeyStore {
    /// Makes a new primary version with fresh material; ciphertexts of earlier versions keep
    /// decrypting. Returns the new version number.
    ///
    /// # Errors
    ///
    /// Returns [`Error`] for a missing key, a key pending deletion or destroyed, or when another
    /// rotation of the same key happened at the same moment.
    pub fn rotate_key(&mut self, domain_id: &str, key_id: &str) -> Result<u32, Error> {
        let key = self.store.key(domain_id, key_id)?;
        match self.rotate_from(domain_id, key_id, key.primary_version)? {
            Some(version) => Ok(version),
            None => Err(Error::Invalid(format!(
                "key {key_id} was rotated by another process at the same time; check `keyhold key versions`"
            ))),
        }
    }

    /// Rotates when the primary version is still `expected_primary`; `None` when it is not.
    fn rotate_from(
        &mut self,
        domain_id: &str,
        key_id: &str,
        expected_primary: u32,
    ) -> Result<Option<u32>, Error> {
        let key = self.store.key(domain_id, key_id)?;
        let next = self
            .store
            .versions(domain_id, key_id)?
            .last()
            .map_or(1, |version| version.version + 1);
        let version = StoredVersion {
            version: next,
            state: VersionState::Enabled,
            material: self.new_material(&key, next)?,
            created_at: unix_now(),
        };
        let stored = self
            .store
            .add_primary_version(domain_id, key_id, expected_primary, &version);
        match stored {
            Ok(true) => Ok(Some(next)),
            Ok(false) => {
                self.discard_material(&version);
                Ok(None)
            }
            Err(error) => {
                self.discard_material(&version);
                Err(error.into())
            }
        }
    }

    /// Erases one version's material: the wrapped copy in the store, or the HSM object.
    ///
    /// # Errors
    ///
    /// Returns [`Error`] for the primary version, a missing or destroyed version, or an HSM
    /// failure (the store already records the version as destroyed then).
    pub fn destroy_version(
        &mut self,
        domain_id: &str,
        key_id: &str,
        version: u32,
    ) -> Result<(), Error> {
        let destroyed = self.store.destroy_version(domain_id, key_id, version)?;
        self.destroy_hsm_objects(&destroyed.hsm_labels)
    }

    /// Puts a key in `PENDING_DELETION` for `days` days; returns the deletion time.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Invalid`] when `days` is outside 7 to 30, and [`Error::Store`] when the
    /// key is missing, already pending deletion or destroyed.
    pub fn schedule_deletion(
        &mut self,
        domain_id: &str,
        key_id: &str,
        days: u32,
    ) -> Result<i64, Error> {
        if !DELETION_WAIT_DAYS.contains(&days) {
            return Err(Error::Invalid(format!(
                "deletion waiting period of {days} days is outside {} to {} days",
                DELETION_WAIT_DAYS.start(),
                DELETION_WAIT_DAYS.end()
            )));
        }
        let deletion_at = unix_now() + i64::from(days) * 86_400;
        self.store
            .schedule_deletion(domain_id, key_id, deletion_at)?;
        Ok(deletion_at)
    }

    /// Rotates keys whose rotation period passed and destroys keys whose deletion date passed.
    /// Each change checks the state it expects in its transaction, so several servers running
    /// this at once apply each change once. On PostgreSQL the node holding the scheduler lock
    /// runs the work and the others return no work for that round.
    ///
    /// # Errors
    ///
    /// Returns [`Error`] when the store cannot be read; failures of single keys are logged and
    /// the run goes on.
    pub fn run_scheduled_work(&mut self, now: i64) -> Result<ScheduledWork, Error> {
        // With several nodes on one PostgreSQL database, one node at a time runs the work, so
        // nodes do not generate key material for rotations that only one of them can store.
        if !self.store.try_lock_scheduler()? {
            tracing::debug!("another node is running scheduled rotations and deletions");
            return Ok(ScheduledWork::default());
        }
        let work = self.run_scheduled_work_locked(now);
        if let Err(error) = self.store.unlock_scheduler() {
            tracing::warn!(%error, "cannot release the scheduler lock; it ends with the session");
        }
        work
    }

    fn run_scheduled_work_locked(&mut self, now: i64) -> Result<ScheduledWork, Error> {
        let mut work = ScheduledWork::default();
        for (domain_id, key_id) in self.store.due_deletions(now)? {
            match self.store.destroy_due_key(&domain_id, &key_id, now) {
                Ok(Some(destroyed)) => {
                    if let Err(error) = self.destroy_hsm_objects(&destroyed.hsm_labels) {
                        tracing::error!(%error, domain = %domain_id, key_id = %key_id, "cannot destroy the HSM objects of a deleted key");
                    }
                    work.destroyed.push((domain_id, key_id));
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, domain = %domain_id, key_id = %key_id, "scheduled deletion failed");
                }
            }
        }
        for due in self.store.due_rotations(now)? {
            match self.rotate_from(&due.domain_id, &due.key_id, due.primary_version) {
                Ok(Some(version)) => work.rotated.push((due.domain_id, due.key_id, version)),
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, domain = %due.domain_id, key_id = %due.key_id, "scheduled rotation failed");
                }
            }
        }
        Ok(work)
    }

    /// Removes the HSM object of a version that was not stored.
    fn discard_material(&self, version: &StoredVersion) {
        if let super::model::StoredMaterial::Hsm(label) = &version.material
            && let Err(error) = self.destroy_hsm_objects(std::slice::from_ref(label))
        {
            tracing::warn!(%error, label = %label, "cannot remove the HSM object of a version that was not stored");
        }
    }

    fn destroy_hsm_objects(&self, labels: &[String]) -> Result<(), Error> {
        if labels.is_empty() {
            return Ok(());
        }
        let hsm = self.root.hsm().ok_or_else(|| {
            Error::Invalid("the key has HSM objects, but no HSM is configured".to_owned())
        })?;
        for label in labels {
            hsm.destroy_key(label)
                .map_err(|error| Error::Root(error.into()))?;
        }
        Ok(())
    }
}

/// Shortest automatic rotation period, in seconds.
const MIN_ROTATION_PERIOD_SECS: i64 = 3600;

/// Parses a rotation period such as `90d` or `12h` into seconds.
///
/// # Errors
///
/// Returns a message for a malformed period or one shorter than an hour.
pub fn parse_period(text: &str) -> Result<i64, String> {
    let invalid = || {
        format!(
            "invalid period {text:?}: write a whole number of days or hours, such as 90d or 12h"
        )
    };
    let (number, unit_secs) = match text.strip_suffix('d') {
        Some(days) => (days, 86_400),
        None => (text.strip_suffix('h').ok_or_else(invalid)?, 3600),
    };
    let number: i64 = number.parse().map_err(|_| invalid())?;
    let secs = number.checked_mul(unit_secs).ok_or_else(invalid)?;
    if secs < MIN_ROTATION_PERIOD_SECS {
        return Err(format!(
            "rotation period {text:?} is shorter than the minimum of 1h"
        ));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_in_days_and_hours() {
        assert_eq!(parse_period("90d"), Ok(90 * 86_400));
        assert_eq!(parse_period("12h"), Ok(12 * 3600));
        for bad in ["", "90", "d", "1.5d", "-1d", "0h", "30m"] {
            assert!(parse_period(bad).is_err(), "accepted {bad:?}");
        }
    }
}
