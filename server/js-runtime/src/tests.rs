use super::*;

fn pool() -> Pool {
    Pool::new(2, Duration::from_secs(60), Arc::new(NoHost))
}

const LIMITS: Limits = Limits { timeout: Duration::from_millis(500), heap_bytes: 64 * 1024 * 1024 };

fn module(source: &str) -> Arc<Module> {
    Arc::new(Module::new("test.js", source))
}

#[test]
fn evaluates_an_es_module() {
    let value = eval_module_default(
        "main.js",
        "const double = async (n) => n * 2;\nexport default { answer: await double(21), list: [1, 'a'] };",
    )
    .unwrap();
    assert_eq!(value, serde_json::json!({"answer": 42, "list": [1, "a"]}));
}

#[tokio::test]
async fn describes_and_invokes_functions() {
    let pool = pool();
    let m = module(
        r#"
        import { onHttp, onCreate, HttpsError } from "nimbus:functions";
        export const hello = onHttp({ method: "GET", path: "/hello/:name" }, async (req, ctx) => {
            console.log("hi", { name: req.params.name });
            return { status: 200, body: { greeting: `hello ${req.params.name}`, caller: ctx.uid } };
        });
        export const refuse = onHttp({ method: "POST", path: "/refuse" }, () => { throw new HttpsError("permission-denied", "no"); });
        export const created = onCreate("orders/{id}", (event) => event.params.id);
        export const helper = 5;
        "#,
    );
    let descriptors = pool.describe(m.clone()).await.unwrap();
    let kinds: Vec<(&str, &str)> = descriptors.iter().map(|d| (d.name.as_str(), d.kind.as_str())).collect();
    assert_eq!(kinds, [("created", "create"), ("hello", "http"), ("refuse", "http")]);
    assert_eq!(descriptors[1].spec["path"], "/hello/:name");
    let input = serde_json::json!({"params": {"name": "ann"}});
    let first = pool.invoke(m.clone(), "hello", input.clone(), serde_json::json!({"uid": "u1"}), LIMITS).await;
    assert_eq!(first.result.unwrap()["body"]["greeting"], "hello ann");
    assert_eq!(first.logs, [LogLine { level: "info".into(), message: "hi {\"name\":\"ann\"}".into() }]);
    let refused = pool.invoke(m.clone(), "refuse", Value::Null, Value::Null, LIMITS).await;
    assert!(matches!(refused.result, Err(JsError::Thrown { code: Some(ref c), .. }) if c == "permission-denied"));
}

#[tokio::test]
async fn a_runaway_function_times_out_and_the_next_call_works() {
    let pool = Pool::new(1, Duration::from_secs(60), Arc::new(NoHost));
    let m = module(
        r#"
        import { onHttp } from "nimbus:functions";
        export const spin = onHttp({ path: "/spin" }, () => { while (true) {} });
        export const ok = onHttp({ path: "/ok" }, () => "fine");
        "#,
    );
    let started = std::time::Instant::now();
    let spun = pool.invoke(m.clone(), "spin", Value::Null, Value::Null, LIMITS).await;
    assert_eq!(spun.result, Err(JsError::Timeout));
    assert!(started.elapsed() < Duration::from_secs(3));
    let ok = pool.invoke(m, "ok", Value::Null, Value::Null, LIMITS).await;
    assert_eq!(ok.result, Ok(serde_json::json!("fine")));
    assert!(ok.cold, "the terminated runtime was replaced");
}

#[tokio::test]
async fn a_memory_hog_is_stopped() {
    let pool = Pool::new(1, Duration::from_secs(60), Arc::new(NoHost));
    let m = module(
        r#"
        import { onHttp } from "nimbus:functions";
        export const hog = onHttp({ path: "/hog" }, () => { const all = []; while (true) { all.push(new Array(100000).fill(1)); } });
        "#,
    );
    let limits = Limits { timeout: Duration::from_secs(10), heap_bytes: 16 * 1024 * 1024 };
    let hog = pool.invoke(m, "hog", Value::Null, Value::Null, limits).await;
    assert!(matches!(hog.result, Err(JsError::OutOfMemory) | Err(JsError::Timeout)), "{:?}", hog.result);
}

#[tokio::test]
async fn a_broken_module_reports_its_position() {
    let pool = pool();
    let broken =
        Arc::new(Module::new("broken.js", "import { onHttp } from \"nimbus:functions\";\nexport const x = ;\n"));
    let error = pool.describe(broken).await.unwrap_err();
    assert!(error.to_string().contains("broken.js:2"), "{error}");
}

/// Echoes requests back, and fails `get` of `missing/x`.
struct EchoHost;

impl Host for EchoHost {
    fn call(&self, request: Value) -> Pin<Box<dyn Future<Output = Result<Value, HostError>> + Send>> {
        Box::pin(async move {
            if request["path"] == "missing/x" {
                return Err(HostError { code: "not-found".into(), message: "no such document".into() });
            }
            Ok(serde_json::json!({ "echo": request }))
        })
    }
}

#[tokio::test]
async fn functions_reach_the_host_through_ctx_db() {
    let pool = Pool::new(1, Duration::from_secs(60), Arc::new(EchoHost));
    let m = module(
        r#"
        import { onHttp } from "nimbus:functions";
        export const read = onHttp({ path: "/r" }, async (req, ctx) => {
            const one = await ctx.db.doc("products/p1").get();
            const query = await ctx.db.collection("products").where("price", "<", 5).orderBy("price", "desc").limit(3).get();
            const written = await ctx.db.batch().update("products/p1", { stock: 1 }, { version: 2 }).create("orders/o1", {}).commit();
            let failure = null;
            try { await ctx.db.doc("missing/x").get(); } catch (e) { failure = { code: e.code, message: e.message }; }
            return { one, query, written, failure };
        });
        "#,
    );
    let result = pool.invoke(m, "read", Value::Null, Value::Null, LIMITS).await.result.unwrap();
    assert_eq!(result["one"]["echo"], serde_json::json!({"op": "get", "path": "products/p1"}));
    assert_eq!(
        result["query"]["echo"]["query"],
        serde_json::json!({"collection": "products", "where": [["price", "<", 5]], "orderBy": [["price", "desc"]], "limit": 3})
    );
    assert_eq!(
        result["written"]["echo"]["writes"][0],
        serde_json::json!({"op": "update", "path": "products/p1", "data": {"stock": 1}, "precondition": {"version": 2}})
    );
    assert_eq!(result["failure"], serde_json::json!({"code": "not-found", "message": "no such document"}));
}

#[tokio::test]
async fn a_timeout_stops_a_runtime_created_before_another_modules_runtime() {
    let pool = Pool::new(1, Duration::from_secs(60), Arc::new(NoHost));
    let spinner = Arc::new(Module::new(
        "spinner.js",
        r#"import { onHttp } from "nimbus:functions";
        export const ok = onHttp({ path: "/ok" }, () => 1);
        export const spin = onHttp({ path: "/spin" }, () => { while (true) {} });"#,
    ));
    let other = Arc::new(Module::new(
        "other.js",
        r#"import { onHttp } from "nimbus:functions";
        export const ok = onHttp({ path: "/other" }, () => 2);"#,
    ));
    assert_eq!(pool.invoke(spinner.clone(), "ok", Value::Null, Value::Null, LIMITS).await.result.unwrap(), 1);
    assert_eq!(pool.invoke(other.clone(), "ok", Value::Null, Value::Null, LIMITS).await.result.unwrap(), 2);
    let spun = tokio::time::timeout(
        Duration::from_secs(10),
        pool.invoke(spinner.clone(), "spin", Value::Null, Value::Null, LIMITS),
    )
    .await
    .expect("the watchdog stops the loop");
    assert!(matches!(spun.result, Err(JsError::Timeout)), "{:?}", spun.result);
    assert_eq!(pool.invoke(other, "ok", Value::Null, Value::Null, LIMITS).await.result.unwrap(), 2);
}

#[tokio::test]
async fn cold_starts_use_a_blank_runtime_that_holds_nothing_of_earlier_modules() {
    // idle = 0: every call is cold; after each, the worker makes a blank runtime.
    let pool = Pool::new(1, Duration::ZERO, Arc::new(NoHost));
    let leaky = Arc::new(Module::new(
        "leaky.js",
        r#"import { onHttp } from "nimbus:functions";
        globalThis.secret = "from leaky.js";
        export const run = onHttp({ path: "/a" }, () => globalThis.secret);"#,
    ));
    let curious = Arc::new(Module::new(
        "curious.js",
        r#"import { onHttp } from "nimbus:functions";
        export const run = onHttp({ path: "/b" }, () => typeof globalThis.secret);"#,
    ));
    for _ in 0..3 {
        let first = pool.invoke(leaky.clone(), "run", Value::Null, Value::Null, LIMITS).await;
        assert_eq!((first.result.unwrap(), first.cold), (Value::from("from leaky.js"), true));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = pool.invoke(curious.clone(), "run", Value::Null, Value::Null, LIMITS).await;
        assert_eq!((second.result.unwrap(), second.cold), (Value::from("undefined"), true));
    }
    let bigger = Limits { heap_bytes: 128 * 1024 * 1024, ..LIMITS };
    let other_heap = pool.invoke(curious.clone(), "run", Value::Null, Value::Null, bigger).await;
    assert_eq!(
        other_heap.result.unwrap(),
        Value::from("undefined"),
        "a heap limit the blank runtime lacks gets a new one"
    );
}

/// Every way a function might reach deno_core's own ops: none is there.
#[tokio::test]
async fn user_code_reaches_no_deno_core_op() {
    let pool = pool();
    let m = module(
        r#"
        import { onHttp } from "nimbus:functions";
        const atLoad = typeof globalThis.Deno;
        const tries = () => {
            const out = { atLoad, now: typeof Deno };
            try { Deno.core.ops.op_panic("x"); out.panic = "called"; } catch (e) { out.panic = e.name; }
            try { Deno.core.print("raw line\n"); out.print = "called"; } catch (e) { out.print = e.name; }
            out.leaks = Object.getOwnPropertyNames(globalThis).filter((k) => {
                const v = globalThis[k];
                return v && (typeof v === "object" || typeof v === "function") && ("ops" in v || "core" in v);
            });
            return out;
        };
        export const probe = onHttp({ path: "/probe" }, () => tries());
        "#,
    );
    let invocation = pool.invoke(m, "probe", Value::Null, Value::Null, LIMITS).await;
    let out = invocation.result.unwrap();
    assert_eq!(out["atLoad"], "undefined", "Deno is gone before the module runs: {out}");
    assert_eq!(out["now"], "undefined");
    assert_eq!(out["panic"], "ReferenceError");
    assert_eq!(out["print"], "ReferenceError");
    assert_eq!(out["leaks"], serde_json::json!([]));
}

#[tokio::test]
async fn timers_work_and_an_awaited_timer_ends_at_the_deadline() {
    let pool = Pool::new(1, Duration::from_secs(60), Arc::new(NoHost));
    let m = module(
        r#"
        import { onHttp } from "nimbus:functions";
        export const nap = onHttp({ path: "/nap" }, async () => {
            const order = [];
            const cancelled = setTimeout(() => order.push("never"), 5);
            clearTimeout(cancelled);
            await new Promise((r) => setTimeout(() => { order.push("slept"); r(); }, 20));
            return order;
        });
        export const sleepy = onHttp({ path: "/sleepy" }, () => new Promise((r) => setTimeout(r, 25000)));
        "#,
    );
    let nap = pool.invoke(m.clone(), "nap", Value::Null, Value::Null, LIMITS).await;
    assert_eq!(nap.result.unwrap(), serde_json::json!(["slept"]));
    let started = std::time::Instant::now();
    let sleepy = pool.invoke(m.clone(), "sleepy", Value::Null, Value::Null, LIMITS).await;
    assert!(matches!(sleepy.result, Err(JsError::Timeout)), "{:?}", sleepy.result);
    assert!(started.elapsed() < Duration::from_secs(3), "ended at the 500 ms deadline, took {:?}", started.elapsed());
    // The only worker is free again.
    let again = pool.invoke(m, "nap", Value::Null, Value::Null, LIMITS).await;
    assert!(again.result.is_ok());
}

#[tokio::test]
async fn a_module_that_never_finishes_loading_is_refused_in_time() {
    let pool = Pool::new(1, Duration::from_secs(60), Arc::new(NoHost)).with_load_limit(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let endless = pool.describe(Arc::new(Module::new("zhang.js", "while (true) {}"))).await;
    assert!(matches!(&endless, Err(JsError::Load(m)) if m.contains("time limit")), "{endless:?}");
    let awaiting =
        pool.describe(Arc::new(Module::new("wait.js", "await new Promise(() => setTimeout(() => {}, 60000));"))).await;
    assert!(matches!(&awaiting, Err(JsError::Load(m)) if m.contains("time limit")), "{awaiting:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let fine = pool
        .describe(module("import { onHttp } from 'nimbus:functions'; export const a = onHttp({path:'/a'}, () => 1);"))
        .await;
    assert_eq!(fine.unwrap().len(), 1);
}

/// The harness's entry points are kept by the host, not left on the global
/// object, and a module cannot swap the exports the host calls.
#[tokio::test]
async fn user_code_cannot_reach_or_replace_the_entry_points() {
    let pool = pool();
    let m = module(
        r#"
        import { onHttp } from "nimbus:functions";
        const fake = { probe: { __nimbus: "http", spec: {}, handler: () => "replaced" } };
        for (const name of Object.getOwnPropertyNames(globalThis).filter((n) => n.startsWith("__nimbus"))) {
            try { globalThis[name](fake); } catch {}
        }
        export const probe = onHttp({ path: "/probe" }, () =>
            Object.getOwnPropertyNames(globalThis).filter((n) => n.startsWith("__nimbus")));
        "#,
    );
    let invocation = pool.invoke(m, "probe", Value::Null, Value::Null, LIMITS).await;
    assert_eq!(invocation.result.unwrap(), serde_json::json!([]));
}

/// Values, promises, rejections and replies that cannot be JSON all come back.
#[tokio::test]
async fn every_kind_of_result_comes_back() {
    let pool = pool();
    let m = module(
        r#"
        import { onHttp } from "nimbus:functions";
        export const plain = onHttp({ path: "/a" }, (input) => ({ doubled: input.n * 2 }));
        export const nothing = onHttp({ path: "/b" }, () => {});
        export const later = onHttp({ path: "/c" }, (input) => Promise.resolve(input.n + 1));
        export const rejects = onHttp({ path: "/d" }, () => Promise.reject(new TypeError("nope")));
        export const big = onHttp({ path: "/e" }, () => 1n);
        export const bigLater = onHttp({ path: "/f" }, async () => 1n);
        export const notJson = onHttp({ path: "/g" }, (input, ctx) => [typeof input, input, ctx.uid]);
        "#,
    );
    let call = |export: &'static str, input: Value| {
        let (pool, m) = (&pool, m.clone());
        async move { pool.invoke(m, export, input, serde_json::json!({"uid": "u1"}), LIMITS).await.result }
    };
    assert_eq!(call("plain", serde_json::json!({"n": 21})).await, Ok(serde_json::json!({"doubled": 42})));
    assert_eq!(call("nothing", Value::Null).await, Ok(Value::Null));
    assert_eq!(call("later", serde_json::json!({"n": 1})).await, Ok(serde_json::json!(2)));
    assert!(matches!(call("rejects", Value::Null).await, Err(JsError::Thrown { name, .. }) if name == "TypeError"));
    for export in ["big", "bigLater"] {
        let result = call(export, Value::Null).await;
        assert!(matches!(&result, Err(JsError::Thrown { name, .. }) if name == "TypeError"), "{export}: {result:?}");
    }
    let quoted = serde_json::json!("a \"quoted\" \u{2028} line\n");
    assert_eq!(call("notJson", quoted.clone()).await, Ok(serde_json::json!(["string", quoted, "u1"])));
}

/// Calls arm the watchdog without waking it; a runaway after many quick calls
/// is still stopped at its own deadline.
#[tokio::test]
async fn a_runaway_after_many_quick_calls_stops_at_its_deadline() {
    let pool = Pool::new(1, Duration::from_secs(60), Arc::new(NoHost));
    let m = module(
        r#"
        import { onHttp } from "nimbus:functions";
        export const ok = onHttp({ path: "/ok" }, () => 1);
        export const spin = onHttp({ path: "/spin" }, () => { while (true) {} });
        "#,
    );
    for _ in 0..200 {
        assert_eq!(pool.invoke(m.clone(), "ok", Value::Null, Value::Null, LIMITS).await.result, Ok(1.into()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let spun = pool.invoke(m, "spin", Value::Null, Value::Null, LIMITS).await;
    assert_eq!(spun.result, Err(JsError::Timeout));
    let took = started.elapsed();
    assert!(took >= LIMITS.timeout && took < LIMITS.timeout + Duration::from_millis(400), "took {took:?}");
}

/// Calls one after another go to the worker that was idle last: one cold
/// start, then warm calls, however many workers there are.
#[tokio::test]
async fn calls_one_after_another_stay_on_the_warm_worker() {
    let pool = Pool::new(4, Duration::from_secs(60), Arc::new(NoHost));
    let m = module("import { onHttp } from 'nimbus:functions'; export const a = onHttp({ path: '/a' }, () => 1);");
    let mut cold = 0;
    for n in 0..12 {
        let call = pool.invoke(m.clone(), "a", Value::Null, Value::Null, LIMITS).await;
        assert_eq!(call.result, Ok(1.into()));
        cold += usize::from(call.cold);
        // After its first call a worker makes a blank runtime for the next
        // module before it says it is idle: tens of milliseconds in a debug
        // build on busy cores, during which a call goes to another worker.
        let pause = if n == 0 { 1000 } else { 20 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    assert_eq!(cold, 1, "only the first call starts cold");
}

/// A burst larger than the pool waits in the shared queue and every call is answered.
#[tokio::test]
async fn a_burst_larger_than_the_pool_is_answered_whole() {
    let pool = Arc::new(Pool::new(3, Duration::from_secs(60), Arc::new(NoHost)));
    let m = module("import { onHttp } from 'nimbus:functions'; export const a = onHttp({ path: '/a' }, (n) => n * 2);");
    let calls = (0..200).map(|n| {
        let (pool, m) = (pool.clone(), m.clone());
        tokio::spawn(async move { pool.invoke(m, "a", n.into(), Value::Null, LIMITS).await.result })
    });
    let results: Vec<_> = futures_results(calls.collect()).await;
    assert_eq!(results, (0..200).map(|n| Ok(Value::from(n * 2))).collect::<Vec<_>>());
}

async fn futures_results(handles: Vec<tokio::task::JoinHandle<Result<Value, JsError>>>) -> Vec<Result<Value, JsError>> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap_or(Err(JsError::Stopped)));
    }
    out
}
