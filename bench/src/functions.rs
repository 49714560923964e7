//! Function start-up and call times measured on the runtime pool directly,
//! from submitting the call to its result: cold starts (no runtime holds the
//! module: it is loaded into the worker's blank runtime, or a new one, and
//! called) and warm calls of a function that returns a constant, both from
//! submitting to result and as the worker's own time (the invocation's
//! duration, from the worker taking the call to its reply).
//!
//! Usage: function-timer <cold runs> <warm runs>

use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus_js_runtime::{Limits, Module, NoHost, Pool};
use serde_json::Value;

const MODULE: &str = r#"
import { onHttp } from "nimbus:functions";
export const hello = onHttp({ path: "/hello" }, () => ({ status: 200, body: { ok: true } }));
"#;

fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Wall-clock milliseconds of `runs` cold calls, `gap` apart.
async fn cold_series(
    pool: &Pool,
    module: &Arc<Module>,
    limits: Limits,
    runs: usize,
    gap: Duration,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        tokio::time::sleep(gap).await;
        let started = Instant::now();
        let invocation = pool.invoke(module.clone(), "hello", Value::Null, Value::Null, limits).await;
        invocation.result.map_err(|e| e.to_string())?;
        if invocation.cold {
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(samples)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let [cold_runs, warm_runs] = args.as_slice() else {
        return Err("usage: function-timer <cold runs> <warm runs>".into());
    };
    let limits = Limits { timeout: Duration::from_secs(10), heap_bytes: 64 * 1024 * 1024 };
    let module = Arc::new(Module::new("hello.js", MODULE));

    // idle = 0: every call finds its runtime expired and starts cold.
    let cold_pool = Pool::new(1, Duration::ZERO, Arc::new(NoHost));
    // Spaced calls: the worker has made its blank runtime while idle.
    let spaced = cold_series(&cold_pool, &module, limits, *cold_runs, Duration::from_millis(50)).await?;
    // Back to back: the worker is still making its blank runtime when the next call arrives.
    let back_to_back = cold_series(&cold_pool, &module, limits, *cold_runs, Duration::ZERO).await?;
    let warm_pool = Pool::new(1, Duration::from_secs(600), Arc::new(NoHost));
    let (mut warm, mut worker_time) = (Vec::new(), Vec::new());
    for _ in 0..*warm_runs {
        let started = Instant::now();
        let invocation = warm_pool.invoke(module.clone(), "hello", Value::Null, Value::Null, limits).await;
        invocation.result.map_err(|e| e.to_string())?;
        if !invocation.cold {
            warm.push(started.elapsed().as_secs_f64() * 1000.0);
            worker_time.push(invocation.duration.as_secs_f64() * 1000.0);
        }
    }
    let (cold_p50, cold_p99) = percentiles(spaced);
    let (busy_p50, busy_p99) = percentiles(back_to_back);
    let (warm_p50, warm_p99) = percentiles(warm);
    let (worker_p50, worker_p99) = percentiles(worker_time);
    println!("cold start, calls 50 ms apart (module load into the worker's blank runtime + first call): p50 {cold_p50:.2} ms, p99 {cold_p99:.2} ms over {cold_runs}");
    println!("cold start, calls back to back (waits for a new runtime): p50 {busy_p50:.2} ms, p99 {busy_p99:.2} ms over {cold_runs}");
    println!(
        "warm call (in the runtime): p50 {:.1} µs, p99 {:.1} µs over {warm_runs}; the worker's time: p50 {:.1} µs, p99 {:.1} µs",
        warm_p50 * 1000.0,
        warm_p99 * 1000.0,
        worker_p50 * 1000.0,
        worker_p99 * 1000.0
    );
    Ok(())
}
