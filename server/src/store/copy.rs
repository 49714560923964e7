//! `nimbus copy --to postgres://…`: every row of a project's SQLite database
//! — users and sessions, signing keys, documents, the change log, pending jobs
//! and dead letters, settings, deployments, the invocation log — copied into
//! an empty PostgreSQL database, read in one SQLite snapshot and written in
//! one PostgreSQL transaction, each table's row count checked on both sides,
//! and the change log's sequence set to go on from where it was.

use sqlx::Row;

use super::{Pools, Store, StoreError};

/// Every table, each after the tables it refers to.
const TABLES: &[&str] = &[
    "settings",
    "users",
    "sessions",
    "refresh_tokens",
    "email_tokens",
    "signin_failures",
    "signing_keys",
    "documents",
    "changes",
    "jobs",
    "schedule_ticks",
    "deployments",
    "invocations",
];

/// Rows read and inserted at a time.
const ROWS_PER_BATCH: i64 = 500;

/// One value on its way, typed as the PostgreSQL column wants it.
enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Real(Option<f64>),
}

/// A PostgreSQL column: its name and type (`information_schema`'s `data_type`).
struct Column {
    name: String,
    data_type: String,
}

impl Store {
    /// Whether the database holds any table (a copy goes only into an empty one).
    pub async fn has_tables(&self) -> Result<bool, StoreError> {
        let count: i64 = match &*self.pools {
            Pools::Sqlite(pools) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
                    .fetch_one(&pools.readers)
                    .await?
            }
            Pools::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
                )
                .fetch_one(pool)
                .await?
            }
        };
        Ok(count > 0)
    }

    /// Copies this SQLite database into `target`, an empty PostgreSQL database
    /// it migrates first; answers each table's row count (equal on both sides).
    pub async fn copy_to(&self, target: &Store) -> Result<Vec<(&'static str, i64)>, StoreError> {
        let (Pools::Sqlite(source), Pools::Postgres(destination)) = (&*self.pools, &*target.pools) else {
            return Err(StoreError::Internal("a copy reads SQLite and writes PostgreSQL".into()));
        };
        target.migrate().await?;
        let mut snapshot = source.readers.begin().await?;
        let mut copying = destination.begin().await?;
        check_every_table_is_known(&mut copying).await?;
        let mut counts = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            let columns = columns_of(&mut copying, table).await?;
            let copied = copy_table(&mut snapshot, &mut copying, table, &columns).await?;
            let there: i64 =
                sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&mut *copying).await?;
            let here: i64 =
                sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&mut *snapshot).await?;
            if there != here || copied != here {
                return Err(StoreError::Internal(format!("{table}: {here} rows here, {there} copied")));
            }
            counts.push((*table, here));
        }
        // The change log goes on from its last position.
        sqlx::query("SELECT setval(pg_get_serial_sequence('changes', 'seq'), COALESCE((SELECT MAX(seq) FROM changes), 0) + 1, false)")
            .execute(&mut *copying)
            .await?;
        copying.commit().await?;
        snapshot.commit().await?;
        Ok(counts)
    }
}

/// Refuses a database with a table this copy does not know (a newer migration
/// than the copy was written for would otherwise be left behind silently).
async fn check_every_table_is_known(db: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() \
         AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut *db)
    .await?;
    match tables.iter().find(|t| !TABLES.contains(&t.as_str())) {
        Some(unknown) => Err(StoreError::Internal(format!("the copy does not know the table {unknown}"))),
        None => Ok(()),
    }
}

async fn columns_of(db: &mut sqlx::PgConnection, table: &str) -> Result<Vec<Column>, StoreError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *db)
    .await?;
    Ok(rows.into_iter().map(|(name, data_type)| Column { name, data_type }).collect())
}

/// Copies one table in batches, in rowid order; answers the rows copied.
async fn copy_table(
    snapshot: &mut sqlx::SqliteConnection,
    copying: &mut sqlx::PgConnection,
    table: &str,
    columns: &[Column],
) -> Result<i64, StoreError> {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let select = format!(
        "SELECT rowid, {} FROM {table} WHERE rowid > $1 ORDER BY rowid LIMIT {ROWS_PER_BATCH}",
        names.join(", ")
    );
    let casts: Vec<String> = columns.iter().map(|c| format!("::{}", c.data_type)).collect();
    let casts: Vec<&str> = casts.iter().map(String::as_str).collect();
    let (mut after, mut copied) = (i64::MIN, 0);
    loop {
        let rows = sqlx::query(&select).bind(after).fetch_all(&mut *snapshot).await?;
        let Some(last) = rows.last() else { return Ok(copied) };
        after = last.try_get(0)?;
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES {}",
            names.join(", "),
            super::query::value_rows(rows.len(), &casts)
        );
        let mut query = sqlx::query(&insert);
        for row in &rows {
            for (i, column) in columns.iter().enumerate() {
                query = match cell(row, i + 1, column)? {
                    Cell::Text(v) => query.bind(v),
                    Cell::Int(v) => query.bind(v),
                    Cell::Bool(v) => query.bind(v),
                    Cell::Real(v) => query.bind(v),
                };
            }
        }
        query.execute(&mut *copying).await?;
        copied += rows.len() as i64;
    }
}

/// The value at `index` of a SQLite row, read as the PostgreSQL column's type.
fn cell(row: &sqlx::sqlite::SqliteRow, index: usize, column: &Column) -> Result<Cell, StoreError> {
    Ok(match column.data_type.as_str() {
        "text" | "jsonb" => Cell::Text(row.try_get(index)?),
        "bigint" | "integer" => Cell::Int(row.try_get(index)?),
        "boolean" => Cell::Bool(row.try_get(index)?),
        "double precision" => Cell::Real(row.try_get(index)?),
        other => return Err(StoreError::Internal(format!("{}: a column of type {other}", column.name))),
    })
}
