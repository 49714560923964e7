//! The trigger worker: claims due jobs (document triggers, queue messages,
//! schedule ticks), runs their function at least once with a stable event id,
//! retries with exponential backoff and finally moves a job that keeps
//! failing to the dead letters.

use std::time::Duration;

use serde_json::{json, Value};

use super::Functions;
use crate::clock::now_micros;
use crate::store::jobs::JobRow;
use crate::store::{Store, StoreError};
use crate::triggers::TriggerIndex;

/// Prometheus series of the job queue.
#[derive(Clone)]
pub struct QueueMetrics {
    pub depth: prometheus::IntGauge,
    pub retries: prometheus::IntCounter,
    pub dead_letters: prometheus::IntCounter,
}

/// Runs due jobs.
#[derive(Clone)]
pub struct TriggerWorker {
    store: Store,
    functions: Functions,
    index: TriggerIndex,
    max_attempts: i64,
    backoff: Duration,
    lease: Duration,
    metrics: QueueMetrics,
}

impl QueueMetrics {
    /// Registers the job queue's series with the app's registry.
    pub fn register(metrics: &crate::http::metrics::Metrics) -> Result<QueueMetrics, prometheus::Error> {
        Ok(QueueMetrics {
            depth: metrics.gauge("nimbus_jobs_pending", "Trigger and message jobs waiting (not dead)")?,
            retries: metrics.counter("nimbus_job_retries_total", "Failed job attempts that will be retried")?,
            dead_letters: metrics.counter("nimbus_job_dead_letters_total", "Jobs moved to the dead letters")?,
        })
    }
}

impl TriggerWorker {
    /// `retry`: the attempts before a job is dead, and the backoff base.
    pub fn new(
        store: Store,
        functions: Functions,
        index: TriggerIndex,
        retry: (u32, Duration),
        lease: Duration,
        metrics: QueueMetrics,
    ) -> TriggerWorker {
        let (max_attempts, backoff) = retry;
        TriggerWorker { store, functions, index, max_attempts: i64::from(max_attempts.max(1)), backoff, lease, metrics }
    }

    /// Claims the due jobs and runs them concurrently; returns how many ran.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let now = now_micros();
        let jobs = self.store.claim_jobs(now, now + self.lease.as_micros() as i64, 16).await?;
        let count = jobs.len();
        let runs = jobs.into_iter().map(|job| {
            let worker = self.clone();
            tokio::spawn(async move { worker.run(job).await })
        });
        for run in runs.collect::<Vec<_>>() {
            if let Ok(Err(e)) = run.await {
                tracing::error!("trigger job bookkeeping failed: {e}");
            }
        }
        Ok(count)
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
            Ok(()) => self.store.complete_job(&job.id).await,
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

    /// Runs jobs until the process ends: at once when woken, else every 200 ms.
    pub fn spawn(self) {
        crate::supervise::spawn_supervised("trigger worker", move || self.clone().run_forever());
    }

    async fn run_forever(self) {
        let mut last_depth = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            if last_depth.elapsed() > Duration::from_secs(2) {
                last_depth = std::time::Instant::now();
                if let Ok(depth) = self.store.pending_jobs().await {
                    self.metrics.depth.set(depth);
                }
            }
            match self.run_once().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::error!("claiming trigger jobs failed: {e}"),
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), self.index.woken()).await;
        }
    }
}
