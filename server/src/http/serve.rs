//! The accept loop: every connection a client can hold is bounded. A
//! connection that leaves the server waiting to read, with no request in
//! flight, for longer than the header timeout is closed (`idle`: that covers
//! silent sockets, half-sent headers and idle keep-alive connections); bodies
//! are bounded by the router's body timeout; at most `max_connections` are
//! served at once and one more is answered `503` and closed. Accept errors (for example
//! running out of file descriptors) pause the loop briefly instead of spinning.
//! Shutdown stops accepting and lets in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::idle::{Reaper, Watch, Watched};
use crate::config::HttpLimits;

/// How long a refused connection gets to receive its `503`.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error, so a full file-descriptor table is not spun on.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait for in-flight requests at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let http = hyper::server::conn::http1::Builder::new();
    let reaper = Reaper::start(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!("accepting a connection failed: {error}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let watch = reaper.watch();
        let router = router.clone();
        let requests = watch.clone();
        let service = tower::service_fn(move |mut request: Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
            let in_flight = InFlight::new(requests.clone());
            let response = router.clone().oneshot(request);
            async move {
                let response = response.await;
                if response.as_ref().is_ok_and(|r| r.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS) {
                    in_flight.0.upgraded();
                }
                drop(in_flight);
                response
            }
        });
        let io = TokioIo::new(Watched::new(stream, watch));
        let connection =
            http.serve_connection(io, hyper_util::service::TowerToHyperService::new(service)).with_upgrades();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = async { stopped.wait_for(|stop| *stop).await.map(|_| ()) } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all)).await.is_err() {
        tracing::warn!("shutdown: some connections were still open after {DRAIN_TIMEOUT:?}");
    }
    Ok(())
}

/// A request in flight on a watched connection, for as long as it lives.
struct InFlight(Arc<Watch>);

impl InFlight {
    fn new(watch: Arc<Watch>) -> InFlight {
        watch.request_started();
        InFlight(watch)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// Answers a connection over the limit with `503` in the error shape and closes it.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"error":{"code":"unavailable","message":"the server has too many open connections; try again"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Raises this process's open-file limit to its hard limit, so the connection
/// cap, not the descriptor table, is what bounds clients.
pub fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!("open file limit: {limit}"),
        Err(error) => tracing::warn!("cannot raise the open file limit: {error}"),
    }
}
