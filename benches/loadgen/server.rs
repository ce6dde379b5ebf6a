//! The servers under test: child processes started on free ports, whose
//! memory and CPU are read from `/proc`, or servers started elsewhere
//! (`--tether-at`, `--baseline-at`) that the harness only talks to.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::peers;

/// The servers running now, killed if the harness itself is interrupted.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// On SIGINT or SIGTERM, kills the servers this harness started and exits,
/// so an interrupted benchmark leaves nothing running.
pub fn kill_servers_on_interrupt() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            for &pid in RUNNING.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let workers = children(pid);
                kill(pid);
                workers.into_iter().for_each(kill);
            }
            std::process::exit(128 + signal);
        }
    });
}

/// Which server a measurement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tether,
    Baseline,
    /// M2b's floor: this harness itself with `--floor-server`
    /// (`floor.rs`), fed the events on its standard input.
    Floor,
    /// The peers (`peers.rs`): mosquitto, whose WebSocket listener is
    /// `ws` and MQTT listener `http` (`mqtt.rs`), nchan in nginx, and a
    /// Socket.IO server in Node.
    Mosquitto,
    Nchan,
    SocketIo,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tether => "tether",
            Kind::Baseline => "baseline",
            Kind::Floor => "floor",
            Kind::Mosquitto => "mosquitto",
            Kind::Nchan => "nchan",
            Kind::SocketIo => "socket.io",
        }
    }

    pub fn is_peer(self) -> bool {
        matches!(self, Kind::Mosquitto | Kind::Nchan | Kind::SocketIo)
    }

    /// The binaries cargo built beside this harness; `BENCH_TETHER` names
    /// another `tether` binary (for instance one built with symbols, for
    /// profiling).
    fn program(self) -> PathBuf {
        let built = PathBuf::from(env!("CARGO_BIN_EXE_tether"));
        match self {
            Kind::Tether => std::env::var_os("BENCH_TETHER").map_or(built, PathBuf::from),
            Kind::Baseline => built.with_file_name("examples").join("baseline"),
            Kind::Floor => std::env::current_exe().expect("the harness's own path"),
            Kind::Mosquitto | Kind::Nchan | Kind::SocketIo => peers::program(self),
        }
    }
}

/// The release `tether` binary the benchmark runs.
pub fn tether_binary() -> PathBuf {
    Kind::Tether.program()
}

/// A running server; dropping one this harness started kills it.
pub struct Server {
    pub kind: Kind,
    /// None for a server started elsewhere ([`Server::attach`]).
    child: Option<Child>,
    pub ws: SocketAddr,
    /// The publish and admin address; the floor has none and is fed
    /// through `input`.
    pub http: SocketAddr,
    pub input: Option<ChildStdin>,
    agent: ureq::Agent,
    /// A peer's configuration directory, removed with the server.
    scratch: Option<PathBuf>,
}

impl Server {
    /// Starts `kind` on free loopback ports; `flags` go to `tether serve`.
    pub fn start(kind: Kind, flags: &[&str]) -> Server {
        let program = kind.program();
        let setup = kind.is_peer().then(|| peers::setup(kind));
        let mut command = Command::new(&program);
        match kind {
            Kind::Tether => command
                .args(["serve", "--ws-listen", "127.0.0.1:0"])
                .args(["--admin-listen", "127.0.0.1:0", "--log-level", "info"])
                .args(flags),
            Kind::Baseline => command.args(["127.0.0.1:0", "127.0.0.1:0"]),
            Kind::Floor => command.arg("--floor-server"),
            Kind::Mosquitto | Kind::Nchan | Kind::SocketIo => {
                let setup = setup.as_ref().expect("made");
                command.args(&setup.args).envs(setup.env.iter().cloned())
            }
        };
        let input = if kind == Kind::Floor {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut child = command
            .stdin(input)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); build it first: make bench",
                    program.display()
                )
            });
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let (mut ws, mut http) = (None, None);
        while ws.is_none() || (http.is_none() && kind != Kind::Floor) {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("{} exited before listening", kind.name());
            };
            let addr = |tag: &str| {
                line.split_once(tag)
                    .and_then(|(_, a)| a.trim().parse::<SocketAddr>().ok())
            };
            ws = ws.or(addr("websocket listening on "));
            http = http.or(addr("admin listening on "));
            if let Some((ready, ws_at, http_at)) = setup.as_ref().and_then(|s| s.listening) {
                if line.ends_with(ready) {
                    (ws, http) = (Some(ws_at), Some(http_at));
                }
            }
        }
        RUNNING.lock().unwrap().push(child.id());
        let input = child.stdin.take();
        // Keep draining stderr so the server never blocks on a full pipe.
        thread::spawn(move || lines.for_each(drop));
        Server {
            kind,
            child: Some(child),
            ws: ws.expect("seen"),
            http: http.or(ws).expect("seen"),
            input,
            agent: agent(),
            scratch: setup.map(|s| s.dir),
        }
    }

    /// A server started elsewhere, perhaps on another machine, listening
    /// on `ws` and `http`. The harness neither starts nor stops it, and
    /// cannot read its memory or CPU.
    pub fn attach(kind: Kind, ws: SocketAddr, http: SocketAddr) -> Server {
        Server {
            kind,
            child: None,
            ws,
            http,
            input: None,
            agent: agent(),
            scratch: None,
        }
    }

    /// Whether this harness started the server (and so has it to itself).
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("only a server this harness started has a process here")
            .id()
    }

    /// The server's processes: its own, and its children's (nginx's
    /// workers).
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid()];
        pids.extend(children(self.pid()));
        pids
    }

    /// Resident memory in bytes, of all its processes.
    pub fn rss(&self) -> u64 {
        self.pids()
            .into_iter()
            .map(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .expect("the server is running");
                proc_bytes(&status, "VmRSS").expect("VmRSS")
            })
            .sum()
    }

    /// Resident memory once it stops changing (allocators and the kernel
    /// settle for a moment after a burst of connections).
    pub fn settled_rss(&self) -> u64 {
        let mut last = self.rss();
        for _ in 0..20 {
            thread::sleep(Duration::from_millis(250));
            let now = self.rss();
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    /// User plus system CPU time used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let (user, system) = self.cpu_split();
        user + system
    }

    /// User and system CPU time used so far by all its processes, in
    /// seconds.
    pub fn cpu_split(&self) -> (f64, f64) {
        self.pids()
            .into_iter()
            .fold((0.0, 0.0), |(user, system), pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .expect("the server is running");
                // Fields after the command name, which is in parentheses: utime
                // and stime are the 12th and 13th of them.
                let after = &stat[stat.rfind(')').expect("comm") + 2..];
                let fields: Vec<&str> = after.split_whitespace().collect();
                let seconds =
                    |i: usize| fields[i].parse::<f64>().unwrap() / clock_ticks_per_second();
                (user + seconds(11), system + seconds(12))
            })
    }

    /// One HTTP request to the server's admin (or publish) listener:
    /// status and body.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let url = format!("http://{}{path}", self.http);
        let result = match (method, body) {
            ("GET", _) => authorized(self.agent.get(&url)).call(),
            ("DELETE", _) => authorized(self.agent.delete(&url)).call(),
            ("POST", Some(body)) => authorized(self.agent.post(&url))
                .header("Content-Type", "application/json")
                .send(body),
            _ => panic!("unsupported request {method} {path}"),
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (response.status().as_u16(), text)
    }

    pub fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.request("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// Publishes a `POST /events` body; panics unless it is accepted.
    /// Returns the answer's body (nchan's names the message's id).
    pub fn publish(&self, body: &str) -> String {
        let (status, reply) = self.request("POST", "/events", Some(body));
        if status == 401 {
            panic!("publish refused: {reply}; set BENCH_ADMIN_TOKEN to tether's admin token");
        }
        // nchan answers 201 when a subscriber is listening, 202 otherwise.
        let accepted = status == 202 || (self.kind == Kind::Nchan && status == 201);
        assert!(accepted, "publish refused: {status} {reply}");
        reply
    }

    /// tether only: waits until `/health` reports `connected` connections.
    pub fn wait_connected(&self, connected: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get_json("/health")["connected"] != connected {
            assert!(
                Instant::now() < deadline,
                "tether never reached {connected} connections"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(child) = &mut self.child else {
            return;
        };
        // nginx's workers outlive a killed master, and a live master
        // replaces a killed worker: list them, kill the master, then them.
        let workers = children(child.id());
        let _ = child.kill();
        workers.into_iter().for_each(kill);
        let _ = child.wait();
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
        let pid = child.id();
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != pid);
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        // One keep-alive connection per M2b publisher.
        .max_idle_connections_per_host(8)
        .build()
        .into()
}

/// Adds tether's admin token from `BENCH_ADMIN_TOKEN`, which a tether
/// listening on a public address needs; the environment rather than a
/// flag, so the token shows in no process list.
fn authorized<B>(request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
    static TOKEN: OnceLock<Option<String>> = OnceLock::new();
    match TOKEN.get_or_init(|| std::env::var("BENCH_ADMIN_TOKEN").ok()) {
        Some(token) => request.header("Authorization", format!("Bearer {token}")),
        None => request,
    }
}

/// The processes `pid` started (none once it has exited).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn kill(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `Name:   1234 kB` field of a `/proc` file such as `status` or
/// `meminfo`, in bytes.
pub fn proc_bytes(text: &str, field: &str) -> Option<u64> {
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    let kib = value
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}
