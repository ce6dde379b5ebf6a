//! Delivery under pressure: events written to a connection that dies unread
//! are replayed; a client that never reads delays nobody else; many clients
//! each get every broadcast event, in order.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tether::Config;

#[test]
fn events_in_flight_when_the_socket_dies_are_replayed() {
    let server = start_with(Config {
        max_missed_events: 100_000,
        ..config()
    });
    let (mut client, token) = server.new_session("f1");
    const TOTAL: u64 = 6000;
    // Stream in the background while the client reads a little, then stops.
    let publisher = {
        let admin = server.admin;
        thread::spawn(move || {
            let agent = ureq::Agent::new_with_defaults();
            for chunk in 0..(TOTAL / 200) {
                let events: Vec<Value> = (0..200)
                    .map(|i| json!({"event_type": "stream", "data": {"n": chunk * 200 + i, "pad": "p".repeat(200)}}))
                    .collect();
                agent
                    .post(&format!("http://{admin}/events"))
                    .send(Value::Array(events).to_string())
                    .unwrap();
            }
        })
    };
    let processed = client.recv_events(150);
    assert_eq!(seqs(&processed), (1..=150).collect::<Vec<_>>());
    // Stop reading; once the server has written events the client never
    // processed, kill the socket with a reset.
    wait_until("events written past what the client processed", || {
        server.metric("tether_events_delivered_total") > 1000.0
    });
    socket2::SockRef::from(client.tcp())
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    publisher.join().unwrap();
    server.wait_state("f1", "disconnected");
    let session = server.session("f1");
    assert_eq!(session["current_seq"], TOTAL);
    assert_eq!(session["dropped_events_total"], 0);

    let mut client = server.connect(&format!("client_id=f1&resume_token={token}&last_seq=150"));
    let sync = client.recv_json();
    assert_eq!(sync["data"]["missed_events"], TOTAL - 150, "{sync}");
    let rest = client.recv_events((TOTAL - 150) as usize);
    assert_eq!(seqs(&rest), (151..=TOTAL).collect::<Vec<_>>());
    let ns: Vec<u64> = rest
        .iter()
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (150..TOTAL).collect::<Vec<_>>());
}

#[test]
fn a_client_that_never_reads_does_not_delay_the_others() {
    let server = start_with(Config {
        max_missed_events: 100_000,
        ..config()
    });
    // Connected, then never reads again: its socket buffers fill up.
    let (_stuck, _) = server.new_session("stuck");
    const READERS: usize = 50;
    const EVENTS: usize = 2000;
    let barrier = Arc::new(Barrier::new(READERS + 1));
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let url = server.url(&format!("client_id=r{i}&client_type=cli"));
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut client = Client::connect(&url);
                client.recv_json();
                client.set_preferences(&json!({"max_events_per_second": 10000}));
                barrier.wait();
                let events = client.recv_events(EVENTS);
                assert_eq!(seqs(&events), (1..=EVENTS as u64).collect::<Vec<_>>());
            })
        })
        .collect();
    barrier.wait();
    for _ in 0..(EVENTS / 500) {
        let events: Vec<Value> = (0..500)
            .map(|_| json!({"event_type": "bulk", "data": "x".repeat(500)}))
            .collect();
        server.publish(&Value::Array(events));
    }
    // Every reader finishes (each waits at most TIMEOUT per message) while
    // the stuck client holds a full socket.
    for r in readers {
        r.join().expect("a reader missed events");
    }
    let stuck = server.session("stuck");
    assert_eq!(stuck["state"], "connected");
    assert_eq!(stuck["current_seq"], EVENTS as u64);
    assert!(stuck["retained_events"].as_u64().unwrap() > 0);
}

#[test]
fn two_hundred_clients_each_get_fifty_events_in_order() {
    let server = start();
    const CLIENTS: usize = 200;
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let url = server.url(&format!("client_id=m{i}&client_type=cli"));
            let barrier = Arc::clone(&barrier);
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut client = Client::connect(&url);
                    client.recv_json();
                    barrier.wait();
                    let events = client.recv_events(50);
                    assert_eq!(seqs(&events), (1..=50).collect::<Vec<_>>());
                    let ns: Vec<u64> = events
                        .iter()
                        .map(|e| e["data"]["i"].as_u64().unwrap())
                        .collect();
                    assert_eq!(ns, (0..50).collect::<Vec<_>>());
                })
                .unwrap()
        })
        .collect();
    barrier.wait();
    for i in 0..50 {
        server.publish(&json!({"event_type": "tick", "data": {"i": i}}));
    }
    for c in clients {
        c.join().expect("a client missed events");
    }
    let listing = server.get("/reconnection/sessions").json();
    assert_eq!(listing["total"], CLIENTS);
    for s in listing["sessions"].as_array().unwrap() {
        assert_eq!(s["current_seq"], 50);
    }
}
