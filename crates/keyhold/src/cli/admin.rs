//! `keyhold domain`, `credential` and `key`: changes go straight to the store, and running
//! servers pick them up by polling its revision.

use std::path::Path;

use anyhow::Context as _;
use serde_json::json;

use crate::config::Settings;
use crate::hsm::HsmKey;
use crate::keystore::model::{DomainStatus, KeyInfo, KeyStatus, KeyUsage, Protection};
use crate::keystore::{NewDomain, NewKey, format_time, unix_now};

use super::serve::open_key_store;
use super::{CredentialCommand, DomainCommand, KeyCommand, lifecycle, output};

pub(super) fn domain(dir: &Path, command: DomainCommand) -> anyhow::Result<()> {
    let mut key_store = open_key_store(&Settings::load(dir)?)?;
    match command {
        DomainCommand::Create {
            id,
            uri_prefix,
            display_name,
            quota,
        } => {
            let domain = key_store.create_domain(&NewDomain {
                id,
                display_name,
                uri_prefix,
                quota_rps: quota,
            })?;
            output::print(&format!(
                "Created domain {} with XksProxyUriPath {}\n",
                domain.id,
                domain.xks_uri_path()
            ));
        }
        DomainCommand::List(format) => {
            let domains = key_store.store().domains()?;
            let rows = domains
                .iter()
                .map(|domain| {
                    vec![
                        domain.id.clone(),
                        format!("{:?}", domain.status).to_uppercase(),
                        domain.xks_uri_path(),
                        domain.display_name.clone(),
                    ]
                })
                .collect::<Vec<_>>();
            let json = json!(domains.iter().map(domain_json).collect::<Vec<_>>());
            output::print_table(
                format.output,
                &["ID", "STATUS", "XKS URI PATH", "NAME"],
                &rows,
                &json,
            );
        }
        DomainCommand::Disable { id } => {
            key_store
                .store_mut()
                .set_domain_status(&id, DomainStatus::Disabled)?;
            output::print(&format!(
                "Domain {id} is DISABLED: every XKS request for it now fails with InvalidStateException\n"
            ));
        }
        DomainCommand::Enable { id } => {
            key_store
                .store_mut()
                .set_domain_status(&id, DomainStatus::Enabled)?;
            output::print(&format!("Domain {id} is ENABLED\n"));
        }
        DomainCommand::Show { id, output: format } => {
            let store = key_store.store();
            let domain = store.domain(&id)?;
            let active = store
                .credentials(&id)?
                .iter()
                .filter(|c| c.revoked_at.is_none())
                .count();
            let keys = store.keys(&id)?.len();
            let mut json = domain_json(&domain);
            json["activeCredentials"] = json!(active);
            json["keys"] = json!(keys);
            output::print_record(
                format.output,
                &[
                    ("id", domain.id.clone()),
                    ("name", domain.display_name.clone()),
                    ("status", format!("{:?}", domain.status).to_uppercase()),
                    ("XksProxyUriPath", domain.xks_uri_path()),
                    (
                        "quota",
                        domain
                            .quota_rps
                            .map_or_else(|| "none".to_owned(), |rps| format!("{rps} requests/s")),
                    ),
                    ("created", format_time(domain.created_at)),
                    ("active credentials", active.to_string()),
                    ("keys", keys.to_string()),
                ],
                &json,
            );
        }
    }
    Ok(())
}

pub(super) fn credential(dir: &Path, command: CredentialCommand) -> anyhow::Result<()> {
    let mut key_store = open_key_store(&Settings::load(dir)?)?;
    match command {
        CredentialCommand::Create { domain } => {
            let uri_path = key_store.store().domain(&domain)?.xks_uri_path();
            let (credential, secret) = key_store.create_credential(&domain)?;
            let configuration = json!({
                "XksProxyUriPath": uri_path,
                "XksProxyAuthenticationCredential": {
                    "AccessKeyId": credential.access_key_id,
                    "RawSecretAccessKey": secret.expose(),
                },
            });
            output::print(&format!("{configuration:#}\n"));
            output::note(
                "This is the only time the secret is shown. Load this proxy configuration file \
                 in the AWS KMS console, or store it now.",
            );
        }
        CredentialCommand::List {
            domain,
            output: format,
        } => {
            let credentials = key_store.store().credentials(&domain)?;
            let rows = credentials
                .iter()
                .map(|credential| {
                    vec![
                        credential.access_key_id.clone(),
                        format_time(credential.created_at),
                        credential.revoked_at.map_or_else(
                            || "ACTIVE".to_owned(),
                            |at| format!("REVOKED {}", format_time(at)),
                        ),
                    ]
                })
                .collect::<Vec<_>>();
            let json = json!(
                credentials
                    .iter()
                    .map(|credential| json!({
                        "accessKeyId": credential.access_key_id,
                        "createdAt": format_time(credential.created_at),
                        "status": if credential.revoked_at.is_some() { "REVOKED" } else { "ACTIVE" },
                        "revokedAt": credential.revoked_at.map(format_time),
                    }))
                    .collect::<Vec<_>>()
            );
            output::print_table(
                format.output,
                &["ACCESS KEY ID", "CREATED", "STATUS"],
                &rows,
                &json,
            );
        }
        CredentialCommand::Revoke {
            domain,
            access_key_id,
        } => {
            key_store
                .store_mut()
                .revoke_credential(&domain, &access_key_id, unix_now())?;
            output::print(&format!(
                "Revoked credential {access_key_id} of domain {domain}\n"
            ));
        }
    }
    Ok(())
}

pub(super) fn key(dir: &Path, command: KeyCommand) -> anyhow::Result<()> {
    let mut key_store = open_key_store(&Settings::load(dir)?)?;
    match command {
        KeyCommand::Create {
            domain,
            key_id,
            usage,
            name,
            description,
            bind_kms_key_arn,
            bind_on_first_use,
            protection,
            rotation_period,
        } => {
            let usage = KeyUsage::parse(&usage).map_err(anyhow::Error::msg)?;
            let protection = Protection::parse(&protection).map_err(anyhow::Error::msg)?;
            let rotation_period_secs = rotation_period
                .as_deref()
                .map(lifecycle::parse_period)
                .transpose()?;
            let key = key_store.create_key(&NewKey {
                domain_id: domain,
                key_id,
                name,
                description,
                usage,
                bound_kms_key_arn: bind_kms_key_arn,
                learn_binding: bind_on_first_use,
                protection,
                rotation_period_secs,
            })?;
            output::print(&format!(
                "Created key {} in domain {}\n",
                key.key_id, key.domain_id
            ));
        }
        KeyCommand::List {
            domain,
            output: format,
        } => {
            let keys = key_store.store().keys(&domain)?;
            let rows = keys
                .iter()
                .map(|key| {
                    vec![
                        key.key_id.clone(),
                        status_text(key.status).to_owned(),
                        key.usage.to_string(),
                        key.primary_version.to_string(),
                        key.protection.as_str().to_owned(),
                        key.name.clone(),
                    ]
                })
                .collect::<Vec<_>>();
            let json = json!(keys.iter().map(key_json).collect::<Vec<_>>());
            output::print_table(
                format.output,
                &["KEY ID", "STATUS", "USAGE", "VERSION", "PROTECTION", "NAME"],
                &rows,
                &json,
            );
        }
        KeyCommand::Show {
            domain,
            key_id,
            output: format,
        } => {
            let key = key_store.store().key(&domain, &key_id)?;
            let mut json = key_json(&key);
            let mut fields = vec![
                ("domain", key.domain_id.clone()),
                ("key id", key.key_id.clone()),
                ("name", key.name.clone()),
                ("description", key.description.clone()),
                ("status", status_text(key.status).to_owned()),
                ("usage", key.usage.to_string()),
                ("protection", key.protection.as_str().to_owned()),
                ("primary version", key.primary_version.to_string()),
                (
                    "bound KMS key ARN",
                    key.bound_kms_key_arn.clone().unwrap_or_else(|| {
                        if key.learn_binding {
                            "learned on first use"
                        } else {
                            "none"
                        }
                        .to_owned()
                    }),
                ),
                (
                    "rotation period",
                    key.rotation_period_secs
                        .map_or_else(|| "none".to_owned(), |secs| format!("{}h", secs / 3600)),
                ),
                (
                    "deletion date",
                    key.deletion_at
                        .map_or_else(|| "none".to_owned(), format_time),
                ),
                ("created", format_time(key.created_at)),
            ];
            if key.protection == Protection::Hsm {
                // Read live from the token, so the output shows what the HSM enforces.
                let label = lifecycle::hsm_object_label(&key_store, &key)?;
                let hsm = key_store
                    .root()
                    .hsm()
                    .context("the key is HSM-resident, but no HSM is configured")?;
                let protection = hsm
                    .key_protection(HsmKey::Label(&label))
                    .with_context(|| format!("cannot read the attributes of HSM object {label}"))?;
                fields.push(("HSM object", label.clone()));
                fields.push(("CKA_EXTRACTABLE", protection.extractable.to_string()));
                fields.push(("CKA_SENSITIVE", protection.sensitive.to_string()));
                json["hsmObject"] = json!({
                    "label": label,
                    "extractable": protection.extractable,
                    "sensitive": protection.sensitive,
                });
            }
            output::print_record(format.output, &fields, &json);
        }
        KeyCommand::Rotate { domain, key_id } => {
            lifecycle::rotate(&mut key_store, &domain, &key_id)?;
        }
        KeyCommand::SetRotation {
            domain,
            key_id,
            period,
        } => lifecycle::set_rotation(&mut key_store, &domain, &key_id, &period)?,
        KeyCommand::Version(command) => lifecycle::version(&mut key_store, command)?,
        KeyCommand::ScheduleDeletion {
            domain,
            key_id,
            days,
        } => lifecycle::schedule_deletion(&mut key_store, &domain, &key_id, days)?,
        KeyCommand::CancelDeletion { domain, key_id } => {
            lifecycle::cancel_deletion(&mut key_store, &domain, &key_id)?;
        }
        KeyCommand::Disable { domain, key_id } => {
            set_status(&mut key_store, &domain, &key_id, KeyStatus::Disabled)?;
        }
        KeyCommand::Enable { domain, key_id } => {
            set_status(&mut key_store, &domain, &key_id, KeyStatus::Enabled)?;
        }
    }
    Ok(())
}

fn set_status(
    key_store: &mut crate::keystore::KeyStore,
    domain: &str,
    key_id: &str,
    status: KeyStatus,
) -> anyhow::Result<()> {
    key_store
        .store_mut()
        .set_key_status(domain, key_id, status)
        .with_context(|| format!("cannot change the status of key {key_id}"))?;
    output::print(&format!(
        "Key {key_id} in domain {domain} is now {}\n",
        status_text(status)
    ));
    Ok(())
}

fn status_text(status: KeyStatus) -> &'static str {
    status.as_str()
}

fn domain_json(domain: &crate::keystore::model::Domain) -> serde_json::Value {
    json!({
        "id": domain.id,
        "displayName": domain.display_name,
        "status": domain.status,
        "uriPrefix": domain.uri_prefix,
        "quotaRps": domain.quota_rps,
        "policy": domain.policy.as_deref().and_then(|policy| serde_json::from_str::<serde_json::Value>(policy).ok()),
        "xksProxyUriPath": domain.xks_uri_path(),
        "createdAt": format_time(domain.created_at),
    })
}

fn key_json(key: &KeyInfo) -> serde_json::Value {
    json!({
        "domainId": key.domain_id,
        "keyId": key.key_id,
        "name": key.name,
        "description": key.description,
        "status": key.status,
        "usage": key.usage,
        "protection": key.protection,
        "primaryVersion": key.primary_version,
        "boundKmsKeyArn": key.bound_kms_key_arn,
        "bindOnFirstUse": key.learn_binding,
        "rotationPeriodSecs": key.rotation_period_secs,
        "deletionAt": key.deletion_at.map(format_time),
        "policy": key.policy.as_deref().and_then(|policy| serde_json::from_str::<serde_json::Value>(policy).ok()),
        "createdAt": format_time(key.created_at),
    })
}
