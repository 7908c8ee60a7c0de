//! Administrative actions made with the CLI, recorded in the store for the audit log.

use std::path::Path;

use crate::audit::now_rfc3339;
use crate::config::Settings;
use crate::keystore::store::Store;

use super::backup::BackupCommand;
use super::{Command, CredentialCommand, DomainCommand, KeyCommand, PolicyCommand, VersionCommand};

/// The audited action and its target for commands that change state or read secrets; `None`
/// for commands that only read or serve.
pub(super) fn describe(command: &Command) -> Option<(String, String)> {
    let (action, target) = match command {
        Command::Domain(DomainCommand::Create { id, .. }) => ("domain create", id.clone()),
        Command::Domain(DomainCommand::Disable { id }) => ("domain disable", id.clone()),
        Command::Domain(DomainCommand::Enable { id }) => ("domain enable", id.clone()),
        Command::Credential(CredentialCommand::Create { domain }) => {
            ("credential create", domain.clone())
        }
        Command::Credential(CredentialCommand::Revoke {
            domain,
            access_key_id,
        }) => ("credential revoke", format!("{domain}/{access_key_id}")),
        Command::Key(command) => describe_key(command)?,
        Command::Policy(PolicyCommand::Set { domain, key, .. }) => {
            ("policy set", target(domain, key.as_deref()))
        }
        Command::Policy(PolicyCommand::Clear { domain, key }) => {
            ("policy clear", target(domain, key.as_deref()))
        }
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

fn describe_key(command: &KeyCommand) -> Option<(&'static str, String)> {
    Some(match command {
        KeyCommand::Create { domain, key_id, .. } => (
            "key create",
            format!("{domain}/{}", key_id.as_deref().unwrap_or("(generated id)")),
        ),
        KeyCommand::Rotate { domain, key_id } => ("key rotate", format!("{domain}/{key_id}")),
        KeyCommand::SetRotation {
            domain,
            key_id,
            period,
        } => (
            "key set-rotation",
            format!("{domain}/{key_id} every {period}"),
        ),
        KeyCommand::ScheduleDeletion {
            domain,
            key_id,
            days,
        } => (
            "key schedule-deletion",
            format!("{domain}/{key_id} in {days} days"),
        ),
        KeyCommand::CancelDeletion { domain, key_id } => {
            ("key cancel-deletion", format!("{domain}/{key_id}"))
        }
        KeyCommand::Disable { domain, key_id } => ("key disable", format!("{domain}/{key_id}")),
        KeyCommand::Enable { domain, key_id } => ("key enable", format!("{domain}/{key_id}")),
        KeyCommand::Version(VersionCommand::Disable {
            domain,
            key_id,
            version,
        }) => (
            "key version disable",
            format!("{domain}/{key_id}/v{version}"),
        ),
        KeyCommand::Version(VersionCommand::Enable {
            domain,
            key_id,
            version,
        }) => (
            "key version enable",
            format!("{domain}/{key_id}/v{version}"),
        ),
        KeyCommand::Version(VersionCommand::Destroy {
            domain,
            key_id,
            version,
            ..
        }) => (
            "key version destroy",
            format!("{domain}/{key_id}/v{version}"),
        ),
        KeyCommand::List { .. }
        | KeyCommand::Show { .. }
        | KeyCommand::Version(VersionCommand::List { .. }) => {
            return None;
        }
    })
}

fn target(domain: &str, key: Option<&str>) -> String {
    match key {
        Some(key_id) => format!("{domain}/{key_id}"),
        None => domain.to_owned(),
    }
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
fn principal() -> String {
    let uid = rustix::process::getuid().as_raw();
    match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(user) if !user.is_empty() => format!("cli:{user} (uid {uid})"),
        _ => format!("cli:uid {uid}"),
    }
}
