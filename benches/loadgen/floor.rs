//! The machine's floor for M2b: the same load, the same clients, and a
//! server that does nothing but write. It accepts the WebSocket handshakes,
//! then one thread builds each event's frame once, as tether would send it,
//! and rounds over the connections writing each one everything published
//! since its last write. The subscribers are M2b's own: a thread per client
//! running [`receive`], acknowledging every [`ACK_EVERY`] events as they do
//! with tether (the floor never reads the acknowledgements). A server that
//! does anything more has this to do too, so M2b's latencies are read
//! against it (BENCHMARKS.md, "Latency"). One writer thread is the faster
//! of the shapes tried: two, each with half the connections, did worse.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::client::{self, now_us, receive};
use crate::scenarios::{Latency, ACK_EVERY, CLIENT_STACK};

/// The frames published so far; event `i` has seq `i + 1`.
#[derive(Default)]
struct Log {
    frames: Mutex<Vec<Vec<u8>>>,
    grown: Condvar,
}

/// `n` clients; `rate` events per second for `seconds`.
pub fn latency(n: usize, rate: u64, seconds: u64) -> Latency {
    let events = rate * seconds;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let acceptor = thread::spawn(move || {
        (0..n)
            .map(|_| {
                let (stream, _) = listener.accept().expect("accept");
                stream.set_nodelay(true).expect("nodelay");
                tungstenite::accept(stream).expect("handshake")
            })
            .collect::<Vec<_>>()
    });
    let subscribers: Vec<_> = (0..n)
        .map(|i| {
            let mut ws = client::connect(addr, &format!("client_id=floor-{i}"), false);
            thread::Builder::new()
                .stack_size(CLIENT_STACK)
                .spawn(move || receive(&mut ws, events, Some(ACK_EVERY), true))
                .expect("a client thread")
        })
        .collect();
    let mut connections = acceptor.join().expect("acceptor");
    let log = Arc::new(Log::default());
    let writer = {
        let log = Arc::clone(&log);
        thread::spawn(move || {
            let mut streams: Vec<&mut TcpStream> =
                connections.iter_mut().map(|ws| ws.get_mut()).collect();
            write(&log, &mut streams, events);
            connections
        })
    };
    let start = Instant::now();
    for i in 0..events {
        let due = start + Duration::from_micros(i * 1_000_000 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let frame = event_frame(i + 1, now_us());
        log.frames.lock().unwrap().push(frame);
        log.grown.notify_one();
    }
    let publish_rate = events as f64 / start.elapsed().as_secs_f64();
    // Closing a socket with unread acknowledgements in it resets the
    // connection, which could cut off a client's last events: the
    // connections stay open until every client has read everything.
    let connections = writer.join().expect("writer");
    let latency = Latency::gather("floor", subscribers, publish_rate);
    drop(connections);
    latency
}

/// A text frame with the event message tether sends for an M2b event.
fn event_frame(seq: u64, t: u64) -> Vec<u8> {
    let message = format!(
        r#"{{"type":"event","seq":{seq},"id":{seq},"event_type":"bench.tick","priority":"high","timestamp":{},"data":{{"t":{t:>16},"pad":"{}"}},"replayed":false}}"#,
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
        "x".repeat(112)
    );
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

/// The writer: rounds over every connection, each write carrying all the
/// connection has not had yet, until every one has every event.
fn write(log: &Log, streams: &mut [&mut TcpStream], events: u64) {
    let mut sent = vec![0usize; streams.len()];
    let mut out = Vec::new();
    loop {
        {
            let mut frames = log.frames.lock().unwrap();
            while sent.iter().all(|&s| s == frames.len()) {
                if frames.len() as u64 == events {
                    return;
                }
                frames = log.grown.wait(frames).unwrap();
            }
        }
        for (stream, sent) in streams.iter_mut().zip(&mut sent) {
            out.clear();
            {
                let frames = log.frames.lock().unwrap();
                frames[*sent..]
                    .iter()
                    .for_each(|f| out.extend_from_slice(f));
                *sent = frames.len();
            }
            if !out.is_empty() {
                stream.write_all(&out).expect("write");
            }
        }
    }
}
