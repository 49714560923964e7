//! GraphQL over the documents layer (async-graphql's dynamic schema): the
//! generic schema (`schema`), its resolvers, and `/v1/graphql` (`api`). Every
//! resolver reads and writes through `Documents` with the caller of the
//! request, so rules, validation, preconditions, the change log and triggers
//! apply exactly as for REST; GraphQL adds no path of its own to the store.
//! A failure becomes a GraphQL error with the REST error code in
//! `extensions.code` (internal ones only with the id they were logged with).
//! Subscriptions (`live`) are realtime subscriptions, over GraphQL's two
//! WebSocket protocols.

pub mod api;
mod direct;
mod live;
mod loader;
mod schema;
mod typed;

use std::sync::Arc;

use async_graphql::dynamic::Schema;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextResolve, ResolveInfo,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{ErrorExtensions, PathSegment, ServerResult};

use crate::auth::Caller;
use crate::config::GraphqlSettings;
use crate::documents::Documents;
use crate::error::ErrorCode;
use crate::http::error::ApiError;
use crate::http::metrics::Metrics;
use crate::realtime::Realtime;
use crate::swap::Swap;

/// The GraphQL service: the schema in force, built over the documents layer.
/// A new schema (the collections' JSON Schemas changed) is swapped in whole;
/// requests already running finish on the one they started with.
pub struct Graphql {
    schema: Swap<Schema>,
    documents: Documents,
    realtime: Realtime,
    limits: GraphqlSettings,
    parsed: ParsedQueries,
    answered: Answered,
}

/// `nimbus_graphql_requests_total{by}`: requests answered by a plan (`direct`) or by the engine.
struct Answered {
    direct: prometheus::IntCounter,
    engine: prometheus::IntCounter,
}

/// Queries already parsed, by their text, each with its plan when it is simple
/// enough to be answered without the engine (`direct`): an app sends the
/// same few queries again and again, and parsing one costs as much as
/// resolving a short list. Validation, limits and the extensions still run
/// on every request the engine answers.
#[derive(Default)]
struct ParsedQueries(std::sync::Mutex<std::collections::HashMap<String, Arc<Prepared>>>);

struct Prepared {
    document: ExecutableDocument,
    plan: Option<direct::Plan>,
}

/// Most parsed queries kept; when full the cache starts again empty.
const PARSED_QUERIES_KEPT: usize = 256;

impl ParsedQueries {
    /// The parsed `query` and its plan from the cache, parsed (and kept) on a
    /// miss; `None` for a query that does not parse, left to the engine,
    /// which reports the error.
    fn prepare(&self, query: &str, limits: &GraphqlSettings) -> Option<Arc<Prepared>> {
        let cached = self.lock().get(query).cloned();
        let prepared = match cached {
            Some(prepared) => prepared,
            None => {
                let document = async_graphql::parser::parse_query(query).ok()?;
                let plan = direct::plan(&document, limits);
                let prepared = Arc::new(Prepared { document, plan });
                let mut kept = self.lock();
                if kept.len() >= PARSED_QUERIES_KEPT {
                    kept.clear();
                }
                kept.insert(query.to_owned(), prepared.clone());
                prepared
            }
        };
        Some(prepared)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<Prepared>>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GraphqlError {
    #[error("GraphQL: {0}")]
    Schema(String),
    #[error("GraphQL metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Whether a request may change data (`GET` serves only queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operations {
    QueriesOnly,
    Any,
}

impl Graphql {
    /// The schema over `documents`, typed for `schemas` (`nimbus.toml`'s JSON Schemas), within `limits`.
    pub fn new(
        documents: Documents,
        realtime: Realtime,
        schemas: &[(String, serde_json::Value)],
        limits: &GraphqlSettings,
        metrics: &Metrics,
    ) -> Result<Graphql, GraphqlError> {
        let schema = build_schema(&documents, &realtime, schemas, limits)?;
        let answered = metrics.counter_vec(
            "nimbus_graphql_requests_total",
            "GraphQL requests, by what answered them: a plan for a simple query (direct) or the engine",
            &["by"],
        )?;
        let answered = Answered {
            direct: answered.with_label_values(&["direct"]),
            engine: answered.with_label_values(&["engine"]),
        };
        Ok(Graphql {
            schema: Swap::new(schema),
            documents,
            realtime,
            limits: limits.clone(),
            parsed: ParsedQueries::default(),
            answered,
        })
    }

    /// Builds the schema for new collection schemas and puts it in force; on
    /// an error the schema in force stays.
    pub fn replace_schemas(&self, schemas: &[(String, serde_json::Value)]) -> Result<(), GraphqlError> {
        let schema = build_schema(&self.documents, &self.realtime, schemas, &self.limits)?;
        self.schema.store(schema);
        Ok(())
    }

    /// The schema in force.
    fn schema(&self) -> Schema {
        self.schema.load().as_ref().clone()
    }

    /// The schema in SDL, for client code generators (`nimbus graphql schema`).
    pub fn sdl(schemas: &[(String, serde_json::Value)]) -> Result<String, GraphqlError> {
        let builder = schema::build(schemas).map_err(GraphqlError::Schema)?;
        Ok(builder.finish().map_err(|e| GraphqlError::Schema(e.0))?.sdl())
    }

    /// Runs one request as `caller`: the response's JSON text.
    pub async fn respond(
        &self,
        caller: Caller,
        mut request: async_graphql::Request,
        allowed: Operations,
    ) -> serde_json::Result<String> {
        let prepared = self.parsed.prepare(&request.query, &self.limits);
        if let Some(plan) = prepared.as_ref().and_then(|p| p.plan.as_ref()) {
            if let Some(answer) = direct::answer(plan, &request, &self.documents, &caller).await {
                self.answered.direct.inc();
                return Ok(answer);
            }
        }
        if let Some(prepared) = prepared {
            request.set_parsed_query(prepared.document.clone());
        }
        self.answered.engine.inc();
        serde_json::to_string(&self.execute(caller, request, allowed).await)
    }

    /// Runs one request (its parsed query set) through the engine.
    async fn execute(
        &self,
        caller: Caller,
        mut request: async_graphql::Request,
        allowed: Operations,
    ) -> async_graphql::Response {
        if allowed == Operations::QueriesOnly && changes_data(&mut request) {
            let error = failure(ErrorCode::MethodNotAllowed, "mutations need POST");
            return async_graphql::Response::from_errors(vec![error.into_server_error(Default::default())]);
        }
        let pages = loader::for_request(self.documents.clone(), caller.clone());
        self.schema().execute(request.data(caller).data(pages)).await
    }
}

fn build_schema(
    documents: &Documents,
    realtime: &Realtime,
    schemas: &[(String, serde_json::Value)],
    limits: &GraphqlSettings,
) -> Result<Schema, GraphqlError> {
    let builder = schema::build(schemas)
        .map_err(GraphqlError::Schema)?
        .data(documents.clone())
        .data(realtime.clone())
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .extension(ErrorPaths)
        .extension(AliasLimit(limits.max_aliases));
    let builder = if limits.introspection { builder } else { builder.disable_introspection() };
    builder.finish().map_err(|e| GraphqlError::Schema(e.0))
}

/// Whether the operation the request would run is a mutation or subscription.
fn changes_data(request: &mut async_graphql::Request) -> bool {
    let name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else { return false };
    document
        .operations
        .iter()
        .filter(|(op_name, _)| name.is_none() || op_name.map(|n| n.as_str()) == name.as_deref())
        .any(|(_, op)| op.node.ty != OperationType::Query)
}

/// Puts the field's path on an error its resolver returned (async-graphql's
/// dynamic schema leaves it empty), so a client can tell which field failed.
struct ErrorPaths;

impl ExtensionFactory for ErrorPaths {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorPaths)
    }
}

#[async_trait::async_trait]
impl Extension for ErrorPaths {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<async_graphql::Value>> {
        let path = *info.path_node;
        next.run(ctx, info).await.map_err(|mut error| {
            if error.path.is_empty() {
                error.path = path
                    .to_string_vec()
                    .into_iter()
                    .map(|s| s.parse().map_or(PathSegment::Field(s), PathSegment::Index))
                    .collect();
            }
            error
        })
    }
}

/// Refuses a request with more than this many aliased fields (aliases let one
/// request repeat an expensive field many times).
struct AliasLimit(usize);

impl ExtensionFactory for AliasLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AliasLimit(self.0))
    }
}

#[async_trait::async_trait]
impl Extension for AliasLimit {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &async_graphql::Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let sets = document
            .operations
            .iter()
            .map(|(_, op)| &op.node.selection_set.node)
            .chain(document.fragments.values().map(|f| &f.node.selection_set.node));
        let aliases: usize = sets.map(aliases_in).sum();
        if aliases > self.0 {
            let message = format!("the request has {aliases} aliased fields; at most {} are allowed", self.0);
            return Err(failure(ErrorCode::InvalidArgument, message).into_server_error(Default::default()));
        }
        Ok(document)
    }
}

fn aliases_in(set: &SelectionSet) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => {
                usize::from(field.node.alias.is_some()) + aliases_in(&field.node.selection_set.node)
            }
            Selection::InlineFragment(fragment) => aliases_in(&fragment.node.selection_set.node),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

/// A GraphQL error with the stable code in `extensions.code`.
fn failure(code: ErrorCode, message: impl Into<String>) -> async_graphql::Error {
    let code = code.as_str();
    async_graphql::Error::new(message).extend_with(|_, extensions| extensions.set("code", code))
}

/// Any failure the layers below answer, as the client may see it (the REST rendering's rules).
fn public(error: impl Into<ApiError>) -> async_graphql::Error {
    let error = error.into();
    failure(error.code, error.message)
}
