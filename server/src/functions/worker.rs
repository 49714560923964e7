//! The trigger worker: claims due jobs (document triggers, queue messages,
//! schedule ticks) in batches, runs their function at least once with a
//! stable event id, deletes finished jobs in batches, retries with
//! exponential backoff and finally moves a job that keeps failing to the
//! dead letters. Jobs run continuously: a new batch is claimed as soon as
//! half of the slots are free, not when the last batch has finished. Most
//! jobs are never claimed: the commit that inserts them leases them while
//! this worker has free slots and hands them over (`store::jobs`, decision
//! 0023); claims pick up the rest, retries and other instances' leftovers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use serde_json::{json, Value};

use super::Functions;
use crate::clock::now_micros;
use crate::store::jobs::{ClaimedJob, JobRow};
use crate::store::{Store, StoreError};

/// Prometheus series of the job queue.
#[derive(Clone)]
pub struct QueueMetrics {
    pub depth: prometheus::IntGauge,
    pub retries: prometheus::IntCounter,
    pub dead_letters: prometheus::IntCounter,
    /// Jobs started, by how they reached the worker: `commit` (handed over by
    /// the commit that inserted them) or `claim`.
    pub started: prometheus::IntCounterVec,
}

/// Runs due jobs.
#[derive(Clone)]
pub struct TriggerWorker {
    store: Store,
    functions: Functions,
    max_attempts: i64,
    backoff: Duration,
    lease: Duration,
    metrics: QueueMetrics,
    /// Slots for jobs claimed and not yet finished.
    slots: Arc<Semaphore>,
    /// How many slots an eager claim waits for: half of them.
    claim_batch: u32,
    /// Finished jobs, deleted in batches.
    finished: mpsc::UnboundedSender<String>,
    finished_queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>>,
}

/// Most jobs claimed and not yet finished: eight for each JavaScript worker,
/// at least 16 (a claimed job waits for a worker within its lease).
fn slots_for(workers: usize) -> usize {
    (workers * 8).max(16)
}

/// Most finished jobs one delete takes at once.
const FINISHED_PER_BATCH: usize = 500;

impl QueueMetrics {
    /// Registers the job queue's series with the app's registry.
    pub fn register(metrics: &crate::http::metrics::Metrics) -> Result<QueueMetrics, prometheus::Error> {
        Ok(QueueMetrics {
            depth: metrics.gauge("nimbus_jobs_pending", "Trigger and message jobs waiting (not dead)")?,
            retries: metrics.counter("nimbus_job_retries_total", "Failed job attempts that will be retried")?,
            dead_letters: metrics.counter("nimbus_job_dead_letters_total", "Jobs moved to the dead letters")?,
            started: metrics.counter_vec(
                "nimbus_jobs_started_total",
                "Jobs started, handed over by their commit or claimed",
                &["how"],
            )?,
        })
    }
}

impl TriggerWorker {
    /// `retry`: the attempts before a job is dead, and the backoff base.
    pub fn new(
        store: Store,
        functions: Functions,
        retry: (u32, Duration),
        lease: Duration,
        metrics: QueueMetrics,
    ) -> TriggerWorker {
        let (max_attempts, backoff) = retry;
        let slots = slots_for(functions.workers());
        let (finished, finished_queue) = mpsc::unbounded_channel();
        TriggerWorker {
            store,
            functions,
            max_attempts: i64::from(max_attempts.max(1)),
            backoff,
            lease,
            metrics,
            slots: Arc::new(Semaphore::new(slots)),
            claim_batch: (slots / 2).max(1) as u32,
            finished,
            finished_queue: Arc::new(tokio::sync::Mutex::new(finished_queue)),
        }
    }

    /// Waits for free slots (half of them when `eager`, else one), claims as
    /// many due jobs as there are free slots and starts them; returns how many
    /// it claimed and how many it asked for.
    async fn claim_and_start(&self, eager: bool) -> Result<(usize, usize), StoreError> {
        let wanted = if eager { self.claim_batch } else { 1 };
        let Ok(mut permits) = self.slots.clone().acquire_many_owned(wanted).await else { return Ok((0, 0)) };
        while let Ok(more) = self.slots.clone().try_acquire_owned() {
            permits.merge(more);
        }
        let asked = permits.num_permits();
        let now = now_micros();
        let jobs = self.store.claim_jobs(now, now + self.lease.as_micros() as i64, asked as i64).await?;
        let claimed = jobs.len();
        for job in jobs {
            if let Some(slot) = permits.split(1) {
                self.start(ClaimedJob { job, slot }, "claim");
            }
        }
        Ok((claimed, asked))
    }

    /// Runs a claimed job in a task of its own, which frees its slot at the
    /// end; `how` it came (`commit` or `claim`) is counted.
    fn start(&self, claimed: ClaimedJob, how: &str) {
        self.metrics.started.with_label_values(&[how]).inc();
        let worker = self.clone();
        tokio::spawn(async move {
            let ClaimedJob { job, slot } = claimed;
            let _slot = slot;
            if let Err(e) = worker.run(job).await {
                tracing::error!("trigger job bookkeeping failed: {e}");
            }
        });
    }

    async fn run(&self, job: JobRow) -> Result<(), StoreError> {
        let event: Value = serde_json::from_str(&job.payload).unwrap_or(Value::Null);
        let event_id = event["id"].as_str().unwrap_or(&job.id).to_owned();
        let outcome = match job.function.split_once(':') {
            None => Err("malformed function name".to_owned()),
            Some((module, export)) => match self.functions.registry().modules.get(module) {
                None => Err(format!("function module {module} is not loaded")),
                Some(loaded) => {
                    let context = json!({"auth": event["auth"], "eventId": event_id, "function": export});
                    let invocation = self.functions.invoke(loaded.module.clone(), export, event.clone(), context).await;
                    invocation.result.map(|_| ()).map_err(|e| e.to_string())
                }
            },
        };
        match outcome {
            Ok(()) => {
                let _ = self.finished.send(job.id);
                Ok(())
            }
            Err(error) => {
                let attempts = job.attempts + 1;
                let dead = attempts >= self.max_attempts;
                let delay = self.backoff.as_micros() as i64 * (1i64 << attempts.min(16));
                let delay = delay.min(60_000_000);
                if dead {
                    self.metrics.dead_letters.inc();
                    tracing::warn!(job = %job.id, function = %job.function, "trigger job failed {attempts} times; moved to dead letters: {error}");
                } else {
                    self.metrics.retries.inc();
                    tracing::info!(job = %job.id, function = %job.function, "trigger job failed (attempt {attempts}); retrying: {error}");
                }
                self.store.fail_job(&job.id, &error, now_micros() + delay, dead).await
            }
        }
    }

    /// Runs jobs until the process ends: those commits hand over at once,
    /// claimed ones when the store says some are due, else every 200 ms.
    pub fn spawn(self) {
        let (store, finished) = (self.store.clone(), self.finished_queue.clone());
        crate::supervise::spawn_supervised("finished jobs", move || delete_finished(store.clone(), finished.clone()));
        if let Some(handed) = self.store.hand_jobs_to(self.slots.clone(), self.lease) {
            let (worker, handed) = (self.clone(), Arc::new(tokio::sync::Mutex::new(handed)));
            crate::supervise::spawn_supervised("handed jobs", move || worker.clone().run_handed(handed.clone()));
        }
        crate::supervise::spawn_supervised("trigger worker", move || self.clone().run_forever());
    }

    /// Starts each job a commit of this process handed over.
    async fn run_handed(self, handed: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<ClaimedJob>>>) {
        let mut handed = handed.lock().await;
        while let Some(claimed) = handed.recv().await {
            self.start(claimed, "commit");
        }
    }

    async fn run_forever(self) {
        let mut last_depth = std::time::Instant::now() - Duration::from_secs(60);
        // After a full claim more jobs are probably due: claim again when half
        // the slots are free. Otherwise wait to be woken (or 200 ms).
        let mut more_due = true;
        loop {
            if last_depth.elapsed() > Duration::from_secs(2) {
                last_depth = std::time::Instant::now();
                if let Ok(depth) = self.store.pending_jobs().await {
                    self.metrics.depth.set(depth);
                }
            }
            if !more_due {
                let _ = tokio::time::timeout(Duration::from_millis(200), self.store.jobs_due()).await;
            }
            more_due = match self.claim_and_start(more_due).await {
                Ok((claimed, asked)) => claimed > 0 && claimed == asked,
                Err(e) => {
                    tracing::error!("claiming trigger jobs failed: {e}");
                    false
                }
            };
        }
    }
}

/// Deletes finished jobs, whatever has finished since the last statement in
/// one. A job whose delete keeps failing runs again after its lease (jobs run
/// at least once).
async fn delete_finished(store: Store, finished: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>>) {
    let mut finished = finished.lock().await;
    let mut batch = Vec::with_capacity(FINISHED_PER_BATCH);
    while finished.recv_many(&mut batch, FINISHED_PER_BATCH).await > 0 {
        for attempt in 1..=3u32 {
            match store.complete_jobs(&batch).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(jobs = batch.len(), "deleting finished jobs failed (attempt {attempt}): {e}");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
        batch.clear();
    }
}
