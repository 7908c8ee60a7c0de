//! Audit state kept in the store: the chain head, so `keyhold audit verify` can tell a truncated
//! audit file from a complete one, and administrative actions waiting for the audit log.

use super::sql::{Backend, Isolation, Sql as _, params};
use super::{Store, StoreError};

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS audit_heads (
    node_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
)";

impl Store {
    /// Records the last synced line of a node's audit chain.
    ///
    /// Unlike other changes this does not increment the revision: servers need not reload
    /// their snapshot for it.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] on a database failure.
    pub fn record_audit_head(
        &mut self,
        node_id: &str,
        seq: u64,
        hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.create_sqlite_table(CREATE_TABLE)?;
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.conn.execute(
            "INSERT INTO audit_heads (node_id, seq, hash, recorded_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (node_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
                 recorded_at = excluded.recorded_at",
            params![node_id, seq, hash, now],
        )?;
        Ok(())
    }

    /// The recorded head of a node's audit chain: sequence number and hash.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] on a database failure.
    pub fn audit_head(&mut self, node_id: &str) -> Result<Option<(u64, String)>, StoreError> {
        self.create_sqlite_table(CREATE_TABLE)?;
        let Some(row) = self.conn.query_opt(
            "SELECT seq, hash FROM audit_heads WHERE node_id = ?1",
            params![node_id],
        )?
        else {
            return Ok(None);
        };
        let seq: i64 = row.get(0)?;
        Ok(Some((u64::try_from(seq).unwrap_or(0), row.get(1)?)))
    }
}

const CREATE_EVENTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS admin_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL
)";

/// An administrative action waiting to be written to the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminEvent {
    /// Increasing id.
    pub id: i64,
    /// RFC 3339 time of the action.
    pub time: String,
    /// Who acted, such as `cli:alice`.
    pub principal: String,
    /// What was done, such as `key rotate`.
    pub action: String,
    /// What it was done to, such as `acme/k1`.
    pub target: String,
    /// `success`, or `error: ` and the message.
    pub result: String,
}

impl Store {
    /// Records an administrative action for the audit log. Servers copy these into their
    /// audit chain, so actions made while no server runs are audited too.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] on a database failure.
    pub fn record_admin_event(
        &mut self,
        time: &str,
        principal: &str,
        action: &str,
        target: &str,
        result: &str,
    ) -> Result<(), StoreError> {
        self.create_sqlite_table(CREATE_EVENTS_TABLE)?;
        let tx = self.conn.transaction(Isolation::Write)?;
        if tx.backend() == Backend::Postgres {
            // Readers copy events in id order and remember the last id. PostgreSQL hands out
            // ids before commit, so two concurrent inserts could commit in the other order and
            // a reader could skip the lower id. The write transaction's `meta` row lock already
            // lets one insert run at a time, and this lock keeps that true for any other
            // writer. Plain reads do not wait for it.
            tx.execute("LOCK TABLE admin_events IN EXCLUSIVE MODE", &[])?;
        }
        tx.execute(
            "INSERT INTO admin_events (time, principal, action, target, result)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![time, principal, action, target, result],
        )?;
        tx.commit()
    }

    /// Administrative actions with an id above `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] on a database failure.
    pub fn admin_events_after(
        &mut self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<AdminEvent>, StoreError> {
        self.create_sqlite_table(CREATE_EVENTS_TABLE)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn
            .query(
                "SELECT id, time, principal, action, target, result FROM admin_events
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
                params![after, limit],
            )?
            .iter()
            .map(|row| {
                Ok(AdminEvent {
                    id: row.get(0)?,
                    time: row.get(1)?,
                    principal: row.get(2)?,
                    action: row.get(3)?,
                    target: row.get(4)?,
                    result: row.get(5)?,
                })
            })
            .collect()
    }

    /// The id of the last administrative action this node wrote to its audit log.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] on a database failure.
    pub fn audited_admin_event(&mut self, node_id: &str) -> Result<i64, StoreError> {
        self.create_sqlite_table(CREATE_CURSOR_TABLE)?;
        let id: Option<i64> = self
            .conn
            .query_opt(
                "SELECT event_id FROM audit_event_cursors WHERE node_id = ?1",
                params![node_id],
            )?
            .map(|row| row.get(0))
            .transpose()?;
        // A node that has written none yet starts from the first event, so actions made before
        // any server ran are audited too.
        Ok(id.unwrap_or(0))
    }

    /// Records the id of the last administrative action this node wrote to its audit log.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] on a database failure.
    pub fn set_audited_admin_event(
        &mut self,
        node_id: &str,
        event_id: i64,
    ) -> Result<(), StoreError> {
        self.create_sqlite_table(CREATE_CURSOR_TABLE)?;
        self.conn.execute(
            "INSERT INTO audit_event_cursors (node_id, event_id) VALUES (?1, ?2)
             ON CONFLICT (node_id) DO UPDATE SET event_id = excluded.event_id",
            params![node_id, event_id],
        )?;
        Ok(())
    }
}

const CREATE_CURSOR_TABLE: &str = "CREATE TABLE IF NOT EXISTS audit_event_cursors (
    node_id TEXT PRIMARY KEY,
    event_id INTEGER NOT NULL
)";

impl Store {
    /// Creates one of the audit tables on SQLite, where they are made on first use. The
    /// PostgreSQL schema has them from the start, and repeating `CREATE TABLE IF NOT EXISTS`
    /// there could fail when two nodes race on it.
    fn create_sqlite_table(&self, ddl: &str) -> Result<(), StoreError> {
        if let Some(conn) = self.conn.sqlite() {
            conn.execute(ddl, [])?;
        }
        Ok(())
    }
}
