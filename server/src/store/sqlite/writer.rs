//! The SQLite document writer: commits arrive on a channel and whatever is
//! waiting is committed together in one transaction (group commit) by a
//! thread of its own, on a rusqlite connection that thread owns — so a
//! group's statements run where they are issued, without a round trip to a
//! connection thread per statement (decision 0020). The job queue's claims,
//! completions and failures and the store's single writes run on this thread
//! too, between groups (`WriteQueue::run`). The other writes (auth, sessions,
//! migrations) use sqlx's write connection; a turn (one mutex) lets one of
//! the two write at a time, and the writer takes it per group, so those wait
//! for at most one group.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{mpsc, oneshot, Mutex, OwnedMutexGuard};

use super::checkpoint::{Checkpoints, WRITER_BACKSTOP};
use super::{document_row, store_error, WRITE_SQL};
use crate::store::commit::{decide, now_micros, Commit, CommitError, Committed, Outcome};
use crate::store::jobs::{JobHandoff, NewJob, Reserved};
use crate::store::StoreError;

/// Most commits one writer transaction takes in at once.
const GROUP_MAX: usize = 256;
/// Statements the writer's connection keeps prepared.
const PREPARED_KEPT: usize = 64;

type Reply = oneshot::Sender<Result<Vec<Committed>, CommitError>>;

/// Other work for the write connection: a statement or a few (jobs, settings, sessions).
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

enum Message {
    Commit(Commit, Reply),
    Run(Job),
}

/// The right to write; others wait until it is dropped.
pub(crate) struct WriteTurn(#[allow(dead_code)] OwnedMutexGuard<()>);

/// The queue in front of the writer thread.
pub(crate) struct WriteQueue {
    sender: mpsc::Sender<Message>,
    turn: Arc<Mutex<()>>,
}

impl WriteQueue {
    /// The writer thread of the database at `path` (its schema migrated or not yet).
    pub(super) fn start(
        path: &Path,
        checkpoints: Arc<Checkpoints>,
        handoff: Arc<JobHandoff>,
    ) -> Result<WriteQueue, StoreError> {
        let connection = connect(path)?;
        let (sender, receiver) = mpsc::channel(4096);
        let turn = Arc::new(Mutex::new(()));
        let thread_turn = turn.clone();
        std::thread::Builder::new()
            .name("nimbus-writer".into())
            .spawn(move || run_writer(connection, receiver, &thread_turn, &checkpoints, &handoff))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(WriteQueue { sender, turn })
    }

    pub async fn commit(&self, commit: Commit) -> Result<Vec<Committed>, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Message::Commit(commit, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `work` on the write connection, in turn with the groups (its own
    /// transaction, if it needs one, is its own).
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |connection| {
            let _ = reply.send(work(connection));
        });
        self.sender.send(Message::Run(job)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Waits until no group is being written, and keeps the writer out until dropped.
    pub async fn turn(&self) -> WriteTurn {
        WriteTurn(self.turn.clone().lock_owned().await)
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the writer has stopped".into())
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags).map_err(store_error)?;
    connection.busy_timeout(Duration::from_secs(5)).map_err(store_error)?;
    // As sqlx's write connection: WAL, synchronous NORMAL, foreign keys.
    connection.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).map_err(store_error)?;
    connection.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;").map_err(store_error)?;
    connection.pragma_update(None, "wal_autocheckpoint", WRITER_BACKSTOP).map_err(store_error)?;
    connection.set_prepared_statement_cache_capacity(PREPARED_KEPT);
    Ok(connection)
}

/// Commits groups and runs the other work, in the order they arrive, until
/// the queue closes. A panic (a bug) fails that group's commits or that work
/// (a transaction open rolls back as it unwinds) and is logged; the writer goes on.
/// Between two of them it finishes a checkpoint when the checkpointer asks.
fn run_writer(
    mut connection: Connection,
    mut receiver: mpsc::Receiver<Message>,
    turn: &Mutex<()>,
    checkpoints: &Checkpoints,
    handoff: &JobHandoff,
) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    let mut next: Option<Message> = None;
    loop {
        let Some(message) = next.take().or_else(|| receiver.blocking_recv()) else { return };
        let _turn = turn.blocking_lock();
        match message {
            Message::Run(job) => {
                if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut connection))) {
                    tracing::error!("the SQLite writer panicked: {}", crate::supervise::panic_text(&*panic));
                    let _ = connection.execute_batch("ROLLBACK");
                }
            }
            Message::Commit(commit, reply) => {
                group.push((commit, reply));
                while group.len() < GROUP_MAX {
                    match receiver.try_recv() {
                        Ok(Message::Commit(commit, reply)) => group.push((commit, reply)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let results =
                    match std::panic::catch_unwind(AssertUnwindSafe(|| commit_group(&mut connection, &group, handoff)))
                    {
                        Ok(results) => results,
                        Err(panic) => {
                            tracing::error!(
                                "the SQLite writer panicked on a group: {}",
                                crate::supervise::panic_text(&*panic)
                            );
                            let _ = connection.execute_batch("ROLLBACK");
                            Err(StoreError::Internal("the writer failed on this group".into()))
                        }
                    };
                reply_all(&mut group, results);
            }
        }
        checkpoints.finish_if_asked(&connection);
    }
}

/// Sends each commit of the group its result (or the group's error).
fn reply_all(group: &mut Vec<(Commit, Reply)>, results: Result<CommitResults, StoreError>) {
    let replies = group.drain(..).map(|(_, reply)| reply);
    match results {
        Ok(results) => replies.zip(results).for_each(|(reply, result)| {
            let _ = reply.send(result);
        }),
        Err(e) => {
            let message = e.to_string();
            replies.for_each(|reply| {
                let _ = reply.send(Err(StoreError::Internal(message.clone()).into()));
            });
        }
    }
}

type CommitResults = Vec<Result<Vec<Committed>, CommitError>>;

/// Per commit of a group, its result when it only creates at fresh ids (see `fresh_creates`).
type Created = Vec<Option<Vec<Committed>>>;

#[derive(PartialEq)]
enum Savepoints {
    No,
    Yes,
}

/// Commits a group in one transaction. Optimistically without savepoints;
/// when any commit of the group is rejected (rare), the transaction is rolled
/// back and the group runs again with one savepoint per commit, so a rejected
/// commit leaves the others intact. Mutations are pure, so re-running is safe.
/// The jobs of a committed group go to the worker (`JobHandoff`).
fn commit_group(
    connection: &mut Connection,
    group: &[(Commit, Reply)],
    handoff: &JobHandoff,
) -> Result<CommitResults, StoreError> {
    let now = now_micros();
    let one_at_a_time = || vec![None; group.len()];
    let first_try = match fresh_creates(group) {
        Some(created) => run_group(connection, group, created, Savepoints::No, now, handoff)?,
        None => None,
    };
    match first_try {
        Some(results) => Ok(results),
        None => Ok(run_group(connection, group, one_at_a_time(), Savepoints::Yes, now, handoff)?.unwrap_or_default()),
    }
}

/// One attempt at a group, the commits of `created` already decided;
/// `None` when, without savepoints, a commit was rejected.
fn run_group(
    connection: &mut Connection,
    group: &[(Commit, Reply)],
    mut created: Created,
    savepoints: Savepoints,
    now: i64,
    handoff: &JobHandoff,
) -> Result<Option<CommitResults>, StoreError> {
    // IMMEDIATE: take the write lock now, waiting (busy timeout) while another
    // process (`nimbus import` next to a running server) holds it, instead of
    // failing when a read transaction would be upgraded to a write.
    let mut tx = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(store_error)?;
    if insert_fresh(&tx, &created).is_err() {
        return Ok(None); // dropping `tx` rolls it back
    }
    let mut results = Vec::with_capacity(group.len());
    for ((commit, _), created) in group.iter().zip(created.iter_mut()) {
        if let Some(committed) = created.take() {
            results.push(Ok(committed));
            continue;
        }
        let result = if savepoints == Savepoints::Yes {
            let savepoint = tx.savepoint().map_err(store_error)?;
            let result = apply_writes(&savepoint, commit);
            if result.is_ok() {
                savepoint.commit().map_err(store_error)?;
            } // else dropping the savepoint rolls it back
            result
        } else {
            let result = apply_writes(&tx, commit);
            if result.is_err() {
                return Ok(None);
            }
            result
        };
        results.push(result);
    }
    record_changes(&tx, committed_writes(&results))?;
    let jobs = group_jobs(group, &results);
    let reserved = handoff.reserve(jobs.len(), now);
    record_jobs(&tx, &jobs, &reserved, now)?;
    tx.commit().map_err(store_error)?;
    handoff.hand_over(&jobs, reserved, now);
    Ok(Some(results))
}

/// Applies a commit's writes in order (`commit::decide` makes every decision).
fn apply_writes(connection: &Connection, commit: &Commit) -> Result<Vec<Committed>, CommitError> {
    let sql = &WRITE_SQL;
    let mut committed = Vec::with_capacity(commit.writes.len());
    for (index, write) in commit.writes.iter().enumerate() {
        let (collection, id) = (&write.key.collection, &write.key.id);
        let current = if write.fresh { None } else { document_row(connection, collection, id).map_err(store_error)? };
        let (statement, decided) = decide(index, write, current, commit.time, commit.id)?;
        if let Some(text) = statement.text(sql) {
            // An insert or update writes the document it decided; a delete has none.
            let data = decided.doc.as_ref().map(|d| (d.data.as_str(), commit.time));
            run_row_statement(connection, text, collection, id, data).map_err(store_error)?;
        }
        committed.push(decided);
    }
    Ok(committed)
}

/// One of `WRITE_SQL`'s row statements: `$1` collection, `$2` id, and for an
/// insert or update `$3` data and `$4` time (bound by name: the update uses
/// them out of order).
fn run_row_statement(
    connection: &Connection,
    text: &str,
    collection: &str,
    id: &str,
    data: Option<(&str, i64)>,
) -> rusqlite::Result<usize> {
    let mut statement = connection.prepare_cached(text)?;
    let mut named: Vec<(&str, &dyn rusqlite::ToSql)> = vec![("$1", &collection), ("$2", &id)];
    if let Some((data, time)) = &data {
        named.push(("$3", data));
        named.push(("$4", time));
    }
    statement.execute(named.as_slice())
}

/// Runs `text(n)`, a multi-row statement for `n` rows, over `rows`, a few
/// hundred parameters per statement; each row's values (borrowed, bound in
/// the order of its placeholders) come from `values`.
fn insert_rows<'a, T>(
    connection: &Connection,
    rows: &'a [T],
    per_statement: usize,
    text: impl Fn(usize) -> String,
    values: impl Fn(&'a T) -> Vec<ToSqlOutput<'a>>,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(per_statement.max(1)) {
        let mut statement = connection.prepare_cached(&text(chunk.len())).map_err(store_error)?;
        for (at, value) in chunk.iter().flat_map(&values).enumerate() {
            statement.raw_bind_parameter(at + 1, value).map_err(store_error)?;
        }
        statement.raw_execute().map_err(store_error)?;
    }
    Ok(())
}

/// Text, or SQL NULL.
fn text_or_null(text: Option<&str>) -> ToSqlOutput<'_> {
    text.map_or(ToSqlOutput::Owned(Value::Null), ToSqlOutput::from)
}

/// One change-log row per changed document (`commit::CHANGE_COLUMNS`).
fn record_changes<'a>(
    connection: &Connection,
    committed: impl Iterator<Item = &'a Committed>,
) -> Result<(), StoreError> {
    let changed: Vec<&Committed> = committed.filter(|c| c.kind.is_some()).collect();
    let text = |rows| crate::store::commit::changes_insert(&WRITE_SQL, rows);
    insert_rows(connection, &changed, crate::store::commit::CHANGES_PER_INSERT, text, |c| {
        vec![
            ToSqlOutput::from(c.key.collection.as_str()),
            ToSqlOutput::from(c.key.id.as_str()),
            ToSqlOutput::from(c.kind.map_or("", |k| k.as_str())),
            ToSqlOutput::from(c.version),
            text_or_null(c.before.as_deref()),
            text_or_null(c.doc.as_ref().map(|d| d.data.as_str())),
            ToSqlOutput::from(c.time),
            ToSqlOutput::from(c.commit),
            ToSqlOutput::from(c.doc.as_ref().map_or(c.time, |d| d.create_time)),
        ]
    })
}

/// The trigger jobs, due at `now`, those `reserved` has slots for leased.
fn record_jobs(connection: &Connection, jobs: &[NewJob], reserved: &Reserved, now: i64) -> Result<(), StoreError> {
    let leased: Vec<(&NewJob, i64)> = jobs.iter().zip(reserved.leases()).collect();
    insert_rows(
        connection,
        &leased,
        crate::store::jobs::JOBS_PER_INSERT,
        crate::store::jobs::jobs_insert,
        |(job, lease)| {
            vec![
                ToSqlOutput::from(job.id.as_str()),
                ToSqlOutput::from(job.function.as_str()),
                ToSqlOutput::from(job.payload.as_str()),
                ToSqlOutput::from(now),
                ToSqlOutput::from(now),
                ToSqlOutput::from(*lease),
            ]
        },
    )
}

/// For each commit made only of creates at fresh ids (`POST` on a
/// collection), its result, decided without reading (no row can exist);
/// `None` for the other commits. `None` overall when such a mutation
/// rejects, so the group runs one commit at a time.
fn fresh_creates(group: &[(Commit, Reply)]) -> Option<Created> {
    group
        .iter()
        .map(|(commit, _)| {
            if !commit.writes.iter().all(|w| w.fresh) {
                return Some(None);
            }
            let committed = commit.writes.iter().map(|write| match (write.mutation)(None, commit.time) {
                Ok(Outcome::Put(data)) => Some(Committed::created(write.key.clone(), data, commit.time, commit.id)),
                Ok(Outcome::Delete) | Err(_) => None,
            });
            committed.collect::<Option<Vec<_>>>().map(Some)
        })
        .collect()
}

/// Most rows in one multi-row `INSERT` of fresh documents (4 parameters each).
const FRESH_ROWS_PER_INSERT: usize = crate::store::query::rows_per_statement(4);

/// `INSERT INTO documents … VALUES` for `rows` new documents: parameters
/// `4r+1..4r+4` are collection, id, data and commit time of row `r`.
fn documents_insert(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let p = r * 4;
            format!("(${}, ${}, ${}, 1, ${}, ${})", p + 1, p + 2, p + 3, p + 4, p + 4)
        })
        .collect();
    format!(
        "INSERT INTO documents (collection, id, data, version, create_time, update_time) VALUES {}",
        values.join(", ")
    )
}

/// Inserts the documents of `created` with a few multi-row statements instead
/// of one statement per document.
fn insert_fresh(connection: &Connection, created: &Created) -> Result<(), StoreError> {
    let rows: Vec<&Committed> = created.iter().flatten().flatten().collect();
    insert_rows(connection, &rows, FRESH_ROWS_PER_INSERT, documents_insert, |c| {
        vec![
            ToSqlOutput::from(c.key.collection.as_str()),
            ToSqlOutput::from(c.key.id.as_str()),
            text_or_null(c.doc.as_ref().map(|d| d.data.as_str())),
            ToSqlOutput::from(c.time),
        ]
    })
}

/// The trigger jobs of every successful commit of the group.
fn group_jobs(group: &[(Commit, Reply)], results: &[Result<Vec<Committed>, CommitError>]) -> Vec<NewJob> {
    group
        .iter()
        .zip(results)
        .filter_map(|((commit, _), result)| Some(commit.jobs.as_ref()?(result.as_ref().ok()?, commit.time)))
        .flatten()
        .collect()
}

fn committed_writes(results: &[Result<Vec<Committed>, CommitError>]) -> impl Iterator<Item = &Committed> {
    results.iter().filter_map(|r| r.as_ref().ok()).flatten()
}
