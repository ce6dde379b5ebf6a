//! A new connection gets a session: `connection_established` with every
//! field of the contract, a resume token from the OS random source that the
//! admin API never shows, and contiguous seqs on published events.

mod common;

use common::*;
use serde_json::json;
use tungstenite::client::IntoClientRequest;

#[test]
fn connection_established_carries_the_contract_fields() {
    let server = start();
    let mut client = server.connect("client_id=c1&client_type=cli");
    let first = client.recv_json();
    assert_eq!(first["type"], "connection_established");
    let data = &first["data"];
    assert_eq!(data["client_id"], "c1");
    assert_eq!(data["client_type"], "cli");
    assert_eq!(data["session_restored"], false);
    assert_eq!(data["current_seq"], 0);
    let token = data["resume_token"].as_str().unwrap();
    // At least 128 bits, URL-safe.
    assert!(
        token.len() >= 32 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{token}"
    );
    assert_eq!(
        data["preferences"],
        json!({"delivery":"immediate","batch_interval_ms":0,"max_events_per_second":20,
               "priority":"high","event_types":[],"min_event_priority":"low"})
    );
    assert_eq!(
        data["heartbeat"],
        json!({"enabled": true, "interval_ms": 30000, "timeout_ms": 60000})
    );
    assert_eq!(
        data["reconnection"],
        json!({"strategy":"exponential_backoff","max_retry_attempts":10,"initial_delay_ms":1000,
               "max_delay_ms":30000,"backoff_multiplier":2.0,"state_sync_timeout_ms":5000})
    );
}

#[test]
fn tokens_differ_and_never_appear_in_the_admin_api() {
    let server = start();
    let (_a, token_a) = server.new_session("a");
    let (_b, token_b) = server.new_session("b");
    assert_ne!(token_a, token_b);
    for path in [
        "/reconnection/sessions",
        "/reconnection/sessions/a",
        "/reconnection/config",
        "/metrics",
        "/health",
    ] {
        let body = server.get(path).body;
        assert!(
            !body.contains(&token_a) && !body.contains(&token_b),
            "{path} leaks a token"
        );
        assert!(!body.contains("resume_token"), "{path} names the token");
    }
}

#[test]
fn omitted_client_id_gets_a_generated_one() {
    let server = start();
    let mut client = server.connect("client_type=cli");
    let first = client.recv_json();
    let id = first["data"]["client_id"].as_str().unwrap().to_string();
    assert!(!id.is_empty());
    assert_eq!(server.session(&id)["state"], "connected");
    // An empty value counts as omitted.
    let mut other = server.connect("client_id=&client_type=cli");
    let second = other.recv_json();
    assert_ne!(second["data"]["client_id"], first["data"]["client_id"]);
}

#[test]
fn client_type_comes_from_the_user_agent_unless_given() {
    let server = start();
    for (ua, query, want) in [
        ("MyApp/3 CFNetwork/1494 Darwin/23.0.0", "", "ios"),
        ("Mozilla/5.0 (iPhone) Safari/604.1", "", "web"),
        ("curl/8.5.0", "", "cli"),
        ("something/1.0", "", "web"),
        ("curl/8.5.0", "client_type=ios", "ios"),
    ] {
        let mut request = server.url(query).into_client_request().unwrap();
        request
            .headers_mut()
            .insert("User-Agent", ua.parse().unwrap());
        let (mut ws, _) = tungstenite::connect(request).unwrap();
        let first: serde_json::Value =
            serde_json::from_str(ws.read().unwrap().to_text().unwrap()).unwrap();
        assert_eq!(first["data"]["client_type"], want, "{ua} {query}");
    }
}

#[test]
fn published_events_arrive_with_contiguous_seqs() {
    let server = start();
    let (mut client, _) = server.new_session("c1");
    let ids = server.publish(&json!([
        {"event_type": "build.started", "data": {"n": 1}},
        {"event_type": "build.finished", "data": {"n": 2}, "priority": "high"},
    ]));
    let id3 = server.publish(&json!({"event_type": "deploy", "data": null}));
    let events = client.recv_events(3);
    assert_eq!(seqs(&events), vec![1, 2, 3]);
    assert_eq!(events[0]["id"], ids[0]);
    assert_eq!(events[1]["id"], ids[1]);
    assert_eq!(events[2]["id"], id3[0]);
    assert_eq!(events[1]["event_type"], "build.finished");
    assert_eq!(events[1]["priority"], "high");
    assert_eq!(events[0]["priority"], "medium");
    assert_eq!(events[0]["data"], json!({"n": 1}));
    assert_eq!(events[0]["replayed"], false);
    assert!(events[0]["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(ids[0] < ids[1] && ids[1] < id3[0]);
}
