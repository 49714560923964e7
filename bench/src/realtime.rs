//! Realtime fan-out: N WebSocket subscribers (each an anonymous user) to one
//! query under a read rule that depends on the caller, one writer creating
//! documents at a steady rate; the delay from sending each create request to
//! its delivery at every subscriber (p50/p99/max), every delivery accounted
//! for, and the server's resident memory before and after. Optionally, M idle
//! connections held open, reported as memory per connection.
//!
//! Usage: realtime-load <base url> <server pid> <subscribers> <documents> <creates per second> [idle connections]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type Error = Box<dyn std::error::Error + Send + Sync>;

const QUERY: &str = r#"{"collection":"feed","where":[["room","==","lobby"]]}"#;

/// The server's resident memory in bytes.
fn rss(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS")?;
    let kb: u64 = line.split_whitespace().nth(1).ok_or("no VmRSS value")?.parse()?;
    Ok(kb * 1024)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn anonymous_token(client: &reqwest::Client, base: &str) -> Result<String, Error> {
    let response: Value = client
        .post(format!("{base}/v1/auth/token"))
        .json(&json!({"grant_type": "anonymous"}))
        .send()
        .await?
        .json()
        .await?;
    Ok(response["access_token"].as_str().ok_or("no access token")?.to_owned())
}

async fn connect(base: &str, token: Option<&str>) -> Result<Socket, Error> {
    let mut url = format!("{}/v1/realtime", base.replacen("http://", "ws://", 1));
    if let Some(token) = token {
        url.push_str(&format!("?access_token={token}"));
    }
    Ok(tokio_tungstenite::connect_async(url).await?.0)
}

async fn next_json(socket: &mut Socket) -> Result<Value, Error> {
    loop {
        match socket.next().await.ok_or("connection closed")?? {
            Message::Text(text) => return Ok(serde_json::from_str(&text)?),
            Message::Close(_) => return Err("connection closed".into()),
            _ => continue,
        }
    }
}

/// Opens a subscriber: a user, a connection, a subscription with its snapshot.
async fn subscriber(client: reqwest::Client, base: String) -> Result<Socket, Error> {
    let token = anonymous_token(&client, &base).await?;
    let mut socket = connect(&base, Some(&token)).await?;
    let subscribe = format!(r#"{{"type":"subscribe","id":"feed","query":{QUERY}}}"#);
    socket.send(Message::Text(subscribe.into())).await?;
    let snapshot = next_json(&mut socket).await?;
    if snapshot["type"] != "snapshot" {
        return Err(format!("expected a snapshot, got {snapshot}").into());
    }
    Ok(socket)
}

/// The `seq` values of the documents a change frame adds, read without
/// parsing the whole frame (the client shares the machine's two cores with
/// the server, so it does as little as it can).
fn added_seqs(frame: &str) -> impl Iterator<Item = usize> + '_ {
    frame.match_indices("\"seq\":").filter_map(move |(at, key)| {
        let digits: String = frame[at + key.len()..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// Reads a subscriber's frames, noting when each document (`data.seq`) arrived.
async fn receive(mut socket: Socket, expected: usize) -> Result<Vec<(usize, Instant)>, Error> {
    let mut arrivals = Vec::with_capacity(expected);
    while arrivals.len() < expected {
        match socket.next().await.ok_or("connection closed")?? {
            Message::Text(text) => {
                let now = Instant::now();
                if !text.starts_with("{\"type\":\"change\"") {
                    return Err(format!("unexpected frame {text}").into());
                }
                arrivals.extend(added_seqs(&text).map(|seq| (seq, now)));
            }
            Message::Close(_) => return Err("connection closed".into()),
            _ => {}
        }
    }
    Ok(arrivals)
}

async fn fan_out(base: &str, pid: u32, subscribers: usize, documents: usize, rate: f64) -> Result<(), Error> {
    let client = reqwest::Client::new();
    let opening = Instant::now();
    let mut sockets = Vec::with_capacity(subscribers);
    let mut pending = futures_util::stream::iter((0..subscribers).map(|_| subscriber(client.clone(), base.to_owned())))
        .buffer_unordered(32);
    while let Some(socket) = pending.next().await {
        sockets.push(socket?);
    }
    drop(pending);
    let before = rss(pid)?;
    println!(
        "realtime: {subscribers} subscribers open in {:.1} s (each an anonymous user, rule depends on the caller); server RSS {:.1} MiB",
        opening.elapsed().as_secs_f64(),
        before as f64 / 1048576.0
    );
    let readers: Vec<_> = sockets.into_iter().map(|s| tokio::spawn(receive(s, documents))).collect();

    let sent = Arc::new(Mutex::new(HashMap::new()));
    let started = Instant::now();
    let mut writes = Vec::new();
    for seq in 0..documents {
        tokio::time::sleep_until((started + Duration::from_secs_f64(seq as f64 / rate)).into()).await;
        let (client, url, sent) = (client.clone(), format!("{base}/v1/docs/feed"), sent.clone());
        writes.push(tokio::spawn(async move {
            let body = json!({"room": "lobby", "audience": "everyone", "seq": seq});
            sent.lock().map_err(|_| "poisoned")?.insert(seq, Instant::now());
            let status = client.post(url).bearer_auth(WRITER_KEY.as_str()).json(&body).send().await?.status();
            if !status.is_success() {
                return Err::<(), Error>(format!("create failed: {status}").into());
            }
            Ok(())
        }));
    }
    for write in writes {
        write.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut arrivals = Vec::with_capacity(subscribers * documents);
    for reader in readers {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(done) = tokio::time::timeout(left, reader).await {
            arrivals.extend(done??);
        }
    }
    let after = rss(pid)?;
    let sent = sent.lock().map_err(|_| "poisoned")?;
    let mut delays: Vec<f64> = arrivals
        .iter()
        .filter_map(|(seq, at)| sent.get(seq).map(|s| at.saturating_duration_since(*s).as_secs_f64() * 1000.0))
        .collect();
    delays.sort_by(|a, b| a.total_cmp(b));
    let expected = subscribers * documents;
    if delays.is_empty() {
        return Err("nothing was delivered".into());
    }
    println!(
        "realtime: {subscribers} subscribers x {documents} creates at {rate}/s: delivered {}/{expected}; \
         delay from request sent to delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server RSS {:.1} -> {:.1} MiB",
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays[delays.len() - 1],
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    if delays.len() != expected {
        return Err(format!("{} deliveries missing", expected - delays.len()).into());
    }
    Ok(())
}

async fn idle(base: &str, pid: u32, connections: usize) -> Result<(), Error> {
    let before = rss(pid)?;
    let mut sockets = Vec::with_capacity(connections);
    let mut pending = futures_util::stream::iter((0..connections).map(|_| connect(base, None))).buffer_unordered(64);
    while let Some(socket) = pending.next().await {
        sockets.push(socket?);
    }
    drop(pending);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss(pid)?;
    println!(
        "realtime: {connections} idle connections held; server RSS {:.1} -> {:.1} MiB, {:.1} KiB per connection",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        after.saturating_sub(before) as f64 / connections as f64 / 1024.0
    );
    Ok(())
}

static WRITER_KEY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| std::env::var("NIMBUS_SERVICE_KEY").unwrap_or_default());

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: realtime-load <base url> <server pid> <subscribers> <documents> <creates per second> [idle connections]";
    let [base, pid, subscribers, documents, rate, rest @ ..] = args.as_slice() else { return Err(usage.into()) };
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let pid: u32 = pid.parse()?;
    fan_out(base, pid, subscribers.parse()?, documents.parse()?, rate.parse()?).await?;
    if let Some(connections) = rest.first() {
        idle(base, pid, connections.parse()?).await?;
    }
    Ok(())
}
