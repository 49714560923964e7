//! WAL checkpoints off the writer's path (decision 0021). SQLite's own
//! automatic checkpoint runs inside the commit that crosses 1,000 WAL pages:
//! that commit copies every page into the database file and waits for its
//! fsync, which made the slowest writes (the p99 of creates, of the trigger
//! latency) and took about a quarter of the writer thread's time. Here a
//! thread of its own checkpoints every few milliseconds, passively (writers
//! go on meanwhile). A passive checkpoint under steady writes never quite
//! catches up, and SQLite restarts the WAL from its beginning only once every
//! page of it is in the database; so when the WAL has grown past
//! `RESTART_AT` pages, the checkpointer catches up as far as it can and then
//! asks the writer to checkpoint the last few pages itself between two groups
//! (`finish_if_asked`): the next write then starts the WAL again.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::store_error;
use crate::store::StoreError;

/// How often the checkpointer looks at the WAL.
const PASS_EVERY: Duration = Duration::from_millis(20);
/// WAL pages above which the WAL should start again from its beginning.
const RESTART_AT: i64 = 4000;
/// Pages left for the writer's own checkpoint: it copies these in its turn.
const LEFT_FOR_THE_WRITER: i64 = 64;
/// Passes the checkpointer makes back to back to catch up before asking the writer.
const CATCH_UP_PASSES: usize = 4;
/// Pages of WAL at which a writer connection checkpoints inside its commit:
/// only if the checkpointer falls far behind (or has stopped).
pub(super) const WRITER_BACKSTOP: u32 = 20_000;

/// What the checkpointer and the writers share.
#[derive(Default)]
pub(crate) struct Checkpoints {
    /// The WAL is long and nearly all checkpointed: the writer should finish.
    writer_asked: AtomicBool,
    stopped: AtomicBool,
}

/// The WAL's state after a checkpoint: pages in it, pages of them in the
/// database; `busy` when another checkpoint was running (nothing was done).
#[derive(Debug, Clone, Copy)]
struct WalState {
    busy: bool,
    pages: i64,
    checkpointed: i64,
}

impl WalState {
    fn left(&self) -> i64 {
        self.pages - self.checkpointed
    }
}

impl Checkpoints {
    /// Starts the checkpointer of the database at `path` (in WAL mode).
    pub(super) fn start(path: &Path) -> Result<Arc<Checkpoints>, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags).map_err(store_error)?;
        connection.busy_timeout(Duration::from_secs(5)).map_err(store_error)?;
        let database = std::fs::File::open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let checkpoints = Arc::new(Checkpoints::default());
        let shared = checkpoints.clone();
        std::thread::Builder::new()
            .name("nimbus-checkpoint".into())
            .spawn(move || shared.run(&connection, &database))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpointer: {e}")))?;
        Ok(checkpoints)
    }

    /// Ends the checkpointer thread (at its next pass).
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    fn run(&self, connection: &Connection, database: &std::fs::File) {
        while !self.stopped.load(Ordering::Relaxed) {
            std::thread::sleep(PASS_EVERY);
            if self.writer_asked.load(Ordering::Acquire) {
                continue; // the writer's checkpoint comes first
            }
            if let Err(e) = self.pass(connection, database) {
                tracing::warn!("a background WAL checkpoint failed (the writer's own checkpoint stands in): {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }

    /// One look at the WAL: checkpoints what is new; when the WAL is long,
    /// catches up and asks the writer for the rest.
    fn pass(&self, connection: &Connection, database: &std::fs::File) -> rusqlite::Result<()> {
        let mut wal = checkpoint(connection)?;
        if wal.pages < RESTART_AT {
            return Ok(());
        }
        for _ in 0..CATCH_UP_PASSES {
            if wal.left() <= LEFT_FOR_THE_WRITER {
                break;
            }
            wal = checkpoint(connection)?;
        }
        // The passes copied pages into the database file without syncing it
        // (SQLite syncs it only when a checkpoint reaches the WAL's end): sync
        // them here, so that the writer's own checkpoint, which does reach the
        // end, has only its last pages left to sync. A failure here only
        // leaves that work to the writer, whose sync reports it.
        let _ = database.sync_data();
        // Even with nothing left as this connection saw the WAL, the writer
        // has gone on writing meanwhile: it finishes.
        self.writer_asked.store(true, Ordering::Release);
        Ok(())
    }

    /// Called by the writer between groups: when asked, checkpoints the WAL's
    /// last pages on the writer's connection (no other write is under way, so
    /// it can finish, and the next write starts the WAL again).
    pub(super) fn finish_if_asked(&self, connection: &Connection) {
        if !self.writer_asked.load(Ordering::Acquire) {
            return;
        }
        match checkpoint(connection) {
            // Busy: the checkpointer's pass had not ended; again after the next group.
            Ok(wal) if wal.busy => {}
            Ok(_) => self.writer_asked.store(false, Ordering::Release),
            Err(e) => tracing::warn!("the writer's WAL checkpoint failed: {e}"),
        }
    }
}

/// A passive checkpoint: copies into the database what no reader still needs
/// from the WAL, without waiting for anyone.
fn checkpoint(connection: &Connection) -> rusqlite::Result<WalState> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(WalState { busy: row.get::<_, i64>(0)? != 0, pages: row.get(1)?, checkpointed: row.get(2)? })
    })
}
