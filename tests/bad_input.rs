//! Every row of the contract's bad-input table: the client gets a clear
//! error, the connection stays open (except for oversized messages, closed
//! with 1009, and frames RFC 6455 forbids, closed with 1007 or 1002), and
//! nothing is acknowledged. A message of the largest size allowed, and
//! messages sent together, are each answered. A client that sends but
//! never reads is cut, and keeps its session. Plain HTTP on the WebSocket port
//! gets an HTTP error, never a hang.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tether::Config;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

/// Sends `text`, expects an error with `code`, then proves the connection
/// still works with a heartbeat.
fn expect_error(client: &mut Client, message: Message, code: &str) {
    client.ws.send(message).unwrap();
    let err = client.recv_json();
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], code, "{err}");
    assert!(err["message"].is_string());
    client.send_json(&json!({"type": "heartbeat"}));
    assert_eq!(client.recv_json()["type"], "heartbeat_ack");
}

#[test]
fn malformed_messages_get_errors_and_keep_the_connection() {
    let server = start();
    let (mut client, _) = server.new_session("b1");
    server.publish_n(2, "a");
    client.recv_events(2);
    let text = |s: &str| Message::text(s.to_string());
    expect_error(&mut client, text("this is not json"), "invalid_message");
    expect_error(&mut client, text("{\"type\":"), "invalid_message");
    expect_error(&mut client, text(r#"{"type":"dance"}"#), "unknown_type");
    expect_error(&mut client, text(r#"{"no_type":1}"#), "unknown_type");
    expect_error(&mut client, text("[1,2,3]"), "unknown_type");
    expect_error(
        &mut client,
        Message::binary(vec![1u8, 2, 3]),
        "unsupported_frame",
    );
    expect_error(
        &mut client,
        text(r#"{"type":"ack","seq":"x"}"#),
        "invalid_message",
    );
    expect_error(
        &mut client,
        text(r#"{"type":"ack","seq":-1}"#),
        "invalid_message",
    );
    expect_error(
        &mut client,
        text(r#"{"type":"ack","seq":null}"#),
        "invalid_message",
    );
    expect_error(&mut client, text(r#"{"type":"ack"}"#), "invalid_message");
    expect_error(
        &mut client,
        text(r#"{"type":"ack","seq":3}"#),
        "invalid_ack",
    );
    expect_error(
        &mut client,
        text(r#"{"type":"update_preferences","data":{"max_events_per_second":0}}"#),
        "invalid_preferences",
    );
    expect_error(
        &mut client,
        text(r#"{"type":"update_preferences","data":{"colour":"red"}}"#),
        "invalid_preferences",
    );
    // Deeply nested JSON: an error, not a crash.
    let shallow = format!("{}{}", "[".repeat(16), "]".repeat(16));
    expect_error(&mut client, text(&shallow), "unknown_type");
    let deep = format!("{}{}", "[".repeat(127), "]".repeat(127));
    expect_error(&mut client, text(&deep), "invalid_message");
    let deeper = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    expect_error(&mut client, text(&deeper), "invalid_message");
    // None of that acknowledged anything.
    assert_eq!(server.session("b1")["acked_seq"], 0);
    assert_eq!(server.session("b1")["retained_events"], 2);
}

#[test]
fn heartbeat_with_a_bad_last_seq_is_still_answered() {
    let server = start();
    let (mut client, _) = server.new_session("b2");
    client.send_json(&json!({"type": "heartbeat", "last_seq": 5}));
    let replies: Vec<Value> = vec![client.recv_json(), client.recv_json()];
    assert!(
        replies.iter().any(|r| r["type"] == "heartbeat_ack"),
        "{replies:?}"
    );
    assert!(
        replies.iter().any(|r| r["code"] == "invalid_ack"),
        "{replies:?}"
    );
    client.send_json(&json!({"type": "heartbeat", "last_seq": "five"}));
    let replies: Vec<Value> = vec![client.recv_json(), client.recv_json()];
    assert!(
        replies.iter().any(|r| r["type"] == "heartbeat_ack"),
        "{replies:?}"
    );
    assert!(
        replies.iter().any(|r| r["code"] == "invalid_message"),
        "{replies:?}"
    );
}

#[test]
fn pings_are_answered_with_pongs() {
    let server = start();
    let (mut client, _) = server.new_session("b3");
    client.ws.send(Message::Ping(b"hello"[..].into())).unwrap();
    match client.ws.read().unwrap() {
        Message::Pong(payload) => assert_eq!(&payload[..], b"hello"),
        other => panic!("expected a pong, got {other:?}"),
    }
}

/// A client that breaks a rule of the wire gets a close frame with `code`,
/// and its session stays, ready to resume.
fn closes_with_and_keeps_the_session(
    server: &TestServer,
    code: u16,
    send: impl FnOnce(&mut Client),
) {
    let (mut client, token) = server.new_session("b4");
    send(&mut client);
    let (close, _) = client.recv_until_closed();
    assert_eq!(close, Some(code));
    server.wait_state("b4", "disconnected");
    let mut again = server.connect(&format!("client_id=b4&resume_token={token}"));
    assert_eq!(again.recv_json()["type"], "reconnection_sync");
}

#[test]
fn an_oversized_message_closes_with_1009_and_keeps_the_session() {
    let server = start_with(Config {
        max_message_bytes: 1024,
        ..config()
    });
    closes_with_and_keeps_the_session(&server, 1009, |client| {
        let big = format!(r#"{{"type":"heartbeat","pad":"{}"}}"#, "x".repeat(2000));
        client.send_text(&big);
    });
}

#[test]
fn a_message_at_the_limit_and_messages_sent_together_are_all_answered() {
    let server = start_with(Config {
        max_message_bytes: 65536,
        ..config()
    });
    let (mut client, _) = server.new_session("b6");
    server.publish_n(3, "a");
    assert_eq!(seqs(&client.recv_events(3)), [1, 2, 3]);
    // The server reads a small buffer at a time: a message of the largest
    // size allowed must still arrive whole.
    let head = r#"{"type":"heartbeat","last_seq":1,"pad":""#;
    let pad = "x".repeat(65536 - head.len() - 2);
    let big = format!(r#"{head}{pad}"}}"#);
    assert_eq!(big.len(), 65536);
    client.send_text(&big);
    assert_eq!(client.recv_json()["type"], "heartbeat_ack");
    assert_eq!(server.session("b6")["acked_seq"], 1);
    // Three messages in one write, each of them acted on, in order.
    for message in [
        r#"{"type":"ack","seq":2}"#,
        r#"{"type":"heartbeat","last_seq":3}"#,
        r#"{"type":"heartbeat"}"#,
    ] {
        client.ws.write(Message::text(message)).unwrap();
    }
    client.ws.flush().unwrap();
    for _ in 0..2 {
        let reply = client.recv_json();
        assert_eq!(reply["type"], "heartbeat_ack", "{reply}");
        assert_eq!(reply["current_seq"], 3, "{reply}");
    }
    assert_eq!(server.session("b6")["acked_seq"], 3);
}

#[test]
fn a_text_message_that_is_not_utf8_closes_with_1007() {
    closes_with_and_keeps_the_session(&start(), 1007, |client| {
        let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
        client.ws.send(Message::Frame(frame)).unwrap();
    });
}

#[test]
fn an_unmasked_frame_closes_with_1002() {
    closes_with_and_keeps_the_session(&start(), 1002, |client| {
        // RFC 6455 5.1: a client masks every frame; this text frame is not.
        let mut tcp = client.tcp();
        tcp.write_all(b"\x81\x02{}").unwrap();
    });
}

#[test]
fn a_client_that_sends_but_never_reads_is_cut_and_keeps_its_session() {
    let server = start();
    let (mut client, token) = server.new_session("b5");
    // Every heartbeat is answered and no answer is read: once the sockets'
    // buffers are full, the answers wait in the server, which must stop
    // taking more at a bound (2 MiB) rather than grow as fast as this sends.
    let heartbeat = Message::text(r#"{"type":"heartbeat"}"#);
    for sent in 1..=1_000_000 {
        let written = client.ws.write(heartbeat.clone());
        if written.is_err() || (sent % 1000 == 0 && client.ws.flush().is_err()) {
            break;
        }
    }
    server.wait_state("b5", "disconnected");
    let mut again = server.connect(&format!("client_id=b5&resume_token={token}"));
    assert_eq!(again.recv_json()["type"], "reconnection_sync");
}

/// Sends raw bytes to the WebSocket port and returns the HTTP response.
fn raw_http(server: &TestServer, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.ws).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("the server answers and closes instead of hanging");
    response
}

#[test]
fn plain_http_on_the_websocket_port_gets_an_http_error() {
    let server = start();
    let on_ws = raw_http(&server, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(on_ws.starts_with("HTTP/1.1 426"), "{on_ws}");
    assert!(on_ws.contains("upgrade_required"));
    let post = raw_http(
        &server,
        b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 426"), "{post}");
    let elsewhere = raw_http(&server, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(elsewhere.starts_with("HTTP/1.1 404"), "{elsewhere}");
    let upgrade_elsewhere = raw_http(
        &server,
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert!(
        upgrade_elsewhere.starts_with("HTTP/1.1 404"),
        "{upgrade_elsewhere}"
    );
    let garbage = raw_http(&server, b"\x16\x03\x01\x02\x00garbage\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
}

#[test]
fn upgrades_over_max_connections_get_503() {
    let server = start_with(Config {
        max_connections: 2,
        ..config()
    });
    let (_a, _) = server.new_session("m1");
    let (_b, _) = server.new_session("m2");
    match tungstenite::connect(server.url("client_id=m3")) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| ())),
    }
    // A slot frees up when a client leaves.
    drop(_a);
    wait_until("m1's connection ends", || {
        server
            .get("/metrics")
            .body
            .contains("tether_websocket_connections 1\n")
    });
    let (_c, _) = server.new_session("m3");
}

#[test]
fn upgrades_beyond_the_handshake_threads_still_get_503() {
    let server = start_with(Config {
        max_connections: 1,
        ..config()
    });
    let (_a, _) = server.new_session("h1");
    // Silent sockets hold the 64 handshake threads allowed beyond the
    // limit for up to 10 s each; the listener takes them before the next.
    let _silent: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(server.ws).unwrap())
        .collect();
    match tungstenite::connect(server.url("client_id=h2")) {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("too_many_connections"), "{body}");
        }
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn an_upgrade_request_sent_a_byte_at_a_time_is_cut_after_10_s() {
    let server = start();
    let mut stream = TcpStream::connect(server.ws).unwrap();
    // Longer than the handshake timeout, so only the server can end this.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut dripping = stream.try_clone().unwrap();
    // A byte every 500 ms, and an endless header: every read is answered well
    // inside any per-read timeout, but the request never ends.
    thread::spawn(move || {
        let head = b"GET /ws?client_id=drip HTTP/1.1\r\nHost: x\r\nX-Pad: ";
        for &byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if dripping.write_all(&[byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(500));
        }
    });
    let mut buf = [0u8; 256];
    let ended = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    let took = started.elapsed();
    assert!(ended, "the server never ended the handshake ({took:?})");
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(20)).contains(&took),
        "ended after {took:?}, not at the 10 s handshake timeout"
    );
}
