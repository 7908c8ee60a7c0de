//! Node heartbeats: each server records its id, model and health status about once a second,
//! so every node can list the live members of its fleet in XKS health responses.
//!
//! Heartbeats do not increment the revision and send no change notification, because the
//! XKS snapshot does not contain them.

use super::sql::{Backend, Sql as _, params};
use super::{Store, StoreError};

/// SQLite table added in schema version 3. Times are Unix milliseconds.
pub(super) const SCHEMA_V3: &str = "
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    health_status TEXT NOT NULL CHECK (health_status IN ('ACTIVE', 'DEGRADED', 'UNAVAILABLE')),
    heartbeat_at INTEGER NOT NULL
);
";

/// Current time in Unix milliseconds as PostgreSQL computes it. Nodes compare heartbeats
/// against the database clock, so clock skew between nodes does not hide or keep a node.
const POSTGRES_NOW_MILLIS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

/// One node's last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// Node id, unique in the fleet.
    pub node_id: String,
    /// Model string that the node reports in health responses.
    pub model: String,
    /// XKS health status at the last heartbeat: `ACTIVE`, `DEGRADED` or `UNAVAILABLE`.
    pub health_status: String,
}

impl Store {
    /// Records a heartbeat of `node_id` with its model and health status. PostgreSQL stamps it
    /// with the database clock, SQLite with `now_millis`.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Sqlite`] or [`StoreError::Postgres`] on a database failure.
    pub fn record_heartbeat(
        &mut self,
        node_id: &str,
        model: &str,
        health_status: &str,
        now_millis: i64,
    ) -> Result<(), StoreError> {
        let now = match self.conn.backend() {
            Backend::Sqlite => "?4",
            Backend::Postgres => POSTGRES_NOW_MILLIS,
        };
        let parameters = match self.conn.backend() {
            Backend::Sqlite => params![node_id, model, health_status, now_millis],
            Backend::Postgres => params![node_id, model, health_status],
        };
        self.conn.execute(
            &format!(
                "INSERT INTO nodes (node_id, model, health_status, heartbeat_at)
                 VALUES (?1, ?2, ?3, {now})
                 ON CONFLICT (node_id) DO UPDATE SET model = excluded.model,
                     health_status = excluded.health_status, heartbeat_at = excluded.heartbeat_at"
            ),
            parameters,
        )?;
        Ok(())
    }

    /// Lists the nodes whose last heartbeat is at most `max_age_millis` old, ordered by id.
    /// PostgreSQL measures the age with the database clock, SQLite with `now_millis`.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] on a database failure or a corrupt row.
    pub fn live_nodes(
        &self,
        max_age_millis: i64,
        now_millis: i64,
    ) -> Result<Vec<NodeRow>, StoreError> {
        let now = match self.conn.backend() {
            Backend::Sqlite => "?2",
            Backend::Postgres => POSTGRES_NOW_MILLIS,
        };
        let parameters = match self.conn.backend() {
            Backend::Sqlite => params![max_age_millis, now_millis],
            Backend::Postgres => params![max_age_millis],
        };
        self.conn
            .query(
                &format!(
                    "SELECT node_id, model, health_status FROM nodes
                     WHERE heartbeat_at >= {now} - ?1 ORDER BY node_id"
                ),
                parameters,
            )?
            .iter()
            .map(|row| {
                Ok(NodeRow {
                    node_id: row.get(0)?,
                    model: row.get(1)?,
                    health_status: row.get(2)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_nodes_skip_stale_heartbeats() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut store = Store::open(&dir.path().join("store.db")).expect("open store");
        store
            .record_heartbeat("node-b", "model b", "ACTIVE", 10_000)
            .expect("heartbeat b");
        store
            .record_heartbeat("node-a", "model a", "DEGRADED", 4_000)
            .expect("heartbeat a");

        let all = store.live_nodes(5_000, 9_000).expect("live nodes");
        let ids: Vec<&str> = all.iter().map(|node| node.node_id.as_str()).collect();
        assert_eq!(ids, ["node-a", "node-b"]);
        assert_eq!(all[0].health_status, "DEGRADED");

        let recent = store.live_nodes(5_000, 10_000).expect("live nodes");
        let ids: Vec<&str> = recent.iter().map(|node| node.node_id.as_str()).collect();
        assert_eq!(ids, ["node-b"]);
    }

    #[test]
    fn version_2_database_gains_nodes_table() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.db");
        drop(Store::open(&path).expect("create store"));
        let conn = rusqlite::Connection::open(&path).expect("open database");
        conn.execute_batch("DROP TABLE nodes; UPDATE meta SET schema_version = 2;")
            .expect("turn the database back into version 2");
        drop(conn);

        let mut store = Store::open(&path).expect("migrate store");
        store
            .record_heartbeat("node-a", "model a", "ACTIVE", 1_000)
            .expect("heartbeat after migration");
        let conn = rusqlite::Connection::open(&path).expect("open database");
        let version: i64 = conn
            .query_row("SELECT schema_version FROM meta", [], |row| row.get(0))
            .expect("schema version");
        assert_eq!(version, 3);
    }

    #[test]
    fn heartbeat_keeps_revision() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut store = Store::open(&dir.path().join("store.db")).expect("open store");
        let before = store.revision().expect("revision");
        store
            .record_heartbeat("node-a", "model a", "ACTIVE", 1_000)
            .expect("heartbeat");
        assert_eq!(store.revision().expect("revision"), before);
    }
}
