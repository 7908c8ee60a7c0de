//! Admin API routes: one table of method, path, required roles, bodies and handler, and the
//! handlers themselves. Dispatch, the role checks and `/openapi.json` all read this table.

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::views::{
    AuditRecords, CreateDomainRequest, CreateKeyRequest, CreatePrincipalRequest,
    CreateTokenRequest, CreatedCredential, CreatedToken, CredentialList, CredentialView,
    DestroyVersionRequest, DomainList, DomainView, HsmObjectView, KeyList, KeyStoreList,
    KeyStoreSetupView, KeyStoreView, KeyView, PolicyView, PrincipalList, PrincipalView,
    ProxyConfiguration, ProxyCredential, RegisterKeyStoreRequest, RoleView, RotationRequest,
    ScheduleDeletionRequest, SelfServiceKey, SelfServiceKeyRequest, TokenList, TokenView,
    VersionList, VersionView, Whoami,
};
use super::{ApiError, ApiResponse, ControlSettings, Grant, Principal, Role, token};
use crate::hsm::HsmKey;
use crate::keystore::lifecycle::parse_period;
use crate::keystore::model::{
    DomainStatus, KeyInfo, KeyStatus, KeyUsage, Protection, StoredMaterial, VersionState,
};
use crate::keystore::store::{KeyStoreRow, PrincipalRow, RoleRow, TokenRow};
use crate::keystore::{KeyStore, NewDomain, NewKey, unix_now};
use crate::kms_setup;
use crate::policy::Policy;

/// Access rule of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any authenticated principal.
    Anyone,
    /// Operators only.
    Operator,
    /// Principals with one of these roles in the `{domain}` of the path, and operators.
    Domain(&'static [Role]),
    /// Access checked by the handler, for principals and their tokens.
    Principal,
}

const ADMIN: &[Role] = &[Role::DomainAdmin];
const ADMIN_AUDITOR: &[Role] = &[Role::DomainAdmin, Role::Auditor];
const CREATORS: &[Role] = &[Role::DomainAdmin, Role::KeyCreator];
const EVERYONE: &[Role] = &[Role::DomainAdmin, Role::KeyCreator, Role::Auditor];

/// Schema of a request or response body, named after its Rust type.
#[derive(Clone, Copy)]
pub struct Body {
    /// Returns the schema's component name.
    pub name: fn() -> String,
    /// Appends the schema and the schemas that it refers to.
    pub schemas: fn(
        &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&(self.name)())
    }
}

const fn body<T: utoipa::ToSchema>() -> Option<Body> {
    Some(Body {
        name: || T::name().into_owned(),
        schemas: |schemas| {
            schemas.push((T::name().into_owned(), T::schema()));
            T::schemas(schemas);
        },
    })
}

/// Request being served, with the caller and the store.
pub struct Call<'a> {
    /// Store and root of trust.
    pub key_store: &'a mut KeyStore,
    /// Authenticated caller.
    pub principal: &'a Principal,
    /// Path parameters in route order.
    pub params: &'a [(&'static str, String)],
    /// Query string without the `?`.
    pub query: &'a str,
    /// Request body.
    pub body: &'a [u8],
    /// Control settings.
    pub settings: &'a ControlSettings,
}

impl Call<'_> {
    /// Returns the path parameter `name`, or `""` when the route has none of that name.
    fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(key, _)| *key == name)
            .map_or("", |(_, value)| value.as_str())
    }

    fn domain(&self) -> &str {
        self.param("domain")
    }

    /// Parses the request body as JSON. An empty body counts as `{}`.
    fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let text = if self.body.is_empty() {
            b"{}".as_slice()
        } else {
            self.body
        };
        let value: serde_json::Value = serde_json::from_slice(text)
            .map_err(|error| ApiError::invalid(format!("invalid JSON body: {error}")))?;
        // serde also fills a struct from a JSON array of its fields, so an array would pass
        // for an object with every field in order.
        if !value.is_object() {
            return Err(ApiError::invalid(
                "invalid JSON body: expected an object, such as {\"keyId\": \"orders\"}",
            ));
        }
        serde_json::from_value(value)
            .map_err(|error| ApiError::invalid(format!("invalid JSON body: {error}")))
    }
}

type Handler = fn(&mut Call<'_>) -> Result<ApiResponse, ApiError>;

/// Admin API route.
#[derive(Debug)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path template with `{name}` parameters.
    pub path: &'static str,
    /// OpenAPI operation id.
    pub operation_id: &'static str,
    /// One-line summary for people.
    pub summary: &'static str,
    /// Action name in audit records and error messages, such as `key create`.
    pub action: &'static str,
    /// Access rule.
    pub access: Access,
    /// Request body schema, if the route reads a body.
    pub request: Option<Body>,
    /// HTTP status of a successful response.
    pub status: StatusCode,
    /// Response body schema.
    pub response: Option<Body>,
    handler: Handler,
}

macro_rules! route {
    ($method:ident $path:literal, $op:literal, $summary:literal, $action:literal, $access:expr,
     $request:expr, $status:ident => $response:expr, $handler:expr) => {
        Route {
            method: Method::$method,
            path: $path,
            operation_id: $op,
            summary: $summary,
            action: $action,
            access: $access,
            request: $request,
            status: StatusCode::$status,
            response: $response,
            handler: $handler,
        }
    };
}

/// Every admin API route.
pub static ROUTES: std::sync::LazyLock<Vec<Route>> = std::sync::LazyLock::new(|| {
    use Access::{Anyone, Domain, Operator};
    vec![
        route!(GET "/v1/whoami", "whoami", "The caller's name and roles", "whoami",
            Anyone, None, OK => body::<Whoami>(), whoami),
        route!(GET "/v1/domains", "listDomains", "Domains the caller has a role in", "domain list",
            Anyone, None, OK => body::<DomainList>(), list_domains),
        route!(POST "/v1/domains", "createDomain", "Create a domain", "domain create",
            Operator, body::<CreateDomainRequest>(), CREATED => body::<DomainView>(), create_domain),
        route!(GET "/v1/domains/{domain}", "getDomain", "Show a domain", "domain show",
            Domain(EVERYONE), None, OK => body::<DomainView>(), get_domain),
        route!(POST "/v1/domains/{domain}/disable", "disableDomain",
            "Turn the kill switch on: every XKS request of the domain fails", "domain disable",
            Domain(ADMIN), None, OK => body::<DomainView>(), disable_domain),
        route!(POST "/v1/domains/{domain}/enable", "enableDomain", "Turn the kill switch off",
            "domain enable", Domain(ADMIN), None, OK => body::<DomainView>(), enable_domain),
        route!(GET "/v1/domains/{domain}/credentials", "listCredentials",
            "A domain's SigV4 credentials: ids and age, never secrets", "credential list",
            Domain(ADMIN_AUDITOR), None, OK => body::<CredentialList>(), list_credentials),
        route!(POST "/v1/domains/{domain}/credentials", "createCredential",
            "Create a SigV4 credential; the secret is in this response only", "credential create",
            Domain(ADMIN), None, CREATED => body::<CreatedCredential>(), create_credential),
        route!(DELETE "/v1/domains/{domain}/credentials/{accessKeyId}", "revokeCredential",
            "Revoke a credential; every node rejects it within a second", "credential revoke",
            Domain(ADMIN), None, OK => body::<CredentialView>(), revoke_credential),
        route!(GET "/v1/domains/{domain}/keys", "listKeys", "A domain's keys", "key list",
            Domain(EVERYONE), None, OK => body::<KeyList>(), list_keys),
        route!(POST "/v1/domains/{domain}/keys", "createKey", "Create an AES-256 key",
            "key create", Domain(CREATORS), body::<CreateKeyRequest>(), CREATED => body::<KeyView>(),
            create_key),
        route!(GET "/v1/domains/{domain}/keys/{keyId}", "getKey", "Show a key", "key show",
            Domain(EVERYONE), None, OK => body::<KeyView>(), get_key),
        route!(POST "/v1/domains/{domain}/keys/{keyId}/enable", "enableKey", "Enable a key",
            "key enable", Domain(ADMIN), None, OK => body::<KeyView>(), enable_key),
        route!(POST "/v1/domains/{domain}/keys/{keyId}/disable", "disableKey",
            "Disable a key: its encrypt and decrypt fail", "key disable", Domain(ADMIN), None,
            OK => body::<KeyView>(), disable_key),
        route!(POST "/v1/domains/{domain}/keys/{keyId}/rotate", "rotateKey",
            "Make a new primary version; older versions keep decrypting", "key rotate",
            Domain(ADMIN), None, OK => body::<KeyView>(), rotate_key),
        route!(PUT "/v1/domains/{domain}/keys/{keyId}/rotation", "setKeyRotation",
            "Set or turn off automatic rotation", "key set-rotation", Domain(ADMIN),
            body::<RotationRequest>(), OK => body::<KeyView>(), set_rotation),
        route!(POST "/v1/domains/{domain}/keys/{keyId}/schedule-deletion", "scheduleKeyDeletion",
            "Schedule the key's destruction after 7 to 30 days", "key schedule-deletion",
            Domain(ADMIN), body::<ScheduleDeletionRequest>(), OK => body::<KeyView>(),
            schedule_deletion),
        route!(POST "/v1/domains/{domain}/keys/{keyId}/cancel-deletion", "cancelKeyDeletion",
            "Cancel a scheduled deletion", "key cancel-deletion", Domain(ADMIN), None,
            OK => body::<KeyView>(), cancel_deletion),
        route!(GET "/v1/domains/{domain}/keys/{keyId}/versions", "listKeyVersions",
            "A key's versions", "key version list", Domain(ADMIN_AUDITOR), None,
            OK => body::<VersionList>(), list_versions),
        route!(POST "/v1/domains/{domain}/keys/{keyId}/versions/{version}/enable",
            "enableKeyVersion", "Enable a version", "key version enable", Domain(ADMIN), None,
            OK => body::<VersionView>(), enable_version),
        route!(POST "/v1/domains/{domain}/keys/{keyId}/versions/{version}/disable",
            "disableKeyVersion", "Disable a version: its ciphertexts fail to decrypt",
            "key version disable", Domain(ADMIN), None, OK => body::<VersionView>(),
            disable_version),
        route!(POST "/v1/domains/{domain}/keys/{keyId}/versions/{version}/destroy",
            "destroyKeyVersion", "Erase a version's material for good", "key version destroy",
            Domain(ADMIN), body::<DestroyVersionRequest>(), OK => body::<VersionView>(),
            destroy_version),
        route!(GET "/v1/domains/{domain}/policy", "getDomainPolicy",
            "The domain's secondary authorization policy", "policy show", Domain(ADMIN_AUDITOR),
            None, OK => body::<PolicyView>(), get_domain_policy),
        route!(PUT "/v1/domains/{domain}/policy", "setDomainPolicy",
            "Set the domain's secondary authorization policy", "policy set", Domain(ADMIN),
            body::<PolicyView>(), OK => body::<PolicyView>(), set_domain_policy),
        route!(DELETE "/v1/domains/{domain}/policy", "clearDomainPolicy",
            "Remove the domain's policy", "policy clear", Domain(ADMIN), None,
            OK => body::<PolicyView>(), clear_domain_policy),
        route!(GET "/v1/domains/{domain}/keys/{keyId}/policy", "getKeyPolicy",
            "A key's own secondary authorization policy", "policy show", Domain(ADMIN_AUDITOR),
            None, OK => body::<PolicyView>(), get_key_policy),
        route!(PUT "/v1/domains/{domain}/keys/{keyId}/policy", "setKeyPolicy",
            "Set a key's own policy, checked after the domain's", "policy set", Domain(ADMIN),
            body::<PolicyView>(), OK => body::<PolicyView>(), set_key_policy),
        route!(DELETE "/v1/domains/{domain}/keys/{keyId}/policy", "clearKeyPolicy",
            "Remove a key's own policy", "policy clear", Domain(ADMIN), None,
            OK => body::<PolicyView>(), clear_key_policy),
        route!(GET "/v1/domains/{domain}/key-stores", "listKeyStores",
            "The domain's registered AWS KMS external key stores", "key-store list",
            Domain(EVERYONE), None, OK => body::<KeyStoreList>(), list_key_stores),
        route!(POST "/v1/domains/{domain}/key-stores", "registerKeyStore",
            "Register an AWS KMS external key store", "key-store register", Domain(ADMIN),
            body::<RegisterKeyStoreRequest>(), CREATED => body::<KeyStoreView>(),
            register_key_store),
        route!(GET "/v1/domains/{domain}/key-stores/{name}", "getKeyStore",
            "Show a registered external key store", "key-store show", Domain(EVERYONE), None,
            OK => body::<KeyStoreView>(), get_key_store),
        route!(DELETE "/v1/domains/{domain}/key-stores/{name}", "removeKeyStore",
            "Remove a registration; keys stay", "key-store remove", Domain(ADMIN), None,
            OK => body::<KeyStoreView>(), remove_key_store),
        route!(GET "/v1/domains/{domain}/key-stores/{name}/setup", "getKeyStoreSetup",
            "Proxy configuration file, create-custom-key-store commands and the VPC endpoint \
             service template", "key-store setup", Domain(ADMIN), None,
            OK => body::<KeyStoreSetupView>(), key_store_setup),
        route!(POST "/v1/domains/{domain}/self-service/keys", "selfServiceCreateKey",
            "Create a key from a key name and an external key store name; returns the AWS \
             commands that create the matching KMS key", "key self-service create",
            Domain(CREATORS), body::<SelfServiceKeyRequest>(), CREATED => body::<SelfServiceKey>(),
            self_service_key),
        route!(GET "/v1/domains/{domain}/principals", "listDomainPrincipals",
            "Principals with a role in the domain", "principal list", Domain(ADMIN_AUDITOR),
            None, OK => body::<PrincipalList>(), list_domain_principals),
        route!(GET "/v1/domains/{domain}/audit", "listDomainAudit",
            "This node's recent audit records of the domain", "audit list",
            Domain(ADMIN_AUDITOR), None, OK => body::<AuditRecords>(), domain_audit),
        route!(GET "/v1/audit", "listAudit", "This node's recent audit records", "audit list",
            Operator, None, OK => body::<AuditRecords>(), all_audit),
        route!(GET "/v1/principals", "listPrincipals", "Every principal", "principal list",
            Operator, None, OK => body::<PrincipalList>(), list_principals),
        route!(POST "/v1/principals", "createPrincipal",
            "Create a principal; domain admins grant roles in their own domains only",
            "principal create", Access::Principal, body::<CreatePrincipalRequest>(),
            CREATED => body::<PrincipalView>(), create_principal),
        route!(GET "/v1/principals/{principal}", "getPrincipal", "Show a principal",
            "principal show", Access::Principal, None, OK => body::<PrincipalView>(),
            get_principal),
        route!(DELETE "/v1/principals/{principal}", "deletePrincipal",
            "Delete a principal and its tokens", "principal delete", Access::Principal, None,
            OK => body::<PrincipalView>(), delete_principal),
        route!(GET "/v1/principals/{principal}/tokens", "listTokens",
            "A principal's tokens, never the tokens themselves", "token list", Access::Principal,
            None, OK => body::<TokenList>(), list_tokens),
        route!(POST "/v1/principals/{principal}/tokens", "createToken",
            "Create a bearer token; it is in this response only", "token create",
            Access::Principal, body::<CreateTokenRequest>(), CREATED => body::<CreatedToken>(),
            create_token),
        route!(DELETE "/v1/principals/{principal}/tokens/{tokenId}", "revokeToken",
            "Revoke a token at once", "token revoke", Access::Principal, None,
            OK => body::<TokenView>(), revoke_token),
    ]
});

/// Route that matched a request, with its path parameters.
#[derive(Debug)]
pub struct Found {
    /// Matched route.
    pub route: &'static Route,
    /// Path parameters in route order.
    pub params: Vec<(&'static str, String)>,
}

impl Found {
    /// Returns the target for audit records: the path parameters joined with `/`.
    pub fn target(&self) -> String {
        self.params
            .iter()
            .map(|(_, value)| value.as_str())
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Reason that no route matches a request.
#[derive(Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// No route has this path.
    NotFound,
    /// Routes have this path, but not this method.
    Method {
        /// Allowed methods, joined with `, ` for the `Allow` header.
        allow: String,
    },
}

/// Finds the route for a method and path.
///
/// # Errors
///
/// Returns [`NoRoute`] when no route matches.
pub fn find(method: &Method, path: &str) -> Result<Found, NoRoute> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let mut allow = Vec::new();
    for route in ROUTES.iter() {
        let Some(params) = match_path(route.path, &segments) else {
            continue;
        };
        // HEAD is a GET without the body, which hyper leaves out of the response.
        if route.method == method || (method == Method::HEAD && route.method == Method::GET) {
            return Ok(Found { route, params });
        }
        allow.push(route.method.as_str());
        if route.method == Method::GET {
            allow.push(Method::HEAD.as_str());
        }
    }
    if allow.is_empty() {
        Err(NoRoute::NotFound)
    } else {
        Err(NoRoute::Method {
            allow: allow.join(", "),
        })
    }
}

/// Matches path segments against a route template and returns the decoded parameters, or
/// `None` when the path does not match or a parameter is empty or badly encoded.
fn match_path(template: &'static str, segments: &[&str]) -> Option<Vec<(&'static str, String)>> {
    let parts: Vec<&'static str> = template[1..].split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, segment) in parts.iter().zip(segments) {
        match part
            .strip_prefix('{')
            .and_then(|inner| inner.strip_suffix('}'))
        {
            Some(name) => {
                let value = percent_decode(segment)?;
                if value.is_empty() {
                    return None;
                }
                params.push((name, value));
            }
            None if part == segment => {}
            None => return None,
        }
    }
    Some(params)
}

/// Decodes `%XX` escapes. Returns `None` for an escape without two hex digits or for a result
/// that is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            // `from_str_radix` alone would also accept a sign, as in `%+1`.
            if !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks the route's access rule, then runs its handler.
///
/// # Errors
///
/// Returns 403 `forbidden` when the caller lacks the role, or else the handler's error.
pub fn run(found: &Found, call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let route = found.route;
    let allowed = match route.access {
        Access::Anyone | Access::Principal => true,
        Access::Operator => call.principal.is_operator(),
        Access::Domain(roles) => call.principal.has_role_in(call.domain(), roles),
    };
    if !allowed {
        return Err(forbidden(call.principal, route));
    }
    (route.handler)(call)
}

/// Builds the 403 error that names the roles the route needs.
fn forbidden(principal: &Principal, route: &Route) -> ApiError {
    let needed = match route.access {
        Access::Operator => "the operator role".to_owned(),
        Access::Domain(roles) => {
            let names: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
            format!(
                "one of the roles {} in this domain, or operator",
                names.join(", ")
            )
        }
        Access::Anyone | Access::Principal => "more rights".to_owned(),
    };
    ApiError::forbidden(format!(
        "{} may not {}: that needs {needed}; ask an operator or the domain's admin for a role",
        principal.audit_name, route.action
    ))
}

fn reply(status: StatusCode, body: &impl serde::Serialize) -> Result<ApiResponse, ApiError> {
    ApiResponse::ok(status, body)
}

/// Builds a 201 Created response that names what was created for the audit record.
fn created(body: &impl serde::Serialize, audit_target: String) -> Result<ApiResponse, ApiError> {
    let mut response = ApiResponse::ok(StatusCode::CREATED, body)?;
    response.audit_target = Some(audit_target);
    Ok(response)
}

fn roles_view(grants: &[Grant]) -> Vec<RoleView> {
    grants
        .iter()
        .map(|grant| RoleView {
            role: grant.role.as_str().to_owned(),
            domain: grant.domain.clone(),
        })
        .collect()
}

fn whoami(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    reply(
        StatusCode::OK,
        &Whoami {
            audit_name: call.principal.audit_name.clone(),
            roles: roles_view(&call.principal.grants),
        },
    )
}

// Domains --------------------------------------------------------------------------------------

fn list_domains(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let domains = call.key_store.store().domains()?;
    let domains = domains
        .iter()
        .filter(|domain| call.principal.sees_domain(&domain.id))
        .map(DomainView::new)
        .collect();
    reply(StatusCode::OK, &DomainList { domains })
}

fn create_domain(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let request: CreateDomainRequest = call.json()?;
    let domain = call.key_store.create_domain(&NewDomain {
        id: request.id,
        display_name: request.display_name,
        uri_prefix: request.uri_prefix,
        quota_rps: request.quota_rps,
    })?;
    created(&DomainView::new(&domain), domain.id.clone())
}

fn get_domain(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let domain = call.key_store.store().domain(call.domain())?;
    reply(StatusCode::OK, &DomainView::new(&domain))
}

fn set_domain_status(call: &mut Call<'_>, status: DomainStatus) -> Result<ApiResponse, ApiError> {
    let id = call.domain().to_owned();
    call.key_store.store_mut().set_domain_status(&id, status)?;
    get_domain(call)
}

fn disable_domain(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    set_domain_status(call, DomainStatus::Disabled)
}

fn enable_domain(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    set_domain_status(call, DomainStatus::Enabled)
}

// Credentials ----------------------------------------------------------------------------------

fn list_credentials(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let now = unix_now();
    let credentials = call.key_store.store().credentials(call.domain())?;
    reply(
        StatusCode::OK,
        &CredentialList {
            credentials: credentials
                .iter()
                .map(|credential| CredentialView::new(credential, now))
                .collect(),
        },
    )
}

fn create_credential(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let domain = call.domain().to_owned();
    let uri_path = call.key_store.store().domain(&domain)?.xks_uri_path();
    let (credential, secret) = call.key_store.create_credential(&domain)?;
    created(
        &CreatedCredential {
            credential: CredentialView::new(&credential, unix_now()),
            proxy_configuration: ProxyConfiguration {
                xks_proxy_uri_path: uri_path,
                xks_proxy_authentication_credential: ProxyCredential {
                    access_key_id: credential.access_key_id.clone(),
                    raw_secret_access_key: secret.expose().to_owned(),
                },
            },
        },
        format!("{domain}/{}", credential.access_key_id),
    )
}

fn revoke_credential(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let domain = call.domain().to_owned();
    let access_key_id = call.param("accessKeyId").to_owned();
    let now = unix_now();
    call.key_store
        .store_mut()
        .revoke_credential(&domain, &access_key_id, now)?;
    let credential = call
        .key_store
        .store()
        .credentials(&domain)?
        .into_iter()
        .find(|credential| credential.access_key_id == access_key_id)
        .ok_or_else(|| ApiError::not_found(format!("credential {access_key_id:?} not found")))?;
    reply(StatusCode::OK, &CredentialView::new(&credential, now))
}

// Keys -----------------------------------------------------------------------------------------

fn list_keys(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let keys = call.key_store.store().keys(call.domain())?;
    reply(
        StatusCode::OK,
        &KeyList {
            keys: keys.iter().map(KeyView::new).collect(),
        },
    )
}

fn new_key(domain: &str, request: CreateKeyRequest) -> Result<NewKey, ApiError> {
    let usage = match request.usage {
        None => KeyUsage::ENCRYPT_DECRYPT,
        Some(names) => KeyUsage::parse(&names.join(",")).map_err(ApiError::invalid)?,
    };
    let protection = request
        .protection
        .as_deref()
        .map_or(Ok(Protection::Software), Protection::parse)
        .map_err(ApiError::invalid)?;
    let rotation_period_secs = request
        .rotation_period
        .as_deref()
        .map(parse_period)
        .transpose()
        .map_err(ApiError::invalid)?;
    let learn_binding = request.bind_on_first_use.unwrap_or(false);
    if learn_binding && request.bind_kms_key_arn.is_some() {
        return Err(ApiError::invalid(
            "give bindKmsKeyArn or bindOnFirstUse, not both",
        ));
    }
    Ok(NewKey {
        domain_id: domain.to_owned(),
        key_id: request.key_id,
        name: request.name,
        description: request.description.unwrap_or_default(),
        usage,
        bound_kms_key_arn: request.bind_kms_key_arn,
        learn_binding,
        protection,
        rotation_period_secs,
    })
}

fn create_key(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let new = new_key(call.domain(), call.json()?)?;
    let key = call.key_store.create_key(&new)?;
    created(
        &KeyView::new(&key),
        format!("{}/{}", key.domain_id, key.key_id),
    )
}

fn get_key(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let key = call
        .key_store
        .store()
        .key(call.domain(), call.param("keyId"))?;
    let mut view = KeyView::new(&key);
    if key.protection == Protection::Hsm && key.status != KeyStatus::Destroyed {
        view.hsm_object = Some(hsm_object(call.key_store, &key)?);
    }
    reply(StatusCode::OK, &view)
}

/// Reads the attributes of the primary version's HSM object from the HSM, so the response shows
/// what the HSM enforces rather than what the store claims.
fn hsm_object(key_store: &KeyStore, key: &KeyInfo) -> Result<HsmObjectView, ApiError> {
    let versions = key_store.store().versions(&key.domain_id, &key.key_id)?;
    let label = versions
        .iter()
        .find(|version| version.version == key.primary_version)
        .and_then(|version| match &version.material {
            StoredMaterial::Hsm(label) => Some(label.clone()),
            _ => None,
        })
        .ok_or_else(|| {
            ApiError::internal(
                "the key's primary version has no HSM object",
                &format!("key {}/{}", key.domain_id, key.key_id),
            )
        })?;
    let hsm = key_store.root().hsm().ok_or_else(|| {
        ApiError::conflict("the key is HSM-resident, but no HSM is configured as root of trust")
    })?;
    let protection = hsm.key_protection(HsmKey::Label(&label)).map_err(|error| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "hsm_unavailable",
            format!("failed to read the attributes of HSM object {label}: {error}; check the HSM"),
        )
    })?;
    Ok(HsmObjectView {
        label,
        extractable: protection.extractable,
        sensitive: protection.sensitive,
    })
}

fn set_key_status(call: &mut Call<'_>, status: KeyStatus) -> Result<ApiResponse, ApiError> {
    let (domain, key_id) = (call.domain().to_owned(), call.param("keyId").to_owned());
    call.key_store
        .store_mut()
        .set_key_status(&domain, &key_id, status)?;
    get_key(call)
}

fn enable_key(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    set_key_status(call, KeyStatus::Enabled)
}

fn disable_key(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    set_key_status(call, KeyStatus::Disabled)
}

fn rotate_key(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let (domain, key_id) = (call.domain().to_owned(), call.param("keyId").to_owned());
    call.key_store.rotate_key(&domain, &key_id)?;
    get_key(call)
}

fn set_rotation(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let request: RotationRequest = call.json()?;
    let period = if request.period == "off" {
        None
    } else {
        Some(parse_period(&request.period).map_err(ApiError::invalid)?)
    };
    let (domain, key_id) = (call.domain().to_owned(), call.param("keyId").to_owned());
    call.key_store
        .store_mut()
        .set_rotation_period(&domain, &key_id, period)?;
    get_key(call)
}

fn schedule_deletion(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let request: ScheduleDeletionRequest = call.json()?;
    let (domain, key_id) = (call.domain().to_owned(), call.param("keyId").to_owned());
    call.key_store
        .schedule_deletion(&domain, &key_id, request.days)?;
    get_key(call)
}

fn cancel_deletion(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let (domain, key_id) = (call.domain().to_owned(), call.param("keyId").to_owned());
    call.key_store
        .store_mut()
        .cancel_deletion(&domain, &key_id)?;
    get_key(call)
}

fn list_versions(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let store = call.key_store.store();
    let key = store.key(call.domain(), call.param("keyId"))?;
    let versions = store.versions(call.domain(), call.param("keyId"))?;
    reply(
        StatusCode::OK,
        &VersionList {
            versions: versions
                .iter()
                .map(|version| VersionView::new(version, key.primary_version))
                .collect(),
        },
    )
}

/// Parses the `{version}` path parameter, a number from 1.
fn version_number(call: &Call<'_>) -> Result<u32, ApiError> {
    let text = call.param("version");
    text.parse::<u32>()
        .ok()
        .filter(|number| *number >= 1)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "invalid version {text:?}: expected a whole number from 1"
            ))
        })
}

fn version_view(call: &mut Call<'_>, number: u32) -> Result<ApiResponse, ApiError> {
    let store = call.key_store.store();
    let key = store.key(call.domain(), call.param("keyId"))?;
    let version = store
        .versions(call.domain(), call.param("keyId"))?
        .into_iter()
        .find(|version| version.version == number)
        .ok_or_else(|| ApiError::not_found(format!("version {number} not found")))?;
    reply(
        StatusCode::OK,
        &VersionView::new(&version, key.primary_version),
    )
}

fn set_version_state(call: &mut Call<'_>, state: VersionState) -> Result<ApiResponse, ApiError> {
    let number = version_number(call)?;
    let (domain, key_id) = (call.domain().to_owned(), call.param("keyId").to_owned());
    call.key_store
        .store_mut()
        .set_version_state(&domain, &key_id, number, state)?;
    version_view(call, number)
}

fn enable_version(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    set_version_state(call, VersionState::Enabled)
}

fn disable_version(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    set_version_state(call, VersionState::Disabled)
}

fn destroy_version(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let request: DestroyVersionRequest = call.json()?;
    let number = version_number(call)?;
    if !request.confirm {
        return Err(ApiError::invalid(format!(
            "destroying version {number} erases its material for good, so its ciphertexts can \
             never be decrypted again; send {{\"confirm\": true}} (the CLI's --yes) to do it"
        )));
    }
    let (domain, key_id) = (call.domain().to_owned(), call.param("keyId").to_owned());
    call.key_store.destroy_version(&domain, &key_id, number)?;
    version_view(call, number)
}

// Policies -------------------------------------------------------------------------------------

fn policy_view(text: Option<String>) -> Result<ApiResponse, ApiError> {
    let policy = text
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|error| ApiError::internal("a stored policy is invalid JSON", &error))?;
    reply(StatusCode::OK, &PolicyView { policy })
}

fn get_domain_policy(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    policy_view(call.key_store.store().domain(call.domain())?.policy)
}

fn get_key_policy(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    policy_view(
        call.key_store
            .store()
            .key(call.domain(), call.param("keyId"))?
            .policy,
    )
}

fn set_policy(call: &mut Call<'_>, key: Option<&str>) -> Result<ApiResponse, ApiError> {
    let request: PolicyView = call.json()?;
    let Some(document) = request.policy else {
        return Err(ApiError::invalid(
            "missing \"policy\" object in the body; to remove the policy, send DELETE instead",
        ));
    };
    let policy = Policy::parse(&document.to_string()).map_err(ApiError::invalid)?;
    let normalized = serde_json::to_string(&policy)
        .map_err(|error| ApiError::internal("failed to encode the policy as JSON", &error))?;
    let domain = call.domain().to_owned();
    call.key_store
        .store_mut()
        .set_policy(&domain, key, Some(&normalized))?;
    policy_view(Some(normalized))
}

fn set_domain_policy(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    set_policy(call, None)
}

fn set_key_policy(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let key = call.param("keyId").to_owned();
    set_policy(call, Some(&key))
}

fn clear_policy(call: &mut Call<'_>, key: Option<&str>) -> Result<ApiResponse, ApiError> {
    let domain = call.domain().to_owned();
    call.key_store.store_mut().set_policy(&domain, key, None)?;
    policy_view(None)
}

fn clear_domain_policy(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    clear_policy(call, None)
}

fn clear_key_policy(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let key = call.param("keyId").to_owned();
    clear_policy(call, Some(&key))
}

// External key stores and self-service -----------------------------------------------------------

fn list_key_stores(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let rows = call.key_store.store().key_stores(call.domain())?;
    reply(
        StatusCode::OK,
        &KeyStoreList {
            key_stores: rows.iter().map(KeyStoreView::new).collect(),
        },
    )
}

fn register_key_store(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let request: RegisterKeyStoreRequest = call.json()?;
    let target = kms_setup::ExternalKeyStore {
        name: request.name,
        custom_key_store_id: request.custom_key_store_id,
        region: request.region,
        account_id: request.account_id,
    };
    kms_setup::validate_key_store(&target).map_err(ApiError::invalid)?;
    let row = KeyStoreRow {
        domain_id: call.domain().to_owned(),
        name: target.name,
        custom_key_store_id: target.custom_key_store_id,
        region: target.region,
        account_id: target.account_id,
        created_at: unix_now(),
    };
    call.key_store.store_mut().insert_key_store(&row)?;
    created(
        &KeyStoreView::new(&row),
        format!(
            "{}/{} ({})",
            row.domain_id, row.name, row.custom_key_store_id
        ),
    )
}

fn get_key_store(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let row = call
        .key_store
        .store()
        .key_store(call.domain(), call.param("name"))?;
    reply(StatusCode::OK, &KeyStoreView::new(&row))
}

fn remove_key_store(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let (domain, name) = (call.domain().to_owned(), call.param("name").to_owned());
    let row = call.key_store.store().key_store(&domain, &name)?;
    call.key_store
        .store_mut()
        .delete_key_store(&domain, &name)?;
    reply(StatusCode::OK, &KeyStoreView::new(&row))
}

fn external_key_store(row: KeyStoreRow) -> kms_setup::ExternalKeyStore {
    kms_setup::ExternalKeyStore {
        name: row.name,
        custom_key_store_id: row.custom_key_store_id,
        region: row.region,
        account_id: row.account_id,
    }
}

fn key_store_setup(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let store = call.key_store.store();
    let domain = store.domain(call.domain())?;
    let row = store.key_store(call.domain(), call.param("name"))?;
    let newest_active = store
        .credentials(call.domain())?
        .into_iter()
        .filter(|credential| credential.revoked_at.is_none())
        .max_by_key(|credential| credential.created_at)
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "domain {} has no active SigV4 credential; create one first (POST \
                 /v1/domains/{}/credentials shows its secret once)",
                domain.id, domain.id
            ))
        })?;
    let endpoint = kms_setup::ProxyEndpoint {
        uri_endpoint: call.settings.xks_endpoint.clone(),
        uri_path: domain.xks_uri_path(),
        vpc_private_dns_name: None,
    };
    let setup = kms_setup::key_store_setup(
        &external_key_store(row),
        &endpoint,
        &newest_active.access_key_id,
        None,
    );
    reply(
        StatusCode::OK,
        &KeyStoreSetupView {
            proxy_configuration_file: setup.proxy_configuration_file,
            public_endpoint_command: setup.public_endpoint_command,
            vpc_endpoint_service_command: setup.vpc_endpoint_service_command,
            vpc_endpoint_service_template: setup.vpc_endpoint_service_template,
            warnings: setup.warnings,
        },
    )
}

/// Returns whether a character is a control character or an invisible formatting character,
/// such as a bidirectional override, that can make a name display differently from its text.
fn is_hidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Maximum length of a self-service key name, in characters.
const MAX_KEY_NAME_CHARS: usize = 256;

/// Creates a software key from a key name and a registered external key store, and returns the
/// AWS CLI command and Terraform resource that create the matching KMS key.
fn self_service_key(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let request: SelfServiceKeyRequest = call.json()?;
    let domain = call.domain().to_owned();
    let name = request.key_name.trim();
    let name_chars = name.chars().count();
    if name_chars == 0 || name_chars > MAX_KEY_NAME_CHARS || name.chars().any(is_hidden_char) {
        return Err(ApiError::invalid(format!(
            "invalid key name {:?}: use 1 to {MAX_KEY_NAME_CHARS} characters and no control or \
             bidirectional formatting characters",
            request.key_name
        )));
    }

    let row = call
        .key_store
        .store()
        .key_store(&domain, &request.key_store)?;
    let taken = call
        .key_store
        .store()
        .keys(&domain)?
        .into_iter()
        .find(|key| key.name == name && key.status != KeyStatus::Destroyed);
    if let Some(key) = taken {
        return Err(ApiError::conflict(format!(
            "domain {domain} has a key named {name:?} already (key id {}); pick another name",
            key.key_id
        )));
    }

    let description = format!(
        "{name} (self-service, custom key store {})",
        row.custom_key_store_id
    );
    let key = call.key_store.create_key(&NewKey {
        domain_id: domain.clone(),
        key_id: None,
        name: Some(name.to_owned()),
        description: description.clone(),
        usage: KeyUsage::ENCRYPT_DECRYPT,
        bound_kms_key_arn: None,
        learn_binding: false,
        protection: Protection::Software,
        rotation_period_secs: None,
    })?;

    let custom_key_store_id = row.custom_key_store_id.clone();
    let instructions =
        kms_setup::create_key_instructions(&external_key_store(row), &key.key_id, &description);
    created(
        &SelfServiceKey {
            xks_key_id: key.key_id.clone(),
            key: KeyView::new(&key),
            custom_key_store_id,
            aws_cli: instructions.aws_cli,
            terraform: instructions.terraform,
        },
        format!("{domain}/{} ({name})", key.key_id),
    )
}

// Principals and tokens --------------------------------------------------------------------------

fn list_domain_principals(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    call.key_store.store().domain(call.domain())?;
    let principals = call.key_store.store().principals(Some(call.domain()))?;
    reply(
        StatusCode::OK,
        &PrincipalList {
            principals: principals.iter().map(PrincipalView::new).collect(),
        },
    )
}

fn list_principals(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let principals = call.key_store.store().principals(None)?;
    reply(
        StatusCode::OK,
        &PrincipalList {
            principals: principals.iter().map(PrincipalView::new).collect(),
        },
    )
}

/// Returns whether the caller may manage a principal with these roles. Operators may manage
/// any principal. Domain admins may manage a principal with at least one role, when every role
/// is a non-operator role in a domain that they administer.
fn may_manage(caller: &Principal, roles: &[RoleRow]) -> bool {
    caller.is_operator()
        || (!roles.is_empty()
            && roles.iter().all(|role| {
                role.role != Role::Operator.as_str()
                    && role
                        .domain
                        .as_deref()
                        .is_some_and(|domain| caller.has_role_in(domain, &[Role::DomainAdmin]))
            }))
}

/// Loads the principal named in the path, if the caller may act on it. The caller must be
/// allowed to manage it (see [`may_manage`]), or be that principal itself when `allow_self`.
///
/// NOTE: an unknown principal gets 404 and a known one that the caller may not manage gets 403,
/// so a domain admin, key creator or auditor can tell which principal names exist.
fn target_principal(call: &Call<'_>, allow_self: bool) -> Result<PrincipalRow, ApiError> {
    let name = call.param("principal");
    let row = match call.key_store.store().principal(name) {
        Ok(row) => row,
        Err(crate::keystore::store::StoreError::NotFound(_)) => {
            return Err(ApiError::not_found(format!("principal {name:?} not found")));
        }
        Err(error) => return Err(error.into()),
    };

    let is_self = call.principal.name.as_deref() == Some(name);
    if (allow_self && is_self) || may_manage(call.principal, &row.roles) {
        Ok(row)
    } else {
        Err(ApiError::forbidden(format!(
            "{} may not manage principal {name:?}: that needs the domain-admin role in every \
             domain where it has a role, or operator",
            call.principal.audit_name
        )))
    }
}

/// Maximum length of a principal name, in characters.
const MAX_PRINCIPAL_NAME_CHARS: usize = 64;

fn validate_principal_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_PRINCIPAL_NAME_CHARS
        && name.bytes().all(|byte| {
            byte.is_ascii_lowercase()
                || byte.is_ascii_digit()
                || matches!(byte, b'.' | b'_' | b'@' | b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "invalid principal name {name:?}: use 1 to {MAX_PRINCIPAL_NAME_CHARS} characters of \
             a-z, 0-9, '.', '_', '@' and '-'"
        )))
    }
}

/// Validates the requested roles and returns them as sorted rows without duplicates.
fn role_rows(requested: &[RoleView]) -> Result<Vec<RoleRow>, ApiError> {
    if requested.is_empty() {
        return Err(ApiError::invalid(
            "missing roles: a principal needs at least one, such as \
             {\"role\": \"key-creator\", \"domain\": \"acme\"}",
        ));
    }
    let mut roles = Vec::new();
    for view in requested {
        let role = Role::parse(&view.role).map_err(ApiError::invalid)?;
        match (role, &view.domain) {
            (Role::Operator, Some(_)) => {
                return Err(ApiError::invalid(
                    "the operator role applies to every domain, so give it without a domain",
                ));
            }
            (Role::Operator, None) => {}
            (_, None) => {
                return Err(ApiError::invalid(format!(
                    "missing domain for role {}: give the domain it applies to",
                    role.as_str()
                )));
            }
            (_, Some(domain)) => {
                crate::keystore::model::validate_domain_id(domain).map_err(ApiError::invalid)?;
            }
        }
        roles.push(RoleRow {
            role: role.as_str().to_owned(),
            domain: view.domain.clone(),
        });
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}

fn create_principal(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let request: CreatePrincipalRequest = call.json()?;
    validate_principal_name(&request.name)?;
    let roles = role_rows(&request.roles)?;
    if !may_manage(call.principal, &roles) {
        return Err(ApiError::forbidden(format!(
            "{} may not grant these roles: domain admins grant domain-admin, key-creator and \
             auditor in their own domains only; operators grant any role",
            call.principal.audit_name
        )));
    }
    let row = PrincipalRow {
        name: request.name,
        roles,
        created_at: unix_now(),
        created_by: call.principal.audit_name.clone(),
    };
    call.key_store.store_mut().create_principal(&row)?;
    let roles = row
        .roles
        .iter()
        .map(|role| match &role.domain {
            Some(domain) => format!("{}:{domain}", role.role),
            None => role.role.clone(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    created(&PrincipalView::new(&row), format!("{} ({roles})", row.name))
}

fn get_principal(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let row = target_principal(call, true)?;
    reply(StatusCode::OK, &PrincipalView::new(&row))
}

fn delete_principal(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let row = target_principal(call, false)?;
    call.key_store.store_mut().delete_principal(&row.name)?;
    reply(StatusCode::OK, &PrincipalView::new(&row))
}

fn list_tokens(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let row = target_principal(call, true)?;
    let now = unix_now();
    let tokens = call.key_store.store().tokens(&row.name)?;
    reply(
        StatusCode::OK,
        &TokenList {
            tokens: tokens
                .iter()
                .map(|token| TokenView::new(token, now))
                .collect(),
        },
    )
}

/// Maximum token lifetime in days.
const MAX_TOKEN_DAYS: u32 = 3650;

/// Maximum length of a token description, in characters.
const MAX_TOKEN_DESCRIPTION_CHARS: usize = 256;

fn create_token(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let request: CreateTokenRequest = call.json()?;
    let row = target_principal(call, true)?;

    let now = unix_now();
    let requested = match request.expires_in_days {
        None => None,
        Some(days @ 1..=MAX_TOKEN_DAYS) => Some(now + i64::from(days) * 86_400),
        Some(days) => {
            return Err(ApiError::invalid(format!(
                "expiresInDays {days} is out of range: give 1 to {MAX_TOKEN_DAYS}, or leave it \
                 out for no expiry"
            )));
        }
    };
    // A token never outlives the token that created it, so a stolen short-lived token cannot
    // mint lasting access.
    let expires_at = match (requested, call.principal.token_expires_at) {
        (Some(requested), Some(limit)) => Some(requested.min(limit)),
        (requested, limit) => requested.or(limit),
    };
    let description = request.description.unwrap_or_default();
    if description.chars().count() > MAX_TOKEN_DESCRIPTION_CHARS
        || description.chars().any(is_hidden_char)
    {
        return Err(ApiError::invalid(format!(
            "invalid description: use at most {MAX_TOKEN_DESCRIPTION_CHARS} characters and no \
             control or bidirectional formatting characters"
        )));
    }

    let new_token = token::generate()
        .map_err(|error| ApiError::internal("failed to generate random bytes", &error))?;
    let stored = TokenRow {
        id: new_token.id.clone(),
        principal: row.name,
        digest: new_token.digest.to_vec(),
        description,
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    call.key_store.store_mut().insert_token(&stored)?;
    created(
        &CreatedToken {
            info: TokenView::new(&stored, now),
            token: new_token.text.as_str().to_owned(),
        },
        format!("{}/{}", stored.principal, stored.id),
    )
}

fn revoke_token(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    let row = target_principal(call, true)?;
    let id = call.param("tokenId").to_owned();
    let now = unix_now();
    call.key_store
        .store_mut()
        .revoke_token(&row.name, &id, now)?;
    let token = call
        .key_store
        .store()
        .token(&id)?
        .ok_or_else(|| ApiError::not_found(format!("token {id:?} not found")))?;
    reply(StatusCode::OK, &TokenView::new(&token, now))
}

// Audit ----------------------------------------------------------------------------------------

/// Number of audit records returned when the query gives no `limit`.
const DEFAULT_AUDIT_LIMIT: usize = 100;

/// Maximum `limit` of audit records per request.
const MAX_AUDIT_LIMIT: usize = 1000;

/// Parses the query of an audit request, which may contain only `limit`.
fn audit_limit(query: &str) -> Result<usize, ApiError> {
    let mut limit = DEFAULT_AUDIT_LIMIT;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "limit" {
            return Err(ApiError::invalid(format!(
                "unknown query parameter {name:?}; only limit is accepted"
            )));
        }
        limit = value
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_AUDIT_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "invalid limit {value:?}: expected a whole number from 1 to {MAX_AUDIT_LIMIT}"
                ))
            })?;
    }
    Ok(limit)
}

fn audit_records(
    call: &Call<'_>,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Result<ApiResponse, ApiError> {
    let limit = audit_limit(call.query)?;
    let records = crate::audit::chain::recent_records(&call.settings.audit_dir, limit, keep)
        .map_err(|error| ApiError::internal("failed to read the audit log", &error))?;
    reply(StatusCode::OK, &AuditRecords { records })
}

fn domain_audit(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    call.key_store.store().domain(call.domain())?;
    let domain = call.domain().to_owned();
    audit_records(call, |record| is_domain_record(record, &domain))
}

/// Returns whether an audit record belongs to `domain`: an XKS record of the domain, or an
/// admin record of a route under `/v1/domains/{domain}` whose target starts with the domain.
///
/// Admin records of other routes are left out even when their target matches, because the
/// target of a principal route is a principal name, which may equal a domain id.
fn is_domain_record(record: &serde_json::Value, domain: &str) -> bool {
    if record["domain"] == domain {
        return true;
    }
    let Some(target) = record["target"].as_str() else {
        return false;
    };
    let in_domain = target == domain
        || target
            .strip_prefix(domain)
            .is_some_and(|rest| rest.starts_with('/'));
    in_domain
        && record["operation"].as_str().is_some_and(|operation| {
            ROUTES.iter().any(|route| {
                route.action == operation && route.path.starts_with("/v1/domains/{domain}")
            })
        })
}

fn all_audit(call: &mut Call<'_>) -> Result<ApiResponse, ApiError> {
    audit_records(call, |_| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_decodes_params_and_lists_methods() {
        let found = find(&Method::POST, "/v1/domains/acme/keys/k%2E1/rotate").expect("route");
        assert_eq!(found.route.operation_id, "rotateKey");
        assert_eq!(found.target(), "acme/k.1");
        assert_eq!(
            find(&Method::PATCH, "/v1/domains/acme/keys").err(),
            Some(NoRoute::Method {
                allow: "GET, HEAD, POST".to_owned()
            })
        );
        for path in [
            "/v1/domains/acme/nope",
            "/v1/domains//keys",
            "/v1/domains/%zz",
            "/v1/domains/%+1",
        ] {
            assert_eq!(
                find(&Method::GET, path).err(),
                Some(NoRoute::NotFound),
                "{path}"
            );
        }
    }

    #[test]
    fn every_route_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for route in ROUTES.iter() {
            assert!(
                seen.insert((route.method.clone(), route.path)),
                "{} {} appears twice",
                route.method,
                route.path
            );
        }
    }

    #[test]
    fn may_manage_only_own_domains() {
        let admin = Principal {
            audit_name: "token:a".to_owned(),
            name: Some("a".to_owned()),
            grants: vec![Grant {
                role: Role::DomainAdmin,
                domain: Some("acme".to_owned()),
            }],
            token_expires_at: None,
        };
        let role = |role: &str, domain: Option<&str>| RoleRow {
            role: role.to_owned(),
            domain: domain.map(str::to_owned),
        };
        assert!(may_manage(&admin, &[role("key-creator", Some("acme"))]));
        assert!(!may_manage(&admin, &[role("key-creator", Some("other"))]));
        assert!(!may_manage(
            &admin,
            &[
                role("auditor", Some("acme")),
                role("auditor", Some("other"))
            ]
        ));
        assert!(!may_manage(&admin, &[role("operator", None)]));
        assert!(!may_manage(&admin, &[]));
    }

    #[test]
    fn audit_limit_bounds() {
        assert_eq!(audit_limit(""), Ok(100));
        assert_eq!(audit_limit("limit=5"), Ok(5));
        assert_eq!(audit_limit("limit=1000"), Ok(1000));
        assert!(audit_limit("limit=0").is_err());
        assert!(audit_limit("limit=1001").is_err());
        assert!(audit_limit("limit=x").is_err());
        assert!(audit_limit("since=1").is_err());
    }

    #[test]
    fn domain_records_by_domain_or_target() {
        let xks = serde_json::json!({"operation": "Encrypt", "domain": "acme"});
        let key = serde_json::json!({"operation": "key create", "target": "acme/k1"});
        let domain = serde_json::json!({"operation": "domain disable", "target": "acme"});
        assert!(is_domain_record(&xks, "acme"));
        assert!(is_domain_record(&key, "acme"));
        assert!(is_domain_record(&domain, "acme"));
    }

    #[test]
    fn domain_records_exclude_others() {
        let other = serde_json::json!({"operation": "key create", "target": "acme-2/k1"});
        let principal = serde_json::json!({"operation": "principal delete", "target": "acme"});
        let token = serde_json::json!({"operation": "token revoke", "target": "acme/0123"});
        assert!(!is_domain_record(&other, "acme"));
        assert!(!is_domain_record(&principal, "acme"));
        assert!(!is_domain_record(&token, "acme"));
    }
}
