//! The recent-invocations log every instance shares (`GET
//! /v1/admin/functions/invocations`): each finished invocation is queued here
//! and written to the database in batches (one transaction every 200 ms), the
//! table keeps the newest 500 across all instances, and a reading merges what
//! this instance has not written yet, so a call shows at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use crate::store::invocations::InvocationRecord;
use crate::store::{Store, StoreError};

/// How many invocations the log keeps (across every instance).
pub const KEPT: usize = 500;
/// How often queued invocations are written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// The log: the invocations not yet written, and the store they go to.
#[derive(Clone)]
pub struct InvocationLog {
    store: Store,
    queued: Arc<Mutex<VecDeque<InvocationRecord>>>,
    /// Held while a batch is between the queue and the database, so a reading
    /// finds every invocation in one of the two.
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl InvocationLog {
    pub fn new(store: Store) -> InvocationLog {
        InvocationLog { store, queued: Arc::default(), writing: Arc::default() }
    }

    /// Queues an invocation (the oldest queued ones go when the database is
    /// unreachable for long).
    pub fn record(&self, record: InvocationRecord) {
        let mut queued = self.queue();
        if queued.len() >= KEPT {
            queued.pop_front();
        }
        queued.push_back(record);
    }

    /// The invocations not written yet (a panic while it was held cannot leave it half-changed).
    fn queue(&self) -> MutexGuard<'_, VecDeque<InvocationRecord>> {
        self.queued.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the queue every `FLUSH_EVERY` until the process ends.
    pub fn spawn_writer(&self) {
        let log = self.clone();
        crate::supervise::spawn_supervised("invocation log", move || {
            let log = log.clone();
            async move {
                loop {
                    tokio::time::sleep(FLUSH_EVERY).await;
                    if let Err(e) = log.write_queued().await {
                        tracing::warn!("writing the invocation log failed (will retry): {e}");
                    }
                }
            }
        });
    }

    async fn write_queued(&self) -> Result<(), StoreError> {
        let _writing = self.writing.lock().await;
        let mut batch = std::mem::take(&mut *self.queue());
        if batch.is_empty() {
            return Ok(());
        }
        let written = self.store.record_invocations(batch.make_contiguous(), KEPT as i64).await;
        if written.is_err() {
            // Put the batch back before what came meanwhile, keeping the newest `KEPT`.
            let mut queued = self.queue();
            let newer = std::mem::replace(&mut *queued, batch);
            queued.extend(newer);
            let excess = queued.len().saturating_sub(KEPT);
            queued.drain(..excess);
        }
        written
    }

    /// The newest invocations of every instance, newest first, optionally of one function.
    pub async fn recent(&self, function: Option<&str>) -> Result<Vec<InvocationRecord>, StoreError> {
        let _writing = self.writing.lock().await;
        let mut records: Vec<InvocationRecord> = {
            let queued = self.queue();
            queued.iter().filter(|r| function.is_none_or(|f| r.function == f)).cloned().collect()
        };
        records.extend(self.store.recent_invocations(function, KEPT as i64).await?);
        records.sort_by_key(|r| std::cmp::Reverse(r.time));
        records.truncate(KEPT);
        Ok(records)
    }
}
