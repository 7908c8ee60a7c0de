//! The control plane: the admin REST API behind the admin listener and the CLI.
//!
//! Both front ends call [`Control::dispatch`] with a method, a path and a JSON body. The admin
//! listener does so after it checks a bearer token. The CLI calls it directly as an operator,
//! because a user who can read the data directory has the root of trust anyway, or with
//! `--server` it sends the request to the admin listener over HTTPS. So a command and the
//! matching API call run the same code, check the same roles and write the same audit record.

pub mod openapi;
pub mod routes;
pub mod token;
pub mod views;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use hyper::{Method, StatusCode};
use serde::Serialize;

use crate::audit::now_rfc3339;
use crate::keystore::store::{RoleRow, StoreError};
use crate::keystore::{Error as KeyStoreError, KeyStore, unix_now};

/// Maximum size in bytes of a request body that the admin API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A role of an admin API principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Full access in every domain, including creating domains.
    Operator,
    /// Management of the credentials, keys, policies, principals and key stores of one domain.
    DomainAdmin,
    /// Creation and listing of keys in one domain.
    KeyCreator,
    /// Read access to everything in one domain, including its audit records.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [
        Role::Operator,
        Role::DomainAdmin,
        Role::KeyCreator,
        Role::Auditor,
    ];

    /// Returns the role's name in the API, such as `domain-admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::DomainAdmin => "domain-admin",
            Role::KeyCreator => "key-creator",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a role name.
    ///
    /// # Errors
    ///
    /// Returns a message that names the invalid role and lists the valid ones.
    pub fn parse(text: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "invalid role {text:?}: expected operator, domain-admin, key-creator or auditor"
                )
            })
    }
}

/// One role of a principal, in one domain or, for operators, everywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    /// The role.
    pub role: Role,
    /// Domain that the role applies to, or `None` for operators.
    pub domain: Option<String>,
}

impl Grant {
    /// Converts a stored role row into a grant.
    ///
    /// # Errors
    ///
    /// Returns the message of [`Role::parse`] for an invalid role name.
    pub fn from_row(row: &RoleRow) -> Result<Self, String> {
        Ok(Self {
            role: Role::parse(&row.role)?,
            domain: row.domain.clone(),
        })
    }
}

/// Authenticated caller of the admin API, with its roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Name in audit records: `token:<principal> (<token id>)` for a bearer token, or
    /// `cli:<user> (uid <uid>)` for the local CLI.
    pub audit_name: String,
    /// Principal name in the store, or `None` for the local CLI.
    pub name: Option<String>,
    /// Roles of the principal.
    pub grants: Vec<Grant>,
    /// Expiry of the token the caller presented, Unix seconds. Tokens it creates expire no
    /// later, so a short-lived token cannot mint a lasting one.
    pub token_expires_at: Option<i64>,
}

impl Principal {
    /// Creates the principal of the local CLI user. That user can read the data directory, so
    /// it acts as an operator.
    pub fn local(audit_name: String) -> Self {
        Self {
            audit_name,
            name: None,
            grants: vec![Grant {
                role: Role::Operator,
                domain: None,
            }],
            token_expires_at: None,
        }
    }

    /// Returns whether the principal has the operator role.
    pub fn is_operator(&self) -> bool {
        self.grants.iter().any(|grant| grant.role == Role::Operator)
    }

    /// Returns whether the principal has one of `roles` in `domain`. Operators have every role.
    pub fn has_role_in(&self, domain: &str, roles: &[Role]) -> bool {
        self.is_operator()
            || self
                .grants
                .iter()
                .any(|grant| grant.domain.as_deref() == Some(domain) && roles.contains(&grant.role))
    }

    /// Returns whether the principal has any role in `domain`.
    pub fn sees_domain(&self, domain: &str) -> bool {
        self.has_role_in(domain, &Role::ALL)
    }
}

/// Admin API error: an HTTP status, a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, such as `not_found`.
    pub code: &'static str,
    /// Message naming what failed and what to do next.
    pub message: String,
}

impl ApiError {
    /// Creates a 400 `invalid_request` error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// Creates a 401 `unauthenticated` error.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// Creates a 403 `forbidden` error.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// Creates a 404 `not_found` error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// Creates a 409 `conflict` error.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// Logs `error` with `context` and creates a 500 `internal` error. The client gets only
    /// `context`, and the details stay in the server log.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}; the server log has the details"),
        )
    }

    /// Creates an error with any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// Builds the JSON body `{"error": {"code": ..., "message": ...}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::AlreadyExists(message) | StoreError::Rejected(message) => {
                ApiError::conflict(message)
            }
            StoreError::SchemaTooNew { .. }
            | StoreError::Sqlite(_)
            | StoreError::Postgres(_)
            | StoreError::Config(_)
            | StoreError::Corrupt(_) => {
                tracing::error!(%error, "admin API request failed in the store");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    format!("the store failed: {error}; retry, and check the server log"),
                )
            }
        }
    }
}

impl From<KeyStoreError> for ApiError {
    fn from(error: KeyStoreError) -> Self {
        match error {
            KeyStoreError::Store(error) => error.into(),
            KeyStoreError::Invalid(message) => ApiError::invalid(message),
            KeyStoreError::Root(error) => ApiError::internal("the root of trust failed", &error),
        }
    }
}

/// Admin API request, as the admin listener or the CLI received it.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Path without the query, such as `/v1/domains/acme/keys`.
    pub path: String,
    /// Query string without the `?`.
    pub query: String,
    /// JSON body, or empty for none.
    pub body: Vec<u8>,
}

/// Admin API response.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: serde_json::Value,
    /// `Allow` header value for 405 responses.
    pub allow: Option<String>,
    /// Audit target of a change whose path does not name the created object: the new domain,
    /// principal and its roles, token, credential or key.
    pub audit_target: Option<String>,
}

impl ApiResponse {
    /// Serializes `body` into a successful response.
    ///
    /// # Errors
    ///
    /// Returns 500 `internal` when `body` cannot be serialized to JSON.
    pub fn ok(status: StatusCode, body: &impl Serialize) -> Result<Self, ApiError> {
        let body = serde_json::to_value(body)
            .map_err(|error| ApiError::internal("failed to encode the response as JSON", &error))?;
        Ok(Self {
            status,
            body,
            allow: None,
            audit_target: None,
        })
    }

    fn error(error: &ApiError) -> Self {
        Self {
            status: error.status,
            body: error.body(),
            allow: None,
            audit_target: None,
        }
    }
}

/// Control plane settings beyond the store.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// Base URL at which AWS KMS reaches the XKS listener, such as `https://xks.example.com`.
    pub xks_endpoint: String,
    /// Directory of the audit log files of this node.
    pub audit_dir: PathBuf,
}

/// Control plane over one connection to the store, shared by all admin API requests.
pub struct Control {
    key_store: Mutex<KeyStore>,
    settings: ControlSettings,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// Creates the control plane over `key_store`.
    pub fn new(key_store: KeyStore, settings: ControlSettings) -> Self {
        Self {
            key_store: Mutex::new(key_store),
            settings,
        }
    }

    /// Looks up a bearer token and returns its principal.
    ///
    /// # Errors
    ///
    /// Returns 401 `unauthenticated` for a missing, malformed, unknown, expired or revoked
    /// token, with one message for all of them so that a caller cannot tell which.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let rejected = || {
            ApiError::unauthenticated(
                "a valid admin token is required: send `Authorization: Bearer khat_...`. \
                 Tokens come from `keyhold init`, `keyhold token create` or the tokens API",
            )
        };
        let presented = authorization
            .and_then(bearer_credentials)
            .ok_or_else(rejected)?;
        let id = token::id_of(presented).ok_or_else(rejected)?;

        let mut key_store = self.lock();
        let store = key_store.store_mut();
        let Some(row) = store.token(id).map_err(ApiError::from)? else {
            tracing::debug!(token = id, "admin token rejected: unknown id");
            return Err(rejected());
        };
        if !token::matches(presented, &row.digest) {
            tracing::debug!(token = id, "admin token rejected: wrong secret");
            return Err(rejected());
        }
        let now = unix_now();
        if row.revoked_at.is_some() {
            tracing::debug!(token = id, "admin token rejected: revoked");
            return Err(rejected());
        }
        if row.expires_at.is_some_and(|expires| expires <= now) {
            tracing::debug!(token = id, "admin token rejected: expired");
            return Err(rejected());
        }

        let principal = store.principal(&row.principal).map_err(ApiError::from)?;
        let grants = principal
            .roles
            .iter()
            .map(Grant::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ApiError::internal("a stored role is invalid", &message))?;
        if let Err(error) = store.touch_token(id, now) {
            tracing::debug!(%error, token = id, "failed to record the last use of an admin token");
        }
        Ok(Principal {
            audit_name: format!("token:{} ({id})", principal.name),
            token_expires_at: row.expires_at,
            name: Some(principal.name),
            grants,
        })
    }

    /// Runs one request as `principal` and records every change request in the audit log.
    ///
    /// A change that succeeded but could not be recorded returns 503 `audit_unavailable`.
    pub fn dispatch(&self, principal: &Principal, request: &ApiRequest) -> ApiResponse {
        let found = match routes::find(&request.method, &request.path) {
            Ok(found) => found,
            Err(no_route) => return no_route_response(no_route, request),
        };

        let mut key_store = self.lock();
        let result = routes::run(
            &found,
            &mut routes::Call {
                key_store: &mut key_store,
                principal,
                params: &found.params,
                query: &request.query,
                body: &request.body,
                settings: &self.settings,
            },
        );

        // Reads are not audited, only change requests, whatever their outcome.
        if found.route.method != Method::GET {
            let recorded = record_change(&mut key_store, principal, &found, &result);
            if let Err(error) = recorded {
                tracing::error!(
                    %error,
                    action = found.route.action,
                    principal = %principal.audit_name,
                    target = %found.target(),
                    "failed to record an admin action in the audit log"
                );
                if result.is_ok() {
                    return ApiResponse::error(&ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "audit_unavailable",
                        "the change was made, but recording it in the audit log failed; \
                         check the store and the server log",
                    ));
                }
            }
        }

        match result {
            Ok(response) => response,
            Err(error) => ApiResponse::error(&error),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyStore> {
        self.key_store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Control plane shared between the tasks of the admin listener.
pub type SharedControl = Arc<Control>;

/// Returns the credentials of a `Bearer` authorization header value, or `None` for another
/// scheme. HTTP authentication scheme names are case-insensitive (RFC 9110, "Authentication
/// Scheme").
fn bearer_credentials(authorization: &str) -> Option<&str> {
    let (scheme, credentials) = authorization.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then(|| credentials.trim())
}

/// Builds the 404 or 405 response for a request that no route matches.
fn no_route_response(no_route: routes::NoRoute, request: &ApiRequest) -> ApiResponse {
    match no_route {
        routes::NoRoute::NotFound => ApiResponse::error(&ApiError::not_found(format!(
            "no admin API resource at {}; /openapi.json lists them",
            request.path
        ))),
        routes::NoRoute::Method { allow } => {
            let mut response = ApiResponse::error(&ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!(
                    "{} is not allowed on {}; use {allow}",
                    request.method, request.path
                ),
            ));
            response.allow = Some(allow);
            response
        }
    }
}

/// Records a change request and its outcome (`success`, `denied: ...` or `error: ...`) as an
/// admin event, which the server later copies into the audit log.
fn record_change(
    key_store: &mut KeyStore,
    principal: &Principal,
    found: &routes::Found,
    result: &Result<ApiResponse, ApiError>,
) -> Result<(), StoreError> {
    let target = match result {
        Ok(ApiResponse {
            audit_target: Some(target),
            ..
        }) => target.clone(),
        _ => found.target(),
    };
    let outcome = match result {
        Ok(_) => "success".to_owned(),
        Err(error) if error.status == StatusCode::FORBIDDEN => {
            format!("denied: {}", error.message)
        }
        Err(error) => format!("error: {}", error.message),
    };
    key_store.store_mut().record_admin_event(
        &now_rfc3339(),
        &principal.audit_name,
        found.route.action,
        &target,
        &outcome,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_credentials("Bearer khat_x"), Some("khat_x"));
        assert_eq!(bearer_credentials("bearer khat_x"), Some("khat_x"));
        assert_eq!(bearer_credentials("BEARER  khat_x "), Some("khat_x"));
    }

    #[test]
    fn bearer_rejects_other_schemes() {
        assert_eq!(bearer_credentials("Basic a2hhdA=="), None);
        assert_eq!(bearer_credentials("Bearer"), None);
        assert_eq!(bearer_credentials("Bearerkhat_x"), None);
    }
}
