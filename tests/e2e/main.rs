//! End-to-end tests: the real `nimbus` binary over HTTP, every data test once
//! on SQLite and once on PostgreSQL (see `harness::on_both_backends!`).

mod harness;

mod auth;
mod backup;
mod cluster;
mod copy;
mod demo;
mod deploy;
mod documents;
mod fidelity;
mod foundation;
mod functions;
mod graphql;
mod queues;
mod realtime;
mod rules;
mod sdk;
mod security;
mod triggers;
mod webapp;
