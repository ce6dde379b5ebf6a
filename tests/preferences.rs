//! Preferences act on delivery: per-type defaults, validated updates that
//! survive a resume, subscription filters that take no seq, batching,
//! rate limits that delay but never skip, and unpaced replay.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tether::Config;

#[test]
fn each_client_type_gets_its_defaults() {
    let server = start();
    for (t, delivery, interval, rate, priority) in [
        ("ios", "batched", 2000, 5, "medium"),
        ("cli", "immediate", 0, 20, "high"),
        ("web", "batched", 1000, 10, "medium"),
    ] {
        let mut c = server.connect(&format!("client_type={t}"));
        let prefs = c.recv_json()["data"]["preferences"].clone();
        assert_eq!(
            prefs,
            json!({"delivery": delivery, "batch_interval_ms": interval, "max_events_per_second": rate,
                   "priority": priority, "event_types": [], "min_event_priority": "low"}),
            "{t}"
        );
    }
}

#[test]
fn updates_validate_apply_whole_and_survive_a_resume() {
    let server = start();
    let (mut client, token) = server.new_session("p1");
    let updated = client.set_preferences(&json!({"event_types": ["build.*"], "priority": "low"}));
    assert_eq!(updated["event_types"], json!(["build.*"]));
    assert_eq!(updated["priority"], "low");
    assert_eq!(updated["delivery"], "immediate", "untouched fields stay");

    // Invalid: one bad field rejects the whole update.
    for bad in [
        json!({"priority": "high", "max_events_per_second": 0}),
        json!({"delivery": "batched"}), // batch_interval_ms is 0 for a cli session
        json!({"batch_interval_ms": 60001}),
        json!({"event_types": ["a*b"]}),
        json!({"min_event_priority": "urgent"}),
        json!({"unknown": true}),
    ] {
        client.send_json(&json!({"type": "update_preferences", "data": bad}));
        let err = client.recv_json();
        assert_eq!(err["code"], "invalid_preferences", "{bad}: {err}");
    }
    assert_eq!(server.session("p1")["preferences"], updated);

    drop(client);
    server.wait_state("p1", "disconnected");
    let (_client, sync) = server.resume("p1", &token, None);
    assert_eq!(sync["data"]["preferences"], updated);
    // A resume keeps the session's type, whatever the query says.
    let mut other = server.connect(&format!(
        "client_id=p1&resume_token={token}&client_type=ios"
    ));
    let sync = other.recv_json();
    assert_eq!(sync["data"]["client_type"], "cli");
    assert_eq!(sync["data"]["preferences"], updated);
}

#[test]
fn filters_select_events_and_rejected_events_take_no_seq() {
    let server = start();
    let (mut client, _) = server.new_session("p2");
    client.set_preferences(
        &json!({"event_types": ["build.*", "deploy"], "min_event_priority": "medium"}),
    );
    let reply = server
        .post(
            "/events",
            &json!([
                {"event_type": "build.started"},
                {"event_type": "build"},
                {"event_type": "deploy", "priority": "low"},
                {"event_type": "chat"},
                {"event_type": "deploy", "priority": "critical"},
                {"event_type": "build.finished", "priority": "high"},
            ])
            .to_string(),
        )
        .json();
    let matched: Vec<u64> = reply["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["matched_sessions"].as_u64().unwrap())
        .collect();
    assert_eq!(matched, vec![1, 0, 0, 0, 1, 1]);
    let events = client.recv_events(3);
    assert_eq!(seqs(&events), vec![1, 2, 3]);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["build.started", "deploy", "build.finished"]);
    assert_eq!(server.session("p2")["current_seq"], 3);
}

#[test]
fn batched_delivery_sends_one_batch_per_interval_and_nothing_when_idle() {
    let server = start();
    let mut client = server.connect("client_id=p3&client_type=web");
    client.recv_json();
    client.set_preferences(&json!({"batch_interval_ms": 300, "max_events_per_second": 1000}));
    let published = Instant::now();
    server.publish_n(5, "a");
    let batch = client.recv_json();
    assert_eq!(batch["type"], "event_batch", "{batch}");
    assert!(
        published.elapsed() >= Duration::from_millis(250),
        "a batch came before its window"
    );
    let items = batch["events"].as_array().unwrap();
    assert_eq!(seqs(items), vec![1, 2, 3, 4, 5]);
    assert!(items
        .iter()
        .all(|e| e.get("type").is_none() && e["replayed"] == false));
    // Idle for three intervals: the next message is the heartbeat's answer,
    // not an empty batch.
    std::thread::sleep(Duration::from_millis(900));
    client.send_json(&json!({"type": "heartbeat"}));
    assert_eq!(client.recv_json()["type"], "heartbeat_ack");
}

#[test]
fn the_rate_limit_delays_events_in_order_and_skips_none() {
    let server = start();
    let (mut client, _) = server.new_session("p4");
    client.set_preferences(&json!({"max_events_per_second": 10}));
    let published = Instant::now();
    server.publish_n(25, "a");
    let events = client.recv_events(25);
    // 10 from the full bucket, then 15 more at 10 a second.
    assert!(
        published.elapsed() >= Duration::from_millis(1300),
        "{:?}",
        published.elapsed()
    );
    assert_eq!(seqs(&events), (1..=25).collect::<Vec<_>>());
}

#[test]
fn batches_hold_at_most_the_available_tokens() {
    let server = start();
    let mut client = server.connect("client_id=p5&client_type=web");
    let token = client.recv_json()["data"]["resume_token"]
        .as_str()
        .unwrap()
        .to_string();
    // A bucket of 20 (one second at 20/s), refilled by 5 per 250 ms window.
    client.set_preferences(&json!({"batch_interval_ms": 250, "max_events_per_second": 20}));
    // The bucket is full when a connection opens.
    drop(client);
    server.wait_state("p5", "disconnected");
    let (mut client, _) = server.resume("p5", &token, None);
    let published = Instant::now();
    server.publish_n(30, "a");
    let (sizes, all) = client.recv_batches(30);
    assert_eq!(sizes[0], 20, "{sizes:?}");
    assert!(sizes[1..].iter().all(|&n| n < 20), "{sizes:?}");
    assert!(published.elapsed() >= Duration::from_millis(600));
    assert_eq!(seqs(&all), (1..=30).collect::<Vec<_>>());
}

#[test]
fn replay_is_not_rate_limited_and_comes_in_batches_of_500() {
    let server = start_with(Config {
        max_missed_events: 5000,
        ..config()
    });
    // A batched session at 1 event/s: paced delivery of 1200 events would
    // take twenty minutes.
    let mut client = server.connect("client_id=p6&client_type=web");
    let token = client.recv_json()["data"]["resume_token"]
        .as_str()
        .unwrap()
        .to_string();
    client.set_preferences(&json!({"max_events_per_second": 1}));
    drop(client);
    server.wait_state("p6", "disconnected");
    for _ in 0..3 {
        server.publish_n(400, "a");
    }
    let (mut client, sync) = server.resume("p6", &token, Some(0));
    assert_eq!(sync["data"]["missed_events"], 1200);
    let (sizes, all) = client.recv_batches(1200);
    assert_eq!(sizes, vec![500, 500, 200]);
    assert!(all.iter().all(|e| e["replayed"] == true));
    assert_eq!(seqs(&all), (1..=1200).collect::<Vec<_>>());
}

#[test]
fn an_immediate_session_replays_unpaced_too() {
    let server = start();
    let (mut client, token) = server.new_session("p7");
    client.set_preferences(&json!({"max_events_per_second": 1}));
    drop(client);
    server.wait_state("p7", "disconnected");
    server.publish_n(100, "a");
    let (mut client, _) = server.resume("p7", &token, Some(0));
    let events = client.recv_events(100);
    assert!(events
        .iter()
        .all(|e| e["type"] == "event" && e["replayed"] == true));
    assert_eq!(seqs(&events), (1..=100).collect::<Vec<_>>());
}
