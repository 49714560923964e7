//! One realtime connection, whatever carries it (WebSocket or SSE): its
//! caller, its subscriptions, and the loop that reads the client's messages
//! and the feed's commits. Rules replaced, a refreshed token or an expired
//! one re-check every subscription; a session revoked or a user disabled ends
//! the connection; a connection that falls behind the feed is told to
//! `resync`, so nothing is lost without a word and no one else waits for it.

use std::future::Future;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::feed::CommitEvent;
use super::protocol::{self, ClientMessage, Frame, Subscribe, SubscriptionId};
use super::subscription::{caller_key, Reader, Refreshed, Subscription, Target};
use super::{Realtime, RealtimeError, Slot};
use crate::auth::Caller;
use crate::error::{ApiFailure, ErrorCode};

/// The client went away (or its transport failed).
#[derive(Debug)]
pub struct Gone;

/// What the client sent.
pub enum Incoming {
    Text(String),
    /// Any other sign of life (a pong, a ping).
    Activity,
}

/// How frames reach a client and messages come back.
pub trait Transport: Send {
    /// The next message; `None` once the client is gone.
    fn recv(&mut self) -> impl Future<Output = Option<Incoming>> + Send;
    fn send(&mut self, frame: Frame) -> impl Future<Output = Result<(), Gone>> + Send;
    /// Keeps an idle connection open (a ping, or an SSE comment).
    fn ping(&mut self) -> impl Future<Output = Result<(), Gone>> + Send;
    /// Whether the client answers pings (a silent one is then closed).
    fn answers_pings(&self) -> bool;
    /// Ends the connection, telling the client why.
    fn close(&mut self, reason: &str) -> impl Future<Output = ()> + Send;
}

/// A connection's open subscriptions, in the order they were opened.
#[derive(Default)]
struct Open(Vec<Subscription>);

impl Open {
    fn contains(&self, id: &SubscriptionId) -> bool {
        self.0.iter().any(|s| s.id == *id)
    }

    fn remove(&mut self, id: &SubscriptionId) -> Option<Subscription> {
        let index = self.0.iter().position(|s| s.id == *id)?;
        Some(self.0.remove(index))
    }

    fn push(&mut self, subscription: Subscription) {
        self.0.push(subscription);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a re-check does with a subscription whose view changed.
#[derive(Clone, Copy)]
enum Recheck {
    /// Send the changes (rules replaced, a new token).
    Report,
    /// End it with `unauthenticated` (the token expired: what it showed needed it).
    EndWhatChanged,
}

/// Pings without an answer before the connection is closed.
const UNANSWERED_PINGS: u32 = 2;

pub struct Session<T: Transport> {
    realtime: Realtime,
    caller: Caller,
    /// `subscription::caller_key` of `caller`, kept with it.
    caller_key: u64,
    transport: T,
    /// In the order they were opened (frames of one commit follow it).
    subscriptions: Open,
    /// Held while the connection lasts: the per-IP and per-user counts.
    _ip_slot: Slot,
    user_slot: Option<Slot>,
}

impl<T: Transport> Drop for Session<T> {
    fn drop(&mut self) {
        let metrics = self.realtime.metrics();
        metrics.connections.dec();
        metrics.subscriptions.sub(self.subscriptions.len() as i64);
    }
}

/// When the caller's access token expires (seconds since the epoch).
fn token_expiry(caller: &Caller) -> Option<i64> {
    match caller {
        Caller::User(claims) => Some(claims.exp),
        Caller::Service | Caller::Public => None,
    }
}

/// The instant of an expiry time (far away when there is none).
fn deadline(expiry: Option<i64>) -> Instant {
    let left = match expiry {
        Some(exp) => Duration::from_secs((exp - crate::clock::now_secs()).max(0) as u64),
        None => Duration::from_secs(365 * 24 * 3600),
    };
    Instant::now() + left
}

impl<T: Transport> Session<T> {
    pub fn new(realtime: Realtime, caller: Caller, ip_slot: Slot, transport: T) -> Session<T> {
        realtime.metrics().connections.inc();
        Session {
            realtime,
            caller_key: caller_key(&caller),
            caller,
            transport,
            subscriptions: Open::default(),
            _ip_slot: ip_slot,
            user_slot: None,
        }
    }

    /// Serves the connection until the client leaves or the connection must end.
    pub async fn run(mut self, first: Option<Subscribe>) {
        let realtime = self.realtime.clone();
        let mut events = realtime.feed().subscribe();
        let mut rules = realtime.rules_replacements();
        let mut session_changes = realtime.store().session_changes();
        let mut session_changes_open = true;
        let settings = realtime.settings().clone();
        let mut session_check =
            tokio::time::interval_at(Instant::now() + settings.session_check, settings.session_check);
        let mut ping = tokio::time::interval_at(Instant::now() + settings.ping, settings.ping);
        let mut unanswered = 0;
        if self.take_user_slot().await.is_err() {
            return;
        }
        // An event stream carries the one subscription it was opened with.
        let single = first.is_some();
        if let Some(first) = first {
            if self.subscribe(first).await.is_err() {
                return;
            }
        }
        // One timer for the token's expiry, moved when the token changes.
        let mut expiry = token_expiry(&self.caller);
        let timer = tokio::time::sleep_until(deadline(expiry));
        tokio::pin!(timer);
        loop {
            if single && self.subscriptions.is_empty() {
                self.transport.close("the subscription ended").await;
                return;
            }
            let step = tokio::select! {
                incoming = self.transport.recv() => match incoming {
                    None => return,
                    Some(incoming) => {
                        unanswered = 0;
                        match incoming {
                            Incoming::Text(text) => self.handle(&text).await,
                            Incoming::Activity => Ok(()),
                        }
                    }
                },
                event = events.recv() => match event {
                    Ok(event) => self.deliver(&event).await,
                    Err(RecvError::Lagged(missed)) => {
                        realtime.metrics().lagged.inc();
                        tracing::debug!(missed, "a realtime connection fell behind the feed");
                        self.resync_all("the connection fell behind the server's buffer").await
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = rules.changed() => self.refresh_all(Recheck::Report).await,
                _ = &mut timer, if expiry.is_some() => self.expire().await,
                _ = session_check.tick() => self.check_session().await,
                change = session_changes.recv(), if session_changes_open => match change {
                    Ok(change) if self.concerned_by(&change) => self.check_session().await,
                    Ok(_) => Ok(()),
                    Err(RecvError::Lagged(_)) => self.check_session().await,
                    Err(RecvError::Closed) => {
                        session_changes_open = false;
                        Ok(())
                    }
                },
                _ = ping.tick() => {
                    unanswered += 1;
                    if self.transport.answers_pings() && unanswered > UNANSWERED_PINGS {
                        self.transport.close("no answer to pings").await;
                        return;
                    }
                    self.transport.ping().await
                }
            };
            if step.is_err() {
                return;
            }
            if token_expiry(&self.caller) != expiry {
                expiry = token_expiry(&self.caller);
                timer.as_mut().reset(deadline(expiry));
            }
        }
    }

    fn set_caller(&mut self, caller: Caller) {
        self.caller_key = caller_key(&caller);
        self.caller = caller;
    }

    fn reader(&self) -> Reader<'_> {
        Reader { documents: self.realtime.documents(), caller: &self.caller, caller_key: self.caller_key }
    }

    async fn send(&mut self, frame: Frame) -> Result<(), Gone> {
        self.realtime.metrics().frames.inc();
        self.transport.send(frame).await
    }

    /// An error frame; internal failures are logged with an id, which is all the client sees.
    async fn send_error(&mut self, id: Option<&SubscriptionId>, error: &RealtimeError) -> Result<(), Gone> {
        let code = error.code();
        let message = match code {
            ErrorCode::Internal | ErrorCode::Unavailable => {
                let reference = uuid::Uuid::new_v4();
                tracing::error!(%reference, "realtime: {error}");
                format!("the server failed; reference {reference}")
            }
            _ => error.to_string(),
        };
        self.send(protocol::error(id, code, &message)).await
    }

    async fn handle(&mut self, text: &str) -> Result<(), Gone> {
        match ClientMessage::parse(text) {
            Err(e) => self.send_error(None, &e).await,
            Ok(ClientMessage::Ping) => self.send(protocol::pong()).await,
            Ok(ClientMessage::Unsubscribe { id }) => {
                if self.subscriptions.remove(&id).is_some() {
                    self.realtime.metrics().subscriptions.dec();
                }
                Ok(())
            }
            Ok(ClientMessage::Subscribe(request)) => self.subscribe(request).await,
            Ok(ClientMessage::Auth { token }) => self.authenticate(token).await,
        }
    }

    async fn authenticate(&mut self, token: Option<String>) -> Result<(), Gone> {
        let caller = match token {
            None => Ok(Caller::Public),
            Some(token) => self.realtime.identify(&token).await,
        };
        match caller {
            Ok(caller) => self.set_caller(caller),
            Err(e) => {
                self.set_caller(Caller::Public);
                self.send_error(None, &e).await?;
            }
        }
        self.take_user_slot().await?;
        self.refresh_all(Recheck::Report).await
    }

    /// Counts the connection against its user's limit (closing it when over).
    async fn take_user_slot(&mut self) -> Result<(), Gone> {
        let uid = match &self.caller {
            Caller::User(claims) => claims.sub.clone(),
            Caller::Service | Caller::Public => {
                self.user_slot = None;
                return Ok(());
            }
        };
        if self.user_slot.as_ref().is_some_and(|slot| slot.key() == uid) {
            return Ok(());
        }
        self.user_slot = None;
        match self.realtime.user_slot(&uid) {
            Ok(slot) => {
                self.user_slot = Some(slot);
                Ok(())
            }
            Err(e) => {
                self.send_error(None, &e).await?;
                self.transport.close("too many connections for this user").await;
                Err(Gone)
            }
        }
    }

    async fn subscribe(&mut self, request: Subscribe) -> Result<(), Gone> {
        let id = request.id.clone();
        match self.open(request).await {
            Ok(frames) => {
                for frame in frames {
                    self.send(frame).await?;
                }
                Ok(())
            }
            Err(e) => self.send_error(Some(&id), &e).await,
        }
    }

    /// Opens a subscription: its snapshot, or the changes since `resumeFrom`
    /// (or `resync` and a snapshot when those cannot be known).
    async fn open(&mut self, request: Subscribe) -> Result<Vec<Frame>, RealtimeError> {
        if self.subscriptions.contains(&request.id) {
            return Err(RealtimeError::Invalid("a subscription with this id is open; unsubscribe first".into()));
        }
        let most = self.realtime.settings().max_subscriptions;
        if self.subscriptions.len() >= most {
            return Err(RealtimeError::Limit(format!("a connection holds at most {most} subscriptions")));
        }
        let request_target = (request.query, request.doc);
        let target = Target::parse(request_target.clone())?;
        let realtime = self.realtime.clone();
        let reader = self.reader();
        let id = request.id;
        let (subscription, frames) = match request.resume_from {
            Some(from) => {
                match Subscription::resume(id.clone(), target, from, &reader, realtime.feed(), realtime.store()).await {
                    Ok(resumed) => resumed,
                    Err(RealtimeError::Resync(reason)) => {
                        // The target went into the failed resume; parse it again.
                        realtime.metrics().resyncs.inc();
                        let target = Target::parse(request_target)?;
                        let (subscription, snapshot) =
                            Subscription::start(id.clone(), target, &reader, realtime.feed()).await?;
                        (subscription, vec![protocol::resync(&id, &reason), snapshot])
                    }
                    Err(e) => return Err(e),
                }
            }
            None => {
                let (subscription, snapshot) = Subscription::start(id, target, &reader, realtime.feed()).await?;
                (subscription, vec![snapshot])
            }
        };
        self.realtime.metrics().subscriptions.inc();
        self.subscriptions.push(subscription);
        Ok(frames)
    }

    async fn deliver(&mut self, event: &CommitEvent) -> Result<(), Gone> {
        let reader = Reader { documents: self.realtime.documents(), caller: &self.caller, caller_key: self.caller_key };
        let mut frames = Vec::new();
        let mut failed = Vec::new();
        for subscription in self.subscriptions.0.iter_mut() {
            match subscription.apply(event, &reader).await {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {}
                Err(e) => failed.push((subscription.id.clone(), e)),
            }
        }
        for frame in frames {
            self.send(frame).await?;
        }
        self.drop_failed(failed, None).await
    }

    /// Sends each failed subscription its error and closes it.
    async fn drop_failed(
        &mut self,
        failed: Vec<(SubscriptionId, RealtimeError)>,
        denied_as: Option<ErrorCode>,
    ) -> Result<(), Gone> {
        for (id, error) in failed {
            if self.subscriptions.remove(&id).is_some() {
                self.realtime.metrics().subscriptions.dec();
            }
            let error = match (denied_as, error.code()) {
                (Some(code), ErrorCode::PermissionDenied) if code != ErrorCode::PermissionDenied => {
                    RealtimeError::Coded(code, format!("{error}; sign in again (an `auth` message with a fresh token)"))
                }
                _ => error,
            };
            self.send_error(Some(&id), &error).await?;
        }
        Ok(())
    }

    /// Every subscription starts over: `resync`, then a fresh snapshot.
    async fn resync_all(&mut self, reason: &str) -> Result<(), Gone> {
        let ids: Vec<SubscriptionId> = self.subscriptions.0.iter().map(|s| s.id.clone()).collect();
        for id in ids {
            self.restart(&id, reason).await?;
        }
        Ok(())
    }

    async fn restart(&mut self, id: &SubscriptionId, reason: &str) -> Result<(), Gone> {
        let Some(subscription) = self.subscriptions.remove(id) else { return Ok(()) };
        self.realtime.metrics().subscriptions.dec();
        self.realtime.metrics().resyncs.inc();
        self.send(protocol::resync(id, reason)).await?;
        let (id, target) = subscription.into_target();
        let realtime = self.realtime.clone();
        match Subscription::start(id.clone(), target, &self.reader(), realtime.feed()).await {
            Ok((subscription, snapshot)) => {
                self.realtime.metrics().subscriptions.inc();
                self.subscriptions.push(subscription);
                self.send(snapshot).await
            }
            Err(e) => self.send_error(Some(&id), &e).await,
        }
    }

    /// Re-checks every subscription against the current rules and caller.
    async fn refresh_all(&mut self, recheck: Recheck) -> Result<(), Gone> {
        let reader = Reader { documents: self.realtime.documents(), caller: &self.caller, caller_key: self.caller_key };
        let mut frames = Vec::new();
        let mut failed = Vec::new();
        let mut restart = Vec::new();
        for subscription in self.subscriptions.0.iter_mut() {
            match (subscription.refresh(&reader).await, recheck) {
                (Ok(Refreshed::Changes(None)), _) => {}
                (Ok(Refreshed::Changes(Some(frame))), Recheck::Report) => frames.push(frame),
                (Ok(Refreshed::Changes(Some(_))), Recheck::EndWhatChanged) => {
                    let needs =
                        "this subscription shows documents only a signed-in caller may read; the access token expired";
                    failed.push((
                        subscription.id.clone(),
                        RealtimeError::Coded(ErrorCode::Unauthenticated, needs.into()),
                    ));
                }
                (Ok(Refreshed::Resync), _) => restart.push(subscription.id.clone()),
                (Err(e), _) => failed.push((subscription.id.clone(), e)),
            }
        }
        for frame in frames {
            self.send(frame).await?;
        }
        for id in restart {
            self.restart(&id, "the subscription's view must be read again").await?;
        }
        let denied_as = match recheck {
            Recheck::Report => ErrorCode::PermissionDenied,
            Recheck::EndWhatChanged => ErrorCode::Unauthenticated,
        };
        self.drop_failed(failed, Some(denied_as)).await
    }

    /// The access token expired: the connection continues signed out.
    async fn expire(&mut self) -> Result<(), Gone> {
        self.set_caller(Caller::Public);
        self.user_slot = None;
        let expired = RealtimeError::Coded(
            ErrorCode::Unauthenticated,
            "the access token expired; send an `auth` message with a fresh one".into(),
        );
        self.send_error(None, &expired).await?;
        self.refresh_all(Recheck::EndWhatChanged).await
    }

    /// Whether ended sessions include this connection's.
    fn concerned_by(&self, change: &crate::store::sessions::SessionChange) -> bool {
        matches!(&self.caller, Caller::User(claims) if change.concerns(&claims.sub, &claims.sid))
    }

    /// Ends the connection when the caller's session was revoked or the user
    /// disabled; expires the token when the clock has passed its expiry (the
    /// timer covers the usual case; this one a clock moved forward).
    async fn check_session(&mut self) -> Result<(), Gone> {
        let Caller::User(claims) = &self.caller else { return Ok(()) };
        if claims.exp <= crate::clock::now_secs() {
            return self.expire().await;
        }
        match self.realtime.store().session_in_force(&claims.sid, crate::clock::now_micros()).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                let ended = RealtimeError::Coded(ErrorCode::Unauthenticated, "the session has ended".into());
                self.send_error(None, &ended).await?;
                self.transport.close("the session has ended").await;
                Err(Gone)
            }
            Err(e) => {
                tracing::warn!("realtime session check failed (will retry): {e}");
                Ok(())
            }
        }
    }
}
