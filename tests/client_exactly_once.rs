//! The client library hands each event to the application exactly once and
//! in seq order, even when a (scripted) server replays events it already
//! delivered or sends them in `event_batch`es, and it reports every hole in
//! seq as a gap instead of hiding it.

mod client_support;
mod common;

use client_support::*;
use serde_json::json;
use tether::client::{ClientConfig, Gap, Notice};

fn config(server: &ScriptServer) -> ClientConfig {
    ClientConfig {
        client_id: Some("x".into()),
        ..ClientConfig::new(server.url())
    }
}

#[test]
fn replays_of_delivered_events_are_dropped_and_batches_unpacked() {
    let server = ScriptServer::new();
    let client = ClientRun::start(config(&server));
    let mut conn = server.accept();
    assert_eq!(conn.param("client_id").as_deref(), Some("x"));
    assert_eq!(conn.param("resume_token"), None);
    conn.send(&established("x", "tok1", 0));
    for seq in 1..=3 {
        conn.send(&event(seq, false));
    }
    assert_eq!(
        [client.next_seq(), client.next_seq(), client.next_seq()],
        [1, 2, 3]
    );
    conn.cut();

    // The client resumes from the last seq it processed...
    let mut conn = server.accept();
    assert_eq!(conn.param("resume_token").as_deref(), Some("tok1"));
    assert_eq!(conn.param("last_seq").as_deref(), Some("3"));
    // ...and a server that replays too much gets each event through once.
    conn.send(&sync("x", 3, 6, 3));
    conn.send(&event(2, true));
    conn.send(&event(3, true));
    conn.send(&event(4, true));
    conn.send(&json!({"type": "event_batch", "events": [
        event_item(3, true), event_item(4, true), event_item(5, true), event_item(6, true)]}));
    conn.send(&json!({"type": "event_batch", "events": [event_item(7, false)]}));
    let seqs: Vec<u64> = (0..4).map(|_| client.next_seq()).collect();
    assert_eq!(seqs, vec![4, 5, 6, 7]);
    let stats = client.stop();
    assert_eq!(stats.duplicates_dropped, 4);
    assert_eq!(stats.resumes, 1);
}

#[test]
fn a_jump_in_seq_is_reported_as_a_gap_before_the_event() {
    let server = ScriptServer::new();
    let client = ClientRun::start(config(&server));
    let mut conn = server.accept();
    conn.send(&established("x", "tok1", 0));
    conn.send(&event(1, false));
    conn.send(&event(4, false));
    conn.send(&event(5, false));
    assert_eq!(client.next_seq_or_gap(), Ok(1));
    assert_eq!(
        client.next_seq_or_gap(),
        Err(Gap {
            first_seq: 2,
            last_seq: 3
        })
    );
    assert_eq!(client.next_seq_or_gap(), Ok(4));
    assert_eq!(client.next_seq_or_gap(), Ok(5));
    // The gap counts as processed: a resume asks for what follows it.
    conn.cut();
    let conn = server.accept();
    assert_eq!(conn.param("last_seq").as_deref(), Some("5"));
}

#[test]
fn a_sync_with_a_gap_is_reported_before_the_replay() {
    let server = ScriptServer::new();
    let client = ClientRun::start(config(&server));
    let mut conn = server.accept();
    conn.send(&established("x", "tok1", 0));
    conn.send(&event(1, false));
    assert_eq!(client.next_seq(), 1);
    conn.cut();
    let mut conn = server.accept();
    // Seqs 2-7 were released before the client came back.
    conn.send(&sync("x", 1, 10, 3));
    for seq in 8..=10 {
        conn.send(&event(seq, true));
    }
    assert!(matches!(client.next_notice(), Notice::Disconnected { .. }));
    assert!(matches!(client.next_notice(), Notice::Retrying { .. }));
    assert!(matches!(
        client.next_notice(),
        Notice::Resumed {
            missed_events: 3,
            ..
        }
    ));
    assert_eq!(
        client.next_seq_or_gap(),
        Err(Gap {
            first_seq: 2,
            last_seq: 7
        })
    );
    let seqs: Vec<u64> = (0..3).map(|_| client.next_seq()).collect();
    assert_eq!(seqs, vec![8, 9, 10]);
}

#[test]
fn a_resume_answered_with_a_new_session_reports_lost_history() {
    let server = ScriptServer::new();
    let client = ClientRun::start(config(&server));
    let mut conn = server.accept();
    conn.send(&established("x", "tok1", 0));
    conn.send(&event(1, false));
    conn.send(&event(2, false));
    assert_eq!([client.next_seq(), client.next_seq()], [1, 2]);
    conn.cut();
    // The server restarted without its sessions: a new session, new token.
    let mut conn = server.accept();
    assert_eq!(conn.param("resume_token").as_deref(), Some("tok1"));
    conn.send(&established("x", "tok2", 0));
    conn.send(&event(1, false));
    let mut saw_lost = false;
    loop {
        match client.next() {
            Got::Item(tether::client::Received::Notice(Notice::HistoryLost { client_id })) => {
                assert_eq!(client_id, "x");
                saw_lost = true;
            }
            Got::Item(tether::client::Received::Notice(_)) => {}
            Got::Item(tether::client::Received::Event(e)) => {
                // Seq 1 of the new session is a new event, not a duplicate.
                assert_eq!(e.seq, 1);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_lost);
    conn.cut();
    let conn = server.accept();
    assert_eq!(conn.param("resume_token").as_deref(), Some("tok2"));
    assert_eq!(conn.param("last_seq").as_deref(), Some("1"));
}
