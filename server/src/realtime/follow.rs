//! One subscription as a stream, for entry points that carry one subscription
//! per stream (SSE, GraphQL subscriptions): a session of its own, fed into a
//! bounded channel. Rules, token expiry, session checks and `resync` work as
//! on a WebSocket connection; a consumer that stops reading holds the session
//! back until the feed's buffer tells it to resync, and dropping the stream
//! ends the session.

use tokio::sync::mpsc;

use super::protocol::{Frame, Subscribe};
use super::session::{Gone, Incoming, Session, Transport};
use super::{Realtime, Slot};
use crate::auth::Caller;

/// Items a followed subscription's stream may hold before the session waits.
const STREAM_BUFFER: usize = 16;

/// What the session of a followed subscription says.
#[derive(Debug)]
pub enum Said {
    Frame(Frame),
    /// Nothing happened for a while (a keep-alive).
    Idle,
    /// The session ended, with its reason (a session revoked, a user disabled …).
    Closed(String),
}

/// Runs `subscribe` as `caller` in a session of its own (counted by `slot`).
pub fn follow(realtime: Realtime, caller: Caller, slot: Slot, subscribe: Subscribe) -> mpsc::Receiver<Said> {
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(Session::new(realtime, caller, slot, Channel { sender }).run(Some(subscribe)));
    receiver
}

struct Channel {
    sender: mpsc::Sender<Said>,
}

impl Transport for Channel {
    async fn recv(&mut self) -> Option<Incoming> {
        self.sender.closed().await;
        None
    }

    async fn send(&mut self, frame: Frame) -> Result<(), Gone> {
        self.sender.send(Said::Frame(frame)).await.map_err(|_| Gone)
    }

    async fn ping(&mut self) -> Result<(), Gone> {
        self.sender.send(Said::Idle).await.map_err(|_| Gone)
    }

    fn answers_pings(&self) -> bool {
        false
    }

    async fn close(&mut self, reason: &str) {
        let _ = self.sender.send(Said::Closed(reason.to_owned())).await;
    }
}
