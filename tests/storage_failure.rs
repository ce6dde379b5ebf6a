//! A data directory that stops taking writes (a full disk; here a file-size
//! limit on the real binary): publishes get 503, `/health` and `/metrics`
//! say so, and no client is handed a token or preferences the directory
//! could not keep. Sessions that were saved before still resume.

mod common;

use common::process::Process;
use common::*;
use serde_json::{json, Value};

fn health(server: &Process) -> (u16, Value) {
    let (status, body) = server.http("/health", None);
    (status, serde_json::from_str(&body).unwrap())
}

fn storage_failed_gauge(server: &Process) -> String {
    let (_, text) = server.http("/metrics", None);
    text.lines()
        .find_map(|l| l.strip_prefix("tether_storage_failed "))
        .unwrap_or_else(|| panic!("no tether_storage_failed in {text}"))
        .to_string()
}

#[test]
fn a_failed_data_directory_degrades_health_and_hands_out_no_token() {
    let dir = TempDir::new("file-size-limit");
    let data = dir.path().to_str().unwrap();
    // 128 blocks: 64 KiB under dash, 128 KiB under bash; either way room
    // for a session's records and not for the batch below.
    let server = Process::start_with_file_size_limit(128, &["--data-dir", data, "--no-heartbeat"]);
    let (status, body) = health(&server);
    assert_eq!((status, &body["status"]), (200, &json!("ok")), "{body}");
    assert!(body.get("storage").is_none(), "{body}");
    assert_eq!(storage_failed_gauge(&server), "0");

    let mut kept = Client::connect(&server.url("client_id=kept&client_type=cli"));
    let first = kept.recv_json();
    let token = first["data"]["resume_token"].as_str().unwrap().to_string();
    // The batch below may be written in part before the limit stops it, and
    // its durable events would be delivered; this session takes none of them.
    kept.set_preferences(&json!({"event_types": ["k.*"]}));

    let filler = "y".repeat(500);
    let events: Vec<Value> = (0..1000)
        .map(|_| json!({"event_type": "e", "data": filler}))
        .collect();
    let (status, body) = server.post("/events", &Value::Array(events).to_string());
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable");

    let (status, body) = health(&server);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["storage"], "failed");
    assert_eq!(
        (&body["sessions"], &body["connected"]),
        (&json!(1), &json!(1))
    );
    assert!(body["uptime_s"].is_u64(), "{body}");
    assert_eq!(storage_failed_gauge(&server), "1");

    // A new session could not be saved: no token, and nothing left behind.
    let mut fresh = Client::connect(&server.url("client_id=fresh&client_type=cli"));
    let refusal = fresh.recv_json();
    assert_eq!(refusal["type"], "error", "{refusal}");
    assert_eq!(refusal["code"], "storage_unavailable");
    let (code, after) = fresh.recv_until_closed();
    assert_eq!(code, Some(1011), "{after:?}");
    assert!(after.is_empty(), "{after:?}");
    let (status, _) = server.http("/reconnection/sessions/fresh", None);
    assert_eq!(status, 404);

    // Preferences that could not be saved are not applied.
    kept.send_json(&json!({"type": "update_preferences", "data": {"event_types": ["x.*"]}}));
    let reply = kept.recv_json();
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "storage_unavailable");
    let session = server.session("kept");
    assert_eq!(session["preferences"]["event_types"], json!(["k.*"]));

    // A session saved before the failure still resumes with its token.
    drop(kept);
    server.wait_state("kept", "disconnected");
    let mut again =
        Client::connect(&server.url(&format!("client_id=kept&resume_token={token}&last_seq=0")));
    assert_eq!(again.recv_json()["type"], "reconnection_sync");
}
