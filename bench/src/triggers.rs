//! Trigger latency under a steady load: creates `lagged/<run>-<n>` documents
//! one request each at a fixed rate for a while (each fires the bench
//! module's `lag` trigger, which writes `lags/<same id>` with the delay from
//! the event's commit time to the function's start, by the function's clock);
//! then waits until every trigger has run and prints the delays' p50, p99 and
//! maximum (a bounded maximum: the triggers kept up) and the rate the writes
//! were sent at.
//!
//! Usage: NIMBUS_SERVICE_KEY=… trigger-load <base url> <writes per second> <seconds>

use std::time::{Duration, Instant};

use serde_json::Value;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Sends one create every `1 / rate` seconds for `seconds`, each on a task of its own.
async fn write_steadily(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    run: u64,
    rate: u64,
    seconds: u64,
) -> Result<u64, Error> {
    let total = rate * seconds;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = Vec::with_capacity(total as usize);
    for n in 0..total {
        ticks.tick().await;
        let request =
            client.put(format!("{base}/v1/docs/lagged/{run}-{n}")).bearer_auth(key).json(&serde_json::json!({}));
        sent.push(tokio::spawn(async move { request.send().await.map(|r| r.status().is_success()) }));
    }
    let mut failed = 0;
    for write in sent {
        if !matches!(write.await, Ok(Ok(true))) {
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(format!("{failed} of {total} writes failed").into());
    }
    Ok(total)
}

/// The delay each trigger of this run recorded, once all `total` have run.
async fn delays(client: &reqwest::Client, base: &str, key: &str, run: u64, total: u64) -> Result<Vec<f64>, Error> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut found = Vec::with_capacity(total as usize);
    let mut n = 0;
    while n < total {
        let response = client.get(format!("{base}/v1/docs/lags/{run}-{n}")).bearer_auth(key).send().await?;
        if response.status() == 404 {
            if Instant::now() > deadline {
                return Err(format!("the trigger of write {n} has not run after 120 s").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let doc: Value = response.error_for_status()?.json().await?;
        found.push(doc["data"]["lagMs"].as_f64().ok_or("a lags document without lagMs")?);
        n += 1;
    }
    Ok(found)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: NIMBUS_SERVICE_KEY=… trigger-load <base url> <writes per second> <seconds>";
    let [base, rate, seconds] = args.as_slice() else { return Err(usage.into()) };
    let (rate, seconds): (u64, u64) = (rate.parse()?, seconds.parse()?);
    let key = std::env::var("NIMBUS_SERVICE_KEY")?;
    let client = reqwest::Client::new();
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let started = Instant::now();
    let total = write_steadily(&client, base, &key, run, rate, seconds).await?;
    let sending = started.elapsed().as_secs_f64();
    let mut found = delays(&client, base, &key, run, total).await?;
    found.sort_by(f64::total_cmp);
    println!(
        "trigger latency at {:.0} writes/s for {seconds} s ({total} writes, one per request): p50 {} ms, p99 {} ms, max {} ms",
        total as f64 / sending,
        percentile(&found, 0.5),
        percentile(&found, 0.99),
        found.last().copied().unwrap_or_default(),
    );
    Ok(())
}
