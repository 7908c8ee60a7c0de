//! `keyhold key rotate`, `key version ...`, `key schedule-deletion`, `key cancel-deletion`,
//! `key set-rotation` and `keyhold policy ...`.

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::config::Settings;
use crate::keystore::model::{KeyInfo, StoredMaterial, VersionState};
use crate::keystore::{KeyStore, format_time};
use crate::policy::Policy;

use super::serve::open_key_store;
use super::{PolicyCommand, VersionCommand, output};

/// Parses a period such as `90d` or `12h` into seconds.
pub(super) fn parse_period(text: &str) -> anyhow::Result<i64> {
    crate::keystore::lifecycle::parse_period(text).map_err(anyhow::Error::msg)
}

pub(super) fn rotate(key_store: &mut KeyStore, domain: &str, key_id: &str) -> anyhow::Result<()> {
    let version = key_store.rotate_key(domain, key_id)?;
    output::print(&format!(
        "Rotated key {key_id} in domain {domain}: version {version} is now primary\n"
    ));
    Ok(())
}

pub(super) fn set_rotation(
    key_store: &mut KeyStore,
    domain: &str,
    key_id: &str,
    period: &str,
) -> anyhow::Result<()> {
    let period_secs = if period == "off" {
        None
    } else {
        Some(parse_period(period)?)
    };
    key_store
        .store_mut()
        .set_rotation_period(domain, key_id, period_secs)?;
    match period_secs {
        Some(_) => output::print(&format!("Key {key_id} now rotates every {period}\n")),
        None => output::print(&format!("Automatic rotation of key {key_id} is off\n")),
    }
    Ok(())
}

pub(super) fn version(key_store: &mut KeyStore, command: VersionCommand) -> anyhow::Result<()> {
    match command {
        VersionCommand::List {
            domain,
            key_id,
            output: format,
        } => {
            let key = key_store.store().key(&domain, &key_id)?;
            let versions = key_store.store().versions(&domain, &key_id)?;
            let rows = versions
                .iter()
                .map(|version| {
                    vec![
                        version.version.to_string(),
                        version.state.as_str().to_owned(),
                        if version.version == key.primary_version {
                            "yes"
                        } else {
                            ""
                        }
                        .to_owned(),
                        format_time(version.created_at),
                    ]
                })
                .collect::<Vec<_>>();
            let json = json!(
                versions
                    .iter()
                    .map(|version| json!({
                        "version": version.version,
                        "state": version.state,
                        "primary": version.version == key.primary_version,
                        "createdAt": format_time(version.created_at),
                    }))
                    .collect::<Vec<_>>()
            );
            output::print_table(
                format.output,
                &["VERSION", "STATE", "PRIMARY", "CREATED"],
                &rows,
                &json,
            );
        }
        VersionCommand::Disable {
            domain,
            key_id,
            version,
        } => {
            key_store.store_mut().set_version_state(
                &domain,
                &key_id,
                version,
                VersionState::Disabled,
            )?;
            output::print(&format!(
                "Version {version} of key {key_id} is DISABLED: its ciphertexts fail with InvalidStateException\n"
            ));
        }
        VersionCommand::Enable {
            domain,
            key_id,
            version,
        } => {
            key_store.store_mut().set_version_state(
                &domain,
                &key_id,
                version,
                VersionState::Enabled,
            )?;
            output::print(&format!("Version {version} of key {key_id} is ENABLED\n"));
        }
        VersionCommand::Destroy {
            domain,
            key_id,
            version,
            yes,
        } => {
            if !yes {
                bail!(
                    "destroying version {version} of key {key_id} erases its material for good, \
                     so its ciphertexts can never be decrypted again; repeat with --yes to do it"
                );
            }
            key_store.destroy_version(&domain, &key_id, version)?;
            output::print(&format!(
                "Destroyed the material of version {version} of key {key_id}\n"
            ));
        }
    }
    Ok(())
}

pub(super) fn schedule_deletion(
    key_store: &mut KeyStore,
    domain: &str,
    key_id: &str,
    days: u32,
) -> anyhow::Result<()> {
    let deletion_at = key_store.schedule_deletion(domain, key_id, days)?;
    output::print(&format!(
        "Key {key_id} is PENDING_DELETION; its material will be destroyed at {} unless \
         `keyhold key cancel-deletion {domain} {key_id}` runs first\n",
        format_time(deletion_at)
    ));
    Ok(())
}

pub(super) fn cancel_deletion(
    key_store: &mut KeyStore,
    domain: &str,
    key_id: &str,
) -> anyhow::Result<()> {
    let status = key_store.store_mut().cancel_deletion(domain, key_id)?;
    output::print(&format!(
        "Deletion of key {key_id} canceled; it is {} again\n",
        status.as_str()
    ));
    Ok(())
}

/// The label of the HSM object that holds a key's primary version.
pub(super) fn hsm_object_label(key_store: &KeyStore, key: &KeyInfo) -> anyhow::Result<String> {
    let versions = key_store.store().versions(&key.domain_id, &key.key_id)?;
    let primary = versions
        .iter()
        .find(|version| version.version == key.primary_version)
        .context("the key's primary version is missing from the store")?;
    match &primary.material {
        StoredMaterial::Hsm(label) => Ok(label.clone()),
        _ => bail!(
            "the primary version of key {} has no HSM object",
            key.key_id
        ),
    }
}

pub(super) fn policy(dir: &Path, command: PolicyCommand) -> anyhow::Result<()> {
    let mut key_store = open_key_store(&Settings::load(dir)?)?;
    match command {
        PolicyCommand::Set { domain, key, file } => {
            let text = read_policy_file(&file)?;
            let policy = Policy::parse(&text).map_err(anyhow::Error::msg)?;
            let normalized = serde_json::to_string(&policy)?;
            key_store
                .store_mut()
                .set_policy(&domain, key.as_deref(), Some(&normalized))?;
            output::print(&format!(
                "Set the policy of {} with {} rules\n",
                owner(&domain, key.as_deref()),
                policy.rules.len()
            ));
        }
        PolicyCommand::Show { domain, key } => {
            let text = match &key {
                Some(key_id) => key_store.store().key(&domain, key_id)?.policy,
                None => key_store.store().domain(&domain)?.policy,
            };
            match text {
                Some(text) => {
                    let value: serde_json::Value =
                        serde_json::from_str(&text).context("the stored policy is not JSON")?;
                    output::print(&format!("{value:#}\n"));
                }
                None => output::note(&format!(
                    "{} has no policy: every authenticated request is allowed",
                    owner(&domain, key.as_deref())
                )),
            }
        }
        PolicyCommand::Clear { domain, key } => {
            key_store
                .store_mut()
                .set_policy(&domain, key.as_deref(), None)?;
            output::print(&format!(
                "Removed the policy of {}\n",
                owner(&domain, key.as_deref())
            ));
        }
    }
    Ok(())
}

fn owner(domain: &str, key: Option<&str>) -> String {
    match key {
        Some(key_id) => format!("key {key_id} in domain {domain}"),
        None => format!("domain {domain}"),
    }
}

fn read_policy_file(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the policy from stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))
}
