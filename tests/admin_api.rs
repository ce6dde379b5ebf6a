//! The admin API: publishing with validation, session listing and
//! inspection, and the contract's JSON errors for everything else.

mod common;

use common::*;
use serde_json::{json, Value};

fn assert_error(reply: &HttpReply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

#[test]
fn bad_publish_bodies_are_rejected_and_publish_nothing() {
    let server = start();
    let (_c, _) = server.new_session("p1");
    let cases: Vec<String> = vec![
        "not json".into(),
        "[]".into(),
        "42".into(),
        json!({"data": 1}).to_string(),
        json!({"event_type": ""}).to_string(),
        json!({"event_type": "bad type"}).to_string(),
        json!({"event_type": "x".repeat(129)}).to_string(),
        json!({"event_type": "a", "priority": null}).to_string(),
        json!({"event_type": "a", "priority": "urgent"}).to_string(),
        json!({"event_type": "a", "targets": []}).to_string(),
        json!({"event_type": "a", "unknown": 1}).to_string(),
        r#"{"event_type":"a","event_type":"b"}"#.into(),
        json!([{"event_type": "ok"}, {"event_type": 5}]).to_string(),
        Value::Array(vec![json!({"event_type": "a"}); 1001]).to_string(),
    ];
    for body in &cases {
        assert_error(&server.post("/events", body), 400, "invalid_event");
    }
    let huge = format!(
        r#"{{"event_type":"a","data":"{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    assert_error(&server.post("/events", &huge), 413, "payload_too_large");
    assert_eq!(server.session("p1")["current_seq"], 0);
    assert!(server
        .get("/metrics")
        .body
        .contains("tether_events_published_total 0\n"));
    // The limits themselves are fine.
    let thousand = Value::Array(vec![json!({"event_type": "a"}); 1000]).to_string();
    let reply = server.post("/events", &thousand);
    assert_eq!(reply.status, 202);
    assert_eq!(reply.json()["accepted"], 1000);
}

#[test]
fn sessions_are_listed_and_inspected() {
    let server = start();
    let (_a, _) = server.new_session("la");
    let (b, _) = server.new_session("lb");
    b.close();
    server.wait_state("lb", "disconnected");
    let listing = server.get("/reconnection/sessions").json();
    assert_eq!(
        (
            listing["total"].as_u64(),
            listing["connected"].as_u64(),
            listing["disconnected"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    let ids: Vec<&str> = listing["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["la", "lb"]);

    let only = server
        .get("/reconnection/sessions?state=disconnected")
        .json();
    assert_eq!(only["sessions"][0]["client_id"], "lb");
    assert_eq!(only["total"], 1);
    assert_eq!(
        server.get("/reconnection/sessions?client_type=ios").json()["total"],
        0
    );
    assert_eq!(
        server.get("/reconnection/sessions?client_type=cli").json()["total"],
        2
    );
    assert_error(
        &server.get("/reconnection/sessions?state=sleeping"),
        400,
        "invalid_filter",
    );

    let session = server.session("la");
    for field in [
        "client_id",
        "client_type",
        "state",
        "created_at",
        "connected_at",
        "disconnected_at",
        "last_heartbeat",
        "current_seq",
        "acked_seq",
        "missed_events",
        "retained_events",
        "dropped_events_total",
        "reconnect_count",
        "preferences",
        "remote_addr",
    ] {
        assert!(session.get(field).is_some(), "missing {field}: {session}");
    }
    assert_eq!(session["state"], "connected");
    assert!(session["remote_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(session["disconnected_at"].is_null());
    assert!(server.session("lb")["disconnected_at"].as_u64().is_some());
    assert_error(
        &server.get("/reconnection/sessions/nobody"),
        404,
        "session_not_found",
    );
}

#[test]
fn unknown_paths_and_wrong_methods_get_json_errors() {
    let server = start();
    assert_error(&server.get("/nothing/here"), 404, "not_found");
    assert_error(&server.get("/events"), 405, "method_not_allowed");
    assert_error(
        &server.post("/reconnection/sessions", "{}"),
        405,
        "method_not_allowed",
    );
    assert_error(
        &server.request("PUT", "/health", None),
        405,
        "method_not_allowed",
    );
    let health = server.get("/health").json();
    assert_eq!(health["status"], "ok");
}
