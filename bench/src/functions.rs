//! Function start-up and call times measured on the runtime pool directly:
//! cold starts (a new QuickJS runtime, the module loaded, the first call) and
//! warm calls of a function that returns a constant.
//!
//! Usage: function-timer <cold runs> <warm runs>

use std::sync::Arc;
use std::time::Duration;

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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let [cold_runs, warm_runs] = args.as_slice() else {
        return Err("usage: function-timer <cold runs> <warm runs>".into());
    };
    let limits = Limits { timeout: Duration::from_secs(10), heap_bytes: 64 * 1024 * 1024 };
    let module = Arc::new(Module::new("hello.js", MODULE));

    // idle = 0: every call finds its runtime expired and starts a new one.
    let cold_pool = Pool::new(1, Duration::ZERO, Arc::new(NoHost));
    let mut cold = Vec::new();
    for _ in 0..*cold_runs {
        let invocation = cold_pool.invoke(module.clone(), "hello", Value::Null, Value::Null, limits).await;
        invocation.result.map_err(|e| e.to_string())?;
        if invocation.cold {
            cold.push(invocation.duration.as_secs_f64() * 1000.0);
        }
    }
    let warm_pool = Pool::new(1, Duration::from_secs(600), Arc::new(NoHost));
    let mut warm = Vec::new();
    for _ in 0..*warm_runs {
        let invocation = warm_pool.invoke(module.clone(), "hello", Value::Null, Value::Null, limits).await;
        invocation.result.map_err(|e| e.to_string())?;
        if !invocation.cold {
            warm.push(invocation.duration.as_secs_f64() * 1000.0);
        }
    }
    let (cold_p50, cold_p99) = percentiles(cold);
    let (warm_p50, warm_p99) = percentiles(warm);
    println!("cold start (new runtime + module load + first call): p50 {cold_p50:.2} ms, p99 {cold_p99:.2} ms over {cold_runs}");
    println!(
        "warm call (in the runtime): p50 {:.1} µs, p99 {:.1} µs over {warm_runs}",
        warm_p50 * 1000.0,
        warm_p99 * 1000.0
    );
    Ok(())
}
