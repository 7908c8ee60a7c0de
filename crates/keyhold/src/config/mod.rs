//! `keyhold.toml`: the file as written ([`ConfigFile`]) and the validated [`Settings`] built from
//! it, with every path resolved against the data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::keystore::store::{PostgresTarget, StorageTarget};
use crate::protect::LockMemory;

/// Name of the configuration file inside the data directory.
pub const CONFIG_FILE_NAME: &str = "keyhold.toml";

/// Default limit of connections served at once. Keep the process's open-file limit above it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Default request time budget in milliseconds, below the 250 ms AWS KMS waits.
pub const DEFAULT_TIME_BUDGET_MS: u64 = 200;

/// Default time between runs of scheduled rotations and deletions, in seconds.
pub const DEFAULT_SCHEDULER_INTERVAL_SECS: u64 = 60;

/// Default XKS listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// The configuration file as written. Unknown keys are rejected, so a typo is an error rather
/// than a silently ignored setting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerSection,
    /// `[tls]`.
    pub tls: TlsSection,
    /// `[root_of_trust]`.
    pub root_of_trust: RootOfTrustSection,
    /// `[storage]`.
    pub storage: StorageSection,
    /// `[log]`.
    #[serde(default)]
    pub log: LogSection,
    /// `[audit]`.
    #[serde(default)]
    pub audit: AuditSection,
    /// `[admin]`: the admin listener, off when absent.
    pub admin: Option<AdminSection>,
    /// `[security]`.
    #[serde(default)]
    pub security: SecuritySection,
}

/// `[security]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    /// Whether `serve` locks its memory against swapping.
    #[serde(default)]
    pub lock_memory: LockMemory,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Listen address of the admin listener.
    pub listen: SocketAddr,
}

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Directory of the audit files.
    #[serde(default = "default_audit_dir")]
    pub dir: PathBuf,
    /// Size in MiB at which the current file is rotated.
    #[serde(default = "default_audit_max_file_mib")]
    pub max_file_mib: u64,
    /// Whether the current file is also rotated when the UTC day changes.
    #[serde(default = "default_true")]
    pub rotate_daily: bool,
    /// `true` keeps serving when records cannot be written; the default rejects crypto requests.
    #[serde(default)]
    pub fail_open: bool,
    /// Records queued for the writer before requests see the queue as full.
    #[serde(default = "default_audit_queue")]
    pub queue_capacity: usize,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            dir: default_audit_dir(),
            max_file_mib: default_audit_max_file_mib(),
            rotate_daily: true,
            fail_open: false,
            queue_capacity: default_audit_queue(),
        }
    }
}

fn default_audit_dir() -> PathBuf {
    PathBuf::from("audit")
}

fn default_audit_max_file_mib() -> u64 {
    100
}

fn default_true() -> bool {
    true
}

fn default_audit_queue() -> usize {
    65_536
}

/// `[server]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// XKS listen address; default `127.0.0.1:8443`.
    pub listen: Option<SocketAddr>,
    /// Node id in health reports; default the host name.
    pub node_id: Option<String>,
    /// SigV4 regions accepted in the credential scope; empty accepts any region.
    #[serde(default)]
    pub allowed_regions: Vec<String>,
    /// Seconds between runs of scheduled rotations and deletions; default 60.
    pub scheduler_interval_secs: Option<u64>,
    /// Maximum time in milliseconds a request may wait for the HSM; default 200, below the
    /// 250 ms after which AWS KMS gives up.
    pub time_budget_ms: Option<u64>,
    /// Maximum number of connections served at once; default 4096.
    pub max_connections: Option<usize>,
    /// Seconds a client may take to send a request body after its headers; default 10.
    pub body_read_timeout_secs: Option<u64>,
    /// Maximum number of XKS requests in progress at once; default 1024.
    pub max_in_flight: Option<usize>,
    /// Quota in requests per second of domains that set none; absent means no quota.
    pub default_quota_rps: Option<u32>,
    /// Base URL at which AWS KMS reaches this service, such as `https://xks.example.com`; used
    /// in the AWS commands the admin API writes. Default `https://` and the listen address.
    pub public_endpoint: Option<String>,
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key.
    pub private_key: PathBuf,
    /// `[tls.client_auth]`: mutual TLS, off when absent.
    pub client_auth: Option<ClientAuthSection>,
}

/// `[tls.client_auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthSection {
    /// PEM file of CA certificates that client certificates must chain to.
    pub ca: PathBuf,
    /// Accepted client names, matched against the subject CN and the DNS SANs.
    pub allowed_subjects: Vec<String>,
}

/// `[root_of_trust]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase", deny_unknown_fields)]
pub enum RootOfTrustSection {
    /// A root-key file.
    File {
        /// The 32-byte root-key file.
        path: PathBuf,
    },
    /// A non-extractable AES-256 key inside an HSM, reached through PKCS#11.
    Pkcs11(Pkcs11Section),
}

/// `[root_of_trust]` with `provider = "pkcs11"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Section {
    /// Path of the PKCS#11 module.
    pub module: PathBuf,
    /// Label of the token.
    pub token_label: String,
    /// Environment variable that contains the user PIN.
    pub pin_env: Option<String>,
    /// File that contains the user PIN, readable by its owner only.
    pub pin_file: Option<PathBuf>,
    /// Label of the root key.
    #[serde(default = "default_root_key_label")]
    pub root_key_label: String,
    /// Sessions in the pool.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// Maximum wait for a free session, in milliseconds.
    #[serde(default = "default_session_wait_ms")]
    pub session_wait_ms: u64,
    /// Make PKCS#11 calls on the thread that serves the request instead of handing them to
    /// the blocking thread pool. Only for a module in this process whose calls take
    /// microseconds, such as SoftHSMv2, because a call that hangs would stall every request
    /// that thread serves and the time budget cannot interrupt it.
    #[serde(default)]
    pub inline_calls: bool,
}

/// Where the root key lives, validated.
#[derive(Debug, Clone)]
pub enum RootOfTrustSettings {
    /// A root-key file.
    File(PathBuf),
    /// An HSM.
    Pkcs11(Pkcs11Section),
}

/// Default label of the root key in an HSM.
pub const DEFAULT_ROOT_KEY_LABEL: &str = "keyhold-root";

fn default_root_key_label() -> String {
    DEFAULT_ROOT_KEY_LABEL.to_owned()
}

fn default_sessions() -> usize {
    4
}

fn default_session_wait_ms() -> u64 {
    100
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum StorageSection {
    /// The embedded SQLite database.
    Sqlite {
        /// Database file.
        path: PathBuf,
    },
    /// A PostgreSQL database that several nodes share.
    Postgres {
        /// Connection URL without a password, for example
        /// `postgresql://keyhold@h1:5432,h2:5432/keyhold?target_session_attrs=read-write`.
        url: String,
        /// File containing the password, readable by its owner only. The environment variable
        /// `KEYHOLD_POSTGRES_PASSWORD` takes precedence.
        password_file: Option<PathBuf>,
        /// PEM file with the CA certificates that may sign the server certificate. When set,
        /// connections use TLS and check the server's name. Without it they are not encrypted.
        ca_file: Option<PathBuf>,
    },
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `keyhold=debug`; `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// Validated settings with absolute paths.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// XKS listen address.
    pub listen: SocketAddr,
    /// Node id.
    pub node_id: String,
    /// Accepted SigV4 regions; empty accepts any.
    pub allowed_regions: Vec<String>,
    /// Time between runs of scheduled rotations and deletions.
    pub scheduler_interval: std::time::Duration,
    /// Maximum time a request may wait for the HSM.
    pub time_budget: std::time::Duration,
    /// Maximum number of connections served at once.
    pub max_connections: usize,
    /// Maximum time a client may take to send a request body after its headers.
    pub body_read_timeout: std::time::Duration,
    /// Maximum number of XKS requests in progress at once.
    pub max_in_flight: usize,
    /// Quota of domains that set none.
    pub default_quota_rps: Option<u32>,
    /// Admin listener address; `None` turns it off.
    pub admin_listen: Option<SocketAddr>,
    /// Base URL at which AWS KMS reaches the XKS listener.
    pub xks_endpoint: String,
    /// Whether `serve` locks its memory.
    pub lock_memory: LockMemory,
    /// The audit log.
    pub audit: AuditSection,
    /// Server certificate chain.
    pub tls_certificate: PathBuf,
    /// Server private key.
    pub tls_private_key: PathBuf,
    /// Mutual TLS: CA file and accepted names.
    pub client_auth: Option<(PathBuf, Vec<String>)>,
    /// Root of trust.
    pub root_of_trust: RootOfTrustSettings,
    /// The store: a SQLite file or a PostgreSQL database.
    pub storage: StorageTarget,
    /// Log settings.
    pub log: LogSection,
}

/// Failure to read or validate the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "cannot read {path}: {source}; run `keyhold init --data-dir {dir}` to create a data directory",
        dir = .path.parent().map(Path::display).map(|d| d.to_string()).unwrap_or_default()
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value breaks a rule.
    #[error("invalid {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Settings {
    /// Reads `keyhold.toml` from the data directory and validates it.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError`] naming the file and the problem.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        let path = data_dir.join(CONFIG_FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(data_dir, &text)
    }

    /// Parses and validates the text of `keyhold.toml` as [`Settings::load`] does, without
    /// reading the file. Paths resolve against `data_dir`, and errors name the file in it.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::Parse`] or [`ConfigError::Invalid`] naming the problem.
    pub fn parse(data_dir: &Path, text: &str) -> Result<Self, ConfigError> {
        let path = data_dir.join(CONFIG_FILE_NAME);
        let file: ConfigFile = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.clone(),
            message: error.to_string(),
        })?;
        Self::from_file(data_dir, file).map_err(|message| ConfigError::Invalid { path, message })
    }

    fn from_file(data_dir: &Path, file: ConfigFile) -> Result<Self, String> {
        check_log_level(&file.log.level)?;
        let resolve = |relative: &Path| data_dir.join(relative);
        let listen = match file.server.listen {
            Some(listen) => listen,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| "bad default listen address".to_owned())?,
        };
        let client_auth = match file.tls.client_auth {
            Some(auth) if auth.allowed_subjects.is_empty() => {
                return Err(
                    "tls.client_auth.allowed_subjects must name at least one client, \
                     such as \"cks.kms.us-east-1.amazonaws.com\""
                        .to_owned(),
                );
            }
            Some(auth) => Some((resolve(&auth.ca), auth.allowed_subjects)),
            None => None,
        };
        let root_of_trust = match file.root_of_trust {
            RootOfTrustSection::File { path } => RootOfTrustSettings::File(resolve(&path)),
            RootOfTrustSection::Pkcs11(mut section) => {
                if section.pin_env.is_some() == section.pin_file.is_some() {
                    return Err(
                        "root_of_trust: set exactly one of pin_env and pin_file; the PIN \
                         itself never goes in this file"
                            .to_owned(),
                    );
                }
                if section.sessions == 0 {
                    return Err("root_of_trust.sessions must be at least 1".to_owned());
                }
                section.pin_file = section.pin_file.map(|path| resolve(&path));
                RootOfTrustSettings::Pkcs11(section)
            }
        };
        let storage = match file.storage {
            StorageSection::Sqlite { path } => StorageTarget::Sqlite(resolve(&path)),
            StorageSection::Postgres {
                url,
                password_file,
                ca_file,
            } => {
                let target = PostgresTarget {
                    url,
                    password_file: password_file.map(|path| resolve(&path)),
                    ca_file: ca_file.map(|path| resolve(&path)),
                };
                target
                    .config()
                    .map_err(|error| format!("storage.url: {error}"))?;
                StorageTarget::Postgres(target)
            }
        };
        Ok(Self {
            data_dir: data_dir.to_owned(),
            listen,
            node_id: file.server.node_id.unwrap_or_else(host_name),
            allowed_regions: file.server.allowed_regions,
            time_budget: std::time::Duration::from_millis(match file.server.time_budget_ms {
                Some(0) => return Err("server.time_budget_ms must be at least 1".to_owned()),
                Some(ms) if ms > 250 => {
                    return Err(format!(
                        "server.time_budget_ms = {ms} is above the 250 ms after which AWS KMS gives up; use at most 250"
                    ));
                }
                Some(ms) => ms,
                None => DEFAULT_TIME_BUDGET_MS,
            }),
            body_read_timeout: std::time::Duration::from_secs(
                match file.server.body_read_timeout_secs {
                    Some(0) => {
                        return Err("server.body_read_timeout_secs must be at least 1".to_owned());
                    }
                    Some(secs) => secs,
                    None => 10,
                },
            ),
            max_in_flight: match file.server.max_in_flight {
                Some(0) => return Err("server.max_in_flight must be at least 1".to_owned()),
                Some(limit) => limit,
                None => 1024,
            },
            default_quota_rps: match file.server.default_quota_rps {
                Some(0) => {
                    return Err(
                        "server.default_quota_rps must be at least 1; omit it for no \
                         quota"
                            .to_owned(),
                    );
                }
                quota => quota,
            },
            admin_listen: file.admin.map(|admin| admin.listen),
            xks_endpoint: match file.server.public_endpoint {
                Some(url) => validate_public_endpoint(&url)?,
                None => format!("https://{listen}"),
            },
            lock_memory: file.security.lock_memory,
            max_connections: match file.server.max_connections {
                Some(0) => return Err("server.max_connections must be at least 1".to_owned()),
                Some(limit) => limit,
                None => DEFAULT_MAX_CONNECTIONS,
            },
            audit: AuditSection {
                max_file_mib: match file.audit.max_file_mib {
                    0 => return Err("audit.max_file_mib must be at least 1".to_owned()),
                    mib => mib,
                },
                dir: resolve(&file.audit.dir),
                ..file.audit
            },
            scheduler_interval: std::time::Duration::from_secs(
                match file.server.scheduler_interval_secs {
                    Some(0) => {
                        return Err("server.scheduler_interval_secs must be at least 1".to_owned());
                    }
                    Some(secs) => secs,
                    None => DEFAULT_SCHEDULER_INTERVAL_SECS,
                },
            ),
            tls_certificate: resolve(&file.tls.certificate),
            tls_private_key: resolve(&file.tls.private_key),
            client_auth,
            root_of_trust,
            storage,
            log: file.log,
        })
    }
}

/// Checks a log filter: a level name alone, or `tracing` directives with `=`. A bare word that
/// is not a level would be taken as a target name and silence every log line.
fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let valid = level.split(',').all(|directive| {
        let directive = directive.trim();
        directive.contains('=') || LEVELS.contains(&directive.to_ascii_lowercase().as_str())
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid log.level {level:?}: use trace, debug, info, warn, error or off, or directives such as \"keyhold=debug\""
        ))
    }
}

/// The host name from the kernel, or `keyhold` when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "keyhold".to_owned())
}

/// The `[root_of_trust]` section of the template for an HSM.
///
/// Values are written as TOML basic strings, so quotes and backslashes in them are escaped.
pub fn pkcs11_root_section(
    module: &Path,
    token_label: &str,
    pin_source: &PinSource,
    root_key_label: &str,
) -> String {
    let quote = |text: &str| toml::Value::String(text.to_owned()).to_string();
    let pin = match pin_source {
        PinSource::Env(variable) => format!("pin_env = {}", quote(variable)),
        PinSource::File(path) => format!("pin_file = {}", quote(&path.to_string_lossy())),
    };
    format!(
        "[root_of_trust]\n\
         # The root key is a non-extractable AES-256 key inside an HSM, used through PKCS#11. It\n\
         # wraps all key material and SigV4 secrets at rest and never leaves the HSM.\n\
         provider = \"pkcs11\"\n\
         module = {module}\n\
         token_label = {token}\n\
         # The user PIN comes from an environment variable or a file readable by its owner only.\n\
         {pin}\n\
         root_key_label = {root}\n\
         # PKCS#11 sessions in the pool, and the longest wait for a free one before a request\n\
         # fails with DependencyTimeoutException.\n\
         sessions = 4\n\
         session_wait_ms = 100\n\
         # true makes PKCS#11 calls on the thread serving the request, saving two thread\n\
         # hand-offs per request. Only for a module in this process whose calls take\n\
         # microseconds, such as SoftHSMv2, never for a network HSM.\n\
         inline_calls = false\n",
        module = quote(&module.to_string_lossy()),
        token = quote(token_label),
        root = quote(root_key_label),
    )
}

/// Where the HSM user PIN is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// An environment variable.
    Env(String),
    /// A file.
    File(PathBuf),
}

/// The `[root_of_trust]` section of [`TEMPLATE`], which a PKCS#11 section replaces.
pub const FILE_ROOT_SECTION: &str = "[root_of_trust]
# The root key that wraps all key material and SigV4 secrets at rest.
provider = \"file\"
path = \"root.key\"
";

/// The commented configuration file `keyhold init` writes.
pub const TEMPLATE: &str = r#"# Keyhold configuration. Relative paths are resolved against this file's directory.

[server]
# Address of the XKS listener (HTTPS). AWS KMS reaches it on port 443 through your endpoint.
listen = "127.0.0.1:8443"
# Id of this node in XKS health reports. Defaults to the host name.
# node_id = "keyhold-1"
# SigV4 regions accepted in the credential scope. Empty accepts any region.
allowed_regions = []
# Seconds between runs of automatic rotations and scheduled deletions.
scheduler_interval_secs = 60
# Longest time in milliseconds a request waits for the HSM before it gets
# DependencyTimeoutException. AWS KMS gives up after 250 ms.
time_budget_ms = 200
# Most connections served at once; more clients wait. Keep `ulimit -n` above this number.
max_connections = 4096
# Seconds a client may take to send a request body after its headers.
body_read_timeout_secs = 10
# Most XKS requests in progress at once; more get ThrottlingException (HTTP 429).
max_in_flight = 1024
# Quota in requests per second for domains created without --quota. AWS KMS sends at most
# 1,800 requests per second to one external key store by default.
# default_quota_rps = 1800
# Base URL at which AWS KMS reaches this service, used in the AWS commands that the admin API
# writes for customers. Defaults to https:// and the listen address.
# public_endpoint = "https://xks.example.com"

[tls]
# Server certificate chain (PEM, leaf first) and private key. `keyhold init` made a certificate
# for localhost and 127.0.0.1 signed by tls/ca.pem; replace both with a certificate for your
# public XKS endpoint name from a CA that AWS KMS trusts.
certificate = "tls/server.pem"
private_key = "tls/server.key"

# Mutual TLS. AWS KMS presents a client certificate for cks.kms.<region>.amazonaws.com.
# Clients without a certificate from this CA and one of these names fail the handshake.
# [tls.client_auth]
# ca = "tls/kms-client-ca.pem"
# allowed_subjects = ["cks.kms.us-east-1.amazonaws.com"]

[root_of_trust]
# The root key that wraps all key material and SigV4 secrets at rest.
provider = "file"
path = "root.key"

[storage]
# "sqlite": one node, the database file in the data directory.
# "postgres": several nodes share one database, for example
#   backend = "postgres"
#   url = "postgresql://keyhold@db1:5432,db2:5432/keyhold?target_session_attrs=read-write"
#   password_file = "/etc/keyhold/postgres-password"
#   ca_file = "/etc/keyhold/postgres-ca.pem"
# The password comes from KEYHOLD_POSTGRES_PASSWORD or from password_file (mode 600), never
# from the url. With ca_file, connections use TLS and check the server certificate against
# the host name in the url; without it they are not encrypted.
backend = "sqlite"
path = "keyhold.db"

[audit]
# One hash-chained JSON line per XKS request. `keyhold audit verify` checks the files.
dir = "audit"
# The current file is rotated at this size and, with rotate_daily, when the UTC day changes.
max_file_mib = 100
rotate_daily = true
# false (the default): crypto requests fail with InternalException while records cannot be
# written. true: requests go on and lost records are counted.
fail_open = false

# Admin listener (HTTPS, same certificate): the admin REST API under /v1 with bearer tokens
# (`keyhold init` printed the first operator token), /openapi.json, /metrics for operators, and
# /health and /ping. Remove this section to turn it off.
[admin]
listen = "127.0.0.1:9443"

[security]
# Lock the server's memory against swapping: "auto" (when the process may lock unlimited
# memory, for example as root), "required" (refuse to start otherwise) or "off".
lock_memory = "auto"

[log]
# "text" or "json". The level is a tracing filter; RUST_LOG overrides it.
format = "text"
level = "info"
"#;

/// Checks `server.public_endpoint`: `https://` and a host with an optional port, nothing more,
/// since AWS KMS takes the path separately.
fn validate_public_endpoint(url: &str) -> Result<String, String> {
    let host = url.strip_prefix("https://").unwrap_or("");
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if valid {
        Ok(url.to_owned())
    } else {
        Err(format!(
            "server.public_endpoint = {url:?} must be https:// and a host name with an optional \
             port, without a path, such as \"https://xks.example.com\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_to_defaults() {
        let file: ConfigFile = toml::from_str(TEMPLATE).expect("template parses");
        let settings = Settings::from_file(Path::new("/data"), file).expect("valid");
        assert_eq!(settings.listen.to_string(), DEFAULT_LISTEN);
        assert!(matches!(
            &settings.root_of_trust,
            RootOfTrustSettings::File(path) if path == Path::new("/data/root.key")
        ));
        assert_eq!(
            settings.storage,
            StorageTarget::Sqlite(PathBuf::from("/data/keyhold.db"))
        );
        assert!(settings.client_auth.is_none());
    }

    #[test]
    fn pkcs11_needs_exactly_one_pin_source() {
        let section = |pins: &str| {
            TEMPLATE.replace(
                "provider = \"file\"\npath = \"root.key\"",
                &format!("provider = \"pkcs11\"\nmodule = \"/m.so\"\ntoken_label = \"t\"\n{pins}"),
            )
        };
        let parse = |text: String| {
            let file: ConfigFile = toml::from_str(&text).expect("parses");
            Settings::from_file(Path::new("/data"), file)
        };
        assert!(parse(section("")).is_err());
        assert!(parse(section("pin_env = \"P\"\npin_file = \"p\"")).is_err());
        let settings = parse(section("pin_file = \"hsm.pin\"")).expect("valid");
        let RootOfTrustSettings::Pkcs11(pkcs11) = settings.root_of_trust else {
            panic!("expected pkcs11");
        };
        assert_eq!(pkcs11.pin_file.as_deref(), Some(Path::new("/data/hsm.pin")));
        assert_eq!(pkcs11.root_key_label, DEFAULT_ROOT_KEY_LABEL);
    }

    #[test]
    fn template_contains_file_root_section() {
        assert!(TEMPLATE.contains(FILE_ROOT_SECTION));
        let section = pkcs11_root_section(
            Path::new("/usr/lib/softhsm/libsofthsm2.so"),
            "tok \"1\"",
            &PinSource::Env("PIN".to_owned()),
            "root",
        );
        let file: ConfigFile =
            toml::from_str(&TEMPLATE.replace(FILE_ROOT_SECTION, &section)).expect("parses");
        let RootOfTrustSection::Pkcs11(pkcs11) = file.root_of_trust else {
            panic!("expected pkcs11");
        };
        assert_eq!(pkcs11.token_label, "tok \"1\"");
        assert_eq!(pkcs11.pin_env.as_deref(), Some("PIN"));
    }

    #[test]
    fn wrong_values_are_rejected() {
        let settings_for = |from: &str, to: &str| {
            assert!(TEMPLATE.contains(from), "template lacks {from:?}");
            let file: ConfigFile = toml::from_str(&TEMPLATE.replace(from, to)).expect("parses");
            Settings::from_file(Path::new("/data"), file)
        };
        for (from, to, expected) in [
            ("level = \"info\"", "level = \"loud\"", "invalid log.level"),
            ("time_budget_ms = 200", "time_budget_ms = 300", "250 ms"),
            ("max_file_mib = 100", "max_file_mib = 0", "max_file_mib"),
        ] {
            let error = settings_for(from, to).expect_err(to);
            assert!(error.contains(expected), "{to}: {error}");
        }
        assert!(settings_for("level = \"info\"", "level = \"keyhold=debug,warn\"").is_ok());
    }

    #[test]
    fn unknown_key_is_rejected() {
        let text = TEMPLATE.replace("[log]", "[log]\nlevle = \"debug\"");
        let error = toml::from_str::<ConfigFile>(&text).expect_err("typo must fail");
        assert!(error.to_string().contains("levle"), "{error}");
    }

    #[test]
    fn client_auth_needs_subjects() {
        let text = TEMPLATE.replace(
            "# [tls.client_auth]\n# ca = \"tls/kms-client-ca.pem\"\n# allowed_subjects = [\"cks.kms.us-east-1.amazonaws.com\"]",
            "[tls.client_auth]\nca = \"ca.pem\"\nallowed_subjects = []",
        );
        let file: ConfigFile = toml::from_str(&text).expect("parses");
        assert!(Settings::from_file(Path::new("/data"), file).is_err());
    }
}
