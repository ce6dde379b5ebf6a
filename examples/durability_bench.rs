//! Measures what `--data-dir` costs: publish throughput and replay time with
//! durability off and on, disk bytes per event, and restart time with 10k
//! sessions and 100k retained events. Runs the release binary:
//!
//!     cargo build --release && cargo run --release --example durability_bench
//!
//! Optional argument: how many times to repeat each figure (median printed).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

const BINARY: &str = "target/release/tether";

struct Server {
    child: Child,
    ws: SocketAddr,
    admin: SocketAddr,
    started_in: Duration,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let began = Instant::now();
        let mut child = Command::new(BINARY)
            .arg("serve")
            .args([
                "--ws-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--max-missed-events", "100000"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("build the release binary first: cargo build --release");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (mut ws, mut admin) = (None, None);
        while ws.is_none() || admin.is_none() {
            let line = lines.next().expect("server output").unwrap();
            let addr = |m: &str| {
                line.split(m)
                    .nth(1)
                    .map(|a| a.trim().parse::<SocketAddr>().unwrap())
            };
            ws = ws.or(addr("websocket listening on "));
            admin = admin.or(addr("admin listening on "));
        }
        let started_in = began.elapsed();
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            child,
            ws: ws.unwrap(),
            admin: admin.unwrap(),
            started_in,
        }
    }

    fn post(&self, agent: &ureq::Agent, body: &str) {
        let status = agent
            .post(format!("http://{}/events", self.admin))
            .send(body)
            .unwrap()
            .status();
        assert_eq!(status, 202);
    }

    fn stop(mut self, signal: &str) {
        Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap();
    }
}

fn event(n: usize) -> Value {
    // About 200 bytes of JSON.
    json!({"event_type": "bench.event", "data": {"n": n, "pad": "x".repeat(150)}})
}

fn connect(
    server: &Server,
    query: &str,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>> {
    let (ws, _) = tungstenite::connect(format!("ws://{}/ws?{query}", server.ws)).unwrap();
    ws
}

fn read_json(
    ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
) -> Value {
    loop {
        if let Message::Text(t) = ws.read().unwrap() {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// Events per second accepted by POST /events: `requests` bodies of `size` events.
fn publish_rate(server: &Server, size: usize, requests: usize) -> f64 {
    let agent = ureq::Agent::new_with_defaults();
    let bodies: Vec<String> = (0..requests)
        .map(|r| {
            let events: Vec<Value> = (0..size).map(|i| event(r * size + i)).collect();
            if size == 1 {
                events[0].to_string()
            } else {
                Value::Array(events).to_string()
            }
        })
        .collect();
    let began = Instant::now();
    for body in &bodies {
        server.post(&agent, body);
    }
    (size * requests) as f64 / began.elapsed().as_secs_f64()
}

/// Milliseconds from starting the connect to the 1000th replayed event.
fn replay_ms(server: &Server, id: &str) -> f64 {
    let mut ws = connect(server, &format!("client_id={id}&client_type=cli"));
    let token = read_json(&mut ws)["data"]["resume_token"]
        .as_str()
        .unwrap()
        .to_string();
    drop(ws);
    std::thread::sleep(Duration::from_millis(50));
    let agent = ureq::Agent::new_with_defaults();
    let events: Vec<Value> = (0..1000).map(event).collect();
    server.post(&agent, &Value::Array(events).to_string());
    let began = Instant::now();
    let mut ws = connect(
        server,
        &format!("client_id={id}&resume_token={token}&last_seq=0"),
    );
    let sync = read_json(&mut ws);
    assert_eq!(sync["data"]["missed_events"], 1000);
    let mut got = 0;
    while got < 1000 {
        let msg = read_json(&mut ws);
        got += match msg["type"].as_str() {
            Some("event") => 1,
            Some("event_batch") => msg["events"].as_array().unwrap().len(),
            _ => 0,
        };
    }
    began.elapsed().as_secs_f64() * 1000.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.map(|e| e.unwrap().metadata().unwrap().len()).sum())
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn main() {
    let runs: usize = std::env::args().nth(1).map_or(3, |r| r.parse().unwrap());
    println!("durability bench: medians of {runs} runs; binary {BINARY}");
    let modes: [(&str, Option<&str>); 3] = [
        ("memory only", None),
        ("--data-dir, fsync every batch", Some("0")),
        ("--data-dir, --fsync-interval-ms 10", Some("10")),
    ];
    println!("| mode | publish, 1000-event arrays (events/s) | publish, single events (events/s) | replay 1000 missed (ms) |");
    println!("|---|---|---|---|");
    for (name, fsync) in modes {
        let (mut arrays, mut singles, mut replays) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            let dir = fresh_dir(&format!("mode{run}"));
            let dir_arg = dir.to_str().unwrap().to_string();
            let mut args: Vec<&str> = Vec::new();
            if let Some(ms) = fsync {
                args.extend(["--data-dir", &dir_arg, "--fsync-interval-ms", ms]);
            }
            let server = Server::start(&args);
            // One session that receives everything, as in real use.
            let mut ws = connect(&server, "client_id=reader&client_type=cli");
            read_json(&mut ws);
            std::thread::spawn(move || while ws.read().is_ok() {});
            arrays.push(publish_rate(&server, 1000, 30));
            singles.push(publish_rate(&server, 1, 2000));
            replays.push(replay_ms(&server, &format!("replay{run}")));
            server.stop("TERM");
            let _ = std::fs::remove_dir_all(&dir);
        }
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} |",
            median(arrays),
            median(singles),
            median(replays)
        );
    }

    // Disk bytes per event: the log only, before any snapshot.
    let dir = fresh_dir("disk");
    let dir_arg = dir.to_str().unwrap().to_string();
    let server = Server::start(&["--data-dir", &dir_arg]);
    let sample = event(12345).to_string().len();
    publish_rate(&server, 1000, 20);
    let bytes = dir_bytes(&dir);
    println!("\ndisk: {:.0} bytes per event in the log for ~{sample}-byte published JSON ({} bytes for 20000 events)", bytes as f64 / 20000.0, bytes);
    server.stop("KILL");
    let _ = std::fs::remove_dir_all(&dir);

    // Restart with 10k sessions and 100k retained events (10 per session).
    let dir = fresh_dir("restart");
    let dir_arg = dir.to_str().unwrap().to_string();
    let server = Server::start(&["--data-dir", &dir_arg]);
    for i in 0..10_000 {
        let mut ws = connect(&server, &format!("client_id=s{i}&client_type=cli"));
        read_json(&mut ws);
    }
    let agent = ureq::Agent::new_with_defaults();
    for chunk in 0..100 {
        let events: Vec<Value> = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                let mut e = event(n);
                e["targets"] = json!([format!("s{}", n % 10_000)]);
                e
            })
            .collect();
        server.post(&agent, &Value::Array(events).to_string());
    }
    server.stop("KILL");
    println!(
        "\nrestart with 10000 sessions and 100000 retained events ({} MB on disk):",
        dir_bytes(&dir) / 1_000_000
    );
    let mut after_crash = Vec::new();
    let mut after_clean = Vec::new();
    for _ in 0..runs {
        // After a crash: whatever the log holds since the last snapshot is replayed.
        let server = Server::start(&["--data-dir", &dir_arg]);
        after_crash.push(server.started_in.as_secs_f64() * 1000.0);
        server.stop("TERM");
        // After a clean stop: the snapshot alone.
        let server = Server::start(&["--data-dir", &dir_arg]);
        after_clean.push(server.started_in.as_secs_f64() * 1000.0);
        let check = ureq::get(format!("http://{}/health", server.admin))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        assert!(check.contains("\"sessions\":10000"), "{check}");
        server.stop("KILL");
    }
    println!(
        "  from the first start after a SIGKILL (log replay): {:.0} ms",
        after_crash[0]
    );
    println!(
        "  median start after SIGKILL: {:.0} ms; after SIGTERM (snapshot): {:.0} ms",
        median(after_crash),
        median(after_clean)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
