//! Admin clients that stall: a request whose body never comes holds only
//! itself, so `/health` and publishing still answer, a full admin API says
//! 503 instead of hanging, and SIGTERM still ends the server.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::process::Process;
use common::*;

/// The admin API's cap on requests in flight (README, Contract notes).
const MAX_IN_FLIGHT: usize = 64;

/// How long an answer may take while other requests are stalled.
const PROMPTLY: Duration = Duration::from_secs(2);

/// A `POST /events` whose body stops after 8 of its 5000 bytes, returned
/// once the server is reading that body: the request asks for
/// `100 Continue`, which tiny_http sends when the body is first read.
fn stalled_post(admin: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(
            b"POST /events HTTP/1.1\r\nHost: tether\r\nContent-Type: application/json\r\n\
              Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "the server never started reading the body ({other:?}) after {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    assert!(
        head.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream.write_all(b"{\"event_").unwrap();
    stream
}

/// `f`'s result, after checking it took less than [`PROMPTLY`].
fn promptly<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let result = f();
    assert!(
        start.elapsed() < PROMPTLY,
        "{what} took {:?}",
        start.elapsed()
    );
    result
}

#[test]
fn stalled_bodies_hold_only_themselves() {
    let server = start();
    // More than the old two handler threads, each stalled reading a body.
    let _stalled: Vec<TcpStream> = (0..4).map(|_| stalled_post(server.admin)).collect();
    let health = promptly("GET /health", || server.get("/health"));
    assert_eq!(health.status, 200, "{}", health.body);
    let published = promptly("POST /events", || {
        server.post("/events", r#"{"event_type":"still.here"}"#)
    });
    assert_eq!(published.status, 202, "{}", published.body);
}

#[test]
fn a_full_admin_api_answers_503_and_recovers() {
    let server = start();
    let mut stalled: Vec<TcpStream> = (0..MAX_IN_FLIGHT)
        .map(|_| stalled_post(server.admin))
        .collect();
    let full = promptly("GET /health at the cap", || server.get("/health"));
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.json()["error"]["code"], "too_many_requests");
    // A client that gives up frees its place.
    drop(stalled.pop());
    wait_until("a place frees up", || server.get("/health").status == 200);
}

#[test]
fn sigterm_ends_a_server_with_a_stalled_admin_request() {
    let mut server = Process::start(&[], &[]);
    let _stalled = stalled_post(server.admin);
    let start = Instant::now();
    server.signal("TERM");
    assert_eq!(server.wait_exit(), 0, "{}", server.log());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        start.elapsed()
    );
}

#[test]
fn a_body_declared_terabytes_long_is_refused_and_the_server_lives_on() {
    let server = Process::start(&["--admin-token", "s3cret"], &[]);
    // Unauthenticated, and refused before the body is read: tiny_http then
    // drained the body into a buffer of its declared size, and that
    // allocation aborted the process.
    for (auth, status) in [("", "401"), ("Authorization: Bearer s3cret\r\n", "413")] {
        let mut stream = TcpStream::connect(server.admin).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let request = format!(
            "POST /events HTTP/1.1\r\nHost: tether\r\n{auth}\
             Content-Length: 100000000000000\r\n\r\n{{\"event_type\":\"x\"}}"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(String::from_utf8_lossy(&head), format!("HTTP/1.1 {status}"));
        assert_eq!(server.get("/health")["status"], "ok", "{}", server.log());
    }
}
