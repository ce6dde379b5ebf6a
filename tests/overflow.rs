//! A session that misses more than `max_missed_events` loses the oldest:
//! the resume says `gap:true` with the right `dropped_events`, and the
//! counters agree.

mod common;

use common::*;
use tether::Config;

#[test]
fn overflow_reports_a_gap_and_counts_drops() {
    let server = start_with(Config {
        max_missed_events: 5,
        ..config()
    });
    let token = server.session_gone_after("o1", 0);
    server.publish_n(8, "a");
    let session = server.session("o1");
    assert_eq!(session["retained_events"], 5);
    assert_eq!(session["dropped_events_total"], 3);
    assert_eq!(session["missed_events"], 8);

    let (mut client, sync) = server.resume("o1", &token, Some(0));
    let data = &sync["data"];
    assert_eq!(data["gap"], true);
    assert_eq!(data["missed_events"], 5);
    assert_eq!(data["dropped_events"], 3);
    assert_eq!(data["current_seq"], 8);
    assert_eq!(seqs(&client.recv_events(5)), vec![4, 5, 6, 7, 8]);
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("tether_events_dropped_total 3\n"),
        "{metrics}"
    );
}

#[test]
fn events_written_but_unacknowledged_are_not_counted_as_dropped() {
    let server = start_with(Config {
        max_missed_events: 3,
        ..config()
    });
    let (mut client, token) = server.new_session("o2");
    server.publish_n(3, "a");
    client.recv_events(3);
    // Written to the client but never acknowledged; released by overflow.
    server.publish_n(3, "b");
    client.recv_events(3);
    assert_eq!(server.session("o2")["dropped_events_total"], 0);
    drop(client);
    server.wait_state("o2", "disconnected");
    // Resuming from 0: seqs 1-3 are gone (a gap), 4-6 are replayed.
    let mut client = server.connect(&format!("client_id=o2&resume_token={token}&last_seq=0"));
    let data = client.recv_json()["data"].clone();
    assert_eq!(
        (data["gap"].as_bool(), data["dropped_events"].as_u64()),
        (Some(true), Some(3))
    );
    assert_eq!(seqs(&client.recv_events(3)), vec![4, 5, 6]);
}
