//! One worker thread: a current-thread tokio runtime, the warm `JsRuntime`s
//! of the modules it has run, one blank runtime made while idle (so a cold
//! start only loads the module: creating a runtime is most of its cost), and
//! a watchdog that terminates an invocation at its deadline. A runtime that
//! timed out or ran out of memory is dropped.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use deno_core::{
    v8, JsRuntime, ModuleLoadOptions, ModuleLoadReferrer, ModuleLoadResponse, ModuleLoader, ModuleResolveResponse,
    ModuleSource, ModuleSourceCode, ModuleSpecifier, ModuleType, OpState, PollEventLoopOptions, ResolutionKind,
    RuntimeOptions,
};
use serde_json::Value;

use crate::dispatch::{Inbox, Next};
use crate::{Descriptor, Host, Invocation, Job, JsError, Limits, LogLine, Module};

const PRELUDE: &str = include_str!("prelude.js");
const HARNESS: &str = include_str!("harness.js");

/// A loaded runtime for one version of one module.
struct Warm {
    version: u64,
    heap_bytes: usize,
    js: JsRuntime,
    harness: Harness,
    out_of_memory: Rc<Cell<bool>>,
    last_used: Instant,
}

/// The harness's entry points, kept from its evaluation (`harness.js`'s
/// value): `adopt` takes the module's exports once it has loaded; `describe`
/// and `invoke` take and answer JSON text.
struct Harness {
    adopt: v8::Global<v8::Function>,
    describe: v8::Global<v8::Function>,
    invoke: v8::Global<v8::Function>,
}

impl Harness {
    /// Evaluates the harness in `js` and keeps its entry points.
    fn install(js: &mut JsRuntime) -> Result<Harness, JsError> {
        let value = js.execute_script("nimbus:harness", HARNESS).map_err(load_error)?;
        deno_core::scope!(scope, js);
        let value = v8::Local::new(scope, value);
        let object = v8::Local::<v8::Object>::try_from(value).map_err(load_error)?;
        let entry = |name: &str| -> Result<v8::Global<v8::Function>, JsError> {
            let key = v8::String::new(scope, name).ok_or_else(|| JsError::Load("allocation failed".into()))?;
            let found = object.get(scope, key.into()).ok_or_else(|| JsError::Load(format!("harness has no {name}")))?;
            let function = v8::Local::<v8::Function>::try_from(found).map_err(load_error)?;
            Ok(v8::Global::new(scope, function))
        };
        Ok(Harness { adopt: entry("adopt")?, describe: entry("describe")?, invoke: entry("invoke")? })
    }
}

/// The one op: a request from `ctx` to the host, answered as JSON text.
#[deno_core::op2]
#[string]
async fn op_nimbus_host(state: Rc<RefCell<OpState>>, #[string] request: String) -> String {
    let host = state.borrow().borrow::<Arc<dyn Host>>().clone();
    let request = serde_json::from_str(&request).unwrap_or(Value::Null);
    match host.call(request).await {
        Ok(value) => serde_json::json!({ "ok": value }).to_string(),
        Err(error) => serde_json::json!({ "error": error }).to_string(),
    }
}

deno_core::extension!(nimbus_host, ops = [op_nimbus_host], middleware = disable_unsafe_ops);

/// deno_core's built-in ops that user code must never reach. The harness
/// already removes `Deno` from the global scope before any user code runs;
/// this is the second wall: these ops throw "op is disabled" whoever calls
/// them. `op_panic` would abort the process (a panic cannot unwind out of an
/// op), `op_print` writes to the server's stdout, the rest read, write or
/// load things a function has no business with.
const DISABLED_OPS: &[&str] = &[
    "op_panic",
    "op_print",
    "op_close",
    "op_try_close",
    "op_read",
    "op_read_all",
    "op_read_sync",
    "op_write",
    "op_write_sync",
    "op_write_all",
    "op_write_type_error",
    "op_shutdown",
    "op_pipe",
    "op_resources",
    "op_import_sync",
    "op_import_sync_with_source",
    "op_load_ext_script",
    "op_lazy_load_esm",
    "op_eval_context",
    "op_set_promise_hooks",
    "op_add_main_module_handler",
    "op_set_wasm_streaming_callback",
    "op_abort_wasm_streaming",
    "op_wasm_streaming_feed",
    "op_wasm_streaming_set_url",
    "op_leak_tracing_enable",
    "op_leak_tracing_submit",
    "op_leak_tracing_get_all",
    "op_leak_tracing_get",
];

fn disable_unsafe_ops(op: deno_core::OpDecl) -> deno_core::OpDecl {
    if DISABLED_OPS.contains(&op.name) {
        op.disable()
    } else {
        op
    }
}

/// A runtime whose isolate is entered for as long as this guard lives. The
/// engine directs termination (and other per-isolate state) to the isolate
/// entered last on the thread, and a worker holds several runtimes, so every
/// load, describe and call enters its own (decision 0009).
struct Entered<'a>(&'a mut JsRuntime);

impl<'a> Entered<'a> {
    fn new(js: &'a mut JsRuntime) -> Entered<'a> {
        // SAFETY: exited in `drop` on this same thread; a JsRuntime never leaves its thread.
        unsafe { js.v8_isolate().enter() };
        Entered(js)
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        // SAFETY: pairs with the `enter` in `new`, on the same thread.
        unsafe { self.0.v8_isolate().exit() };
    }
}

impl std::ops::Deref for Entered<'_> {
    type Target = JsRuntime;
    fn deref(&self) -> &JsRuntime {
        self.0
    }
}

impl std::ops::DerefMut for Entered<'_> {
    fn deref_mut(&mut self) -> &mut JsRuntime {
        self.0
    }
}

/// The heap limit of runtimes that describe modules (no invocation limits apply).
const DEFAULT_HEAP_BYTES: usize = 64 * 1024 * 1024;

pub(crate) fn run(inbox: Inbox, idle: Duration, host: Arc<dyn Host>) {
    let Ok(tokio) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    let watchdog = Watchdog::start();
    let mut runtimes = Runtimes { warm: HashMap::new(), spare: None, host };
    // The heap limit of the last job; `None` until this worker has run one (a
    // worker that never runs functions makes no blank runtime).
    let mut heap_bytes: Option<usize> = None;
    loop {
        let job = match inbox.next(runtimes.spare.is_none() && heap_bytes.is_some()) {
            Next::Job(job) => job,
            Next::Nothing => {
                runtimes.spare = blank(heap_bytes.unwrap_or(DEFAULT_HEAP_BYTES), &runtimes.host).ok();
                continue;
            }
            Next::Wait => continue,
            Next::Stop => return,
        };
        runtimes.warm.retain(|_, w| w.last_used.elapsed() < idle);
        match *job {
            Job::Describe { module, time_limit, reply } => {
                heap_bytes = heap_bytes.or(Some(DEFAULT_HEAP_BYTES));
                let deadline = Deadline { at: Instant::now() + time_limit, watchdog: &watchdog };
                let result = tokio.block_on(describe(&mut runtimes, &module, deadline));
                let _ = reply.send(result);
            }
            Job::Invoke { module, export, input, context, limits, reply } => {
                heap_bytes = Some(limits.heap_bytes);
                let call = Call { module: &module, export: &export, input: &input, context: &context, limits };
                let invocation = tokio.block_on(invoke(&mut runtimes, &watchdog, call));
                let _ = reply.send(invocation);
            }
        }
    }
}

/// Module sources a runtime loads; filled when the runtime gets its module.
#[derive(Default)]
struct Sources(RefCell<HashMap<ModuleSpecifier, String>>);

impl ModuleLoader for Sources {
    fn resolve(&self, specifier: &str, referrer: &str, _kind: ResolutionKind) -> ModuleResolveResponse {
        deno_core::resolve_import(specifier, referrer).map_err(deno_error::JsErrorBox::from_err)
    }

    fn load(
        &self,
        specifier: &ModuleSpecifier,
        _referrer: Option<&ModuleLoadReferrer>,
        _options: ModuleLoadOptions,
    ) -> ModuleLoadResponse {
        let source = match self.0.borrow().get(specifier) {
            Some(code) => Ok(ModuleSource::new(
                ModuleType::JavaScript,
                ModuleSourceCode::String(code.clone().into()),
                specifier,
                None,
            )),
            None => Err(deno_error::JsErrorBox::generic(format!("module {specifier} not found"))),
        };
        ModuleLoadResponse::Sync(source)
    }
}

/// A runtime with the host op and limits set up, but no module yet.
struct Blank {
    js: JsRuntime,
    harness: Harness,
    sources: Rc<Sources>,
    heap_bytes: usize,
    out_of_memory: Rc<Cell<bool>>,
}

fn blank(heap_bytes: usize, host: &Arc<dyn Host>) -> Result<Blank, JsError> {
    let sources = Rc::new(Sources::default());
    let mut js = JsRuntime::new(RuntimeOptions {
        module_loader: Some(sources.clone()),
        create_params: Some(v8::CreateParams::default().heap_limits(0, heap_bytes)),
        extensions: vec![nimbus_host::init()],
        ..Default::default()
    });
    js.op_state().borrow_mut().put::<Arc<dyn Host>>(host.clone());
    let out_of_memory = Rc::new(Cell::new(false));
    let flag = out_of_memory.clone();
    let handle = js.v8_isolate().thread_safe_handle();
    js.add_near_heap_limit_callback(move |current, _initial| {
        flag.set(true);
        handle.terminate_execution();
        current * 2
    });
    let harness = Harness::install(&mut Entered::new(&mut js))?;
    Ok(Blank { js, harness, sources, heap_bytes, out_of_memory })
}

fn specifier(text: &str) -> Result<ModuleSpecifier, JsError> {
    ModuleSpecifier::parse(text).map_err(|_| JsError::Load(format!("invalid module name {text:?}")))
}

fn load_error(e: impl std::fmt::Display) -> JsError {
    JsError::Load(e.to_string())
}

/// A runtime loaded with `module`: the spare when its heap limit fits, else a new one.
async fn create(
    module: &Module,
    spare: &mut Option<Blank>,
    heap_bytes: usize,
    host: &Arc<dyn Host>,
    deadline: Deadline<'_>,
) -> Result<Warm, JsError> {
    let Blank { mut js, harness, sources, heap_bytes, out_of_memory } = match spare.take() {
        Some(blank) if blank.heap_bytes == heap_bytes => blank,
        _ => blank(heap_bytes, host)?,
    };
    let main = specifier(&format!("file:///functions/{}", module.name))?;
    sources
        .0
        .borrow_mut()
        .extend([(specifier("nimbus:functions")?, PRELUDE.to_owned()), (main.clone(), module.source.clone())]);
    let mut entered = Entered::new(&mut js);
    let loaded = deadline.run(&mut entered, |js| load(js, &main, &harness.adopt)).await;
    drop(entered);
    match loaded {
        Limited::Done(result) => result?,
        Limited::TimedOut => {
            return Err(JsError::Load(format!("{}: loading took longer than its time limit", module.name)))
        }
    }
    if out_of_memory.get() {
        return Err(JsError::Load(format!("{}: loading used more memory than its heap limit", module.name)));
    }
    Ok(Warm { version: module.version, heap_bytes, js, harness, out_of_memory, last_used: Instant::now() })
}

/// Loads and evaluates the module, then hands its exports to the harness.
async fn load(js: &mut JsRuntime, main: &ModuleSpecifier, adopt: &v8::Global<v8::Function>) -> Result<(), JsError> {
    let id = js.load_main_es_module(main).await.map_err(load_error)?;
    let evaluated = js.mod_evaluate(id);
    js.run_event_loop(PollEventLoopOptions::default()).await.map_err(load_error)?;
    evaluated.await.map_err(load_error)?;
    let namespace = js.get_module_namespace(id).map_err(load_error)?;
    let namespace = {
        deno_core::scope!(scope, js);
        let local = v8::Local::new(scope, namespace);
        v8::Global::new(scope, v8::Local::<v8::Value>::from(local))
    };
    js.call_with_args(adopt, &[namespace]).await.map_err(load_error)?;
    Ok(())
}

/// One worker's runtimes: the warm one of each module it ran lately, a
/// spare blank one made while idle, and the host their `ctx` calls.
struct Runtimes {
    warm: HashMap<String, Warm>,
    spare: Option<Blank>,
    host: Arc<dyn Host>,
}

impl Runtimes {
    /// The warm runtime for `module` (a new one when missing or outdated); `true` when new.
    async fn runtime(
        &mut self,
        module: &Module,
        heap_bytes: usize,
        deadline: Deadline<'_>,
    ) -> Result<(&mut Warm, bool), JsError> {
        let warm = &mut self.warm;
        let fresh = !warm.get(&module.name).is_some_and(|w| w.version == module.version && w.heap_bytes == heap_bytes);
        if fresh {
            warm.remove(&module.name);
            let created = create(module, &mut self.spare, heap_bytes, &self.host, deadline).await?;
            warm.insert(module.name.clone(), created);
        }
        let entry = warm.get_mut(&module.name).ok_or(JsError::Stopped)?;
        entry.last_used = Instant::now();
        Ok((entry, fresh))
    }
}

async fn describe(
    runtimes: &mut Runtimes,
    module: &Module,
    deadline: Deadline<'_>,
) -> Result<Vec<Descriptor>, JsError> {
    let (entry, _) = runtimes.runtime(module, DEFAULT_HEAP_BYTES, deadline).await?;
    let mut entered = Entered::new(&mut entry.js);
    let outcome = deadline.run(&mut entered, |js| call_harness(js, &entry.harness.describe, &[])).await;
    drop(entered);
    let text = match outcome {
        Limited::Done(text) => text?,
        Limited::TimedOut => {
            runtimes.warm.remove(&module.name);
            return Err(JsError::Load(format!("{}: describing took longer than its time limit", module.name)));
        }
    };
    serde_json::from_str(&text).map_err(|e| JsError::Load(format!("describing {}: {e}", module.name)))
}

/// When a load, describe or call must end, and the watchdog that ends it.
#[derive(Clone, Copy)]
struct Deadline<'w> {
    at: Instant,
    watchdog: &'w Watchdog,
}

/// The outcome of work run under a deadline.
enum Limited<T> {
    Done(T),
    TimedOut,
}

impl Deadline<'_> {
    /// Runs `work` on `js` until it finishes or the deadline passes. The
    /// watchdog terminates JavaScript that is running at the deadline; the
    /// timer ends the wait when nothing runs (an awaited timer or host call).
    /// After `TimedOut` the runtime must be dropped.
    async fn run<'j, T, F, W>(self, js: &'j mut JsRuntime, work: W) -> Limited<T>
    where
        W: FnOnce(&'j mut JsRuntime) -> F,
        F: std::future::Future<Output = T> + 'j,
    {
        let fired = self.watchdog.arm(js.v8_isolate().thread_safe_handle(), self.at);
        let outcome = tokio::time::timeout_at(self.at.into(), work(js)).await;
        self.watchdog.disarm();
        match outcome {
            Ok(_) if fired.load(Ordering::SeqCst) => Limited::TimedOut,
            Ok(value) => Limited::Done(value),
            Err(_) => Limited::TimedOut,
        }
    }
}

/// Calls a harness function with string arguments; its value is (a promise
/// of) a string, which it returns. A value returned at once is read without
/// polling the event loop.
async fn call_harness(
    js: &mut JsRuntime,
    function: &v8::Global<v8::Function>,
    args: &[&str],
) -> Result<String, JsError> {
    let thrown =
        |e: &dyn std::fmt::Display| JsError::Thrown { name: "Error".into(), code: None, message: e.to_string() };
    let args = strings(js, args)?;
    let called = js.call_with_args(function, &args);
    let value = js.with_event_loop_promise(called, PollEventLoopOptions::default()).await.map_err(|e| thrown(&e))?;
    deno_core::scope!(scope, js);
    let local = v8::Local::new(scope, value);
    Ok(local.to_rust_string_lossy(scope))
}

/// `texts` as JavaScript strings.
fn strings(js: &mut JsRuntime, texts: &[&str]) -> Result<Vec<v8::Global<v8::Value>>, JsError> {
    deno_core::scope!(scope, js);
    texts
        .iter()
        .map(|text| {
            let string = v8::String::new(scope, text).ok_or(JsError::OutOfMemory)?;
            Ok(v8::Global::new(scope, v8::Local::<v8::Value>::from(string)))
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct Reply {
    ok: Option<Value>,
    error: Option<ThrownError>,
    #[serde(default)]
    logs: Vec<LogLine>,
}

#[derive(serde::Deserialize)]
struct ThrownError {
    name: String,
    code: Option<String>,
    message: String,
}

/// One invocation's request.
struct Call<'a> {
    module: &'a Module,
    export: &'a str,
    input: &'a Value,
    context: &'a Value,
    limits: Limits,
}

async fn invoke(runtimes: &mut Runtimes, watchdog: &Watchdog, call: Call<'_>) -> Invocation {
    let Call { module, export, input, context, limits } = call;
    let started = Instant::now();
    let deadline = Deadline { at: started + limits.timeout, watchdog };
    let failed = |error, cold| Invocation { result: Err(error), logs: Vec::new(), cold, duration: started.elapsed() };
    let (entry, cold) = match runtimes.runtime(module, limits.heap_bytes, deadline).await {
        Ok(found) => found,
        Err(error) => return failed(error, true),
    };
    let (input, context) = (input.to_string(), context.to_string());
    let args = [export, &input, &context];
    let mut entered = Entered::new(&mut entry.js);
    let limited = deadline.run(&mut entered, |js| call_harness(js, &entry.harness.invoke, &args)).await;
    drop(entered);
    let out_of_memory = entry.out_of_memory.get();
    let outcome = match limited {
        Limited::Done(outcome) if !out_of_memory => outcome,
        _ => {
            runtimes.warm.remove(&module.name);
            let error = if out_of_memory { JsError::OutOfMemory } else { JsError::Timeout };
            return failed(error, cold);
        }
    };
    let reply = match outcome.map(|text| serde_json::from_str::<Reply>(&text)) {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => {
            return failed(JsError::Thrown { name: "Error".into(), code: None, message: e.to_string() }, cold)
        }
        Err(error) => return failed(error, cold),
    };
    let result = match (reply.ok, reply.error) {
        (_, Some(e)) => Err(JsError::Thrown { name: e.name, code: e.code, message: e.message }),
        (ok, None) => Ok(ok.unwrap_or(Value::Null)),
    };
    Invocation { result, logs: reply.logs, cold, duration: started.elapsed() }
}

/// The armed deadline: when, which isolate, and the flag set when it fires.
type Armed = Option<(Instant, v8::IsolateHandle, Arc<AtomicBool>)>;

/// What the watchdog thread shares with its worker.
struct Watch {
    armed: Armed,
    /// When the sleeping watchdog wakes by itself (`None`: only when notified).
    wakes_at: Option<Instant>,
}

/// Terminates the armed isolate at its deadline. Arming and disarming only
/// wake the watchdog thread when it would otherwise sleep past the new
/// deadline, so a call costs no thread switch: with one timeout for all
/// calls it wakes about once per timeout, finds a later deadline armed, and
/// sleeps on.
struct Watchdog {
    state: Arc<(Mutex<Watch>, Condvar)>,
}

impl Watchdog {
    fn start() -> Watchdog {
        let state = Arc::new((Mutex::new(Watch { armed: None, wakes_at: None }), Condvar::new()));
        let shared = state.clone();
        let _ = std::thread::Builder::new().name("nimbus-js-watchdog".into()).spawn(move || watch(&shared));
        Watchdog { state }
    }

    fn arm(&self, handle: v8::IsolateHandle, deadline: Instant) -> Arc<AtomicBool> {
        let fired = Arc::new(AtomicBool::new(false));
        let (lock, wake) = &*self.state;
        if let Ok(mut watch) = lock.lock() {
            watch.armed = Some((deadline, handle, fired.clone()));
            if watch.wakes_at.is_none_or(|at| at > deadline) {
                wake.notify_all();
            }
        }
        fired
    }

    fn disarm(&self) {
        if let Ok(mut watch) = self.state.0.lock() {
            watch.armed = None;
        }
    }
}

/// The watchdog thread: sleeps until the armed deadline, terminates the
/// isolate if it is still armed then, and otherwise sleeps on.
fn watch(state: &(Mutex<Watch>, Condvar)) {
    let (lock, wake) = state;
    let Ok(mut watch) = lock.lock() else { return };
    loop {
        let now = Instant::now();
        watch.wakes_at = match watch.armed.as_ref() {
            Some((deadline, handle, fired)) if now >= *deadline => {
                fired.store(true, Ordering::SeqCst);
                handle.terminate_execution();
                watch.armed = None;
                None
            }
            Some((deadline, ..)) => Some(*deadline),
            None => None,
        };
        watch = match watch.wakes_at {
            None => match wake.wait(watch) {
                Ok(guard) => guard,
                Err(_) => return,
            },
            Some(at) => match wake.wait_timeout(watch, at.saturating_duration_since(now)) {
                Ok((guard, _)) => guard,
                Err(_) => return,
            },
        };
    }
}

/// Evaluates `source` as the main ES module named `name` and returns the JSON
/// form of its `default` export (a quick check that the engine works).
pub fn eval_module_default(name: &str, source: &str) -> Result<Value, JsError> {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(load_error)?;
    tokio.block_on(async {
        let main = specifier(&format!("file:///{name}"))?;
        let mut js = JsRuntime::new(RuntimeOptions {
            module_loader: Some(Rc::new(deno_core::StaticModuleLoader::with(main.clone(), source.to_owned()))),
            ..Default::default()
        });
        let id = js.load_main_es_module(&main).await.map_err(load_error)?;
        let evaluated = js.mod_evaluate(id);
        js.run_event_loop(PollEventLoopOptions::default()).await.map_err(load_error)?;
        evaluated.await.map_err(load_error)?;
        let namespace = js.get_module_namespace(id).map_err(load_error)?;
        deno_core::scope!(scope, &mut js);
        let namespace = v8::Local::new(scope, namespace);
        let key = v8::String::new(scope, "default").ok_or_else(|| JsError::Load("allocation failed".into()))?;
        let value = namespace.get(scope, key.into()).ok_or_else(|| JsError::Load("no default export".into()))?;
        deno_core::serde_v8::from_v8(scope, value).map_err(load_error)
    })
}
