//! Noticing that a folder's files changed (rules, functions) or that some
//! files did (nimbus.toml and the schemas it names): a fingerprint of names,
//! sizes and modification times, compared by one polling loop per watch
//! (supervised: restarted if it panics). Polling works on every file system
//! and in containers where change events do not.

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

/// Sizes and modification times of `paths` (`None` for a missing file).
pub fn files_fingerprint(paths: &[PathBuf]) -> Vec<Option<(u64, Option<SystemTime>)>> {
    paths.iter().map(|p| std::fs::metadata(p).ok().map(|m| (m.len(), m.modified().ok()))).collect()
}

/// Calls `on_change` whenever one of the files changes, appears or goes;
/// `on_change` answers the files to watch from then on.
pub fn watch_files<F, Fut>(name: &'static str, paths: Vec<PathBuf>, on_change: F)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Vec<PathBuf>> + Send + 'static,
{
    crate::supervise::spawn_supervised(name, move || {
        let (mut paths, on_change) = (paths.clone(), on_change.clone());
        async move {
            let mut seen = files_fingerprint(&paths);
            loop {
                tokio::time::sleep(EVERY).await;
                let now = files_fingerprint(&paths);
                if now != seen {
                    // What was seen before reading, so a change made during the read is noticed next time.
                    let next = on_change().await;
                    seen = if next == paths { now } else { files_fingerprint(&next) };
                    paths = next;
                }
            }
        }
    });
}
