//! The load generator's WebSocket clients: connecting, lifting tether's rate
//! limit, and reading events while checking their order.

use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::server::{Kind, Server};

pub type Ws = WebSocket<TcpStream>;

/// No wait in the harness may take longer than this.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The start of the harness's clock, shared by publishers (which stamp
/// events with it) and receivers (which compute latencies from it).
pub fn now_us() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Opens a WebSocket to `addr` with this query, with a small read buffer
/// for clients that mostly sit idle (`small`) or tungstenite's default.
pub fn connect(addr: SocketAddr, query: &str, small: bool) -> Ws {
    let stream = TcpStream::connect(addr).expect("connect");
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let config = small.then(|| WebSocketConfig::default().read_buffer_size(4096));
    let url = format!("ws://{addr}/ws?{query}");
    tungstenite::client::client_with_config(url.as_str(), stream, config)
        .map_err(|e| format!("{e}"))
        .expect("handshake")
        .0
}

/// Reads the next text message as JSON.
pub fn recv_json(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// Sends one JSON text message.
pub fn send_json(ws: &mut Ws, text: String) {
    ws.send(Message::text(text)).expect("send");
}

/// A subscriber ready for a throughput run. With tether it is a `cli`
/// session whose rate limit is lifted to 10000 events/s; returns the
/// resume token too (empty for the baseline).
pub fn subscribe(server: &Server, id: &str, small: bool) -> (Ws, String) {
    let mut ws = connect(server.ws, &format!("client_id={id}&client_type=cli"), small);
    if server.kind == Kind::Baseline {
        return (ws, String::new());
    }
    let first = recv_json(&mut ws);
    assert_eq!(first["type"], "connection_established", "{first}");
    let token = first["data"]["resume_token"]
        .as_str()
        .expect("token")
        .into();
    send_json(
        &mut ws,
        r#"{"type":"update_preferences","data":{"max_events_per_second":10000}}"#.into(),
    );
    while recv_json(&mut ws)["type"] != "preferences_updated" {}
    (ws, token)
}

/// The unsigned number after `key` (`"name":`) in `text`, if any.
pub fn field(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits = text[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?;
    digits.parse().ok()
}

/// An event message's seq, read without parsing the whole message (both
/// servers start event messages this way).
pub fn event_seq(text: &str) -> Option<u64> {
    let rest = text.strip_prefix(r#"{"type":"event","seq":"#)?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Received {
    /// The last seq read.
    pub last_seq: u64,
    /// When the last wanted event arrived.
    pub done_at: Option<Instant>,
    /// (publish time in ms of the harness clock, publish-to-receive
    /// latency in µs) of each event, if asked for.
    pub latencies: Vec<(u32, u32)>,
    /// The first order or completeness problem.
    pub error: Option<String>,
}

/// Reads `events` events, checking each is the next seq from `first_seq`
/// (`None`: from whichever comes first, for a baseline started elsewhere,
/// whose seqs run on from earlier runs); acks every `ack_every` events
/// (tether) and records latencies from the `t` field of the data when
/// `latency` is set.
pub fn receive(
    ws: &mut Ws,
    events: u64,
    first_seq: Option<u64>,
    ack_every: Option<u64>,
    latency: bool,
) -> Received {
    let mut got = Received::default();
    let mut due = first_seq;
    let mut last = first_seq.map(|first| first + events - 1);
    while last.is_none_or(|last| got.last_seq < last) {
        let text = match ws.read() {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => {
                got.error = Some(format!("connection ended after seq {}", got.last_seq));
                return got;
            }
            Ok(_) => continue,
        };
        let Some(seq) = event_seq(text.as_str()) else {
            continue;
        };
        let expected = *due.get_or_insert(seq);
        last.get_or_insert(seq + events - 1);
        if seq != expected && got.error.is_none() {
            got.error = Some(format!("seq {seq} after {}", got.last_seq));
        }
        due = Some(seq + 1);
        got.last_seq = seq;
        if latency {
            let sent = field(text.as_str(), r#""t":"#).unwrap_or(0);
            let latency = now_us().saturating_sub(sent).min(u64::from(u32::MAX));
            got.latencies.push(((sent / 1000) as u32, latency as u32));
        }
        if let Some(every) = ack_every {
            if seq % every == 0 {
                send_json(ws, format!(r#"{{"type":"ack","seq":{seq}}}"#));
            }
        }
    }
    got.done_at = Some(Instant::now());
    got
}
