//! Refused resumes leave the session untouched; bad query values are
//! refused with 1008; a valid resume of a connected session takes it over.

mod common;

use common::*;

/// Expects an `error` with `code`, then a close with 1008.
fn expect_refusal(client: &mut Client, code: &str) {
    let err = client.recv_json();
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], code, "{err}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    let (close, rest) = client.recv_until_closed();
    assert_eq!(close, Some(1008));
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn wrong_or_missing_token_is_refused_and_changes_nothing() {
    let server = start();
    let token = server.session_gone_after("s1", 3);
    let before = server.session("s1");

    let wrong = "0".repeat(token.len());
    for query in [
        format!("client_id=s1&resume_token={wrong}&last_seq=1"),
        "client_id=s1&last_seq=1".to_string(),
        "client_id=s1".to_string(),
        format!("client_id=s1&resume_token={}", &token[..10]),
    ] {
        let mut intruder = server.connect(&query);
        expect_refusal(&mut intruder, "invalid_resume_token");
    }
    let after = server.session("s1");
    assert_eq!(before, after, "a refused resume changed the session");

    // The real owner still resumes everything.
    let (_client, sync) = server.resume("s1", &token, Some(0));
    assert_eq!(sync["data"]["missed_events"], 3);
}

#[test]
fn bad_last_seq_is_refused_and_changes_nothing() {
    let server = start();
    let token = server.session_gone_after("s2", 2);
    let before = server.session("s2");
    for bad in ["3", "-1", "abc", "1.5", "99999999999999999999999"] {
        let mut c = server.connect(&format!("client_id=s2&resume_token={token}&last_seq={bad}"));
        expect_refusal(&mut c, "invalid_last_seq");
    }
    assert_eq!(before, server.session("s2"));
}

#[test]
fn malformed_client_id_and_client_type_are_refused() {
    let server = start();
    let long = "x".repeat(129);
    for (query, code) in [
        ("client_id=has%20space", "invalid_client_id"),
        ("client_id=a/b", "invalid_client_id"),
        (&*format!("client_id={long}"), "invalid_client_id"),
        ("client_id=ok&client_type=android", "invalid_client_type"),
    ] {
        let mut c = server.connect(query);
        expect_refusal(&mut c, code);
    }
    assert_eq!(server.get("/reconnection/sessions").json()["total"], 0);
}

#[test]
fn a_new_session_ignores_last_seq_and_an_unknown_token() {
    let server = start();
    let mut c = server.connect("client_id=fresh&client_type=cli&resume_token=abcdef&last_seq=junk");
    let first = c.recv_json();
    assert_eq!(first["type"], "connection_established");
    assert_eq!(first["data"]["session_restored"], false);
    assert_eq!(first["data"]["current_seq"], 0);
}

#[test]
fn resuming_a_connected_session_takes_it_over() {
    let server = start();
    let (mut old, token) = server.new_session("s3");
    server.publish_n(2, "a");
    old.recv_events(2);
    let mut new = server.connect(&format!("client_id=s3&resume_token={token}&last_seq=1"));
    let sync = new.recv_json();
    assert_eq!(sync["type"], "reconnection_sync");
    assert_eq!(sync["data"]["disconnected_ms"], 0);
    assert_eq!(sync["data"]["reconnect_count"], 1);
    assert_eq!(sync["data"]["missed_events"], 1);
    let (close, _) = old.recv_until_closed();
    assert_eq!(close, Some(4000));
    assert_eq!(seqs(&new.recv_events(1)), vec![2]);
    server.publish_n(1, "b");
    assert_eq!(seqs(&new.recv_events(1)), vec![3]);
    let session = server.session("s3");
    assert_eq!(session["state"], "connected");
    assert_eq!(session["reconnect_count"], 1);
}
