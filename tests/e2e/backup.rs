//! `nimbus backup` / `nimbus restore` (SQLite): a backup taken while writes go
//! on is one consistent snapshot — every document it holds has its change-log
//! row, and nothing half-written — and restores into an empty data dir that a
//! new server then serves. PostgreSQL has its own tools; the commands say so.

use serde_json::json;

use crate::harness::{base_command, spawn_and_wait_for_address, Backend, Server};

/// `nimbus restore <file>` with `folder` as the project folder (its default data dir).
fn restore_in(folder: &std::path::Path, file: &str) -> std::process::Output {
    std::process::Command::new(crate::harness::nimbus_bin())
        .args(["restore", file])
        .current_dir(folder)
        .env_remove("NIMBUS_DATABASE_URL")
        .output()
        .expect("restore runs")
}

async fn count(url: &str, sql: &str) -> i64 {
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(url).await.expect("open the backup");
    sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_whole() {
    let server = std::sync::Arc::new(Server::start(Backend::Sqlite).await);
    for i in 0..50 {
        server.admin("PUT", &format!("/v1/docs/before/b{i}"), Some(json!({"i": i}))).await;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let batches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let server = server.clone();
        let batches = batches.clone();
        tokio::spawn(async move {
            let mut written = 0;
            while !*stopped.borrow() {
                let batch = json!({"writes": [
                    {"op": "set", "path": format!("during/d{written}"), "data": {"n": written}},
                    {"op": "set", "path": format!("pairs/p{written}"), "data": {"n": written}}
                ]});
                assert_eq!(server.admin("POST", "/v1/batch", Some(batch)).await.0, 200);
                written += 1;
                batches.store(written, std::sync::atomic::Ordering::Relaxed);
            }
            written
        })
    };
    let written_at_least = |n: usize| {
        let batches = batches.clone();
        async move {
            let what = format!("{n} batches written");
            crate::harness::eventually(std::time::Duration::from_secs(20), &what, || async {
                (batches.load(std::sync::atomic::Ordering::Relaxed) >= n).then_some(())
            })
            .await
        }
    };
    written_at_least(20).await;
    let backup = server.dir.path().join("backup.db");
    let output = server.run_cli(&["backup", "backup.db"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let again = server.run_cli(&["backup", "backup.db"]);
    assert!(!again.status.success(), "an existing file is not overwritten");
    let so_far = batches.load(std::sync::atomic::Ordering::Relaxed);
    written_at_least(so_far + 10).await;
    stop.send(true).expect("stop");
    let written = writer.await.expect("the writer ran");
    assert!(written > 0);

    let url = format!("sqlite://{}", backup.display());
    assert_eq!(count(&url, "SELECT COUNT(*) FROM documents WHERE collection = 'before'").await, 50);
    let during = count(&url, "SELECT COUNT(*) FROM documents WHERE collection = 'during'").await;
    let pairs = count(&url, "SELECT COUNT(*) FROM documents WHERE collection = 'pairs'").await;
    assert_eq!(during, pairs, "each batch is in the snapshot whole or not at all");
    let changes = count(&url, "SELECT COUNT(*) FROM changes").await;
    let documents = count(&url, "SELECT COUNT(*) FROM documents").await;
    assert_eq!(changes, documents, "every document has its change-log row (all were created once)");

    // Restore into an empty data dir and serve it.
    let folder = tempfile::tempdir().expect("temp dir");
    let restore = restore_in(folder.path(), &backup.display().to_string());
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    let twice = restore_in(folder.path(), &backup.display().to_string());
    assert!(!twice.status.success(), "a data dir with a database is not overwritten");
    let (mut child, base, _) = spawn_and_wait_for_address(base_command(folder.path()));
    let answer = crate::harness::query_as_service(&base, json!({"collection": "during", "count": true}))
        .await
        .expect("the restored server answers");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer["count"], during, "the restored server serves the snapshot");
}

#[test]
fn garbage_is_not_restored() {
    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::write(folder.path().join("junk.db"), b"not a database at all").expect("write");
    assert!(!restore_in(folder.path(), "junk.db").status.success());
    assert!(!folder.path().join("nimbus-data/nimbus.db").exists(), "nothing is left in place");
}
