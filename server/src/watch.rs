//! Noticing that a folder's files changed (rules, functions): a fingerprint of
//! names, sizes and modification times, compared by one polling loop per
//! folder (supervised: restarted if it panics). Polling works on every file
//! system and in containers where change events do not.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How often watched folders are checked.
pub const EVERY: std::time::Duration = std::time::Duration::from_millis(300);

/// Names, sizes and modification times of the files in `dir` ending in `.{extension}`.
pub fn fingerprint(dir: &Path, extension: &str) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == extension))
                .map(|e| {
                    let meta = e.metadata().ok();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        meta.as_ref().map_or(0, |m| m.len()),
                        meta.and_then(|m| m.modified().ok()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Calls `on_change` whenever the `*.{extension}` files of `dir` change.
pub fn watch_folder<F, Fut>(name: &'static str, dir: PathBuf, extension: &'static str, on_change: F)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    crate::supervise::spawn_supervised(name, move || {
        let (dir, on_change) = (dir.clone(), on_change.clone());
        async move {
            let mut seen = fingerprint(&dir, extension);
            loop {
                tokio::time::sleep(EVERY).await;
                let now = fingerprint(&dir, extension);
                if now != seen {
                    seen = now;
                    on_change().await;
                }
            }
        }
    });
}
