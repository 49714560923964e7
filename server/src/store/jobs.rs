//! Trigger jobs (the transactional outbox): rows inserted by a commit for each
//! function its changes trigger, claimed by workers with a lease (on
//! PostgreSQL with `FOR UPDATE SKIP LOCKED`, so instances share the work),
//! deleted when done, retried later when failed, kept as dead letters when
//! they keep failing. A commit in a process whose worker has free slots
//! claims its own jobs as it inserts them and hands them to that worker once
//! it is durable (`JobHandoff`, decision 0023): no claim, a write of its own,
//! stands between a commit and its triggers.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use super::{Store, StoreError};

/// A job to insert with a commit.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The event id the function sees, stable across retries.
    pub id: String,
    /// `module.js:export`.
    pub function: String,
    /// The event, as JSON text.
    pub payload: String,
}

/// A claimed or listed job.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub function: String,
    pub payload: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
}

/// Decides the jobs of a commit from its committed writes and the commit time.
pub type JobsFor = Box<dyn Fn(&[super::commit::Committed], i64) -> Vec<NewJob> + Send + Sync>;

/// Most job rows in one INSERT (6 parameters each).
pub(super) const JOBS_PER_INSERT: usize = super::query::rows_per_statement(6);

pub(super) fn jobs_insert(rows: usize) -> String {
    let values = super::query::value_rows(rows, &[""; 6]);
    format!("INSERT INTO jobs (id, function, payload, run_after, created_at, locked_until) VALUES {values}")
}

/// Inserts `$jobs` (a slice of `NewJob`) due at `$now` on `$conn`, those
/// `$reserved` (a `Reserved`) holds slots for already leased.
macro_rules! record_jobs {
    ($conn:expr, $jobs:expr, $reserved:expr, $now:expr) => {{
        async {
            let mut leases = $reserved.leases();
            for chunk in $jobs.chunks($crate::store::jobs::JOBS_PER_INSERT) {
                let text = $crate::store::jobs::jobs_insert(chunk.len());
                let mut query = sqlx::query(&text);
                for (job, lease) in chunk.iter().zip(&mut leases) {
                    query =
                        query.bind(&job.id).bind(&job.function).bind(&job.payload).bind($now).bind($now).bind(lease);
                }
                query.execute(&mut *$conn).await.map_err($crate::store::StoreError::from)?;
            }
            Ok::<(), $crate::store::StoreError>(())
        }
        .await
    }};
}
pub(super) use record_jobs;

/// A job its commit claimed for this process's worker, with the worker's slot it holds.
pub struct ClaimedJob {
    pub job: JobRow,
    pub slot: OwnedSemaphorePermit,
}

/// Where commits hand their jobs: the worker's slots, its lease and its
/// inbox (set once the worker runs; until then every job waits for a
/// claim), and the signal that jobs wait in the table for a claim.
#[derive(Default)]
pub(super) struct JobHandoff {
    worker: OnceLock<HandoffWorker>,
    due: Notify,
}

struct HandoffWorker {
    slots: Arc<Semaphore>,
    lease_micros: i64,
    inbox: mpsc::UnboundedSender<ClaimedJob>,
}

/// The worker's slots a commit took for its first jobs, before inserting them.
pub(super) struct Reserved {
    slots: Vec<OwnedSemaphorePermit>,
    locked_until: i64,
}

impl JobHandoff {
    /// Slots for up to `jobs` jobs of a commit at `now`, as many as are free.
    pub(super) fn reserve(&self, jobs: usize, now: i64) -> Reserved {
        let Some(worker) = self.worker.get().filter(|_| jobs > 0) else {
            return Reserved { slots: Vec::new(), locked_until: 0 };
        };
        let slots = std::iter::from_fn(|| worker.slots.clone().try_acquire_owned().ok()).take(jobs).collect();
        Reserved { slots, locked_until: now + worker.lease_micros }
    }

    /// Once `jobs` (inserted with `reserved`) are committed: the leased ones
    /// go to the worker, and the worker hears when others wait for a claim.
    pub(super) fn hand_over(&self, jobs: &[NewJob], reserved: Reserved, now: i64) {
        let handed = reserved.slots.len();
        if let Some(worker) = self.worker.get() {
            for (job, slot) in jobs.iter().zip(reserved.slots) {
                let job = JobRow {
                    id: job.id.clone(),
                    function: job.function.clone(),
                    payload: job.payload.clone(),
                    attempts: 0,
                    last_error: None,
                    created_at: now,
                };
                // With the worker gone (the process ending) the job stays leased: it runs after its lease.
                let _ = worker.inbox.send(ClaimedJob { job, slot });
            }
        }
        if jobs.len() > handed {
            self.due.notify_one();
        }
    }
}

impl Reserved {
    /// The `locked_until` of a commit's jobs in order: the lease for those with
    /// a slot, then 0 (due for a claim) for as many as follow.
    pub(super) fn leases(&self) -> impl Iterator<Item = i64> {
        std::iter::repeat_n(self.locked_until, self.slots.len()).chain(std::iter::repeat(0))
    }
}

const JOB_COLUMNS: &str = "id, function, payload, attempts, last_error, created_at";

/// A row of `JOB_COLUMNS` read with rusqlite (SQLite's writer thread).
fn job_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: row.get(0)?,
        function: row.get(1)?,
        payload: row.get(2)?,
        attempts: row.get(3)?,
        last_error: row.get(4)?,
        created_at: row.get(5)?,
    })
}

impl Store {
    /// Makes this process's worker the one its commits hand their jobs to
    /// (once; `None` after that): each job takes one of `slots` and is leased
    /// for `lease`; they arrive on the returned inbox.
    pub fn hand_jobs_to(
        &self,
        slots: Arc<Semaphore>,
        lease: std::time::Duration,
    ) -> Option<mpsc::UnboundedReceiver<ClaimedJob>> {
        let (inbox, received) = mpsc::unbounded_channel();
        let lease_micros = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX / 2);
        self.handoff.worker.set(HandoffWorker { slots, lease_micros, inbox }).ok()?;
        Some(received)
    }

    /// Resolves when jobs may wait in the table for a claim (a commit left
    /// some unclaimed, a dead letter was replayed) since it last resolved.
    pub async fn jobs_due(&self) {
        self.handoff.due.notified().await;
    }

    /// Inserts jobs on their own (messages published outside a document
    /// write): a commit without writes, so on SQLite it joins the writer's
    /// group commit instead of taking the write connection for itself.
    pub async fn enqueue_jobs(&self, jobs: &[NewJob]) -> Result<(), StoreError> {
        let jobs = jobs.to_vec();
        let jobs_for: JobsFor = Box::new(move |_, _| jobs.clone());
        match self.commit(Vec::new(), Some(jobs_for), None).await {
            Ok(_) => Ok(()),
            Err(super::commit::CommitError::Store(e)) => Err(e),
            Err(rejected) => Err(StoreError::Internal(rejected.to_string())),
        }
    }

    /// Leases up to `limit` due jobs until `lease_until`.
    pub async fn claim_jobs(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        let lock = super::documents::dialect(&self.pools).skip_locked();
        let sql = format!(
            "UPDATE jobs SET locked_until = $1 WHERE id IN (SELECT id FROM jobs WHERE dead = $2 AND run_after <= $3 \
             AND locked_until <= $3 ORDER BY run_after LIMIT $4{lock}) RETURNING {JOB_COLUMNS}"
        );
        if let super::Pools::Sqlite(pools) = &*self.pools {
            let params = [lease_until.into(), false.into(), now.into(), limit.into()];
            return pools
                .queue
                .run(move |connection| super::sqlite::query_rows(connection, &sql, &params, job_row))
                .await;
        }
        Ok(on_writer!(self, |pool| {
            sqlx::query_as(&sql).bind(lease_until).bind(false).bind(now).bind(limit).fetch_all(pool).await?
        }))
    }

    /// Deletes finished jobs, a few hundred per statement.
    pub async fn complete_jobs(&self, ids: &[String]) -> Result<(), StoreError> {
        for chunk in ids.chunks(super::query::MAX_PARAMS_PER_STATEMENT) {
            let placeholders = (1..=chunk.len()).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
            let params: Vec<super::query::Param> = chunk.iter().map(Into::into).collect();
            self.execute(&format!("DELETE FROM jobs WHERE id IN ({placeholders})"), &params).await?;
        }
        Ok(())
    }

    /// Records a failed attempt: retried after `run_after`, or dead.
    pub async fn fail_job(&self, id: &str, error: &str, run_after: i64, dead: bool) -> Result<(), StoreError> {
        let sql = "UPDATE jobs SET attempts = attempts + 1, last_error = $2, run_after = $3, locked_until = 0, \
                   dead = $4 WHERE id = $1";
        self.execute(sql, &[id.into(), error.into(), run_after.into(), dead.into()]).await.map(|_| ())
    }

    pub async fn dead_jobs(&self, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE dead = $1 ORDER BY created_at LIMIT $2");
        Ok(on_reader!(self, |pool| sqlx::query_as(&sql).bind(true).bind(limit).fetch_all(pool).await?))
    }

    /// Puts a dead job back in the queue; returns whether it was dead.
    pub async fn replay_job(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let sql =
            "UPDATE jobs SET dead = $2, attempts = 0, run_after = $3, locked_until = 0 WHERE id = $1 AND dead = $4";
        let replayed = self.execute(sql, &[id.into(), false.into(), now.into(), true.into()]).await? == 1;
        if replayed {
            self.handoff.due.notify_one();
        }
        Ok(replayed)
    }

    /// Jobs waiting to run (not dead), for the queue-depth metric.
    pub async fn pending_jobs(&self) -> Result<i64, StoreError> {
        Ok(on_reader!(self, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE dead = $1")
            .bind(false)
            .fetch_one(pool)
            .await?))
    }
}

impl Store {
    /// Claims one tick of a schedule; `true` for the one instance that should run it.
    pub async fn claim_tick(&self, function: &str, tick: i64) -> Result<bool, StoreError> {
        let sql = "INSERT INTO schedule_ticks (function, tick) VALUES ($1, $2) ON CONFLICT DO NOTHING";
        Ok(self.execute(sql, &[function.into(), tick.into()]).await? == 1)
    }
}
