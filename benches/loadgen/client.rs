//! The load generator's WebSocket clients: connecting, lifting tether's rate
//! limit, and reading events while checking their order.

use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::scenarios::CLIENT_STACK;
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

/// The read buffer of clients that mostly sit idle.
pub const IDLE_READ_BUFFER: Option<usize> = Some(4096);
/// The read buffer of M2b's clients. tungstenite zeroes the free part of
/// its read buffer before every read, 128 KiB by default: with clients read
/// as they become ready, a read that finds nothing costs the zeroing too.
/// In quick M2b runs 16 KiB cut the floor's p99 from 28-31 ms to 12-17.
pub const LATENCY_READ_BUFFER: Option<usize> = Some(16 * 1024);

/// Opens a WebSocket to `addr` with this query and a read buffer of this
/// size (`None`: tungstenite's default).
pub fn connect(addr: SocketAddr, query: &str, read_buffer: Option<usize>) -> Ws {
    let stream = TcpStream::connect(addr).expect("connect");
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let config = read_buffer.map(|size| WebSocketConfig::default().read_buffer_size(size));
    let url = format!("ws://{addr}/ws?{query}");
    tungstenite::client::client_with_config(url.as_str(), stream, config)
        .map_err(|e| format!("{e}"))
        .expect("handshake")
        .0
}

/// Opens connection `i` with `open(i)` for each `i` of `range`, in order.
/// mosquitto answers a WebSocket client only on a 100 ms tick while it is
/// otherwise idle (see BENCHMARKS.md), so its clients are opened 100 at a
/// time; every other server's one at a time, as they always were.
pub fn open_many(kind: Kind, range: Range<usize>, open: impl Fn(usize) -> Ws + Sync) -> Vec<Ws> {
    let parallel = if kind == Kind::Mosquitto { 100 } else { 1 };
    if parallel == 1 {
        return range.map(open).collect();
    }
    let open = &open;
    let mut opened: Vec<(usize, Ws)> = thread::scope(|scope| {
        let threads: Vec<_> = (0..parallel)
            .map(|k| {
                let mine = range.clone().skip(k).step_by(parallel);
                thread::Builder::new()
                    .stack_size(CLIENT_STACK)
                    .spawn_scoped(scope, move || {
                        mine.map(|i| (i, open(i))).collect::<Vec<_>>()
                    })
                    .expect("a connecting thread")
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("connecting thread"))
            .collect()
    });
    opened.sort_by_key(|(i, _)| *i);
    opened.into_iter().map(|(_, ws)| ws).collect()
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
/// resume token too (empty for the baseline and the peers).
pub fn subscribe(server: &Server, id: &str, read_buffer: Option<usize>) -> (Ws, String) {
    if server.kind == Kind::Mosquitto {
        return (
            crate::mqtt::subscriber(server, id, 0, read_buffer),
            String::new(),
        );
    }
    if server.kind == Kind::SocketIo {
        let mut ws = connect(server.ws, crate::peers::SOCKETIO_QUERY, read_buffer);
        crate::peers::socketio_join(&mut ws, None);
        return (ws, String::new());
    }
    let query = format!("client_id={id}&client_type=cli");
    let mut ws = connect(server.ws, &query, read_buffer);
    if matches!(server.kind, Kind::Baseline | Kind::Nchan) {
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
    /// Socket.IO's offset of the last event, to resume from.
    pub offset: Option<String>,
}

/// One subscriber's check of the events it reads: each must be the next
/// seq from `first_seq` (`None`: from whichever comes first, for a baseline
/// started elsewhere, whose seqs run on from earlier runs), until `events`
/// have come.
pub struct Reading {
    events: u64,
    due: Option<u64>,
    last: Option<u64>,
    ack_every: Option<u64>,
    latency: bool,
    got: Received,
    /// The MQTT packets read so far, for a subscriber of mosquitto.
    pub(crate) mqtt: crate::mqtt::Packets,
}

impl Reading {
    /// Acks every `ack_every` events (tether) and records latencies from
    /// the `t` field of the data when `latency` is set.
    pub fn new(events: u64, first_seq: Option<u64>, ack_every: Option<u64>, latency: bool) -> Self {
        Reading {
            events,
            due: first_seq,
            last: first_seq.map(|first| first + events - 1),
            ack_every,
            latency,
            got: Received::default(),
            mqtt: Default::default(),
        }
    }

    /// Whether every wanted event has come.
    pub fn done(&self) -> bool {
        self.last.is_some_and(|last| self.got.last_seq >= last)
    }

    /// Takes one text message; returns the acknowledgement to send, if one
    /// is due.
    pub fn take(&mut self, text: &str) -> Option<String> {
        let seq = event_seq(text)?;
        let got = &mut self.got;
        let expected = *self.due.get_or_insert(seq);
        self.last.get_or_insert(seq + self.events - 1);
        if seq != expected && got.error.is_none() {
            got.error = Some(format!("seq {seq} after {}", got.last_seq));
        }
        self.due = Some(seq + 1);
        got.last_seq = seq;
        if self.latency {
            let sent = field(text, r#""t":"#).unwrap_or(0);
            let latency = now_us().saturating_sub(sent).min(u64::from(u32::MAX));
            got.latencies.push(((sent / 1000) as u32, latency as u32));
        }
        let every = self.ack_every?;
        (seq % every == 0).then(|| format!(r#"{{"type":"ack","seq":{seq}}}"#))
    }

    /// Takes a text message (tether's, the baseline's) or a binary one
    /// (MQTT, from mosquitto); returns the acknowledgements to send.
    pub fn take_message(&mut self, message: &Message) -> Vec<Message> {
        match message {
            // An Engine.IO ping, from the Socket.IO server.
            Message::Text(text) if text.as_str() == "2" => vec![Message::text("3")],
            Message::Text(text) => {
                let text = match text.as_str().strip_prefix(r#"42["event","#) {
                    // Socket.IO's event: the event message, then its offset.
                    Some(event) => {
                        let offset = event.rsplit_once(r#",""#).map(|(_, o)| o);
                        self.got.offset = offset.map(|o| o.trim_end_matches(r#""]"#).into());
                        event
                    }
                    None => text.as_str(),
                };
                self.take(text).map(Message::text).into_iter().collect()
            }
            Message::Binary(bytes) => self
                .take_mqtt(bytes)
                .into_iter()
                .map(Message::binary)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// What was read: complete, or cut short by `ended` (what ended it; an
    /// order error seen before stays the one reported).
    pub fn finish(mut self, ended: Option<&str>) -> Received {
        match ended {
            Some(why) => {
                let why = format!("{why} after seq {}", self.got.last_seq);
                self.got.error.get_or_insert(why);
            }
            None => self.got.done_at = Some(Instant::now()),
        }
        self.got
    }
}

/// Reads on this thread, blocking on `ws`, until `reading` is done.
pub fn receive(ws: &mut Ws, mut reading: Reading) -> Received {
    let ended = loop {
        if reading.done() {
            break None;
        }
        match ws.read() {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                for ack in reading.take_message(&message) {
                    // A connection that ended fails the next read.
                    let _ = ws.send(ack);
                }
            }
            Ok(Message::Close(_)) | Err(_) => break Some("connection ended"),
            Ok(_) => {}
        }
    };
    reading.finish(ended)
}
