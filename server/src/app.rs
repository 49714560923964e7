//! The one place that wires the parts together. `assemble` connects the
//! store, applies migrations, establishes the keys and wires every part;
//! `build` (shared by `main` and tests) also starts the background work, binds
//! the listener and assembles the router; `App::run` serves until the
//! shutdown future resolves, then finishes in-flight requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::auth::accounts::Accounts;
use crate::auth::mailer::Mailer;
use crate::auth::service_key::ServiceKey;
use crate::auth::tokens::Tokens;
use crate::config::Config;
use crate::documents::schema::Schemas;
use crate::documents::Documents;
use crate::functions::host::FunctionHost;
use crate::functions::signup::FunctionSignUpHooks;
use crate::functions::{FunctionMetrics, Functions, FunctionsConfig};
use crate::http::metrics::Metrics;
use crate::realtime::{Realtime, RealtimeMetrics, RealtimeParts};
use crate::rules::RulesService;
use crate::store::{Store, StoreError};
use crate::triggers::schedule::Schedules;
use crate::triggers::{Messages, QueueMetrics, TriggerIndex, TriggerWorker};

/// Shared state handed to every handler: one reference-counted pointer, so
/// the clone axum makes per request and layer is a single atomic increment.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The parts' services. Each field is one part's service.
pub struct Services {
    pub config: Arc<Config>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub service_key: ServiceKey,
    pub documents: Documents,
    pub accounts: Accounts,
    pub rules: RulesService,
    pub functions: Functions,
    pub triggers: TriggerIndex,
    pub messages: Messages,
    pub realtime: Realtime,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[source] StoreError),
    #[error("NIMBUS_LISTEN: cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("metrics: {0}")]
    Metrics(String),
}

/// A built server, bound and ready to run.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    /// A service key generated at this start, to be shown to the operator once.
    pub new_service_key: Option<secrecy::SecretString>,
}

/// Every part of a Nimbus process, wired together but not yet serving: no
/// listener and no background work (watchers, scheduler, trigger worker).
/// `build` starts those; commands such as `nimbus import` use the parts alone.
pub struct Parts {
    pub services: Services,
    pub new_service_key: Option<secrecy::SecretString>,
    schedules: Schedules,
    queue_metrics: QueueMetrics,
}

/// Connects the store, applies migrations, and wires every part.
pub async fn assemble(config: Config) -> Result<Parts, StartError> {
    let store = Store::connect(&config.database, config.query_timeout).await.map_err(StartError::Store)?;
    store.migrate().await.map_err(StartError::Store)?;
    let (service_key, new_service_key) =
        ServiceKey::establish(config.service_key.as_ref(), &store).await.map_err(StartError::Store)?;
    let auth = &config.auth;
    let tokens = Tokens::start(
        store.clone(),
        auth.issuer.clone(),
        auth.audience.clone(),
        auth.access_ttl,
        auth.jwt_secret.as_ref(),
    )
    .await
    .map_err(|e| StartError::Config(format!("auth keys: {e}")))?;
    let mailer = Mailer::from_config(auth.smtp_url.as_ref(), &auth.mail_from, config.data_dir.join("mail"))
        .map_err(StartError::Config)?;
    let accounts = Accounts::new(store.clone(), tokens, mailer, auth.clone());
    let metrics = Metrics::new().map_err(|e| StartError::Metrics(e.to_string()))?;
    let schemas = Schemas::compile(&config.schemas).map_err(StartError::Config)?;
    crate::documents::ensure_indexes(&store, &config.indexes).await.map_err(StartError::Config)?;
    let rules = RulesService::load(&config.rules_dir).map_err(StartError::Config)?;
    let rows_read = metrics
        .counter("nimbus_documents_rows_read_total", "Documents read by rules-filtered lists and queries")
        .map_err(|e| StartError::Metrics(e.to_string()))?;
    let triggers = TriggerIndex::default();
    let documents = Documents::start(store.clone(), schemas, rules.clone(), rows_read, triggers.clone())
        .await
        .map_err(StartError::Store)?;
    let messages = Messages::new(store.clone(), triggers.clone());
    let schedules = Schedules::default();
    let functions = start_functions(&config, &metrics, &documents, &triggers, &messages, &schedules).await?;
    accounts.set_hooks(Arc::new(FunctionSignUpHooks::new(functions.clone(), store.clone(), triggers.clone())));
    let metric = |e: prometheus::Error| StartError::Metrics(e.to_string());
    let queue_metrics = QueueMetrics {
        depth: metrics.gauge("nimbus_jobs_pending", "Trigger and message jobs waiting (not dead)").map_err(metric)?,
        retries: metrics
            .counter("nimbus_job_retries_total", "Failed job attempts that will be retried")
            .map_err(metric)?,
        dead_letters: metrics
            .counter("nimbus_job_dead_letters_total", "Jobs moved to the dead letters")
            .map_err(metric)?,
    };
    let realtime = Realtime::new(RealtimeParts {
        documents: documents.clone(),
        store: store.clone(),
        rules: rules.clone(),
        tokens: accounts.tokens().clone(),
        service_key: service_key.clone(),
        settings: config.realtime.clone(),
        metrics: RealtimeMetrics::register(&metrics).map_err(metric)?,
    });
    let services = Services {
        config: Arc::new(config),
        store,
        metrics: Arc::new(metrics),
        service_key,
        documents,
        accounts,
        rules,
        functions,
        triggers,
        messages,
        realtime,
    };
    Ok(Parts { services, new_service_key, schedules, queue_metrics })
}

/// Assembles the parts, starts their background work, binds the listener
/// and builds the router.
pub async fn build(config: Config) -> Result<App, StartError> {
    let Parts { services, new_service_key, schedules, queue_metrics } = assemble(config).await?;
    let listener = TcpListener::bind(services.config.listen)
        .await
        .map_err(|e| StartError::Bind { addr: services.config.listen, reason: e.to_string() })?;
    services.rules.watch();
    services.functions.watch();
    services.realtime.spawn();
    schedules.spawn(services.store.clone(), services.triggers.clone());
    let settings = &services.config.functions;
    TriggerWorker::new(
        services.store.clone(),
        services.functions.clone(),
        services.triggers.clone(),
        (settings.retry_attempts, settings.retry_backoff),
        settings.timeout + std::time::Duration::from_secs(2),
        queue_metrics,
    )
    .spawn();
    let state = AppState(Arc::new(services));
    let router = crate::http::router(state.clone());
    Ok(App { listener, router, state, new_service_key })
}

async fn start_functions(
    config: &Config,
    metrics: &Metrics,
    documents: &Documents,
    triggers: &TriggerIndex,
    messages: &Messages,
    schedules: &Schedules,
) -> Result<Functions, StartError> {
    let settings = &config.functions;
    let function_metrics = FunctionMetrics {
        invocations: metrics
            .counter_vec(
                "nimbus_function_invocations_total",
                "Function invocations by outcome and cold/warm start",
                &["function", "outcome", "start"],
            )
            .map_err(|e| StartError::Metrics(e.to_string()))?,
        duration: metrics
            .histogram_vec("nimbus_function_duration_seconds", "Function invocation time", &["function"])
            .map_err(|e| StartError::Metrics(e.to_string()))?,
    };
    let functions = Functions::start(
        FunctionsConfig {
            dir: config.functions_dir.clone(),
            limits: nimbus_js_runtime::Limits { timeout: settings.timeout, heap_bytes: settings.heap_bytes },
            workers: settings.workers,
            idle: settings.idle,
            concurrency: settings.concurrency,
            env: settings.env.clone(),
        },
        function_metrics,
        Arc::new(FunctionHost::new(
            tokio::runtime::Handle::current(),
            documents.clone(),
            messages.clone(),
            settings.fetch_allow.clone(),
        )),
        triggers.clone(),
        schedules.clone(),
    )
    .await;
    Ok(functions)
}

impl App {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, lets in-flight requests finish, then
    /// closes the database.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        crate::http::serve::raise_open_file_limit();
        let limits = self.state.config.http.clone();
        let served = crate::http::serve::serve(self.listener, self.router, &limits, shutdown).await;
        self.state.store.close().await;
        served
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: finishing in-flight requests");
}
