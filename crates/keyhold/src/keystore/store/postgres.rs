//! The PostgreSQL side of the store: connection settings, the schema and its migration.
//!
//! Several nodes share one database. The connection URL may list several hosts, and with
//! `target_session_attrs=read-write` the client skips standbys and connects to the writable
//! primary. The password never appears in the URL, so the URL can be logged and shown.

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postgres::config::SslMode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use zeroize::Zeroizing;

use super::{SCHEMA_VERSION, StoreError};

/// Environment variable that contains the PostgreSQL password. It takes precedence over
/// `password_file`.
pub const PASSWORD_ENV: &str = "KEYHOLD_POSTGRES_PASSWORD";

/// Key of the transaction-level advisory lock that serializes schema migrations, so nodes that
/// start at once migrate one after the other. The value is arbitrary but fixed: "KEYHOLD\0" read
/// as a big-endian integer.
const MIGRATION_LOCK: i64 = 0x4B45_5948_4F4C_4400;

/// Key of the session-level advisory lock held by the node that runs scheduled rotations and
/// deletions: "KEYHOLD\x01" read as a big-endian integer.
pub(super) const SCHEDULER_LOCK: i64 = 0x4B45_5948_4F4C_4401;

/// Channel on which every committed change sends a notification, so the other nodes reload at
/// once instead of at their next poll.
pub(super) const CHANGES_CHANNEL: &str = "keyhold_changes";

/// Time allowed to open a connection to each host when the URL sets no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection settings of a PostgreSQL store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresTarget {
    /// libpq-style URL or key-value string without a password, such as
    /// `postgresql://keyhold@h1:5432,h2:5432/keyhold?target_session_attrs=read-write`.
    pub url: String,
    /// File containing the password. Only its owner may read it.
    pub password_file: Option<PathBuf>,
    /// PEM file with the CA certificates that may sign the server's certificate. When set,
    /// every connection uses TLS and checks the certificate against the host name in the URL.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Display for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl PostgresTarget {
    /// Parses the URL and checks that it contains no password.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Config`] for a URL that does not parse or that contains a password.
    pub fn config(&self) -> Result<postgres::Config, StoreError> {
        let config: postgres::Config = self
            .url
            .parse()
            .map_err(|error| StoreError::Config(format!("invalid PostgreSQL url: {error}")))?;
        if config.get_password().is_some() {
            return Err(StoreError::Config(format!(
                "the PostgreSQL url contains a password; remove it and set {PASSWORD_ENV} or \
                 storage.password_file instead"
            )));
        }
        if config.get_dbname().is_none() {
            return Err(StoreError::Config(
                "the PostgreSQL url names no database; add one, as in postgresql://host/keyhold"
                    .to_owned(),
            ));
        }
        Ok(config)
    }

    /// Reads the password from the environment or from the password file.
    fn password(&self) -> Result<Option<Zeroizing<String>>, StoreError> {
        if let Some(password) = std::env::var_os(PASSWORD_ENV) {
            let password = password
                .into_string()
                .map_err(|_| StoreError::Config(format!("{PASSWORD_ENV} is not valid UTF-8")))?;
            return Ok(Some(Zeroizing::new(password)));
        }
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let unreadable = |error: std::io::Error| {
            StoreError::Config(format!(
                "cannot read PostgreSQL password file {}: {error}",
                path.display()
            ))
        };
        let mut file = std::fs::File::open(path).map_err(unreadable)?;
        let mode = file.metadata().map_err(unreadable)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(StoreError::Config(format!(
                "PostgreSQL password file {path} has mode {:o}, so other users can read it; run \
                 `chmod 600 {path}`",
                mode & 0o777,
                path = path.display()
            )));
        }
        let mut password = Zeroizing::new(String::new());
        file.read_to_string(&mut password).map_err(unreadable)?;
        let trimmed = Zeroizing::new(password.trim_end_matches(['\r', '\n']).to_owned());
        Ok(Some(trimmed))
    }
}

/// Opens a connection to the first host that accepts it, over TLS when a CA file is set.
pub(super) fn connect(target: &PostgresTarget) -> Result<postgres::Client, StoreError> {
    let mut config = target.config()?;
    if let Some(password) = target.password()? {
        config.password(password.as_bytes());
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("keyhold");
    }
    let Some(ca_file) = &target.ca_file else {
        if config.get_ssl_mode() == SslMode::Require {
            return Err(StoreError::Config(
                "the PostgreSQL url sets sslmode=require, but storage.ca_file is not set; set                  it to the CA file that signed the server certificate"
                    .to_owned(),
            ));
        }
        return Ok(config.connect(postgres::NoTls)?);
    };
    // With `prefer`, the default, a server or an attacker in between could turn TLS down.
    config.ssl_mode(SslMode::Require);
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls_config(ca_file)?);
    Ok(config.connect(tls)?)
}

/// Builds a TLS client configuration that trusts only the CA certificates in `ca_file`.
fn client_tls_config(ca_file: &Path) -> Result<rustls::ClientConfig, StoreError> {
    let unusable = |message: String| {
        StoreError::Config(format!(
            "cannot use PostgreSQL CA file {}: {message}",
            ca_file.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    let certificates =
        CertificateDer::pem_file_iter(ca_file).map_err(|error| unusable(error.to_string()))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|error| unusable(error.to_string()))?;
        roots
            .add(certificate)
            .map_err(|error| unusable(error.to_string()))?;
    }
    if roots.is_empty() {
        return Err(unusable("it contains no certificate".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| unusable(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Creates or upgrades the schema under an advisory lock, so nodes that start together do
/// not race. Every step is one transaction: a node that dies midway leaves the old schema.
pub(super) fn migrate(client: &mut postgres::Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    // Held until the transaction ends; a second node waits here, then finds the schema done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    let has_meta: bool = tx
        .query_one("SELECT to_regclass('meta') IS NOT NULL", &[])?
        .try_get(0)?;
    if has_meta {
        let found: i64 = tx
            .query_one("SELECT schema_version FROM meta WHERE id = 1", &[])?
            .try_get(0)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found });
        }
        if found < 2 {
            tx.batch_execute(SCHEMA_V2)?;
        }
        if found < 3 {
            tx.batch_execute(SCHEMA_V3)?;
        }
    } else {
        tx.batch_execute(SCHEMA_V1)?;
        tx.batch_execute(SCHEMA_V2)?;
        tx.batch_execute(SCHEMA_V3)?;
    }
    tx.execute(
        "UPDATE meta SET schema_version = $1 WHERE id = 1 AND schema_version < $1",
        &[&SCHEMA_VERSION],
    )?;
    tx.commit()?;
    Ok(())
}

/// Version 1: the same tables as SQLite's version 1, plus the audit tables that SQLite creates
/// on first use. Integers are `BIGINT` because the store sends every integer as `i64`.
const SCHEMA_V1: &str = "
CREATE TABLE meta (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    schema_version BIGINT NOT NULL,
    revision BIGINT NOT NULL
);
INSERT INTO meta (id, schema_version, revision) VALUES (1, 1, 0);
CREATE TABLE domains (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    uri_prefix TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('ENABLED', 'DISABLED')),
    quota_rps BIGINT CHECK (quota_rps > 0),
    policy TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE credentials (
    access_key_id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES domains (id),
    wrapped_secret BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX credentials_by_domain ON credentials (domain_id);
CREATE TABLE keys (
    domain_id TEXT NOT NULL REFERENCES domains (id),
    key_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    usage_encrypt BIGINT NOT NULL,
    usage_decrypt BIGINT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('ENABLED', 'DISABLED', 'PENDING_DELETION', 'DESTROYED')),
    status_before_deletion TEXT CHECK (status_before_deletion IN ('ENABLED', 'DISABLED')),
    protection TEXT NOT NULL CHECK (protection IN ('software', 'hsm')),
    primary_version BIGINT NOT NULL,
    bound_kms_key_arn TEXT,
    learn_binding BIGINT NOT NULL DEFAULT 0,
    rotation_period_secs BIGINT CHECK (rotation_period_secs > 0),
    deletion_at BIGINT,
    policy TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (domain_id, key_id)
);
CREATE TABLE key_versions (
    domain_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('ENABLED', 'DISABLED', 'DESTROYED')),
    wrapped_material BYTEA,
    hsm_label TEXT,
    created_at BIGINT NOT NULL,
    CHECK (CASE WHEN state = 'DESTROYED' THEN wrapped_material IS NULL
           ELSE (wrapped_material IS NULL) <> (hsm_label IS NULL) END),
    PRIMARY KEY (domain_id, key_id, version),
    FOREIGN KEY (domain_id, key_id) REFERENCES keys (domain_id, key_id)
);
CREATE TABLE system_keys (
    name TEXT PRIMARY KEY,
    wrapped_material BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE audit_heads (
    node_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    recorded_at BIGINT NOT NULL
);
CREATE TABLE admin_events (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    time TEXT NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE TABLE audit_event_cursors (
    node_id TEXT PRIMARY KEY,
    event_id BIGINT NOT NULL
);
";

/// Version 2: principals, roles, admin tokens and external key stores, as in SQLite.
const SCHEMA_V2: &str = "
CREATE TABLE principals (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE principal_roles (
    principal TEXT NOT NULL REFERENCES principals (name) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('operator', 'domain-admin', 'key-creator', 'auditor')),
    domain_id TEXT NOT NULL DEFAULT '',
    CHECK ((role = 'operator') = (domain_id = '')),
    PRIMARY KEY (principal, role, domain_id)
);
CREATE INDEX principal_roles_by_domain ON principal_roles (domain_id);
CREATE TABLE admin_tokens (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL REFERENCES principals (name) ON DELETE CASCADE,
    digest BYTEA NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX admin_tokens_by_principal ON admin_tokens (principal);
CREATE TABLE external_key_stores (
    domain_id TEXT NOT NULL REFERENCES domains (id),
    name TEXT NOT NULL,
    custom_key_store_id TEXT NOT NULL UNIQUE,
    region TEXT NOT NULL,
    account_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (domain_id, name)
);
";

/// Version 3: node heartbeats, as in SQLite. Times are Unix milliseconds from the database
/// clock.
const SCHEMA_V3: &str = "
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    health_status TEXT NOT NULL CHECK (health_status IN ('ACTIVE', 'DEGRADED', 'UNAVAILABLE')),
    heartbeat_at BIGINT NOT NULL
);
";
