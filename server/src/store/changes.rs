//! Reading the change log: the rows of whole commits after a position, with
//! what PostgreSQL says about transactions still in flight (so a reader can
//! tell which positions are final, decision 0014), pruning by age, and the
//! signals that wake readers — a local commit, or on PostgreSQL a
//! `NOTIFY` from another instance.

use super::commit::ChangeKind;
use super::{Pools, Store, StoreError};

/// One row of the change log.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    pub seq: i64,
    /// Shared by the rows one commit wrote.
    pub commit_id: i64,
    pub collection: String,
    pub doc_id: String,
    pub kind: ChangeKind,
    /// The version the change produced (a delete: one past the last).
    pub version: i64,
    /// The document's JSON text before and after the change.
    pub before: Option<String>,
    pub after: Option<String>,
    pub create_time: i64,
    /// The commit time (the document's `updateTime`).
    pub time: i64,
}

/// Rows read in one snapshot of the database.
#[derive(Debug, Default)]
pub struct ChangesRead {
    /// Every row of each commit that has a row after the position asked for, in `seq` order.
    pub rows: Vec<ChangeRow>,
    /// The rows after the position that the read looked at (at most its limit).
    pub scanned: usize,
    /// PostgreSQL: ids of the write transactions in flight when the rows were
    /// read; any of them may yet commit rows below the highest `seq` read.
    /// Always empty on SQLite, whose one writer commits in `seq` order.
    pub in_flight: Vec<u64>,
}

/// `seq, commit_id, collection, doc_id, kind, version, before, after, create_time, time`.
type Row = (i64, i64, String, String, String, i64, Option<String>, Option<String>, i64, i64);

fn change_row((seq, commit_id, collection, doc_id, kind, version, before, after, create_time, time): Row) -> ChangeRow {
    let kind = match kind.as_str() {
        "create" => ChangeKind::Create,
        "delete" => ChangeKind::Delete,
        _ => ChangeKind::Update,
    };
    ChangeRow { seq, commit_id, collection, doc_id, kind, version, before, after, create_time, time }
}

/// The setting that remembers the highest position pruned so far.
const PRUNED_THROUGH: &str = "changes_pruned_through";
/// Most rows one pruning statement looks at (whole commits are deleted).
const PRUNE_BATCH: i64 = 5000;
/// The channel on which PostgreSQL instances tell each other about commits.
const CHANNEL: &str = "nimbus_changes";

impl Store {
    /// The rows of every commit that wrote a row after `after` (the first
    /// `limit` such rows decide which commits), with the transactions in flight.
    pub async fn read_changes(&self, after: i64, limit: i64) -> Result<ChangesRead, StoreError> {
        let text = |json: &str| {
            format!(
                "SELECT seq, commit_id, collection, doc_id, kind, version, before{json}, after{json}, create_time, time \
                 FROM changes WHERE commit_id IN \
                 (SELECT commit_id FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2) ORDER BY seq"
            )
        };
        let (rows, in_flight): (Vec<Row>, Vec<u64>) = match &*self.pools {
            Pools::Sqlite(pools) => {
                let sql = text("");
                (sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(&pools.readers).await?, Vec::new())
            }
            Pools::Postgres(pool) => {
                let sql = text("::text");
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
                let (snapshot, elsewhere): (String, Vec<String>) =
                    sqlx::query_as(IN_FLIGHT_SQL).fetch_one(&mut *tx).await?;
                let rows = sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                (rows, in_flight_here(&snapshot, &elsewhere)?)
            }
        };
        let rows: Vec<ChangeRow> = rows.into_iter().map(change_row).collect();
        let scanned = rows.iter().filter(|r| r.seq > after).count().min(limit.max(0) as usize);
        Ok(ChangesRead { rows, scanned, in_flight })
    }

    /// Deletes the commits older than `before` (µs), a batch at a time, and
    /// remembers the highest position deleted. Returns the rows deleted.
    pub async fn prune_changes(&self, before: i64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let (rows, highest) = on_writer!(self, |pool| {
                let mut tx = pool.begin().await?;
                let highest: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(seq) FROM changes WHERE commit_id IN \
                     (SELECT commit_id FROM changes WHERE time < $1 ORDER BY seq LIMIT $2)",
                )
                .bind(before)
                .bind(PRUNE_BATCH)
                .fetch_one(&mut *tx)
                .await?;
                let rows = sqlx::query(
                    "DELETE FROM changes WHERE commit_id IN \
                     (SELECT commit_id FROM changes WHERE time < $1 ORDER BY seq LIMIT $2)",
                )
                .bind(before)
                .bind(PRUNE_BATCH)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if let Some(highest) = highest {
                    sqlx::query(
                        "INSERT INTO settings (key, value) VALUES ($1, $2) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(PRUNED_THROUGH)
                    .bind(highest.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                (rows, highest)
            });
            deleted += rows;
            if highest.is_none() || rows == 0 {
                return Ok(deleted);
            }
        }
    }

    /// The highest position pruned from the change log (0 when none was).
    pub async fn changes_pruned_through(&self) -> Result<i64, StoreError> {
        Ok(self.get_setting(PRUNED_THROUGH).await?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// The highest position written to the change log (0 when empty).
    pub async fn last_change_position(&self) -> Result<i64, StoreError> {
        let last: Option<i64> =
            on_reader!(self, |pool| sqlx::query_scalar("SELECT MAX(seq) FROM changes").fetch_one(pool).await?);
        Ok(last.unwrap_or(0).max(self.changes_pruned_through().await?))
    }

    /// Changes whenever this process commits documents.
    pub fn local_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    pub(super) fn note_commit(&self) {
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Tells the other instances that documents were committed (PostgreSQL; nothing on SQLite).
    pub async fn announce_commits(&self) -> Result<(), StoreError> {
        if let Pools::Postgres(pool) = &*self.pools {
            sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(pool).await?;
        }
        Ok(())
    }

    /// Hears the other instances' announcements (PostgreSQL; `None` on SQLite).
    pub async fn listen_for_commits(&self) -> Result<Option<CommitListener>, StoreError> {
        match &*self.pools {
            Pools::Sqlite(_) => Ok(None),
            Pools::Postgres(pool) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen(CHANNEL).await?;
                Ok(Some(CommitListener(listener)))
            }
        }
    }
}

/// Announcements of commits made by other instances.
pub struct CommitListener(sqlx::postgres::PgListener);

impl CommitListener {
    /// Waits for the next announcement. After a lost connection the listener
    /// reconnects by itself; announcements made meanwhile are missed, which
    /// only delays readers until their next poll.
    pub async fn next(&mut self) -> Result<(), StoreError> {
        self.0.recv().await?;
        Ok(())
    }
}

/// The snapshot, and the transactions known to run in other databases of
/// the cluster (they cannot write this database's change log; snapshots list
/// every database's transactions). A transaction that ends between the two
/// readings is listed nowhere and so is waited for: the filter only ever
/// removes transactions that cannot matter.
const IN_FLIGHT_SQL: &str = "SELECT pg_current_snapshot()::text, ARRAY(SELECT backend_xid::text FROM pg_stat_activity \
     WHERE datname IS DISTINCT FROM current_database() AND backend_xid IS NOT NULL)";

/// The transactions of this database in flight at `snapshot`: its list less
/// those running `elsewhere` (32-bit ids, compared with the 64-bit ones' low half).
fn in_flight_here(snapshot: &str, elsewhere: &[String]) -> Result<Vec<u64>, StoreError> {
    let elsewhere: Vec<u64> = elsewhere.iter().filter_map(|x| x.parse().ok()).collect();
    let mut in_flight = in_flight_transactions(snapshot)?;
    in_flight.retain(|x| !elsewhere.contains(&(x & u64::from(u32::MAX))));
    Ok(in_flight)
}

/// The transactions in flight of a `pg_snapshot` text (`xmin:xmax:xip,…`).
fn in_flight_transactions(snapshot: &str) -> Result<Vec<u64>, StoreError> {
    let invalid = || StoreError::Internal(format!("unexpected pg_snapshot text {snapshot:?}"));
    let list = snapshot.splitn(3, ':').nth(2).ok_or_else(invalid)?;
    list.split(',').filter(|x| !x.is_empty()).map(|x| x.parse().map_err(|_| invalid())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_list_their_transactions_in_flight() {
        assert_eq!(in_flight_transactions("10:20:").ok(), Some(vec![]));
        assert_eq!(in_flight_transactions("10:20:10,14,15").ok(), Some(vec![10, 14, 15]));
        assert!(in_flight_transactions("garbage").is_err());
    }

    #[test]
    fn transactions_of_other_databases_are_not_waited_for() {
        let epoch = 1u64 << 32;
        let found = in_flight_here(&format!("1:9:{},{}", epoch + 5, epoch + 7), &["7".into()]).ok();
        assert_eq!(found, Some(vec![epoch + 5]));
    }
}
