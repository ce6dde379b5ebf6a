//! The scenarios of issue 5. Each starts its own server process(es), so no
//! run inherits another's sessions, and returns plain numbers.

use std::io::ErrorKind;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{self, event_seq, now_us, recv_json, send_json, subscribe, Reading, Ws};
use crate::floor;
use crate::mqtt;
use crate::server::{proc_bytes, Kind, Server};
use crate::subscribers::{Readers, Subscribers};

/// tether's flags for throughput runs: the fan-out publishes far faster
/// than clients read, so sessions must be able to retain a whole run.
pub const THROUGHPUT_FLAGS: &[&str] = &["--max-missed-events", "100000"];
/// Fan-out clients acknowledge this often (the contract asks for at least
/// every `max_missed_events / 2` with the default of 1000).
pub const ACK_EVERY: u64 = 500;
/// M2b publishes from this many threads, each over its own keep-alive
/// connection, taking turns.
const LATENCY_PUBLISHERS: u64 = 4;
/// The stack of each load-generator client thread.
pub const CLIENT_STACK: usize = 256 * 1024;

/// One published item of about 200 bytes; `t` is the publish time in the
/// harness clock (microseconds), for latency.
pub fn item(event_type: &str, t: u64, targets: Option<&str>) -> String {
    let targets = targets.map_or(String::new(), |id| format!(r#","targets":["{id}"]"#));
    format!(
        r#"{{"event_type":"{event_type}","priority":"high","data":{{"t":{t:>16},"pad":"{}"}}{targets}}}"#,
        "x".repeat(112)
    )
}

/// Sleeps until event `i` of a stream at `rate` per second from `start` is
/// due; one that is late goes at once, so a stream that fell behind catches
/// up.
pub fn wait_until_due(start: Instant, i: u64, rate: u64) {
    let due = start + Duration::from_micros(i * 1_000_000 / rate);
    if let Some(wait) = due.checked_duration_since(Instant::now()) {
        thread::sleep(wait);
    }
}

/// A `POST /events` body of `n` items.
fn array_body(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|_| item("bench.tick", 0, None)).collect();
    format!("[{}]", items.join(","))
}

/// Idle memory and CPU of one server (M1, M1b).
pub struct Idle {
    pub rss_idle: u64,
    /// Bytes per idle connection at each count.
    pub per_conn: Vec<(usize, f64)>,
    /// Percent of one core used while `cpu_clients` clients sat idle.
    pub cpu_percent: f64,
    /// Kernel memory (thread stacks and unreclaimable slab, machine-wide,
    /// so both ends' sockets are in it) per connection at the last count.
    pub kernel_per_conn: f64,
    /// tether only: bytes per connection once every client of the last
    /// count has sent a heartbeat and read its answer, as a real client
    /// does: the reader thread then has handled a message.
    pub after_heartbeat: Option<f64>,
}

/// M1 and M1b: RSS with no clients, then with each of `counts` idle
/// clients (cumulative); CPU over `cpu_window` with `cpu_clients` of them.
pub fn idle(kind: Kind, counts: &[usize], cpu_clients: usize, cpu_window: Duration) -> Idle {
    let server = Server::start(kind, &[]);
    let rss_idle = server.settled_rss();
    let kernel_idle = kernel_memory();
    let mut kernel_per_conn = f64::NAN;
    let mut clients: Vec<Ws> = Vec::new();
    let mut per_conn = Vec::new();
    let mut cpu_percent = f64::NAN;
    for &n in counts {
        let more = client::open_many(kind, clients.len()..n, |i| {
            open_idle(&server, &format!("idle-{i}"))
        });
        clients.extend(more);
        if kind == Kind::Tether {
            server.wait_connected(n as u64);
        }
        let rss = server.settled_rss();
        per_conn.push((n, (rss.saturating_sub(rss_idle)) as f64 / n as f64));
        kernel_per_conn = kernel_memory().saturating_sub(kernel_idle) as f64 / n as f64;
        if n == cpu_clients {
            let before = server.cpu_seconds();
            thread::sleep(cpu_window);
            let used = server.cpu_seconds() - before;
            cpu_percent = 100.0 * used / cpu_window.as_secs_f64();
        }
    }
    let mut after_heartbeat = None;
    if kind == Kind::Tether {
        for ws in &mut clients {
            send_json(ws, r#"{"type":"heartbeat"}"#.into());
        }
        for ws in &mut clients {
            let reply = recv_json(ws);
            assert_eq!(reply["type"], "heartbeat_ack", "{reply}");
        }
        let rss = server.settled_rss();
        after_heartbeat = Some(rss.saturating_sub(rss_idle) as f64 / clients.len() as f64);
    }
    Idle {
        rss_idle,
        per_conn,
        cpu_percent,
        kernel_per_conn,
        after_heartbeat,
    }
}

/// The machine's kernel memory that connections grow, in bytes: thread
/// stacks (a thread per connection costs one, which its process's RSS does
/// not show) and unreclaimable slab (sockets, threads' task structures).
fn kernel_memory() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    ["KernelStack", "SUnreclaim"]
        .iter()
        .filter_map(|field| proc_bytes(&meminfo, field))
        .sum()
}

/// An idle client: tether's first message read, nothing more (for a
/// peer: connected and subscribed, as [`subscribe`] leaves it).
fn open_idle(server: &Server, id: &str) -> Ws {
    if server.kind.is_peer() {
        return subscribe(server, id, client::IDLE_READ_BUFFER).0;
    }
    let mut ws = client::connect(
        server.ws,
        &format!("client_id={id}&client_type=cli"),
        client::IDLE_READ_BUFFER,
    );
    if server.kind == Kind::Tether {
        recv_json(&mut ws);
    }
    ws
}

/// What a disconnected session costs tether (M1).
pub struct Disconnected {
    /// Bytes per disconnected session holding no events.
    pub per_session: f64,
    /// Bytes per retained event per session, beyond the event itself.
    pub per_retained_event: f64,
}

/// M1, disconnected sessions: clients connect and leave one after the
/// other, so each reuses the memory of the connection before it (thread
/// stack, buffers) and what grows is the sessions they leave behind. A
/// first round warms that connection machinery up; the growth of the second
/// round of `sessions` is theirs. Then `events` events are published, which
/// every session retains.
pub fn disconnected(sessions: usize, events: usize) -> Disconnected {
    const WARM: usize = 50;
    let server = Server::start(Kind::Tether, &[]);
    let round = |prefix: &str, n: usize| {
        for i in 0..n {
            drop(open_idle(&server, &format!("{prefix}-{i}")));
            // One connection at a time: wait for this one to be gone.
            server.wait_connected(0);
        }
        server.settled_rss()
    };
    let warm = round("warm", WARM);
    let grown = round("away", sessions);
    server.publish(&array_body(events));
    let retained = server.get_json("/reconnection/sessions/away-0")["retained_events"].clone();
    assert_eq!(retained, events, "every session retains every event");
    let after = server.settled_rss();
    // The events themselves, stored once: the body tether keeps (the
    // published item plus about 100 bytes of id, timestamp and names) and
    // the shared Arc<Event>, with the allocator's rounding.
    let event_bytes = (item("bench.tick", 0, None).len() + 100 + 96) as f64;
    let total_retained = ((WARM + sessions) * events) as f64;
    Disconnected {
        per_session: grown.saturating_sub(warm) as f64 / sessions as f64,
        per_retained_event: (after.saturating_sub(grown) as f64 - events as f64 * event_bytes)
            / total_retained,
    }
}

/// What a fan-out run measured.
pub struct Fanout {
    /// Deliveries per second, publish start to the last client's last event.
    pub deliveries_per_second: f64,
    /// Server CPU seconds per million deliveries.
    pub cpu_per_million: f64,
    /// Clients that saw a gap, a repeat or a reorder.
    pub errors: Vec<String>,
}

/// Starts reading a subscriber for each of `ids`, `events` events each,
/// recording latencies for M2b (`latency`).
fn start_subscribers(server: &Server, ids: &[String], events: u64, latency: bool) -> Subscribers {
    let ack = (server.kind == Kind::Tether).then_some(ACK_EVERY);
    // Each tether session numbers its own events from 1; the baseline
    // numbers all it ever published.
    let first_seq = (server.kind == Kind::Tether || server.is_started()).then_some(1);
    // M2 reads as every earlier run did, so its figures stay comparable.
    let (readers, read_buffer) = match latency {
        true => (Readers::for_latency(), client::LATENCY_READ_BUFFER),
        false => (Readers::ThreadEach, None),
    };
    let sockets = client::open_many(server.kind, 0..ids.len(), |i| {
        subscribe(server, &ids[i], read_buffer).0
    });
    Subscribers::start(sockets, readers, || {
        Reading::new(events, first_seq, ack, latency)
    })
}

/// M2: `n` subscribers, `events` published in arrays of 1000 as fast as
/// the server accepts them.
pub fn fanout(kind: Kind, n: usize, events: usize) -> Fanout {
    let server = Server::start(kind, THROUGHPUT_FLAGS);
    let ids: Vec<String> = (0..n).map(|i| format!("sub-{i}")).collect();
    let subscribers = start_subscribers(&server, &ids, events as u64, false);
    let body = array_body(1000);
    let (user0, system0) = server.cpu_split();
    let start = Instant::now();
    for first in (0..events).step_by(1000) {
        match events - first {
            1000.. => server.publish(&body),
            rest => server.publish(&array_body(rest)),
        };
    }
    let mut errors = Vec::new();
    let mut last = start;
    for (i, got) in subscribers.join().into_iter().enumerate() {
        if let Some(e) = got.error {
            errors.push(format!("sub-{i}: {e}"));
        }
        last = last.max(got.done_at.unwrap_or(last));
    }
    let deliveries = (n * events) as f64;
    let (user, system) = server.cpu_split();
    let (user, system) = (user - user0, system - system0);
    eprintln!(
        "loadgen:   {}: {:.0} k deliveries/s; server CPU: user {user:.2} s, system {system:.2} s",
        kind.name(),
        deliveries / (last - start).as_secs_f64() / 1000.0
    );
    Fanout {
        deliveries_per_second: deliveries / (last - start).as_secs_f64(),
        cpu_per_million: (user + system) / deliveries * 1e6,
        errors,
    }
}

/// What a latency run measured, in milliseconds.
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Events per second the publisher achieved.
    pub publish_rate: f64,
    /// Deliveries per second from the first publish to the last delivery:
    /// short of clients x rate when the server falls behind.
    pub deliveries_per_second: f64,
    pub errors: Vec<String>,
}

/// M2b: `n` subscribers; `rate` events per second for `seconds`, one event
/// per request from [`LATENCY_PUBLISHERS`] threads (to a peer: from one,
/// over MQTT to mosquitto), each stamped with its publish time.
///
/// A server started elsewhere outlives the run, so its subscribers' ids
/// are new to it (this process's id and a run count) and their sessions
/// are deleted afterwards.
pub fn latency(server: &Server, n: usize, rate: u64, seconds: u64) -> Latency {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let ids: Vec<String> = (0..n)
        .map(|i| format!("m2b-{}-{run}-{i}", std::process::id()))
        .collect();
    let events = rate * seconds;
    let subscribers = start_subscribers(server, &ids, events, true);
    // The peers are sent tether's own event messages, numbered here, so
    // one publisher keeps them in order; at QoS 0 mosquitto answers
    // nothing, so one connection also keeps its rate.
    let peer = server.kind.is_peer();
    let mut mqtt_publisher =
        (server.kind == Kind::Mosquitto).then(|| mqtt::Tcp::connect(server, "m2b-publisher", true));
    let start = Instant::now();
    if peer {
        for i in 0..events {
            wait_until_due(start, i, rate);
            let message = floor::event_message(i + 1, now_us());
            match &mut mqtt_publisher {
                Some(publisher) => publisher.send(&message),
                None => drop(server.publish(&message)),
            }
        }
    } else {
        // Event i is due at start + i / rate. One publisher alone falls
        // behind whenever a request takes longer than 1 / rate, then
        // catches up in a burst; the baseline's reached only 425 of 1000
        // events/s that way.
        thread::scope(|scope| {
            for first in 0..LATENCY_PUBLISHERS {
                scope.spawn(move || {
                    for i in (first..events).step_by(LATENCY_PUBLISHERS as usize) {
                        wait_until_due(start, i, rate);
                        server.publish(&item("bench.tick", now_us(), None));
                    }
                });
            }
        });
    }
    let publish_rate = events as f64 / start.elapsed().as_secs_f64();
    let latency = Latency::gather(server.kind.name(), subscribers, publish_rate);
    if !server.is_started() && server.kind == Kind::Tether {
        for id in &ids {
            server.request("DELETE", &format!("/reconnection/sessions/{id}"), None);
        }
    }
    latency
}

impl Latency {
    /// Waits for the subscribers and sums up their latencies. With
    /// `BENCH_SERIES` set it also prints p50 / p99 per 100 ms of publishing,
    /// which shows when in a run the slow deliveries happen.
    pub fn gather(name: &str, subscribers: Subscribers, publish_rate: f64) -> Latency {
        let mut errors = Vec::new();
        let mut all: Vec<(u32, u32)> = Vec::new();
        for (i, got) in subscribers.join().into_iter().enumerate() {
            if let Some(e) = got.error {
                errors.push(format!("subscriber {i}: {e}"));
            }
            all.extend(got.latencies);
        }
        if std::env::var_os("BENCH_SERIES").is_some() {
            print_series(name, &mut all);
        }
        let first_us = all.iter().map(|&(sent, _)| u64::from(sent) * 1000).min();
        let last_us = all
            .iter()
            .map(|&(sent, latency)| u64::from(sent) * 1000 + u64::from(latency))
            .max();
        let span_s = last_us
            .zip(first_us)
            .map_or(0.0, |(l, f)| (l - f) as f64 / 1e6);
        let deliveries_per_second = all.len() as f64 / span_s;
        let mut all: Vec<u32> = all.into_iter().map(|(_, latency)| latency).collect();
        all.sort_unstable();
        let ms = |q: f64| f64::from(crate::table::percentile(&all, q)) / 1000.0;
        Latency {
            p50: ms(0.50),
            p99: ms(0.99),
            max: ms(1.0),
            publish_rate,
            deliveries_per_second,
            errors,
        }
    }
}

/// Prints `start-ms:p50/p99` (ms) for each 100 ms of publish times.
fn print_series(name: &str, samples: &mut [(u32, u32)]) {
    samples.sort_unstable();
    let first = samples.first().map_or(0, |s| s.0);
    let mut line = String::new();
    for bucket in samples.chunk_by(|a, b| (a.0 - first) / 100 == (b.0 - first) / 100) {
        let mut latencies: Vec<u32> = bucket.iter().map(|s| s.1).collect();
        latencies.sort_unstable();
        let ms = |q: f64| crate::table::percentile(&latencies, q) / 1000;
        line += &format!(
            " {}:{}/{}",
            (bucket[0].0 - first) / 100 * 100,
            ms(0.5),
            ms(0.99)
        );
    }
    eprintln!("loadgen:   {name}, p50/p99 (ms) per 100 ms of publishing:{line}");
}

/// M3: a session away while `events` are published resumes; milliseconds
/// from starting the TCP connect to the last missed event, per trial.
pub fn replay(trials: usize, events: usize) -> (Vec<f64>, Vec<String>) {
    let server = Server::start(Kind::Tether, &[]);
    let (ws, token) = subscribe(&server, "replay", None);
    drop(ws);
    server.wait_connected(0);
    let body = array_body(events);
    let mut times = Vec::new();
    let mut errors = Vec::new();
    let mut last = 0u64;
    for trial in 0..trials {
        server.publish(&body);
        let query = format!("client_id=replay&resume_token={token}&last_seq={last}");
        let start = Instant::now();
        let mut ws = client::connect(server.ws, &query, None);
        let sync = recv_json(&mut ws);
        if sync["type"] != "reconnection_sync" || sync["data"]["missed_events"] != events {
            errors.push(format!("trial {trial}: {sync}"));
        }
        let target = last + events as u64;
        let mut seen = 0;
        while last < target {
            let message = ws.read().expect("replay");
            let Some(seq) = message.to_text().ok().and_then(event_seq) else {
                continue;
            };
            let replayed = message
                .to_text()
                .unwrap_or("")
                .contains(r#""replayed":true"#);
            if seq != last + 1 || !replayed {
                errors.push(format!("trial {trial}: seq {seq} after {last}"));
            }
            last = seq;
            seen += 1;
        }
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        if seen != events {
            errors.push(format!("trial {trial}: {seen} events"));
        }
        drop(ws);
        server.wait_connected(0);
    }
    (times, errors)
}

/// How M4 cuts the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The client resets the socket (RST): the server hears at once.
    Reset,
    /// The client's socket goes silent and it reconnects on a new one; the
    /// server hears nothing on the old one and learns of the new one only
    /// through the resume (a take-over).
    Silent,
}

/// Lost and duplicated events over the trials of one kind of cut.
#[derive(Debug, Default, Clone, Copy)]
pub struct CutResult {
    pub lost: u64,
    pub duplicated: u64,
    pub events: u64,
}

/// M4: events stream to one client at about `rate` per second; after
/// `before` it is cut, resumes at once from the last seq it processed,
/// reads for `after`, then the stream stops and it reads to the end.
pub fn cut(cut: Cut, trials: usize, rate: u64, before: Duration, after: Duration) -> CutResult {
    let server = Arc::new(Server::start(Kind::Tether, &[]));
    let mut result = CutResult::default();
    for trial in 0..trials {
        let id = format!("cut-{trial}");
        let (mut ws, token) = subscribe(&server, &id, None);
        let streaming = Arc::new(AtomicBool::new(true));
        let publisher = {
            let (server, streaming, id) = (Arc::clone(&server), Arc::clone(&streaming), id.clone());
            thread::spawn(move || {
                let start = Instant::now();
                let mut i = 0;
                while streaming.load(Ordering::Relaxed) {
                    wait_until_due(start, i, rate);
                    server.publish(&item("bench.cut", now_us(), Some(&id)));
                    i += 1;
                }
            })
        };
        let mut tally = Tally::default();
        tally.read_for(&mut ws, None, before);
        let abandoned = match cut {
            Cut::Reset => {
                let stream = ws.get_ref();
                let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
                drop(ws);
                None
            }
            Cut::Silent => Some(ws),
        };
        let query = format!(
            "client_id={id}&resume_token={token}&last_seq={}",
            tally.last
        );
        let mut ws = client::connect(server.ws, &query, None);
        let sync = recv_json(&mut ws);
        assert_eq!(sync["type"], "reconnection_sync", "{sync}");
        tally.read_for(&mut ws, None, after);
        streaming.store(false, Ordering::Relaxed);
        publisher.join().expect("publisher");
        let current = server.get_json(&format!("/reconnection/sessions/{id}"))["current_seq"]
            .as_u64()
            .expect("current_seq");
        tally.read_for(&mut ws, Some(current), Duration::from_secs(10));
        for seq in 1..=current as usize {
            match tally.counts.get(seq).copied().unwrap_or(0) {
                0 => result.lost += 1,
                n => result.duplicated += u64::from(n - 1),
            }
        }
        result.events += current;
        if let Some(old) = abandoned {
            let _ = old.get_ref().shutdown(Shutdown::Both);
        }
        drop(ws);
        server.request("DELETE", &format!("/reconnection/sessions/{id}"), None);
    }
    result
}

/// What an M4 client processed: how often it saw each seq.
#[derive(Default)]
struct Tally {
    counts: Vec<u32>,
    last: u64,
}

impl Tally {
    /// Reads events for `window`, or until seq `until` if given, acking
    /// every 100.
    fn read_for(&mut self, ws: &mut Ws, until: Option<u64>, window: Duration) {
        let end = Instant::now() + window;
        let _ = ws
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(20)));
        while Instant::now() < end && until.is_none_or(|u| self.last < u) {
            let text = match ws.read() {
                Ok(m) => m.into_text().unwrap_or_default(),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(_) => break,
            };
            let Some(seq) = event_seq(text.as_str()) else {
                continue;
            };
            let index = seq as usize;
            if self.counts.len() <= index {
                self.counts.resize(index + 1, 0);
            }
            self.counts[index] += 1;
            self.last = self.last.max(seq);
            if seq % 100 == 0 {
                send_json(ws, format!(r#"{{"type":"ack","seq":{seq}}}"#));
            }
        }
    }
}

/// Publish: events per second `POST /events` accepts with no subscribers,
/// in `requests` requests of `per_request` events over one keep-alive
/// connection.
pub fn publish_rate(kind: Kind, per_request: usize, requests: usize) -> f64 {
    let server = Server::start(kind, &[]);
    let body = if per_request == 1 {
        item("bench.tick", 0, None)
    } else {
        array_body(per_request)
    };
    for _ in 0..3 {
        server.publish(&body);
    }
    let start = Instant::now();
    for _ in 0..requests {
        server.publish(&body);
    }
    (per_request * requests) as f64 / start.elapsed().as_secs_f64()
}
