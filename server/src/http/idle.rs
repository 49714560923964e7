//! Closing connections that wait too long for their client: a connection
//! whose server side is waiting to read (the next request's headers, or any
//! byte at all) with no request in flight for longer than the header timeout
//! is ended. This covers sockets that send nothing, half a header, or sit idle
//! between keep-alive requests. Bodies that trickle are the body timeout's job
//! (a request is in flight then).
//!
//! Why not hyper's `header_read_timeout`: it re-arms a timer for every request,
//! which cost about 10 % of the throughput of a get by id (docs/benchmarks.md).
//! Here a request costs two atomic counter updates and the waits record their
//! start in an atomic; one task per server scans the connections a few times
//! per timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One connection's state as the reaper sees it.
pub struct Watch {
    /// Milliseconds since `Reaper::epoch` when a read started waiting; 0 = not waiting.
    waiting_since: AtomicU64,
    in_flight: AtomicUsize,
    expired: AtomicBool,
    /// Switched to another protocol (a WebSocket): no longer HTTP's to time out.
    upgraded: AtomicBool,
    waker: Mutex<Option<Waker>>,
    epoch: Instant,
}

impl Watch {
    fn now_ms(&self) -> u64 {
        // Never 0, which means "not waiting".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// A request began on this connection.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// The connection switched protocols (`101`); its new protocol keeps its own time.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    /// A request's handler finished: a wait that began meanwhile starts now.
    pub fn request_finished(&self) {
        if self.waiting_since.load(Ordering::Acquire) != 0 {
            self.waiting_since.store(self.now_ms(), Ordering::Release);
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Scans the connections and ends those that waited too long.
pub struct Reaper {
    connections: Mutex<Vec<Weak<Watch>>>,
    timeout: Duration,
    epoch: Instant,
}

impl Reaper {
    /// Starts the scanning task; it stops when the reaper is dropped.
    pub fn start(timeout: Duration) -> Arc<Reaper> {
        let reaper = Arc::new(Reaper { connections: Mutex::new(Vec::new()), timeout, epoch: Instant::now() });
        let weak = Arc::downgrade(&reaper);
        let every = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(reaper) = weak.upgrade() else { return };
                reaper.scan();
            }
        });
        reaper
    }

    /// A new connection to watch.
    pub fn watch(&self) -> Arc<Watch> {
        let watch = Arc::new(Watch {
            waiting_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            expired: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            waker: Mutex::new(None),
            epoch: self.epoch,
        });
        self.connections.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(&watch));
        watch
    }

    fn scan(&self) {
        let limit = self.timeout.as_millis() as u64;
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        connections.retain(|weak| {
            let Some(watch) = weak.upgrade() else { return false };
            let since = watch.waiting_since.load(Ordering::Acquire);
            let idle = watch.in_flight.load(Ordering::Acquire) == 0 && !watch.upgraded.load(Ordering::Acquire);
            if idle && since != 0 && watch.now_ms().saturating_sub(since) > limit {
                watch.expired.store(true, Ordering::Release);
                if let Some(waker) = watch.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    waker.wake();
                }
            }
            true
        });
    }
}

/// A connection's stream, reporting its reads to its `Watch`.
pub struct Watched<S> {
    inner: S,
    watch: Arc<Watch>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, watch: Arc<Watch>) -> Watched<S> {
        Watched { inner, watch }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.watch.expired.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client sent nothing in time")));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let watch = &self.watch;
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => watch.waiting_since.store(0, Ordering::Release),
            Poll::Pending => {
                if watch.waiting_since.load(Ordering::Acquire) == 0 {
                    watch.waiting_since.store(watch.now_ms(), Ordering::Release);
                }
                let mut slot = watch.waker.lock().unwrap_or_else(|p| p.into_inner());
                if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *slot = Some(cx.waker().clone());
                }
            }
            Poll::Ready(_) => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
