//! Helpers for the client-side tests: `tether listen` as a child process
//! whose output is collected per incarnation (a SIGKILL and a restart start
//! a new one), the `tether` command without `TETHER_*` variables, and a
//! small seeded PRNG.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a test waits for a process before it fails.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);

pub use crate::common::process::tether;

/// A fresh path for a state file in this test process's temporary folder.
pub fn state_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-client-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// Runs `tether ARGS` with `stdin` and returns (exit code, stdout, stderr).
pub fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = tether()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let text = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `tether listen` process, restartable with the same arguments.
pub struct Listen {
    args: Vec<String>,
    child: Option<Child>,
    readers: Vec<JoinHandle<()>>,
    /// Complete stdout lines, one list per incarnation. A line cut short by
    /// a SIGKILL is not complete and is not kept.
    pub out: Arc<Mutex<Vec<Vec<String>>>>,
    /// Every stderr line of every incarnation.
    pub err: Arc<Mutex<Vec<String>>>,
}

impl Listen {
    /// Starts `tether listen ARGS`.
    pub fn start(args: &[String]) -> Listen {
        let mut listen = Listen {
            args: args.to_vec(),
            child: None,
            readers: Vec::new(),
            out: Arc::new(Mutex::new(Vec::new())),
            err: Arc::new(Mutex::new(Vec::new())),
        };
        listen.spawn();
        listen
    }

    fn spawn(&mut self) {
        let mut child = tether()
            .arg("listen")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tether listen starts");
        self.out.lock().unwrap().push(Vec::new());
        let stdout = child.stdout.take().unwrap();
        let out = Arc::clone(&self.out);
        self.readers.push(std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if line.ends_with('\n') => {
                        let mut out = out.lock().unwrap();
                        out.last_mut().unwrap().push(line.trim_end().to_string());
                    }
                    Ok(_) => return, // a partial line at EOF
                }
            }
        }));
        let stderr = child.stderr.take().unwrap();
        let err = Arc::clone(&self.err);
        self.readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                err.lock().unwrap().push(line);
            }
        }));
        self.child = Some(child);
    }

    /// Complete lines printed so far, all incarnations.
    pub fn printed(&self) -> usize {
        self.out.lock().unwrap().iter().map(Vec::len).sum()
    }

    /// Complete lines printed by the running incarnation.
    pub fn printed_now(&self) -> usize {
        self.out.lock().unwrap().last().map_or(0, Vec::len)
    }

    /// The seq of the last complete line printed, 0 before the first.
    pub fn last_seq(&self) -> u64 {
        let out = self.out.lock().unwrap();
        out.iter()
            .rev()
            .find_map(|lines| lines.last())
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
            .and_then(|v| v["seq"].as_u64())
            .unwrap_or(0)
    }

    /// Every stderr line so far, joined.
    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().join("\n")
    }

    /// Waits until stderr has a line containing `needle`.
    pub fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while !self.err.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(
                Instant::now() < deadline,
                "no stderr line with {needle:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `n` complete lines were printed in all.
    pub fn wait_printed(&self, n: usize) {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while self.printed() < n {
            assert!(
                Instant::now() < deadline,
                "printed {} of {n} lines; stderr:\n{}",
                self.printed(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILLs the process, collects the rest of its output, and starts it
    /// again with the same arguments (so the same state file).
    pub fn kill_and_restart(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        self.spawn();
    }

    /// Sends a signal by name (`TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let status = Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                for reader in self.readers.drain(..) {
                    reader.join().unwrap();
                }
                return status.code().expect("exited, not killed by a signal");
            }
            assert!(Instant::now() < deadline, "tether listen did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The printed events of each incarnation, parsed.
    pub fn events(&self) -> Vec<Vec<Value>> {
        self.out
            .lock()
            .unwrap()
            .iter()
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                    .collect()
            })
            .collect()
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Joins the incarnations' events into one list, dropping the first event of
/// an incarnation when it repeats the last event of the one before (the
/// event being printed when that one was SIGKILLed). Returns the list and
/// how many such repeats were dropped.
pub fn join_incarnations(incarnations: &[Vec<Value>]) -> (Vec<Value>, usize) {
    let mut all: Vec<Value> = Vec::new();
    let mut repeats = 0;
    for events in incarnations {
        let mut events = events.as_slice();
        if let (Some(last), Some(first)) = (all.last(), events.first()) {
            if last["seq"] == first["seq"] {
                assert_eq!(last["id"], first["id"], "same seq, another event");
                repeats += 1;
                events = &events[1..];
            }
        }
        all.extend(events.iter().cloned());
    }
    (all, repeats)
}

/// SplitMix64: a small seeded PRNG, so a failing schedule can be replayed.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// From `TETHER_TEST_SEED` if set, else from the OS; prints the seed.
    pub fn from_env_or_os(what: &str) -> Prng {
        let seed = std::env::var("TETHER_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).unwrap();
                u64::from_le_bytes(bytes)
            });
        println!("{what}: seed {seed} (set TETHER_TEST_SEED={seed} to replay)");
        Prng(seed)
    }

    /// A seeded generator.
    pub fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

/// A WebSocket server on a loopback port that the test drives message by
/// message, to make a real client face what a real server only does in rare
/// races: replays of events already delivered, holes in seq, take-overs.
pub struct ScriptServer {
    listener: std::net::TcpListener,
}

/// One accepted connection of a [`ScriptServer`].
pub struct ScriptConn {
    ws: tungstenite::WebSocket<std::net::TcpStream>,
    /// The query string of the upgrade request.
    pub query: String,
}

impl ScriptServer {
    pub fn new() -> ScriptServer {
        ScriptServer {
            listener: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.listener.local_addr().unwrap())
    }

    /// The next connection; fails the test after [`PROCESS_TIMEOUT`].
    pub fn accept(&self) -> ScriptConn {
        self.listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no connection came");
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(PROCESS_TIMEOUT)).unwrap();
        let mut query = String::new();
        // The callback's signature is tungstenite's.
        #[allow(clippy::result_large_err)]
        let ws = tungstenite::accept_hdr(
            stream,
            |req: &tungstenite::handshake::server::Request,
             resp: tungstenite::handshake::server::Response| {
                query = req.uri().query().unwrap_or("").to_string();
                Ok(resp)
            },
        )
        .unwrap();
        ScriptConn { ws, query }
    }

    /// Whether a connection is waiting to be accepted.
    pub fn has_pending(&self) -> bool {
        self.listener.set_nonblocking(true).unwrap();
        self.listener.accept().is_ok()
    }
}

impl ScriptConn {
    pub fn send(&mut self, message: &Value) {
        self.ws
            .send(tungstenite::Message::text(message.to_string()))
            .unwrap();
    }

    /// The next text message from the client, parsed.
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read().expect("a message from the client") {
                tungstenite::Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                _ => continue,
            }
        }
    }

    /// Cuts the connection without a close handshake.
    pub fn cut(self) {
        let _ = self.ws.get_ref().shutdown(std::net::Shutdown::Both);
    }

    /// Sends a close frame with `code`.
    pub fn close(mut self, code: u16) {
        let _ = self.ws.close(Some(tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: "".into(),
        }));
        let _ = self.ws.flush();
    }

    /// The value of a query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| v.to_string())
        })
    }
}

/// `connection_established` for a script, with a heartbeat interval (0: off).
pub fn established(client_id: &str, token: &str, heartbeat_ms: u64) -> Value {
    serde_json::json!({"type": "connection_established", "data": {
        "client_id": client_id, "client_type": "cli", "resume_token": token,
        "session_restored": false, "current_seq": 0, "preferences": {},
        "heartbeat": {"enabled": heartbeat_ms > 0, "interval_ms": heartbeat_ms, "timeout_ms": heartbeat_ms * 2},
        "reconnection": {"strategy": "immediate", "max_retry_attempts": 5, "initial_delay_ms": 10,
            "max_delay_ms": 100, "backoff_multiplier": 2.0, "state_sync_timeout_ms": 5000}}})
}

/// `reconnection_sync` for a script.
pub fn sync(client_id: &str, last_seq: u64, current_seq: u64, missed: u64) -> Value {
    let dropped = current_seq - last_seq - missed;
    serde_json::json!({"type": "reconnection_sync", "data": {
        "client_id": client_id, "client_type": "cli", "session_restored": true,
        "last_seq": last_seq, "current_seq": current_seq, "missed_events": missed,
        "gap": dropped > 0, "dropped_events": dropped, "disconnected_ms": 5, "reconnect_count": 1,
        "preferences": {}, "heartbeat": {"enabled": false, "interval_ms": 30000, "timeout_ms": 60000},
        "reconnection": {"strategy": "immediate", "max_retry_attempts": 5, "initial_delay_ms": 10,
            "max_delay_ms": 100, "backoff_multiplier": 2.0, "state_sync_timeout_ms": 5000}}})
}

/// An event object without `"type"` (a batch item); `id` is `seq + 100`.
pub fn event_item(seq: u64, replayed: bool) -> Value {
    serde_json::json!({"seq": seq, "id": seq + 100, "event_type": "t", "priority": "medium",
        "timestamp": 1, "data": {"seq": seq}, "replayed": replayed})
}

/// An `event` message.
pub fn event(seq: u64, replayed: bool) -> Value {
    let mut e = event_item(seq, replayed);
    e["type"] = "event".into();
    e
}

/// What a [`ClientRun`] reports: an item or an error, as text.
#[derive(Debug)]
pub enum Got {
    Item(tether::client::Received),
    Error(String),
}

/// A library client running on its own thread, reporting what it receives.
pub struct ClientRun {
    rx: std::sync::mpsc::Receiver<Got>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<JoinHandle<tether::client::Stats>>,
}

impl ClientRun {
    /// Starts a client; after an error it reports the next two results too.
    pub fn start(config: tether::client::ClientConfig) -> ClientRun {
        use std::sync::atomic::Ordering;
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut client = tether::client::Client::new(config).unwrap();
            let mut errors = 0;
            while !stopped.load(Ordering::Acquire) && errors < 3 {
                match client.recv_timeout(Duration::from_millis(20)) {
                    Ok(Some(item)) => {
                        let _ = tx.send(Got::Item(item));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        errors += 1;
                        let _ = tx.send(Got::Error(e.to_string()));
                    }
                }
            }
            client.stats()
        });
        ClientRun {
            rx,
            stop,
            handle: Some(handle),
        }
    }

    /// The next report; fails the test after [`PROCESS_TIMEOUT`].
    pub fn next(&self) -> Got {
        self.rx
            .recv_timeout(PROCESS_TIMEOUT)
            .expect("the client reports something")
    }

    /// The next event's seq, skipping notices; fails on a gap or an error.
    pub fn next_seq(&self) -> u64 {
        loop {
            match self.next() {
                Got::Item(tether::client::Received::Event(e)) => return e.seq,
                Got::Item(tether::client::Received::Notice(_)) => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    /// The next gap or event (as `Err(gap)` / `Ok(seq)`), skipping notices.
    pub fn next_seq_or_gap(&self) -> Result<u64, tether::client::Gap> {
        loop {
            match self.next() {
                Got::Item(tether::client::Received::Event(e)) => return Ok(e.seq),
                Got::Item(tether::client::Received::Gap(g)) => return Err(g),
                Got::Item(tether::client::Received::Notice(_)) => continue,
                Got::Error(e) => panic!("client error: {e}"),
            }
        }
    }

    /// The next notice, skipping nothing.
    pub fn next_notice(&self) -> tether::client::Notice {
        match self.next() {
            Got::Item(tether::client::Received::Notice(n)) => n,
            other => panic!("expected a notice, got {other:?}"),
        }
    }

    /// The next error, skipping notices.
    pub fn next_error(&self) -> String {
        loop {
            match self.next() {
                Got::Error(e) => return e,
                Got::Item(tether::client::Received::Notice(_)) => continue,
                other => panic!("expected an error, got {other:?}"),
            }
        }
    }

    /// Stops the client and returns its counters.
    pub fn stop(mut self) -> tether::client::Stats {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for ClientRun {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}
