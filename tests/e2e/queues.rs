//! Queues over HTTP on both backends: publishing through the API (service key
//! or a rule on `/topics/{topic}`) and from functions, at-least-once delivery
//! with a stable message id that makes a redelivered message harmless.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, Options, Server};
use crate::on_both_backends;

const CONSUMER: &str = r#"
import { onMessage } from "nimbus:functions";

// Charges once per message id; fails once after charging (while the flag
// document exists) to force a redelivery.
export const consume = onMessage("orders", async (message, ctx) => {
  try {
    await ctx.db.batch()
      .create(`seen/${message.id}`, { topic: message.topic })
      .update("totals/all", { sum: { $increment: message.data.amount } })
      .commit();
  } catch (error) {
    if (error.code !== "already-exists") throw error;
  }
  const flag = await ctx.db.doc("flags/fail-once").get();
  if (flag) {
    await ctx.db.doc("flags/fail-once").delete();
    throw new Error("crashed after charging");
  }
});
"#;

const RULES: &str = "service cloud.firestore { match /topics/{topic} { allow create: if topic == 'orders' && request.auth != null && request.resource.data.amount is int; } }";

on_both_backends!(messages_are_delivered_at_least_once_and_processed_once);

async fn messages_are_delivered_at_least_once_and_processed_once(backend: Backend) {
    let options = Options::default()
        .file("functions/consumer.js", CONSUMER)
        .file("rules/topics.rules", RULES)
        .env("NIMBUS_FUNCTIONS_RETRY_BACKOFF_MS", "20");
    let server = Server::start_with(backend, options).await;
    server.admin("PUT", "/v1/docs/totals/all", Some(json!({"sum": 0}))).await;
    server.admin("PUT", "/v1/docs/flags/fail-once", Some(json!({}))).await;
    let (status, body) = server.admin("POST", "/v1/messages/orders", Some(json!({"amount": 5}))).await;
    assert_eq!(status, 202, "{body}");
    assert!(body["id"].is_string());
    assert_eq!(server.call("POST", "/v1/messages/orders", None, Some(json!({"amount": 1}))).await.0, 403, "signed out");
    let (_, session) = server
        .call("POST", "/v1/auth/signup", None, Some(json!({"email": "q@example.com", "password": "correct horse"})))
        .await;
    let token = session["access_token"].as_str().unwrap();
    assert_eq!(server.call("POST", "/v1/messages/orders", Some(token), Some(json!({"amount": 7}))).await.0, 202);
    assert_eq!(server.call("POST", "/v1/messages/orders", Some(token), Some(json!({"amount": "x"}))).await.0, 403);
    assert_eq!(server.call("POST", "/v1/messages/other", Some(token), Some(json!({"amount": 1}))).await.0, 403);
    assert_eq!(server.admin("POST", "/v1/messages/bad%20topic", Some(json!({}))).await.0, 400);
    crate::harness::eventually(Duration::from_secs(10), "both messages counted, the failing one retried", || async {
        let total = server.admin("GET", "/v1/docs/totals/all", None).await.1;
        let flag_gone = server.admin("GET", "/v1/docs/flags/fail-once", None).await.0 == 404;
        (total["data"]["sum"] == 12 && flag_gone).then_some(())
    })
    .await;
    // Once no job is left, no second delivery can still land.
    server.jobs_settled().await;
    let total = server.admin("GET", "/v1/docs/totals/all", None).await.1;
    assert_eq!(total["data"]["sum"], 12, "each message counted once, although one was delivered twice");
    let (_, seen) = server.admin("POST", "/v1/query", Some(json!({"collection": "seen", "count": true}))).await;
    assert_eq!(seen["count"], 2);
    let (_, dead) = server.admin("GET", "/v1/admin/functions/dead-letters", None).await;
    assert_eq!(dead["deadLetters"], json!([]));
}
