//! The control plane: the admin REST API behind the admin listener and the CLI.
//!
//! Both front ends call [`Control::dispatch`] with a method, a path and a JSON body: the admin
//! listener after checking a bearer token, the CLI with the operating-system user as an
//! operator (whoever can read the data directory holds the root of trust anyway) or, with
//! `--server`, over HTTPS. So a command and the matching API call run the same code, check the
//! same roles and write the same audit record.

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

/// Largest request body the admin API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A role of an admin API principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Everything, in every domain; creates domains.
    Operator,
    /// Credentials, keys, policies, principals and key stores of its domains.
    DomainAdmin,
    /// Creates and lists keys in its domains.
    KeyCreator,
    /// Reads everything in its domains, including audit records.
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

    /// The role's name in the API.
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
    /// Returns a message listing the role names.
    pub fn parse(text: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| {
                format!("unknown role {text:?}; use operator, domain-admin, key-creator or auditor")
            })
    }
}

/// One role of a principal, in one domain or, for operators, everywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    /// The role.
    pub role: Role,
    /// The domain; `None` for operators.
    pub domain: Option<String>,
}

impl Grant {
    /// Reads a stored role.
    ///
    /// # Errors
    ///
    /// Returns the parse message for an unknown role name.
    pub fn from_row(row: &RoleRow) -> Result<Self, String> {
        Ok(Self {
            role: Role::parse(&row.role)?,
            domain: row.domain.clone(),
        })
    }
}

/// Who is calling, with what roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Name for audit records: `token:<principal>` or `cli:<user>`.
    pub audit_name: String,
    /// The principal's name in the store; `None` for the local CLI.
    pub name: Option<String>,
    /// Its roles.
    pub grants: Vec<Grant>,
}

impl Principal {
    /// The local CLI user, who holds the data directory and therefore acts as an operator.
    pub fn local(audit_name: String) -> Self {
        Self {
            audit_name,
            name: None,
            grants: vec![Grant {
                role: Role::Operator,
                domain: None,
            }],
        }
    }

    /// Whether the principal is an operator.
    pub fn is_operator(&self) -> bool {
        self.grants.iter().any(|grant| grant.role == Role::Operator)
    }

    /// Whether the principal holds one of `roles` in `domain`; operators hold every role.
    pub fn has_role_in(&self, domain: &str, roles: &[Role]) -> bool {
        self.is_operator()
            || self
                .grants
                .iter()
                .any(|grant| grant.domain.as_deref() == Some(domain) && roles.contains(&grant.role))
    }

    /// Whether the principal holds any role in `domain`.
    pub fn sees_domain(&self, domain: &str) -> bool {
        self.has_role_in(domain, &Role::ALL)
    }
}

/// An admin API error: an HTTP status, a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, such as `not_found`.
    pub code: &'static str,
    /// What failed and what to do next.
    pub message: String,
}

impl ApiError {
    /// 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 500 `internal`: the details go to the server log, not to the client.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}; the server log has the details"),
        )
    }

    /// Any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The JSON body: `{"error": {"code": ..., "message": ...}}`.
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
            StoreError::SchemaTooNew { .. } | StoreError::Sqlite(_) | StoreError::Corrupt(_) => {
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

/// One admin API call.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Path without the query, such as `/v1/domains/acme/keys`.
    pub path: String,
    /// Query string without `?`.
    pub query: String,
    /// JSON body; empty for none.
    pub body: Vec<u8>,
}

/// The result of an admin API call.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: serde_json::Value,
    /// `Allow` header value for 405 answers.
    pub allow: Option<String>,
}

impl ApiResponse {
    /// A successful answer.
    pub fn ok(status: StatusCode, body: &impl Serialize) -> Result<Self, ApiError> {
        let body = serde_json::to_value(body)
            .map_err(|error| ApiError::internal("cannot encode the response", &error))?;
        Ok(Self {
            status,
            body,
            allow: None,
        })
    }

    fn error(error: &ApiError) -> Self {
        Self {
            status: error.status,
            body: error.body(),
            allow: None,
        }
    }
}

/// Settings the control plane needs beyond the store.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// Base URL at which AWS KMS reaches the XKS listener, such as `https://xks.example.com`.
    pub xks_endpoint: String,
    /// Directory of this node's audit files.
    pub audit_dir: PathBuf,
}

/// The control plane over one connection to the store.
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
    /// Wraps a key store.
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
    /// token, with one message for all of them so a caller learns nothing about which.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let rejected = || {
            ApiError::unauthenticated(
                "a valid admin token is required: send `Authorization: Bearer khat_...`; \
                 tokens come from `keyhold init`, `keyhold token create` or the tokens API",
            )
        };
        let presented = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(rejected)?;
        let id = token::id_of(presented).ok_or_else(rejected)?;
        let mut key_store = self.lock();
        let store = key_store.store_mut();
        let Some(row) = store.token(id).map_err(ApiError::from)? else {
            tracing::info!(token = id, "admin token rejected: unknown id");
            return Err(rejected());
        };
        if !token::matches(presented, &row.digest) {
            tracing::info!(token = id, "admin token rejected: wrong secret");
            return Err(rejected());
        }
        let now = unix_now();
        if row.revoked_at.is_some() {
            tracing::info!(token = id, "admin token rejected: revoked");
            return Err(rejected());
        }
        if row.expires_at.is_some_and(|expires| expires <= now) {
            tracing::info!(token = id, "admin token rejected: expired");
            return Err(rejected());
        }
        let principal = store.principal(&row.principal).map_err(ApiError::from)?;
        let grants = principal
            .roles
            .iter()
            .map(Grant::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ApiError::internal("a stored role is unreadable", &message))?;
        if let Err(error) = store.touch_token(id, now) {
            tracing::debug!(%error, "cannot record the token's last use");
        }
        Ok(Principal {
            audit_name: format!("token:{} ({id})", principal.name),
            name: Some(principal.name),
            grants,
        })
    }

    /// Runs one call as `principal` and records changes for the audit log.
    pub fn dispatch(&self, principal: &Principal, request: &ApiRequest) -> ApiResponse {
        let found = match routes::find(&request.method, &request.path) {
            Ok(found) => found,
            Err(routes::NoRoute::NotFound) => {
                return ApiResponse::error(&ApiError::not_found(format!(
                    "no admin API resource at {}; /openapi.json lists them",
                    request.path
                )));
            }
            Err(routes::NoRoute::Method { allow }) => {
                let mut response = ApiResponse::error(&ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!(
                        "{} is not allowed on {}; use {allow}",
                        request.method, request.path
                    ),
                ));
                response.allow = Some(allow);
                return response;
            }
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
        if found.route.method != Method::GET {
            let outcome = match &result {
                Ok(_) => "success".to_owned(),
                Err(error) if error.status == StatusCode::FORBIDDEN => {
                    format!("denied: {}", error.message)
                }
                Err(error) => format!("error: {}", error.message),
            };
            let recorded = key_store.store_mut().record_admin_event(
                &now_rfc3339(),
                &principal.audit_name,
                found.route.action,
                &found.target(),
                &outcome,
            );
            if let Err(error) = recorded {
                tracing::error!(%error, action = found.route.action, "cannot record an administrative action for the audit log");
                if result.is_ok() {
                    return ApiResponse::error(&ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "audit_unavailable",
                        "the change was made but could not be recorded for the audit log; check the store",
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

/// Shares a control plane between the admin listener's tasks.
pub type SharedControl = Arc<Control>;
