//! Administrative actions made with the CLI outside the admin API, recorded in the store for
//! the audit log.

use std::path::Path;

use crate::audit::now_rfc3339;
use crate::config::Settings;
use crate::keystore::store::Store;

use super::Command;
use super::backup::BackupCommand;

/// The audited action and its target for commands that work on the data directory outside the
/// admin API; `None` for the others, which the admin API code records itself, and for
/// commands that only read or serve.
pub(super) fn describe(command: &Command) -> Option<(String, String)> {
    let (action, target) = match command {
        Command::Backup(BackupCommand::Create { domain, output, .. }) => (
            "backup create",
            format!(
                "{} to {}",
                domain.as_deref().unwrap_or("all domains"),
                output.display()
            ),
        ),
        Command::Backup(BackupCommand::Restore { file, .. }) => {
            ("backup restore", file.display().to_string())
        }
        _ => return None,
    };
    Some((action.to_owned(), target))
}

/// Records an action and its result; a failure to record is reported on stderr.
pub(super) fn record(dir: &Path, action: &str, target: &str, result: &anyhow::Result<()>) {
    let outcome = match result {
        Ok(()) => "success".to_owned(),
        Err(error) => format!("error: {error}"),
    };
    let recorded = Settings::load(dir)
        .map_err(anyhow::Error::from)
        .and_then(|settings| Ok(Store::connect(&settings.storage)?))
        .and_then(|mut store| {
            Ok(store.record_admin_event(&now_rfc3339(), &principal(), action, target, &outcome)?)
        });
    if let Err(error) = recorded
        && result.is_ok()
    {
        super::output::note(&format!(
            "warning: the action succeeded but could not be recorded for the audit log: {error}"
        ));
    }
}

/// The operating-system user running the CLI.
pub(super) fn principal() -> String {
    let uid = rustix::process::getuid().as_raw();
    match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(user) if !user.is_empty() => format!("cli:{user} (uid {uid})"),
        _ => format!("cli:uid {uid}"),
    }
}
