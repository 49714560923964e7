//! The change feed: one task per process tails the change log and hands each
//! commit, once it is final, to every connection (a bounded broadcast; a
//! connection that falls behind it is told to `resync`). A commit's position
//! is the highest `seq` it wrote; a position `p` promises that every commit
//! at or below `p` has been handed out. On PostgreSQL a transaction can commit
//! rows below a `seq` that is already visible, so positions advance only past
//! rows no transaction in flight can still precede (`Horizon`, decision 0014).
//! Also owns pruning the change log after the retention window, and telling
//! other instances (PostgreSQL `NOTIFY`) that this one committed.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::documents::render::render_document;
use crate::store::changes::{ChangeRow, InFlight};
use crate::store::documents::StoredDoc;
use crate::store::{Store, StoreError};

/// Rows of the change log read at once.
const READ_LIMIT: i64 = 2000;
/// How soon the log is read again while transactions in flight hold the position back.
const IN_FLIGHT_RETRY: Duration = Duration::from_millis(3);

/// One document's change in a commit, parsed once for every subscriber.
#[derive(Debug)]
pub struct Change {
    pub collection: String,
    pub id: String,
    /// `collection/id`, shared by every view that shows the document.
    pub path: Arc<str>,
    /// The version the change produced (a delete: one past the last).
    pub version: i64,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// The document after the change, as stored (`None` after a delete).
    pub after_doc: Option<StoredDoc>,
    rendered: OnceLock<String>,
}

impl Change {
    fn from_row(row: ChangeRow) -> Change {
        let parse = |text: &Option<String>| text.as_deref().and_then(|t| serde_json::from_str(t).ok());
        let before = parse(&row.before);
        let after = parse(&row.after);
        let after_doc = row.after.map(|data| StoredDoc {
            collection: row.collection.clone(),
            id: row.doc_id.clone(),
            data,
            version: row.version,
            create_time: row.create_time,
            update_time: row.time,
        });
        Change {
            path: Arc::from(format!("{}/{}", row.collection, row.doc_id)),
            collection: row.collection,
            id: row.doc_id,
            version: row.version,
            before,
            after,
            after_doc,
            rendered: OnceLock::new(),
        }
    }

    /// The document after the change as REST renders it, rendered once.
    pub fn rendered(&self) -> Option<&str> {
        let doc = self.after_doc.as_ref()?;
        Some(self.rendered.get_or_init(|| render_document(&self.collection, doc)))
    }
}

/// Everything one commit changed, in the order it wrote it.
#[derive(Debug)]
pub struct CommitEvent {
    pub position: i64,
    pub changes: Vec<Change>,
    /// Decisions already made for this commit, shared by subscriptions with
    /// the same target and the same caller (signed-out viewers, one user's tabs).
    decided: std::sync::Mutex<std::collections::HashMap<Decision, bool>>,
}

/// Which decision: (target, caller, change index, after the change or before it).
pub type Decision = (u64, u64, usize, bool);

impl CommitEvent {
    fn new(position: i64, changes: Vec<Change>) -> CommitEvent {
        CommitEvent { position, changes, decided: Default::default() }
    }

    /// A decision made earlier for this commit.
    pub fn decided(&self, decision: &Decision) -> Option<bool> {
        self.decided.lock().unwrap_or_else(|p| p.into_inner()).get(decision).copied()
    }

    pub fn remember(&self, decision: Decision, shown: bool) {
        self.decided.lock().unwrap_or_else(|p| p.into_inner()).insert(decision, shown);
    }
}

/// The rows of whole commits grouped into events, in position order.
fn group_commits(rows: Vec<ChangeRow>) -> Vec<CommitEvent> {
    let mut commits: BTreeMap<i64, Vec<ChangeRow>> = BTreeMap::new();
    let mut position_of: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
    for row in &rows {
        let position = position_of.entry(row.commit_id).or_insert(row.seq);
        *position = (*position).max(row.seq);
    }
    for row in rows {
        let position = position_of[&row.commit_id];
        commits.entry(position).or_default().push(row);
    }
    commits
        .into_iter()
        .map(|(position, rows)| CommitEvent::new(position, rows.into_iter().map(Change::from_row).collect()))
        .collect()
}

/// Which positions are final on PostgreSQL. Rows visible in a snapshot up to
/// `seen` are all there is below `seen` once every transaction of the
/// database that had an id when the snapshot was taken has ended: any other
/// draws its `seq` later, above `seen`.
#[derive(Debug, Default)]
pub struct Horizon {
    /// Every commit up to here was handed out.
    final_through: i64,
    /// Known final; above `final_through` when a read was cut short by its limit.
    known_final: i64,
    /// A `seen` that becomes final once no transaction below the id `below` runs.
    waiting: Option<Mark>,
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    seen: i64,
    below: u64,
}

impl Horizon {
    pub fn new(final_through: i64) -> Horizon {
        Horizon { final_through, known_final: final_through, waiting: None }
    }

    /// After a read that saw rows up to `seen` with `in_flight` transactions
    /// possibly running, the highest final position that read covers.
    pub fn advance(&mut self, seen: i64, in_flight: &InFlight) -> i64 {
        if let Some(mark) = self.waiting {
            if in_flight.running.iter().all(|x| *x >= mark.below) {
                self.known_final = self.known_final.max(mark.seen);
                self.waiting = None;
            }
        }
        if in_flight.running.is_empty() {
            self.known_final = self.known_final.max(seen);
            self.waiting = None;
        } else if self.waiting.is_none() && seen > self.known_final {
            self.waiting = Some(Mark { seen, below: in_flight.next });
        }
        // A commit above `seen` was not in this read, final or not.
        self.final_through = self.final_through.max(self.known_final.min(seen));
        self.final_through
    }

    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }
}

/// The feed's handle: subscribe to commits, read the current position.
#[derive(Clone)]
pub struct Feed {
    events: broadcast::Sender<Arc<CommitEvent>>,
    position: watch::Sender<Option<i64>>,
    store: Store,
    /// Makes the feed read the log now (a connection subscribed).
    wake: Arc<tokio::sync::Notify>,
}

impl Feed {
    /// A feed over `store` that buffers `buffer` commits per connection.
    pub fn new(store: Store, buffer: usize) -> Feed {
        let (events, _) = broadcast::channel(buffer.max(1));
        Feed { events, position: watch::Sender::new(None), store, wake: Arc::new(tokio::sync::Notify::new()) }
    }

    /// A connection's receiver of commits; the feed reads the log at once.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommitEvent>> {
        let receiver = self.events.subscribe();
        self.wake.notify_one();
        receiver
    }

    /// The position every commit up to which has been handed out, once the feed runs.
    pub async fn position(&self) -> Result<i64, StoreError> {
        let mut watching = self.position.subscribe();
        let ready = watching.wait_for(Option::is_some).await;
        ready.ok().and_then(|p| *p).ok_or_else(|| StoreError::Unavailable("the change feed stopped".into()))
    }

    /// Waits up to `patience` for the feed to reach `position`.
    pub async fn reaches(&self, position: i64, patience: Duration) -> bool {
        let mut watching = self.position.subscribe();
        let reached = watching.wait_for(|p| p.is_some_and(|p| p >= position));
        tokio::time::timeout(patience, reached).await.is_ok_and(|r| r.is_ok())
    }

    /// The commits after `after` up to `until` (both positions), from the change log.
    pub async fn commits_between(&self, after: i64, until: i64) -> Result<Vec<CommitEvent>, StoreError> {
        let mut cursor = after;
        let mut seen = HashSet::new();
        let mut commits = Vec::new();
        while cursor < until {
            let read = self.store.read_changes(cursor, READ_LIMIT).await?;
            let scanned_to = last_scanned(&read.rows, cursor, read.scanned);
            for commit in group_commits(read.rows) {
                if commit.position > after && commit.position <= until && seen.insert(commit.position) {
                    commits.push(commit);
                }
            }
            if (read.scanned as i64) < READ_LIMIT {
                break;
            }
            cursor = scanned_to;
        }
        commits.sort_by_key(|c| c.position);
        Ok(commits)
    }

    /// Starts tailing the change log (supervised), pruning it, and on
    /// PostgreSQL announcing this instance's commits to the others.
    pub fn spawn(&self, poll: Duration, retention: Duration) {
        let feed = self.clone();
        crate::supervise::spawn_supervised("realtime feed", move || feed.clone().tail(poll));
        let store = self.store.clone();
        crate::supervise::spawn_supervised("change log pruning", move || prune(store.clone(), retention));
        let store = self.store.clone();
        crate::supervise::spawn_supervised("commit announcements", move || announce(store.clone()));
    }

    async fn tail(self, poll: Duration) {
        let mut horizon = loop {
            match self.start().await {
                Ok(horizon) => break horizon,
                Err(e) => {
                    tracing::warn!("realtime feed cannot read the change log yet: {e}");
                    tokio::time::sleep(poll).await;
                }
            }
        };
        let mut local = self.store.local_commits();
        let mut listener = match self.store.listen_for_commits().await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!("realtime feed does not hear other instances (polling every {poll:?}): {e}");
                None
            }
        };
        let mut last_read = tokio::time::Instant::now();
        loop {
            // With no connection subscribed the log is read only every `poll`
            // (the position stays current enough for the next subscriber, who
            // wakes the feed anyway): writes pay nothing for realtime unused.
            let wanted = self.events.receiver_count() > 0 || last_read.elapsed() >= poll;
            if wanted {
                if let Err(e) = self.catch_up(&mut horizon).await {
                    tracing::warn!("realtime feed read failed, retrying: {e}");
                }
                last_read = tokio::time::Instant::now();
            }
            let pause = if horizon.is_waiting() { IN_FLIGHT_RETRY } else { poll };
            tokio::select! {
                _ = local.changed() => {}
                _ = heard(&mut listener) => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// The first final position: the head of the log once the transactions
    /// in flight at the time it was read have ended.
    async fn start(&self) -> Result<Horizon, StoreError> {
        let head = self.store.last_change_position().await?;
        let mut horizon = Horizon::new(0);
        let in_flight = self.store.read_changes(head, 1).await?.in_flight;
        horizon.advance(head, &in_flight);
        while horizon.is_waiting() {
            tokio::time::sleep(IN_FLIGHT_RETRY).await;
            let now = self.store.read_changes(head, 1).await?.in_flight;
            horizon.advance(head, &now);
        }
        self.position.send_replace(Some(head));
        Ok(horizon)
    }

    /// Hands out every commit that became final, until the log is read to its end.
    async fn catch_up(&self, horizon: &mut Horizon) -> Result<(), StoreError> {
        loop {
            let from = horizon.final_through;
            let read = self.store.read_changes(from, READ_LIMIT).await?;
            let seen = last_scanned(&read.rows, from, read.scanned);
            let through = horizon.advance(seen, &read.in_flight);
            for commit in group_commits(read.rows) {
                if commit.position > from && commit.position <= through {
                    // No receivers is not an error: nobody is subscribed.
                    let _ = self.events.send(Arc::new(commit));
                }
            }
            self.position.send_replace(Some(through));
            if (read.scanned as i64) < READ_LIMIT || through == from {
                return Ok(());
            }
        }
    }
}

/// The highest `seq` among the first `scanned` rows after `after` (`after` when none).
fn last_scanned(rows: &[ChangeRow], after: i64, scanned: usize) -> i64 {
    rows.iter().filter(|r| r.seq > after).map(|r| r.seq).take(scanned).last().unwrap_or(after)
}

async fn heard(listener: &mut Option<crate::store::changes::CommitListener>) {
    match listener {
        Some(listener) => {
            if listener.next().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Deletes changes older than the retention window, every tenth of it (at most a minute apart).
async fn prune(store: Store, retention: Duration) {
    let every = (retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        let before = crate::clock::now_micros() - retention.as_micros() as i64;
        match store.prune_changes(before).await {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "pruned the change log"),
            Err(e) => tracing::warn!("pruning the change log failed: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Announces this process's commits to the other instances (PostgreSQL only).
async fn announce(store: Store) {
    let mut local = store.local_commits();
    while local.changed().await.is_ok() {
        if let Err(e) = store.announce_commits().await {
            tracing::debug!("announcing commits failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(ids: &[u64], next: u64) -> InFlight {
        InFlight { running: ids.to_vec(), next }
    }

    #[test]
    fn positions_wait_for_transactions_in_flight() {
        let mut horizon = Horizon::new(10);
        // Rows up to 14 are visible, but transaction 7 (which may hold 12) is running; ids up to 8 were assigned.
        assert_eq!(horizon.advance(14, &running(&[7], 9)), 10);
        // 7 still runs: nothing moves, even though more rows are visible.
        assert_eq!(horizon.advance(20, &running(&[7, 9], 10)), 10);
        // 7 ended: everything seen while it ran (14) is final; 9 (assigned later) now holds 20 back.
        assert_eq!(horizon.advance(20, &running(&[9], 10)), 14);
        assert_eq!(horizon.advance(21, &running(&[], 11)), 21, "nothing in flight: all that is visible is final");
    }

    #[test]
    fn a_position_waits_for_every_transaction_that_had_an_id() {
        let mut horizon = Horizon::new(10);
        assert_eq!(horizon.advance(14, &running(&[5, 8], 9)), 10);
        // 5 ended but 8 runs: still waiting, although a later transaction 11 is the only other.
        assert_eq!(horizon.advance(16, &running(&[8, 11], 12)), 10);
        assert_eq!(horizon.advance(16, &running(&[11], 12)), 14);
    }

    #[test]
    fn a_read_cut_short_hands_out_only_what_it_read() {
        let mut horizon = Horizon::new(0);
        assert_eq!(horizon.advance(500, &running(&[3], 4)), 0);
        // The transaction ended; this read reached only 200 of the 500 known final.
        assert_eq!(horizon.advance(200, &running(&[], 5)), 200);
        assert_eq!(horizon.advance(450, &running(&[6], 7)), 450);
        assert_eq!(horizon.advance(700, &running(&[6], 7)), 500);
    }

    #[test]
    fn commits_are_grouped_and_ordered_by_their_highest_row() {
        let row = |seq, commit_id| ChangeRow {
            seq,
            commit_id,
            collection: "c".into(),
            doc_id: format!("d{seq}"),
            kind: crate::store::commit::ChangeKind::Create,
            version: 1,
            before: None,
            after: Some("{}".into()),
            create_time: 0,
            time: 0,
        };
        // Two concurrent commits drew interleaved numbers: A = {10, 13}, B = {11, 12}.
        let commits = group_commits(vec![row(10, 1), row(11, 2), row(12, 2), row(13, 1)]);
        let shape: Vec<(i64, Vec<&str>)> =
            commits.iter().map(|c| (c.position, c.changes.iter().map(|x| x.id.as_str()).collect())).collect();
        assert_eq!(shape, vec![(12, vec!["d11", "d12"]), (13, vec!["d10", "d13"])]);
    }
}
