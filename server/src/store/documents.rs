//! Document rows: read one, run structured queries, counts and aggregates,
//! build and drop declared indexes, and list everything for exports. How
//! writes are committed is `commit`.

use super::query::{self, Aggregate, Cursor, Dialect, FieldPath, Query};
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
    /// The collection the document is in (`posts/p1/comments`).
    pub collection: String,
    pub id: String,
    pub data: String,
    pub version: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// `collection, id, data, version, create_time, update_time` of a documents row.
type DocRow = (String, String, String, i64, i64, i64);

fn stored_doc((collection, id, data, version, create_time, update_time): DocRow) -> StoredDoc {
    StoredDoc { collection, id, data, version, create_time, update_time }
}

/// A row of `select_many`: its part, its place in the part, then a `DocRow`.
type PartRow = (i64, i64, String, String, String, i64, i64, i64);

/// Most pages one `query_documents_many` statement reads.
pub const PAGES_PER_STATEMENT: usize = 100;

/// A page from the rows a select read (one more than the limit when more remain).
fn page_of(mut documents: Vec<StoredDoc>, query: &Query) -> Result<Page, StoreError> {
    let has_more = documents.len() > query.limit as usize;
    documents.truncate(query.limit as usize);
    let next = match documents.last() {
        Some(last) if has_more => Some(cursor_after(last, query)?),
        _ => None,
    };
    Ok(Page { documents, next })
}

/// Which documents a declared index holds.
#[derive(Debug, Clone, Copy)]
pub enum IndexScope<'a> {
    /// Every document (a collection pattern such as `rooms/*/messages`).
    Everything,
    /// One collection's documents (a partial index).
    Collection(&'a str),
    /// A collection group's documents (a partial index).
    Group(&'a str),
}

/// One page of query results, and the cursor after its last document when more follow.
#[derive(Debug, Clone)]
pub struct Page {
    pub documents: Vec<StoredDoc>,
    pub next: Option<Cursor>,
}

/// Binds query parameters onto a `sqlx` query of either driver.
macro_rules! bind_params {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for param in $params {
            q = match param {
                $crate::store::query::Param::Int(v) => q.bind(*v),
                $crate::store::query::Param::Real(v) => q.bind(*v),
                $crate::store::query::Param::Text(v) => q.bind(v.as_str()),
                $crate::store::query::Param::Bool(v) => q.bind(*v),
                $crate::store::query::Param::MaybeText(v) => q.bind(v.as_deref()),
            };
        }
        q
    }};
}
pub(super) use bind_params;

pub(super) fn dialect(pools: &Pools) -> &'static dyn Dialect {
    match pools {
        Pools::Sqlite(_) => &super::sqlite::SqliteDialect,
        Pools::Postgres(_) => &super::postgres::PostgresDialect,
    }
}

impl Store {
    pub async fn get_document(&self, key: &DocKey) -> Result<Option<StoredDoc>, StoreError> {
        if let Pools::Sqlite(pools) = &*self.pools {
            return pools.documents.document(&key.collection, &key.id).await;
        }
        let sql = format!(
            "SELECT id, {}, version, create_time, update_time FROM documents WHERE collection = $1 AND id = $2",
            dialect(&self.pools).data_text()
        );
        let row: Option<(String, String, i64, i64, i64)> = on_reader!(self, |pool| {
            sqlx::query_as(&sql).bind(&key.collection).bind(&key.id).fetch_optional(pool).await?
        });
        Ok(row.map(|(id, data, version, create_time, update_time)| StoredDoc {
            collection: key.collection.clone(),
            id,
            data,
            version,
            create_time,
            update_time,
        }))
    }

    /// One page of documents in query order (`limit` rows at most).
    pub async fn query_documents(&self, query: &Query) -> Result<Page, StoreError> {
        let _slot = self.query_slot().await?;
        let sql = query::select(dialect(&self.pools), query, self.collection_term(&query.collection));
        if let Pools::Sqlite(pools) = &*self.pools {
            return page_of(pools.documents.documents(sql, query.group, &query.collection).await?, query);
        }
        let rows: Vec<DocRow> = if query.group {
            on_reader!(self, |pool| bind_params!(sqlx::query_as(&sql.text), &sql.params).fetch_all(pool).await?)
        } else {
            let rows: Vec<(String, String, i64, i64, i64)> =
                on_reader!(self, |pool| bind_params!(sqlx::query_as(&sql.text), &sql.params).fetch_all(pool).await?);
            rows.into_iter().map(|(id, data, v, c, u)| (query.collection.clone(), id, data, v, c, u)).collect()
        };
        page_of(rows.into_iter().map(stored_doc).collect(), query)
    }

    /// One page of each query, read in one statement per `PAGES_PER_STATEMENT`
    /// queries (GraphQL's nested lists: a page of comments under each post).
    pub async fn query_documents_many(&self, queries: &[Query]) -> Result<Vec<Page>, StoreError> {
        let mut pages = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(PAGES_PER_STATEMENT) {
            let _slot = self.query_slot().await?;
            let parts: Vec<_> = chunk.iter().map(|q| (q, self.collection_term(&q.collection))).collect();
            let sql = query::select_many(dialect(&self.pools), &parts);
            let rows: Vec<PartRow> =
                on_reader!(self, |pool| bind_params!(sqlx::query_as(&sql.text), &sql.params).fetch_all(pool).await?);
            let mut rows = rows.into_iter().peekable();
            for (part, query) in chunk.iter().enumerate() {
                let mut documents = Vec::new();
                while let Some((_, _, collection, id, data, v, c, u)) =
                    rows.next_if(|row| usize::try_from(row.0).ok() == Some(part))
                {
                    documents.push(stored_doc((collection, id, data, v, c, u)));
                }
                pages.push(page_of(documents, query)?);
            }
        }
        Ok(pages)
    }

    pub async fn count_documents(&self, query: &Query) -> Result<i64, StoreError> {
        let _slot = self.query_slot().await?;
        let sql = query::count(dialect(&self.pools), query, self.collection_term(&query.collection));
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
        let _slot = self.query_slot().await?;
        let sql = query::aggregate(dialect(&self.pools), query, aggregates, self.collection_term(&query.collection));
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
    /// ordering on `fields`, in that order. With `collection`, the index holds
    /// only that collection's documents (a partial index), so writes elsewhere
    /// do not pay for it, and queries on that collection name it as a literal
    /// so the planner can use the index; without, it covers every collection.
    pub async fn ensure_index(
        &self,
        name: &str,
        scope: IndexScope<'_>,
        fields: &[FieldPath],
    ) -> Result<(), StoreError> {
        let dialect = dialect(&self.pools);
        // The columns follow the order keys of the queries the index serves.
        let mut columns = Vec::new();
        if !matches!(scope, IndexScope::Group(_)) {
            columns.push("collection".to_owned());
        }
        for field in fields {
            columns.extend(query::index_expressions(dialect, field).into_iter().map(|e| format!("({e})")));
        }
        if matches!(scope, IndexScope::Group(_)) {
            columns.push("collection".to_owned());
        }
        columns.push("id".to_owned());
        let only = match scope {
            IndexScope::Everything => String::new(),
            IndexScope::Collection(c) => format!(" WHERE collection = {}", query::text_literal(c)),
            IndexScope::Group(g) => format!(" WHERE {}", query::group_condition(dialect, g)),
        };
        let sql = format!("CREATE INDEX IF NOT EXISTS {name} ON documents ({}){only}", columns.join(", "));
        match &*self.pools {
            Pools::Sqlite(pools) => {
                let _turn = pools.write_turn().await;
                sqlx::query(&sql).execute(&pools.writer).await?;
            }
            Pools::Postgres(pool) => super::postgres::execute_without_time_limit(pool, &sql).await?,
        }
        if let (IndexScope::Collection(collection), Ok(mut indexed)) = (scope, self.indexed.write()) {
            indexed.insert(collection.to_owned());
        }
        Ok(())
    }

    /// Every document in (collection, id) order after `after`, `limit` at a
    /// time (for exports; clients read through `Documents`).
    pub async fn all_documents(
        &self,
        after: Option<&(String, String)>,
        limit: i64,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        let sql = format!(
            "SELECT collection, id, {}, version, create_time, update_time FROM documents \
             WHERE collection > $1 OR (collection = $1 AND id > $2) ORDER BY collection, id LIMIT $3",
            dialect(&self.pools).data_text()
        );
        let (collection, id) = after.cloned().unwrap_or_default();
        let rows: Vec<DocRow> = on_reader!(self, |pool| {
            sqlx::query_as(&sql).bind(&collection).bind(&id).bind(limit).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(stored_doc).collect())
    }

    /// Drops an index by name, if it exists.
    pub async fn drop_index(&self, name: &str) -> Result<(), StoreError> {
        let sql = format!("DROP INDEX IF EXISTS {name}");
        match &*self.pools {
            Pools::Sqlite(pools) => {
                let _turn = pools.write_turn().await;
                sqlx::query(&sql).execute(&pools.writer).await?;
            }
            Pools::Postgres(pool) => super::postgres::execute_without_time_limit(pool, &sql).await?,
        }
        Ok(())
    }

    fn collection_term(&self, collection: &str) -> query::CollectionTerm {
        match self.indexed.read() {
            Ok(indexed) if indexed.contains(collection) => query::CollectionTerm::Literal,
            _ => query::CollectionTerm::Parameter,
        }
    }

    /// The query plan the database would use, as text (for tests and operators).
    pub async fn explain_query(&self, query: &Query) -> Result<String, StoreError> {
        let sql = query::select(dialect(&self.pools), query, self.collection_term(&query.collection));
        let lines = match &*self.pools {
            Pools::Sqlite(pools) => super::sqlite::explain(&pools.readers, &sql).await?,
            Pools::Postgres(pool) => super::postgres::explain(pool, &sql).await?,
        };
        Ok(lines.join("\n"))
    }
}

/// The cursor just after `doc` in the query's order.
pub fn cursor_after(doc: &StoredDoc, query: &Query) -> Result<Cursor, StoreError> {
    let data: serde_json::Value = serde_json::from_str(&doc.data)
        .map_err(|e| StoreError::Internal(format!("stored document is not JSON: {e}")))?;
    Ok(Cursor::of(query, &doc.collection, &doc.id, &data))
}
