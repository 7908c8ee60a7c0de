//! Process protections for secrets in memory: no core dumps, no ptrace attach by other
//! processes of the same user, and memory locked against swapping where the system allows it.

use rustix::mm::{MlockAllFlags, mlockall};
use rustix::process::{
    DumpableBehavior, Resource, Rlimit, geteuid, getrlimit, set_dumpable_behavior, setrlimit,
};
use serde::Deserialize;

/// Whether to lock the process's memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMemory {
    /// Lock when the process may lock unlimited memory (root, or an unlimited `ulimit -l`).
    #[default]
    Auto,
    /// Lock, or refuse to start.
    Required,
    /// Do not lock.
    Off,
}

/// Failure to apply a required protection.
#[derive(Debug, thiserror::Error)]
pub enum ProtectError {
    /// `lock_memory = "required"` and `mlockall` failed.
    #[error(
        "cannot lock memory ({0}); run as a user with CAP_IPC_LOCK or an unlimited `ulimit -l`, or set lock_memory = \"auto\""
    )]
    LockFailed(rustix::io::Errno),
    /// Core dumps could not be turned off.
    #[error("cannot turn off core dumps: {0}")]
    CoreDumps(rustix::io::Errno),
}

/// Applies the protections and returns a description of each one in force.
///
/// # Errors
///
/// Returns [`ProtectError`] when core dumps cannot be turned off, or when memory locking is
/// required and fails.
pub fn apply(lock: LockMemory) -> Result<Vec<String>, ProtectError> {
    let mut active = Vec::new();
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .map_err(ProtectError::CoreDumps)?;
    active.push("core dumps disabled (RLIMIT_CORE 0)".to_owned());

    match set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        Ok(()) => active
            .push("process not dumpable (no core dumps, no ptrace by the same user)".to_owned()),
        Err(error) => tracing::warn!(%error, "cannot mark the process not dumpable"),
    }

    let may_lock = geteuid().is_root() || getrlimit(Resource::Memlock).current.is_none();
    match lock {
        LockMemory::Off => {}
        LockMemory::Auto if !may_lock => {
            tracing::info!(
                "memory not locked: the memlock limit is finite; set lock_memory = \"required\" to insist"
            );
        }
        LockMemory::Auto | LockMemory::Required => {
            // ONFAULT locks pages as they are touched, so reserved but unused memory, such as
            // thread stacks, is not made resident.
            match mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT)
            {
                Ok(()) => {
                    active.push("memory locked against swapping (mlockall on fault)".to_owned());
                }
                Err(error) if lock == LockMemory::Required => {
                    return Err(ProtectError::LockFailed(error));
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot lock memory; secrets may be swapped to disk");
                }
            }
        }
    }
    Ok(active)
}
