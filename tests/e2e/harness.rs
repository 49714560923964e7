//! Starts the real `nimbus` binary on a free port with a fresh data dir,
//! against SQLite or a fresh PostgreSQL database (dropped afterwards), and
//! offers small HTTP helpers. Nothing is shared between tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

pub const SERVICE_KEY: &str = "nsk_test_service_key_0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Emits `mod <name> { sqlite, postgres }` tests calling `async fn <name>(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$name($crate::harness::Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { super::$name($crate::harness::Backend::Postgres).await }
        }
    )*};
}

pub fn nimbus_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nimbus")
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("NIMBUS_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database, dropped when this value is.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "nimbus_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            rand::random::<u32>()
        );
        let admin = postgres_admin_url();
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is not reachable ({e}); set NIMBUS_TEST_DATABASE_URL"));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
        PgDatabase { url: format!("{base}/{name}"), name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_admin_url()).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                }
            })
        })
        .join();
    }
}

/// A running `nimbus serve` process.
pub struct Server {
    child: Child,
    env: Vec<(String, String)>,
    pub base: String,
    /// The project folder (cwd of the process); removed on drop.
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    _db: Option<PgDatabase>,
}

/// What to start a server with.
#[derive(Default)]
pub struct Options {
    pub env: Vec<(String, String)>,
    /// Files to write into the project folder before start (path, content).
    pub files: Vec<(String, String)>,
}

impl Options {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A server whose clock the service key may move forward (`advance_clock`).
    pub fn movable_clock(self) -> Self {
        self.env("NIMBUS_TEST_CLOCK", "true")
    }

    pub fn file(mut self, path: &str, content: &str) -> Self {
        self.files.push((path.into(), content.into()));
        self
    }
}

impl Server {
    pub async fn start(backend: Backend) -> Server {
        Server::start_with(backend, Options::default()).await
    }

    pub async fn start_with(backend: Backend, options: Options) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDatabase::create().await),
        };
        for (path, content) in &options.files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, content).expect("write project file");
        }
        let mut env = options.env.clone();
        if let Some(db) = &db {
            env.push(("NIMBUS_DATABASE_URL".into(), db.url.clone()));
        }
        let (child, base) = spawn_in(dir.path(), &env);
        let server = Server { child, env, base, dir, client: reqwest::Client::new(), _db: db };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(response) = self.client.get(self.url("/readyz")).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server at {} never became ready", self.base);
    }

    /// Kills the process with SIGKILL (no graceful shutdown) and starts it
    /// again on the same data dir and database.
    pub async fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.respawn().await;
    }

    /// Stops the server (SIGTERM) and starts it again in the same folder, on
    /// the same database, with `extra` settings replacing or adding to its own.
    pub async fn restart_with(&mut self, extra: &[(&str, &str)]) {
        self.terminate();
        for (key, value) in extra {
            self.env.retain(|(k, _)| k != key);
            self.env.push((key.to_string(), value.to_string()));
        }
        self.respawn().await;
    }

    async fn respawn(&mut self) {
        let (child, base) = spawn_in(self.dir.path(), &self.env);
        self.child = child;
        self.base = base;
        self.wait_ready().await;
    }

    /// Stops the server (SIGTERM) and starts it again in the same folder, with
    /// the same settings, on `database` (after `nimbus copy` moved the project there).
    pub async fn restart_on(&mut self, database: PgDatabase) {
        self.terminate();
        self.env.retain(|(key, _)| key != "NIMBUS_DATABASE_URL");
        self.env.push(("NIMBUS_DATABASE_URL".into(), database.url.clone()));
        self._db = Some(database);
        self.respawn().await;
    }

    /// A second instance on the same PostgreSQL database (its own folder,
    /// the same rules files), with `extra` settings on top.
    pub async fn sibling(&self, extra: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        copy_folder(&self.dir.path().join("rules"), &dir.path().join("rules"));
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (child, base) = spawn_in(dir.path(), &env);
        let server = Server { child, env, base, dir, client: reqwest::Client::new(), _db: None };
        server.wait_ready().await;
        server
    }

    /// The PostgreSQL database this server owns (`None` on SQLite and for siblings).
    pub fn database_url(&self) -> Option<String> {
        self._db.as_ref().map(|db| db.url.clone())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait for nimbus")
    }

    /// Sends `method path` with an optional JSON body and bearer token.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        read(response).await
    }

    /// The newest mail the dev mailer wrote to `to` (the whole file).
    pub fn last_mail(&self, to: &str) -> String {
        let folder = self.dir.path().join("nimbus-data/mail");
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .rev()
            .map(|f| std::fs::read_to_string(f).expect("read mail"))
            .find(|text| text.starts_with(&format!("To: {to}\n")))
            .unwrap_or_else(|| panic!("no mail to {to} in {}", folder.display()))
    }

    /// Rows of a SQL query run directly on the server's database, as strings.
    pub async fn sql_rows(&self, query: &str) -> Vec<Vec<Option<String>>> {
        match &self._db {
            Some(db) => {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.expect("connect");
                text_rows(&sqlx::query(query).fetch_all(&mut conn).await.expect("query"))
            }
            None => {
                let url = format!("sqlite://{}", self.dir.path().join("nimbus-data/nimbus.db").display());
                let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.expect("connect");
                text_rows(&sqlx::query(query).fetch_all(&mut conn).await.expect("query"))
            }
        }
    }

    /// Runs `nimbus <args>` in this server's project folder, against the same
    /// database, and returns its output.
    pub fn run_cli(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(nimbus_bin());
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("NIMBUS_DATABASE_URL")
            .env("NIMBUS_SERVICE_KEY", SERVICE_KEY)
            .env("NIMBUS_LOG", "warn");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command.output().expect("run nimbus")
    }

    /// The Prometheus text of `/metrics`, read with the service key.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).bearer_auth(SERVICE_KEY).send().await.expect("metrics");
        assert_eq!(response.status(), 200, "metrics with the service key");
        response.text().await.expect("metrics text")
    }

    /// The value of one unlabelled series in `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics().await;
        let prefix = format!("{name} ");
        text.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
    }

    /// Moves the server's clock forward (the server must run with
    /// `NIMBUS_TEST_CLOCK=true`, see `Options::movable_clock`).
    pub async fn advance_clock(&self, by: Duration) {
        let body = serde_json::json!({"advanceMs": by.as_millis() as u64});
        let (status, answer) = self.admin("POST", "/v1/admin/clock", Some(body)).await;
        assert_eq!(status, 200, "the clock moves: {answer}");
    }

    /// Waits until no trigger or queue job is pending or running (dead
    /// letters aside): after that no delivery can still land.
    pub async fn jobs_settled(&self) {
        eventually(Duration::from_secs(15), "every job finished", || async {
            let rows = self.sql_rows("SELECT CAST(COUNT(*) AS TEXT) FROM jobs WHERE NOT dead").await;
            (rows[0][0].as_deref() == Some("0")).then_some(())
        })
        .await;
    }

    /// Like `call`, with the service key.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(SERVICE_KEY), body).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST {base}/v1/query` with the service key: the answer (a count, a page),
/// or `None` when the server does not answer with JSON within 10 s.
pub async fn query_as_service(base: &str, query: Value) -> Option<Value> {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/query"))
        .bearer_auth(SERVICE_KEY)
        .json(&query)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

/// The repository's root (the demo app's `rules/` and `functions/` are there).
pub fn repository_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `nimbus <args>` in `dir`; answers whether it succeeded and its stdout and stderr.
pub fn cli_in(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(nimbus_bin()).args(args).current_dir(dir).output().expect("nimbus runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// Status and JSON body (or `Value::String` of the text when not JSON).
pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

fn copy_folder(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).into_iter().flatten().flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

fn spawn_in(dir: &std::path::Path, env: &[(String, String)]) -> (Child, String) {
    let mut command = base_command(dir);
    for (key, value) in env {
        command.env(key, value);
    }
    let (child, base, _) = spawn_and_wait_for_address(command);
    (child, base)
}

/// A `nimbus serve` command in `dir` on a free port, with the test service key.
pub fn base_command(dir: &std::path::Path) -> Command {
    let mut command = Command::new(nimbus_bin());
    command
        .arg("serve")
        .current_dir(dir)
        .env_remove("NIMBUS_DATABASE_URL")
        .env("NIMBUS_LISTEN", "127.0.0.1:0")
        .env("NIMBUS_SERVICE_KEY", SERVICE_KEY)
        .env("NIMBUS_LOG", "warn");
    command
}

/// Spawns the command and reads stdout until the server says where it listens.
pub fn spawn_and_wait_for_address(
    mut command: Command,
) -> (Child, String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = command.spawn().expect("spawn nimbus");
    let stdout = child.stdout.take().expect("stdout");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let seen = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.to_owned());
            }
            seen.lock().expect("lines").push(line);
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => (child, format!("http://{addr}"), lines),
        Err(_) => {
            let _ = child.kill();
            panic!("nimbus did not print its address; output: {:?}", lines.lock().expect("lines"));
        }
    }
}

/// A free TCP port on 127.0.0.1 (for a server that must keep its address across a restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Polls `check` until it gives a value or `timeout` passes (then panics with `what`).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if std::time::Instant::now() > deadline {
            panic!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every column of every row, read as optional text.
fn text_rows<R>(rows: &[R]) -> Vec<Vec<Option<String>>>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    rows.iter().map(|r| (0..r.columns().len()).map(|i| r.try_get(i).expect("text column")).collect()).collect()
}
