//! A small SQL layer that runs the store's statements on SQLite (rusqlite) or PostgreSQL (the
//! synchronous `postgres` client).
//!
//! Statements are written once, in the SQL both databases accept, with `?1`, `?2`… parameters;
//! PostgreSQL receives them as `$1`, `$2`…. Values cross the layer as [`Value`]: integers are
//! `i64` (PostgreSQL columns are `BIGINT`), booleans are integers 0 and 1, binary data is a
//! byte vector. Dialect differences that a statement cannot hide, such as DDL and `PRAGMA`,
//! stay with the caller, which checks [`Sql::backend`].

use std::cell::{Cell, RefCell, RefMut};
use std::fmt;
use std::time::Duration;

use bytes::BytesMut;
use postgres::fallible_iterator::FallibleIterator as _;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::StoreError;
use super::postgres::{CHANGES_CHANNEL, PostgresTarget};

/// Builds a `&[Value]` parameter list.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        &[$($crate::keystore::store::sql::Value::from($value)),*][..]
    };
}
pub(super) use params;

/// The database a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    Sqlite,
    Postgres,
}

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Null,
    Integer(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Self::Integer(value)
    }
}

impl From<u32> for Value {
    fn from(value: u32) -> Self {
        Self::Integer(i64::from(value))
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Self::Integer(i64::from(value))
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Self::Text(value.to_owned())
    }
}

impl From<&String> for Value {
    fn from(value: &String) -> Self {
        Self::Text(value.clone())
    }
}

impl From<&[u8]> for Value {
    fn from(value: &[u8]) -> Self {
        Self::Blob(value.to_vec())
    }
}

impl From<&Vec<u8>> for Value {
    fn from(value: &Vec<u8>) -> Self {
        Self::Blob(value.clone())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Null => ValueRef::Null,
            Self::Integer(value) => ValueRef::Integer(*value),
            Self::Text(value) => ValueRef::Text(value.as_bytes()),
            Self::Blob(value) => ValueRef::Blob(value),
        }))
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Self::Null => Ok(IsNull::Yes),
            Self::Integer(value) => match *ty {
                Type::INT8 => value.to_sql(ty, out),
                Type::INT4 => i32::try_from(*value)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*value)?.to_sql(ty, out),
                Type::BOOL => (*value != 0).to_sql(ty, out),
                _ => Err(format!("cannot send an integer as a {ty} parameter").into()),
            },
            Self::Text(value) => value.as_str().to_sql(ty, out),
            Self::Blob(value) => value.as_slice().to_sql(ty, out),
        }
    }

    // The type checks happen in `to_sql`, which matches on the value's variant.
    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Conversion of a column value into a Rust type.
pub(super) trait FromValue: Sized {
    /// Converts `value`, or returns `None` when its type does not fit.
    fn from_value(value: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Integer(value) => Some(*value),
            _ => None,
        }
    }
}

impl FromValue for u32 {
    fn from_value(value: &Value) -> Option<Self> {
        i64::from_value(value).and_then(|value| u32::try_from(value).ok())
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Option<Self> {
        i64::from_value(value).map(|value| value != 0)
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(value) => Some(value.clone()),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Blob(value) => Some(value.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One result row.
#[derive(Debug)]
pub(super) struct Row(Vec<Value>);

impl Row {
    /// Reads column `index` as `T`.
    pub(super) fn get<T: FromValue>(&self, index: usize) -> Result<T, StoreError> {
        let value = self.0.get(index).unwrap_or(&Value::Null);
        T::from_value(value).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "column {index} contains {value:?}, expected a {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// Statements that run on a connection or inside a transaction.
pub(super) trait Sql {
    /// Returns the database behind this connection.
    fn backend(&self) -> Backend;

    /// Runs a statement and returns the number of rows it changed.
    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;

    /// Runs a query and returns all its rows.
    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;

    /// Runs a query and returns its first row, if any.
    fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Runs a query that always returns a row, such as `SELECT COUNT(*)`.
    fn query_one(&self, sql: &str, params: &[Value]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| StoreError::Corrupt(format!("no row returned by {sql:?}")))
    }
}

/// An open connection to either database.
pub(super) enum Connection {
    Sqlite(rusqlite::Connection),
    // Boxed because the PostgreSQL client and its settings are several times larger than a
    // rusqlite connection.
    Postgres(Box<PostgresConnection>),
}

/// A PostgreSQL client that reconnects after its connection was lost, for example when the
/// primary failed over and the URL's `target_session_attrs=read-write` must find the new one.
pub(super) struct PostgresConnection {
    // `postgres::Client` needs `&mut` for every call, while the store reads through `&self`.
    // The cell keeps `Store` `Send` and, like a rusqlite connection, not `Sync`. The client
    // is only taken out in `drop`.
    client: RefCell<Option<postgres::Client>>,
    target: PostgresTarget,
    /// Whether this session has run `LISTEN`. A new session after a reconnect has not.
    listening: Cell<bool>,
    /// Set when a statement failed in a way that leaves this session unusable, before the
    /// client itself may notice that the connection closed.
    broken: Cell<bool>,
    /// Whether the current outage was logged.
    outage_reported: Cell<bool>,
}

/// `postgres::Client` runs a runtime of its own, which panics when the client is dropped on a
/// thread that runs tokio, as the last owner of the admin API's store can at shutdown. Such a
/// client is closed on a thread of its own instead.
impl Drop for PostgresConnection {
    fn drop(&mut self) {
        let Some(client) = self.client.get_mut().take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let closing = std::thread::Builder::new()
            .name("keyhold-pg-close".to_owned())
            .spawn(move || drop(client));
        match closing {
            Ok(thread) => {
                if thread.join().is_err() {
                    tracing::warn!(database = %self.target, "closing the PostgreSQL connection failed");
                }
            }
            Err(error) => {
                tracing::warn!(%error, database = %self.target, "cannot start a thread to close the PostgreSQL connection; leaving it to the process exit");
            }
        }
    }
}

impl PostgresConnection {
    /// Wraps a connected client.
    pub(super) fn new(client: postgres::Client, target: PostgresTarget) -> Self {
        Self {
            client: RefCell::new(Some(client)),
            target,
            listening: Cell::new(false),
            broken: Cell::new(false),
            outage_reported: Cell::new(false),
        }
    }

    /// Returns the client, first reconnecting when the connection is closed. A statement that
    /// fails because the connection broke returns its error; the next one reconnects.
    fn client(&self) -> Result<RefMut<'_, postgres::Client>, StoreError> {
        let mut client = self.client.borrow_mut();
        let usable = client
            .as_ref()
            .is_some_and(|client| !client.is_closed() && !self.broken.get());
        if !usable {
            // Logged once per outage, not for every statement that tries again.
            if !self.outage_reported.replace(true) {
                tracing::warn!(database = %self.target, "PostgreSQL connection lost; reconnecting");
            }
            *client = Some(super::postgres::connect(&self.target)?);
            self.listening.set(false);
            self.broken.set(false);
            self.outage_reported.set(false);
            tracing::info!(database = %self.target, "reconnected to PostgreSQL");
        }
        RefMut::filter_map(client, Option::as_mut)
            .map_err(|_| StoreError::Config(format!("the connection to {} is closed", self.target)))
    }

    /// Waits up to `timeout` for a change notification and returns whether one came.
    /// Notifications that arrived while other statements ran count too.
    pub(super) fn wait_for_change(&self, timeout: Duration) -> Result<bool, StoreError> {
        let mut client = self.client()?;
        if !self.listening.get() {
            client.batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))?;
            self.listening.set(true);
        }
        let mut notifications = client.notifications();
        let changed = notifications
            .timeout_iter(timeout)
            .next()
            .map_err(|error| self.failed(error))?
            .is_some();
        // One reload covers every change so far, so the rest of the queue can go.
        while notifications
            .iter()
            .next()
            .map_err(|error| self.failed(error))?
            .is_some()
        {}
        Ok(changed)
    }

    /// Marks the session for a reconnect when `error` shows it unusable, and converts it.
    fn failed(&self, error: postgres::Error) -> StoreError {
        if session_lost(&error) {
            self.broken.set(true);
        }
        error.into()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(conn) => f.debug_tuple("Sqlite").field(conn).finish(),
            Self::Postgres(_) => f.write_str("Postgres"),
        }
    }
}

/// Isolation and locking of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isolation {
    /// Reads see one consistent snapshot; nothing is written.
    Snapshot,
    /// The transaction writes, and no other write transaction runs at the same time. SQLite
    /// takes its write lock at once (`BEGIN IMMEDIATE`). PostgreSQL runs at READ COMMITTED and
    /// first locks the single `meta` row, which every write transaction of every node locks.
    Write,
}

/// An open transaction. Dropping it without [`Transaction::commit`] rolls it back.
pub(super) enum Transaction<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres {
        tx: RefCell<postgres::Transaction<'a>>,
        connection_broken: &'a Cell<bool>,
    },
}

impl Connection {
    /// Starts a transaction.
    pub(super) fn transaction(
        &mut self,
        isolation: Isolation,
    ) -> Result<Transaction<'_>, StoreError> {
        match self {
            Self::Sqlite(conn) => {
                let behavior = match isolation {
                    Isolation::Snapshot => rusqlite::TransactionBehavior::Deferred,
                    Isolation::Write => rusqlite::TransactionBehavior::Immediate,
                };
                Ok(Transaction::Sqlite(
                    conn.transaction_with_behavior(behavior)?,
                ))
            }
            Self::Postgres(connection) => {
                connection.client()?;
                let PostgresConnection { client, broken, .. } = &mut **connection;
                let Some(client) = client.get_mut().as_mut() else {
                    return Err(StoreError::Config(
                        "the PostgreSQL connection is closed".to_owned(),
                    ));
                };
                let builder = client.build_transaction();
                let builder = match isolation {
                    Isolation::Snapshot => builder
                        .isolation_level(postgres::IsolationLevel::RepeatableRead)
                        .read_only(true),
                    Isolation::Write => {
                        builder.isolation_level(postgres::IsolationLevel::ReadCommitted)
                    }
                };
                let tx = builder.start().map_err(|error| {
                    if session_lost(&error) {
                        broken.set(true);
                    }
                    StoreError::from(error)
                })?;
                let tx = Transaction::Postgres {
                    tx: RefCell::new(tx),
                    connection_broken: broken,
                };
                if isolation == Isolation::Write {
                    tx.query_one("SELECT 1 FROM meta WHERE id = 1 FOR UPDATE", &[])?;
                }
                Ok(tx)
            }
        }
    }

    /// Returns the PostgreSQL connection, for PostgreSQL-only steps such as `LISTEN`.
    pub(super) fn postgres(&self) -> Option<&PostgresConnection> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(connection) => Some(connection.as_ref()),
        }
    }

    /// Returns the SQLite connection, for SQLite-only steps such as `PRAGMA`.
    pub(super) fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Self::Sqlite(conn) => Some(conn),
            Self::Postgres(_) => None,
        }
    }
}

impl Transaction<'_> {
    /// Commits the transaction.
    pub(super) fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(tx) => tx.commit()?,
            Self::Postgres {
                tx,
                connection_broken,
            } => tx.into_inner().commit().map_err(|error| {
                if session_lost(&error) {
                    connection_broken.set(true);
                }
                StoreError::from(error)
            })?,
        }
        Ok(())
    }
}

impl Sql for Connection {
    fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(conn) => sqlite_execute(conn, sql, params),
            Self::Postgres(connection) => {
                postgres_execute(&mut *connection.client()?, sql, params, &connection.broken)
            }
        }
    }

    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        match self {
            Self::Sqlite(conn) => sqlite_query(conn, sql, params),
            Self::Postgres(connection) => {
                postgres_query(&mut *connection.client()?, sql, params, &connection.broken)
            }
        }
    }
}

impl Sql for Transaction<'_> {
    fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres { .. } => Backend::Postgres,
        }
    }

    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(tx) => sqlite_execute(tx, sql, params),
            Self::Postgres {
                tx,
                connection_broken,
            } => postgres_execute(&mut *tx.borrow_mut(), sql, params, connection_broken),
        }
    }

    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        match self {
            Self::Sqlite(tx) => sqlite_query(tx, sql, params),
            Self::Postgres {
                tx,
                connection_broken,
            } => postgres_query(&mut *tx.borrow_mut(), sql, params, connection_broken),
        }
    }
}

fn sqlite_execute(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
) -> Result<u64, StoreError> {
    let changed = conn.execute(sql, rusqlite::params_from_iter(params))?;
    Ok(u64::try_from(changed).unwrap_or(u64::MAX))
}

fn sqlite_query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let columns = statement.column_count();
    let mut rows = statement.query(rusqlite::params_from_iter(params))?;
    let mut result = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(columns);
        for index in 0..columns {
            values.push(match row.get_ref(index)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(value) => Value::Integer(value),
                ValueRef::Text(text) => Value::Text(String::from_utf8_lossy(text).into_owned()),
                ValueRef::Blob(blob) => Value::Blob(blob.to_vec()),
                ValueRef::Real(real) => {
                    return Err(StoreError::Corrupt(format!(
                        "column {index} contains the floating-point value {real}"
                    )));
                }
            });
        }
        result.push(Row(values));
    }
    Ok(result)
}

fn postgres_execute(
    client: &mut impl postgres::GenericClient,
    sql: &str,
    params: &[Value],
    broken: &Cell<bool>,
) -> Result<u64, StoreError> {
    let references: Vec<&(dyn ToSql + Sync)> = params.iter().map(|value| value as _).collect();
    client
        .execute(postgres_placeholders(sql).as_str(), &references)
        .map_err(|error| note_lost_session(error, broken))
}

fn postgres_query(
    client: &mut impl postgres::GenericClient,
    sql: &str,
    params: &[Value],
    broken: &Cell<bool>,
) -> Result<Vec<Row>, StoreError> {
    let references: Vec<&(dyn ToSql + Sync)> = params.iter().map(|value| value as _).collect();
    let rows = client
        .query(postgres_placeholders(sql).as_str(), &references)
        .map_err(|error| note_lost_session(error, broken))?;
    rows.iter().map(postgres_row).collect()
}

fn note_lost_session(error: postgres::Error, broken: &Cell<bool>) -> StoreError {
    if session_lost(&error) {
        broken.set(true);
    }
    error.into()
}

/// Whether `error` leaves the session unusable for the store: the connection closed, the
/// server ended the session (SQLSTATE class 57P, or any FATAL error), or the server became a
/// read-only standby (25006), so a new connection must find the primary.
fn session_lost(error: &postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    error.as_db_error().is_some_and(|db| {
        db.code().code().starts_with("57P")
            || db.code() == &postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION
            || db.severity() == "FATAL"
    })
}

fn postgres_row(row: &postgres::Row) -> Result<Row, StoreError> {
    let mut values = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(index)?.map(Value::Integer),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(index)?
                .map(|value| Value::Integer(value.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(index)?
                .map(|value| Value::Integer(value.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(index)?
                .map(|value| Value::Integer(value.into())),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                row.try_get::<_, Option<String>>(index)?.map(Value::Text)
            }
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(index)?.map(Value::Blob),
            ref other => {
                return Err(StoreError::Corrupt(format!(
                    "column {:?} has the unsupported type {other}",
                    column.name()
                )));
            }
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

/// Rewrites SQLite's numbered parameters `?N` as PostgreSQL's `$N`. The store's statements
/// contain no `?` inside string literals, so a plain scan suffices.
fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollar_numbers() {
        assert_eq!(
            postgres_placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = $12"
        );
    }

    #[test]
    fn placeholders_leave_lone_question_marks() {
        assert_eq!(postgres_placeholders("SELECT '?' , ?"), "SELECT '?' , ?");
    }

    #[test]
    fn row_get_rejects_wrong_type() {
        let row = Row(vec![Value::Text("x".to_owned())]);
        assert!(row.get::<i64>(0).is_err());
        assert_eq!(row.get::<String>(0).ok().as_deref(), Some("x"));
        assert_eq!(row.get::<Option<i64>>(1).ok(), Some(None));
    }
}
