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
mod live;
mod schema;
mod typed;

use std::sync::Arc;

use async_graphql::dynamic::Schema;
use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo};
use async_graphql::parser::types::OperationType;
use async_graphql::{ErrorExtensions, PathSegment, ServerResult};

use crate::auth::Caller;
use crate::documents::Documents;
use crate::error::ErrorCode;
use crate::http::error::ApiError;
use crate::realtime::Realtime;

/// Deepest selection a request may nest (a post, its comments, their replies …).
const MAX_DEPTH: usize = 12;
/// Most fields one request may select, counted by async-graphql.
const MAX_COMPLEXITY: usize = 2_000;

/// The GraphQL service: the schema, built over the documents layer.
pub struct Graphql {
    schema: Schema,
}

#[derive(Debug, thiserror::Error)]
pub enum GraphqlError {
    #[error("GraphQL: {0}")]
    Schema(String),
}

/// Whether a request may change data (`GET` serves only queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operations {
    QueriesOnly,
    Any,
}

impl Graphql {
    /// The schema over `documents`, typed for `schemas` (`nimbus.toml`'s JSON Schemas).
    pub fn new(
        documents: Documents,
        realtime: Realtime,
        schemas: &[(String, serde_json::Value)],
    ) -> Result<Graphql, GraphqlError> {
        let schema = schema::build(schemas)
            .map_err(GraphqlError::Schema)?
            .data(documents)
            .data(realtime)
            .limit_depth(MAX_DEPTH)
            .limit_complexity(MAX_COMPLEXITY)
            .extension(ErrorPaths)
            .finish()
            .map_err(|e| GraphqlError::Schema(e.0))?;
        Ok(Graphql { schema })
    }

    /// The schema in SDL, for client code generators (`nimbus graphql schema`).
    pub fn sdl(schemas: &[(String, serde_json::Value)]) -> Result<String, GraphqlError> {
        let builder = schema::build(schemas).map_err(GraphqlError::Schema)?;
        Ok(builder.finish().map_err(|e| GraphqlError::Schema(e.0))?.sdl())
    }

    /// Runs one request as `caller`.
    pub async fn execute(
        &self,
        caller: Caller,
        mut request: async_graphql::Request,
        allowed: Operations,
    ) -> async_graphql::Response {
        if allowed == Operations::QueriesOnly && changes_data(&mut request) {
            let error = failure(ErrorCode::MethodNotAllowed, "mutations need POST");
            return async_graphql::Response::from_errors(vec![error.into_server_error(Default::default())]);
        }
        self.schema.execute(request.data(caller)).await
    }
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
