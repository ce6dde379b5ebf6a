//! The client library against the real server: a client started again from
//! its state file resumes the same session and gets exactly what it had not
//! processed; an overflow shows as a gap; a deleted session as lost history.

mod client_support;
mod common;

use client_support::*;
use common::*;
use tether::client::{Client, ClientConfig, Gap, Notice, Received};

/// The next event's seq from a client on this thread, skipping notices.
fn next_seq(client: &mut Client) -> u64 {
    loop {
        match client.recv().unwrap() {
            Received::Event(e) => return e.seq,
            Received::Notice(_) => {}
            Received::Gap(g) => panic!("unexpected {g}"),
        }
    }
}

#[test]
fn a_client_started_again_from_its_state_file_gets_exactly_the_rest() {
    let server = start();
    let path = state_path("again.json");
    let config = ClientConfig {
        client_id: Some("lib1".into()),
        state_file: Some(path.clone()),
        ..ClientConfig::new(server.url(""))
    };
    let mut client = Client::new(config.clone()).unwrap();
    assert!(matches!(
        client.recv().unwrap(),
        Received::Notice(Notice::Connected { .. })
    ));
    server.publish_n(5, "a");
    for want in 1..=3 {
        assert_eq!(next_seq(&mut client), want);
    }
    // The process dies holding seq 3, processed up to 2.
    drop(client);
    server.wait_state("lib1", "disconnected");
    server.publish_n(2, "b");

    let mut client = Client::new(config).unwrap();
    match client.recv().unwrap() {
        Received::Notice(Notice::Resumed { missed_events, .. }) => assert_eq!(missed_events, 5),
        other => panic!("{other:?}"),
    }
    let seqs: Vec<u64> = (0..5).map(|_| next_seq(&mut client)).collect();
    assert_eq!(seqs, vec![3, 4, 5, 6, 7]);
    assert_eq!(client.resume_state().unwrap().last_seq, 6);
    client.close().unwrap();
    // Closing processed seq 7 and acknowledged it.
    let session = server.session("lib1");
    assert_eq!(session["acked_seq"], 7);
    assert_eq!(session["retained_events"], 0);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(state["last_seq"], 7);
    assert_eq!(state["client_id"], "lib1");
}

#[test]
fn events_released_by_overflow_show_as_a_gap() {
    let server = start_with(tether::Config {
        max_missed_events: 5,
        ..config()
    });
    let config = ClientConfig {
        client_id: Some("lib2".into()),
        ..ClientConfig::new(server.url(""))
    };
    let mut client = Client::new(config).unwrap();
    client.recv().unwrap();
    server.publish_n(1, "a");
    assert_eq!(next_seq(&mut client), 1);
    let reply = server.post("/reconnection/simulate-disconnect/lib2", "");
    assert_eq!(reply.status, 200);
    server.publish_n(9, "b"); // seqs 2-10; only 6-10 stay retained
    let gap = loop {
        match client.recv().unwrap() {
            Received::Gap(gap) => break gap,
            Received::Notice(_) => {}
            Received::Event(e) => panic!("event {} before the gap", e.seq),
        }
    };
    assert_eq!(
        gap,
        Gap {
            first_seq: 2,
            last_seq: 5
        }
    );
    let seqs: Vec<u64> = (0..5).map(|_| next_seq(&mut client)).collect();
    assert_eq!(seqs, vec![6, 7, 8, 9, 10]);
}

#[test]
fn a_deleted_session_is_reported_as_lost_history() {
    let server = start();
    let config = ClientConfig {
        client_id: Some("lib3".into()),
        ..ClientConfig::new(server.url(""))
    };
    let mut client = Client::new(config).unwrap();
    client.recv().unwrap();
    server.publish_n(2, "a");
    assert_eq!([next_seq(&mut client), next_seq(&mut client)], [1, 2]);
    let reply = server.request("DELETE", "/reconnection/sessions/lib3", None);
    assert_eq!(reply.status, 200);
    let mut notices = Vec::new();
    loop {
        match client.recv().unwrap() {
            Received::Notice(n @ Notice::Connected { .. }) => {
                notices.push(n);
                break;
            }
            Received::Notice(n) => notices.push(n),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        notices
            .iter()
            .any(|n| matches!(n, Notice::HistoryLost { client_id } if client_id == "lib3")),
        "{notices:?}"
    );
    // The new session starts at seq 1 again.
    server.publish_n(1, "c");
    assert_eq!(next_seq(&mut client), 1);
    let _ = Got::Error(String::new());
}

#[test]
fn a_server_going_away_is_left_alone_for_its_retry_after() {
    let mut server = start();
    let config = ClientConfig {
        client_id: Some("lib-away".into()),
        // Without the server's hint the client would retry at once.
        strategy: Some(tether::Strategy::Immediate),
        ..ClientConfig::new(server.url(""))
    };
    let mut client = Client::new(config).unwrap();
    assert!(matches!(
        client.recv().unwrap(),
        Received::Notice(Notice::Connected { .. })
    ));
    server.server.take().unwrap().shutdown();
    let mut seen = Vec::new();
    loop {
        match client.recv().unwrap() {
            Received::Notice(Notice::Retrying { delay, .. }) => {
                assert!(
                    delay >= std::time::Duration::from_millis(1000),
                    "{delay:?} {seen:?}"
                );
                break;
            }
            Received::Notice(n) => seen.push(n),
            other => panic!("{other:?}"),
        }
    }
}
