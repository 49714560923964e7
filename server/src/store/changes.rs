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
    /// PostgreSQL: the write transactions of this database that may have been
    /// running when the rows were read; any of them may yet commit rows below
    /// the highest `seq` read. Always empty on SQLite, whose one writer
    /// commits in `seq` order.
    pub in_flight: InFlight,
}

/// Transactions that may have been running at a snapshot, by PostgreSQL
/// transaction id (64-bit, with the epoch).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct InFlight {
    /// Every id of this database that may have been running, ascending.
    pub running: Vec<u64>,
    /// Above every id assigned before the snapshot was taken.
    pub next: u64,
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
        let (rows, in_flight): (Vec<Row>, InFlight) = match &*self.pools {
            Pools::Sqlite(pools) => {
                let sql = text("");
                (sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(&pools.readers).await?, InFlight::default())
            }
            Pools::Postgres(pool) => {
                let sql = text("::text");
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
                let (snapshot, elsewhere, age, reference): (String, Vec<String>, i32, i64) =
                    sqlx::query_as(IN_FLIGHT_SQL).fetch_one(&mut *tx).await?;
                let rows = sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                let snapshot = Snapshot::parse(&snapshot)?;
                let next = snapshot.next_assigned(reference, age);
                (rows, snapshot.in_flight_here(next, &elsewhere))
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

/// The snapshot; the transactions known to run in other databases of the
/// cluster (they cannot write this database's change log; snapshots list
/// every database's transactions); and how far transaction ids were assigned.
///
/// A snapshot lists the transactions running below its `xmax`, which is one
/// past the highest id that has *ended*: a transaction that took its id after
/// another one that has since ended is running but not listed. Every id from
/// `xmax` up to the next one to be assigned is therefore taken as running,
/// unless another database's. PostgreSQL has no function that tells the next
/// id without assigning one, but `age(xid)` measures from it (read once per
/// transaction, here after the snapshot was taken, so it bounds every id
/// assigned before): the age of `xmax`'s low half (at least 3, the first
/// ordinary id) gives the distance.
///
/// A transaction that ends between the snapshot and the reading of
/// `pg_stat_activity` is listed nowhere and so is waited for: the filter only
/// ever removes transactions that cannot matter.
const IN_FLIGHT_SQL: &str = "SELECT snapshot::text, \
     ARRAY(SELECT backend_xid::text FROM pg_stat_activity \
       WHERE datname IS DISTINCT FROM current_database() AND backend_xid IS NOT NULL), \
     age(reference::text::xid), reference \
     FROM (SELECT snapshot, GREATEST(pg_snapshot_xmax(snapshot)::text::numeric % 4294967296, 3)::bigint AS reference \
       FROM pg_current_snapshot() AS snapshot) AS taken";

/// A `pg_snapshot` (`xmin:xmax:xip,…`).
#[derive(Debug, PartialEq)]
struct Snapshot {
    xmax: u64,
    listed: Vec<u64>,
}

impl Snapshot {
    fn parse(text: &str) -> Result<Snapshot, StoreError> {
        let invalid = || StoreError::Internal(format!("unexpected pg_snapshot text {text:?}"));
        let mut parts = text.splitn(3, ':');
        let (_xmin, xmax, list) = (parts.next(), parts.next().ok_or_else(invalid)?, parts.next().ok_or_else(invalid)?);
        let xmax = xmax.parse().map_err(|_| invalid())?;
        let listed = list.split(',').filter(|x| !x.is_empty()).map(|x| x.parse::<u64>().map_err(|_| invalid()));
        Ok(Snapshot { xmax, listed: listed.collect::<Result<_, _>>()? })
    }

    /// The next id to be assigned (64-bit), from the `age` of the 32-bit
    /// `reference` id, read after the snapshot.
    fn next_assigned(&self, reference: i64, age: i32) -> u64 {
        let low = |x: u64| x & u64::from(u32::MAX);
        let next_low = low((reference as u64).wrapping_add(age.max(0) as u64));
        self.xmax + low(next_low.wrapping_sub(low(self.xmax)))
    }

    /// The transactions of this database that may be running: those listed
    /// and every id from `xmax` to `next`, less those running `elsewhere`
    /// (32-bit ids, compared with the 64-bit ones' low half).
    fn in_flight_here(&self, next: u64, elsewhere: &[String]) -> InFlight {
        let elsewhere: Vec<u64> = elsewhere.iter().filter_map(|x| x.parse().ok()).collect();
        let next = next.max(self.xmax);
        let mut running: Vec<u64> = self.listed.iter().copied().chain(self.xmax..next).collect();
        running.retain(|x| !elsewhere.contains(&(x & u64::from(u32::MAX))));
        running.sort_unstable();
        running.dedup();
        InFlight { running, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_parse() {
        assert_eq!(Snapshot::parse("10:20:").ok(), Some(Snapshot { xmax: 20, listed: vec![] }));
        assert_eq!(Snapshot::parse("10:20:10,14,15").ok(), Some(Snapshot { xmax: 20, listed: vec![10, 14, 15] }));
        assert!(Snapshot::parse("garbage").is_err());
    }

    #[test]
    fn ids_taken_after_the_last_ended_one_count_as_running() {
        // 21 and 22 were assigned but nothing above 19 has ended: the snapshot lists neither.
        let snapshot = Snapshot { xmax: 20, listed: vec![12] };
        let in_flight = snapshot.in_flight_here(snapshot.next_assigned(20, 3), &[]);
        assert_eq!(in_flight, InFlight { running: vec![12, 20, 21, 22], next: 23 });
    }

    #[test]
    fn the_next_id_is_found_across_the_32_bit_wrap() {
        let epoch = 1u64 << 32;
        // xmax's low half is 2 (below the first ordinary id): the age is measured from 3.
        let snapshot = Snapshot { xmax: epoch + 2, listed: vec![] };
        assert_eq!(snapshot.next_assigned(3, 4), epoch + 7);
        let before_wrap = Snapshot { xmax: epoch - 2, listed: vec![] };
        assert_eq!(before_wrap.next_assigned(i64::from(u32::MAX) - 1, 5), epoch + 3);
    }

    #[test]
    fn transactions_of_other_databases_are_not_waited_for() {
        let epoch = 1u64 << 32;
        let snapshot = Snapshot { xmax: epoch + 9, listed: vec![epoch + 5, epoch + 7] };
        let found = snapshot.in_flight_here(epoch + 11, &["7".into(), "10".into()]);
        assert_eq!(found, InFlight { running: vec![epoch + 5, epoch + 9], next: epoch + 11 });
    }
}
