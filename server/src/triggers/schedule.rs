//! Schedules (`onSchedule(cron)`): every second the scheduler looks for the
//! latest tick of each schedule that fell due since it last looked, claims it
//! in the database (so each tick runs once across all instances) and queues a
//! job for it. Ticks missed while no instance ran are not replayed.

use std::str::FromStr;
use std::sync::Arc;

use crate::swap::Swap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::clock::format_time;
use crate::store::jobs::NewJob;
use crate::store::Store;

/// One schedule: its parsed cron expression and the function it runs.
#[derive(Clone)]
pub struct Schedule {
    cron: cron::Schedule,
    /// `module.js:export`.
    pub function: String,
}

impl Schedule {
    /// Five fields (`m h dom mon dow`, as crontab) or six with seconds first.
    pub fn parse(expression: &str, function: String) -> Result<Schedule, String> {
        let fields = expression.split_whitespace().count();
        let full = if fields == 5 { format!("0 {expression}") } else { expression.to_owned() };
        let cron =
            cron::Schedule::from_str(&full).map_err(|e| format!("invalid cron expression {expression:?}: {e}"))?;
        Ok(Schedule { cron, function })
    }

    /// The latest tick in `(after, until]`, if any.
    fn latest_tick(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.after(&after).take_while(|t| *t <= until).last()
    }
}

/// The schedules in force; replaced by functions on reload.
#[derive(Clone, Default)]
pub struct Schedules(Swap<Vec<Schedule>>);

impl Schedules {
    pub fn replace(&self, schedules: Vec<Schedule>) {
        self.0.store(schedules);
    }

    fn current(&self) -> Arc<Vec<Schedule>> {
        self.0.load()
    }

    /// Runs the scheduler until the process ends.
    pub fn spawn(self, store: Store) {
        crate::supervise::spawn_supervised("scheduler", move || self.clone().run_forever(store.clone()));
    }

    async fn run_forever(self, store: Store) {
        let mut last = clock_now();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = clock_now();
            for schedule in self.current().iter() {
                let Some(tick) = schedule.latest_tick(last, now) else { continue };
                if let Err(e) = run_tick(&store, schedule, tick).await {
                    tracing::error!(function = %schedule.function, "schedule tick failed: {e}");
                }
            }
            last = now;
        }
    }
}

/// The server's clock (`crate::clock`, which a test may move) as a date.
fn clock_now() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(crate::clock::now_micros()).unwrap_or_else(Utc::now)
}

async fn run_tick(store: &Store, schedule: &Schedule, tick: DateTime<Utc>) -> Result<(), crate::store::StoreError> {
    let tick_micros = tick.timestamp_micros();
    if !store.claim_tick(&schedule.function, tick_micros).await? {
        return Ok(());
    }
    let id = crate::ids::uuid();
    let event = json!({"id": id, "type": "schedule", "scheduledTime": format_time(tick_micros), "time": format_time(crate::clock::now_micros())});
    store.enqueue_jobs(&[NewJob { id, function: schedule.function.clone(), payload: event.to_string() }]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crontab_and_second_resolution_expressions() {
        let nightly = Schedule::parse("0 3 * * *", "m:f".into()).unwrap();
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let end = DateTime::parse_from_rfc3339("2026-01-03T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(
            nightly.latest_tick(start, end).unwrap().to_rfc3339(),
            "2026-01-03T03:00:00+00:00",
            "only the latest missed tick"
        );
        assert!(Schedule::parse("*/2 * * * * *", "m:f".into()).is_ok());
        assert!(Schedule::parse("every day", "m:f".into()).is_err());
    }
}
