//! The document reads on SQLite — a document by its key, a page of a query.
//! A read first runs on the calling thread, on one of a few connections kept
//! for that, within a budget of a millisecond; one that takes longer (or
//! finds the database busy) is interrupted and runs again on reader threads
//! of their own, each holding one read-only rusqlite connection, under the
//! statement limit of the sqlx readers (`StatementDeadline`). Most reads take
//! tens of microseconds: handing each to another thread and back cost more
//! than the read (decision 0020; the first attempt on the calling thread:
//! decision 0022).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::{document_row, query_rows, store_error, StatementDeadline, PROGRESS_EVERY};
use crate::store::documents::StoredDoc;
use crate::store::query::Sql;
use crate::store::StoreError;

/// How long a read may hold the calling thread before it moves to a reader thread.
const INLINE_BUDGET: Duration = Duration::from_millis(1);
/// Virtual machine steps between two looks at that budget.
const INLINE_PROGRESS_EVERY: i32 = 1_000;

type Job = Box<dyn FnOnce(&Connection) + Send>;

enum Message {
    Read(Job),
    /// The thread that takes it ends.
    Stop,
}

/// The connections for reads on the calling thread, and the reader threads,
/// fed from one queue: the next free thread takes the next read.
pub(crate) struct DocumentReaders {
    inline: Mutex<Vec<InlineConnection>>,
    jobs: flume::Sender<Message>,
    threads: usize,
    /// Reads answered, by where: `caller` or `reader` (for `/metrics`).
    pub answered: prometheus::IntCounterVec,
    /// Its two series, resolved once.
    on_caller: prometheus::IntCounter,
    on_reader: prometheus::IntCounter,
}

/// A connection for reads on the calling thread, interrupted past its deadline.
struct InlineConnection {
    connection: Connection,
    /// Nanoseconds after `opened` at which the running read is interrupted.
    deadline: Arc<AtomicU64>,
    opened: Instant,
}

impl InlineConnection {
    fn open(path: &Path) -> Result<InlineConnection, StoreError> {
        // No busy wait on the calling thread: a busy database sends the read to a reader thread.
        let connection = read_only(path, Duration::ZERO)?;
        let (deadline, opened) = (Arc::new(AtomicU64::new(0)), Instant::now());
        let passed = deadline.clone();
        connection.progress_handler(
            INLINE_PROGRESS_EVERY,
            Some(move || opened.elapsed().as_nanos() as u64 > passed.load(Ordering::Relaxed)),
        );
        Ok(InlineConnection { connection, deadline, opened })
    }

    /// `read`, interrupted (`TimedOut`) once it has taken `INLINE_BUDGET`.
    fn read_within_budget<T>(&self, read: impl Fn(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let deadline = (self.opened.elapsed() + INLINE_BUDGET).as_nanos() as u64;
        self.deadline.store(deadline, Ordering::Relaxed);
        read(&self.connection)
    }
}

/// Statements each connection keeps prepared (the app's few query shapes).
const PREPARED_KEPT: usize = 64;

impl DocumentReaders {
    /// `threads` readers of the database at `path`; the threads end when this is dropped.
    /// `inline` connections for reads on the calling threads (one per
    /// thread of the runtime is enough).
    pub fn open(
        path: &Path,
        threads: usize,
        inline: usize,
        statement_limit: Duration,
    ) -> Result<DocumentReaders, StoreError> {
        let inline = (0..inline).map(|_| InlineConnection::open(path)).collect::<Result<Vec<_>, _>>()?;
        let (jobs, queue) = flume::unbounded::<Message>();
        for n in 0..threads {
            let connection = connect(path, statement_limit)?;
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("nimbus-reader-{n}"))
                .spawn(move || {
                    while let Ok(Message::Read(job)) = queue.recv() {
                        // A panic fails that one read (its reply is dropped), not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&connection)));
                    }
                })
                .map_err(|e| StoreError::Unavailable(format!("cannot start a reader: {e}")))?;
        }
        let answered = prometheus::IntCounterVec::new(
            prometheus::Opts::new("nimbus_sqlite_reads_total", "SQLite document reads, by the thread that answered"),
            &["thread"],
        )
        .map_err(|e| StoreError::Internal(e.to_string()))?;
        let (on_caller, on_reader) = (answered.with_label_values(&["caller"]), answered.with_label_values(&["reader"]));
        Ok(DocumentReaders { inline: Mutex::new(inline), jobs, threads, answered, on_caller, on_reader })
    }

    /// Ends the threads; reads still queued then fail as `unavailable`.
    pub fn close(&self) {
        for _ in 0..self.threads {
            let _ = self.jobs.send(Message::Stop);
        }
    }

    /// Runs `read` here within the budget when a connection for that is free,
    /// else (or when it took too long or found the database busy) on the next
    /// free reader thread.
    async fn run<T: Send + 'static>(
        &self,
        read: impl Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if let Some(result) = self.run_here(&read) {
            self.on_caller.inc();
            return result;
        }
        self.on_reader.inc();
        let stopped = || StoreError::Unavailable("the readers have stopped".into());
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |connection| {
            let _ = reply.send(read(connection));
        });
        self.jobs.send(Message::Read(job)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// `read` on a free connection of the calling thread's; `None` when there
    /// is none, or it took too long or found the database busy.
    fn run_here<T>(&self, read: &impl Fn(&Connection) -> Result<T, StoreError>) -> Option<Result<T, StoreError>> {
        let inline = self.inline.lock().ok()?.pop()?;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inline.read_within_budget(read)));
        // After a panic (a bug) the connection is not used again.
        let result = result.ok()?;
        if let Ok(mut free) = self.inline.lock() {
            free.push(inline);
        }
        match result {
            Err(StoreError::TimedOut | StoreError::Unavailable(_)) => None,
            done => Some(done),
        }
    }

    /// The document `collection/id`.
    pub async fn document(&self, collection: &str, id: &str) -> Result<Option<StoredDoc>, StoreError> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.run(move |connection| document_row(connection, &collection, &id).map_err(store_error)).await
    }

    /// The rows of `sql`, a `query::select`: `collection` first when `group`,
    /// else every row is of `collection`.
    pub async fn documents(&self, sql: Sql, group: bool, collection: &str) -> Result<Vec<StoredDoc>, StoreError> {
        let collection = collection.to_owned();
        self.run(move |connection| {
            let first = usize::from(group);
            query_rows(connection, &sql.text, &sql.params, |row| {
                Ok(StoredDoc {
                    collection: if group { row.get(0)? } else { collection.clone() },
                    id: row.get(first)?,
                    data: row.get(first + 1)?,
                    version: row.get(first + 2)?,
                    create_time: row.get(first + 3)?,
                    update_time: row.get(first + 4)?,
                })
            })
        })
        .await
    }
}

/// A read-only connection keeping its statements prepared.
fn read_only(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags).map_err(store_error)?;
    connection.busy_timeout(busy_timeout).map_err(store_error)?;
    connection.set_prepared_statement_cache_capacity(PREPARED_KEPT);
    Ok(connection)
}

/// A reader thread's connection, under the statement limit.
fn connect(path: &Path, statement_limit: Duration) -> Result<Connection, StoreError> {
    let connection = read_only(path, Duration::from_secs(5))?;
    let mut deadline = StatementDeadline::new(statement_limit);
    // rusqlite interrupts when the handler answers `true`.
    connection.progress_handler(PROGRESS_EVERY, Some(move || !deadline.check()));
    Ok(connection)
}
