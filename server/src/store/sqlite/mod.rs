//! SQLite specifics: WAL mode, checkpointed by a thread of its own
//! (`checkpoint.rs`, decision 0021); the group-commit writer thread on a
//! rusqlite connection of its own (`writer.rs`) and sqlx's write connection
//! for the other writes, one at a time; the document readers on rusqlite
//! (`readers.rs`) and a small pool of read-only sqlx connections for the rest
//! (decision 0020); the rusqlite helpers both use; and the SQLite flavour of
//! every dialect-specific query.

mod checkpoint;
mod readers;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::commit::WriteSql;
use super::jobs::JobHandoff;
use super::query::{Dialect, FieldPath, Param, Scalar};
use super::StoreError;
pub(super) use readers::DocumentReaders;
pub(super) use writer::{WriteQueue, WriteTurn};

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

const READERS: u32 = 4;
/// Queries at once: one read connection stays free for reads by id.
pub(super) const QUERY_SLOTS: usize = READERS as usize - 1;

pub(super) struct SqlitePools {
    pub writer: SqlitePool,
    pub readers: SqlitePool,
    /// Documents by key and query pages, without sqlx (`readers.rs`).
    pub documents: DocumentReaders,
    pub queue: WriteQueue,
    checkpoints: std::sync::Arc<checkpoint::Checkpoints>,
}

impl SqlitePools {
    pub async fn open(path: &Path, statement_limit: Duration, handoff: Arc<JobHandoff>) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // The checkpointer thread keeps the WAL short (`checkpoint.rs`).
            .pragma("wal_autocheckpoint", checkpoint::WRITER_BACKSTOP.to_string());
        // A connection to a local file does not go stale: skip sqlx's ping
        // before every acquire, a round trip to the connection's thread that
        // cost as much as the query itself.
        let pool = || SqlitePoolOptions::new().test_before_acquire(false);
        let writer = pool().max_connections(1).connect_with(options.clone()).await?;
        let readers = pool()
            .max_connections(READERS)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    let mut deadline = StatementDeadline::new(statement_limit);
                    connection.lock_handle().await?.set_progress_handler(PROGRESS_EVERY, move || deadline.check());
                    Ok(())
                })
            })
            .connect_with(options.read_only(true))
            .await?;
        let runtime_threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let documents = DocumentReaders::open(path, READERS as usize, runtime_threads, statement_limit)?;
        let checkpoints = checkpoint::Checkpoints::start(path)?;
        let queue = WriteQueue::start(path, checkpoints.clone(), handoff)?;
        Ok(SqlitePools { writer, readers, documents, queue, checkpoints })
    }

    /// Waits for the write connection (the writer thread hands it over).
    pub async fn write_turn(&self) -> WriteTurn {
        self.queue.turn().await
    }

    pub async fn close(&self) {
        self.checkpoints.stop();
        self.documents.close();
        self.readers.close().await;
        let _turn = self.write_turn().await;
        self.writer.close().await;
    }
}

/// The query plan of `sql`, one line per step.
/// A consistent copy of the database in `file` (`VACUUM INTO` reads one
/// snapshot, so writers go on meanwhile; the copy has no WAL to go with it).
pub(super) async fn copy_into(readers: &SqlitePool, file: &std::path::Path) -> Result<(), StoreError> {
    sqlx::query("VACUUM INTO ?").bind(file.display().to_string()).execute(readers).await?;
    Ok(())
}

/// Whether the database file is whole (`PRAGMA integrity_check`).
pub(super) async fn is_intact(readers: &SqlitePool) -> Result<bool, StoreError> {
    let verdict: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(readers).await?;
    Ok(verdict == "ok")
}

pub(super) async fn explain(readers: &SqlitePool, sql: &super::query::Sql) -> Result<Vec<String>, StoreError> {
    let text = format!("EXPLAIN QUERY PLAN {}", sql.text);
    let rows = super::documents::bind_params!(sqlx::query(&text), &sql.params).fetch_all(readers).await?;
    Ok(rows.iter().map(|r| sqlx::Row::try_get::<String, _>(r, 3)).collect::<Result<_, _>>()?)
}

/// Virtual machine steps between calls of a reader's progress handler: a
/// statement shorter than this (a lookup by id, a page of a list) never
/// calls it.
const PROGRESS_EVERY: i32 = 50_000;
/// A pause this long between calls means a new statement began.
const NEW_STATEMENT_GAP: Duration = Duration::from_millis(20);

/// SQLite has no statement timeout; a reader's progress handler provides one.
/// The handler runs every `PROGRESS_EVERY` steps of a running statement, so
/// calls closer together than `NEW_STATEMENT_GAP` belong to the same one
/// (or to heavy statements run back to back, which count as one). When that
/// run exceeds the limit, the handler interrupts it (SQLITE_INTERRUPT →
/// `StoreError::TimedOut`). See decision 0010.
struct StatementDeadline {
    limit: Duration,
    started: Instant,
    last: Instant,
}

impl StatementDeadline {
    fn new(limit: Duration) -> StatementDeadline {
        let now = Instant::now();
        StatementDeadline { limit, started: now, last: now - NEW_STATEMENT_GAP * 2 }
    }

    /// `false` interrupts the running statement.
    fn check(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.last) > NEW_STATEMENT_GAP {
            self.started = now;
        }
        self.last = now;
        now.duration_since(self.started) < self.limit
    }
}

/// SQLite reads JSON fields with `json_type` / `json_extract`.
pub(super) struct SqliteDialect;

fn json_path(field: &FieldPath) -> String {
    format!("'$.{}'", field.segments().join("."))
}

/// The path of a timestamp's text inside the field (`$.at."$timestamp"`).
fn timestamp_path(field: &FieldPath) -> String {
    format!("'$.{}.\"{}\"'", field.segments().join("."), nimbus_rules_lang::time::TIMESTAMP_KEY)
}

impl Dialect for SqliteDialect {
    fn rank(&self, field: &FieldPath) -> String {
        format!(
            "(CASE json_type(data, {}) WHEN 'null' THEN 0 WHEN 'true' THEN 1 WHEN 'false' THEN 1 \
             WHEN 'integer' THEN 2 WHEN 'real' THEN 2 WHEN 'text' THEN 4 WHEN 'array' THEN 5 \
             WHEN 'object' THEN (CASE json_type(data, {}) WHEN 'text' THEN 3 ELSE 6 END) END)",
            json_path(field),
            timestamp_path(field)
        )
    }

    fn num(&self, field: &FieldPath) -> String {
        let p = json_path(field);
        format!(
            "(CASE json_type(data, {p}) WHEN 'true' THEN 1.0 WHEN 'false' THEN 0.0 \
             WHEN 'integer' THEN CAST(json_extract(data, {p}) AS REAL) WHEN 'real' THEN json_extract(data, {p}) ELSE 0.0 END)"
        )
    }

    fn text(&self, field: &FieldPath) -> String {
        let p = json_path(field);
        let t = timestamp_path(field);
        format!(
            "(CASE json_type(data, {p}) WHEN 'text' THEN json_extract(data, {p}) \
             WHEN 'object' THEN COALESCE(json_extract(data, {t}), '') ELSE '' END)"
        )
    }

    fn array_contains(&self, field: &FieldPath, value: &Scalar, param: &str) -> String {
        let p = json_path(field);
        let element = match value {
            Scalar::Null => "je.type = 'null'".to_owned(),
            Scalar::Bool(true) => "je.type = 'true'".to_owned(),
            Scalar::Bool(false) => "je.type = 'false'".to_owned(),
            Scalar::Number(_) => format!("je.type IN ('integer', 'real') AND je.value = {param}"),
            Scalar::String(_) => format!("je.type = 'text' AND je.value = {param}"),
            Scalar::Timestamp(_) => format!(
                "je.type = 'object' AND json_extract(je.value, '$.\"{}\"') = {param}",
                nimbus_rules_lang::time::TIMESTAMP_KEY
            ),
        };
        format!(
            "(json_type(data, {p}) = 'array' AND EXISTS (SELECT 1 FROM json_each(documents.data, {p}) AS je WHERE {element}))"
        )
    }

    fn array_element_param(&self, value: &Scalar) -> Option<Param> {
        match value {
            Scalar::Null | Scalar::Bool(_) => None,
            Scalar::Number(n) => Some(Param::Real(*n)),
            Scalar::String(s) | Scalar::Timestamp(s) => Some(Param::Text(s.clone())),
        }
    }

    fn data_text(&self) -> &'static str {
        "data"
    }

    fn last_chars(&self, column: &str, n: usize) -> String {
        format!("substr({column}, -{n})")
    }

    /// One writer at a time: nothing to skip.
    fn skip_locked(&self) -> &'static str {
        ""
    }
}

pub(super) static WRITE_SQL: WriteSql = WriteSql {
    select_current:
        "SELECT id, data, version, create_time, update_time FROM documents WHERE collection = $1 AND id = $2",
    insert:
        "INSERT INTO documents (collection, id, data, version, create_time, update_time) VALUES ($1, $2, $3, 1, $4, $4)",
    update: "UPDATE documents SET data = $3, version = version + 1, update_time = $4 WHERE collection = $1 AND id = $2",
    delete: "DELETE FROM documents WHERE collection = $1 AND id = $2",
    json_param: "",
};

// ---- rusqlite (the document readers and the writer thread) -------------------

/// The document `collection/id` as stored (`WRITE_SQL.select_current`).
pub(super) fn document_row(
    connection: &rusqlite::Connection,
    collection: &str,
    id: &str,
) -> rusqlite::Result<Option<super::documents::StoredDoc>> {
    let mut statement = connection.prepare_cached(WRITE_SQL.select_current)?;
    let mut rows = statement.query((collection, id))?;
    let Some(row) = rows.next()? else { return Ok(None) };
    Ok(Some(super::documents::StoredDoc {
        collection: collection.to_owned(),
        id: row.get(0)?,
        data: row.get(1)?,
        version: row.get(2)?,
        create_time: row.get(3)?,
        update_time: row.get(4)?,
    }))
}

/// Runs one writing statement on the writer's connection; the rows it touched.
pub(super) fn execute(connection: &rusqlite::Connection, sql: &str, params: &[Param]) -> Result<u64, StoreError> {
    let mut statement = connection.prepare_cached(sql).map_err(store_error)?;
    bind_dollars(&mut statement, sql, params).map_err(store_error)?;
    Ok(statement.raw_execute().map_err(store_error)? as u64)
}

/// Runs writing statements in one transaction: all or none.
pub(super) fn execute_together(
    connection: &mut rusqlite::Connection,
    statements: &[(String, Vec<Param>)],
) -> Result<(), StoreError> {
    let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(store_error)?;
    for (sql, params) in statements {
        execute(&tx, sql, params)?;
    }
    tx.commit().map_err(store_error)
}

/// The rows a statement answers (a `RETURNING` one), each made by `row`.
pub(super) fn query_rows<T>(
    connection: &rusqlite::Connection,
    sql: &str,
    params: &[Param],
    mut row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = connection.prepare_cached(sql).map_err(store_error)?;
    bind_dollars(&mut statement, sql, params).map_err(store_error)?;
    let mut rows = statement.raw_query();
    let mut found = Vec::new();
    while let Some(next) = rows.next().map_err(store_error)? {
        found.push(row(next).map_err(store_error)?);
    }
    Ok(found)
}

/// Binds each `$n` of `sql`'s statement to `params[n - 1]`: in order when the
/// placeholders first appear as `$1, $2, …` (as `store::query` writes them),
/// else found by name (SQLite finds a name by walking the list of every
/// parameter, so by name costs the square of their number).
fn bind_dollars(statement: &mut rusqlite::Statement<'_>, sql: &str, params: &[Param]) -> rusqlite::Result<()> {
    if statement.parameter_count() == params.len() && placeholders_in_order(sql) {
        return bind_in_order(statement, params);
    }
    for index in 1..=statement.parameter_count() {
        let number = statement.parameter_name(index).and_then(|name| name.strip_prefix('$')?.parse::<usize>().ok());
        let param = number.and_then(|n| params.get(n.checked_sub(1)?));
        let Some(param) = param else { return Err(rusqlite::Error::InvalidParameterCount(index, params.len())) };
        bind_one(statement, index, param)?;
    }
    Ok(())
}

/// Whether the `$n` placeholders of `sql` first appear in the order 1, 2, 3, …
/// (so SQLite numbers them as they are named). A `$` inside a string literal
/// makes the answer `false`, which only costs the lookup by name.
fn placeholders_in_order(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    let mut highest = 0usize;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'\'' => return false,
            b'$' => {
                let digits = bytes[at + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                let Ok(number) = sql[at + 1..at + 1 + digits].parse::<usize>() else { return false };
                if number == highest + 1 {
                    highest = number;
                } else if number > highest {
                    return false;
                }
                at += digits;
            }
            _ => {}
        }
        at += 1;
    }
    true
}

/// Binds `params` in order to `$1…$n` of a statement whose placeholders
/// appear in that order: no lookup by name.
fn bind_in_order(statement: &mut rusqlite::Statement<'_>, params: &[Param]) -> rusqlite::Result<()> {
    if statement.parameter_count() != params.len() {
        return Err(rusqlite::Error::InvalidParameterCount(params.len(), statement.parameter_count()));
    }
    for (at, param) in params.iter().enumerate() {
        bind_one(statement, at + 1, param)?;
    }
    Ok(())
}

fn bind_one(statement: &mut rusqlite::Statement<'_>, index: usize, param: &Param) -> rusqlite::Result<()> {
    match param {
        Param::Int(v) => statement.raw_bind_parameter(index, v),
        Param::Real(v) => statement.raw_bind_parameter(index, v),
        Param::Text(v) => statement.raw_bind_parameter(index, v),
        Param::Bool(v) => statement.raw_bind_parameter(index, v),
        Param::MaybeText(v) => statement.raw_bind_parameter(index, v),
    }
}

/// A rusqlite failure in the store's terms (as `From<sqlx::Error>` maps SQLite's codes).
pub(super) fn store_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::OperationInterrupted) => StoreError::TimedOut,
        Some(ErrorCode::ConstraintViolation) if is_unique_violation(&e) => StoreError::AlreadyExists,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    const PRIMARY_KEY: i32 = 1555; // SQLITE_CONSTRAINT_PRIMARYKEY
    const UNIQUE: i32 = 2067; // SQLITE_CONSTRAINT_UNIQUE
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == PRIMARY_KEY || f.extended_code == UNIQUE)
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_in_order_are_told_from_the_others() {
        use super::placeholders_in_order as in_order;
        assert!(in_order("SELECT 1"));
        assert!(in_order("DELETE FROM jobs WHERE id IN ($1, $2, $3)"));
        assert!(in_order("VALUES ($1, $2, $3, 1, $4, $4), ($5, $6, $7, 1, $8, $8)"), "a repeat is fine");
        assert!(!in_order("UPDATE d SET data = $3, t = $4 WHERE c = $1 AND id = $2"));
        assert!(!in_order("SELECT $2, $1"));
        assert!(!in_order("SELECT '$1', $1"), "a literal is not looked into");
        assert!(!in_order("SELECT $1, $10"), "a gap");
    }
}
