//! Measures how long `nimbus serve` takes from process start to its
//! `listening on` line (it prints that once the database is migrated and the
//! port is bound), over several runs on one data dir.
//!
//! Usage: startup-timer <nimbus binary> <project dir> <runs>

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, binary, dir, runs] = args.as_slice() else {
        return Err("usage: startup-timer <nimbus binary> <project dir> <runs>".into());
    };
    let runs: usize = runs.parse()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let mut child = Command::new(binary)
            .arg("serve")
            .current_dir(dir)
            .env("NIMBUS_LISTEN", "127.0.0.1:0")
            .env("NIMBUS_SERVICE_KEY", "nsk_benchmark_key_0123456789")
            .env("NIMBUS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let ready = BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l.starts_with("listening on "));
        let elapsed = started.elapsed();
        child.kill()?;
        child.wait()?;
        if !ready {
            return Err("nimbus exited before it was ready".into());
        }
        times.push(elapsed.as_secs_f64() * 1000.0);
    }
    let first = times[0];
    let mut rest = times[1..].to_vec();
    rest.sort_by(|a, b| a.total_cmp(b));
    let p50 = rest.get(rest.len() / 2).copied().unwrap_or(first);
    let max = rest.last().copied().unwrap_or(first);
    println!("first start (creates the database): {first:.1} ms");
    println!("later starts: p50 {p50:.1} ms, max {max:.1} ms over {} runs", rest.len());
    Ok(())
}
