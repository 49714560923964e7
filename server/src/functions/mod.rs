//! Functions: JavaScript modules from the functions folder, run on the
//! `nimbus-js-runtime` worker pool. Owns loading and live reload (a module
//! that fails to load is reported with its position and its last good version
//! keeps serving), the registry of trigger descriptors, and the API gateway's
//! routing of `onHttp` functions, `ctx.db` (`host`), the worker that runs
//! trigger, queue and schedule jobs (`worker`) and the job queue's HTTP
//! surface (`jobs_api`).

pub mod api;
pub mod host;
pub mod invocations;
pub mod jobs_api;
pub mod routes;
pub mod signup;
pub mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::swap::Swap;
use std::time::Duration;

use nimbus_js_runtime::{Descriptor, Invocation, Limits, Module, Pool};
use serde_json::Value;

use crate::store::StoreError;
use invocations::{InvocationLog, InvocationRecord};
use routes::HttpRoute;

/// Settings of the functions part.
#[derive(Debug, Clone)]
pub struct FunctionsConfig {
    pub dir: PathBuf,
    pub limits: Limits,
    pub workers: usize,
    pub idle: Duration,
    /// Most invocations of one function running at once.
    pub concurrency: usize,
    /// `ctx.env`: values (secrets) from configuration.
    pub env: serde_json::Map<String, Value>,
}

/// One loaded module and what it exports.
#[derive(Clone)]
pub struct LoadedModule {
    pub module: Arc<Module>,
    pub descriptors: Vec<Descriptor>,
}

/// Everything loaded from the folder at one moment.
#[derive(Default)]
pub struct Registry {
    pub modules: BTreeMap<String, LoadedModule>,
    /// Modules whose current file fails to load: name → `file:line:col: message`.
    pub errors: BTreeMap<String, String>,
    pub http: Vec<HttpRoute>,
}

/// The functions service; cheap to clone.
#[derive(Clone)]
pub struct Functions {
    pool: Arc<Pool>,
    triggers: crate::triggers::TriggerIndex,
    schedules: crate::triggers::schedule::Schedules,
    config: Arc<FunctionsConfig>,
    registry: Swap<Registry>,
    metrics: Arc<FunctionMetrics>,
    /// Per function (`module.js:export`): its concurrency limit and its series.
    per_function: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<PerFunction>>>>,
    invocations: InvocationLog,
}

/// How an invocation ended, as `nimbus_function_invocations_total` labels it.
#[derive(Clone, Copy)]
enum Outcome {
    Ok = 0,
    Timeout = 1,
    Error = 2,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Timeout, Outcome::Error];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }
}

/// One function's concurrency limit and its series, looked up once per call
/// (a labelled series looked up by its labels costs a hash of each).
struct PerFunction {
    limiter: tokio::sync::Semaphore,
    /// By outcome, then warm (0) or cold (1) start.
    invocations: [[prometheus::IntCounter; 2]; 3],
    duration: prometheus::Histogram,
}

impl PerFunction {
    fn new(function: &str, concurrency: usize, metrics: &FunctionMetrics) -> PerFunction {
        let series = |outcome: Outcome| {
            ["warm", "cold"].map(|start| metrics.invocations.with_label_values(&[function, outcome.label(), start]))
        };
        PerFunction {
            limiter: tokio::sync::Semaphore::new(concurrency.max(1)),
            invocations: Outcome::ALL.map(series),
            duration: metrics.duration.with_label_values(&[function]),
        }
    }
}

/// Prometheus series of function invocations.
pub struct FunctionMetrics {
    pub invocations: prometheus::IntCounterVec,
    pub duration: prometheus::HistogramVec,
}

impl FunctionMetrics {
    /// Registers functions' series with the app's registry.
    pub fn register(metrics: &crate::http::metrics::Metrics) -> Result<FunctionMetrics, prometheus::Error> {
        Ok(FunctionMetrics {
            invocations: metrics.counter_vec(
                "nimbus_function_invocations_total",
                "Function invocations by outcome and cold/warm start",
                &["function", "outcome", "start"],
            )?,
            duration: metrics.histogram_vec(
                "nimbus_function_duration_seconds",
                "Function invocation time",
                &["function"],
            )?,
        })
    }
}

impl Functions {
    /// Starts the worker pool and loads the folder.
    pub async fn start(
        config: FunctionsConfig,
        metrics: FunctionMetrics,
        host: Arc<dyn nimbus_js_runtime::Host>,
        triggers: crate::triggers::TriggerIndex,
        schedules: crate::triggers::schedule::Schedules,
        invocations: InvocationLog,
    ) -> Functions {
        let pool = Arc::new(Pool::new(config.workers, config.idle, host).with_load_limit(config.limits.timeout));
        let functions = Functions {
            pool,
            triggers,
            schedules,
            config: Arc::new(config),
            registry: Swap::default(),
            metrics: Arc::new(metrics),
            per_function: Arc::default(),
            invocations,
        };
        functions.reload().await;
        functions
    }

    /// How many JavaScript worker threads run invocations.
    pub fn workers(&self) -> usize {
        self.config.workers
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load()
    }

    /// Re-reads the folder: changed modules are loaded again; a module that
    /// fails keeps its last good version and records the error.
    pub async fn reload(&self) {
        let previous = self.registry();
        let mut next = Registry::default();
        for (name, source) in read_sources(&self.config.dir) {
            let module = Arc::new(Module::new(name.clone(), source));
            if let Some(loaded) = previous.modules.get(&name).filter(|l| l.module.version == module.version) {
                next.modules.insert(name, loaded.clone());
                continue;
            }
            match self.pool.describe(module.clone()).await {
                Ok(descriptors) => {
                    tracing::info!(module = %name, functions = descriptors.len(), "functions loaded");
                    next.modules.insert(name, LoadedModule { module, descriptors });
                }
                Err(error) => {
                    let message = format!("{}: {error}", self.config.dir.join(&name).display());
                    tracing::error!("{message}; the last good version keeps serving");
                    if let Some(old) = previous.modules.get(&name) {
                        next.modules.insert(name.clone(), old.clone());
                    }
                    next.errors.insert(name, message);
                }
            }
        }
        next.http = routes::http_routes(&next.modules);
        self.triggers.replace(document_triggers(&next.modules), consumers(&next.modules));
        self.schedules.replace(schedules(&next.modules, &mut next.errors));
        self.registry.store(next);
    }

    /// Polls the folder and reloads when it changes.
    pub fn watch(&self) {
        let functions = self.clone();
        crate::watch::watch_folder("functions watcher", self.config.dir.clone(), "js", move || {
            let functions = functions.clone();
            async move { functions.reload().await }
        });
    }

    /// Calls `export` of `module` and records the invocation.
    pub async fn invoke(&self, module: Arc<Module>, export: &str, input: Value, mut context: Value) -> Invocation {
        let function = format!("{}:{export}", module.name);
        let this = self.per_function(&function);
        let _permit = this.limiter.acquire().await;
        if let Value::Object(map) = &mut context {
            map.insert("env".into(), Value::Object(self.config.env.clone()));
        }
        let invocation = self.pool.invoke(module.clone(), export, input, context, self.config.limits).await;
        let outcome = match &invocation.result {
            Ok(_) => Outcome::Ok,
            Err(nimbus_js_runtime::JsError::Timeout) => Outcome::Timeout,
            Err(_) => Outcome::Error,
        };
        self.remember(&function, outcome.label(), &invocation);
        this.invocations[outcome as usize][usize::from(invocation.cold)].inc();
        this.duration.observe(invocation.duration.as_secs_f64());
        for line in &invocation.logs {
            tracing::info!(function = %function, level = %line.level, "{}", line.message);
        }
        invocation
    }

    /// One function's limiter and series (made on its first call).
    fn per_function(&self, function: &str) -> Arc<PerFunction> {
        let mut known = self.per_function.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = known.get(function) {
            return found.clone();
        }
        let made = Arc::new(PerFunction::new(function, self.config.concurrency, &self.metrics));
        known.insert(function.to_owned(), made.clone());
        made
    }

    fn remember(&self, function: &str, status: &'static str, invocation: &Invocation) {
        self.invocations.record(InvocationRecord {
            id: crate::ids::uuid(),
            function: function.to_owned(),
            status: status.to_owned(),
            error: invocation.result.as_ref().err().map(|e| e.to_string()),
            duration_ms: invocation.duration.as_secs_f64() * 1000.0,
            cold: invocation.cold,
            time: crate::clock::now_micros(),
            logs: serde_json::to_string(&invocation.logs).unwrap_or_else(|_| "[]".into()),
        });
    }

    /// Starts writing the invocation log to the database (until the process ends).
    pub fn write_invocation_log(&self) {
        self.invocations.spawn_writer();
    }

    /// The latest invocations of every instance, newest first, optionally of one function.
    pub async fn recent_invocations(&self, function: Option<&str>) -> Result<Vec<InvocationRecord>, StoreError> {
        self.invocations.recent(function).await
    }
}

/// Loads every module of `dir` (for `nimbus functions check`): one line per
/// function found, or every error as `file:line:col: message`.
pub async fn check_dir(dir: &Path) -> Result<Vec<String>, Vec<String>> {
    let pool = Pool::new(1, Duration::from_secs(60), Arc::new(nimbus_js_runtime::NoHost));
    let (mut lines, mut errors) = (Vec::new(), Vec::new());
    for (name, source) in read_sources(dir) {
        match pool.describe(Arc::new(Module::new(name.clone(), source))).await {
            Ok(descriptors) => {
                lines.extend(descriptors.iter().map(|d| format!("{name}: {} ({}) {}", d.name, d.kind, d.spec)));
            }
            Err(error) => errors.push(format!("{}: {error}", dir.join(&name).display())),
        }
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(errors)
    }
}

/// The document triggers (`onCreate`, …) of the loaded modules.
fn document_triggers(modules: &BTreeMap<String, LoadedModule>) -> Vec<crate::triggers::DocTrigger> {
    let mut triggers = Vec::new();
    for (name, loaded) in modules {
        for descriptor in &loaded.descriptors {
            let path = descriptor.spec.get("path").and_then(Value::as_str).unwrap_or_default();
            let function = format!("{name}:{}", descriptor.name);
            if let Some(trigger) = crate::triggers::DocTrigger::new(&descriptor.kind, path, function) {
                triggers.push(trigger);
            } else if ["create", "update", "delete", "write"].contains(&descriptor.kind.as_str()) {
                tracing::error!(module = %name, export = %descriptor.name, "document trigger path {path:?} must name documents, e.g. \"orders/{{id}}\"");
            }
        }
    }
    triggers
}

/// The schedules (`onSchedule`); an invalid cron expression is an error of its module.
fn schedules(
    modules: &BTreeMap<String, LoadedModule>,
    errors: &mut BTreeMap<String, String>,
) -> Vec<crate::triggers::schedule::Schedule> {
    let mut out = Vec::new();
    for (name, loaded) in modules {
        for descriptor in loaded.descriptors.iter().filter(|d| d.kind == "schedule") {
            let cron = descriptor.spec.get("cron").and_then(Value::as_str).unwrap_or_default();
            match crate::triggers::schedule::Schedule::parse(cron, format!("{name}:{}", descriptor.name)) {
                Ok(schedule) => out.push(schedule),
                Err(problem) => {
                    tracing::error!(module = %name, export = %descriptor.name, "onSchedule: {problem}");
                    errors.insert(name.clone(), format!("{name}: {}: {problem}", descriptor.name));
                }
            }
        }
    }
    out
}

/// The queue consumers (`onMessage`) of the loaded modules.
fn consumers(modules: &BTreeMap<String, LoadedModule>) -> Vec<crate::triggers::Consumer> {
    modules
        .iter()
        .flat_map(|(name, loaded)| {
            loaded.descriptors.iter().filter(|d| d.kind == "message").filter_map(move |d| {
                let topic = d.spec.get("topic").and_then(Value::as_str)?;
                Some(crate::triggers::Consumer { topic: topic.to_owned(), function: format!("{name}:{}", d.name) })
            })
        })
        .collect()
}

/// `(file name, source)` of every `*.js` file in the folder, sorted.
fn read_sources(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "js"))
                .filter_map(|p| {
                    let name = p.file_name()?.to_string_lossy().into_owned();
                    std::fs::read_to_string(&p).ok().map(|source| (name, source))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
