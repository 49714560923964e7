//! The storage layer: the only module that speaks SQL. Queries that both
//! databases understand are written once here, through the `on_reader!`/`on_writer!`
//! macros that run the same statement text on whichever pool is open;
//! `sqlite.rs` and `postgres.rs` hold every dialect difference (connection
//! setup, migrations, JSON and locking syntax). Nothing above this module knows
//! which database it runs on, and it imports nothing from the rest of the server
//! but the error codes.

use crate::config::DatabaseConfig;
use crate::error::{ApiFailure, ErrorCode};

/// What went wrong talking to the database.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or opened (logged, never sent to clients).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique key is already taken.
    #[error("already exists")]
    AlreadyExists,
    /// The transaction lost a race (deadlock, serialization failure); retrying may succeed.
    #[error("transaction conflict: {0}")]
    Conflict(String),
    /// A statement ran past the query time limit and was cancelled.
    #[error("the query ran longer than its time limit; narrow it or add an index")]
    TimedOut,
    /// Any other database failure (logged with an id; the client sees only the id).
    #[error("database error: {0}")]
    Internal(String),
}

impl ApiFailure for StoreError {
    fn code(&self) -> ErrorCode {
        match self {
            StoreError::Unavailable(_) => ErrorCode::Unavailable,
            StoreError::AlreadyExists => ErrorCode::AlreadyExists,
            StoreError::Conflict(_) => ErrorCode::Unavailable,
            StoreError::TimedOut => ErrorCode::DeadlineExceeded,
            StoreError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Explicit mapping of driver errors: constraint violations become their own
/// variants, connection trouble is `Unavailable`, the rest is `Internal`.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists,
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")) => {
                StoreError::Conflict(e.to_string())
            }
            // PostgreSQL's query_canceled (statement_timeout), SQLite's SQLITE_INTERRUPT (progress handler).
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("57014" | "9")) => StoreError::TimedOut,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Internal(format!("migration failed: {e}"))
    }
}

/// The open connection pools of one backend.
enum Pools {
    Sqlite(sqlite::SqlitePools),
    Postgres(sqlx::PgPool),
}

/// Runs `$body` with `$pool` bound to a pool that may serve reads.
macro_rules! on_reader {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &*$store.pools {
            $crate::store::Pools::Sqlite(pools) => {
                let $pool = &pools.readers;
                $body
            }
            $crate::store::Pools::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` with `$pool` bound to the pool that takes writes (on SQLite,
/// sqlx's write connection, in its turn: the writer thread is not writing).
macro_rules! on_writer {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &*$store.pools {
            $crate::store::Pools::Sqlite(pools) => {
                let _turn = pools.write_turn().await;
                let $pool = &pools.writer;
                $body
            }
            $crate::store::Pools::Postgres($pool) => $body,
        }
    };
}

pub mod auth;
pub mod changes;
pub mod commit;
mod copy;
pub mod deployments;
pub mod documents;
pub mod invocations;
pub mod jobs;
mod matching;
mod postgres;
pub mod query;
pub mod sessions;
mod sqlite;

/// A handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Store {
    pools: std::sync::Arc<Pools>,
    /// Collections with declared indexes of their own (see `ensure_index`).
    indexed: std::sync::Arc<std::sync::RwLock<std::collections::HashSet<String>>>,
    /// Queries (lists, counts, aggregates) running at once are bounded below
    /// the read connections, so however slow they are, reads by id and
    /// writes always find a connection.
    query_slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// Bumped after every document commit of this process (`local_commits`).
    commits: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Sessions that ended (`session_changes`).
    sessions: tokio::sync::broadcast::Sender<std::sync::Arc<sessions::SessionChange>>,
    /// Where commits hand their trigger jobs (`jobs::JobHandoff`).
    handoff: std::sync::Arc<jobs::JobHandoff>,
}

impl Store {
    /// Connects (creating the SQLite file and its folder when needed); does
    /// not migrate. A read statement that runs longer than `statement_limit`
    /// is cancelled (`TimedOut`).
    pub async fn connect(config: &DatabaseConfig, statement_limit: std::time::Duration) -> Result<Store, StoreError> {
        let handoff = std::sync::Arc::new(jobs::JobHandoff::default());
        let pools = match config {
            DatabaseConfig::Sqlite { path } => {
                Pools::Sqlite(sqlite::SqlitePools::open(path, statement_limit, handoff.clone()).await?)
            }
            DatabaseConfig::Postgres { url } => Pools::Postgres(postgres::connect(url, statement_limit).await?),
        };
        let query_slots = match pools {
            Pools::Sqlite(_) => sqlite::QUERY_SLOTS,
            Pools::Postgres(_) => postgres::QUERY_SLOTS,
        };
        Ok(Store {
            pools: std::sync::Arc::new(pools),
            indexed: Default::default(),
            query_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(query_slots)),
            commits: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
            sessions: tokio::sync::broadcast::Sender::new(1024),
            handoff,
        })
    }

    /// On SQLite, the count of document reads by the thread that answered
    /// them (`nimbus_sqlite_reads_total`), for the app to register.
    pub fn sqlite_reads(&self) -> Option<prometheus::IntCounterVec> {
        match &*self.pools {
            Pools::Sqlite(pools) => Some(pools.documents.answered.clone()),
            Pools::Postgres(_) => None,
        }
    }

    /// `"sqlite"` or `"postgres"`, for logs.
    pub fn backend_name(&self) -> &'static str {
        match *self.pools {
            Pools::Sqlite(_) => "sqlite",
            Pools::Postgres(_) => "postgres",
        }
    }

    /// Applies pending migrations from `migrations/<backend>/`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &*self.pools {
            Pools::Sqlite(pools) => {
                let _turn = pools.write_turn().await;
                sqlite::MIGRATOR.run(&pools.writer).await?
            }
            Pools::Postgres(pool) => postgres::migrate(pool).await?,
        }
        Ok(())
    }

    /// A consistent online copy of the whole SQLite database in `file`, which
    /// must not exist; `false` on PostgreSQL, which has its own tools (pg_dump).
    pub async fn backup_to(&self, file: &std::path::Path) -> Result<bool, StoreError> {
        match &*self.pools {
            Pools::Sqlite(pools) => sqlite::copy_into(&pools.readers, file).await.map(|()| true),
            Pools::Postgres(_) => Ok(false),
        }
    }

    /// Whether the database passes its integrity check (SQLite; PostgreSQL checks itself).
    pub async fn is_intact(&self) -> Result<bool, StoreError> {
        match &*self.pools {
            Pools::Sqlite(pools) => sqlite::is_intact(&pools.readers).await,
            Pools::Postgres(_) => Ok(true),
        }
    }

    /// Whether the database answers and every migration this binary knows is applied.
    pub async fn ready(&self) -> Result<bool, StoreError> {
        let known = match *self.pools {
            Pools::Sqlite(_) => sqlite::MIGRATOR.iter().count(),
            Pools::Postgres(_) => postgres::MIGRATOR.iter().count(),
        };
        let applied: i64 = on_reader!(self, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(pool).await?
        });
        Ok(applied as usize == known)
    }

    /// Runs one writing statement with its parameters; answers the rows it touched.
    pub(in crate::store) async fn execute(&self, sql: &str, params: &[query::Param]) -> Result<u64, StoreError> {
        if let Pools::Sqlite(pools) = &*self.pools {
            let (sql, params) = (sql.to_owned(), params.to_vec());
            return pools.queue.run(move |connection| sqlite::execute(connection, &sql, &params)).await;
        }
        Ok(on_writer!(self, |pool| documents::bind_params!(sqlx::query(sql), params)
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// Runs writing statements in one transaction: all or none.
    pub(in crate::store) async fn execute_together(
        &self,
        statements: &[(&str, &[query::Param])],
    ) -> Result<(), StoreError> {
        if let Pools::Sqlite(pools) = &*self.pools {
            let owned: Vec<(String, Vec<query::Param>)> =
                statements.iter().map(|(sql, params)| ((*sql).to_owned(), params.to_vec())).collect();
            return pools.queue.run(move |connection| sqlite::execute_together(connection, &owned)).await;
        }
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            for (sql, params) in statements {
                documents::bind_params!(sqlx::query(sql), *params).execute(&mut *tx).await?;
            }
            tx.commit().await?
        });
        Ok(())
    }

    pub async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(on_reader!(self, |pool| {
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(pool).await?
        }))
    }

    /// Stores `value` unless the key exists; returns whether it was stored.
    pub async fn insert_setting_if_absent(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        let sql = "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
        Ok(self.execute(sql, &[key.into(), value.into()]).await? == 1)
    }

    /// Closes every pool, waiting for connections in use.
    pub async fn close(&self) {
        match &*self.pools {
            Pools::Sqlite(pools) => pools.close().await,
            Pools::Postgres(pool) => pool.close().await,
        }
    }
}

impl Store {
    /// Waits for one of the query slots (see `query_slots`).
    async fn query_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        self.query_slots.acquire().await.map_err(|_| StoreError::Unavailable("the store is closed".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A read that never ends on its own: counts an endless recursive sequence.
    const ENDLESS: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

    async fn run_endless(store: &Store) -> Result<i64, StoreError> {
        Ok(on_reader!(store, |pool| sqlx::query_scalar::<_, i64>(ENDLESS).fetch_one(pool).await?))
    }

    #[tokio::test]
    async fn a_long_sqlite_read_is_cut_at_the_statement_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = DatabaseConfig::Sqlite { path: dir.path().join("t.db") };
        let store = Store::connect(&config, Duration::from_millis(200)).await.expect("open");
        let started = Instant::now();
        assert!(matches!(run_endless(&store).await, Err(StoreError::TimedOut)));
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        let quick: i64 =
            on_reader!(store, |pool| sqlx::query_scalar("SELECT 1").fetch_one(pool).await.expect("select"));
        assert_eq!(quick, 1, "the connection serves the next read");
    }

    #[tokio::test]
    async fn a_long_postgres_read_is_cut_at_the_statement_limit() {
        let url = std::env::var("NIMBUS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let config = DatabaseConfig::Postgres { url: secrecy::SecretString::from(url) };
        let store = Store::connect(&config, Duration::from_millis(200)).await.expect("connect");
        let started = Instant::now();
        let slept = on_reader!(store, |pool| sqlx::query("SELECT pg_sleep(5)").execute(pool).await.map(|_| ()));
        assert!(matches!(slept.map_err(StoreError::from), Err(StoreError::TimedOut)));
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }
}
