//! The deno_core host. Owns the JavaScript engine (QuickJS through deno_core's
//! `quickjs` feature), worker threads that each own `JsRuntime`s (a runtime is
//! not `Send`), warm reuse of one runtime per module per worker, and the
//! limits of an invocation (wall-clock timeout, heap). It knows nothing of
//! Nimbus: it loads ES modules that import `nimbus:functions`, lists their
//! trigger descriptors, and calls one export with JSON in and JSON out.

mod dispatch;
mod worker;

use std::future::Future;
use std::pin::Pin;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use worker::eval_module_default;

/// What functions can ask of the program that runs them (`ctx.db…`):
/// JSON request in, JSON value or `{code, message}` error out. Called from a
/// worker thread; the future may run anywhere.
pub trait Host: Send + Sync + 'static {
    fn call(&self, request: Value) -> Pin<Box<dyn Future<Output = Result<Value, HostError>> + Send>>;
}

/// An error a host call reports to the function (thrown there with `code`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostError {
    pub code: String,
    pub message: String,
}

/// A host for programs that offer functions nothing: every call fails.
pub struct NoHost;

impl Host for NoHost {
    fn call(&self, _request: Value) -> Pin<Box<dyn Future<Output = Result<Value, HostError>> + Send>> {
        Box::pin(async { Err(HostError { code: "unavailable".into(), message: "no host services".into() }) })
    }
}

/// A function module: its file name, its source and a version that changes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub source: String,
    pub version: u64,
}

impl Module {
    pub fn new(name: impl Into<String>, source: impl Into<String>) -> Module {
        use std::hash::{Hash, Hasher};
        let (name, source) = (name.into(), source.into());
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut hasher);
        Module { name, source, version: hasher.finish() }
    }
}

/// Limits of one invocation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub heap_bytes: usize,
}

/// An exported trigger descriptor (`onHttp(...)`, `onCreate(...)`, …).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Descriptor {
    /// The export's name.
    pub name: String,
    /// `http`, `create`, `update`, `delete`, `write`, `message`, `schedule`, `beforeSignUp`, `afterSignUp`.
    pub kind: String,
    pub spec: Value,
}

/// A console line written during an invocation.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LogLine {
    pub level: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JsError {
    /// The module failed to load or evaluate (the message has `file:line:col`).
    #[error("{0}")]
    Load(String),
    /// The function threw; `code` is set for `HttpsError`.
    #[error("{message}")]
    Thrown { name: String, code: Option<String>, message: String },
    #[error("the function ran longer than its time limit")]
    Timeout,
    #[error("the function used more memory than its heap limit")]
    OutOfMemory,
    #[error("no export `{0}` with a trigger descriptor")]
    NoSuchExport(String),
    #[error("the function runtime stopped")]
    Stopped,
}

/// The result of one call.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub result: Result<Value, JsError>,
    pub logs: Vec<LogLine>,
    /// Whether a new runtime was created (and the module loaded) for this call.
    pub cold: bool,
    pub duration: Duration,
}

enum Job {
    Describe {
        module: Arc<Module>,
        time_limit: Duration,
        reply: tokio::sync::oneshot::Sender<Result<Vec<Descriptor>, JsError>>,
    },
    Invoke {
        module: Arc<Module>,
        export: String,
        input: Value,
        context: Value,
        limits: Limits,
        reply: tokio::sync::oneshot::Sender<Invocation>,
    },
}

/// Worker threads: a call goes to the worker that became idle last, or waits
/// for the first one free, so a burst runs on several runtimes of the same
/// function at once.
pub struct Pool {
    dispatch: dispatch::Dispatch,
    load_limit: Duration,
}

/// How long loading and describing a module may take unless the pool is told otherwise.
pub const DEFAULT_LOAD_LIMIT: Duration = Duration::from_secs(10);

impl Pool {
    /// Starts `threads` workers; each drops runtimes unused for `idle`.
    pub fn new(threads: usize, idle: Duration, host: Arc<dyn Host>) -> Pool {
        let (dispatch, inboxes) = dispatch::channels(threads.max(1));
        for (index, inbox) in inboxes.into_iter().enumerate() {
            let host = host.clone();
            let _ = std::thread::Builder::new()
                .name(format!("nimbus-js-{index}"))
                .spawn(move || worker::run(inbox, idle, host));
        }
        Pool { dispatch, load_limit: DEFAULT_LOAD_LIMIT }
    }

    /// Sets how long loading and describing one module may take (a module
    /// that runs longer, e.g. a top-level endless loop, fails to load).
    pub fn with_load_limit(mut self, limit: Duration) -> Pool {
        self.load_limit = limit;
        self
    }

    fn send(&self, job: Job) -> bool {
        self.dispatch.send(job)
    }

    /// Loads the module and lists its trigger descriptors.
    pub async fn describe(&self, module: Arc<Module>) -> Result<Vec<Descriptor>, JsError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if !self.send(Job::Describe { module, time_limit: self.load_limit, reply }) {
            return Err(JsError::Stopped);
        }
        answer.await.unwrap_or(Err(JsError::Stopped))
    }

    /// Calls `export`'s handler with `(input, context)`.
    pub async fn invoke(
        &self,
        module: Arc<Module>,
        export: &str,
        input: Value,
        context: Value,
        limits: Limits,
    ) -> Invocation {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job::Invoke { module, export: export.to_owned(), input, context, limits, reply };
        let stopped =
            || Invocation { result: Err(JsError::Stopped), logs: Vec::new(), cold: false, duration: Duration::ZERO };
        if !self.send(job) {
            return stopped();
        }
        answer.await.unwrap_or_else(|_| stopped())
    }
}

#[cfg(test)]
mod tests;
