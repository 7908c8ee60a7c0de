//! The payload inside a backup: a JSON manifest of every object, and the secrets apart from it.
//!
//! The plaintext is `u32_be(len manifest) || manifest || secrets`, where each secret is
//! `u16_be(len) || bytes` and the manifest refers to secrets by their position. Secrets are
//! kept out of the JSON so that they are only ever copied between zeroizing buffers.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::BackupError;
use crate::crypto::KEY_LEN;
use crate::keystore::model::{
    self, CredentialInfo, Domain, DomainStatus, KeyInfo, KeyStatus, KeyUsage, Protection,
    VersionState,
};

/// Lengths a SigV4 secret access key may have, in characters.
const SECRET_ACCESS_KEY_LEN: std::ops::RangeInclusive<usize> = 43..=64;

/// Everything in a backup except the secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Manifest {
    /// Creation time, Unix seconds.
    pub(super) created_at: i64,
    /// Node id of the installation the backup was made on.
    pub(super) source_node: String,
    /// Keyhold version that made the backup.
    pub(super) keyhold_version: String,
    /// The one domain the backup was limited to; `None` for all domains.
    pub(super) domain_filter: Option<String>,
    /// Domains with everything in them.
    pub(super) domains: Vec<DomainEntry>,
}

/// A domain in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct DomainEntry {
    pub(super) id: String,
    pub(super) display_name: String,
    pub(super) uri_prefix: String,
    /// `ENABLED` or `DISABLED`.
    pub(super) status: String,
    pub(super) quota_rps: Option<u32>,
    pub(super) policy: Option<String>,
    pub(super) created_at: i64,
    pub(super) credentials: Vec<CredentialEntry>,
    pub(super) keys: Vec<KeyEntry>,
}

/// A credential in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CredentialEntry {
    pub(super) access_key_id: String,
    pub(super) created_at: i64,
    pub(super) revoked_at: Option<i64>,
    /// Position of the secret access key among the secrets.
    pub(super) secret: u32,
}

/// A key in the manifest, with every stored field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct KeyEntry {
    pub(super) key_id: String,
    pub(super) name: String,
    pub(super) description: String,
    pub(super) usage_encrypt: bool,
    pub(super) usage_decrypt: bool,
    /// A [`KeyStatus`] name such as `PENDING_DELETION`.
    pub(super) status: String,
    pub(super) status_before_deletion: Option<String>,
    /// `software` or `hsm`.
    pub(super) protection: String,
    pub(super) primary_version: u32,
    pub(super) bound_kms_key_arn: Option<String>,
    #[serde(default)]
    pub(super) learn_binding: bool,
    pub(super) rotation_period_secs: Option<i64>,
    pub(super) deletion_at: Option<i64>,
    pub(super) policy: Option<String>,
    pub(super) created_at: i64,
    pub(super) versions: Vec<VersionEntry>,
}

/// A key version in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct VersionEntry {
    pub(super) version: u32,
    /// A [`VersionState`] name.
    pub(super) state: String,
    pub(super) created_at: i64,
    pub(super) material: MaterialEntry,
}

/// Location of a version's material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub(super) enum MaterialEntry {
    /// The 32 key bytes, at this position among the secrets.
    Software {
        /// Position of the material among the secrets.
        secret: u32,
    },
    /// A reference to a non-extractable HSM object; the material is not in the backup.
    Hsm {
        /// The object's label.
        label: String,
    },
    /// Erased before the backup was made.
    Destroyed,
}

/// Builds the plaintext from a manifest and its secrets, in one zeroizing buffer of exactly
/// the right size, with room for the AES-GCM tag, so it never reallocates.
///
/// # Errors
///
/// Returns [`BackupError::Malformed`] when the manifest cannot be encoded or a secret is
/// longer than 65,535 bytes.
pub(super) fn encode(
    manifest: &Manifest,
    secrets: &[Zeroizing<Vec<u8>>],
) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    let json = serde_json::to_vec(manifest)
        .map_err(|error| BackupError::Malformed(format!("cannot encode the manifest: {error}")))?;
    let json_len = u32::try_from(json.len())
        .map_err(|_| BackupError::Malformed("manifest is larger than 4 GiB".to_owned()))?;
    let secrets_len: usize = secrets.iter().map(|secret| 2 + secret.len()).sum();
    let capacity = 4 + json.len() + secrets_len + crate::crypto::TAG_LEN;

    let mut plaintext = Zeroizing::new(Vec::with_capacity(capacity));
    plaintext.extend_from_slice(&json_len.to_be_bytes());
    plaintext.extend_from_slice(&json);
    for secret in secrets {
        let len = u16::try_from(secret.len())
            .map_err(|_| BackupError::Malformed("secret longer than 65,535 bytes".to_owned()))?;
        plaintext.extend_from_slice(&len.to_be_bytes());
        plaintext.extend_from_slice(secret);
    }
    Ok(plaintext)
}

/// Splits an authenticated plaintext into the manifest and the byte ranges of the secrets.
///
/// # Errors
///
/// Returns [`BackupError::Malformed`] when a length runs past the end or the manifest is not
/// valid JSON of the expected shape.
pub(super) fn decode(plaintext: &[u8]) -> Result<(Manifest, Vec<Range<usize>>), BackupError> {
    let malformed = |what: &str| BackupError::Malformed(what.to_owned());
    let json_len = plaintext
        .get(..4)
        .map(|bytes| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
        .ok_or_else(|| malformed("no manifest length"))?;
    let json = plaintext
        .get(4..4 + json_len)
        .ok_or_else(|| malformed("manifest runs past the end of the payload"))?;
    let manifest: Manifest = serde_json::from_slice(json)
        .map_err(|error| BackupError::Malformed(format!("invalid manifest: {error}")))?;

    let mut secrets = Vec::new();
    let mut offset = 4 + json_len;
    while offset < plaintext.len() {
        let len = plaintext
            .get(offset..offset + 2)
            .map(|bytes| usize::from(u16::from_be_bytes([bytes[0], bytes[1]])))
            .ok_or_else(|| malformed("secret length runs past the end of the payload"))?;
        let start = offset + 2;
        if start + len > plaintext.len() {
            return Err(malformed("secret runs past the end of the payload"));
        }
        secrets.push(start..start + len);
        offset = start + len;
    }
    Ok((manifest, secrets))
}

impl DomainEntry {
    /// Converts the entry into a domain after checking its id, prefix, status and quota.
    pub(super) fn to_domain(&self) -> Result<Domain, BackupError> {
        model::validate_domain_id(&self.id).map_err(BackupError::Malformed)?;
        model::validate_uri_prefix(&self.uri_prefix).map_err(BackupError::Malformed)?;
        let status = match self.status.as_str() {
            "ENABLED" => DomainStatus::Enabled,
            "DISABLED" => DomainStatus::Disabled,
            other => return Err(invalid(&format!("domain {:?}", self.id), "status", other)),
        };
        if self.quota_rps == Some(0) {
            return Err(invalid(&format!("domain {:?}", self.id), "quota", "0"));
        }
        Ok(Domain {
            id: self.id.clone(),
            display_name: self.display_name.clone(),
            uri_prefix: self.uri_prefix.clone(),
            status,
            quota_rps: self.quota_rps,
            policy: self.policy.clone(),
            created_at: self.created_at,
        })
    }
}

impl CredentialEntry {
    /// Builds the credential's public part.
    pub(super) fn to_info(&self, domain_id: &str) -> CredentialInfo {
        CredentialInfo {
            access_key_id: self.access_key_id.clone(),
            domain_id: domain_id.to_owned(),
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        }
    }

    /// Checks the secret's position and shape.
    fn validate(&self, domain_id: &str, secrets: &[Range<usize>]) -> Result<(), BackupError> {
        let owner = format!("credential {} of domain {domain_id:?}", self.access_key_id);
        let valid_id = (20..=30).contains(&self.access_key_id.len())
            && self
                .access_key_id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
        if !valid_id {
            return Err(invalid(&owner, "access key id", &self.access_key_id));
        }
        let len = secret_len(secrets, self.secret, &owner)?;
        if !SECRET_ACCESS_KEY_LEN.contains(&len) {
            return Err(BackupError::Malformed(format!(
                "{owner} has a secret of {len} bytes"
            )));
        }
        Ok(())
    }
}

impl KeyEntry {
    /// Parses the key's attributes and the status a cancelled deletion restores.
    pub(super) fn to_info(
        &self,
        domain_id: &str,
    ) -> Result<(KeyInfo, Option<KeyStatus>), BackupError> {
        let owner = format!("key {:?} in domain {domain_id:?}", self.key_id);
        model::validate_key_id(&self.key_id).map_err(BackupError::Malformed)?;
        let status = KeyStatus::parse(&self.status)
            .ok_or_else(|| invalid(&owner, "status", &self.status))?;
        let status_before_deletion = self
            .status_before_deletion
            .as_deref()
            .map(|text| {
                KeyStatus::parse(text)
                    .ok_or_else(|| invalid(&owner, "status before deletion", text))
            })
            .transpose()?;
        let protection = Protection::parse(&self.protection)
            .map_err(|_| invalid(&owner, "protection", &self.protection))?;
        let usage = KeyUsage::new(self.usage_encrypt, self.usage_decrypt)
            .ok_or_else(|| invalid(&owner, "usage", "empty"))?;
        let info = KeyInfo {
            domain_id: domain_id.to_owned(),
            key_id: self.key_id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            usage,
            status,
            protection,
            primary_version: self.primary_version,
            bound_kms_key_arn: self.bound_kms_key_arn.clone(),
            learn_binding: self.learn_binding,
            rotation_period_secs: self.rotation_period_secs,
            deletion_at: self.deletion_at,
            policy: self.policy.clone(),
            created_at: self.created_at,
        };
        Ok((info, status_before_deletion))
    }

    /// Checks the versions: ascending numbers, the primary among them, and material that fits
    /// the key's protection and each version's state.
    fn validate(&self, domain_id: &str, secrets: &[Range<usize>]) -> Result<(), BackupError> {
        let (info, _) = self.to_info(domain_id)?;
        let owner = format!("key {:?} in domain {domain_id:?}", self.key_id);
        let ascending = self
            .versions
            .windows(2)
            .all(|pair| pair[0].version < pair[1].version);
        if !ascending || self.versions.first().is_none_or(|first| first.version == 0) {
            return Err(BackupError::Malformed(format!(
                "{owner} has missing, zero or unordered version numbers"
            )));
        }
        if !self
            .versions
            .iter()
            .any(|version| version.version == self.primary_version)
        {
            return Err(BackupError::Malformed(format!(
                "{owner} lacks its primary version {}",
                self.primary_version
            )));
        }
        for version in &self.versions {
            version.validate(&info, secrets)?;
        }
        Ok(())
    }
}

impl VersionEntry {
    /// Parses the version's state.
    pub(super) fn state(&self) -> Result<VersionState, BackupError> {
        VersionState::parse(&self.state)
            .ok_or_else(|| invalid(&format!("version {}", self.version), "state", &self.state))
    }

    fn validate(&self, key: &KeyInfo, secrets: &[Range<usize>]) -> Result<(), BackupError> {
        let owner = format!(
            "version {} of key {:?} in domain {:?}",
            self.version, key.key_id, key.domain_id
        );
        let state = self.state()?;
        let fits = match (&self.material, state, key.protection) {
            (MaterialEntry::Destroyed, VersionState::Destroyed, _) => true,
            (MaterialEntry::Software { secret }, _, Protection::Software) => {
                secret_len(secrets, *secret, &owner)? == KEY_LEN
            }
            (MaterialEntry::Hsm { label }, _, Protection::Hsm) => {
                model::is_hsm_label_of(label, &key.domain_id, &key.key_id, self.version)
            }
            _ => false,
        };
        if fits && (state == VersionState::Destroyed) == (self.material == MaterialEntry::Destroyed)
        {
            Ok(())
        } else {
            Err(BackupError::Malformed(format!(
                "{owner} has material that does not fit its state {} and the key's protection \
                 {}",
                self.state,
                key.protection.as_str()
            )))
        }
    }
}

/// Checks every object of a manifest and every reference to a secret.
///
/// # Errors
///
/// Returns [`BackupError::Malformed`] naming the first object that breaks a rule.
pub(super) fn validate(manifest: &Manifest, secrets: &[Range<usize>]) -> Result<(), BackupError> {
    let mut ids = std::collections::HashSet::new();
    for domain in &manifest.domains {
        domain.to_domain()?;
        if !ids.insert(domain.id.as_str()) {
            return Err(BackupError::Malformed(format!(
                "domain {:?} appears twice",
                domain.id
            )));
        }
        for credential in &domain.credentials {
            credential.validate(&domain.id, secrets)?;
        }
        for key in &domain.keys {
            key.validate(&domain.id, secrets)?;
        }
    }
    Ok(())
}

fn secret_len(secrets: &[Range<usize>], index: u32, owner: &str) -> Result<usize, BackupError> {
    usize::try_from(index)
        .ok()
        .and_then(|index| secrets.get(index))
        .map(|range| range.len())
        .ok_or_else(|| BackupError::Malformed(format!("{owner} refers to missing secret {index}")))
}

fn invalid(owner: &str, field: &str, value: &str) -> BackupError {
    BackupError::Malformed(format!("{owner} has invalid {field} {value:?}"))
}
