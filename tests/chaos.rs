//! The proof of the client half: 20 `tether listen` processes behind a TCP
//! proxy that cuts each connection 50-300 ms after it opens (often in the
//! middle of a frame), three of them also SIGKILLed and restarted from their
//! state files, while 5000 events of mixed types are published. Each prints
//! exactly the events its filter matches, in seq order, none missing and
//! none twice (apart from one event per SIGKILL, same seq). A second run
//! cuts library clients with `simulate-disconnect` instead.

mod client_support;
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client_support::{join_incarnations, Listen, Prng};
use common::*;
use serde_json::{json, Value};
use tether::client::{Client, ClientConfig, Received};
use tether::preferences::pattern_matches;
use tether::{Config, Strategy};

const EVENT_TYPES: &[&str] = &[
    "build.started",
    "build.finished",
    "deploy.step",
    "deploy.done",
    "alert.disk",
    "alert.cpu",
    "metrics",
    "audit",
];

/// The subscription of client `i`; empty means every event.
fn filter(i: usize) -> Vec<&'static str> {
    match i % 7 {
        0 => vec!["build.*"],
        1 => vec!["deploy.*", "alert.cpu"],
        2 => vec![],
        3 => vec!["metrics", "audit"],
        4 => vec!["alert.*"],
        5 => vec!["build.finished", "deploy.done", "metrics"],
        _ => vec!["*"],
    }
}

fn matches(filter: &[&str], event_type: &str) -> bool {
    filter.is_empty() || filter.iter().any(|p| pattern_matches(p, event_type))
}

/// How long the whole convergence may take on a slow, busy machine.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(40);

/// A TCP proxy in front of the server that cuts every connection at a
/// random moment 50-300 ms after it opened, while `cutting` is set: both
/// sockets are shut down at once, after forwarding a random part of the
/// chunk in flight, so the client usually loses the end of a frame.
struct Proxy {
    addr: SocketAddr,
    cutting: Arc<AtomicBool>,
    cuts: Arc<AtomicU64>,
    /// Cuts that left part of the data in flight unsent.
    mid_frame: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
}

impl Proxy {
    fn start(upstream: SocketAddr, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            cutting: Arc::new(AtomicBool::new(false)),
            cuts: Arc::new(AtomicU64::new(0)),
            mid_frame: Arc::new(AtomicU64::new(0)),
            accepted: Arc::new(AtomicU64::new(0)),
        };
        let mid_frame = Arc::clone(&proxy.mid_frame);
        let accepted = Arc::clone(&proxy.accepted);
        let (cutting, cuts) = (Arc::clone(&proxy.cutting), Arc::clone(&proxy.cuts));
        std::thread::spawn(move || {
            let mut rng = Prng::new(seed);
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                accepted.fetch_add(1, Ordering::Relaxed);
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let link = Arc::new(Link {
                    client,
                    server,
                    cutting: Arc::clone(&cutting),
                    cuts: Arc::clone(&cuts),
                    mid_frame: Arc::clone(&mid_frame),
                });
                let up = Arc::clone(&link);
                let rng = Prng::new(rng.next_u64());
                std::thread::spawn(move || up.pump_up());
                std::thread::spawn(move || link.pump_down(rng));
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// One proxied connection.
struct Link {
    client: TcpStream,
    server: TcpStream,
    cutting: Arc<AtomicBool>,
    cuts: Arc<AtomicU64>,
    mid_frame: Arc<AtomicU64>,
}

impl Link {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }

    /// Client to server, until either side closes.
    fn pump_up(&self) {
        let mut buf = [0u8; 4096];
        loop {
            match (&self.client).read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if (&self.server).write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        self.close();
    }

    /// Server to client. Every 50-300 ms a deadline comes; if cutting is
    /// on then, the connection is cut (even while a write to a slow client
    /// is waiting), else the next deadline is drawn.
    fn pump_down(&self, mut rng: Prng) {
        let mut buf = [0u8; 4096];
        let lifetime = |rng: &mut Prng| Duration::from_millis(rng.range(50, 300));
        let until = |deadline: Instant| {
            Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            )
        };
        let mut deadline = Instant::now() + lifetime(&mut rng);
        let mut waited_for_data = false;
        'connection: loop {
            let _ = self.server.set_read_timeout(until(deadline));
            let n = match (&self.server).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if is_timeout(&e) => 0,
                Err(_) => break,
            };
            let mut data = &buf[..n];
            loop {
                if Instant::now() >= deadline && data.is_empty() && !waited_for_data {
                    // Nothing in flight: give the server a moment to send
                    // something, so that most cuts fall inside a frame.
                    waited_for_data = true;
                    deadline += Duration::from_millis(100);
                }
                if Instant::now() >= deadline || (waited_for_data && !data.is_empty()) {
                    waited_for_data = false;
                    if self.cutting.load(Ordering::Acquire) {
                        // Forward part of what is in flight: the client
                        // sees a frame end in the middle.
                        let part = (rng.next_u64() % (data.len() as u64 + 1)) as usize;
                        let _ = self
                            .client
                            .set_write_timeout(Some(Duration::from_millis(10)));
                        let _ = (&self.client).write(&data[..part]);
                        self.cuts.fetch_add(1, Ordering::Relaxed);
                        if part < data.len() {
                            self.mid_frame.fetch_add(1, Ordering::Relaxed);
                        }
                        break 'connection;
                    }
                    deadline = Instant::now() + lifetime(&mut rng);
                }
                if data.is_empty() {
                    break;
                }
                let _ = self.client.set_write_timeout(until(deadline));
                match (&self.client).write(data) {
                    Ok(0) => break 'connection,
                    Ok(k) => data = &data[k..],
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => break 'connection,
                }
            }
        }
        self.close();
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Published events: (id, event_type), in id order.
type Published = Vec<(u64, &'static str)>;

/// Publishes `total` events of random types and priorities in batches of
/// `batch`, calling `between` after each batch.
fn publish_all(
    server: &TestServer,
    rng: &mut Prng,
    total: usize,
    batch: usize,
    mut between: impl FnMut(usize, &mut Prng),
) -> Published {
    let mut published = Vec::new();
    let priorities = ["low", "medium", "high", "critical"];
    for b in 0..total / batch {
        let events: Vec<(&'static str, Value)> = (0..batch)
            .map(|i| {
                let t = EVENT_TYPES[rng.range(0, EVENT_TYPES.len() as u64 - 1) as usize];
                let p = priorities[rng.range(0, 3) as usize];
                (
                    t,
                    json!({"event_type": t, "priority": p, "data": {"b": b, "i": i}}),
                )
            })
            .collect();
        let body = Value::Array(events.iter().map(|(_, e)| e.clone()).collect());
        let ids = server.publish(&body);
        published.extend(ids.into_iter().zip(events.iter().map(|(t, _)| *t)));
        between(b, rng);
    }
    published
}

/// Checks one client's events: exactly the ids its filter matches, with
/// seqs 1..=N in order.
fn check(name: &str, filter: &[&str], published: &Published, events: &[Value]) {
    let expected: Vec<u64> = published
        .iter()
        .filter(|(_, t)| matches(filter, t))
        .map(|(id, _)| *id)
        .collect();
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let want_seqs: Vec<u64> = (1..=expected.len() as u64).collect();
    if seqs != want_seqs || ids != expected {
        let first_bad = seqs
            .iter()
            .zip(&want_seqs)
            .position(|(a, b)| a != b)
            .or_else(|| ids.iter().zip(&expected).position(|(a, b)| a != b));
        panic!(
            "{name}: got {} events, want {}; first difference at index {first_bad:?}",
            events.len(),
            expected.len()
        );
    }
}

/// Waits until every session in `ids` exists with its filter and rate applied.
fn wait_preferences(server: &TestServer, ids: &[(String, Vec<&str>)]) {
    for (id, filter) in ids {
        wait_until(&format!("{id} has its preferences"), || {
            let reply = server.get(&format!("/reconnection/sessions/{id}"));
            if reply.status != 200 {
                return false;
            }
            let p = &reply.json()["preferences"];
            p["event_types"] == json!(filter) && p["max_events_per_second"] == 10_000
        });
    }
}

fn chaos_config() -> Config {
    Config {
        strategy: Strategy::ExponentialBackoff,
        initial_delay_ms: 5,
        max_delay_ms: 100,
        max_retry_attempts: 10_000,
        // Overflow is a documented way to lose events; this test is about
        // disconnects, so nothing may overflow.
        max_missed_events: 10_000,
        heartbeat_interval_ms: 1000,
        ..config()
    }
}

#[test]
fn listen_processes_behind_a_cutting_proxy_get_every_event_once() {
    let started = Instant::now();
    let mut rng = Prng::from_env_or_os("chaos");
    let server = start_with(chaos_config());
    let proxy = Proxy::start(server.ws, rng.next_u64());
    // Twenty processes replacing their state file once per event spend most
    // of their time in ext4's rename path (about 0.2 ms a rename); on tmpfs
    // it costs a tenth, and the clients keep up with the publisher.
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("tether-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let clients: Vec<(String, Vec<&str>)> = (0..20)
        .map(|i| (format!("chaos-{i:02}"), filter(i)))
        .collect();
    let mut listens: Vec<Listen> = clients
        .iter()
        .enumerate()
        .map(|(i, (id, filter))| {
            let mut args = vec![
                "--url".to_string(),
                proxy.url(),
                format!("--client-id={id}"),
                format!("--state-file={}", dir.join(format!("{id}.json")).display()),
                "--max-events-per-second=10000".into(),
                // Every fourth is a web client: batched delivery (once the
                // server paces), replays as event_batch.
                format!("--client-type={}", if i % 4 == 3 { "web" } else { "cli" }),
            ];
            if !filter.is_empty() {
                args.push(format!("--event-types={}", filter.join(",")));
            }
            Listen::start(&args)
        })
        .collect();
    // A new session whose connection_established is cut off cannot be
    // resumed by anyone (its token never arrived), so the cuts begin once
    // every session is set up.
    wait_preferences(&server, &clients);
    proxy.cutting.store(true, Ordering::Release);

    // Three clients are SIGKILLed twice each, after random batches.
    let victims = [0usize, 7, 14];
    let mut kill_at: Vec<(usize, usize)> = victims
        .iter()
        .flat_map(|&v| [v, v])
        .map(|v| (rng.range(5, 95) as usize, v))
        .collect();
    kill_at.sort_unstable();
    let mut kills = 0;
    let published = publish_all(&server, &mut rng, 5000, 50, |b, rng| {
        for &(_, victim) in kill_at.iter().filter(|(at, _)| *at == b) {
            // Only a client that has printed in this incarnation surely has
            // its state file.
            if listens[victim].printed_now() > 0 {
                listens[victim].kill_and_restart();
                kills += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.range(20, 80)));
    });
    let publish_done = started.elapsed();
    println!(
        "chaos: published in {:.1} s; {} connections through the proxy",
        publish_done.as_secs_f64(),
        proxy.accepted.load(Ordering::Relaxed)
    );

    // Let the clients catch up under cuts for a moment, then calm down.
    let want: Vec<usize> = clients
        .iter()
        .map(|(_, f)| published.iter().filter(|(_, t)| matches(f, t)).count())
        .collect();
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let mut calm = false;
    loop {
        let done = listens
            .iter()
            .zip(&want)
            .all(|(l, w)| l.last_seq() >= *w as u64);
        if done {
            break;
        }
        if !calm && started.elapsed() > publish_done + Duration::from_secs(2) {
            proxy.cutting.store(false, Ordering::Release);
            calm = true;
        }
        if Instant::now() > deadline {
            let counts: Vec<String> = listens
                .iter()
                .zip(&want)
                .map(|(l, w)| format!("{}/{w}", l.last_seq()))
                .collect();
            panic!(
                "clients did not catch up: {counts:?}\nstderr of the first behind:\n{}",
                listens
                    .iter()
                    .zip(&want)
                    .find(|(l, w)| l.last_seq() < **w as u64)
                    .map_or(String::new(), |(l, _)| l.stderr())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.cutting.store(false, Ordering::Release);

    // Everything processed is acknowledged, so the server releases it.
    for (id, _) in &clients {
        wait_until(&format!("{id} acknowledged everything"), || {
            let s = server.session(id);
            s["acked_seq"] == s["current_seq"] && s["retained_events"] == 0
        });
    }
    let mut repeats = 0;
    for (i, listen) in listens.iter().enumerate() {
        let (events, r) = join_incarnations(&listen.events());
        repeats += r;
        check(&clients[i].0, &clients[i].1, &published, &events);
        assert!(
            !listen.stderr().contains("gap"),
            "{}: {}",
            clients[i].0,
            listen.stderr()
        );
    }
    for listen in &listens {
        listen.signal("TERM");
    }
    for listen in &mut listens {
        assert_eq!(listen.wait_exit(), 0, "{}", listen.stderr());
    }
    let sessions = server.get("/reconnection/sessions").json();
    let resumes: u64 = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reconnect_count"].as_u64().unwrap())
        .sum();
    let cuts = proxy.cuts.load(Ordering::Relaxed);
    let mid_frame = proxy.mid_frame.load(Ordering::Relaxed);
    println!(
        "chaos: {} events published, {} delivered; {cuts} cuts ({mid_frame} with data in flight), \
         {resumes} resumes, {kills} SIGKILLs ({repeats} events printed twice across them), {:.1} s",
        published.len(),
        want.iter().sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    assert!(cuts >= 100, "the proxy cut only {cuts} connections");
    // Each cut is followed by a resume, unless it hit a connection still in
    // its handshake (then the retry resumes).
    assert!(resumes >= cuts / 2, "{resumes} resumes for {cuts} cuts");
    assert!(kills >= 3, "only {kills} clients were killed");
    assert!(repeats <= kills);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn library_clients_cut_by_simulate_disconnect_get_every_event_once() {
    let started = Instant::now();
    let mut rng = Prng::from_env_or_os("simulate-disconnect");
    let server = start_with(chaos_config());
    let clients: Vec<(String, Vec<&'static str>)> =
        (0..5).map(|i| (format!("sim-{i}"), filter(i))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (id, filter) in &clients {
        let config = ClientConfig {
            client_id: Some(id.clone()),
            preferences: Some(json!({"event_types": filter, "max_events_per_second": 10_000})),
            ..ClientConfig::new(server.url(""))
        };
        let stop = Arc::clone(&stop);
        let got = Arc::new(Mutex::new(Vec::new()));
        let mine = Arc::clone(&got);
        let thread = std::thread::spawn(move || {
            let mut client = Client::new(config).unwrap();
            let mut gaps = Vec::new();
            while !stop.load(Ordering::Acquire) {
                match client.recv_timeout(Duration::from_millis(50)).unwrap() {
                    Some(Received::Event(e)) => mine
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str::<Value>(&e.to_json()).unwrap()),
                    Some(Received::Gap(g)) => gaps.push(g),
                    _ => {}
                }
            }
            let stats = client.stats();
            client.close().unwrap();
            (gaps, stats)
        });
        threads.push((thread, got));
    }
    wait_preferences(&server, &clients);

    let mut disconnects = 0u64;
    let published = publish_all(&server, &mut rng, 1000, 20, |_, rng| {
        for _ in 0..rng.range(1, 2) {
            let (id, _) = &clients[rng.range(0, clients.len() as u64 - 1) as usize];
            let reply = server.post(&format!("/reconnection/simulate-disconnect/{id}"), "");
            assert_eq!(reply.status, 200, "{}", reply.body);
            if reply.json()["was_connected"] == true {
                disconnects += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.range(5, 30)));
    });
    let want: Vec<usize> = clients
        .iter()
        .map(|(_, f)| published.iter().filter(|(_, t)| matches(f, t)).count())
        .collect();
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while threads
        .iter()
        .zip(&want)
        .any(|((_, got), w)| got.lock().unwrap().len() < *w)
    {
        assert!(
            Instant::now() < deadline,
            "library clients did not catch up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A cut after a client's last event is only resumed later: wait for it,
    // or that client stops one resume short of the count.
    for (id, _) in &clients {
        server.wait_state(id, "connected");
    }
    stop.store(true, Ordering::Release);
    let mut resumes = 0;
    let mut duplicates = 0;
    for (i, (thread, got)) in threads.into_iter().enumerate() {
        let (gaps, stats) = thread.join().unwrap();
        assert!(gaps.is_empty(), "{}: gaps {gaps:?}", clients[i].0);
        check(
            &clients[i].0,
            &clients[i].1,
            &published,
            &got.lock().unwrap(),
        );
        resumes += stats.resumes;
        duplicates += stats.duplicates_dropped;
    }
    println!(
        "simulate-disconnect: {} events published; {disconnects} disconnects, {resumes} resumes, \
         {duplicates} replayed duplicates dropped, {:.1} s",
        published.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(disconnects >= 20, "only {disconnects} disconnects");
    assert!(resumes >= disconnects);
}
