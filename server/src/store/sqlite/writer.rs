//! The SQLite document writer: commits arrive on a channel and whatever is
//! waiting is committed together in one transaction (group commit) on a
//! thread of its own. That thread keeps the one write connection between
//! groups — handing a connection back to sqlx's pool costs a ping, a round
//! trip to the connection's thread, as much as a group's statements — and
//! gives it up as soon as another write (auth, jobs, migrations) asks for its
//! turn, so those wait for at most one group.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot, Mutex, Notify, OwnedMutexGuard};

use super::WRITE_SQL;
use crate::store::commit::{apply_writes, now_micros, record_changes, Commit, CommitError, Committed, Outcome};
use crate::store::jobs::{record_jobs, NewJob};
use crate::store::StoreError;

/// Most commits one writer transaction takes in at once.
const GROUP_MAX: usize = 256;

type Reply = oneshot::Sender<Result<Vec<Committed>, CommitError>>;

/// Hands the write connection between the writer thread and other writes.
struct Turns {
    lock: Arc<Mutex<()>>,
    /// Writes other than the writer thread's waiting for their turn.
    waiting: AtomicUsize,
    /// Tells an idle writer thread that someone is waiting.
    asked: Notify,
}

/// The right to use the write connection; others wait until it is dropped.
pub(crate) struct WriteTurn(#[allow(dead_code)] OwnedMutexGuard<()>);

/// The queue in front of the writer thread.
pub(crate) struct WriteQueue {
    sender: mpsc::Sender<(Commit, Reply)>,
    turns: Arc<Turns>,
}

impl WriteQueue {
    pub(super) fn start(writer: SqlitePool) -> Result<WriteQueue, StoreError> {
        let (sender, receiver) = mpsc::channel(4096);
        let turns =
            Arc::new(Turns { lock: Arc::new(Mutex::new(())), waiting: AtomicUsize::new(0), asked: Notify::new() });
        let thread_turns = turns.clone();
        std::thread::Builder::new()
            .name("nimbus-writer".into())
            .spawn(move || supervise_writer(writer, receiver, thread_turns))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(WriteQueue { sender, turns })
    }

    pub async fn commit(&self, commit: Commit) -> Result<Vec<Committed>, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((commit, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }

    /// Waits until the writer thread has given up the write connection.
    pub async fn turn(&self) -> WriteTurn {
        self.turns.waiting.fetch_add(1, Ordering::SeqCst);
        self.turns.asked.notify_one();
        let guard = self.turns.lock.clone().lock_owned().await;
        self.turns.waiting.fetch_sub(1, Ordering::SeqCst);
        WriteTurn(guard)
    }
}

/// The write connection while the writer thread holds it.
struct Held {
    connection: PoolConnection<Sqlite>,
    _turn: OwnedMutexGuard<()>,
}

/// Runs the writer loop until the queue closes. If the loop panics (a bug),
/// the commits of the group in hand fail, the panic is logged, any
/// transaction left open is rolled back, and the loop starts again on a new
/// runtime: the queue and every later commit keep working.
fn supervise_writer(pool: SqlitePool, mut receiver: mpsc::Receiver<(Commit, Reply)>, turns: Arc<Turns>) {
    loop {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            tracing::error!("the SQLite writer cannot start a runtime; commits will fail");
            return;
        };
        let run = std::panic::AssertUnwindSafe(|| runtime.block_on(run_writer(&pool, &mut receiver, &turns)));
        match std::panic::catch_unwind(run) {
            Ok(()) => return,
            Err(panic) => {
                tracing::error!("the SQLite writer panicked, restarting it: {}", crate::supervise::panic_text(&*panic));
                runtime.block_on(async {
                    if let Ok(mut connection) = pool.acquire().await {
                        let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
                    }
                });
                std::thread::sleep(crate::supervise::RESTART_PAUSE);
            }
        }
    }
}

async fn run_writer(pool: &SqlitePool, receiver: &mut mpsc::Receiver<(Commit, Reply)>, turns: &Turns) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    let mut held: Option<Held> = None;
    loop {
        tokio::select! {
            biased;
            _ = turns.asked.notified(), if held.is_some() => {
                held = None;
                continue;
            }
            received = receiver.recv_many(&mut group, GROUP_MAX) => if received == 0 { break },
        }
        if held.is_none() {
            let turn = turns.lock.clone().lock_owned().await;
            match pool.acquire().await {
                Ok(connection) => held = Some(Held { connection, _turn: turn }),
                Err(e) => {
                    reply_all(&mut group, Err(StoreError::from(e)));
                    continue;
                }
            }
        }
        if let Some(Held { connection, .. }) = held.as_mut() {
            let results = commit_group(connection, &group).await;
            if results.is_err() {
                // The connection may be left mid-transaction: open a new one.
                connection.close_on_drop();
                held = None;
            }
            reply_all(&mut group, results);
        }
        if turns.waiting.load(Ordering::SeqCst) > 0 {
            held = None;
        }
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

/// Commits a group in one transaction. Optimistically without savepoints;
/// when any commit of the group is rejected (rare), the transaction is rolled
/// back and the group runs again with one savepoint per commit, so a rejected
/// commit leaves the others intact. Mutations are pure, so re-running is safe.
async fn commit_group(
    connection: &mut SqliteConnection,
    group: &[(Commit, Reply)],
) -> Result<CommitResults, StoreError> {
    let now = now_micros();
    let one_at_a_time = || vec![None; group.len()];
    let Some(created) = fresh_creates(group) else {
        return Ok(run_group(connection, group, one_at_a_time(), Savepoints::Yes, now).await?.unwrap_or_default());
    };
    let created = match commit_creates_at_once(connection, group, created).await? {
        AtOnce::Committed(results) => return Ok(results),
        AtOnce::NotApplicable(created) => created,
    };
    match run_group(connection, group, created, Savepoints::No, now).await? {
        Some(results) => Ok(results),
        None => Ok(run_group(connection, group, one_at_a_time(), Savepoints::Yes, now).await?.unwrap_or_default()),
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

/// One attempt at a group, the commits of `created` already decided;
/// `None` when, without savepoints, a commit was rejected.
async fn run_group(
    connection: &mut SqliteConnection,
    group: &[(Commit, Reply)],
    mut created: Created,
    savepoints: Savepoints,
    now: i64,
) -> Result<Option<CommitResults>, StoreError> {
    // IMMEDIATE: take the write lock now, waiting (busy timeout) while another
    // process (`nimbus import` next to a running server) holds it, instead of
    // failing when a read transaction would be upgraded to a write.
    let mut tx = sqlx::Connection::begin_with(connection, "BEGIN IMMEDIATE").await?;
    if insert_fresh(&mut tx, &created).await.is_err() {
        return Ok(None);
    }
    let mut results = Vec::with_capacity(group.len());
    for ((commit, _), created) in group.iter().zip(created.iter_mut()) {
        if let Some(committed) = created.take() {
            results.push(Ok(committed));
            continue;
        }
        let result = if savepoints == Savepoints::Yes {
            let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
            let result = apply_writes!(savepoint, &WRITE_SQL, commit.writes, commit.time, commit.id);
            match result {
                Ok(_) => savepoint.commit().await?,
                Err(_) => savepoint.rollback().await?,
            }
            result
        } else {
            let result = apply_writes!(tx, &WRITE_SQL, commit.writes, commit.time, commit.id);
            if result.is_err() {
                tx.rollback().await?;
                return Ok(None);
            }
            result
        };
        results.push(result);
    }
    record_changes!(tx, &WRITE_SQL, committed_writes(&results))?;
    record_jobs!(tx, &group_jobs(group, &results), now)?;
    tx.commit().await?;
    Ok(Some(results))
}

/// Most documents `commit_creates_at_once` writes (4 parameters each).
const MAX_CREATES_AT_ONCE: usize = 1000;

/// A group whose commits all create documents at fresh ids, and want no
/// trigger jobs, is written as one multi-statement query — `BEGIN`, the
/// documents, their change-log rows, `COMMIT` — one round trip to SQLite's
/// thread instead of four (each costs more in waiting for that thread to be
/// scheduled than the statement itself). Otherwise the general path decides.
async fn commit_creates_at_once(
    connection: &mut SqliteConnection,
    group: &[(Commit, Reply)],
    created: Created,
) -> Result<AtOnce, StoreError> {
    if created.iter().any(Option::is_none) {
        return Ok(AtOnce::NotApplicable(created));
    }
    let results: CommitResults = created.into_iter().flatten().map(Ok).collect();
    let not_applicable =
        |results: CommitResults| Ok(AtOnce::NotApplicable(results.into_iter().map(Result::ok).collect()));
    let rows: Vec<&Committed> = committed_writes(&results).collect();
    if rows.is_empty() || rows.len() > MAX_CREATES_AT_ONCE || !group_jobs(group, &results).is_empty() {
        return not_applicable(results);
    }
    // Each change row reuses its document's parameters; the commit ids follow them all.
    let ids = rows.len() * 4;
    let changes: Vec<String> = (0..rows.len())
        .map(|r| {
            let p = r * 4;
            format!("(${}, ${}, 'create', 1, NULL, ${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4, ids + r + 1, p + 4)
        })
        .collect();
    let text = format!(
        "BEGIN IMMEDIATE; {}; INSERT INTO changes ({}) VALUES {}; COMMIT",
        documents_insert(rows.len()),
        crate::store::commit::CHANGE_COLUMNS,
        changes.join(", ")
    );
    let query = rows.iter().fold(bind_documents(sqlx::query(&text), &rows), |q, c| q.bind(c.commit));
    let written = query.execute(&mut *connection).await;
    drop(rows);
    match written {
        Ok(_) => Ok(AtOnce::Committed(results)),
        Err(_) => {
            sqlx::query("ROLLBACK").execute(&mut *connection).await?;
            not_applicable(results)
        }
    }
}

enum AtOnce {
    Committed(CommitResults),
    /// Not a group of creates only, or the statement failed (rolled back): the results decided so far.
    NotApplicable(Created),
}

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

fn bind_documents<'q>(
    mut query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    rows: &[&'q Committed],
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for committed in rows {
        let data = committed.doc.as_ref().map(|d| d.data.as_str());
        query = query.bind(&committed.key.collection).bind(&committed.key.id).bind(data).bind(committed.time);
    }
    query
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

/// Inserts the documents of `created` with a few multi-row statements instead
/// of one statement per document.
async fn insert_fresh(tx: &mut sqlx::Transaction<'_, Sqlite>, created: &Created) -> Result<(), StoreError> {
    let rows: Vec<&Committed> = created.iter().flatten().flatten().collect();
    for chunk in rows.chunks(FRESH_ROWS_PER_INSERT) {
        let text = documents_insert(chunk.len());
        bind_documents(sqlx::query(&text), chunk).execute(&mut **tx).await?;
    }
    Ok(())
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
