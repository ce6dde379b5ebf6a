//! Liveness and cleanup: silent connections are pinged, then closed with
//! 4001 and their sessions keep tracking events; --no-heartbeat turns that
//! off; expired sessions and events leave the table and the event store
//! empty; both threads stop promptly on shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tether::Config;
use tungstenite::Message;

fn heartbeat_config(interval_ms: u64) -> Config {
    Config {
        heartbeat_interval_ms: interval_ms,
        ..config()
    }
}

#[test]
fn a_silent_connection_is_closed_with_4001_and_its_session_tracks_events() {
    let server = start_with(heartbeat_config(200));
    let (mut client, token) = server.new_session("h1");
    // The client neither reads nor writes: no pong, no message.
    server.wait_state("h1", "disconnected");
    assert_eq!(server.metric("tether_heartbeat_timeouts_total"), 1.0);
    server.publish_n(2, "a");
    assert_eq!(server.session("h1")["missed_events"], 2);
    // What the client finds when it looks: a ping, then the close.
    let (close, _) = client.recv_until_closed();
    assert_eq!(close, Some(4001));
    let (_client, sync) = server.resume("h1", &token, None);
    assert_eq!(sync["data"]["missed_events"], 2);
}

#[test]
fn a_client_answering_pings_stays_connected() {
    let server = start_with(heartbeat_config(100));
    let (mut client, _) = server.new_session("h2");
    client
        .tcp()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut pings = 0;
    let until = Instant::now() + Duration::from_millis(700);
    // Reading answers pings (tungstenite queues the pong and sends it on
    // the next read); nothing else is sent.
    while Instant::now() < until {
        match client.ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("connection lost: {e}"),
        }
    }
    assert!(pings >= 2, "the server sent {pings} pings in 7 intervals");
    assert_eq!(server.session("h2")["state"], "connected");
    assert_eq!(server.metric("tether_heartbeat_timeouts_total"), 0.0);
}

#[test]
fn no_heartbeat_leaves_silent_clients_alone() {
    let server = start_with(Config {
        heartbeat_enabled: false,
        ..heartbeat_config(50)
    });
    let (_client, _) = server.new_session("h3");
    // Ten intervals of silence.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.session("h3")["state"], "connected");
    assert_eq!(
        server.get("/reconnection/config").json()["heartbeat_enabled"],
        false
    );
}

#[test]
fn cleanup_empties_the_table_and_the_event_store() {
    let server = start_with(Config {
        retention_hours: 0.0003, // about a second
        cleanup_interval_s: 1,
        ..config()
    });
    let (kept, _) = server.new_session("kept");
    for id in ["gone1", "gone2", "gone3"] {
        server.session_gone_after(id, 0);
    }
    server.publish_n(20, "a");
    assert_eq!(server.metric("tether_retained_events"), 20.0);
    assert_eq!(server.get("/health").json()["sessions"], 4);
    // The three disconnected sessions expire; the connected one stays, but
    // its unacknowledged events expire too.
    wait_until("expiry", || {
        let health = server.get("/health").json();
        health["sessions"] == 1 && server.metric("tether_retained_events") == 0.0
    });
    assert_eq!(server.session("kept")["retained_events"], 0);
    assert_eq!(
        server.metric("tether_sessions{state=\"disconnected\"}"),
        0.0
    );
    // Once the last session goes, nothing at all is left.
    drop(kept);
    wait_until("the last session expires", || {
        server.get("/reconnection/sessions").json()["total"] == 0
    });
    assert_eq!(server.metric("tether_sessions{state=\"connected\"}"), 0.0);
    assert_eq!(server.metric("tether_retained_events"), 0.0);
}

#[test]
fn heartbeat_and_cleanup_threads_stop_promptly() {
    // Long intervals: a thread that sleeps through its interval instead of
    // listening for the stop signal would hold shutdown for an hour.
    let mut server = start_with(Config {
        heartbeat_interval_ms: 3_600_000,
        cleanup_interval_s: 3600,
        ..config()
    });
    let (_client, _) = server.new_session("h4");
    let running = server.server.take().unwrap();
    let started = Instant::now();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        running.shutdown();
        let _ = done.send(());
    });
    finished.recv_timeout(TIMEOUT).expect("shutdown finishes");
    eprintln!("shutdown took {:?}", started.elapsed());
}
