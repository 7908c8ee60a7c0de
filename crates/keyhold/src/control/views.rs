//! Request and response bodies of the admin API. The JSON Schemas in `/openapi.json` are
//! derived from these types, so the document cannot drift from what the handlers read and write.
//! The doc comments of these types become the schema descriptions.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::keystore::format_time;
use crate::keystore::model::{CredentialInfo, Domain, KeyInfo, StoredVersion};
use crate::keystore::store::{KeyStoreRow, PrincipalRow, TokenRow};

/// Domain: a tenant with its own XKS path, credentials and keys.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainView {
    /// Domain id.
    pub id: String,
    /// Name shown to people.
    pub display_name: String,
    /// `ENABLED`, or `DISABLED` when the kill switch is on.
    #[schema(example = "ENABLED")]
    pub status: String,
    /// URI path prefix before `/kms/xks/v1`.
    pub uri_prefix: String,
    /// The `XksProxyUriPath` to configure in AWS KMS.
    pub xks_proxy_uri_path: String,
    /// Request quota in requests per second; absent when the default applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_rps: Option<u32>,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

impl DomainView {
    /// Builds the view of a stored domain.
    pub fn new(domain: &Domain) -> Self {
        Self {
            id: domain.id.clone(),
            display_name: domain.display_name.clone(),
            status: format!("{:?}", domain.status).to_uppercase(),
            uri_prefix: domain.uri_prefix.clone(),
            xks_proxy_uri_path: domain.xks_uri_path(),
            quota_rps: domain.quota_rps,
            created_at: format_time(domain.created_at),
        }
    }
}

/// Domains in which the caller has a role, or every domain for operators.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DomainList {
    /// Domains sorted by id.
    pub domains: Vec<DomainView>,
}

/// Request to create a domain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDomainRequest {
    /// Domain id: 1 to 63 characters of a-z, 0-9 and '-', not starting with '-'.
    #[schema(example = "acme", pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub id: String,
    /// Name shown to people; defaults to the id.
    #[serde(default)]
    pub display_name: Option<String>,
    /// URI path prefix; defaults to `/domains/<id>`.
    #[serde(default)]
    pub uri_prefix: Option<String>,
    /// Request quota in requests per second.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quota_rps: Option<u32>,
}

/// SigV4 credential of a domain, without its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialView {
    /// Access key id.
    pub access_key_id: String,
    /// `ACTIVE` or `REVOKED`.
    pub status: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Age in whole days, to spot credentials due for rotation.
    pub age_days: i64,
    /// Revocation time, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl CredentialView {
    /// Builds the view of a stored credential.
    pub fn new(credential: &CredentialInfo, now: i64) -> Self {
        Self {
            access_key_id: credential.access_key_id.clone(),
            status: if credential.revoked_at.is_some() {
                "REVOKED"
            } else {
                "ACTIVE"
            }
            .to_owned(),
            created_at: format_time(credential.created_at),
            age_days: (now - credential.created_at).max(0) / 86_400,
            revoked_at: credential.revoked_at.map(format_time),
        }
    }
}

/// A domain's credentials.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CredentialList {
    /// Credentials, oldest first.
    pub credentials: Vec<CredentialView>,
}

/// Credential part of the proxy configuration file for AWS KMS.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProxyCredential {
    /// Access key id.
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: String,
    /// Secret access key, shown only in this response.
    #[serde(rename = "RawSecretAccessKey")]
    pub raw_secret_access_key: String,
}

/// Proxy configuration file in the format that the AWS KMS console accepts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProxyConfiguration {
    /// XKS base path of the domain.
    #[serde(rename = "XksProxyUriPath")]
    pub xks_proxy_uri_path: String,
    /// SigV4 credential that AWS KMS signs its requests with.
    #[serde(rename = "XksProxyAuthenticationCredential")]
    pub xks_proxy_authentication_credential: ProxyCredential,
}

/// New credential with its secret. This response is the only place the secret appears.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedCredential {
    /// Credential without its secret.
    pub credential: CredentialView,
    /// Proxy configuration file for the AWS KMS console, including the secret.
    pub proxy_configuration: ProxyConfiguration,
}

/// External key, the XKS key that an AWS KMS key refers to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// Owning domain.
    pub domain_id: String,
    /// XKS external key id.
    pub key_id: String,
    /// Name shown to people.
    pub name: String,
    /// Description in free text.
    pub description: String,
    /// `ENABLED`, `DISABLED`, `PENDING_DELETION` or `DESTROYED`.
    pub status: String,
    /// Allowed operations: `ENCRYPT`, `DECRYPT` or both.
    pub usage: Vec<String>,
    /// `software` or `hsm`.
    pub protection: String,
    /// Version used for new encryptions.
    pub primary_version: u32,
    /// The only KMS key ARN allowed to use the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_kms_key_arn: Option<String>,
    /// Whether the key binds to the first KMS key ARN that uses it.
    pub bind_on_first_use: bool,
    /// Automatic rotation period in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_period_secs: Option<i64>,
    /// Time of the scheduled destruction, RFC 3339, while the key is pending deletion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_at: Option<String>,
    /// Whether the key has its own secondary authorization policy.
    pub has_policy: bool,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// HSM object of the primary version, with the attributes that the HSM reports for it.
    /// Present for `hsm` keys that are not destroyed, in responses about one key but not in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsm_object: Option<HsmObjectView>,
}

/// HSM object that contains key material, with attributes read from the HSM.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HsmObjectView {
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_EXTRACTABLE`. When false, the material cannot leave the HSM.
    pub extractable: bool,
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
}

impl KeyView {
    /// Builds the view of a stored key.
    pub fn new(key: &KeyInfo) -> Self {
        Self {
            domain_id: key.domain_id.clone(),
            key_id: key.key_id.clone(),
            name: key.name.clone(),
            description: key.description.clone(),
            status: key.status.as_str().to_owned(),
            usage: key.usage.names().into_iter().map(str::to_owned).collect(),
            protection: key.protection.as_str().to_owned(),
            primary_version: key.primary_version,
            bound_kms_key_arn: key.bound_kms_key_arn.clone(),
            bind_on_first_use: key.learn_binding,
            rotation_period_secs: key.rotation_period_secs,
            deletion_at: key.deletion_at.map(format_time),
            has_policy: key.policy.is_some(),
            created_at: format_time(key.created_at),
            hsm_object: None,
        }
    }
}

/// A domain's keys.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    /// Keys sorted by id.
    pub keys: Vec<KeyView>,
}

/// Request to create a key.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// External key id of 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-'. A random
    /// UUID when absent.
    #[serde(default)]
    pub key_id: Option<String>,
    /// Name shown to people; defaults to the key id.
    #[serde(default)]
    pub name: Option<String>,
    /// Description in free text.
    #[serde(default)]
    pub description: Option<String>,
    /// `ENCRYPT`, `DECRYPT` or both (the default). AWS KMS needs both.
    #[serde(default)]
    pub usage: Option<Vec<String>>,
    /// `software` (the default) or `hsm`.
    #[serde(default)]
    pub protection: Option<String>,
    /// KMS key ARN that alone may use the key.
    #[serde(default)]
    pub bind_kms_key_arn: Option<String>,
    /// Whether to bind the key to the first KMS key ARN that uses it.
    #[serde(default)]
    pub bind_on_first_use: Option<bool>,
    /// Automatic rotation period such as `90d` or `12h`.
    #[serde(default)]
    pub rotation_period: Option<String>,
}

/// Key version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionView {
    /// Version number.
    pub version: u32,
    /// `ENABLED`, `DISABLED` or `DESTROYED`.
    pub state: String,
    /// Whether new encryptions use it.
    pub primary: bool,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

impl VersionView {
    /// Builds the view of a stored version.
    pub fn new(version: &StoredVersion, primary: u32) -> Self {
        Self {
            version: version.version,
            state: version.state.as_str().to_owned(),
            primary: version.version == primary,
            created_at: format_time(version.created_at),
        }
    }
}

/// A key's versions.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionList {
    /// Versions, oldest first.
    pub versions: Vec<VersionView>,
}

/// Request to set or turn off automatic rotation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationRequest {
    /// Period such as `90d` or `12h` (at least an hour), or `off`.
    #[schema(example = "90d", pattern = "^([0-9]{1,6}[dh]|off)$")]
    pub period: String,
}

/// Request to schedule the deletion of a key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDeletionRequest {
    /// Waiting period in days, 7 to 30.
    #[schema(minimum = 7, maximum = 30)]
    pub days: u32,
}

/// Request to destroy the material of a key version for good.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestroyVersionRequest {
    /// Confirmation, which must be `true`, because the version's ciphertexts can never be
    /// decrypted again.
    #[schema(example = true)]
    pub confirm: bool,
}

/// Secondary authorization policy, or none.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    /// Policy document. `null` means no policy, so every authenticated request is allowed.
    #[schema(value_type = Option<Object>)]
    pub policy: Option<serde_json::Value>,
}

/// Role of a principal.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleView {
    /// `operator`, `domain-admin`, `key-creator` or `auditor`.
    #[schema(example = "key-creator")]
    pub role: String,
    /// Domain that the role applies to. Absent for `operator` and required for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// Admin API principal: a named identity with roles, which authenticates with tokens.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrincipalView {
    /// Unique name.
    pub name: String,
    /// Roles of the principal.
    pub roles: Vec<RoleView>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Audit name of the principal that created it.
    pub created_by: String,
}

impl PrincipalView {
    /// Builds the view of a stored principal.
    pub fn new(principal: &PrincipalRow) -> Self {
        Self {
            name: principal.name.clone(),
            roles: principal
                .roles
                .iter()
                .map(|role| RoleView {
                    role: role.role.clone(),
                    domain: role.domain.clone(),
                })
                .collect(),
            created_at: format_time(principal.created_at),
            created_by: principal.created_by.clone(),
        }
    }
}

/// List of principals.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PrincipalList {
    /// Principals sorted by name.
    pub principals: Vec<PrincipalView>,
}

/// Request to create a principal.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePrincipalRequest {
    /// Unique name of 1 to 64 characters of a-z, 0-9, '.', '_', '@' and '-'.
    #[schema(example = "alice", pattern = "^[a-z0-9._@-]{1,64}$")]
    pub name: String,
    /// Roles, at least one.
    pub roles: Vec<RoleView>,
}

/// Name and roles of the caller.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Whoami {
    /// Name in audit records.
    pub audit_name: String,
    /// Roles of the caller.
    pub roles: Vec<RoleView>,
}

/// Request to create a bearer token.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Description in free text, such as where the token is used: at most 256 characters and
    /// no control characters.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub description: Option<String>,
    /// Days until the token expires, 1 to 3650; no expiry when absent.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
}

/// Record of a bearer token, without the token itself.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    /// Public token id.
    pub id: String,
    /// Name of the principal that owns the token.
    pub principal: String,
    /// Description in free text.
    pub description: String,
    /// `ACTIVE`, `EXPIRED` or `REVOKED`.
    pub status: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Expiry time, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Revocation time, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Time of the last successful use, RFC 3339. The server updates it at most once a minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

impl TokenView {
    /// Builds the view of a stored token.
    pub fn new(token: &TokenRow, now: i64) -> Self {
        let status = if token.revoked_at.is_some() {
            "REVOKED"
        } else if token.expires_at.is_some_and(|at| at <= now) {
            "EXPIRED"
        } else {
            "ACTIVE"
        };
        Self {
            id: token.id.clone(),
            principal: token.principal.clone(),
            description: token.description.clone(),
            status: status.to_owned(),
            created_at: format_time(token.created_at),
            expires_at: token.expires_at.map(format_time),
            revoked_at: token.revoked_at.map(format_time),
            last_used_at: token.last_used_at.map(format_time),
        }
    }
}

/// A principal's tokens.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// Tokens, newest first.
    pub tokens: Vec<TokenView>,
}

/// New bearer token with its record. This response is the only place the token appears.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// Record of the token.
    #[serde(flatten)]
    pub info: TokenView,
    /// Bearer token. The server stores only its SHA-256 digest.
    pub token: String,
}

/// AWS KMS external key store registered for a domain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStoreView {
    /// Name, unique in the domain.
    pub name: String,
    /// AWS custom key store id.
    pub custom_key_store_id: String,
    /// AWS region.
    pub region: String,
    /// AWS account id.
    pub account_id: String,
    /// Registration time, RFC 3339.
    pub created_at: String,
}

impl KeyStoreView {
    /// Builds the view of a stored registration.
    pub fn new(row: &KeyStoreRow) -> Self {
        Self {
            name: row.name.clone(),
            custom_key_store_id: row.custom_key_store_id.clone(),
            region: row.region.clone(),
            account_id: row.account_id.clone(),
            created_at: format_time(row.created_at),
        }
    }
}

/// A domain's registered external key stores.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStoreList {
    /// Key stores sorted by name.
    pub key_stores: Vec<KeyStoreView>,
}

/// Request to register an AWS KMS external key store.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterKeyStoreRequest {
    /// Name, unique in the domain.
    #[schema(example = "prod-eu")]
    pub name: String,
    /// AWS custom key store id.
    #[schema(example = "cks-1234567890abcdef0")]
    pub custom_key_store_id: String,
    /// AWS region.
    #[schema(example = "eu-west-1")]
    pub region: String,
    /// AWS account id, 12 digits.
    #[schema(example = "111122223333")]
    pub account_id: String,
}

/// Request to create a key by self-service: a key name and an external key store name, nothing
/// else.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfServiceKeyRequest {
    /// Name of the key, unique among the domain's keys.
    #[schema(example = "orders-db")]
    pub key_name: String,
    /// Name of a registered external key store of the domain.
    #[schema(example = "prod-eu")]
    pub key_store: String,
}

/// Key created by self-service, with the command and Terraform resource that create the
/// matching KMS key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelfServiceKey {
    /// External key.
    pub key: KeyView,
    /// Id to give AWS KMS as `--xks-key-id`.
    pub xks_key_id: String,
    /// Custom key store that the KMS key belongs to.
    pub custom_key_store_id: String,
    /// `aws kms create-key` command.
    pub aws_cli: String,
    /// Equivalent Terraform resource.
    pub terraform: String,
}

/// Configuration file, commands and template that connect an AWS KMS external key store to
/// this domain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStoreSetupView {
    /// Proxy configuration file for the AWS KMS console, with a placeholder for the secret.
    #[schema(value_type = Object)]
    pub proxy_configuration_file: serde_json::Value,
    /// `aws kms create-custom-key-store` with public endpoint connectivity.
    pub public_endpoint_command: String,
    /// `aws kms create-custom-key-store` with VPC endpoint service connectivity.
    pub vpc_endpoint_service_command: String,
    /// CloudFormation template of the VPC endpoint service in the customer's account.
    pub vpc_endpoint_service_template: String,
    /// Warnings to check before using the setup, such as an endpoint that is not on port 443.
    pub warnings: Vec<String>,
}

/// Recent audit records of this node.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditRecords {
    /// Records, oldest first, as written to the audit log.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<serde_json::Value>,
}

/// Admin API error body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Error code and message.
    pub error: ErrorDetail,
}

/// Code and message of an admin API error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code such as `not_found` or `forbidden`.
    pub code: String,
    /// Message naming what failed and what to do next.
    pub message: String,
}
