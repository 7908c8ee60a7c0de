//! Control-plane rows: admin API principals with their role grants and bearer tokens, and the
//! AWS KMS external key stores registered for each domain.
//!
//! Tokens are stored as SHA-256 digests only. None of these changes increment the revision,
//! because the XKS snapshot does not contain these rows and the admin API reads them on every
//! request.

use super::sql::{Isolation, Row, Sql as _, params};
use super::{Store, StoreError, domain_exists};

/// Tables added in schema version 2.
pub(super) const SCHEMA_V2: &str = "
CREATE TABLE principals (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE principal_roles (
    principal TEXT NOT NULL REFERENCES principals (name) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('operator', 'domain-admin', 'key-creator', 'auditor')),
    domain_id TEXT NOT NULL DEFAULT '' ,
    CHECK ((role = 'operator') = (domain_id = '')),
    PRIMARY KEY (principal, role, domain_id)
);
CREATE INDEX principal_roles_by_domain ON principal_roles (domain_id);
CREATE TABLE admin_tokens (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL REFERENCES principals (name) ON DELETE CASCADE,
    digest BLOB NOT NULL,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX admin_tokens_by_principal ON admin_tokens (principal);
CREATE TABLE external_key_stores (
    domain_id TEXT NOT NULL REFERENCES domains (id),
    name TEXT NOT NULL,
    custom_key_store_id TEXT NOT NULL UNIQUE,
    region TEXT NOT NULL,
    account_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (domain_id, name)
);
";

/// Role of a principal as stored. `domain` is `None` only for `operator`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RoleRow {
    /// `operator`, `domain-admin`, `key-creator` or `auditor`.
    pub role: String,
    /// Domain that the role applies to.
    pub domain: Option<String>,
}

/// Principal as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRow {
    /// Unique name.
    pub name: String,
    /// Roles of the principal, sorted.
    pub roles: Vec<RoleRow>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Audit name of the principal that created it.
    pub created_by: String,
}

/// Bearer token as stored: its digest, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Public token id, the `<id>` part of `khat_<id>_<secret>`.
    pub id: String,
    /// Name of the principal that owns the token.
    pub principal: String,
    /// SHA-256 digest of the whole token.
    pub digest: Vec<u8>,
    /// Description in free text.
    pub description: String,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Expiry time in Unix seconds, or `None` for a token that never expires.
    pub expires_at: Option<i64>,
    /// Revocation time, Unix seconds.
    pub revoked_at: Option<i64>,
    /// Last successful use, Unix seconds. [`Store::touch_token`] updates it at most once a
    /// minute, so it may lag the real last use by up to 60 seconds.
    pub last_used_at: Option<i64>,
}

/// AWS KMS external key store registered for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStoreRow {
    /// Owning domain.
    pub domain_id: String,
    /// Name, unique within the domain.
    pub name: String,
    /// AWS custom key store id, `cks-...`.
    pub custom_key_store_id: String,
    /// AWS region.
    pub region: String,
    /// AWS account id.
    pub account_id: String,
    /// Registration time, Unix seconds.
    pub created_at: i64,
}

impl Store {
    /// Creates a principal with its roles.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::AlreadyExists`] when the name is taken and
    /// [`StoreError::NotFound`] when a role names a missing domain.
    pub fn create_principal(&mut self, principal: &PrincipalRow) -> Result<(), StoreError> {
        let tx = self.conn.transaction(Isolation::Write)?;
        let name_taken: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM principals WHERE name = ?1)",
                params![&principal.name],
            )?
            .get(0)?;
        if name_taken {
            return Err(StoreError::AlreadyExists(format!(
                "principal {:?} exists already",
                principal.name
            )));
        }
        tx.execute(
            "INSERT INTO principals (name, created_at, created_by) VALUES (?1, ?2, ?3)",
            params![&principal.name, principal.created_at, &principal.created_by],
        )?;
        for role in &principal.roles {
            if let Some(domain) = &role.domain {
                domain_exists(&tx, domain)?;
            }
            tx.execute(
                "INSERT INTO principal_roles (principal, role, domain_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                params![
                    &principal.name,
                    &role.role,
                    role.domain.as_deref().unwrap_or("")
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Loads one principal with its roles.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when it does not exist.
    pub fn principal(&self, name: &str) -> Result<PrincipalRow, StoreError> {
        let row = self
            .conn
            .query_opt(
                "SELECT created_at, created_by FROM principals WHERE name = ?1",
                params![name],
            )?
            .ok_or_else(|| StoreError::NotFound(format!("principal {name:?}")))?;
        Ok(PrincipalRow {
            name: name.to_owned(),
            roles: self.roles_of(name)?,
            created_at: row.get(0)?,
            created_by: row.get(1)?,
        })
    }

    /// Lists all principals, or those with a role in `domain`, sorted by name.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] on a database failure.
    pub fn principals(&self, domain: Option<&str>) -> Result<Vec<PrincipalRow>, StoreError> {
        let rows = match domain {
            Some(domain) => self.conn.query(
                "SELECT DISTINCT principal FROM principal_roles WHERE domain_id = ?1
                 ORDER BY principal",
                params![domain],
            )?,
            None => self
                .conn
                .query("SELECT name FROM principals ORDER BY name", &[])?,
        };
        let names = rows
            .iter()
            .map(|row| row.get(0))
            .collect::<Result<Vec<String>, _>>()?;
        names.iter().map(|name| self.principal(name)).collect()
    }

    /// Deletes a principal, its roles and its tokens.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when it does not exist.
    pub fn delete_principal(&mut self, name: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction(Isolation::Write)?;
        tx.execute(
            "DELETE FROM admin_tokens WHERE principal = ?1",
            params![name],
        )?;
        tx.execute(
            "DELETE FROM principal_roles WHERE principal = ?1",
            params![name],
        )?;
        if tx.execute("DELETE FROM principals WHERE name = ?1", params![name])? == 0 {
            return Err(StoreError::NotFound(format!("principal {name:?}")));
        }
        tx.commit()?;
        Ok(())
    }

    fn roles_of(&self, name: &str) -> Result<Vec<RoleRow>, StoreError> {
        self.conn
            .query(
                "SELECT role, domain_id FROM principal_roles WHERE principal = ?1
                 ORDER BY role, domain_id",
                params![name],
            )?
            .iter()
            .map(|row| {
                let domain: String = row.get(1)?;
                Ok(RoleRow {
                    role: row.get(0)?,
                    domain: (!domain.is_empty()).then_some(domain),
                })
            })
            .collect()
    }

    /// Inserts a new token, which contains only the digest of the token text.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when the principal does not exist.
    pub fn insert_token(&mut self, token: &TokenRow) -> Result<(), StoreError> {
        self.principal(&token.principal)?;
        self.conn.execute(
            "INSERT INTO admin_tokens (id, principal, digest, description, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                &token.id,
                &token.principal,
                &token.digest,
                &token.description,
                token.created_at,
                token.expires_at
            ],
        )?;
        Ok(())
    }

    /// Loads the token with this id, whether active, expired or revoked.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] on a database failure.
    pub fn token(&self, id: &str) -> Result<Option<TokenRow>, StoreError> {
        self.conn
            .query_opt(&format!("{TOKEN_COLUMNS} WHERE id = ?1"), params![id])?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    /// Lists the tokens of a principal, newest first.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] on a database failure.
    pub fn tokens(&self, principal: &str) -> Result<Vec<TokenRow>, StoreError> {
        self.conn
            .query(
                &format!("{TOKEN_COLUMNS} WHERE principal = ?1 ORDER BY created_at DESC, id"),
                params![principal],
            )?
            .iter()
            .map(token_from_row)
            .collect()
    }

    /// Revokes a principal's token.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when the principal has no such token and
    /// [`StoreError::Rejected`] when it is revoked already.
    pub fn revoke_token(&mut self, principal: &str, id: &str, now: i64) -> Result<(), StoreError> {
        let token = self
            .token(id)?
            .filter(|token| token.principal == principal)
            .ok_or_else(|| {
                StoreError::NotFound(format!("token {id:?} of principal {principal:?}"))
            })?;
        if token.revoked_at.is_some() {
            return Err(StoreError::Rejected(format!(
                "token {id:?} is revoked already"
            )));
        }
        self.conn.execute(
            "UPDATE admin_tokens SET revoked_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    /// Sets the last use time of a token, unless the stored time is at most 60 seconds before
    /// `now`, which limits the writes to about one a minute per token.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] on a database failure.
    pub fn touch_token(&mut self, id: &str, now: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE admin_tokens SET last_used_at = ?2
             WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at + 60 < ?2)",
            params![id, now],
        )?;
        Ok(())
    }

    /// Registers an external key store for a domain.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] for a missing domain and [`StoreError::AlreadyExists`]
    /// when the name is taken in the domain or the custom key store id is registered already.
    pub fn insert_key_store(&mut self, key_store: &KeyStoreRow) -> Result<(), StoreError> {
        let tx = self.conn.transaction(Isolation::Write)?;
        domain_exists(&tx, &key_store.domain_id)?;
        let clash = tx.query_opt(
            "SELECT domain_id, name FROM external_key_stores
             WHERE (domain_id = ?1 AND name = ?2) OR custom_key_store_id = ?3",
            params![
                &key_store.domain_id,
                &key_store.name,
                &key_store.custom_key_store_id
            ],
        )?;
        if let Some(clash) = clash {
            let domain: String = clash.get(0)?;
            let name: String = clash.get(1)?;
            return Err(StoreError::AlreadyExists(
                if domain == key_store.domain_id && name == key_store.name {
                    format!(
                        "external key store {name:?} exists already in domain {domain:?}; pick another name"
                    )
                } else if domain == key_store.domain_id {
                    format!(
                        "custom key store {} is registered already in this domain, as {name:?}",
                        key_store.custom_key_store_id
                    )
                } else {
                    // Another tenant's registration: the message names its existence, not its domain.
                    format!(
                        "custom key store {} is registered already for another domain; check \
                         the id, or ask an operator",
                        key_store.custom_key_store_id
                    )
                },
            ));
        }
        tx.execute(
            "INSERT INTO external_key_stores
                (domain_id, name, custom_key_store_id, region, account_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                &key_store.domain_id,
                &key_store.name,
                &key_store.custom_key_store_id,
                &key_store.region,
                &key_store.account_id,
                key_store.created_at
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Lists the external key stores registered for a domain, sorted by name.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] for a missing domain.
    pub fn key_stores(&self, domain_id: &str) -> Result<Vec<KeyStoreRow>, StoreError> {
        domain_exists(&self.conn, domain_id)?;
        self.conn
            .query(
                &format!("{KEY_STORE_COLUMNS} WHERE domain_id = ?1 ORDER BY name"),
                params![domain_id],
            )?
            .iter()
            .map(key_store_from_row)
            .collect()
    }

    /// Loads one registered external key store.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when the domain or the key store does not exist.
    pub fn key_store(&self, domain_id: &str, name: &str) -> Result<KeyStoreRow, StoreError> {
        domain_exists(&self.conn, domain_id)?;
        let row = self
            .conn
            .query_opt(
                &format!("{KEY_STORE_COLUMNS} WHERE domain_id = ?1 AND name = ?2"),
                params![domain_id, name],
            )?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "external key store {name:?} in domain {domain_id:?}"
                ))
            })?;
        key_store_from_row(&row)
    }

    /// Deletes the registration of an external key store. Keys created through it stay.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::NotFound`] when the domain or the key store does not exist.
    pub fn delete_key_store(&mut self, domain_id: &str, name: &str) -> Result<(), StoreError> {
        self.key_store(domain_id, name)?;
        self.conn.execute(
            "DELETE FROM external_key_stores WHERE domain_id = ?1 AND name = ?2",
            params![domain_id, name],
        )?;
        Ok(())
    }
}

const TOKEN_COLUMNS: &str = "SELECT id, principal, digest, description, created_at, expires_at, \
    revoked_at, last_used_at FROM admin_tokens";

const KEY_STORE_COLUMNS: &str = "SELECT domain_id, name, custom_key_store_id, region, \
    account_id, created_at FROM external_key_stores";

fn token_from_row(row: &Row) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        id: row.get(0)?,
        principal: row.get(1)?,
        digest: row.get(2)?,
        description: row.get(3)?,
        created_at: row.get(4)?,
        expires_at: row.get(5)?,
        revoked_at: row.get(6)?,
        last_used_at: row.get(7)?,
    })
}

fn key_store_from_row(row: &Row) -> Result<KeyStoreRow, StoreError> {
    Ok(KeyStoreRow {
        domain_id: row.get(0)?,
        name: row.get(1)?,
        custom_key_store_id: row.get(2)?,
        region: row.get(3)?,
        account_id: row.get(4)?,
        created_at: row.get(5)?,
    })
}
