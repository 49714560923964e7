//! Several instances on one PostgreSQL database (scale-out): instances that
//! start at the same moment on a fresh database all come up — migrations,
//! the stored service key and signing keys, and declared indexes are each
//! made once — and then serve the same data.

use std::time::Duration;

use serde_json::json;

use crate::harness::{base_command, spawn_and_wait_for_address, PgDatabase, SERVICE_KEY};

const INDEXES: &str = r#"
[[indexes]]
collection = "messages"
fields = ["room", "n"]

[[indexes]]
collection = "rooms/*/posts"
fields = ["score"]
"#;

const INSTANCES: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_instances_starting_at_once_on_a_fresh_database_all_come_up() {
    let database = PgDatabase::create().await;
    let folders: Vec<tempfile::TempDir> = (0..INSTANCES).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let mut starting = Vec::new();
    for folder in &folders {
        std::fs::write(folder.path().join("nimbus.toml"), INDEXES).expect("write nimbus.toml");
        let mut command = base_command(folder.path());
        command.env("NIMBUS_DATABASE_URL", &database.url);
        starting.push(std::thread::spawn(move || spawn_and_wait_for_address(command)));
    }
    let mut instances = Instances(Vec::new());
    let mut failed = 0;
    for start in starting {
        match start.join() {
            Ok((child, base, _)) => instances.0.push((child, base)),
            Err(_) => failed += 1,
        }
    }
    assert_eq!(failed, 0, "every instance starts");
    let client = reqwest::Client::new();
    for (i, (_, base)) in instances.0.iter().enumerate() {
        let ready = client.get(format!("{base}/readyz")).send().await.expect("readyz answers");
        assert_eq!(ready.status(), 200, "instance {i} is ready");
        let write = client
            .put(format!("{base}/v1/docs/messages/m{i}"))
            .bearer_auth(SERVICE_KEY)
            .json(&json!({"room": "r", "n": i}))
            .send()
            .await
            .expect("write");
        assert_eq!(write.status(), 201, "instance {i} writes");
    }
    let (_, last) = instances.0.last().expect("instances");
    let count: serde_json::Value = client
        .post(format!("{last}/v1/query"))
        .bearer_auth(SERVICE_KEY)
        .json(&json!({"collection": "messages", "where": [["room", "==", "r"]], "count": true}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("count")
        .json()
        .await
        .expect("JSON");
    assert_eq!(count["count"], INSTANCES, "every instance wrote to the same database");
}

/// Running instances, stopped when dropped (also when a test fails).
struct Instances(Vec<(std::process::Child, String)>);

impl Drop for Instances {
    fn drop(&mut self) {
        for (child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
