//! The one typed `Config`: read from an optional `nimbus.toml`, overridden by
//! `NIMBUS_*` environment variables, overridden by command-line flags, and
//! validated once at start. An invalid setting is reported with the name the
//! user wrote it under (`NIMBUS_LISTEN`, `--listen`, `nimbus.toml: listen`).
//! Things that reload live (rules, functions) are not here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// Where the process reads its settings from; the flags of `nimbus serve`.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Config file [env: NIMBUS_CONFIG] [default: nimbus.toml, if present]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [env: NIMBUS_LISTEN] [default: 127.0.0.1:8090]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Data folder for the SQLite database and dev mail [env: NIMBUS_DATA_DIR] [default: ./nimbus-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// postgres://… to use PostgreSQL; unset uses SQLite in the data dir [env: NIMBUS_DATABASE_URL]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Security rules folder [env: NIMBUS_RULES_DIR] [default: ./rules]
    #[arg(long, value_name = "DIR")]
    pub rules_dir: Option<String>,
    /// Functions folder [env: NIMBUS_FUNCTIONS_DIR] [default: ./functions]
    #[arg(long, value_name = "DIR")]
    pub functions_dir: Option<String>,
    /// A web app's folder, served for paths no API route takes (index.html for any path without a file) [env: NIMBUS_STATIC_DIR]
    #[arg(long, value_name = "DIR")]
    pub static_dir: Option<String>,
    /// Log filter, e.g. `info` or `nimbus=debug` [env: NIMBUS_LOG] [default: info]
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// Log format: `human` or `json` [env: NIMBUS_LOG_FORMAT] [default: human]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Largest request body in bytes [env: NIMBUS_BODY_LIMIT] [default: 10485760]
    #[arg(long, value_name = "BYTES")]
    pub body_limit: Option<String>,
    /// Allowed CORS origins, comma separated, or `*` [env: NIMBUS_CORS_ORIGINS] [default: *]
    #[arg(long, value_name = "ORIGINS")]
    pub cors_origins: Option<String>,
}

/// The validated configuration of one Nimbus process.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub rules_dir: PathBuf,
    pub functions_dir: PathBuf,
    /// The web app served for paths no route takes (single-page app fallback to `index.html`).
    pub static_dir: Option<PathBuf>,
    /// The admin key from configuration; `None` means "use the stored one".
    pub service_key: Option<SecretString>,
    pub log: String,
    pub log_format: LogFormat,
    pub body_limit: usize,
    pub cors: CorsOrigins,
    /// Expression indexes to create on documents (from `nimbus.toml` only).
    pub indexes: Vec<IndexSetting>,
    /// JSON Schemas by collection pattern (`products`, `rooms/*/messages`).
    pub schemas: Vec<(String, serde_json::Value)>,
    pub auth: AuthConfig,
    pub functions: FunctionSettings,
    /// A bearer token that may read `/metrics` (besides the service key and admins).
    pub metrics_token: Option<SecretString>,
    pub http: HttpLimits,
    /// Longest a database statement of a client's query may run.
    pub query_timeout: Duration,
    pub realtime: RealtimeSettings,
    pub graphql: GraphqlSettings,
    /// Lets the service key move the clock forward (`POST /v1/admin/clock`),
    /// so tests need not wait for expiries and schedules. Never in production.
    pub test_clock: bool,
    /// `NIMBUS_*` environment variables no setting reads (warned about at start).
    pub unknown_env: Vec<String>,
    /// The flags it was loaded with (`reload` loads again with them).
    pub flags: Overrides,
    /// Where the collection schemas come from: the config file (watched even
    /// while absent) and the JSON Schema files it names.
    pub schema_sources: Vec<PathBuf>,
}

/// GraphQL limits (`NIMBUS_GRAPHQL_*`, `[graphql]` in `nimbus.toml`).
#[derive(Debug, Clone)]
pub struct GraphqlSettings {
    /// Deepest selection a request may nest.
    pub max_depth: usize,
    /// Most fields (async-graphql's complexity: one per field) a request may select.
    pub max_complexity: usize,
    /// Most aliased fields in one request.
    pub max_aliases: usize,
    /// Whether the schema can be introspected (`__schema`, `__type`).
    pub introspection: bool,
}

/// Realtime limits (`NIMBUS_REALTIME_*`, `[realtime]` in `nimbus.toml`).
#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    /// How long the change log keeps a change, so a client can resume from it.
    pub retention: Duration,
    /// Commits buffered for each connection; one that falls further behind gets `resync`.
    pub buffer: usize,
    /// Most subscriptions on one connection.
    pub max_subscriptions: usize,
    /// Most realtime connections of one user, and from one IP address.
    pub max_connections_per_user: usize,
    pub max_connections_per_ip: usize,
    /// How often a connection checks that its session is still in force.
    pub session_check: Duration,
    /// How often the server pings an idle connection (two missed answers close it).
    pub ping: Duration,
    /// How often the change log is read when nothing announces a commit.
    pub poll: Duration,
}

/// Bounds on client connections (`NIMBUS_HTTP_*`, `[http]` in `nimbus.toml`).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// A connection must finish sending a request's headers within this; a
    /// keep-alive connection idle this long is closed too.
    pub header_timeout: Duration,
    /// A request body must arrive within this.
    pub body_timeout: Duration,
    /// Most connections open at once; more are refused with 503.
    pub max_connections: usize,
}

/// Function limits (`NIMBUS_FUNCTIONS_*`, `[functions]` in `nimbus.toml`).
#[derive(Debug, Clone)]
pub struct FunctionSettings {
    /// Wall-clock limit of one invocation.
    pub timeout: Duration,
    /// Heap limit of one function runtime, in bytes.
    pub heap_bytes: usize,
    /// Worker threads, each able to run one invocation at a time.
    pub workers: usize,
    /// A runtime unused for this long is dropped.
    pub idle: Duration,
    /// Attempts of a trigger job before it becomes a dead letter.
    pub retry_attempts: u32,
    /// The first retry waits twice this, then the wait doubles.
    pub retry_backoff: Duration,
    /// Most invocations of one function at once.
    pub concurrency: usize,
    /// `ctx.env` of every function (from `[functions.env]` in `nimbus.toml`).
    pub env: serde_json::Map<String, serde_json::Value>,
    /// Hosts `fetch()` may reach (`api.example.com`, `*.example.com`).
    pub fetch_allow: Vec<String>,
}

/// Auth settings (`NIMBUS_AUTH_*`, `NIMBUS_JWT_SECRET`, `NIMBUS_PUBLIC_URL`, `NIMBUS_SMTP_URL`).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// When set, access tokens are HS256 with this secret instead of EdDSA.
    pub jwt_secret: Option<SecretString>,
    pub min_password_length: usize,
    /// The base URL links in emails point at.
    pub public_url: String,
    /// Sign-in attempts per client IP per minute.
    pub signin_per_minute: u32,
    /// Sign-ups (including anonymous) per client IP per minute.
    pub signup_per_minute: u32,
    /// Recovery and verification emails per client IP per minute.
    pub email_per_minute: u32,
    /// Failed sign-ins per account within 15 minutes before it is locked for the rest of them.
    pub max_failed_signins: u32,
    /// How long a password-reset link works.
    pub recovery_ttl: Duration,
    /// `smtps://user:pass@host:465` or `smtp://…?tls=required`; unset writes mail to files.
    pub smtp_url: Option<SecretString>,
    /// The sender of auth emails.
    pub mail_from: String,
}

/// `[[indexes]]` in `nimbus.toml`: the fields of one query shape, in order
/// (equality fields first, then the order-by fields).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IndexSetting {
    /// A collection or a pattern (`rooms/*/messages`) …
    pub collection: Option<String>,
    /// … or a collection group (`collectionGroup = "comments"`).
    #[serde(rename = "collectionGroup")]
    pub collection_group: Option<String>,
    pub fields: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    Sqlite { path: PathBuf },
    Postgres { url: SecretString },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

/// A setting that could not be used; its `Display` is the one line printed at exit.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting}: {problem}")]
    Invalid { setting: String, problem: String },
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
}

/// The settings `nimbus.toml` may hold; unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    data_dir: Option<String>,
    database_url: Option<String>,
    rules_dir: Option<String>,
    functions_dir: Option<String>,
    static_dir: Option<String>,
    service_key: Option<String>,
    log: Option<String>,
    log_format: Option<String>,
    body_limit: Option<u64>,
    cors_origins: Option<Vec<String>>,
    #[serde(default)]
    indexes: Vec<IndexSetting>,
    #[serde(default)]
    auth: AuthFileSettings,
    #[serde(default)]
    functions: FunctionsFileSettings,
    jwt_secret: Option<String>,
    metrics_token: Option<String>,
    query_timeout_ms: Option<u64>,
    test_clock: Option<bool>,
    #[serde(default)]
    http: HttpFileSettings,
    #[serde(default)]
    realtime: RealtimeFileSettings,
    #[serde(default)]
    graphql: GraphqlFileSettings,
    public_url: Option<String>,
    smtp_url: Option<String>,
    mail_from: Option<String>,
    /// Collection pattern → inline schema (a table) or a JSON file path (a string).
    #[serde(default)]
    schemas: std::collections::BTreeMap<String, toml::Value>,
}

/// `[http]` in `nimbus.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFileSettings {
    header_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    max_connections: Option<u64>,
}

/// `[realtime]` in `nimbus.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RealtimeFileSettings {
    retention_secs: Option<u64>,
    buffer: Option<u64>,
    max_subscriptions: Option<u64>,
    max_connections_per_user: Option<u64>,
    max_connections_per_ip: Option<u64>,
    session_check_ms: Option<u64>,
    ping_ms: Option<u64>,
    poll_ms: Option<u64>,
}

/// `[graphql]` in `nimbus.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphqlFileSettings {
    max_depth: Option<u64>,
    max_complexity: Option<u64>,
    max_aliases: Option<u64>,
    introspection: Option<bool>,
}

/// `[auth]` in `nimbus.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFileSettings {
    issuer: Option<String>,
    audience: Option<String>,
    access_ttl_secs: Option<u64>,
    refresh_ttl_secs: Option<u64>,
    min_password_length: Option<u64>,
    signin_per_minute: Option<u64>,
    signup_per_minute: Option<u64>,
    email_per_minute: Option<u64>,
    max_failed_signins: Option<u64>,
    recovery_ttl_secs: Option<u64>,
}

/// `[functions]` in `nimbus.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionsFileSettings {
    timeout_ms: Option<u64>,
    heap_mb: Option<u64>,
    workers: Option<u64>,
    idle_secs: Option<u64>,
    retry_attempts: Option<u64>,
    retry_backoff_ms: Option<u64>,
    concurrency: Option<u64>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    fetch_allow: Option<Vec<String>>,
}

/// One raw setting value and the name it was given under.
struct Raw {
    value: String,
    source: String,
}

/// Reads environment variables; injected so tests need not touch the process env.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    /// The names of every variable set (to tell about `NIMBUS_*` ones no setting reads).
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn names(&self) -> Vec<String> {
        std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()).collect()
    }
}

impl Config {
    /// Loads the settings again, as at start (file → env → flags), to pick up
    /// what changed in the file.
    pub fn reload(&self) -> Result<Config, ConfigError> {
        Config::load(&self.flags, &ProcessEnv)
    }

    /// Loads file → env → flags and validates everything.
    pub fn load(flags: &Overrides, env: &dyn Env) -> Result<Config, ConfigError> {
        let (file, file_dir, file_path) = read_file_settings(flags, env)?;
        let schema_sources = std::iter::once(file_path)
            .chain(file.schemas.values().filter_map(|v| v.as_str()).map(|f| file_dir.join(f)))
            .collect();
        let layers = Layers { flags, env, asked: Default::default() };
        let data_dir =
            PathBuf::from(layers.get("data_dir", &file.data_dir).map_or("./nimbus-data".into(), |r| r.value));
        let mut config = Config {
            listen: layers.parse("listen", &file.listen, "127.0.0.1:8090", |v| {
                SocketAddr::from_str(v).map_err(|_| format!("invalid socket address {v:?}"))
            })?,
            database: database_config(layers.get("database_url", &file.database_url), &data_dir)?,
            data_dir,
            rules_dir: PathBuf::from(layers.get("rules_dir", &file.rules_dir).map_or("./rules".into(), |r| r.value)),
            functions_dir: PathBuf::from(
                layers.get("functions_dir", &file.functions_dir).map_or("./functions".into(), |r| r.value),
            ),
            static_dir: static_dir(layers.get("static_dir", &file.static_dir))?,
            service_key: service_key(layers.get("service_key", &file.service_key))?,
            log: layers.get("log", &file.log).map_or("info".into(), |r| r.value),
            log_format: layers.parse("log_format", &file.log_format, "human", |v| match v {
                "human" => Ok(LogFormat::Human),
                "json" => Ok(LogFormat::Json),
                _ => Err(format!("expected \"human\" or \"json\", got {v:?}")),
            })?,
            body_limit: layers.parse("body_limit", &file.body_limit.map(|n| n.to_string()), "10485760", |v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("expected a positive number of bytes, got {v:?}"))
            })?,
            cors: layers.parse(
                "cors_origins",
                &file.cors_origins.as_ref().map(|list| list.join(",")),
                "*",
                parse_cors,
            )?,
            auth: auth_config(&layers, &file)?,
            functions: function_settings(&layers, &file.functions)?,
            schemas: load_schemas(&file.schemas, &file_dir)?,
            indexes: file.indexes,
            metrics_token: service_key(layers.get("metrics_token", &file.metrics_token))?,
            http: http_limits(&layers, &file.http)?,
            query_timeout: Duration::from_millis(layers.parse(
                "query_timeout_ms",
                &file.query_timeout_ms.map(|n| n.to_string()),
                "10000",
                number(10u64),
            )?),
            realtime: realtime_settings(&layers, &file.realtime)?,
            graphql: graphql_settings(&layers, &file.graphql)?,
            test_clock: layers.parse("test_clock", &file.test_clock.map(|b| b.to_string()), "false", boolean)?,
            unknown_env: Vec::new(),
            flags: flags.clone(),
            schema_sources,
        };
        config.unknown_env = layers.unknown_env();
        Ok(config)
    }
}

/// The parsed file (or defaults when absent), the folder it is in, and its path.
fn read_file_settings(flags: &Overrides, env: &dyn Env) -> Result<(FileSettings, PathBuf, PathBuf), ConfigError> {
    let (path, required) = match (&flags.config, env.var("NIMBUS_CONFIG")) {
        (Some(path), _) => (path.clone(), true),
        (None, Some(path)) => (PathBuf::from(path), true),
        (None, None) => (PathBuf::from("nimbus.toml"), false),
    };
    let dir = path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((FileSettings::default(), dir, path))
        }
        Err(e) => return Err(file_error(&path, e.to_string())),
    };
    let settings = toml::from_str(&text).map_err(|e| file_error(&path, e.message().to_owned()))?;
    Ok((settings, dir, path))
}

fn load_schemas(
    schemas: &std::collections::BTreeMap<String, toml::Value>,
    dir: &Path,
) -> Result<Vec<(String, serde_json::Value)>, ConfigError> {
    let invalid = |pattern: &str, problem: String| ConfigError::Invalid {
        setting: format!("nimbus.toml: schemas.{pattern}"),
        problem,
    };
    schemas
        .iter()
        .map(|(pattern, value)| {
            let schema = match value {
                toml::Value::String(file) => {
                    let path = dir.join(file);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| invalid(pattern, format!("{}: {e}", path.display())))?;
                    serde_json::from_str(&text).map_err(|e| invalid(pattern, format!("{}: {e}", path.display())))?
                }
                toml::Value::Table(_) => serde_json::to_value(value).map_err(|e| invalid(pattern, e.to_string()))?,
                _ => return Err(invalid(pattern, "expected an inline table or a JSON file path".into())),
            };
            Ok((pattern.clone(), schema))
        })
        .collect()
}

fn file_error(path: &Path, problem: String) -> ConfigError {
    ConfigError::File { path: path.display().to_string(), problem }
}

struct Layers<'a> {
    flags: &'a Overrides,
    env: &'a dyn Env,
    /// The environment variables the settings read.
    asked: std::cell::RefCell<std::collections::HashSet<String>>,
}

/// `NIMBUS_*` variables read elsewhere than by a setting.
const READ_ELSEWHERE: [&str; 2] = ["NIMBUS_CONFIG", "NIMBUS_TEST_DATABASE_URL"];

impl Layers<'_> {
    /// `NIMBUS_*` variables that are set but that no setting read (a typo, or a setting of another version).
    fn unknown_env(&self) -> Vec<String> {
        let asked = self.asked.borrow();
        let mut unknown: Vec<String> = self
            .env
            .names()
            .into_iter()
            .filter(|name| {
                name.starts_with("NIMBUS_") && !asked.contains(name) && !READ_ELSEWHERE.contains(&name.as_str())
            })
            .collect();
        unknown.sort();
        unknown
    }

    /// The highest-priority value of a setting: flag, then env, then file.
    fn get(&self, key: &str, file_value: &Option<String>) -> Option<Raw> {
        let env_name = format!("NIMBUS_{}", key.to_uppercase());
        self.asked.borrow_mut().insert(env_name.clone());
        let flag_name = format!("--{}", key.replace('_', "-"));
        if let Some(value) = flag_value(self.flags, key) {
            return Some(Raw { value, source: flag_name });
        }
        if let Some(value) = self.env.var(&env_name) {
            return Some(Raw { value, source: env_name });
        }
        file_value.clone().map(|value| Raw { value, source: format!("nimbus.toml: {key}") })
    }

    fn parse<T>(
        &self,
        key: &str,
        file_value: &Option<String>,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.get(key, file_value) {
            Some(raw) => {
                parse(raw.value.trim()).map_err(|problem| ConfigError::Invalid { setting: raw.source, problem })
            }
            None => parse(default).map_err(|problem| ConfigError::Invalid { setting: key.into(), problem }),
        }
    }
}

fn number<T>(min: T) -> impl Fn(&str) -> Result<T, String>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    move |v| match v.parse::<T>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("expected a whole number of at least {min}, got {v:?}")),
    }
}

fn auth_config(layers: &Layers, file: &FileSettings) -> Result<AuthConfig, ConfigError> {
    let a = &file.auth;
    let text = |v: &Option<u64>| v.map(|n| n.to_string());
    let listen = layers.parse("listen", &file.listen, "127.0.0.1:8090", |v| Ok::<_, String>(v.to_owned()))?;
    Ok(AuthConfig {
        issuer: layers.get("auth_issuer", &a.issuer).map_or("nimbus".into(), |r| r.value),
        audience: layers.get("auth_audience", &a.audience).map_or("nimbus".into(), |r| r.value),
        access_ttl: Duration::from_secs(layers.parse(
            "auth_access_ttl_secs",
            &text(&a.access_ttl_secs),
            "900",
            number(10u64),
        )?),
        refresh_ttl: Duration::from_secs(layers.parse(
            "auth_refresh_ttl_secs",
            &text(&a.refresh_ttl_secs),
            "2592000",
            number(60u64),
        )?),
        jwt_secret: match layers.get("jwt_secret", &file.jwt_secret) {
            Some(raw) if raw.value.len() < 32 => {
                return Err(ConfigError::Invalid {
                    setting: raw.source,
                    problem: "must be at least 32 characters".into(),
                })
            }
            other => other.map(|raw| SecretString::from(raw.value)),
        },
        min_password_length: layers.parse(
            "auth_min_password_length",
            &text(&a.min_password_length),
            "8",
            number(6usize),
        )?,
        public_url: layers.parse("public_url", &file.public_url, &format!("http://{listen}"), |v| {
            if v.starts_with("http://") || v.starts_with("https://") {
                Ok(v.trim_end_matches('/').to_owned())
            } else {
                Err(format!("expected an http:// or https:// URL, got {v:?}"))
            }
        })?,
        signin_per_minute: layers.parse("auth_signin_per_minute", &text(&a.signin_per_minute), "30", number(1u32))?,
        signup_per_minute: layers.parse("auth_signup_per_minute", &text(&a.signup_per_minute), "20", number(1u32))?,
        email_per_minute: layers.parse("auth_email_per_minute", &text(&a.email_per_minute), "5", number(1u32))?,
        max_failed_signins: layers.parse(
            "auth_max_failed_signins",
            &text(&a.max_failed_signins),
            "10",
            number(1u32),
        )?,
        recovery_ttl: Duration::from_secs(layers.parse(
            "auth_recovery_ttl_secs",
            &text(&a.recovery_ttl_secs),
            "3600",
            number(1u64),
        )?),
        smtp_url: match layers.get("smtp_url", &file.smtp_url) {
            Some(raw) if !(raw.value.starts_with("smtp://") || raw.value.starts_with("smtps://")) => {
                return Err(ConfigError::Invalid {
                    setting: raw.source,
                    problem: "expected an smtp:// or smtps:// URL".into(),
                })
            }
            other => other.map(|raw| SecretString::from(raw.value)),
        },
        mail_from: layers.get("mail_from", &file.mail_from).map_or("Nimbus <no-reply@localhost>".into(), |r| r.value),
    })
}

fn http_limits(layers: &Layers, h: &HttpFileSettings) -> Result<HttpLimits, ConfigError> {
    let text = |v: &Option<u64>| v.map(|n| n.to_string());
    let millis = |key, value: &Option<u64>, default| {
        layers.parse(key, &text(value), default, number(10u64)).map(Duration::from_millis)
    };
    Ok(HttpLimits {
        header_timeout: millis("http_header_timeout_ms", &h.header_timeout_ms, "10000")?,
        body_timeout: millis("http_body_timeout_ms", &h.body_timeout_ms, "30000")?,
        max_connections: layers.parse("http_max_connections", &text(&h.max_connections), "10000", number(1usize))?,
    })
}

fn realtime_settings(layers: &Layers, r: &RealtimeFileSettings) -> Result<RealtimeSettings, ConfigError> {
    let text = |v: &Option<u64>| v.map(|n| n.to_string());
    let count = |key, value: &Option<u64>, default| layers.parse(key, &text(value), default, number(1usize));
    let millis = |key, value: &Option<u64>, default| {
        layers.parse(key, &text(value), default, number(10u64)).map(Duration::from_millis)
    };
    Ok(RealtimeSettings {
        retention: Duration::from_secs(layers.parse(
            "realtime_retention_secs",
            &text(&r.retention_secs),
            "3600",
            number(1u64),
        )?),
        buffer: count("realtime_buffer", &r.buffer, "1024")?,
        max_subscriptions: count("realtime_max_subscriptions", &r.max_subscriptions, "100")?,
        max_connections_per_user: count("realtime_max_connections_per_user", &r.max_connections_per_user, "100")?,
        max_connections_per_ip: count("realtime_max_connections_per_ip", &r.max_connections_per_ip, "5000")?,
        session_check: millis("realtime_session_check_ms", &r.session_check_ms, "10000")?,
        ping: millis("realtime_ping_ms", &r.ping_ms, "30000")?,
        poll: millis("realtime_poll_ms", &r.poll_ms, "1000")?,
    })
}

fn boolean(v: &str) -> Result<bool, String> {
    v.parse::<bool>().map_err(|_| format!("expected true or false, got {v:?}"))
}

fn graphql_settings(layers: &Layers, g: &GraphqlFileSettings) -> Result<GraphqlSettings, ConfigError> {
    let text = |v: &Option<u64>| v.map(|n| n.to_string());
    let count = |key, value: &Option<u64>, default| layers.parse(key, &text(value), default, number(1usize));
    Ok(GraphqlSettings {
        max_depth: count("graphql_max_depth", &g.max_depth, "10")?,
        max_complexity: count("graphql_max_complexity", &g.max_complexity, "1000")?,
        max_aliases: count("graphql_max_aliases", &g.max_aliases, "30")?,
        introspection: layers.parse(
            "graphql_introspection",
            &g.introspection.map(|b| b.to_string()),
            "true",
            boolean,
        )?,
    })
}

fn function_settings(layers: &Layers, f: &FunctionsFileSettings) -> Result<FunctionSettings, ConfigError> {
    let text = |v: &Option<u64>| v.map(|n| n.to_string());
    // Four per core: an invocation waiting for the database or fetch() holds
    // its worker without using the core, and more runtimes let those waits overlap.
    let default_workers = (4 * std::thread::available_parallelism().map_or(2, |n| n.get())).to_string();
    Ok(FunctionSettings {
        timeout: Duration::from_millis(layers.parse(
            "functions_timeout_ms",
            &text(&f.timeout_ms),
            "10000",
            number(10u64),
        )?),
        heap_bytes: layers.parse("functions_heap_mb", &text(&f.heap_mb), "64", number(8usize))? * 1024 * 1024,
        workers: layers.parse("functions_workers", &text(&f.workers), &default_workers, number(1usize))?,
        idle: Duration::from_secs(layers.parse("functions_idle_secs", &text(&f.idle_secs), "300", number(1u64))?),
        retry_attempts: layers.parse("functions_retry_attempts", &text(&f.retry_attempts), "5", number(1u32))?,
        retry_backoff: Duration::from_millis(layers.parse(
            "functions_retry_backoff_ms",
            &text(&f.retry_backoff_ms),
            "500",
            number(10u64),
        )?),
        concurrency: layers.parse("functions_concurrency", &text(&f.concurrency), "16", number(1usize))?,
        env: f.env.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect(),
        fetch_allow: layers
            .get("functions_fetch_allow", &f.fetch_allow.as_ref().map(|list| list.join(",")))
            .map(|raw| raw.value.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect())
            .unwrap_or_default(),
    })
}

fn flag_value(flags: &Overrides, key: &str) -> Option<String> {
    match key {
        "listen" => flags.listen.clone(),
        "data_dir" => flags.data_dir.clone(),
        "database_url" => flags.database_url.clone(),
        "rules_dir" => flags.rules_dir.clone(),
        "functions_dir" => flags.functions_dir.clone(),
        "static_dir" => flags.static_dir.clone(),
        "log" => flags.log.clone(),
        "log_format" => flags.log_format.clone(),
        "body_limit" => flags.body_limit.clone(),
        "cors_origins" => flags.cors_origins.clone(),
        _ => None,
    }
}

/// The web app's folder: it must exist when set (an empty value means none).
fn static_dir(raw: Option<Raw>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(raw) = raw.filter(|r| !r.value.trim().is_empty()) else { return Ok(None) };
    let dir = PathBuf::from(raw.value.trim());
    if !dir.is_dir() {
        return Err(ConfigError::Invalid {
            setting: raw.source.clone(),
            problem: format!("{} is not a folder", dir.display()),
        });
    }
    Ok(Some(dir))
}

fn database_config(raw: Option<Raw>, data_dir: &Path) -> Result<DatabaseConfig, ConfigError> {
    let Some(raw) = raw.filter(|r| !r.value.trim().is_empty()) else {
        return Ok(DatabaseConfig::Sqlite { path: data_dir.join("nimbus.db") });
    };
    let value = raw.value.trim();
    if value.starts_with("postgres://") || value.starts_with("postgresql://") {
        Ok(DatabaseConfig::Postgres { url: SecretString::from(value.to_owned()) })
    } else if let Some(path) = value.strip_prefix("sqlite://").or_else(|| value.strip_prefix("sqlite:")) {
        Ok(DatabaseConfig::Sqlite { path: PathBuf::from(path) })
    } else {
        Err(ConfigError::Invalid { setting: raw.source, problem: "expected a postgres:// or sqlite: URL".into() })
    }
}

fn service_key(raw: Option<Raw>) -> Result<Option<SecretString>, ConfigError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.value.len() < 16 => {
            Err(ConfigError::Invalid { setting: raw.source, problem: "must be at least 16 characters".into() })
        }
        Some(raw) => Ok(Some(SecretString::from(raw.value))),
    }
}

fn parse_cors(value: &str) -> Result<CorsOrigins, String> {
    if value == "*" {
        return Ok(CorsOrigins::Any);
    }
    let origins: Vec<String> = value.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    for origin in &origins {
        if !(origin.starts_with("http://") || origin.starts_with("https://")) || origin.ends_with('/') {
            return Err(format!("invalid origin {origin:?} (expected e.g. https://app.example.com)"));
        }
    }
    Ok(CorsOrigins::List(origins))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, &'static str>);
    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }

        fn names(&self) -> Vec<String> {
            self.0.keys().map(|k| k.to_string()).collect()
        }
    }

    fn load(flags: Overrides, env: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        Config::load(&flags, &FakeEnv(env.iter().copied().collect()))
    }

    #[test]
    fn defaults_without_any_configuration() {
        let config = load(Overrides::default(), &[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8090");
        assert!(
            matches!(config.database, DatabaseConfig::Sqlite { ref path } if path.ends_with("nimbus-data/nimbus.db"))
        );
        assert_eq!(config.body_limit, 10 * 1024 * 1024);
        assert_eq!(config.cors, CorsOrigins::Any);
    }

    #[test]
    fn invalid_env_setting_names_the_variable() {
        let err = load(Overrides::default(), &[("NIMBUS_LISTEN", "x")]).unwrap_err();
        assert_eq!(err.to_string(), "NIMBUS_LISTEN: invalid socket address \"x\"");
    }

    #[test]
    fn variables_no_setting_reads_are_named() {
        let env = [
            ("NIMBUS_LISTEN", "127.0.0.1:9"),
            ("NIMBUS_REALTIME_BUFER", "9"),
            ("NIMBUS_AUTH_SMTP_URL", "x"),
            ("HOME", "/"),
        ];
        let config = load(Overrides::default(), &env).unwrap();
        assert_eq!(config.unknown_env, ["NIMBUS_AUTH_SMTP_URL", "NIMBUS_REALTIME_BUFER"]);
    }

    #[test]
    fn the_static_folder_must_exist() {
        let err = load(Overrides::default(), &[("NIMBUS_STATIC_DIR", "/no/such/folder")]).unwrap_err();
        assert_eq!(err.to_string(), "NIMBUS_STATIC_DIR: /no/such/folder is not a folder");
        let dir = std::env::temp_dir();
        let flags = Overrides { static_dir: Some(dir.display().to_string()), ..Default::default() };
        assert_eq!(load(flags, &[]).unwrap().static_dir, Some(dir));
        assert_eq!(load(Overrides::default(), &[]).unwrap().static_dir, None);
    }

    #[test]
    fn flags_override_env() {
        let flags = Overrides { listen: Some("127.0.0.1:9".into()), ..Default::default() };
        let config = load(flags, &[("NIMBUS_LISTEN", "x")]).unwrap();
        assert_eq!(config.listen.port(), 9);
        let flags = Overrides { body_limit: Some("-1".into()), ..Default::default() };
        assert!(load(flags, &[]).unwrap_err().to_string().starts_with("--body-limit: "));
    }

    #[test]
    fn file_settings_are_the_lowest_layer() {
        let dir = std::env::temp_dir().join(format!("nimbus-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("n.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:7\"\nbody_limit = 5\n").unwrap();
        let flags = Overrides { config: Some(file.clone()), ..Default::default() };
        let config = load(flags.clone(), &[("NIMBUS_BODY_LIMIT", "6")]).unwrap();
        assert_eq!((config.listen.port(), config.body_limit), (7, 6));
        std::fs::write(&file, "lisen = 1\n").unwrap();
        assert!(load(flags, &[]).unwrap_err().to_string().contains("unknown field `lisen`"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn database_url_selects_the_backend() {
        let config = load(Overrides::default(), &[("NIMBUS_DATABASE_URL", "postgres://u@h/db")]).unwrap();
        assert!(matches!(config.database, DatabaseConfig::Postgres { .. }));
        let err = load(Overrides::default(), &[("NIMBUS_DATABASE_URL", "mysql://x")]).unwrap_err();
        assert!(err.to_string().starts_with("NIMBUS_DATABASE_URL: "));
    }
}
