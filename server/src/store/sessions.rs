//! Session changes, heard by every instance: when sessions end (sign-out, a
//! revoked or reused refresh token, a disabled user, a password change) the
//! store says so at once to this process and, on PostgreSQL, to the other
//! instances (`NOTIFY`), so their realtime connections check that user's
//! session now instead of at their next periodic check.

use std::sync::Arc;

use super::{Pools, Store, StoreError};

const CHANNEL: &str = "nimbus_sessions";

/// What ended: every session of a user, or one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionChange {
    User(String),
    Session(String),
}

impl SessionChange {
    fn payload(&self) -> String {
        match self {
            SessionChange::User(id) => format!("u:{id}"),
            SessionChange::Session(id) => format!("s:{id}"),
        }
    }

    fn parse(payload: &str) -> Option<SessionChange> {
        match payload.split_once(':')? {
            ("u", id) => Some(SessionChange::User(id.to_owned())),
            ("s", id) => Some(SessionChange::Session(id.to_owned())),
            _ => None,
        }
    }

    /// Whether a connection of `user` on `session` is concerned.
    pub fn concerns(&self, user: &str, session: &str) -> bool {
        match self {
            SessionChange::User(id) => id == user,
            SessionChange::Session(id) => id == session,
        }
    }
}

impl Store {
    /// Session changes from now on (this process's and, on PostgreSQL, the
    /// other instances' once `hear_session_changes` runs).
    pub fn session_changes(&self) -> tokio::sync::broadcast::Receiver<Arc<SessionChange>> {
        self.sessions.subscribe()
    }

    /// Says that sessions ended (a failure to tell the other instances is
    /// logged: their periodic checks still find it).
    pub(super) async fn announce_session_change(&self, change: SessionChange) {
        let payload = change.payload();
        let _ = self.sessions.send(Arc::new(change));
        if let Pools::Postgres(pool) = &*self.pools {
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(pool).await {
                tracing::warn!("telling the other instances that sessions ended failed: {e}");
            }
        }
    }

    /// Passes the other instances' session changes on to this process's
    /// listeners until the connection fails (PostgreSQL; returns at once on SQLite).
    pub async fn hear_session_changes(&self) -> Result<(), StoreError> {
        let Pools::Postgres(pool) = &*self.pools else { return Ok(()) };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        loop {
            let notification = listener.recv().await?;
            if let Some(change) = SessionChange::parse(notification.payload()) {
                let _ = self.sessions.send(Arc::new(change));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SessionChange;

    #[test]
    fn payloads_round_trip() {
        for change in [SessionChange::User("u1".into()), SessionChange::Session("s:x".into())] {
            assert_eq!(SessionChange::parse(&change.payload()), Some(change));
        }
        assert_eq!(SessionChange::parse("x:1"), None);
    }
}
