//! Shared test helpers: a real server on loopback ports chosen by the OS, a
//! real WebSocket client, and an HTTP client for the admin API. Every wait
//! has a timeout, so a hung server fails a test instead of hanging CI.
#![allow(dead_code)]

pub mod process;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tether::{Config, Server};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long any single wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A server running in this process.
pub struct TestServer {
    pub server: Option<Server>,
    pub ws: SocketAddr,
    pub admin: SocketAddr,
    http: ureq::Agent,
    token: Option<String>,
}

/// A configuration on free loopback ports.
pub fn config() -> Config {
    Config {
        ws_listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        ..Config::default()
    }
}

/// Starts a server with the default test configuration.
pub fn start() -> TestServer {
    start_with(config())
}

/// Starts a server with `config`.
pub fn start_with(config: Config) -> TestServer {
    let token = config.admin_token.clone();
    let server = Server::start(config).expect("server starts");
    TestServer {
        ws: server.ws_addr(),
        admin: server.admin_addr(),
        server: Some(server),
        http: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .build()
            .into(),
        token,
    }
}

/// An HTTP answer: status and body.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl TestServer {
    pub fn url(&self, query: &str) -> String {
        if query.is_empty() {
            format!("ws://{}/ws", self.ws)
        } else {
            format!("ws://{}/ws?{query}", self.ws)
        }
    }

    /// Connects a client with this query string.
    pub fn connect(&self, query: &str) -> Client {
        Client::connect(&self.url(query))
    }

    /// Connects a new CLI session (immediate delivery) named `id`, lifts its
    /// rate limit to 10000 events/s, and returns the client and its token.
    pub fn new_session(&self, id: &str) -> (Client, String) {
        let mut client = self.connect(&format!("client_id={id}&client_type=cli"));
        let first = client.recv_json();
        assert_eq!(first["type"], "connection_established", "{first}");
        let token = first["data"]["resume_token"].as_str().unwrap().to_string();
        client.set_preferences(&json!({"max_events_per_second": 10000}));
        (client, token)
    }

    /// A session `id` that received `n` events and then lost its connection
    /// (dropped, no close handshake). Returns its resume token.
    pub fn session_gone_after(&self, id: &str, n: usize) -> String {
        let (mut client, token) = self.new_session(id);
        if n > 0 {
            self.publish_n(n, "a");
            client.recv_events(n);
        }
        drop(client);
        self.wait_state(id, "disconnected");
        token
    }

    /// Resumes `id` with `token` (and `last_seq` if given); returns the
    /// client and its `reconnection_sync`.
    pub fn resume(&self, id: &str, token: &str, last_seq: Option<u64>) -> (Client, Value) {
        let last = last_seq.map_or(String::new(), |s| format!("&last_seq={s}"));
        let mut client = self.connect(&format!("client_id={id}&resume_token={token}{last}"));
        let sync = client.recv_json();
        assert_eq!(sync["type"], "reconnection_sync", "{sync}");
        (client, sync)
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> HttpReply {
        let url = format!("http://{}{path}", self.admin);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => with_auth(self.http.get(&url), &auth).call(),
            ("DELETE", _) => with_auth(self.http.delete(&url), &auth).call(),
            ("POST", Some(body)) => with_auth(self.http.post(&url), &auth)
                .header("Content-Type", "application/json")
                .send(body),
            ("POST", None) => with_auth(self.http.post(&url), &auth).send_empty(),
            ("PUT", _) => with_auth(self.http.put(&url), &auth).send_empty(),
            _ => panic!("unsupported method {method}"),
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        HttpReply {
            status: response.status().as_u16(),
            body: response.body_mut().read_to_string().unwrap(),
        }
    }

    pub fn get(&self, path: &str) -> HttpReply {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &str) -> HttpReply {
        self.request("POST", path, Some(body))
    }

    /// Publishes `body` and returns the published ids.
    pub fn publish(&self, body: &Value) -> Vec<u64> {
        let reply = self.post("/events", &body.to_string());
        assert_eq!(reply.status, 202, "{}", reply.body);
        reply.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect()
    }

    /// Publishes `n` broadcast events of type `t` in one request.
    pub fn publish_n(&self, n: usize, t: &str) -> Vec<u64> {
        let events: Vec<Value> = (0..n)
            .map(|i| json!({"event_type": t, "data": {"i": i}}))
            .collect();
        self.publish(&Value::Array(events))
    }

    /// The value of one metrics sample, e.g. `tether_retained_events` or
    /// `tether_sessions{state="connected"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = self.get("/metrics").body;
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {sample} in {text}"))
    }

    pub fn session(&self, id: &str) -> Value {
        let reply = self.get(&format!("/reconnection/sessions/{id}"));
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    /// Waits until the session's state is `state`.
    pub fn wait_state(&self, id: &str, state: &str) {
        wait_until(&format!("{id} becomes {state}"), || {
            self.session(id)["state"] == state
        });
    }
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: &Option<String>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

/// A fresh directory under the system's temporary directory, removed when
/// dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tether-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// The bytes of every file in the directory, from one listing in which
    /// every file listed was read.
    ///
    /// A running server's store thread renames a snapshot's temporary file
    /// into place and deletes the files the new snapshot made obsolete
    /// (`store/thread.rs`, `take_snapshot`), so a file listed may be gone by the
    /// time it is read. Such a listing is thrown away and the directory
    /// read again, rather than failing or returning it without that file
    /// (whose bytes may be what the caller looks for).
    pub fn contents(&self) -> Vec<(String, Vec<u8>)> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.read_every_file() {
                Ok(files) => return files,
                Err(vanished) => assert!(
                    Instant::now() < deadline,
                    "files kept vanishing while {} was read ({vanished} last)",
                    self.0.display()
                ),
            }
        }
    }

    /// Every file's name and bytes, sorted by name; or the name of a file
    /// that was listed but gone when it was opened.
    fn read_every_file(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.0).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            match std::fs::read(&path) {
                Ok(bytes) => files.push((name, bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(name),
                Err(e) => panic!("reading {}: {e}", path.display()),
            }
        }
        files.sort();
        Ok(files)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `cond` until it holds, failing the test after [`TIMEOUT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A WebSocket client with a read timeout on every receive.
pub struct Client {
    pub ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

/// What a receive produced.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Closed(Option<u16>),
}

impl Client {
    pub fn connect(url: &str) -> Client {
        let (ws, _) = tungstenite::connect(url).unwrap_or_else(|e| panic!("connect {url}: {e}"));
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
        }
        Client { ws }
    }

    pub fn tcp(&self) -> &TcpStream {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(s) => s,
            _ => unreachable!(),
        }
    }

    /// The next message or close; panics on timeout.
    pub fn recv(&mut self) -> Received {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Received::Json(serde_json::from_str(t.as_str()).unwrap())
                }
                Ok(Message::Close(frame)) => {
                    return Received::Closed(frame.map(|f| u16::from(f.code)))
                }
                Ok(Message::Binary(_)) => panic!("unexpected binary message"),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("timed out waiting for a message")
                }
                Err(_) => return Received::Closed(None),
            }
        }
    }

    /// The next message, which must be JSON text.
    pub fn recv_json(&mut self) -> Value {
        match self.recv() {
            Received::Json(v) => v,
            Received::Closed(code) => {
                panic!("connection closed ({code:?}) while expecting a message")
            }
        }
    }

    /// Reads until the connection closes; returns the close code, if any,
    /// and the messages read before it.
    pub fn recv_until_closed(&mut self) -> (Option<u16>, Vec<Value>) {
        let mut seen = Vec::new();
        loop {
            match self.recv() {
                Received::Json(v) => seen.push(v),
                Received::Closed(code) => return (code, seen),
            }
        }
    }

    /// Receives `n` event messages (unpacking batches) and returns them.
    pub fn recv_events(&mut self, n: usize) -> Vec<Value> {
        let mut events = Vec::new();
        while events.len() < n {
            let msg = self.recv_json();
            match msg["type"].as_str() {
                Some("event") => events.push(msg),
                Some("event_batch") => {
                    events.extend(msg["events"].as_array().unwrap().iter().cloned())
                }
                _ => panic!("expected an event, got {msg}"),
            }
        }
        events
    }

    /// Sends `update_preferences` and waits for `preferences_updated`.
    pub fn set_preferences(&mut self, data: &Value) -> Value {
        self.send_json(&json!({"type": "update_preferences", "data": data}));
        let reply = self.recv_json();
        assert_eq!(reply["type"], "preferences_updated", "{reply}");
        reply["data"].clone()
    }

    /// Receives `event_batch` messages until `n` events have come; returns
    /// the size of each batch and the events.
    pub fn recv_batches(&mut self, n: usize) -> (Vec<usize>, Vec<Value>) {
        let (mut sizes, mut events) = (Vec::new(), Vec::new());
        while events.len() < n {
            let batch = self.recv_json();
            assert_eq!(batch["type"], "event_batch", "{batch}");
            let items = batch["events"].as_array().unwrap();
            sizes.push(items.len());
            events.extend(items.iter().cloned());
        }
        (sizes, events)
    }

    pub fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string());
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    pub fn close(mut self) {
        let _ = self.ws.close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }));
        let _ = self.ws.flush();
        // Wait for the server's close reply so the session is detached.
        for _ in 0..100 {
            if self.ws.read().is_err() {
                break;
            }
        }
    }
}

/// The seqs of a list of events.
pub fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}
