//! Deployments: what the admin API put in force for every instance (the
//! security rules), one row per kind — its content, a version that grows by
//! one with each deployment (what instances poll), and its time.

use super::{Store, StoreError};

/// The newest deployment of a kind.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Deployment {
    pub version: i64,
    pub content: String,
    /// Microseconds since the epoch.
    pub updated_at: i64,
}

impl Store {
    /// Stores `content` as the newest deployment of `kind`; answers its version.
    pub async fn deploy(&self, kind: &str, content: &str, now: i64) -> Result<i64, StoreError> {
        let sql = "INSERT INTO deployments (kind, version, content, updated_at) VALUES ($1, 1, $2, $3) \
                   ON CONFLICT (kind) DO UPDATE SET version = deployments.version + 1, \
                   content = excluded.content, updated_at = excluded.updated_at RETURNING version";
        Ok(on_writer!(self, |pool| sqlx::query_scalar(sql).bind(kind).bind(content).bind(now).fetch_one(pool).await?))
    }

    /// The newest deployment of `kind`, if there was one.
    pub async fn deployment(&self, kind: &str) -> Result<Option<Deployment>, StoreError> {
        let sql = "SELECT version, content, updated_at FROM deployments WHERE kind = $1";
        Ok(on_reader!(self, |pool| sqlx::query_as(sql).bind(kind).fetch_optional(pool).await?))
    }

    /// Only the version of the newest deployment of `kind` (what a poll reads).
    pub async fn deployment_version(&self, kind: &str) -> Result<Option<i64>, StoreError> {
        let sql = "SELECT version FROM deployments WHERE kind = $1";
        Ok(on_reader!(self, |pool| sqlx::query_scalar(sql).bind(kind).fetch_optional(pool).await?))
    }
}
