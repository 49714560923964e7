//! PostgreSQL specifics: one connection pool shared by reads and writes, and
//! the PostgreSQL flavour of every dialect-specific query.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::commit::{apply_writes, record_changes, Commit, CommitError, Committed, WriteSql};
use super::jobs::{record_jobs, JobHandoff};
use super::query::{Dialect, FieldPath, Param, Scalar};
use super::StoreError;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Connections in the pool, shared by reads and writes.
const CONNECTIONS: u32 = 16;
/// Queries at once: the other connections stay free for reads by id and writes.
pub(super) const QUERY_SLOTS: usize = CONNECTIONS as usize / 2;

/// Every connection starts with `statement_timeout` set to the query time
/// limit; migrations and index builds lift it for their own statements.
pub(super) async fn connect(url: &SecretString, statement_limit: Duration) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url.expose_secret())
        .map_err(|_| StoreError::Unavailable("invalid PostgreSQL URL".into()))?
        .options([("statement_timeout", format!("{}ms", statement_limit.as_millis().max(1)))]);
    Ok(PgPoolOptions::new()
        .max_connections(CONNECTIONS)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?)
}

/// The query plan of `sql` (index scans preferred, as on a table with enough
/// rows), one line per step.
pub(super) async fn explain(pool: &PgPool, sql: &super::query::Sql) -> Result<Vec<String>, StoreError> {
    let text = format!("EXPLAIN {}", sql.text);
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await?;
    let rows = super::documents::bind_params!(sqlx::query(&text), &sql.params).fetch_all(&mut *tx).await?;
    Ok(rows.iter().map(|r| sqlx::Row::try_get::<String, _>(r, 0)).collect::<Result<_, _>>()?)
}

/// Applies the migrations on one connection without the statement time limit.
pub(super) async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut connection = pool.acquire().await?;
    sqlx::query("SET statement_timeout = 0").execute(&mut *connection).await?;
    let migrated = MIGRATOR.run(&mut *connection).await;
    sqlx::query("RESET statement_timeout").execute(&mut *connection).await?;
    Ok(migrated?)
}

/// The advisory lock schema statements take, so instances that start at once
/// build each declared index once (a second `CREATE INDEX IF NOT EXISTS` racing
/// the first fails on the catalog's unique name instead of waiting).
const SCHEMA_LOCK: i64 = 0x6e_696d_6275_7301; // "nimbus" + 1

/// Runs one schema statement (an index build or drop) without the statement
/// time limit, one instance at a time.
pub(super) async fn execute_without_time_limit(pool: &PgPool, sql: &str) -> Result<(), StoreError> {
    let mut transaction = pool.begin().await?;
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *transaction).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SCHEMA_LOCK).execute(&mut *transaction).await?;
    sqlx::query(sql).execute(&mut *transaction).await?;
    transaction.commit().await?;
    Ok(())
}

/// PostgreSQL reads JSON fields with `#>` / `#>>` and `jsonb_typeof`; strings
/// compare with the "C" collation (bytewise, as SQLite does).
pub(super) struct PostgresDialect;

fn json_path(field: &FieldPath) -> String {
    format!("'{{{}}}'", field.segments().join(","))
}

/// The path of a timestamp's text inside the field (`{at,$timestamp}`).
fn timestamp_path(field: &FieldPath) -> String {
    format!("'{{{},{}}}'", field.segments().join(","), nimbus_rules_lang::time::TIMESTAMP_KEY)
}

impl Dialect for PostgresDialect {
    fn rank(&self, field: &FieldPath) -> String {
        format!(
            "(CASE jsonb_typeof(data #> {}) WHEN 'null' THEN 0::int8 WHEN 'boolean' THEN 1::int8 WHEN 'number' THEN 2::int8 \
             WHEN 'string' THEN 4::int8 WHEN 'array' THEN 5::int8 \
             WHEN 'object' THEN (CASE jsonb_typeof(data #> {}) WHEN 'string' THEN 3::int8 ELSE 6::int8 END) END)",
            json_path(field),
            timestamp_path(field)
        )
    }

    fn num(&self, field: &FieldPath) -> String {
        let p = json_path(field);
        format!(
            "(CASE jsonb_typeof(data #> {p}) WHEN 'number' THEN (data #> {p})::float8 \
             WHEN 'boolean' THEN (CASE WHEN (data #> {p})::boolean THEN 1.0::float8 ELSE 0.0::float8 END) ELSE 0.0::float8 END)"
        )
    }

    fn text(&self, field: &FieldPath) -> String {
        let p = json_path(field);
        let t = timestamp_path(field);
        format!(
            "((CASE jsonb_typeof(data #> {p}) WHEN 'string' THEN data #>> {p} \
             WHEN 'object' THEN COALESCE(data #>> {t}, '') ELSE '' END) COLLATE \"C\")"
        )
    }

    fn array_contains(&self, field: &FieldPath, _value: &Scalar, param: &str) -> String {
        let p = json_path(field);
        format!("(jsonb_typeof(data #> {p}) = 'array' AND (data #> {p}) @> jsonb_build_array({param}::jsonb))")
    }

    fn array_element_param(&self, value: &Scalar) -> Option<Param> {
        let json = match value {
            Scalar::Null => serde_json::Value::Null,
            Scalar::Bool(b) => serde_json::Value::Bool(*b),
            Scalar::Number(n) => serde_json::json!(n),
            Scalar::String(s) => serde_json::Value::String(s.clone()),
            Scalar::Timestamp(t) => serde_json::json!({ nimbus_rules_lang::time::TIMESTAMP_KEY: t }),
        };
        Some(Param::Text(json.to_string()))
    }

    fn data_text(&self) -> &'static str {
        "data::text"
    }

    fn last_chars(&self, column: &str, n: usize) -> String {
        format!("right({column}, {n})")
    }

    fn skip_locked(&self) -> &'static str {
        " FOR UPDATE SKIP LOCKED"
    }
}

static WRITE_SQL: WriteSql = WriteSql {
    select_current: "SELECT id, data::text, version, create_time, update_time FROM documents \
                     WHERE collection = $1 AND id = $2 FOR UPDATE",
    insert: "INSERT INTO documents (collection, id, data, version, create_time, update_time) \
             VALUES ($1, $2, $3::jsonb, 1, $4, $4)",
    update: "UPDATE documents SET data = $3::jsonb, version = version + 1, update_time = $4 \
             WHERE collection = $1 AND id = $2",
    delete: "DELETE FROM documents WHERE collection = $1 AND id = $2",
    json_param: "::jsonb",
};

/// Attempts at a commit that loses a race (a concurrent insert of the same id,
/// a deadlock between two batches) before giving up.
const ATTEMPTS: usize = 4;

/// Ends a refused commit's transaction at once. A dropped transaction would
/// only be rolled back when its connection is next used, staying "idle in
/// transaction" with its id meanwhile — and realtime positions wait for every
/// transaction in flight (decision 0014).
async fn rollback(tx: sqlx::Transaction<'_, sqlx::Postgres>) {
    if let Err(e) = tx.rollback().await {
        tracing::warn!("rolling back a refused commit failed: {e}");
    }
}

/// Runs the writes in one transaction, row locks taken as they are read.
pub(super) async fn commit(pool: &PgPool, commit: Commit, handoff: &JobHandoff) -> Result<Vec<Committed>, CommitError> {
    let writes = &commit.writes;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let now = commit.time;
        let mut tx = pool.begin().await.map_err(StoreError::from)?;
        let result = match apply_writes!(tx, &WRITE_SQL, writes, now, commit.id) {
            Ok(committed) => {
                let jobs = commit.jobs.as_ref().map(|jobs_for| jobs_for(&committed, now)).unwrap_or_default();
                let reserved = handoff.reserve(jobs.len(), now);
                let recorded = match record_changes!(tx, &WRITE_SQL, committed.iter()) {
                    Ok(()) => record_jobs!(tx, &jobs, reserved, now),
                    Err(e) => Err(e),
                };
                match recorded {
                    Ok(()) => match tx.commit().await {
                        Ok(()) => {
                            handoff.hand_over(&jobs, reserved, now);
                            Ok(committed)
                        }
                        Err(e) => Err(CommitError::Store(e.into())),
                    },
                    Err(e) => {
                        rollback(tx).await;
                        Err(CommitError::Store(e))
                    }
                }
            }
            Err(e) => {
                rollback(tx).await;
                Err(e)
            }
        };
        match result {
            Err(CommitError::Store(StoreError::AlreadyExists | StoreError::Conflict(_))) if attempt < ATTEMPTS => {
                continue
            }
            other => return other,
        }
    }
}
