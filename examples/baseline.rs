//! The benchmark baseline: the barest fan-out server our crates make, the
//! limit tether's architecture can reach on a machine (see `BENCHMARKS.md`).
//!
//!     cargo run --release --example baseline -- 127.0.0.1:0 127.0.0.1:0
//!
//! Arguments: the WebSocket address and the publish (HTTP) address. Both
//! are printed on stderr as `websocket listening on ADDR` and `admin
//! listening on ADDR`, as tether prints them.
//!
//! It is what a careful engineer writes in an afternoon with the same
//! crates and tether's buffer sizes and write batching: tungstenite over a
//! `TcpListener`, one thread per connection (blocked on its queue rather
//! than on the socket), and tiny_http taking `POST /events` with the same
//! bodies as tether. Each event message is built once and shared by every
//! connection; a connection's thread writes everything queued for it and
//! flushes once.
//! There are no sessions, seqs per client, retention, pacing, acks, admin
//! API or liveness checks: a client that falls behind just queues memory.
//! Every client gets every event with `seq` = the event's id.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use serde::Deserialize;
use serde_json::value::RawValue;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, Utf8Bytes};

/// The messages of one publish request, shared by every connection.
type Batch = Arc<[Utf8Bytes]>;

/// tether's own per-connection read buffer and thread stack.
const READ_BUFFER: usize = 64;
const CONN_STACK: usize = 64 * 1024;
/// tether sends a writer turn of up to 512 events (about 128 KiB of these
/// benchmark events) in one call; this gives the baseline the same.
const WRITE_BUFFER: usize = 128 * 1024;
/// tiny_http handler threads, as in tether's admin API.
const HTTP_THREADS: usize = 2;

/// The publish fields the baseline uses; other fields are accepted and ignored.
#[derive(Deserialize)]
struct Published<'a> {
    event_type: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    priority: Option<String>,
}

/// Every connection's queue, and the id of the next event.
#[derive(Default)]
struct Hub {
    subscribers: Vec<Sender<Batch>>,
    next_id: u64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let ws_addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let http_addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&ws_addr).expect("bind the WebSocket address");
    let http = tiny_http::Server::http(&http_addr).expect("bind the publish address");
    eprintln!("websocket listening on {}", listener.local_addr().unwrap());
    eprintln!(
        "admin listening on {}",
        http.server_addr().to_ip().expect("an IP listener")
    );
    let hub = Arc::new(Mutex::new(Hub {
        next_id: 1,
        ..Hub::default()
    }));
    let http = Arc::new(http);
    for _ in 0..HTTP_THREADS {
        let (http, hub) = (Arc::clone(&http), Arc::clone(&hub));
        thread::spawn(move || {
            for request in http.incoming_requests() {
                handle_publish(&hub, request);
            }
        });
    }
    for stream in listener.incoming().flatten() {
        let hub = Arc::clone(&hub);
        let _ = thread::Builder::new()
            .stack_size(CONN_STACK)
            .spawn(move || serve(stream, &hub));
    }
}

/// One connection: handshake, then write whatever is broadcast.
fn serve(stream: TcpStream, hub: &Mutex<Hub>) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER);
    let Ok(mut ws) = tungstenite::accept_with_config(stream, Some(config)) else {
        return;
    };
    let (queue, batches) = crossbeam_channel::unbounded::<Batch>();
    hub.lock().unwrap().subscribers.push(queue);
    while let Ok(first) = batches.recv() {
        for batch in std::iter::once(first).chain(batches.try_iter()) {
            for message in batch.iter() {
                if ws.write(Message::Text(message.clone())).is_err() {
                    return;
                }
            }
        }
        if ws.flush().is_err() {
            return;
        }
    }
}

/// `POST /events`: one event object or an array, as tether takes them.
fn handle_publish(hub: &Mutex<Hub>, mut request: tiny_http::Request) {
    let mut body = String::new();
    let parsed = std::io::Read::read_to_string(request.as_reader(), &mut body)
        .ok()
        .and_then(|_| parse(&body));
    let Some(events) = parsed else {
        let _ = request.respond(tiny_http::Response::from_string("bad body").with_status_code(400));
        return;
    };
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let accepted = events.len();
    // Answer first: the publisher need not wait while every connection's
    // thread is woken (the events are already parsed and valid).
    let reply = format!(r#"{{"accepted":{accepted}}}"#);
    let _ = request.respond(tiny_http::Response::from_string(reply).with_status_code(202));
    {
        // Ids are taken and messages queued under one lock, so every
        // connection sees the events in id order.
        let mut hub = hub.lock().unwrap();
        let first_id = hub.next_id;
        hub.next_id += accepted as u64;
        let batch: Batch = events
            .iter()
            .zip(first_id..)
            .map(|(e, id)| {
                Utf8Bytes::from(format!(
                    r#"{{"type":"event","seq":{id},"id":{id},"event_type":"{}","priority":"{}","timestamp":{timestamp},"data":{},"replayed":false}}"#,
                    e.event_type,
                    e.priority.as_deref().unwrap_or("medium"),
                    e.data.map_or("null", |d| d.get()),
                ))
            })
            .collect();
        hub.subscribers
            .retain(|queue| queue.send(Arc::clone(&batch)).is_ok());
    }
}

fn parse(body: &str) -> Option<Vec<Published<'_>>> {
    if body.trim_start().starts_with('[') {
        serde_json::from_str(body).ok()
    } else {
        serde_json::from_str(body).ok().map(|one| vec![one])
    }
}
