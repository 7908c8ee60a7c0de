//! The audit chain head recorded in the store, so `keyhold audit verify` can tell a truncated
//! audit file from a complete one.

use rusqlite::{OptionalExtension as _, params};

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
        self.conn.execute(CREATE_TABLE, [])?;
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
        self.conn.execute(CREATE_TABLE, [])?;
        let head: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT seq, hash FROM audit_heads WHERE node_id = ?1",
                [node_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        Ok(head.map(|(seq, hash)| (u64::try_from(seq).unwrap_or(0), hash)))
    }
}
