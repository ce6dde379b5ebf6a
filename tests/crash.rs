//! SIGKILL at random moments, while events are published and while clients
//! resume: no event the server acknowledged with 202 is lost or delivered
//! twice to any client, no seq is reused or skipped, and every session
//! survives with its token. Set `TETHER_CRASH_ROUNDS` for a longer run.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::process::Process;
use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

/// A small PRNG for the kill schedule (the test's input, printed as a seed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What one client has processed, kept across connections and crashes.
struct Tracked {
    id: String,
    token: String,
    /// `None`: every event; else a prefix such as `a.`.
    filter: Option<&'static str>,
    last_seq: u64,
    /// `(seq, event id)` in the order processed.
    received: Vec<(u64, u64)>,
    problems: Vec<String>,
    resumes: u64,
}

/// Resumes `client` on `ws_url` and processes events until the connection
/// dies or `stop` is set, acknowledging every 10 events.
fn follow(ws_url: &str, client: &Mutex<Tracked>, stop: &AtomicBool) {
    let query = {
        let c = client.lock().unwrap();
        format!(
            "client_id={}&resume_token={}&last_seq={}",
            c.id, c.token, c.last_seq
        )
    };
    let Ok((mut ws, _)) = tungstenite::connect(format!("{ws_url}?{query}")) else {
        return;
    };
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    }
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let text = match ws.read() {
            Ok(Message::Text(t)) => t,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                continue
            }
            Err(_) => return,
        };
        let msg: Value = serde_json::from_str(text.as_str()).unwrap();
        let mut c = client.lock().unwrap();
        let events: Vec<Value> = match msg["type"].as_str() {
            Some("event") => vec![msg],
            Some("event_batch") => msg["events"].as_array().unwrap().clone(),
            Some("reconnection_sync") => {
                c.resumes += 1;
                if msg["data"]["gap"] == true {
                    c.problems.push(format!("gap on resume: {msg}"));
                }
                continue;
            }
            _ => {
                c.problems.push(format!("unexpected message: {msg}"));
                return;
            }
        };
        for event in events {
            let seq = event["seq"].as_u64().unwrap();
            if seq != c.last_seq + 1 {
                let problem = format!("{}: seq {seq} after {}", c.id, c.last_seq);
                c.problems.push(problem);
            }
            let id = event["id"].as_u64().unwrap();
            c.received.push((seq, id));
            c.last_seq = seq;
            if seq % 10 == 0 {
                let _ = ws.send(Message::text(
                    json!({"type": "ack", "seq": seq}).to_string(),
                ));
            }
        }
    }
}

/// Publishes batches until the server stops answering; records the events
/// it acknowledged as `(id, event_type)`.
fn publish_until_dead(
    admin: &str,
    next: &Mutex<u64>,
    acknowledged: &Mutex<Vec<(u64, String)>>,
    stop: &AtomicBool,
) {
    let agent = ureq::Agent::new_with_defaults();
    while !stop.load(Ordering::Relaxed) {
        let (events, types): (Vec<Value>, Vec<String>) = {
            let mut n = next.lock().unwrap();
            let size = 1 + (*n % 17) as usize;
            (0..size)
                .map(|_| {
                    *n += 1;
                    let t = if n.is_multiple_of(3) { "b.x" } else { "a.x" };
                    (json!({"event_type": t, "data": *n}), t.to_string())
                })
                .unzip()
        };
        let Ok(mut reply) = agent
            .post(format!("{admin}/events"))
            .send(Value::Array(events).to_string())
        else {
            return;
        };
        let body: Value =
            serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap();
        let ids = body["events"].as_array().unwrap();
        let mut acked = acknowledged.lock().unwrap();
        for (e, t) in ids.iter().zip(types) {
            acked.push((e["id"].as_u64().unwrap(), t));
        }
    }
}

fn start_server(dir: &TempDir, round: usize) -> Process {
    let dir = dir.path().to_str().unwrap().to_string();
    let mut args = vec!["--data-dir", &dir, "--max-missed-events", "1000000"];
    // Every other run syncs on an interval instead of per batch.
    if round % 2 == 1 {
        args.extend(["--fsync-interval-ms", "20"]);
    }
    Process::start(&args, &[])
}

#[test]
fn sigkill_loses_no_acknowledged_event_and_duplicates_none() {
    let rounds: usize = std::env::var("TETHER_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(24);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test: {rounds} kills, seed {seed}");
    let mut rng = Rng(seed);
    let dir = TempDir::new("crash");

    // Three sessions, two of them filtered, set up before the first kill.
    let mut server = start_server(&dir, 0);
    let mut clients = Vec::new();
    for (id, filter) in [
        ("all", None),
        ("only-a", Some("a.")),
        ("only-b", Some("b.")),
    ] {
        let mut c = Client::connect(&server.url(&format!("client_id={id}&client_type=cli")));
        let token = c.recv_json()["data"]["resume_token"]
            .as_str()
            .unwrap()
            .to_string();
        let types = filter.map_or(json!([]), |f| json!([format!("{f}*")]));
        c.set_preferences(&json!({"max_events_per_second": 10000, "event_types": types}));
        clients.push(Arc::new(Mutex::new(Tracked {
            id: id.into(),
            token,
            filter,
            last_seq: 0,
            received: Vec::new(),
            problems: Vec::new(),
            resumes: 0,
        })));
    }

    let next = Arc::new(Mutex::new(0u64));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let ws_url = format!("ws://{}/ws", server.ws);
        let admin = format!("http://{}", server.admin);
        let mut threads = Vec::new();
        for client in &clients {
            let (client, stop, url) = (Arc::clone(client), Arc::clone(&stop), ws_url.clone());
            threads.push(thread::spawn(move || follow(&url, &client, &stop)));
        }
        {
            let (next, acked, stop) = (
                Arc::clone(&next),
                Arc::clone(&acknowledged),
                Arc::clone(&stop),
            );
            threads.push(thread::spawn(move || {
                publish_until_dead(&admin, &next, &acked, &stop)
            }));
        }
        // Half the kills land while clients are still resuming.
        let delay = if round % 2 == 0 {
            40 + rng.below(260)
        } else {
            rng.below(25)
        };
        thread::sleep(Duration::from_millis(delay));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        server = start_server(&dir, round + 1);
    }

    // A last, uninterrupted run: every client catches up.
    let stop = Arc::new(AtomicBool::new(false));
    let ws_url = format!("ws://{}/ws", server.ws);
    let followers: Vec<_> = clients
        .iter()
        .map(|client| {
            let (client, stop, url) = (Arc::clone(client), Arc::clone(&stop), ws_url.clone());
            thread::spawn(move || follow(&url, &client, &stop))
        })
        .collect();
    for client in &clients {
        let id = client.lock().unwrap().id.clone();
        wait_until(&format!("{id} catches up"), || {
            server.session(&id)["current_seq"].as_u64() == Some(client.lock().unwrap().last_seq)
        });
    }
    stop.store(true, Ordering::Relaxed);
    for f in followers {
        f.join().unwrap();
    }

    let acknowledged = acknowledged.lock().unwrap();
    eprintln!(
        "crash test: {rounds} kills in {:?}, {} events acknowledged of {} published",
        started.elapsed(),
        acknowledged.len(),
        *next.lock().unwrap()
    );
    assert!(acknowledged.len() > 100, "too few events to prove anything");
    for client in &clients {
        let c = client.lock().unwrap();
        assert!(c.problems.is_empty(), "{}: {:?}", c.id, c.problems);
        let mut ids: Vec<u64> = c.received.iter().map(|r| r.1).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{}: ids out of order",
            c.id
        );
        ids.dedup();
        assert_eq!(ids.len(), c.received.len(), "{}: an event came twice", c.id);
        let missing: Vec<u64> = acknowledged
            .iter()
            .filter(|(_, t)| c.filter.is_none_or(|f| t.starts_with(f)))
            .map(|(id, _)| *id)
            .filter(|id| ids.binary_search(id).is_err())
            .collect();
        assert!(
            missing.is_empty(),
            "{}: acknowledged events lost: {missing:?}",
            c.id
        );
        eprintln!(
            "crash test: {} processed {} events (seqs 1..={}) over {} resumes",
            c.id,
            c.received.len(),
            c.last_seq,
            c.resumes
        );
    }
}
