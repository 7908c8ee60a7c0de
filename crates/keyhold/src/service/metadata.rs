//! GetKeyMetadata: the key's spec, usage and status, which AWS KMS checks when it creates a key.

use crate::keystore::model::{DomainStatus, KeyStatus};
use crate::keystore::snapshot::DomainView;

use super::ServiceError;
use crate::policy::RequestContext;

/// The XKS `keySpec` of every Keyhold key.
pub const KEY_SPEC: &str = "AES_256";

/// The answer to GetKeyMetadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetadata {
    /// Always [`KEY_SPEC`].
    pub key_spec: &'static str,
    /// `ENCRYPT` and/or `DECRYPT`.
    pub key_usage: Vec<&'static str>,
    /// `ENABLED` or `DISABLED`.
    pub key_status: &'static str,
}

/// Describes a key. A disabled key is reported as `DISABLED` rather than rejected, so AWS KMS
/// can tell the customer why key creation failed.
///
/// # Errors
///
/// Returns [`ServiceError::DomainDisabled`] or [`ServiceError::KeyNotFound`].
pub fn key_metadata(
    domain: &DomainView,
    key_id: &str,
    request: &RequestContext<'_>,
) -> Result<KeyMetadata, ServiceError> {
    if domain.domain.status == DomainStatus::Disabled {
        return Err(ServiceError::DomainDisabled(domain.domain.id.clone()));
    }
    let key = domain
        .key(key_id)
        .filter(|key| key.info.status != KeyStatus::Destroyed)
        .ok_or_else(|| ServiceError::KeyNotFound(key_id.to_owned()))?;
    super::check_policies(domain, key, request)?;
    Ok(KeyMetadata {
        key_spec: KEY_SPEC,
        key_usage: key.info.usage.names(),
        // The XKS API knows only these two; a key pending deletion cannot be used.
        key_status: match key.info.status {
            KeyStatus::Enabled => "ENABLED",
            KeyStatus::Disabled | KeyStatus::PendingDeletion | KeyStatus::Destroyed => "DISABLED",
        },
    })
}
