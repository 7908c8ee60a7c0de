//! The store: the durable source of truth for domains, credentials and keys, kept in the
//! embedded SQLite database or in a PostgreSQL database that several nodes share.
//!
//! Every change runs in one transaction that also increments `meta.revision`, so a running
//! server polling that number notices changes made by the CLI or by another node. SQLite runs
//! in WAL mode with `synchronous = FULL`, so a change is on disk before the command that made it
//! returns. PostgreSQL gives the same guarantee with its default `synchronous_commit = on`.
//! Secrets arrive here already wrapped; this module never sees them in clear.

mod audit_head;
pub use audit_head::AdminEvent;
pub mod backup;
mod control;
pub use control::{KeyStoreRow, PrincipalRow, RoleRow, TokenRow};
mod lifecycle;
mod nodes;
pub use nodes::NodeRow;
mod postgres;
pub use postgres::{PASSWORD_ENV, PostgresTarget};
mod sql;

use std::path::Path;
use std::time::Duration;

use sql::{Backend, Connection, Isolation, PostgresConnection, Row, Sql, Transaction, params};

use super::model::{
    CredentialInfo, Domain, DomainStatus, KeyInfo, KeyStatus, KeyUsage, MAX_ACTIVE_CREDENTIALS,
    Protection, StoredMaterial, StoredVersion, VersionState,
};

/// Schema version this build writes and reads.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA_V1: &str = "
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    revision INTEGER NOT NULL
);
INSERT INTO meta (id, schema_version, revision) VALUES (1, 1, 0);
CREATE TABLE domains (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    uri_prefix TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('ENABLED', 'DISABLED')),
    quota_rps INTEGER CHECK (quota_rps > 0),
    policy TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE credentials (
    access_key_id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES domains (id),
    wrapped_secret BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX credentials_by_domain ON credentials (domain_id);
CREATE TABLE keys (
    domain_id TEXT NOT NULL REFERENCES domains (id),
    key_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    usage_encrypt INTEGER NOT NULL,
    usage_decrypt INTEGER NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('ENABLED', 'DISABLED', 'PENDING_DELETION', 'DESTROYED')),
    status_before_deletion TEXT CHECK (status_before_deletion IN ('ENABLED', 'DISABLED')),
    protection TEXT NOT NULL CHECK (protection IN ('software', 'hsm')),
    primary_version INTEGER NOT NULL,
    bound_kms_key_arn TEXT,
    learn_binding INTEGER NOT NULL DEFAULT 0,
    rotation_period_secs INTEGER CHECK (rotation_period_secs > 0),
    deletion_at INTEGER,
    policy TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (domain_id, key_id)
);
CREATE TABLE key_versions (
    domain_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('ENABLED', 'DISABLED', 'DESTROYED')),
    wrapped_material BLOB,
    hsm_label TEXT,
    created_at INTEGER NOT NULL,
    CHECK (CASE WHEN state = 'DESTROYED' THEN wrapped_material IS NULL
           ELSE (wrapped_material IS NULL) <> (hsm_label IS NULL) END),
    PRIMARY KEY (domain_id, key_id, version),
    FOREIGN KEY (domain_id, key_id) REFERENCES keys (domain_id, key_id)
);
CREATE TABLE system_keys (
    name TEXT PRIMARY KEY,
    wrapped_material BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
";

/// Failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL reported an error, or the connection to it failed.
    #[error("PostgreSQL error: {0}")]
    Postgres(#[from] ::postgres::Error),
    /// The PostgreSQL settings are unusable, such as a password that cannot be read.
    #[error("{0}")]
    Config(String),
    /// The requested object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// An object with that id exists already, or its id was used before.
    #[error("{0}")]
    AlreadyExists(String),
    /// The change breaks a rule, such as the limit of two active credentials.
    #[error("{0}")]
    Rejected(String),
    /// The database was written by a newer Keyhold.
    #[error(
        "database schema version {found} is newer than this Keyhold supports ({SCHEMA_VERSION}); upgrade Keyhold"
    )]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
    },
    /// A stored value cannot be read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Everything a server needs to build its in-memory snapshot.
#[derive(Debug, Default)]
pub struct Dataset {
    /// Revision the data was read at.
    pub revision: i64,
    /// All domains.
    pub domains: Vec<Domain>,
    /// Active credentials with their wrapped secrets.
    pub credentials: Vec<(CredentialInfo, Vec<u8>)>,
    /// All keys with their versions.
    pub keys: Vec<(KeyInfo, Vec<StoredVersion>)>,
    /// System keys by name.
    pub system_keys: Vec<(String, Vec<u8>)>,
}

/// Location of the store, as configured in `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageTarget {
    /// The embedded SQLite database file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database shared by several nodes.
    Postgres(PostgresTarget),
}

impl std::fmt::Display for StorageTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "database {}", path.display()),
            Self::Postgres(target) => write!(f, "PostgreSQL database {target}"),
        }
    }
}

/// A connection to the store, on SQLite or PostgreSQL.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens the SQLite database at `path`, creating and migrating it when needed.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] when the file cannot be opened or migrated, and
    /// [`StoreError::SchemaTooNew`] when a newer Keyhold wrote it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Deleted and overwritten content, such as erased key material, is zeroed on disk.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Connection::Sqlite(conn),
        })
    }

    /// Connects to a PostgreSQL database, creating and migrating the schema when needed.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Config`] when the password cannot be read,
    /// [`StoreError::Postgres`] when no server accepts the connection or the migration fails,
    /// and [`StoreError::SchemaTooNew`] when a newer Keyhold wrote the schema.
    pub fn connect_postgres(target: &PostgresTarget) -> Result<Self, StoreError> {
        let mut client = postgres::connect(target)?;
        postgres::migrate(&mut client)?;
        Ok(Self {
            conn: Connection::Postgres(Box::new(PostgresConnection::new(client, target.clone()))),
        })
    }

    /// Opens the store that `target` names.
    ///
    /// # Errors
    ///
    /// Returns the errors of [`Store::open`] or [`Store::connect_postgres`].
    pub fn connect(target: &StorageTarget) -> Result<Self, StoreError> {
        match target {
            StorageTarget::Sqlite(path) => Self::open(path),
            StorageTarget::Postgres(target) => Self::connect_postgres(target),
        }
    }

    /// The current revision, incremented by every change.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] or [`StoreError::Postgres`] on a database failure.
    pub fn revision(&self) -> Result<i64, StoreError> {
        self.conn
            .query_one("SELECT revision FROM meta WHERE id = 1", &[])?
            .get(0)
    }

    /// Inserts a domain.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::AlreadyExists`] when the id or the URI path prefix is taken.
    pub fn create_domain(&mut self, domain: &Domain) -> Result<(), StoreError> {
        self.write(|tx| {
            let id_taken: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM domains WHERE id = ?1)",
                    params![&domain.id],
                )?
                .get(0)?;
            if id_taken {
                return Err(StoreError::AlreadyExists(format!(
                    "domain {:?} already exists",
                    domain.id
                )));
            }
            let owner = tx.query_opt(
                "SELECT id FROM domains WHERE uri_prefix = ?1",
                params![&domain.uri_prefix],
            )?;
            if let Some(owner) = owner {
                let owner: String = owner.get(0)?;
                return Err(StoreError::AlreadyExists(format!(
                    "URI path prefix {:?} is already used by domain {owner:?}",
                    domain.uri_prefix
                )));
            }
            insert_domain(tx, domain)?;
            Ok(())
        })
    }

    /// Lists all domains ordered by id.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] on a database failure or a corrupt row.
    pub fn domains(&self) -> Result<Vec<Domain>, StoreError> {
        self.conn
            .query(
                &format!("SELECT {DOMAIN_COLUMNS} FROM domains ORDER BY id"),
                &[],
            )?
            .iter()
            .map(domain_from_row)
            .collect()
    }

    /// Reads one domain.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when no domain has that id.
    pub fn domain(&self, id: &str) -> Result<Domain, StoreError> {
        let row = self
            .conn
            .query_opt(
                &format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE id = ?1"),
                params![id],
            )?
            .ok_or_else(|| StoreError::NotFound(format!("domain {id:?}")))?;
        domain_from_row(&row)
    }

    /// Adds a credential, allowing at most two active credentials per domain.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Rejected`] when the domain has two active credentials already.
    pub fn add_credential(
        &mut self,
        credential: &CredentialInfo,
        wrapped_secret: &[u8],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            domain_exists(tx, &credential.domain_id)?;
            let active: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM credentials WHERE domain_id = ?1 AND revoked_at IS NULL",
                    params![&credential.domain_id],
                )?
                .get(0)?;
            if active >= MAX_ACTIVE_CREDENTIALS as i64 {
                return Err(StoreError::Rejected(format!(
                    "domain {:?} already has {MAX_ACTIVE_CREDENTIALS} active credentials; revoke \
                     one with `keyhold credential revoke` first",
                    credential.domain_id
                )));
            }
            tx.execute(
                "INSERT INTO credentials (access_key_id, domain_id, wrapped_secret, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    &credential.access_key_id,
                    &credential.domain_id,
                    wrapped_secret,
                    credential.created_at
                ],
            )?;
            Ok(())
        })
    }

    /// Lists a domain's credentials, active and revoked, oldest first.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when the domain does not exist.
    pub fn credentials(&self, domain_id: &str) -> Result<Vec<CredentialInfo>, StoreError> {
        domain_exists(&self.conn, domain_id)?;
        self.conn
            .query(
                "SELECT access_key_id, domain_id, created_at, revoked_at FROM credentials
                 WHERE domain_id = ?1 ORDER BY created_at, access_key_id",
                params![domain_id],
            )?
            .iter()
            .map(credential_from_row)
            .collect()
    }

    /// Revokes an active credential.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when the domain has no active credential with that id.
    pub fn revoke_credential(
        &mut self,
        domain_id: &str,
        access_key_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE credentials SET revoked_at = ?3
                 WHERE domain_id = ?1 AND access_key_id = ?2 AND revoked_at IS NULL",
                params![domain_id, access_key_id, now],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!(
                    "active credential {access_key_id:?} in domain {domain_id:?}"
                )));
            }
            Ok(())
        })
    }

    /// Inserts a key with its first version.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::AlreadyExists`] when the key id is taken in the domain.
    pub fn create_key(&mut self, key: &KeyInfo, first: &StoredVersion) -> Result<(), StoreError> {
        self.write(|tx| {
            domain_exists(tx, &key.domain_id)?;
            let taken: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM keys WHERE domain_id = ?1 AND key_id = ?2)",
                    params![&key.domain_id, &key.key_id],
                )?
                .get(0)?;
            if taken {
                return Err(StoreError::AlreadyExists(format!(
                    "key {:?} already exists in domain {:?}; key ids are never reused",
                    key.key_id, key.domain_id
                )));
            }
            insert_key(tx, key, None)?;
            insert_version(tx, &key.domain_id, &key.key_id, first)?;
            Ok(())
        })
    }

    /// Lists a domain's keys ordered by id.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when the domain does not exist.
    pub fn keys(&self, domain_id: &str) -> Result<Vec<KeyInfo>, StoreError> {
        domain_exists(&self.conn, domain_id)?;
        self.conn
            .query(
                &format!("{KEY_COLUMNS} WHERE domain_id = ?1 ORDER BY key_id"),
                params![domain_id],
            )?
            .iter()
            .map(key_from_row)
            .collect()
    }

    /// Reads one key.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when the domain or key does not exist.
    pub fn key(&self, domain_id: &str, key_id: &str) -> Result<KeyInfo, StoreError> {
        domain_exists(&self.conn, domain_id)?;
        let row = self
            .conn
            .query_opt(
                &format!("{KEY_COLUMNS} WHERE domain_id = ?1 AND key_id = ?2"),
                params![domain_id, key_id],
            )?
            .ok_or_else(|| {
                StoreError::NotFound(format!("key {key_id:?} in domain {domain_id:?}"))
            })?;
        key_from_row(&row)
    }

    /// Enables or disables a key. Keys pending deletion or destroyed cannot change this way.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when the domain or key does not exist, and
    /// [`StoreError::Rejected`] for a key pending deletion or destroyed.
    pub fn set_key_status(
        &mut self,
        domain_id: &str,
        key_id: &str,
        status: KeyStatus,
    ) -> Result<(), StoreError> {
        debug_assert!(matches!(status, KeyStatus::Enabled | KeyStatus::Disabled));
        self.write(|tx| {
            let current = key_status(tx, domain_id, key_id)?;
            if matches!(current, KeyStatus::PendingDeletion | KeyStatus::Destroyed) {
                return Err(StoreError::Rejected(format!(
                    "key {key_id:?} is {}; {}",
                    current.as_str(),
                    if current == KeyStatus::Destroyed {
                        "a destroyed key cannot be used again"
                    } else {
                        "cancel the deletion with `keyhold key cancel-deletion` first"
                    }
                )));
            }
            tx.execute(
                "UPDATE keys SET status = ?3 WHERE domain_id = ?1 AND key_id = ?2",
                params![domain_id, key_id, status.as_str()],
            )?;
            Ok(())
        })
    }

    /// Stores a system key unless one with that name exists; returns whether it was stored.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] or [`StoreError::Postgres`] on a database failure.
    pub fn insert_system_key(
        &mut self,
        name: &str,
        wrapped: &[u8],
        now: i64,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let inserted = tx.execute(
                "INSERT INTO system_keys (name, wrapped_material, created_at)
                 VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                params![name, wrapped, now],
            )?;
            Ok(inserted == 1)
        })
    }

    /// Reads everything the server caches, in one read transaction so it is consistent.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] on a database failure or a corrupt row.
    pub fn load(&mut self) -> Result<Dataset, StoreError> {
        let tx = self.conn.transaction(Isolation::Snapshot)?;
        let revision = tx
            .query_one("SELECT revision FROM meta WHERE id = 1", &[])?
            .get(0)?;

        let domains = tx
            .query(&format!("SELECT {DOMAIN_COLUMNS} FROM domains"), &[])?
            .iter()
            .map(domain_from_row)
            .collect::<Result<Vec<_>, _>>()?;

        let credentials = tx
            .query(
                "SELECT access_key_id, domain_id, created_at, revoked_at, wrapped_secret
                 FROM credentials WHERE revoked_at IS NULL",
                &[],
            )?
            .iter()
            .map(|row| Ok((credential_from_row(row)?, row.get::<Vec<u8>>(4)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;

        let mut keys = tx
            .query(&format!("{KEY_COLUMNS} ORDER BY domain_id, key_id"), &[])?
            .iter()
            .map(|row| Ok((key_from_row(row)?, Vec::new())))
            .collect::<Result<Vec<(KeyInfo, Vec<StoredVersion>)>, StoreError>>()?;
        let version_rows = tx.query(
            "SELECT domain_id, key_id, version, state, wrapped_material, hsm_label, created_at
             FROM key_versions ORDER BY domain_id, key_id, version",
            &[],
        )?;
        for row in &version_rows {
            let domain_id: String = row.get(0)?;
            let key_id: String = row.get(1)?;
            let version = version_from_row(row)?;
            let position = keys.binary_search_by(|(key, _)| {
                (key.domain_id.as_str(), key.key_id.as_str())
                    .cmp(&(domain_id.as_str(), key_id.as_str()))
            });
            match position {
                Ok(index) => keys[index].1.push(version),
                Err(_) => {
                    return Err(StoreError::Corrupt(format!(
                        "version of unknown key {key_id:?} in domain {domain_id:?}"
                    )));
                }
            }
        }

        let system_keys = tx
            .query("SELECT name, wrapped_material FROM system_keys", &[])?
            .iter()
            .map(|row| Ok((row.get(0)?, row.get(1)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        tx.commit()?;

        Ok(Dataset {
            revision,
            domains,
            credentials,
            keys,
            system_keys,
        })
    }

    /// Runs `change` in a write transaction and increments the revision with it.
    ///
    /// Writers never interleave (see [`Isolation::Write`]). On PostgreSQL, READ COMMITTED takes
    /// a fresh snapshot for each statement, so every check `change` makes after the `meta` row
    /// lock sees all changes committed before. Check-then-write steps such as the credential
    /// limit therefore stay race-free across nodes.
    fn write<T>(
        &mut self,
        change: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.conn.transaction(Isolation::Write)?;
        let value = change(&tx)?;
        tx.execute("UPDATE meta SET revision = revision + 1 WHERE id = 1", &[])?;
        if tx.backend() == Backend::Postgres {
            // Delivered to the listening nodes when the transaction commits, never before.
            tx.execute(&format!("NOTIFY {}", postgres::CHANGES_CHANNEL), &[])?;
        }
        tx.commit()?;
        Ok(value)
    }

    /// Waits until another connection commits a change or `timeout` passes, and returns whether
    /// a change was announced. On PostgreSQL this listens for the notification that every
    /// change sends. SQLite has no notifications, so it sleeps for `timeout` and returns false.
    /// Either way the caller still compares [`Store::revision`], which is the source of truth.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Postgres`] when the connection fails.
    pub fn wait_for_change(&self, timeout: Duration) -> Result<bool, StoreError> {
        match self.conn.postgres() {
            Some(connection) => connection.wait_for_change(timeout),
            None => {
                std::thread::sleep(timeout);
                Ok(false)
            }
        }
    }
}

const KEY_COLUMNS: &str = "SELECT domain_id, key_id, name, description, usage_encrypt, \
    usage_decrypt, status, protection, primary_version, bound_kms_key_arn, \
    rotation_period_secs, deletion_at, policy, created_at, learn_binding FROM keys";

const DOMAIN_COLUMNS: &str = "id, display_name, uri_prefix, status, quota_rps, policy, created_at";

fn migrate(conn: &mut rusqlite::Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let has_meta: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |row| row.get(0),
    )?;
    if has_meta {
        let found: i64 =
            tx.query_row("SELECT schema_version FROM meta WHERE id = 1", [], |row| {
                row.get(0)
            })?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found });
        }
        if found < 2 {
            tx.execute_batch(control::SCHEMA_V2)?;
        }
        if found < 3 {
            tx.execute_batch(nodes::SCHEMA_V3)?;
        }
    } else {
        tx.execute_batch(SCHEMA_V1)?;
        tx.execute_batch(control::SCHEMA_V2)?;
        tx.execute_batch(nodes::SCHEMA_V3)?;
    }
    tx.execute(
        "UPDATE meta SET schema_version = ?1 WHERE id = 1 AND schema_version < ?1",
        [SCHEMA_VERSION],
    )?;
    tx.commit()?;
    Ok(())
}

/// The status of a key, or [`StoreError::NotFound`] naming the missing domain or key.
fn key_status(conn: &impl Sql, domain_id: &str, key_id: &str) -> Result<KeyStatus, StoreError> {
    domain_exists(conn, domain_id)?;
    let row = conn
        .query_opt(
            "SELECT status FROM keys WHERE domain_id = ?1 AND key_id = ?2",
            params![domain_id, key_id],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("key {key_id:?} in domain {domain_id:?}")))?;
    let status: String = row.get(0)?;
    KeyStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("key {key_id:?} has status {status:?}")))
}

fn domain_exists(conn: &impl Sql, id: &str) -> Result<(), StoreError> {
    let exists: bool = conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM domains WHERE id = ?1)",
            params![id],
        )?
        .get(0)?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::NotFound(format!("domain {id:?}")))
    }
}

fn domain_from_row(row: &Row) -> Result<Domain, StoreError> {
    let status: String = row.get(3)?;
    let id: String = row.get(0)?;
    let status = match status.as_str() {
        "ENABLED" => DomainStatus::Enabled,
        "DISABLED" => DomainStatus::Disabled,
        other => {
            return Err(StoreError::Corrupt(format!(
                "domain {id:?} has status {other:?}"
            )));
        }
    };
    Ok(Domain {
        id,
        display_name: row.get(1)?,
        uri_prefix: row.get(2)?,
        status,
        quota_rps: row.get(4)?,
        policy: row.get(5)?,
        created_at: row.get(6)?,
    })
}

fn credential_from_row(row: &Row) -> Result<CredentialInfo, StoreError> {
    Ok(CredentialInfo {
        access_key_id: row.get(0)?,
        domain_id: row.get(1)?,
        created_at: row.get(2)?,
        revoked_at: row.get(3)?,
    })
}

fn key_from_row(row: &Row) -> Result<KeyInfo, StoreError> {
    let key_id: String = row.get(1)?;
    let status: String = row.get(6)?;
    let Some(status) = KeyStatus::parse(&status) else {
        return Err(StoreError::Corrupt(format!(
            "key {key_id:?} has status {status:?}"
        )));
    };
    let protection: String = row.get(7)?;
    let protection = Protection::parse(&protection)
        .map_err(|message| StoreError::Corrupt(format!("key {key_id:?}: {message}")))?;
    let Some(usage) = KeyUsage::new(row.get(4)?, row.get(5)?) else {
        return Err(StoreError::Corrupt(format!(
            "key {key_id:?} has an empty usage"
        )));
    };
    Ok(KeyInfo {
        domain_id: row.get(0)?,
        key_id,
        name: row.get(2)?,
        description: row.get(3)?,
        usage,
        status,
        protection,
        primary_version: row.get(8)?,
        bound_kms_key_arn: row.get(9)?,
        rotation_period_secs: row.get(10)?,
        deletion_at: row.get(11)?,
        policy: row.get(12)?,
        created_at: row.get(13)?,
        learn_binding: row.get(14)?,
    })
}

fn domain_status_text(status: DomainStatus) -> &'static str {
    match status {
        DomainStatus::Enabled => "ENABLED",
        DomainStatus::Disabled => "DISABLED",
    }
}

/// Inserts a domain row.
fn insert_domain(tx: &impl Sql, domain: &Domain) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO domains (id, display_name, uri_prefix, status, quota_rps, policy, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            &domain.id,
            &domain.display_name,
            &domain.uri_prefix,
            domain_status_text(domain.status),
            domain.quota_rps,
            domain.policy.as_deref(),
            domain.created_at
        ],
    )?;
    Ok(())
}

/// Inserts a key row; `status_before_deletion` is set only for a key pending deletion.
fn insert_key(
    tx: &impl Sql,
    info: &KeyInfo,
    status_before_deletion: Option<KeyStatus>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO keys (domain_id, key_id, name, description, usage_encrypt, usage_decrypt,
             status, status_before_deletion, protection, primary_version, bound_kms_key_arn,
             rotation_period_secs, deletion_at, policy, created_at, learn_binding)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            &info.domain_id,
            &info.key_id,
            &info.name,
            &info.description,
            info.usage.encrypt(),
            info.usage.decrypt(),
            info.status.as_str(),
            status_before_deletion.map(KeyStatus::as_str),
            info.protection.as_str(),
            info.primary_version,
            info.bound_kms_key_arn.as_deref(),
            info.rotation_period_secs,
            info.deletion_at,
            info.policy.as_deref(),
            info.created_at,
            info.learn_binding
        ],
    )?;
    Ok(())
}

/// Inserts a version row.
fn insert_version(
    tx: &impl Sql,
    domain_id: &str,
    key_id: &str,
    version: &StoredVersion,
) -> Result<(), StoreError> {
    let (wrapped, hsm_label) = match &version.material {
        StoredMaterial::Wrapped(wrapped) => (Some(wrapped.as_slice()), None),
        StoredMaterial::Hsm(label) => (None, Some(label.as_str())),
        StoredMaterial::Destroyed => (None, None),
    };
    tx.execute(
        "INSERT INTO key_versions (domain_id, key_id, version, state, wrapped_material,
             hsm_label, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            domain_id,
            key_id,
            version.version,
            version.state.as_str(),
            wrapped,
            hsm_label,
            version.created_at
        ],
    )?;
    Ok(())
}

/// Reads a version from a row of `version, state, wrapped_material, hsm_label, created_at`
/// starting at column 2.
fn version_from_row(row: &Row) -> Result<StoredVersion, StoreError> {
    let number: u32 = row.get(2)?;
    let state: String = row.get(3)?;
    let Some(state) = VersionState::parse(&state) else {
        return Err(StoreError::Corrupt(format!(
            "version {number} has state {state:?}"
        )));
    };
    let material = match (state, row.get::<Option<Vec<u8>>>(4)?, row.get(5)?) {
        (VersionState::Destroyed, _, _) => StoredMaterial::Destroyed,
        (_, Some(wrapped), None) => StoredMaterial::Wrapped(wrapped),
        (_, None, Some(label)) => StoredMaterial::Hsm(label),
        _ => {
            return Err(StoreError::Corrupt(format!(
                "version {number} needs exactly one of wrapped material and an HSM label"
            )));
        }
    };
    Ok(StoredVersion {
        version: number,
        state,
        material,
        created_at: row.get(6)?,
    })
}
