//! Document rows: read one, commit a group of writes atomically (each write
//! is a mutation of the current row, evaluated inside the transaction, so
//! preconditions and merges see committed state), record every change in the
//! change log in the same transaction, and run structured queries.

use super::jobs::JobsFor;
use super::query::{self, Aggregate, Cursor, Dialect, FieldPath, Query, SortKey};
use super::{Pools, Store, StoreError};

/// Where a document lives: its collection path (`posts/p1/comments`) and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocKey {
    pub collection: String,
    pub id: String,
}

/// A document row. `data` is the stored JSON text, returned without re-parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDoc {
    pub id: String,
    pub data: String,
    pub version: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// What a mutation decided to do with the row.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Store this JSON text (creating the row when missing).
    Put(String),
    /// Remove the row (a no-op when missing).
    Delete,
}

/// Why a mutation refused to apply; the whole commit is then rolled back.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    NotFound,
    AlreadyExists,
    VersionMismatch {
        expected: i64,
        actual: Option<i64>,
    },
    Invalid(String),
    /// The document is not at the version the caller's checks were made against.
    Changed,
}

/// Decides a write from the current row (if any) and the commit time (µs).
pub type Mutation = Box<dyn Fn(Option<&StoredDoc>, i64) -> Result<Outcome, Rejection> + Send + Sync>;

pub struct Write {
    pub key: DocKey,
    pub mutation: Mutation,
}

/// The writes of one transaction and how to derive its trigger jobs.
pub struct Commit {
    pub writes: Vec<Write>,
    pub jobs: Option<JobsFor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Create,
    Update,
    Delete,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }
}

/// The result of one committed write.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub key: DocKey,
    /// `None` when a delete found nothing to delete.
    pub kind: Option<ChangeKind>,
    /// The version the change produced (for a delete: one past the last).
    pub version: i64,
    /// The data before the write, if the document existed.
    pub before: Option<String>,
    /// The row after the write (`None` after a delete).
    pub doc: Option<StoredDoc>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("write {index} rejected: {rejection:?}")]
    Rejected { index: usize, rejection: Rejection },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One page of query results, and the cursor after its last document when more follow.
#[derive(Debug, Clone)]
pub struct Page {
    pub documents: Vec<StoredDoc>,
    pub next: Option<Cursor>,
}

/// The statements of a write, in each dialect's spelling.
pub(super) struct WriteSql {
    pub select_current: &'static str,
    pub insert: &'static str,
    pub update: &'static str,
    pub delete: &'static str,
    /// How a JSON text parameter is written (`""` or `"::jsonb"`).
    pub json_param: &'static str,
}

/// Most change-log rows in one INSERT (7 parameters each).
pub(super) const CHANGES_PER_INSERT: usize = 500;

/// `INSERT INTO changes … VALUES (…), (…)` for `rows` rows.
pub(super) fn changes_insert(sql: &WriteSql, rows: usize) -> String {
    let mut text = String::from("INSERT INTO changes (collection, doc_id, kind, version, before, after, time) VALUES ");
    for row in 0..rows {
        let p = row * 7;
        let json = sql.json_param;
        if row > 0 {
            text.push_str(", ");
        }
        text.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}{json}, ${}{json}, ${})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7
        ));
    }
    text
}

/// Appends one change-log row per changed document of `$committed` (an
/// iterator of `&Committed`) on `$conn`, a few hundred rows per statement.
macro_rules! record_changes {
    ($conn:expr, $sql:expr, $committed:expr, $now:expr) => {{
        async {
            let changed: Vec<&$crate::store::documents::Committed> = $committed.filter(|c| c.kind.is_some()).collect();
            for chunk in changed.chunks($crate::store::documents::CHANGES_PER_INSERT) {
                let text = $crate::store::documents::changes_insert($sql, chunk.len());
                let mut query = sqlx::query(&text);
                for c in chunk {
                    query = query
                        .bind(&c.key.collection)
                        .bind(&c.key.id)
                        .bind(c.kind.map_or("", |k| k.as_str()))
                        .bind(c.version)
                        .bind(c.before.as_deref())
                        .bind(c.doc.as_ref().map(|d| d.data.as_str()))
                        .bind($now);
                }
                query.execute(&mut *$conn).await.map_err($crate::store::StoreError::from)?;
            }
            Ok::<(), $crate::store::StoreError>(())
        }
        .await
    }};
}
pub(super) use record_changes;

pub(super) use crate::clock::now_micros;

/// Applies `$writes` in order on `$conn` (a connection inside a transaction),
/// evaluating to `Result<Vec<Committed>, CommitError>`; the caller records the
/// changes with `record_changes!` in the same transaction. A macro because the
/// connection types of the two drivers differ while the steps do not.
macro_rules! apply_writes {
    ($conn:expr, $sql:expr, $writes:expr, $now:expr) => {{
        async {
            let sql: &$crate::store::documents::WriteSql = $sql;
            let mut committed = Vec::with_capacity($writes.len());
            for (index, write) in $writes.iter().enumerate() {
                let current: Option<$crate::store::documents::StoredDoc> =
                    sqlx::query_as::<_, (String, String, i64, i64, i64)>(sql.select_current)
                        .bind(&write.key.collection)
                        .bind(&write.key.id)
                        .fetch_optional(&mut *$conn)
                        .await
                        .map_err($crate::store::StoreError::from)?
                        .map(|(id, data, version, create_time, update_time)| $crate::store::documents::StoredDoc {
                            id,
                            data,
                            version,
                            create_time,
                            update_time,
                        });
                let outcome = (write.mutation)(current.as_ref(), $now)
                    .map_err(|rejection| $crate::store::documents::CommitError::Rejected { index, rejection })?;
                let (kind, after) = match (outcome, current.as_ref()) {
                    ($crate::store::documents::Outcome::Delete, None) => (None, None),
                    ($crate::store::documents::Outcome::Delete, Some(_)) => {
                        sqlx::query(sql.delete)
                            .bind(&write.key.collection)
                            .bind(&write.key.id)
                            .execute(&mut *$conn)
                            .await
                            .map_err($crate::store::StoreError::from)?;
                        (Some($crate::store::documents::ChangeKind::Delete), None)
                    }
                    ($crate::store::documents::Outcome::Put(data), None) => {
                        sqlx::query(sql.insert)
                            .bind(&write.key.collection)
                            .bind(&write.key.id)
                            .bind(&data)
                            .bind($now)
                            .execute(&mut *$conn)
                            .await
                            .map_err($crate::store::StoreError::from)?;
                        let doc = $crate::store::documents::StoredDoc {
                            id: write.key.id.clone(),
                            data,
                            version: 1,
                            create_time: $now,
                            update_time: $now,
                        };
                        (Some($crate::store::documents::ChangeKind::Create), Some(doc))
                    }
                    ($crate::store::documents::Outcome::Put(data), Some(old)) => {
                        sqlx::query(sql.update)
                            .bind(&write.key.collection)
                            .bind(&write.key.id)
                            .bind(&data)
                            .bind($now)
                            .execute(&mut *$conn)
                            .await
                            .map_err($crate::store::StoreError::from)?;
                        let doc = $crate::store::documents::StoredDoc {
                            id: write.key.id.clone(),
                            data,
                            version: old.version + 1,
                            create_time: old.create_time,
                            update_time: $now,
                        };
                        (Some($crate::store::documents::ChangeKind::Update), Some(doc))
                    }
                };
                let version =
                    after.as_ref().map_or_else(|| current.as_ref().map_or(0, |c| c.version + 1), |d| d.version);
                committed.push($crate::store::documents::Committed {
                    key: write.key.clone(),
                    kind,
                    version,
                    before: current.map(|c| c.data),
                    doc: after,
                });
            }
            Ok::<_, $crate::store::documents::CommitError>(committed)
        }
        .await
    }};
}
pub(super) use apply_writes;

/// Binds query parameters onto a `sqlx` query of either driver.
macro_rules! bind_params {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for param in $params {
            q = match param {
                $crate::store::query::Param::Int(v) => q.bind(*v),
                $crate::store::query::Param::Real(v) => q.bind(*v),
                $crate::store::query::Param::Text(v) => q.bind(v.as_str()),
            };
        }
        q
    }};
}

fn dialect(pools: &Pools) -> &'static dyn Dialect {
    match pools {
        Pools::Sqlite(_) => &super::sqlite::SqliteDialect,
        Pools::Postgres(_) => &super::postgres::PostgresDialect,
    }
}

impl Store {
    pub async fn get_document(&self, key: &DocKey) -> Result<Option<StoredDoc>, StoreError> {
        let sql = format!(
            "SELECT id, {}, version, create_time, update_time FROM documents WHERE collection = $1 AND id = $2",
            dialect(&self.pools).data_text()
        );
        let row: Option<(String, String, i64, i64, i64)> = on_reader!(self, |pool| {
            sqlx::query_as(&sql).bind(&key.collection).bind(&key.id).fetch_optional(pool).await?
        });
        Ok(row.map(|(id, data, version, create_time, update_time)| StoredDoc {
            id,
            data,
            version,
            create_time,
            update_time,
        }))
    }

    /// Applies all writes in one transaction, or none of them, with their
    /// change-log rows and the trigger jobs `jobs` decides.
    pub async fn commit(&self, writes: Vec<Write>, jobs: Option<JobsFor>) -> Result<Vec<Committed>, CommitError> {
        let commit = Commit { writes, jobs };
        match &*self.pools {
            Pools::Sqlite(pools) => pools.queue.commit(commit).await,
            Pools::Postgres(pool) => super::postgres::commit(pool, commit).await,
        }
    }

    /// One page of documents in query order (`limit` rows at most).
    pub async fn query_documents(&self, query: &Query) -> Result<Page, StoreError> {
        let sql = query::select(dialect(&self.pools), query);
        let rows: Vec<(String, String, i64, i64, i64)> =
            on_reader!(self, |pool| bind_params!(sqlx::query_as(&sql.text), &sql.params).fetch_all(pool).await?);
        let has_more = rows.len() > query.limit as usize;
        let documents: Vec<StoredDoc> = rows
            .into_iter()
            .take(query.limit as usize)
            .map(|(id, data, version, create_time, update_time)| StoredDoc {
                id,
                data,
                version,
                create_time,
                update_time,
            })
            .collect();
        let next = match documents.last() {
            Some(last) if has_more => Some(cursor_after(last, query)?),
            _ => None,
        };
        Ok(Page { documents, next })
    }

    pub async fn count_documents(&self, query: &Query) -> Result<i64, StoreError> {
        let sql = query::count(dialect(&self.pools), query);
        Ok(on_reader!(self, |pool| {
            bind_params!(sqlx::query_scalar::<_, i64>(&sql.text), &sql.params).fetch_one(pool).await?
        }))
    }

    /// Each aggregate's value over the filtered set (`None` when no numeric value).
    pub async fn aggregate_documents(
        &self,
        query: &Query,
        aggregates: &[Aggregate],
    ) -> Result<Vec<Option<f64>>, StoreError> {
        let sql = query::aggregate(dialect(&self.pools), query, aggregates);
        Ok(on_reader!(self, |pool| {
            let row = bind_params!(sqlx::query(&sql.text), &sql.params).fetch_one(pool).await?;
            let mut values = Vec::with_capacity(aggregates.len());
            for i in 0..aggregates.len() {
                values.push(sqlx::Row::try_get::<Option<f64>, _>(&row, i)?);
            }
            values
        }))
    }

    /// Creates (if missing) an expression index serving equality filters and
    /// ordering on `fields`, in that order, within one collection.
    pub async fn ensure_index(&self, name: &str, fields: &[FieldPath]) -> Result<(), StoreError> {
        let dialect = dialect(&self.pools);
        let mut columns = vec!["collection".to_owned()];
        for field in fields {
            columns.extend(query::index_expressions(dialect, field).into_iter().map(|e| format!("({e})")));
        }
        columns.push("id".to_owned());
        let sql = format!("CREATE INDEX IF NOT EXISTS {name} ON documents ({})", columns.join(", "));
        on_writer!(self, |pool| sqlx::query(&sql).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// The query plan the database would use, as text (for tests and operators).
    pub async fn explain_query(&self, query: &Query) -> Result<String, StoreError> {
        let sql = query::select(dialect(&self.pools), query);
        let lines: Vec<String> = match &*self.pools {
            Pools::Sqlite(pools) => {
                let text = format!("EXPLAIN QUERY PLAN {}", sql.text);
                let rows = bind_params!(sqlx::query(&text), &sql.params).fetch_all(&pools.readers).await?;
                rows.iter().map(|r| sqlx::Row::try_get::<String, _>(r, 3)).collect::<Result<_, _>>()?
            }
            Pools::Postgres(pool) => {
                let text = format!("EXPLAIN {}", sql.text);
                let mut tx = pool.begin().await?;
                sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await?;
                let rows = bind_params!(sqlx::query(&text), &sql.params).fetch_all(&mut *tx).await?;
                rows.iter().map(|r| sqlx::Row::try_get::<String, _>(r, 0)).collect::<Result<_, _>>()?
            }
        };
        Ok(lines.join("\n"))
    }
}

/// The cursor just after `doc` in the query's order.
pub fn cursor_after(doc: &StoredDoc, query: &Query) -> Result<Cursor, StoreError> {
    let data: serde_json::Value = serde_json::from_str(&doc.data)
        .map_err(|e| StoreError::Internal(format!("stored document is not JSON: {e}")))?;
    let keys =
        query.order.iter().map(|o| SortKey::of(o.field.lookup(&data).unwrap_or(&serde_json::Value::Null))).collect();
    Ok(Cursor { keys, id: doc.id.clone() })
}
