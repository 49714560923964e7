//! Realtime: live documents and queries over WebSocket and SSE
//! (docs/realtime.md). Fed by the change log (`feed`), checked per
//! subscriber with the read rules and rendered as REST renders documents
//! (`subscription`), one loop per connection (`session`), the wire protocol
//! (`protocol`) and the HTTP endpoints (`api`). `Realtime` holds what those
//! share: the documents service, the feed, the limits and their counts.

pub mod api;
pub mod feed;
pub mod follow;
pub mod protocol;
pub mod session;
pub mod subscription;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::auth::{AuthError, Authenticator, Caller};
use crate::config::RealtimeSettings;
use crate::documents::{DocumentError, Documents};
use crate::error::{ApiFailure, ErrorCode};
use crate::rules::RulesService;
use crate::store::{Store, StoreError};
use feed::Feed;

#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Limit(String),
    /// Not a failure: the subscription cannot continue from where it was and starts over.
    #[error("{0}")]
    Resync(String),
    #[error("{1}")]
    Coded(ErrorCode, String),
    #[error(transparent)]
    Documents(#[from] DocumentError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiFailure for RealtimeError {
    fn code(&self) -> ErrorCode {
        match self {
            RealtimeError::Invalid(_) => ErrorCode::InvalidArgument,
            RealtimeError::Limit(_) => ErrorCode::ResourceExhausted,
            RealtimeError::Resync(_) => ErrorCode::Unavailable,
            RealtimeError::Coded(code, _) => *code,
            RealtimeError::Documents(e) => e.code(),
            RealtimeError::Auth(e) => e.code(),
            RealtimeError::Store(e) => e.code(),
        }
    }
}

/// Realtime's metric series.
pub struct RealtimeMetrics {
    pub connections: prometheus::IntGauge,
    pub subscriptions: prometheus::IntGauge,
    pub frames: prometheus::IntCounter,
    pub resyncs: prometheus::IntCounter,
    pub lagged: prometheus::IntCounter,
}

impl RealtimeMetrics {
    pub fn register(metrics: &crate::http::metrics::Metrics) -> Result<RealtimeMetrics, prometheus::Error> {
        Ok(RealtimeMetrics {
            connections: metrics.gauge("nimbus_realtime_connections", "Open realtime connections")?,
            subscriptions: metrics.gauge("nimbus_realtime_subscriptions", "Open realtime subscriptions")?,
            frames: metrics.counter("nimbus_realtime_frames_total", "Realtime frames sent")?,
            resyncs: metrics.counter("nimbus_realtime_resyncs_total", "Subscriptions told to resync")?,
            lagged: metrics
                .counter("nimbus_realtime_lagged_total", "Connections that fell behind the feed's buffer")?,
        })
    }
}

/// Open connections per key (an IP address, a user id), bounded.
#[derive(Clone, Default)]
struct Counts(Arc<Mutex<HashMap<String, usize>>>);

impl Counts {
    fn take(&self, key: String, most: usize) -> Option<Slot> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(key.clone()).or_default();
        if *count >= most {
            return None;
        }
        *count += 1;
        Some(Slot { counts: self.clone(), key })
    }
}

/// One connection counted against a limit, for as long as it is held.
pub struct Slot {
    counts: Counts,
    key: String,
}

impl Slot {
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// What the connections share; cheap to clone.
#[derive(Clone)]
pub struct Realtime(Arc<Inner>);

struct Inner {
    documents: Documents,
    store: Store,
    rules: RulesService,
    authenticator: Authenticator,
    feed: Feed,
    settings: RealtimeSettings,
    per_ip: Counts,
    per_user: Counts,
    metrics: RealtimeMetrics,
}

/// What `Realtime::new` is built from.
pub struct RealtimeParts {
    pub documents: Documents,
    pub store: Store,
    pub rules: RulesService,
    pub authenticator: Authenticator,
    pub settings: RealtimeSettings,
    pub metrics: RealtimeMetrics,
}

impl Realtime {
    pub fn new(parts: RealtimeParts) -> Realtime {
        let feed = Feed::new(parts.store.clone(), parts.settings.buffer);
        Realtime(Arc::new(Inner {
            documents: parts.documents,
            store: parts.store,
            rules: parts.rules,
            authenticator: parts.authenticator,
            feed,
            settings: parts.settings,
            per_ip: Counts::default(),
            per_user: Counts::default(),
            metrics: parts.metrics,
        }))
    }

    /// Starts the feed (tailing, pruning, announcing commits).
    pub fn spawn(&self) {
        self.0.feed.spawn(self.0.settings.poll, self.0.settings.retention);
        let store = self.store().clone();
        crate::supervise::spawn_supervised("session announcements", move || {
            let store = store.clone();
            async move {
                while let Err(e) = store.hear_session_changes().await {
                    tracing::warn!("hearing the other instances' session changes failed (will retry): {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        });
    }

    pub fn feed(&self) -> &Feed {
        &self.0.feed
    }

    pub fn documents(&self) -> &Documents {
        &self.0.documents
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn settings(&self) -> &RealtimeSettings {
        &self.0.settings
    }

    pub fn metrics(&self) -> &RealtimeMetrics {
        &self.0.metrics
    }

    pub fn rules_replacements(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.rules.replacements()
    }

    pub async fn identify(&self, token: &str) -> Result<Caller, RealtimeError> {
        Ok(self.0.authenticator.identify(token).await?)
    }

    /// Counts a new connection from `ip` (`Limit` when that address has too many).
    pub fn ip_slot(&self, ip: IpAddr) -> Result<Slot, RealtimeError> {
        let most = self.0.settings.max_connections_per_ip;
        self.0
            .per_ip
            .take(ip.to_string(), most)
            .ok_or_else(|| RealtimeError::Limit(format!("at most {most} realtime connections from one address")))
    }

    /// Counts a connection of user `uid` (`Limit` when the user has too many).
    pub fn user_slot(&self, uid: &str) -> Result<Slot, RealtimeError> {
        let most = self.0.settings.max_connections_per_user;
        self.0
            .per_user
            .take(uid.to_owned(), most)
            .ok_or_else(|| RealtimeError::Limit(format!("at most {most} realtime connections per user")))
    }
}
