//! Resuming a session: `reconnection_sync`, then exactly the events after
//! `last_seq`, in order and marked replayed, before any live event; acks
//! (explicit, by heartbeat, by resume) release retained events.

mod common;

use common::*;
use serde_json::json;

#[test]
fn resume_replays_missed_events_before_live_ones() {
    let server = start();
    let (mut client, token) = server.new_session("r1");
    server.publish_n(3, "a");
    let got = client.recv_events(3);
    assert_eq!(seqs(&got), vec![1, 2, 3]);
    client.close();
    server.wait_state("r1", "disconnected");

    server.publish_n(4, "b");
    assert_eq!(server.session("r1")["missed_events"], 4);
    let mut client = server.connect(&format!("client_id=r1&resume_token={token}&last_seq=3"));
    let sync = client.recv_json();
    assert_eq!(sync["type"], "reconnection_sync", "{sync}");
    let data = &sync["data"];
    assert_eq!(data["session_restored"], true);
    assert_eq!(data["last_seq"], 3);
    assert_eq!(data["current_seq"], 7);
    assert_eq!(data["missed_events"], 4);
    assert_eq!(data["gap"], false);
    assert_eq!(data["dropped_events"], 0);
    assert_eq!(data["reconnect_count"], 1);
    assert!(data["disconnected_ms"].as_u64().is_some());
    assert_eq!(data["preferences"]["delivery"], "immediate");
    assert!(data.get("resume_token").is_none());

    server.publish_n(1, "live");
    let events = client.recv_events(5);
    assert_eq!(seqs(&events), vec![4, 5, 6, 7, 8]);
    for e in &events[..4] {
        assert_eq!(e["replayed"], true, "{e}");
        assert_eq!(e["event_type"], "b");
    }
    assert_eq!(events[4]["replayed"], false);
    assert_eq!(events[4]["event_type"], "live");
    let session = server.session("r1");
    assert_eq!(session["missed_events"], 0);
    assert_eq!(session["acked_seq"], 3);
    assert_eq!(session["reconnect_count"], 1);
}

#[test]
fn resume_from_an_earlier_seq_replays_unacknowledged_events_again() {
    let server = start();
    let token = server.session_gone_after("r2", 5);
    // The client only processed up to 2 before it died.
    let (mut client, sync) = server.resume("r2", &token, Some(2));
    assert_eq!(sync["data"]["missed_events"], 3);
    let events = client.recv_events(3);
    assert_eq!(seqs(&events), vec![3, 4, 5]);
}

#[test]
fn omitted_last_seq_uses_the_acknowledged_seq() {
    let server = start();
    let (mut client, token) = server.new_session("r3");
    server.publish_n(6, "a");
    client.recv_events(6);
    client.send_json(&json!({"type": "ack", "seq": 4}));
    wait_until("ack recorded", || server.session("r3")["acked_seq"] == 4);
    client.close();
    server.wait_state("r3", "disconnected");
    let (mut client, sync) = server.resume("r3", &token, None);
    assert_eq!(sync["data"]["last_seq"], 4);
    assert_eq!(sync["data"]["missed_events"], 2);
    assert_eq!(sync["data"]["gap"], false);
    assert_eq!(seqs(&client.recv_events(2)), vec![5, 6]);
}

#[test]
fn acks_release_retained_events() {
    let server = start();
    let (mut client, _) = server.new_session("r4");
    server.publish_n(10, "a");
    client.recv_events(10);
    assert_eq!(server.session("r4")["retained_events"], 10);

    client.send_json(&json!({"type": "ack", "seq": 3}));
    wait_until("ack releases", || {
        server.session("r4")["retained_events"] == 7
    });

    client.send_json(&json!({"type": "heartbeat", "last_seq": 8}));
    let ack = client.recv_json();
    assert_eq!(ack["type"], "heartbeat_ack");
    assert_eq!(ack["current_seq"], 10);
    assert!(ack["server_time"].as_u64().is_some());
    let session = server.session("r4");
    assert_eq!(session["retained_events"], 2);
    assert_eq!(session["acked_seq"], 8);
    assert!(session["last_heartbeat"].as_u64().is_some());

    // An ack below the acknowledged seq changes nothing.
    client.send_json(&json!({"type": "ack", "seq": 1}));
    client.send_json(&json!({"type": "heartbeat"}));
    client.recv_json();
    assert_eq!(server.session("r4")["acked_seq"], 8);
}

#[test]
fn resuming_acknowledges_up_to_last_seq() {
    let server = start();
    let token = server.session_gone_after("r5", 5);
    let (_client, sync) = server.resume("r5", &token, Some(5));
    assert_eq!(sync["data"]["missed_events"], 0);
    let session = server.session("r5");
    assert_eq!(session["acked_seq"], 5);
    assert_eq!(session["retained_events"], 0);
    assert_eq!(session["state"], "connected");
}

#[test]
fn targets_reach_only_the_named_sessions() {
    let server = start();
    let (mut a, _) = server.new_session("ta");
    let (mut b, _) = server.new_session("tb");
    let reply = server.post(
        "/events",
        &json!([{"event_type": "x", "targets": ["tb", "nobody"]}, {"event_type": "y"}]).to_string(),
    );
    assert_eq!(reply.status, 202);
    let body = reply.json();
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["events"][0]["matched_sessions"], 1);
    assert_eq!(body["events"][1]["matched_sessions"], 2);
    let a_events = a.recv_events(1);
    assert_eq!(a_events[0]["event_type"], "y");
    assert_eq!(a_events[0]["seq"], 1);
    let b_events = b.recv_events(2);
    assert_eq!(b_events[0]["event_type"], "x");
    assert_eq!(seqs(&b_events), vec![1, 2]);
    // Unknown targets create nothing.
    assert_eq!(server.get("/reconnection/sessions/nobody").status, 404);
}
