//! The peers measured beside tether when they are installed: mosquitto
//! (`mqtt.rs`), nchan (the nginx module) and a Socket.IO server in Node,
//! the three servers of the issue's orientation figures. Each is started
//! by [`Server::start`](crate::server::Server::start) from a configuration
//! or script written here, in a directory of its own; mosquitto's and
//! nginx's listeners go on free loopback ports chosen here, since neither
//! can pick its own and say which.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tungstenite::Message;

use crate::client::{self, Reading, Ws};
use crate::floor;
use crate::server::{Kind, Server};

/// How to start a peer and know it is ready.
pub struct Setup {
    /// The directory holding its configuration (and nginx's scratch
    /// files), removed when the server is dropped.
    pub dir: PathBuf,
    pub args: Vec<OsString>,
    /// Environment for it.
    pub env: Vec<(OsString, OsString)>,
    /// The end of the line it logs once it accepts connections, its
    /// WebSocket listener (subscribers) and where publishers go
    /// (mosquitto's MQTT listener, nchan's HTTP one on the same port);
    /// `None` for one that logs its addresses as tether does.
    pub listening: Option<(&'static str, SocketAddr, SocketAddr)>,
}

/// The peer's program: the one its variable names, or the one on the PATH.
pub fn program(kind: Kind) -> PathBuf {
    let (variable, default) = match kind {
        Kind::Mosquitto => ("BENCH_MOSQUITTO", "mosquitto"),
        Kind::Nchan => ("BENCH_NGINX", "nginx"),
        Kind::SocketIo => ("BENCH_NODE", "node"),
        _ => unreachable!("not a peer"),
    };
    std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// Whether `kind` can be measured here: for nchan, nginx and Debian's
/// module; for Socket.IO, Node and the package in [`socketio_dir`]; for
/// mosquitto, the broker.
pub fn installed(kind: Kind) -> bool {
    let runs = Command::new(program(kind))
        .arg(if kind == Kind::Mosquitto { "-h" } else { "-v" })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    runs && match kind {
        Kind::Nchan => std::path::Path::new(NCHAN_MODULE).exists(),
        Kind::SocketIo => socketio_dir().join("node_modules/socket.io").exists(),
        _ => true,
    }
}

/// Where `npm install --prefix DIR socket.io@4.8` put Socket.IO:
/// `BENCH_SOCKETIO_DIR`, or `target/peers` in this crate.
pub fn socketio_dir() -> PathBuf {
    std::env::var_os("BENCH_SOCKETIO_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers"),
        PathBuf::from,
    )
}

/// The Socket.IO server: events posted to /events are emitted to every
/// socket as they came (an event message of tether's, parsed, so it goes
/// out as the same JSON); /connected counts the sockets. Connection state
/// recovery is on (for M3), and the ping interval is long so that M1's
/// idle clients, which never read, are not dropped for missing pongs.
const SOCKETIO_SERVER: &str = r#"
const http = require('http');
const { Server } = require('socket.io');
const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/events') {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      io.emit('event', JSON.parse(body));
      res.writeHead(202);
      res.end();
    });
  } else if (req.url === '/connected') {
    res.writeHead(200);
    res.end(String(io.engine.clientsCount));
  } else {
    res.writeHead(404);
    res.end();
  }
});
const io = new Server(server, {
  path: '/ws',
  addTrailingSlash: false,
  transports: ['websocket'],
  pingInterval: 600000,
  connectionStateRecovery: { maxDisconnectionDuration: 600000 },
});
server.listen(0, '127.0.0.1', () => {
  const port = server.address().port;
  console.error('websocket listening on 127.0.0.1:' + port);
  console.error('admin listening on 127.0.0.1:' + port);
});
"#;

/// Debian's `libnginx-mod-nchan`.
const NCHAN_MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

pub fn setup(kind: Kind) -> Setup {
    static DIRS: AtomicUsize = AtomicUsize::new(0);
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("loadgen-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    };
    match kind {
        Kind::Mosquitto => {
            let (ws, mqtt) = (free(), free());
            let path = dir.join("mosquitto.conf");
            // Queues as deep as tether's `--max-missed-events 100000`; the
            // in-flight window and everything else stay at their defaults.
            let config = format!(
                "listener {} {}\nprotocol websockets\nlistener {} {}\nprotocol mqtt\n\
                 allow_anonymous true\nmax_queued_messages 100000\npersistence false\n\
                 connection_messages false\nlog_dest stderr\nlog_type error\n\
                 log_type warning\nlog_type information\n",
                ws.port(),
                ws.ip(),
                mqtt.port(),
                mqtt.ip()
            );
            std::fs::write(&path, config).expect("write the mosquitto configuration");
            Setup {
                dir,
                args: vec!["-c".into(), path.into()],
                env: Vec::new(),
                listening: Some((" running", ws, mqtt)),
            }
        }
        Kind::Nchan => {
            let addr = free();
            let path = dir.join("nginx.conf");
            // One channel; subscribers at /ws (as tether's), publishing at
            // /events. A buffer as deep as tether's `--max-missed-events
            // 100000` in these runs; a worker per core, as Debian's own
            // configuration has.
            let config = format!(
                "load_module {NCHAN_MODULE};\ndaemon off;\nmaster_process on;\n\
                 worker_processes auto;\npid nginx.pid;\nerror_log stderr notice;\n\
                 events {{ worker_connections 20000; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path body;\n  \
                 proxy_temp_path proxy;\n  fastcgi_temp_path fastcgi;\n  \
                 uwsgi_temp_path uwsgi;\n  scgi_temp_path scgi;\n  \
                 server {{\n    listen {addr};\n    \
                 location = /ws {{ nchan_subscriber websocket; nchan_channel_id events; }}\n    \
                 location = /events {{ nchan_publisher; nchan_channel_id events; \
                 nchan_message_buffer_length 100000; nchan_message_timeout 1h; }}\n  }}\n}}\n"
            );
            std::fs::write(&path, config).expect("write the nginx configuration");
            Setup {
                args: vec!["-p".into(), dir.clone().into(), "-c".into(), path.into()],
                env: Vec::new(),
                dir,
                listening: Some(("start worker processes", addr, addr)),
            }
        }
        Kind::SocketIo => {
            let path = dir.join("server.js");
            std::fs::write(&path, SOCKETIO_SERVER).expect("write the Socket.IO server");
            let modules = socketio_dir().join("node_modules");
            Setup {
                args: vec![path.into()],
                env: vec![("NODE_PATH".into(), modules.into())],
                dir,
                listening: None,
            }
        }
        _ => unreachable!("not a peer"),
    }
}

/// M3 against nchan: a subscriber away while `events` are published comes
/// back over WebSocket with `last_event_id`, the id nchan gave the last
/// message it had read (as an EventSource client would). Milliseconds from
/// starting the TCP connect to the last missed message, per trial, and the
/// problems seen.
pub fn nchan_replay_trials(trials: usize, events: usize) -> (Vec<f64>, Vec<String>) {
    let server = Server::start(Kind::Nchan, &[]);
    let mut times = Vec::new();
    let mut errors = Vec::new();
    // "0": from the oldest message nchan holds, before any is published.
    let mut last_id = String::from("0");
    let mut last = 0;
    for trial in 0..trials {
        let mut newest_id = String::new();
        for seq in last + 1..=last + events as u64 {
            let reply = server.publish(&floor::event_message(seq, 0));
            newest_id = reply
                .lines()
                .find_map(|l| l.strip_prefix("last message id: "))
                .expect("nchan names the message's id")
                .to_string();
        }
        let start = Instant::now();
        let mut ws = client::connect(server.ws, &format!("last_event_id={last_id}"), None);
        let reading = Reading::new(events as u64, Some(last + 1), None, false);
        let got = client::receive(&mut ws, reading);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        if let Some(e) = got.error {
            errors.push(format!("trial {trial}: {e}"));
        }
        last = got.last_seq;
        last_id = newest_id;
    }
    (times, errors)
}

/// The query of a Socket.IO client's WebSocket (Engine.IO 4, no polling).
pub const SOCKETIO_QUERY: &str = "EIO=4&transport=websocket";

/// Joins Socket.IO's main namespace on a new WebSocket: waits for
/// Engine.IO's open packet, connects (with `resume`, the pid and offset of
/// a session to recover), and returns the pid the server gave and the
/// messages that came before its answer (a recovered session's missed
/// events come first).
pub fn socketio_join(ws: &mut Ws, resume: Option<(&str, &str)>) -> (String, Vec<Message>) {
    let next_text = |ws: &mut Ws| loop {
        match ws.read().expect("read") {
            Message::Text(text) => return text.to_string(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    };
    let open = next_text(ws);
    assert!(open.starts_with('0'), "Engine.IO open packet: {open}");
    let connect = match resume {
        Some((pid, offset)) => format!(r#"40{{"pid":"{pid}","offset":"{offset}"}}"#),
        None => "40".into(),
    };
    ws.send(Message::text(connect)).expect("send CONNECT");
    let mut early = Vec::new();
    let connected = loop {
        let text = next_text(ws);
        match text.strip_prefix("40") {
            Some(body) => break body.to_string(),
            None => early.push(Message::text(text)),
        }
    };
    let connected: serde_json::Value = serde_json::from_str(&connected).expect("JSON");
    (connected["pid"].as_str().unwrap_or_default().into(), early)
}

/// M3 against Socket.IO with connection state recovery: a socket away
/// while `events` are emitted reconnects with its pid and the offset of the
/// last event it read. Milliseconds from starting the TCP connect to the
/// last missed event, per trial, and the problems seen.
pub fn socketio_replay_trials(trials: usize, events: usize) -> (Vec<f64>, Vec<String>) {
    let server = Server::start(Kind::SocketIo, &[]);
    let away = |ws: Ws| {
        drop(ws);
        while server.request("GET", "/connected", None).1 != "0" {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    // One event read while connected gives the first offset.
    let mut ws = client::connect(server.ws, SOCKETIO_QUERY, None);
    let (mut pid, _) = socketio_join(&mut ws, None);
    server.publish(&floor::event_message(1, 0));
    let got = client::receive(&mut ws, Reading::new(1, Some(1), None, false));
    let mut offset = got.offset.expect("an offset with the event");
    away(ws);
    let mut times = Vec::new();
    let mut errors = Vec::new();
    let mut last = 1;
    for trial in 0..trials {
        for seq in last + 1..=last + events as u64 {
            server.publish(&floor::event_message(seq, 0));
        }
        let start = Instant::now();
        let mut ws = client::connect(server.ws, SOCKETIO_QUERY, None);
        let early;
        (pid, early) = socketio_join(&mut ws, Some((&pid, &offset)));
        let mut reading = Reading::new(events as u64, Some(last + 1), None, false);
        for message in &early {
            reading.take_message(message);
        }
        let got = client::receive(&mut ws, reading);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        if let Some(e) = got.error {
            errors.push(format!("trial {trial}: {e}"));
        }
        last = got.last_seq;
        offset = got.offset.unwrap_or(offset);
        away(ws);
    }
    (times, errors)
}
