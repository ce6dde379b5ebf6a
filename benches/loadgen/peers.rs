//! The peers measured beside tether when they are installed: mosquitto
//! (`mqtt.rs`) and nchan, the nginx module. Each is started by
//! [`Server::start`](crate::server::Server::start) from a configuration
//! written here, in a directory of its own, with its listeners on free
//! loopback ports (neither can be told to pick its own and report it).

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::client::{self, Reading};
use crate::floor;
use crate::server::{Kind, Server};

/// How to start a peer and know it is ready.
pub struct Setup {
    /// The directory holding its configuration (and nginx's scratch
    /// files), removed when the server is dropped.
    pub dir: PathBuf,
    pub args: Vec<OsString>,
    /// Its WebSocket listener (subscribers), and where publishers go:
    /// mosquitto's MQTT listener, nchan's HTTP one (the same port).
    pub ws: SocketAddr,
    pub http: SocketAddr,
    /// The end of the line it logs once it accepts connections.
    pub ready: &'static str,
}

/// The peer's program: the one its variable names, or the one on the PATH.
pub fn program(kind: Kind) -> PathBuf {
    let (variable, default) = match kind {
        Kind::Mosquitto => ("BENCH_MOSQUITTO", "mosquitto"),
        Kind::Nchan => ("BENCH_NGINX", "nginx"),
        _ => unreachable!("not a peer"),
    };
    std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// Whether `kind` can be measured here: for nchan, nginx and Debian's
/// module; for mosquitto, the broker.
pub fn installed(kind: Kind) -> bool {
    let runs = Command::new(program(kind))
        .arg(if kind == Kind::Nchan { "-v" } else { "-h" })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    runs && (kind != Kind::Nchan || std::path::Path::new(NCHAN_MODULE).exists())
}

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
                ws,
                http: mqtt,
                ready: " running",
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
                dir,
                ws: addr,
                http: addr,
                ready: "start worker processes",
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
