//! The recent-invocations log's rows: written in batches, pruned to the
//! newest `keep` across every instance, read newest first.

use super::query::Param;
use super::{Store, StoreError};

/// One finished invocation, as it is stored and as the admin API lists it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationRecord {
    pub id: String,
    pub function: String,
    pub status: String,
    pub error: Option<String>,
    pub duration_ms: f64,
    pub cold: bool,
    /// Microseconds since the epoch (RFC 3339 on the wire).
    #[serde(serialize_with = "time_text")]
    pub time: i64,
    /// The console lines, as JSON text (a list on the wire).
    #[serde(serialize_with = "json_text")]
    pub logs: String,
}

fn time_text<S: serde::Serializer>(micros: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::clock::format_time(*micros))
}

fn json_text<S: serde::Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    let value: serde_json::Value = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
    value.serialize(serializer)
}

const COLUMNS: &str = "id, function, status, error, duration_ms, cold, time, logs";
/// Rows per INSERT (8 parameters each).
const ROWS_PER_INSERT: usize = super::query::rows_per_statement(8);

impl Store {
    /// Adds `rows` and drops all but the newest `keep`, in one transaction.
    pub async fn record_invocations(&self, rows: &[InvocationRecord], keep: i64) -> Result<(), StoreError> {
        let mut statements: Vec<(String, Vec<Param>)> = rows
            .chunks(ROWS_PER_INSERT)
            .map(|chunk| {
                let values = super::query::value_rows(chunk.len(), &[""; 8]);
                let params = chunk
                    .iter()
                    .flat_map(|row| {
                        [
                            (&row.id).into(),
                            (&row.function).into(),
                            (&row.status).into(),
                            (&row.error).into(),
                            Param::Real(row.duration_ms),
                            row.cold.into(),
                            row.time.into(),
                            (&row.logs).into(),
                        ]
                    })
                    .collect();
                (format!("INSERT INTO invocations ({COLUMNS}) VALUES {values}"), params)
            })
            .collect();
        statements.push((
            "DELETE FROM invocations WHERE time < (SELECT MIN(time) FROM \
             (SELECT time FROM invocations ORDER BY time DESC LIMIT $1) AS newest)"
                .to_owned(),
            vec![keep.into()],
        ));
        let borrowed: Vec<(&str, &[Param])> = statements.iter().map(|(sql, p)| (sql.as_str(), p.as_slice())).collect();
        self.execute_together(&borrowed).await
    }

    /// The newest `limit` invocations, of one function or of all, newest first.
    pub async fn recent_invocations(
        &self,
        function: Option<&str>,
        limit: i64,
    ) -> Result<Vec<InvocationRecord>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM invocations WHERE ($1 = '' OR function = $1) ORDER BY time DESC LIMIT $2");
        let function = function.unwrap_or_default();
        Ok(on_reader!(self, |pool| sqlx::query_as(&sql).bind(function).bind(limit).fetch_all(pool).await?))
    }
}
