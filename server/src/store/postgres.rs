//! PostgreSQL specifics: one connection pool shared by reads and writes, and
//! the PostgreSQL flavour of every dialect-specific query.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::StoreError;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

pub(super) async fn connect(url: &SecretString) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url.expose_secret())
        .map_err(|_| StoreError::Unavailable("invalid PostgreSQL URL".into()))?;
    Ok(PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?)
}
