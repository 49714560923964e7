//! Measures one argon2id password verification alone, with the parameters
//! sign-in uses (m = 19 MiB, t = 2, p = 1, the same crate and build), so
//! `bench/run signin` can compare it with the CPU time a whole sign-in costs.
//!
//! Usage: hash-timer <verifications> [threads] — with several threads, each
//! runs that many verifications at once with the others (as concurrent
//! sign-ins do), which shows what sharing the memory bandwidth costs.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let runs: u32 = args.next().ok_or("usage: hash-timer <verifications> [threads]")?.parse()?;
    let threads: u32 = args.next().map_or(Ok(1), |t| t.parse())?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(19 * 1024, 2, 1, None)?);
    let salt = SaltString::generate(&mut OsRng);
    let stored = argon2.hash_password(b"correct horse", &salt)?.to_string();
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (argon2, stored) = (argon2.clone(), stored.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let parsed = PasswordHash::new(&stored).map_err(|e| e.to_string())?;
                for _ in 0..runs {
                    argon2.verify_password(b"correct horse", &parsed).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| "a thread panicked")??;
    }
    let each = started.elapsed().as_secs_f64() * 1000.0 / f64::from(runs);
    println!("argon2id verification alone ({threads} thread(s) at once, {runs} runs each): {each:.2} ms each");
    Ok(())
}
