//! Background loops that must outlive a bug: each runs in a task of its own,
//! and when it panics the panic is logged and the loop starts again after a
//! short pause. Used for the trigger worker, the scheduler and the folder
//! watchers; the SQLite writer thread restarts the same way in `store`.

use std::future::Future;
use std::time::Duration;

/// Pause before a panicked loop starts again (so a loop that panics at once
/// does not spin).
pub const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// Spawns `make()`'s loop under supervision; it runs until it returns.
pub fn spawn_supervised<F, Fut>(name: &'static str, make: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(make()).await {
                Err(error) if error.is_panic() => {
                    let panic = error.into_panic();
                    tracing::error!(task = name, "background task panicked, restarting it: {}", panic_text(&*panic));
                    tokio::time::sleep(RESTART_PAUSE).await;
                }
                _ => return,
            }
        }
    });
}

/// The message of a panic payload, when it has one.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_loop_is_restarted() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        spawn_supervised("test", move || {
            let counted = counted.clone();
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("a bug");
                }
            }
        });
        tokio::time::sleep(RESTART_PAUSE * 3).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "two panics, then a run that ends");
    }
}
