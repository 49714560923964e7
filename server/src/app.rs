//! The one place that wires the parts together. `assemble` connects the
//! store, applies migrations, establishes the keys and wires every part;
//! `build` (shared by `main` and tests) also starts the background work, binds
//! the listener and assembles the routes (each part's router given only the
//! services it uses, inside the gateway's layers); `App::run` serves until
//! the shutdown future resolves, then finishes in-flight requests. The only
//! module that knows every other.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::auth::api::{self as auth_api, AuthApi};
use crate::auth::{Authenticator, Caller};
use crate::documents::api::{self as documents_api, DocumentsApi};
use crate::error::ErrorCode;
use crate::functions::api::{self as functions_api, FunctionsApi};
use crate::functions::jobs_api;
use crate::graphql::api::{self as graphql_api, GraphqlApi};
use crate::graphql::Graphql;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::realtime::api::{self as realtime_api, RealtimeApi};
use crate::rules::api::{self as rules_api, RulesApi};

use crate::auth::accounts::Accounts;
use crate::auth::mailer::Mailer;
use crate::auth::service_key::ServiceKey;
use crate::auth::tokens::Tokens;
use crate::config::Config;
use crate::documents::schema::Schemas;
use crate::documents::Documents;
use crate::functions::host::FunctionHost;
use crate::functions::signup::FunctionSignUpHooks;
use crate::functions::worker::{QueueMetrics, TriggerWorker};
use crate::functions::{FunctionMetrics, Functions, FunctionsConfig};
use crate::http::metrics::Metrics;
use crate::realtime::{Realtime, RealtimeMetrics, RealtimeParts};
use crate::rules::RulesService;
use crate::store::{Store, StoreError};
use crate::triggers::schedule::Schedules;
use crate::triggers::{Messages, TriggerIndex};

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
    pub graphql: Arc<Graphql>,
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
    services: Arc<Services>,
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
    let metrics = Metrics::new().map_err(|e| StartError::Metrics(e.to_string()))?;
    if let Some(reads) = store.sqlite_reads() {
        metrics.registry.register(Box::new(reads)).map_err(|e| StartError::Metrics(e.to_string()))?;
    }
    let schemas = Schemas::compile(&config.schemas).map_err(StartError::Config)?;
    crate::documents::ensure_indexes(&store, &config.indexes).await.map_err(StartError::Config)?;
    let rules = RulesService::load(&config.rules_dir, store.clone()).await.map_err(StartError::Config)?;
    let document_metrics =
        crate::documents::DocumentMetrics::register(&metrics).map_err(|e| StartError::Metrics(e.to_string()))?;
    let triggers = TriggerIndex::default();
    let documents = Documents::start(store.clone(), schemas, rules.clone(), document_metrics, triggers.clone())
        .await
        .map_err(StartError::Store)?;
    let messages = Messages::new(store.clone(), triggers.clone());
    let schedules = Schedules::default();
    let functions = start_functions(&config, &metrics, &documents, &triggers, &messages, &schedules).await?;
    // Built after functions, so its sign-up hooks arrive through the constructor.
    let hooks = FunctionSignUpHooks::new(functions.clone(), store.clone());
    let accounts = Accounts::new(store.clone(), tokens, mailer, auth.clone(), Some(Arc::new(hooks)));
    let metric = |e: prometheus::Error| StartError::Metrics(e.to_string());
    let queue_metrics = QueueMetrics::register(&metrics).map_err(metric)?;
    let realtime = Realtime::new(RealtimeParts {
        documents: documents.clone(),
        store: store.clone(),
        rules: rules.clone(),
        authenticator: Authenticator::new(accounts.tokens().clone(), service_key.clone()),
        settings: config.realtime.clone(),
        metrics: RealtimeMetrics::register(&metrics).map_err(metric)?,
    });
    let graphql = Graphql::new(documents.clone(), realtime.clone(), &config.schemas, &config.graphql, &metrics)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let graphql = Arc::new(graphql);
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
        graphql,
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
    services.functions.write_invocation_log();
    watch_collection_schemas(&services);
    services.realtime.spawn();
    schedules.spawn(services.store.clone());
    let settings = &services.config.functions;
    TriggerWorker::new(
        services.store.clone(),
        services.functions.clone(),
        (settings.retry_attempts, settings.retry_backoff),
        settings.timeout + std::time::Duration::from_secs(2),
        queue_metrics,
    )
    .spawn();
    let router = routes(&services);
    Ok(App { listener, router, services: Arc::new(services), new_service_key })
}

/// Reloads the collections' JSON Schemas when nimbus.toml or a schema file it
/// names changes (see `reload_collection_schemas`).
fn watch_collection_schemas(services: &Services) {
    let config = services.config.clone();
    let (documents, graphql) = (services.documents.clone(), services.graphql.clone());
    let in_force = Arc::new(std::sync::Mutex::new(config.schemas.clone()));
    crate::watch::watch_files("collection schemas", config.schema_sources.clone(), move || {
        let (config, documents, graphql, in_force) =
            (config.clone(), documents.clone(), graphql.clone(), in_force.clone());
        async move { reload_collection_schemas(&config, &documents, &graphql, &in_force) }
    });
}

/// Reads the settings again; when the schemas differ from `in_force`, the
/// writes' checks and the GraphQL schema are replaced together, or (when the
/// new ones do not compile) neither. Other settings in the file take effect at
/// the next start. Answers the files to watch from now on.
fn reload_collection_schemas(
    config: &Config,
    documents: &Documents,
    graphql: &Graphql,
    in_force: &std::sync::Mutex<Vec<(String, serde_json::Value)>>,
) -> Vec<std::path::PathBuf> {
    let reloaded = match config.reload() {
        Ok(reloaded) => reloaded,
        Err(e) => {
            tracing::error!("the settings file changed but cannot be used; the collection schemas in force stay: {e}");
            return config.schema_sources.clone();
        }
    };
    let mut current = in_force.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if *current == reloaded.schemas {
        return reloaded.schema_sources;
    }
    let replaced = Schemas::compile(&reloaded.schemas).and_then(|schemas| {
        graphql.replace_schemas(&reloaded.schemas).map_err(|e| e.to_string())?;
        documents.replace_schemas(schemas);
        Ok(())
    });
    match replaced {
        Ok(()) => {
            tracing::info!(count = reloaded.schemas.len(), "collection schemas reloaded (writes and GraphQL)");
            *current = reloaded.schemas.clone();
        }
        Err(e) => tracing::error!("the collection schemas in force stay: {e}"),
    }
    reloaded.schema_sources
}

/// Every part's routes, each given only the services it uses, inside the gateway's layers.
fn routes(services: &Services) -> Router {
    let authenticator = Authenticator::new(services.accounts.tokens().clone(), services.service_key.clone());
    let auth = authenticator.clone();
    let operations = Operations {
        authenticator: auth.clone(),
        metrics: services.metrics.clone(),
        metrics_token: services.config.metrics_token.clone(),
    };
    let api = Router::new()
        .route("/readyz", get(crate::http::health::readyz))
        .with_state(services.store.clone())
        .merge(Router::new().route("/metrics", get(metrics_for_operators)).with_state(Arc::new(operations)))
        .merge(
            auth_api::router()
                .with_state(Arc::new(AuthApi { accounts: services.accounts.clone(), authenticator: auth.clone() })),
        )
        .merge(
            documents_api::router().with_state(Arc::new(DocumentsApi {
                documents: services.documents.clone(),
                authenticator: auth.clone(),
            })),
        )
        .merge(
            rules_api::router()
                .with_state(Arc::new(RulesApi { rules: services.rules.clone(), authenticator: auth.clone() })),
        )
        .merge(functions_api::router().merge(jobs_api::router()).with_state(Arc::new(FunctionsApi {
            functions: services.functions.clone(),
            documents: services.documents.clone(),
            messages: services.messages.clone(),
            store: services.store.clone(),
            authenticator: auth.clone(),
        })))
        .merge(
            graphql_api::router()
                .with_state(Arc::new(GraphqlApi { graphql: services.graphql.clone(), authenticator: auth.clone() })),
        )
        .merge(realtime_api::router().with_state(Arc::new(RealtimeApi {
            realtime: services.realtime.clone(),
            authenticator: authenticator.clone(),
        })));
    let config = &services.config;
    let api = if config.test_clock {
        tracing::warn!("test_clock is on: the service key can move this server's clock (POST /v1/admin/clock)");
        api.merge(Router::new().route("/v1/admin/clock", post(move_clock)).with_state(TestClock { authenticator }))
    } else {
        api
    };
    crate::http::gateway(
        api,
        crate::http::Gateway {
            body_limit: config.body_limit,
            body_timeout: config.http.body_timeout,
            cors: config.cors.clone(),
            metrics: services.metrics.clone(),
            static_dir: config.static_dir.clone(),
        },
    )
}

/// What `/metrics` needs: it is for the service key, an admin, or the
/// configured metrics token — counters such as rows read by rule-filtered
/// queries must never reach end users.
#[derive(Clone)]
struct Operations {
    authenticator: Authenticator,
    metrics: Arc<Metrics>,
    metrics_token: Option<secrecy::SecretString>,
}

crate::auth::api::authenticates!(Operations);

async fn metrics_for_operators(
    State(operations): State<Arc<Operations>>,
    headers: axum::http::HeaderMap,
    caller: Result<Caller, ApiError>,
) -> Response {
    use secrecy::ExposeSecret;
    let token = operations.metrics_token.as_ref().map(|t| t.expose_secret());
    let token_matches = matches!((crate::http::metrics::bearer(&headers), token),
        (Some(b), Some(t)) if crate::http::metrics::same_secret(b, t));
    let refusal = match caller {
        _ if token_matches => None,
        Ok(Caller::Public) => Some(ApiError::new(
            ErrorCode::Unauthenticated,
            "metrics need the service key, an admin token or the metrics token",
        )),
        Ok(caller) => caller.require_admin().err().map(ApiError::from),
        Err(rejection) => Some(rejection),
    };
    match refusal {
        Some(refusal) => refusal.into_response(),
        None => crate::http::metrics::exposition(&operations.metrics),
    }
}

/// `POST /v1/admin/clock` (only with the `test_clock` setting): moves the
/// server's clock forward, so a test sees expiries, retention and schedules
/// without waiting for them.
#[derive(Clone)]
struct TestClock {
    authenticator: Authenticator,
}

crate::auth::api::authenticates!(TestClock);

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Advance {
    /// Milliseconds to move forward (the clock never goes back).
    advance_ms: u64,
}

async fn move_clock(
    caller: Result<Caller, ApiError>,
    ApiJson(advance): ApiJson<Advance>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if caller? != Caller::Service {
        return Err(ApiError::new(ErrorCode::PermissionDenied, "moving the clock needs the service key"));
    }
    let now = crate::clock::advance(std::time::Duration::from_millis(advance.advance_ms));
    Ok(axum::Json(serde_json::json!({"now": crate::clock::format_time(now)})))
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
    let function_metrics = FunctionMetrics::register(metrics).map_err(|e| StartError::Metrics(e.to_string()))?;
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
        crate::functions::invocations::InvocationLog::new(documents.store().clone()),
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
        let limits = self.services.config.http.clone();
        let served = crate::http::serve::serve(self.listener, self.router, &limits, shutdown).await;
        self.services.store.close().await;
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
