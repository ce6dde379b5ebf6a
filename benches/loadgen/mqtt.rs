//! MQTT for the peer mosquitto (`peers.rs`), the broker the issue's
//! orientation figures name first: its subscribers use its WebSocket
//! listener and are read like tether's (`subscribers.rs`,
//! `client::Reading`).
//!
//! MQTT 3.1.1 needs only six packets here (CONNECT, SUBSCRIBE, PUBLISH,
//! PUBACK, DISCONNECT out; CONNACK, SUBACK, PUBLISH, PUBACK in), so they are
//! built and split by the few functions below rather than by a client
//! crate. Each event's payload is the message tether would send for it, so
//! the readers check its seq and take its publish time as they do with
//! tether. Publishers use plain MQTT over TCP, as a backend would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

use crate::client::{self, Reading, Ws, TIMEOUT};
use crate::floor;
use crate::server::{Kind, Server};

/// The topic every event is published to and every subscriber follows.
pub const TOPIC: &str = "events";
/// Keep-alive asked for in CONNECT, in seconds: far longer than any run's
/// idle window, as tether's heartbeat default is.
const KEEP_ALIVE: u16 = 60;

const CONNECT: u8 = 0x10;
const CONNACK: u8 = 0x20;
const PUBLISH: u8 = 0x30;
const PUBACK: u8 = 0x40;
const SUBSCRIBE: u8 = 0x82;
const SUBACK: u8 = 0x90;
const DISCONNECT: [u8; 2] = [0xe0, 0];

/// A packet: its first byte, then the remaining length as MQTT's
/// variable-length integer, then `body`.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A UTF-8 string as MQTT writes one: a two-byte length, then the bytes.
fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// CONNECT for `client_id`; `clean` starts a new session, otherwise the
/// broker keeps the session (and queues QoS 1 messages) while it is away.
fn connect_packet(client_id: &str, clean: bool) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.push(4); // protocol level: 3.1.1
    body.push(if clean { 0x02 } else { 0 });
    body.extend_from_slice(&KEEP_ALIVE.to_be_bytes());
    string(&mut body, client_id);
    packet(CONNECT, &body)
}

fn subscribe_packet(qos: u8) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    string(&mut body, TOPIC);
    body.push(qos);
    packet(SUBSCRIBE, &body)
}

/// PUBLISH of `payload` to [`TOPIC`], at QoS 1 with packet id `id` when
/// given, otherwise at QoS 0.
pub fn publish_packet(payload: &str, id: Option<u16>) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + TOPIC.len() + 4);
    string(&mut body, TOPIC);
    if let Some(id) = id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload.as_bytes());
    packet(
        if id.is_some() {
            PUBLISH | 0x02
        } else {
            PUBLISH
        },
        &body,
    )
}

/// Splits a byte stream (WebSocket messages or TCP reads, whose edges need
/// not fall between packets) into packets.
#[derive(Debug, Default)]
pub struct Packets {
    pending: Vec<u8>,
}

impl Packets {
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next whole packet: (first byte, body).
    pub fn next_packet(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut len = 0usize;
        let mut at = 1;
        loop {
            let byte = *self.pending.get(at)?;
            len |= usize::from(byte & 0x7f) << (7 * (at - 1));
            at += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        if self.pending.len() < at + len {
            return None;
        }
        let first = self.pending[0];
        let body = self.pending[at..at + len].to_vec();
        self.pending.drain(..at + len);
        Some((first, body))
    }
}

/// What a PUBLISH carries: its packet id (QoS 1) and payload.
pub fn published(first: u8, body: &[u8]) -> Option<(Option<u16>, &[u8])> {
    if first & 0xf0 != PUBLISH || body.len() < 2 {
        return None;
    }
    let topic_end = 2 + usize::from(u16::from_be_bytes([body[0], body[1]]));
    if first & 0x06 == 0 {
        return Some((None, body.get(topic_end..)?));
    }
    let id = u16::from_be_bytes([*body.get(topic_end)?, *body.get(topic_end + 1)?]);
    Some((Some(id), body.get(topic_end + 2..)?))
}

fn puback(id: u16) -> Vec<u8> {
    packet(PUBACK, &id.to_be_bytes())
}

impl Reading {
    /// Takes one binary WebSocket message from an MQTT subscriber; returns
    /// the acknowledgements (PUBACK) to send.
    pub fn take_mqtt(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.mqtt.push(bytes);
        let mut replies = Vec::new();
        while let Some((first, body)) = self.mqtt.next_packet() {
            let Some((id, payload)) = published(first, &body) else {
                continue;
            };
            self.take(std::str::from_utf8(payload).unwrap_or(""));
            replies.extend(id.map(puback));
        }
        replies
    }
}

/// Opens an MQTT-over-WebSocket connection as `client_id` and waits for
/// CONNACK; also returns what came after CONNACK in the same messages.
pub fn open(
    server: &Server,
    client_id: &str,
    clean: bool,
    read_buffer: Option<usize>,
) -> (Ws, Packets) {
    let stream = TcpStream::connect(server.ws).expect("connect");
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut request = format!("ws://{}/mqtt", server.ws)
        .into_client_request()
        .expect("a request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "mqtt".parse().expect("a header value"),
    );
    let config = read_buffer.map(|size| WebSocketConfig::default().read_buffer_size(size));
    let mut ws = tungstenite::client::client_with_config(request, stream, config)
        .map_err(|e| format!("{e}"))
        .expect("handshake")
        .0;
    ws.send(Message::binary(connect_packet(client_id, clean)))
        .expect("send CONNECT");
    let mut packets = Packets::default();
    expect_ws(&mut ws, &mut packets, CONNACK);
    (ws, packets)
}

/// [`open`], then a subscription to [`TOPIC`] at `qos`, acknowledged.
pub fn subscriber(server: &Server, client_id: &str, qos: u8, read_buffer: Option<usize>) -> Ws {
    let (mut ws, mut packets) = open(server, client_id, qos == 0, read_buffer);
    ws.send(Message::binary(subscribe_packet(qos)))
        .expect("send SUBSCRIBE");
    expect_ws(&mut ws, &mut packets, SUBACK);
    ws
}

/// Sends DISCONNECT and waits for the broker to close the connection, so
/// that it has handled everything sent before and holds the session as
/// away.
pub fn leave(mut ws: Ws) {
    ws.send(Message::binary(DISCONNECT.to_vec()))
        .expect("send DISCONNECT");
    while ws.read().is_ok() {}
}

/// Reads packets into `packets` until one of type `want`, which it takes;
/// anything before it is skipped.
fn expect_ws(ws: &mut Ws, packets: &mut Packets, want: u8) {
    loop {
        match packets.next_packet() {
            Some((first, _)) if first & 0xf0 == want & 0xf0 => return,
            Some(_) => continue,
            None => {}
        }
        match ws.read().expect("read") {
            Message::Binary(bytes) => packets.push(&bytes),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// A client over plain MQTT (the broker's TCP listener), as a backend
/// publishing, or as M3's subscriber in the shape the orientation
/// figure for mosquitto was measured in.
pub struct Tcp {
    stream: TcpStream,
    packets: Packets,
    next_id: u16,
}

impl Tcp {
    /// Connects as `client_id` (`clean`: see [`connect_packet`]) and waits
    /// for CONNACK.
    pub fn connect(server: &Server, client_id: &str, clean: bool) -> Tcp {
        let mut stream = TcpStream::connect(server.http).expect("connect");
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        stream
            .write_all(&connect_packet(client_id, clean))
            .expect("send CONNECT");
        let mut tcp = Tcp {
            stream,
            packets: Packets::default(),
            next_id: 0,
        };
        tcp.expect(CONNACK);
        tcp
    }

    /// Publishes at QoS 0: nothing comes back.
    pub fn send(&mut self, payload: &str) {
        self.stream
            .write_all(&publish_packet(payload, None))
            .expect("publish");
    }

    /// Publishes all of `payloads` at QoS 1 and waits until the broker has
    /// acknowledged each, so each is stored for every subscriber.
    pub fn send_acknowledged(&mut self, payloads: impl Iterator<Item = String>) {
        let mut waiting = 0;
        for payload in payloads {
            self.next_id = self.next_id % u16::MAX + 1;
            self.stream
                .write_all(&publish_packet(&payload, Some(self.next_id)))
                .expect("publish");
            waiting += 1;
        }
        for _ in 0..waiting {
            self.expect(PUBACK);
        }
    }

    fn subscribe(&mut self, qos: u8) {
        self.stream
            .write_all(&subscribe_packet(qos))
            .expect("send SUBSCRIBE");
        self.expect(SUBACK);
    }

    /// Sends DISCONNECT and waits for the broker to close the connection.
    fn leave(mut self) {
        self.stream.write_all(&DISCONNECT).expect("send DISCONNECT");
        let mut buffer = [0u8; 4096];
        while self.stream.read(&mut buffer).is_ok_and(|n| n > 0) {}
    }

    /// Reads what the broker sent next into `packets`.
    fn read_more(&mut self) {
        let mut buffer = [0u8; 16 * 1024];
        let n = self.stream.read(&mut buffer).expect("read");
        assert!(n > 0, "the broker closed the connection");
        self.packets.push(&buffer[..n]);
    }

    fn expect(&mut self, want: u8) {
        loop {
            match self.packets.next_packet() {
                Some((first, _)) if first & 0xf0 == want & 0xf0 => return,
                Some(_) => {}
                None => self.read_more(),
            }
        }
    }
}

/// M3 against mosquitto: a persistent session subscribed at QoS 1 is away
/// while `events` are published (each acknowledged by the broker), then
/// comes back, over WebSocket (`websocket`) or plain MQTT. Milliseconds from
/// starting the TCP connect to the last missed event, per trial, and the
/// problems seen; every message is acknowledged as it comes.
pub fn replay_trials(trials: usize, events: usize, websocket: bool) -> (Vec<f64>, Vec<String>) {
    let server = Server::start(Kind::Mosquitto, &[]);
    let id = "replay";
    if websocket {
        leave(subscriber(&server, id, 1, None));
    } else {
        let mut tcp = Tcp::connect(&server, id, false);
        tcp.subscribe(1);
        tcp.leave();
    }
    let mut publisher = Tcp::connect(&server, "replay-publisher", true);
    let mut times = Vec::new();
    let mut errors = Vec::new();
    let mut last = 0;
    for trial in 0..trials {
        let missed = last + 1..=last + events as u64;
        publisher.send_acknowledged(missed.map(|seq| floor::event_message(seq, 0)));
        let mut reading = Reading::new(events as u64, Some(last + 1), None, false);
        let start = Instant::now();
        let got = if websocket {
            let (mut ws, rest) = open(&server, id, false, None);
            reading.mqtt = rest;
            for ack in reading.take_mqtt(&[]) {
                ws.send(Message::binary(ack)).expect("PUBACK");
            }
            let got = client::receive(&mut ws, reading);
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            leave(ws);
            got
        } else {
            let mut tcp = Tcp::connect(&server, id, false);
            reading.mqtt = std::mem::take(&mut tcp.packets);
            let mut bytes = Vec::new();
            loop {
                for ack in reading.take_mqtt(&bytes) {
                    tcp.stream.write_all(&ack).expect("PUBACK");
                }
                if reading.done() {
                    break;
                }
                tcp.read_more();
                bytes = std::mem::take(&mut tcp.packets.pending);
            }
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            tcp.leave();
            reading.finish(None)
        };
        if let Some(e) = got.error {
            errors.push(format!("trial {trial}: {e}"));
        }
        last = got.last_seq;
    }
    (times, errors)
}

/// Checks the packet code against hand-made bytes.
pub fn self_check() {
    assert_eq!(packet(PUBACK, &[0, 7]), [0x40, 2, 0, 7]);
    assert_eq!(packet(PUBLISH, &[0; 200])[..3], [0x30, 0xc8, 0x01]);
    let mut packets = Packets::default();
    let one = publish_packet("hello", Some(9));
    let two = publish_packet(&"y".repeat(300), None);
    let both = [one.as_slice(), two.as_slice()].concat();
    packets.push(&both[..3]);
    assert!(packets.next_packet().is_none());
    packets.push(&both[3..]);
    let (first, body) = packets.next_packet().expect("one");
    assert_eq!(published(first, &body), Some((Some(9), &b"hello"[..])));
    let (first, body) = packets.next_packet().expect("two");
    assert_eq!(published(first, &body).map(|p| p.1.len()), Some(300));
    assert!(packets.next_packet().is_none());
}
