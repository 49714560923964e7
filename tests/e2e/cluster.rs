//! Several instances on one PostgreSQL database (scale-out): instances that
//! start at the same moment on a fresh database all come up — migrations,
//! the stored service key and signing keys, and declared indexes are each
//! made once — and then serve the same data; and three instances behind nginx
//! with the proxy rules docker-compose.yml mounts (`deploy/nginx/nimbus-proxy.conf`):
//! writes and reads through the balancer, realtime through it, each trigger and
//! each schedule tick run once, a killed instance's running job taken over by
//! another once its lease ends, no acknowledged write lost when an instance is
//! killed, and no failed request during a rolling restart.

use std::time::Duration;

use serde_json::json;

use crate::harness::{base_command, eventually, free_port, spawn_and_wait_for_address, PgDatabase, SERVICE_KEY};

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
    let query = json!({"collection": "messages", "where": [["room", "==", "r"]], "count": true});
    let count = crate::harness::query_as_service(last, query).await.expect("count");
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

const COUNTER: &str = r#"
import { onCreate, onSchedule } from "nimbus:functions";
export const count = onCreate("jobs/{id}", async (event, ctx) => {
  await ctx.db.doc(`counts/${event.params.id}`).set({ n: { $increment: 1 } });
});
export const slow = onCreate("slow/{id}", async (event, ctx) => {
  const until = Date.now() + 1500;
  while (Date.now() < until) {}
  await ctx.db.doc(`slowdone/${event.params.id}`).set({ n: { $increment: 1 } });
});
export const tick = onSchedule("* * * * * *", async (event, ctx) => {
  await ctx.db.doc(`ticks/t${event.scheduledTime.replace(/[^0-9]/g, "")}`).set({ n: { $increment: 1 } });
});
"#;

/// One instance of the cluster: its folder, its fixed port, its process.
struct Instance {
    folder: tempfile::TempDir,
    port: u16,
    child: Option<std::process::Child>,
}

impl Instance {
    fn start(database: &str) -> Instance {
        let folder = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(folder.path().join("functions")).expect("mkdir");
        std::fs::write(folder.path().join("functions/count.js"), COUNTER).expect("write function");
        let mut instance = Instance { folder, port: free_port(), child: None };
        instance.spawn(database);
        instance
    }

    fn spawn(&mut self, database: &str) {
        let mut command = base_command(self.folder.path());
        command
            .env("NIMBUS_DATABASE_URL", database)
            .env("NIMBUS_LISTEN", format!("127.0.0.1:{}", self.port))
            // A job's lease is the timeout and two seconds: 5 s, which the lease test moves past.
            .env("NIMBUS_FUNCTIONS_TIMEOUT_MS", "3000")
            .env("NIMBUS_TEST_CLOCK", "true");
        let (child, _, _) = spawn_and_wait_for_address(command);
        self.child = Some(child);
    }

    fn signal(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// How long nginx rests an instance that failed twice (`fail_timeout`; compose.conf rests 10 s).
const REST: Duration = Duration::from_secs(1);

/// nginx in front of `ports`, with the proxy rules of `deploy/nginx/nimbus-proxy.conf`.
struct Balancer {
    _folder: tempfile::TempDir,
    child: std::process::Child,
    base: String,
}

impl Balancer {
    fn start(ports: &[u16]) -> Balancer {
        let folder = tempfile::tempdir().expect("temp dir");
        let proxy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/nimbus-proxy.conf");
        let port = free_port();
        let dir = folder.path().display().to_string();
        let servers: String = ports
            .iter()
            .map(|p| format!("server 127.0.0.1:{p} max_fails=2 fail_timeout={}s;\n", REST.as_secs()))
            .collect();
        let config = format!(
            "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
             events {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n\
             client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
             upstream nimbus {{\n{servers}  keepalive 32;\n}}\n\
             server {{\n  listen 127.0.0.1:{port};\n  include {};\n}}\n}}\n",
            proxy.display()
        );
        std::fs::write(folder.path().join("nginx.conf"), config).expect("write nginx.conf");
        let child = std::process::Command::new("/usr/sbin/nginx")
            .args(["-p", &dir, "-c", &format!("{dir}/nginx.conf")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx runs (scripts/test installs it)");
        Balancer { _folder: folder, child, base: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Balancer {
    /// SIGTERM, so the master stops its worker (a killed master leaves it running).
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// PUTs `load/<prefix>-<n>` through the balancer until `stop`; answers the acknowledged ids and the failures.
async fn write_load(
    base: String,
    prefix: &'static str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<String>, Vec<String>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let (mut acknowledged, mut failed) = (Vec::new(), Vec::new());
    let mut n = 0;
    while !*stop.borrow() {
        n += 1;
        let id = format!("{prefix}-{n}");
        let sent = client
            .put(format!("{base}/v1/docs/load/{id}"))
            .bearer_auth(SERVICE_KEY)
            .json(&json!({"n": n}))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => acknowledged.push(id.clone()),
            Ok(response) => failed.push(format!("{id}: {}", response.status())),
            Err(e) => failed.push(format!("{id}: {e}")),
        }
        let read = client.get(format!("{base}/healthz")).send().await;
        if !read.is_ok_and(|r| r.status().is_success()) {
            failed.push(format!("GET /healthz after {id}"));
        }
    }
    (acknowledged, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_behind_nginx() {
    let database = PgDatabase::create().await;
    let mut instances =
        [Instance::start(&database.url), Instance::start(&database.url), Instance::start(&database.url)];
    let balancer = Balancer::start(&instances.iter().map(|i| i.port).collect::<Vec<_>>());
    let client = reqwest::Client::new();
    let base = balancer.base.clone();
    eventually(Duration::from_secs(10), "nginx answers", || async {
        client.get(format!("{base}/readyz")).send().await.ok().filter(|r| r.status() == 200).map(|_| ())
    })
    .await;

    // A realtime subscriber through the balancer hears writes made through any instance.
    let url = format!("{}/v1/realtime?access_token={SERVICE_KEY}", base.replacen("http://", "ws://", 1));
    let (mut live, _) = tokio_tungstenite::connect_async(url).await.expect("a WebSocket through nginx");
    {
        use futures_util::{SinkExt, StreamExt};
        let subscribe = json!({"type": "subscribe", "id": "jobs", "query": {"collection": "jobs"}});
        live.send(tokio_tungstenite::tungstenite::Message::Text(subscribe.to_string().into())).await.expect("send");
        let snapshot =
            tokio::time::timeout(Duration::from_secs(10), live.next()).await.expect("a snapshot").expect("open");
        assert!(snapshot.expect("frame").to_text().unwrap_or_default().contains("\"snapshot\""));
    }

    // Writes through the balancer land on every instance's database; each trigger runs once.
    for i in 0..30 {
        let response = client
            .put(format!("{base}/v1/docs/jobs/j{i}"))
            .bearer_auth(SERVICE_KEY)
            .json(&json!({"i": i}))
            .send()
            .await
            .expect("put");
        assert_eq!(response.status(), 201);
    }
    {
        use futures_util::StreamExt;
        let mut heard = 0;
        while heard < 30 {
            let frame = tokio::time::timeout(Duration::from_secs(10), live.next())
                .await
                .expect("a change")
                .expect("open")
                .expect("frame");
            heard += frame.to_text().unwrap_or_default().matches("\"added\"").count();
        }
    }
    let direct = format!("http://127.0.0.1:{}", instances[2].port);
    eventually(Duration::from_secs(20), "every trigger ran", || async {
        let answer = crate::harness::query_as_service(&direct, json!({"collection": "counts", "count": true})).await?;
        (answer["count"] == 30).then_some(())
    })
    .await;
    let twice = crate::harness::query_as_service(
        &direct,
        json!({"collection": "counts", "where": [["n", ">", 1]], "count": true}),
    )
    .await
    .expect("query");
    assert_eq!(twice["count"], 0, "no trigger ran twice across the instances");
    // Every instance runs the scheduler; each tick runs once.
    eventually(Duration::from_secs(20), "three schedule ticks", || async {
        let answer = crate::harness::query_as_service(&direct, json!({"collection": "ticks", "count": true})).await?;
        (answer["count"].as_i64() >= Some(3)).then_some(())
    })
    .await;
    let ticked_twice = json!({"collection": "ticks", "where": [["n", ">", 1]], "count": true});
    let ticked_twice = crate::harness::query_as_service(&direct, ticked_twice).await.expect("query");
    assert_eq!(ticked_twice["count"], 0, "no schedule tick ran twice across the instances");

    // A trigger job whose instance is killed while running it runs on another once its lease ends.
    instances[1].signal(libc::SIGTERM);
    instances[2].signal(libc::SIGTERM);
    let first = format!("http://127.0.0.1:{}", instances[0].port);
    let put = client.put(format!("{first}/v1/docs/slow/s1")).bearer_auth(SERVICE_KEY).json(&json!({}));
    assert_eq!(put.send().await.expect("put").status(), 201);
    let jobs = sqlx::PgPool::connect(&database.url).await.expect("connect");
    eventually(Duration::from_secs(10), "the slow job claimed", || {
        let jobs = jobs.clone();
        async move {
            let sql = "SELECT COUNT(*) FROM jobs WHERE function = 'count.js:slow' AND locked_until > 0";
            let claimed: i64 = sqlx::query_scalar(sql).fetch_one(&jobs).await.ok()?;
            (claimed == 1).then_some(())
        }
    })
    .await;
    instances[0].signal(libc::SIGKILL);
    for instance in &mut instances[1..] {
        instance.spawn(&database.url);
        let clock = format!("http://127.0.0.1:{}/v1/admin/clock", instance.port);
        let moved = client.post(clock).bearer_auth(SERVICE_KEY).json(&json!({"advanceMs": 6000})).send().await;
        assert_eq!(moved.expect("the clock moves").status(), 200);
    }
    eventually(Duration::from_secs(15), "the job ran on another instance", || async {
        let answer =
            crate::harness::query_as_service(&direct, json!({"collection": "slowdone", "count": true})).await?;
        (answer["count"] == 1).then_some(())
    })
    .await;
    let twice = json!({"collection": "slowdone", "where": [["n", ">", 1]], "count": true});
    assert_eq!(crate::harness::query_as_service(&direct, twice).await.expect("query")["count"], 0, "once");
    instances[0].spawn(&database.url);
    jobs.close().await;

    // kill -9 of one instance under a steady write load: no acknowledged write is lost.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(write_load(base.clone(), "kill", stopped));
    tokio::time::sleep(Duration::from_millis(500)).await;
    instances[0].signal(libc::SIGKILL);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    instances[0].spawn(&database.url);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).expect("stop the load");
    let (acknowledged, _failed_while_killed) = load.await.expect("the load ran");
    assert!(acknowledged.len() > 10, "the load ran: {}", acknowledged.len());
    for id in &acknowledged {
        let status = client
            .get(format!("{direct}/v1/docs/load/{id}"))
            .bearer_auth(SERVICE_KEY)
            .send()
            .await
            .expect("get")
            .status();
        assert_eq!(status, 200, "acknowledged write {id} is there");
    }

    // A rolling restart (SIGTERM each instance in turn, the next once the
    // balancer takes the restarted one back): not one failed request.
    tokio::time::sleep(REST + Duration::from_millis(500)).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(write_load(base.clone(), "roll", stopped));
    for instance in instances.iter_mut() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        instance.signal(libc::SIGTERM);
        instance.spawn(&database.url);
        tokio::time::sleep(REST + Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).expect("stop the load");
    let (acknowledged, failed) = load.await.expect("the load ran");
    assert!(acknowledged.len() > 10, "the load ran: {}", acknowledged.len());
    assert_eq!(failed, Vec::<String>::new(), "no request failed during the rolling restart");
}
