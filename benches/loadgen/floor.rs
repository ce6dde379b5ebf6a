//! The machine's floor for M2b: the same load, the same clients, and a
//! server that does nothing but write. It is a process of its own, as any
//! server is (this harness run with `--floor-server`): it accepts the
//! WebSocket handshakes, reads the events' seqs and publish times from its
//! standard input, builds each event's frame once, as tether would send it,
//! and one thread rounds over the connections writing each one everything
//! published since its last write.
//!
//! The subscribers are M2b's own: a thread per client running [`receive`],
//! acknowledging every [`ACK_EVERY`] events as they do with tether (the
//! floor never reads the acknowledgements). A server that does anything
//! more has these writes to make too, so M2b's latencies are read against
//! it (BENCHMARKS.md, "Latency"). One writer thread is the faster of the
//! shapes tried: two, each with half the connections, did worse.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::WebSocket;

use crate::client::{self, now_us, Reading};
use crate::scenarios::{wait_until_due, Latency, ACK_EVERY};
use crate::server::{Kind, Server};
use crate::subscribers::{Readers, Subscribers};

/// M2b against the floor: `n` clients; `rate` events per second for
/// `seconds`.
pub fn latency(n: usize, rate: u64, seconds: u64) -> Latency {
    let events = rate * seconds;
    let mut server = Server::start(Kind::Floor, &[]);
    let sockets = (0..n)
        .map(|i| {
            let query = format!("client_id=floor-{i}");
            client::connect(server.ws, &query, client::LATENCY_READ_BUFFER)
        })
        .collect();
    let subscribers = Subscribers::start(sockets, Readers::for_latency(), || {
        Reading::new(events, Some(1), Some(ACK_EVERY), true)
    });
    let mut input = server.input.take().expect("the floor's input");
    let start = Instant::now();
    for seq in 1..=events {
        wait_until_due(start, seq - 1, rate);
        let mut record = [0u8; 16];
        record[..8].copy_from_slice(&seq.to_le_bytes());
        record[8..].copy_from_slice(&now_us().to_le_bytes());
        input.write_all(&record).expect("publish to the floor");
    }
    let publish_rate = events as f64 / start.elapsed().as_secs_f64();
    // The floor keeps its connections open until it is killed, after every
    // client has read everything: closing a socket with unread
    // acknowledgements in it resets the connection, which could cut off a
    // client's last events.
    Latency::gather("floor", subscribers, publish_rate)
}

/// The frames published so far, in seq order from 1.
#[derive(Default)]
struct Log {
    frames: Mutex<Vec<Vec<u8>>>,
    grown: Condvar,
}

type Connections = Mutex<Vec<(WebSocket<TcpStream>, usize)>>;

/// The floor server: what `--floor-server` runs. It serves until killed.
pub fn serve() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let connections: Arc<Connections> = Arc::default();
    let log = Arc::new(Log::default());
    {
        let connections = Arc::clone(&connections);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let stream = stream.expect("accept");
                stream.set_nodelay(true).expect("nodelay");
                let ws = tungstenite::accept(stream).expect("handshake");
                connections.lock().unwrap().push((ws, 0));
            }
        });
    }
    {
        let (log, connections) = (Arc::clone(&log), Arc::clone(&connections));
        thread::spawn(move || write(&log, &connections));
    }
    eprintln!("websocket listening on {addr}");
    let mut input = std::io::stdin().lock();
    let mut record = [0u8; 16];
    while input.read_exact(&mut record).is_ok() {
        let seq = u64::from_le_bytes(record[..8].try_into().unwrap());
        let t = u64::from_le_bytes(record[8..].try_into().unwrap());
        let frame = event_frame(seq, t);
        log.frames.lock().unwrap().push(frame);
        log.grown.notify_one();
    }
    loop {
        thread::park();
    }
}

/// The event message tether sends for an M2b event published at `t`.
pub fn event_message(seq: u64, t: u64) -> String {
    format!(
        r#"{{"type":"event","seq":{seq},"id":{seq},"event_type":"bench.tick","priority":"high","timestamp":{},"data":{{"t":{t:>16},"pad":"{}"}},"replayed":false}}"#,
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
        "x".repeat(112)
    )
}

/// A text frame with [`event_message`].
fn event_frame(seq: u64, t: u64) -> Vec<u8> {
    let message = event_message(seq, t);
    let mut frame = Vec::with_capacity(message.len() + 4);
    FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    }
    .format(message.len() as u64, &mut frame)
    .expect("writing to a Vec cannot fail");
    frame.extend_from_slice(message.as_bytes());
    frame
}

/// The writer: whenever events are new, one round over every connection,
/// each write carrying all that connection has not had yet.
fn write(log: &Log, connections: &Connections) {
    let mut out = Vec::new();
    let mut published = 0;
    loop {
        {
            let mut frames = log.frames.lock().unwrap();
            while frames.len() == published {
                frames = log.grown.wait(frames).unwrap();
            }
            published = frames.len();
        }
        for (ws, sent) in connections.lock().unwrap().iter_mut() {
            out.clear();
            {
                let frames = log.frames.lock().unwrap();
                frames[*sent..]
                    .iter()
                    .for_each(|f| out.extend_from_slice(f));
                *sent = frames.len();
            }
            if !out.is_empty() {
                ws.get_mut().write_all(&out).expect("write");
            }
        }
    }
}
