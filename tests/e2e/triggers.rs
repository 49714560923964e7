//! Durable document triggers over HTTP on both backends: events run their
//! functions, failures retry and end as dead letters that can be replayed,
//! and a crash after a committed write still runs its trigger after restart.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{Backend, Options, Server};
use crate::on_both_backends;

const CONFIRM: &str = r#"
import { onCreate, onWrite } from "nimbus:functions";

export const confirm = onCreate("orders/{orderId}", async (event, ctx) => {
  await ctx.db.doc(`confirmations/${event.params.orderId}`).set({
    eventId: event.id, type: event.type, path: event.path, item: event.after.item,
    by: event.auth ? event.auth.uid : null, time: event.time,
  });
});

export const audit = onWrite("orders/{orderId}", async (event, ctx) => {
  await ctx.db.doc(`audit/${event.id}`).set({ type: event.type, before: event.before, after: event.after });
});
"#;

const FLAKY: &str = r#"
import { onCreate } from "nimbus:functions";
export const charge = onCreate("payments/{id}", async (event, ctx) => {
  throw new Error("the payment provider is down");
});
"#;

const FIXED: &str = r#"
import { onCreate } from "nimbus:functions";
export const charge = onCreate("payments/{id}", async (event, ctx) => {
  await ctx.db.doc(`receipts/${event.params.id}`).set({ eventId: event.id });
});
"#;

const SLOW: &str = r#"
import { onCreate } from "nimbus:functions";
export const slow = onCreate("jobs/{id}", async (event, ctx) => {
  const until = Date.now() + 1500;
  while (Date.now() < until) {}
  await ctx.db.doc(`effects/${event.id}`).set({ job: event.params.id });
});
"#;

const STAMP: &str = r#"
import { onCreate } from "nimbus:functions";
export const stamp = onCreate("tasks/{id}", async (event, ctx) => {
  const until = Date.now() + 20;
  while (Date.now() < until) {}
  await ctx.db.doc(`stamps/${event.params.id}`).set({ eventId: event.id });
});
"#;

/// The document at `path`, once it exists.
async fn eventually(server: &Server, path: &str) -> Value {
    crate::harness::eventually(Duration::from_secs(10), path, || async {
        let (status, body) = server.admin("GET", path, None).await;
        (status == 200).then_some(body)
    })
    .await
}

async fn count(server: &Server, collection: &str) -> i64 {
    let (_, body) = server.admin("POST", "/v1/query", Some(json!({"collection": collection, "count": true}))).await;
    body["count"].as_i64().unwrap()
}

const SIGNUP: &str = r#"
import { beforeSignUp, afterSignUp, HttpsError } from "nimbus:functions";

export const companyOnly = beforeSignUp(async (user, ctx) => {
  if (user.anonymous) return {};
  if (!user.email.endsWith("@company.com")) throw new HttpsError("permission-denied", "company emails only");
  return { claims: { staff: true } };
});

export const welcome = afterSignUp(async (event, ctx) => {
  await ctx.db.doc(`profiles/${event.user.uid}`).set({ email: event.user.email, eventId: event.id });
});
"#;

const TICKS: &str = r#"
import { onSchedule } from "nimbus:functions";
export const everySecond = onSchedule("* * * * * *", async (event, ctx) => {
  await ctx.db.doc(`ticks/${event.id}`).set({ at: event.scheduledTime });
});
export const broken = onSchedule("whenever", async () => {});
"#;

const NIGHTLY: &str = r#"
import { onSchedule } from "nimbus:functions";
export const nightly = onSchedule("0 3 * * *", async (event, ctx) => {
  await ctx.db.doc(`nightly/${event.id}`).set({ at: event.scheduledTime });
});
"#;

on_both_backends!(
    schedules_run_each_tick_once,
    a_nightly_schedule_runs_when_the_clock_passes_its_time,
    auth_triggers_refuse_sign_ups_and_welcome_new_users,
    document_triggers_run_with_their_event,
    failing_triggers_retry_then_dead_letter_and_replay,
    a_crash_after_commit_still_runs_the_trigger,
    jobs_beyond_the_free_slots_wait_for_a_claim,
);

async fn document_triggers_run_with_their_event(backend: Backend) {
    let server = Server::start_with(backend, Options::default().file("functions/orders.js", CONFIRM)).await;
    let (_, session) = server
        .call("POST", "/v1/auth/signup", None, Some(json!({"email": "t@example.com", "password": "correct horse"})))
        .await;
    server.admin("PUT", "/v1/docs/orders/o1", Some(json!({"item": "cat food"}))).await;
    let confirmation = eventually(&server, "/v1/docs/confirmations/o1").await;
    let data = &confirmation["data"];
    assert_eq!(
        (data["type"].as_str(), data["path"].as_str(), data["item"].as_str()),
        (Some("create"), Some("orders/o1"), Some("cat food"))
    );
    assert_eq!(data["by"], Value::Null, "written with the service key");
    assert!(data["eventId"].as_str().unwrap().len() >= 32);
    server.admin("PATCH", "/v1/docs/orders/o1", Some(json!({"item": "dog food"}))).await;
    server.admin("DELETE", "/v1/docs/orders/o1", None).await;
    crate::harness::eventually(Duration::from_secs(10), "three audit entries", || async {
        (count(&server, "audit").await == 3).then_some(())
    })
    .await;
    let (_, audit) = server.admin("POST", "/v1/query", Some(json!({"collection": "audit"}))).await;
    let mut kinds: Vec<String> =
        audit["documents"].as_array().unwrap().iter().map(|d| d["data"]["type"].as_str().unwrap().to_owned()).collect();
    kinds.sort();
    assert_eq!(kinds, ["create", "delete", "update"], "onWrite sees every change");
    assert_eq!(count(&server, "confirmations").await, 1, "onCreate ran once");
    let _ = session;
}

async fn failing_triggers_retry_then_dead_letter_and_replay(backend: Backend) {
    let options = Options::default()
        .file("functions/payments.js", FLAKY)
        .env("NIMBUS_FUNCTIONS_RETRY_ATTEMPTS", "3")
        .env("NIMBUS_FUNCTIONS_RETRY_BACKOFF_MS", "20");
    let server = Server::start_with(backend, options).await;
    server.admin("PUT", "/v1/docs/payments/p1", Some(json!({"amount": 5}))).await;
    let dead = crate::harness::eventually(Duration::from_secs(10), "a dead letter", || async {
        let dead = server.admin("GET", "/v1/admin/functions/dead-letters", None).await.1;
        dead["deadLetters"].as_array().is_some_and(|d| !d.is_empty()).then_some(dead)
    })
    .await;
    let letter = &dead["deadLetters"][0];
    assert_eq!(
        (letter["function"].as_str(), letter["attempts"].as_i64()),
        (Some("payments.js:charge"), Some(3)),
        "{dead}"
    );
    assert!(letter["lastError"].as_str().unwrap().contains("the payment provider is down"));
    assert_eq!(letter["event"]["params"]["id"], "p1");
    let id = letter["id"].as_str().unwrap().to_owned();

    let version_of_payments = || async {
        let (_, listing) = server.admin("GET", "/v1/admin/functions", None).await;
        let modules = listing["modules"].as_array().cloned().unwrap_or_default();
        modules.iter().find(|m| m["module"] == "payments.js").map(|m| m["version"].clone())
    };
    let failing = version_of_payments().await;
    std::fs::write(server.dir.path().join("functions/payments.js"), FIXED).unwrap();
    crate::harness::eventually(Duration::from_secs(10), "the fixed module loaded", || async {
        version_of_payments().await.filter(|v| Some(v) != failing.as_ref())
    })
    .await;
    assert_eq!(server.admin("POST", &format!("/v1/admin/functions/dead-letters/{id}/replay"), None).await.0, 204);
    let receipt = eventually(&server, "/v1/docs/receipts/p1").await;
    assert_eq!(receipt["data"]["eventId"], id.as_str(), "the replay keeps the event id");
    let (_, dead) = server.admin("GET", "/v1/admin/functions/dead-letters", None).await;
    assert_eq!(dead["deadLetters"], json!([]));
    assert_eq!(server.admin("POST", &format!("/v1/admin/functions/dead-letters/{id}/replay"), None).await.0, 404);
    let metrics = server.metrics().await;
    assert!(metrics.contains("nimbus_job_retries_total 2"), "{metrics}");
    assert!(metrics.contains("nimbus_job_dead_letters_total 1"), "{metrics}");
    assert!(metrics.contains("nimbus_jobs_pending"), "{metrics}");
}

async fn a_crash_after_commit_still_runs_the_trigger(backend: Backend) {
    let options =
        Options::default().file("functions/slow.js", SLOW).env("NIMBUS_FUNCTIONS_TIMEOUT_MS", "2500").movable_clock();
    let mut server = Server::start_with(backend, options).await;
    let (status, _) = server.admin("PUT", "/v1/docs/jobs/j1", Some(json!({"n": 1}))).await;
    assert_eq!(status, 201);
    crate::harness::eventually(Duration::from_secs(10), "the trigger's job is claimed", || async {
        let rows = server.sql_rows("SELECT CAST(COUNT(*) AS TEXT) FROM jobs WHERE locked_until > 0").await;
        (rows[0][0].as_deref() == Some("1")).then_some(())
    })
    .await;
    server.crash_and_restart().await;
    eventually(&server, "/v1/docs/jobs/j1").await;
    // The dead instance's lease (the timeout and two seconds) runs out; then it is picked up.
    server.advance_clock(Duration::from_millis(4600)).await;
    crate::harness::eventually(Duration::from_secs(15), "the trigger's effect", || async {
        (count(&server, "effects").await > 0).then_some(())
    })
    .await;
    assert_eq!(count(&server, "effects").await, 1, "the trigger ran after the restart, once per event id");
}

/// A commit hands its jobs straight to the worker while it has free slots
/// (one JavaScript worker: 16 of them); the rest wait in the table for a
/// claim. Every job runs, once.
async fn jobs_beyond_the_free_slots_wait_for_a_claim(backend: Backend) {
    let options = Options::default().file("functions/stamp.js", STAMP).env("NIMBUS_FUNCTIONS_WORKERS", "1");
    let server = Server::start_with(backend, options).await;
    assert_eq!(server.admin("PUT", "/v1/docs/tasks/first", Some(json!({}))).await.0, 201);
    eventually(&server, "/v1/docs/stamps/first").await;
    let writes: Vec<Value> = (0..40).map(|i| json!({"op": "set", "path": format!("tasks/t{i}"), "data": {}})).collect();
    let (status, body) = server.admin("POST", "/v1/batch", Some(json!({ "writes": writes }))).await;
    assert_eq!(status, 200, "{body}");
    crate::harness::eventually(Duration::from_secs(20), "every task's stamp", || async {
        (count(&server, "stamps").await == 41).then_some(())
    })
    .await;
    let metrics = server.metrics().await;
    let started = |how: &str| {
        let line = format!("nimbus_jobs_started_total{{how=\"{how}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(line.as_str())).and_then(|n| n.parse::<i64>().ok()).unwrap_or(0)
    };
    let (handed, claimed) = (started("commit"), started("claim"));
    assert_eq!(handed + claimed, 41, "each job started once: {metrics}");
    assert!(handed >= 1 && claimed >= 24, "handed over {handed}, claimed {claimed}");
    crate::harness::eventually(Duration::from_secs(5), "finished jobs deleted", || async {
        let rows = server.sql_rows("SELECT CAST(COUNT(*) AS TEXT) FROM jobs").await;
        (rows[0][0].as_deref() == Some("0")).then_some(())
    })
    .await;
}

async fn auth_triggers_refuse_sign_ups_and_welcome_new_users(backend: Backend) {
    let server = Server::start_with(backend, Options::default().file("functions/signup.js", SIGNUP)).await;
    let (status, body) = server
        .call("POST", "/v1/auth/signup", None, Some(json!({"email": "x@gmail.com", "password": "correct horse"})))
        .await;
    assert_eq!(
        (status, body),
        (403, json!({"error": {"code": "permission-denied", "message": "company emails only"}}))
    );
    assert_eq!(server.admin("GET", "/v1/admin/users", None).await.1["users"], json!([]), "no account was created");
    let (status, session) = server
        .call("POST", "/v1/auth/signup", None, Some(json!({"email": "ann@company.com", "password": "correct horse"})))
        .await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["user"]["claims"], json!({"staff": true}));
    let token = session["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["staff"], true, "the claims are in the first token");
    let uid = session["user"]["id"].as_str().unwrap();
    let profile = eventually(&server, &format!("/v1/docs/profiles/{uid}")).await;
    assert_eq!(profile["data"]["email"], "ann@company.com");
    let (status, _) = server.call("POST", "/v1/auth/token", None, Some(json!({"grant_type": "anonymous"}))).await;
    assert_eq!(status, 200, "anonymous users pass the hook");
}

async fn schedules_run_each_tick_once(backend: Backend) {
    let server = Server::start_with(backend, Options::default().file("functions/ticks.js", TICKS)).await;
    let ticks = crate::harness::eventually(Duration::from_secs(10), "two ticks", || async {
        let (_, ticks) = server.admin("POST", "/v1/query", Some(json!({"collection": "ticks", "limit": 100}))).await;
        (ticks["documents"].as_array().map_or(0, Vec::len) >= 2).then_some(ticks)
    })
    .await;
    let mut times: Vec<String> =
        ticks["documents"].as_array().unwrap().iter().map(|d| d["data"]["at"].as_str().unwrap().to_owned()).collect();
    assert!(times.len() >= 2, "a tick every second: {times:?}");
    times.sort();
    let unique = times.len();
    times.dedup();
    assert_eq!(times.len(), unique, "each tick ran once");
    let (_, listing) = server.admin("GET", "/v1/admin/functions", None).await;
    assert!(listing["errors"]["ticks.js"].as_str().unwrap().contains("invalid cron expression"), "{listing}");
}

async fn a_nightly_schedule_runs_when_the_clock_passes_its_time(backend: Backend) {
    let options = Options::default().file("functions/nightly.js", NIGHTLY).movable_clock();
    let server = Server::start_with(backend, options).await;
    let nightly_times = || async {
        let (_, runs) = server.admin("POST", "/v1/query", Some(json!({"collection": "nightly"}))).await;
        let runs = runs["documents"].as_array().cloned().unwrap_or_default();
        runs.iter().map(|d| d["data"]["at"].as_str().unwrap_or("?").to_owned()).collect::<Vec<_>>()
    };
    server.advance_clock(Duration::from_secs(24 * 3600)).await;
    let first = crate::harness::eventually(Duration::from_secs(10), "the night's run", || async {
        let times = nightly_times().await;
        (!times.is_empty()).then_some(times)
    })
    .await;
    assert!(first[0].ends_with("T03:00:00.000000Z"), "{first:?}");
    // Three nights pass in one step: only the latest of the missed ticks runs.
    server.advance_clock(Duration::from_secs(3 * 24 * 3600)).await;
    crate::harness::eventually(Duration::from_secs(10), "the latest night's run", || async {
        (nightly_times().await.len() == 2).then_some(())
    })
    .await;
    server.jobs_settled().await;
    assert_eq!(nightly_times().await.len(), 2, "one run per step of the clock, not one per missed night");
}
