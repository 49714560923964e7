//! GraphQL subscriptions: `documentChanges(path)` and `queryChanges(…)`, each
//! one realtime subscription followed in a session of its own
//! (`realtime::follow`), so what it delivers — the first snapshot, added /
//! modified / removed as the subscriber's rules decide them, limit refills,
//! `resync` when continuity cannot be kept — is exactly what `/v1/realtime`
//! delivers. Each event is the realtime frame, read through the types below.

use std::net::IpAddr;

use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, Subscription, SubscriptionField,
    SubscriptionFieldFuture, TypeRef,
};
use async_graphql::Error;
use futures_util::Stream;
use serde_json::Value;

use super::schema::{graphql_value, json_field, query_body, root_scope};
use super::{failure, public};
use crate::auth::Caller;
use crate::error::ErrorCode;
use crate::realtime::follow::{follow, Said};
use crate::realtime::protocol::{Subscribe, SubscriptionId};
use crate::realtime::Realtime;
use crate::store::query::FieldPath;

/// The address a GraphQL WebSocket connection came from (its subscriptions count against it).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

pub fn subscription_type() -> Subscription {
    let query_changes = SubscriptionField::new("queryChanges", TypeRef::named_nn("ChangeEvent"), |ctx| {
        SubscriptionFieldFuture::new(async move {
            let body = query_body(root_scope(&ctx.args)?, &ctx.args, false)?;
            events(&ctx, Subscribe { id: id(), query: Some(body), doc: None, resume_from: None })
        })
    });
    let query_changes = ["collection", "collectionGroup"]
        .into_iter()
        .fold(query_changes, |f, name| f.argument(InputValue::new(name, TypeRef::named(TypeRef::STRING))))
        .argument(InputValue::new("where", TypeRef::named_nn_list("Filter")))
        .argument(InputValue::new("orderBy", TypeRef::named_nn_list("Order")))
        .argument(InputValue::new("limit", TypeRef::named(TypeRef::INT)));
    Subscription::new("Subscription")
        .field(
            SubscriptionField::new("documentChanges", TypeRef::named_nn("ChangeEvent"), |ctx| {
                SubscriptionFieldFuture::new(async move {
                    let path = ctx.args.try_get("path")?.string()?.to_owned();
                    events(&ctx, Subscribe { id: id(), query: None, doc: Some(path), resume_from: None })
                })
            })
            .argument(InputValue::new("path", TypeRef::named_nn(TypeRef::STRING))),
        )
        .field(query_changes)
}

fn id() -> SubscriptionId {
    SubscriptionId::Text("graphql".into())
}

/// The subscription's frames as GraphQL events; an `error` frame, or the end of
/// the session, ends the stream with that error.
fn events<'a>(
    ctx: &ResolverContext<'a>,
    subscribe: Subscribe,
) -> Result<impl Stream<Item = Result<FieldValue<'a>, Error>> + Send + 'a, Error> {
    let realtime = ctx.data::<Realtime>()?.clone();
    let caller = ctx.data::<Caller>()?.clone();
    let ClientAddress(ip) = *ctx.data::<ClientAddress>()?;
    let slot = realtime.ip_slot(ip).map_err(public)?;
    let said = follow(realtime, caller, slot, subscribe);
    Ok(futures_util::stream::unfold(Some(said), |said| async move {
        let mut said = said?;
        loop {
            match said.recv().await? {
                Said::Idle => continue,
                Said::Closed(reason) => return Some((Err(failure(ErrorCode::Unauthenticated, reason)), None)),
                Said::Frame(frame) => {
                    let Ok(value) = serde_json::from_str::<Value>(&frame.json) else { continue };
                    if value["type"] == "error" {
                        let code =
                            value["error"]["code"].as_str().and_then(ErrorCode::parse).unwrap_or(ErrorCode::Internal);
                        let message =
                            value["error"]["message"].as_str().unwrap_or("the subscription failed").to_owned();
                        return Some((Err(failure(code, message)), None));
                    }
                    return Some((Ok(FieldValue::owned_any(value)), Some(said)));
                }
            }
        }
    }))
}

/// A list of objects read from the JSON object that is its parent.
fn json_list(name: &str, item: &str, key: &'static str) -> Field {
    Field::new(name, TypeRef::named_nn_list(item), move |ctx| {
        FieldFuture::new(async move {
            let parent = ctx.parent_value.try_downcast_ref::<Value>()?;
            Ok(parent
                .get(key)
                .and_then(Value::as_array)
                .map(|items| FieldValue::list(items.iter().map(|v| FieldValue::borrowed_any(v)))))
        })
    })
}

/// The types of the events: `ChangeEvent` (a realtime frame), `LiveChange`, `LiveDocument`.
pub fn event_types() -> [Object; 3] {
    let event = Object::new("ChangeEvent")
        .description(
            "`snapshot` (documents), `change` (changes), `resync` (reason; a snapshot follows), or a `notice`.",
        )
        .field(json_field("type", TypeRef::named_nn(TypeRef::STRING), "type"))
        .field(json_field("position", TypeRef::named(TypeRef::INT), "position"))
        .field(json_list("documents", "LiveDocument", "documents"))
        .field(json_list("changes", "LiveChange", "changes"))
        .field(json_field("reason", TypeRef::named(TypeRef::STRING), "reason"));
    let change = Object::new("LiveChange")
        .description("`added`, `modified` or `removed` (a removed document has only `id` and `path`).")
        .field(json_field("type", TypeRef::named_nn(TypeRef::STRING), "type"))
        .field(Field::new("document", TypeRef::named_nn("LiveDocument"), |ctx| {
            FieldFuture::new(async move {
                let parent = ctx.parent_value.try_downcast_ref::<Value>()?;
                Ok(parent.get("document").map(|v| FieldValue::borrowed_any(v)))
            })
        }));
    let document = Object::new("LiveDocument")
        .field(json_field("id", TypeRef::named_nn(TypeRef::STRING), "id"))
        .field(json_field("path", TypeRef::named_nn(TypeRef::STRING), "path"))
        .field(json_field("version", TypeRef::named(TypeRef::INT), "version"))
        .field(json_field("createTime", TypeRef::named("Timestamp"), "createTime"))
        .field(json_field("updateTime", TypeRef::named("Timestamp"), "updateTime"))
        .field(json_field("data", TypeRef::named("JSON"), "data"))
        .field(
            Field::new("field", TypeRef::named("JSON"), |ctx| {
                FieldFuture::new(async move {
                    let parent = ctx.parent_value.try_downcast_ref::<Value>()?;
                    let path = ctx.args.try_get("path")?.string()?;
                    let field = FieldPath::parse(path)
                        .ok_or_else(|| failure(ErrorCode::InvalidArgument, format!("{path:?} is not a field path")))?;
                    parent.get("data").and_then(|d| field.lookup(d)).map(|v| graphql_value(v.clone())).transpose()
                })
            })
            .argument(InputValue::new("path", TypeRef::named_nn(TypeRef::STRING))),
        );
    [event, change, document]
}
