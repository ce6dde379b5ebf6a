//! How the client library keeps its connection: heartbeats at the announced
//! interval, acknowledgements every 100 events, a silent server treated as
//! gone, retries paced by the strategy until `max_retry_attempts`, and no
//! retry at all for `manual`, a take-over (4000) or a refused resume.

mod client_support;
mod common;

use std::time::{Duration, Instant};

use client_support::*;
use serde_json::json;
use tether::client::{ClientConfig, Notice, ResumeState};
use tether::Strategy;

fn config(url: String) -> ClientConfig {
    ClientConfig {
        client_id: Some("x".into()),
        ..ClientConfig::new(url)
    }
}

/// A client connected to `server`, which announced `reconnection`.
fn connected_with(
    server: &ScriptServer,
    reconnection: serde_json::Value,
) -> (ClientRun, ScriptConn) {
    let client = ClientRun::start(config(server.url()));
    let mut conn = server.accept();
    let mut first = established("x", "tok", 0);
    first["data"]["reconnection"] = reconnection;
    conn.send(&first);
    assert!(matches!(client.next_notice(), Notice::Connected { .. }));
    (client, conn)
}

/// A URL where nothing listens (the first attempt fails at once).
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("ws://{addr}/ws")
}

#[test]
fn heartbeats_follow_the_announced_interval_and_acknowledge() {
    let server = ScriptServer::new();
    let client = ClientRun::start(config(server.url()));
    let mut conn = server.accept();
    conn.send(&established("x", "tok", 100));
    conn.send(&event(1, false));
    conn.send(&event(2, false));
    assert_eq!([client.next_seq(), client.next_seq()], [1, 2]);
    let mut times = Vec::new();
    while times.len() < 3 {
        let message = conn.recv();
        if message["type"] == "heartbeat" {
            times.push((Instant::now(), message["last_seq"].as_u64()));
            conn.send(&json!({"type": "heartbeat_ack", "server_time": 1, "current_seq": 2}));
        }
    }
    for pair in times.windows(2) {
        let spacing = pair[1].0 - pair[0].0;
        assert!(spacing >= Duration::from_millis(80), "{spacing:?}");
    }
    assert_eq!(
        times[2].1,
        Some(2),
        "a heartbeat acknowledges what was processed"
    );
}

#[test]
fn acknowledgements_come_every_100_events_and_after_a_quiet_second() {
    let server = ScriptServer::new();
    let client = ClientRun::start(config(server.url()));
    let mut conn = server.accept();
    conn.send(&established("x", "tok", 0));
    for seq in 1..=250 {
        conn.send(&event(seq, false));
    }
    for want in 1..=250 {
        assert_eq!(client.next_seq(), want);
    }
    let mut acks = Vec::new();
    while acks.last() != Some(&250) {
        let message = conn.recv();
        assert_eq!(message["type"], "ack", "{message}");
        acks.push(message["seq"].as_u64().unwrap());
    }
    assert_eq!(acks, vec![100, 200, 250]);
}

#[test]
fn a_silent_server_is_left_after_the_announced_timeout() {
    let server = ScriptServer::new();
    let client = ClientRun::start(config(server.url()));
    let mut conn = server.accept();
    conn.send(&established("x", "tok", 50));
    // The server answers nothing from now on, but keeps the socket open.
    match client.next_notice() {
        Notice::Connected { .. } => {}
        other => panic!("{other:?}"),
    }
    match client.next_notice() {
        Notice::Disconnected { reason } => {
            assert!(reason.contains("nothing from the server"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let again = server.accept();
    assert_eq!(again.param("resume_token").as_deref(), Some("tok"));
    drop(conn);
}

#[test]
fn a_take_over_stops_the_client_without_a_retry() {
    let server = ScriptServer::new();
    let client = ClientRun::start(config(server.url()));
    let mut conn = server.accept();
    conn.send(&established("x", "tok", 0));
    conn.close(4000);
    assert!(client.next_error().contains("4000"));
    // Idle from now on: no connection attempt, just the same answer.
    assert!(client.next_error().contains("not reconnecting"));
    assert!(!server.has_pending());
}

#[test]
fn a_refused_resume_stops_the_client() {
    let server = ScriptServer::new();
    let client = ClientRun::start(ClientConfig {
        resume: Some(ResumeState {
            client_id: "x".into(),
            resume_token: "wrong".into(),
            last_seq: 4,
        }),
        ..config(server.url())
    });
    let mut conn = server.accept();
    assert_eq!(conn.param("last_seq").as_deref(), Some("4"));
    conn.send(&json!({"type": "error", "code": "invalid_resume_token", "message": "no"}));
    conn.close(1008);
    let error = client.next_error();
    assert!(error.contains("invalid_resume_token"), "{error}");
    assert!(client.next_error().contains("not reconnecting"));
    assert!(!server.has_pending());
}

#[test]
fn retries_stop_after_max_retry_attempts() {
    let server = ScriptServer::new();
    let (client, conn) = connected_with(
        &server,
        json!({"strategy": "linear_backoff", "max_retry_attempts": 3,
            "initial_delay_ms": 20, "max_delay_ms": 1000, "backoff_multiplier": 2.0}),
    );
    // The server goes away for good.
    drop(server);
    conn.cut();
    let mut attempts = Vec::new();
    let error = loop {
        match client.next() {
            Got::Item(tether::client::Received::Notice(Notice::Retrying { attempt, delay })) => {
                // Linear: 20 ms per attempt, with equal jitter.
                let full = Duration::from_millis(20 * u64::from(attempt));
                assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
                attempts.push(attempt);
            }
            Got::Item(tether::client::Received::Notice(Notice::Disconnected { .. })) => {}
            Got::Error(e) => break e,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(attempts, vec![1, 2, 3]);
    assert!(
        error.contains("giving up after 3 failed attempts"),
        "{error}"
    );
}

#[test]
fn manual_strategy_never_retries_on_its_own() {
    let client = ClientRun::start(ClientConfig {
        strategy: Some(Strategy::Manual),
        ..config(closed_port_url())
    });
    let error = client.next_error();
    assert!(error.contains("manual"), "{error}");
}

#[test]
fn the_announced_strategy_paces_retries_unless_overridden() {
    let announced = json!({"strategy": "exponential_backoff", "max_retry_attempts": 4,
        "initial_delay_ms": 40, "max_delay_ms": 1000, "backoff_multiplier": 3.0});
    let server = ScriptServer::new();
    let (client, conn) = connected_with(&server, announced.clone());
    conn.cut();
    assert!(matches!(client.next_notice(), Notice::Disconnected { .. }));
    match client.next_notice() {
        Notice::Retrying { attempt: 1, delay } => {
            assert!(
                delay >= Duration::from_millis(20) && delay <= Duration::from_millis(40),
                "{delay:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut conn = server.accept();
    conn.send(&sync("x", 0, 0, 0));
    assert!(matches!(client.next_notice(), Notice::Resumed { .. }));

    let overridden = ScriptServer::new();
    let client = ClientRun::start(ClientConfig {
        strategy: Some(Strategy::Immediate),
        ..config(overridden.url())
    });
    let mut conn = overridden.accept();
    let mut first = established("x", "tok", 0);
    first["data"]["reconnection"] = announced;
    conn.send(&first);
    assert!(matches!(client.next_notice(), Notice::Connected { .. }));
    conn.cut();
    assert!(matches!(client.next_notice(), Notice::Disconnected { .. }));
    assert_eq!(
        client.next_notice(),
        Notice::Retrying {
            attempt: 1,
            delay: Duration::ZERO
        }
    );
}
