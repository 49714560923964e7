//! The document reads on SQLite — a document by its key, a page of a query —
//! run whole on reader threads of their own, each holding one read-only
//! rusqlite connection: one hand-over to a thread and one back per read.
//! Through sqlx every statement is a round trip to its connection's thread
//! and every row a message back, which cost more than the reads themselves
//! (decision 0020). Statement limits are the sqlx readers' (`StatementDeadline`).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{document_row, query_rows, store_error, StatementDeadline, PROGRESS_EVERY};
use crate::store::documents::StoredDoc;
use crate::store::query::Sql;
use crate::store::StoreError;

type Job = Box<dyn FnOnce(&Connection) + Send>;

enum Message {
    Read(Job),
    /// The thread that takes it ends.
    Stop,
}

/// The reader threads, fed from one queue: the next free thread takes the next read.
pub(crate) struct DocumentReaders {
    jobs: flume::Sender<Message>,
    threads: usize,
}

/// Statements each connection keeps prepared (the app's few query shapes).
const PREPARED_KEPT: usize = 64;

impl DocumentReaders {
    /// `threads` readers of the database at `path`; the threads end when this is dropped.
    pub fn open(path: &Path, threads: usize, statement_limit: Duration) -> Result<DocumentReaders, StoreError> {
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
        Ok(DocumentReaders { jobs, threads })
    }

    /// Ends the threads; reads still queued then fail as `unavailable`.
    pub fn close(&self) {
        for _ in 0..self.threads {
            let _ = self.jobs.send(Message::Stop);
        }
    }

    /// Runs `read` on the next free reader.
    async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let stopped = || StoreError::Unavailable("the readers have stopped".into());
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |connection| {
            let _ = reply.send(read(connection));
        });
        self.jobs.send(Message::Read(job)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
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

fn connect(path: &Path, statement_limit: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags).map_err(store_error)?;
    connection.busy_timeout(Duration::from_secs(5)).map_err(store_error)?;
    connection.set_prepared_statement_cache_capacity(PREPARED_KEPT);
    let mut deadline = StatementDeadline::new(statement_limit);
    // rusqlite interrupts when the handler answers `true`.
    connection.progress_handler(PROGRESS_EVERY, Some(move || !deadline.check()));
    Ok(connection)
}
