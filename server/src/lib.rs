//! Nimbus: a self-hosted backend-as-a-service in one binary.
//!
//! Data flows one way: request → `http` (gateway) → feature module → `store`.
//! See `docs/ARCHITECTURE.md` for the map.

/// Wires the parts together; `build` is shared by `main` and tests.
pub mod app;
/// Who is calling: service key (and, later, users and tokens).
pub mod auth;
/// Command-line interface: `serve`, `migrate`, `version`.
pub mod cli;
/// Wall-clock time and its wire format.
pub mod clock;
/// The typed configuration: file → env → flags, validated at start.
pub mod config;
/// JSON documents in collections: access, validation, writes, queries.
pub mod documents;
/// Stable error codes and the code → HTTP status table.
pub mod error;
/// JavaScript functions: loading, the registry of triggers, the HTTP gateway.
pub mod functions;
/// GraphQL over the documents layer: the schema, its resolvers, `/v1/graphql`.
pub mod graphql;
/// The gateway: router, layers, error rendering, extractors, health, metrics.
pub mod http;
/// Random ids and secret tokens, and how tokens are hashed for storage.
pub mod ids;
/// Moving a Firebase project in (users, documents) and documents out.
pub mod import;
/// Live documents and queries over WebSocket and SSE, fed by the change log.
pub mod realtime;
/// Security rules: loading the rules folder and the rules in force.
pub mod rules;
/// The only module that speaks SQL: SQLite and PostgreSQL backends.
pub mod store;
/// Background loops restarted (and logged) when they panic.
pub mod supervise;
/// A value read often and replaced whole (rules, registry, trigger tables).
pub mod swap;
/// Log setup.
pub mod telemetry;
/// Durable triggers: the outbox of trigger jobs and the worker that runs them.
pub mod triggers;
/// Noticing changes in watched folders (rules, functions).
pub mod watch;

#[cfg(test)]
mod tidy;
