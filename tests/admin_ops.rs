//! The operator's side of the admin API: deleting sessions, recording
//! heartbeats, simulating network failures, the running configuration
//! without secrets, health, Prometheus metrics that parse, the admin token,
//! and all of it driven by the real curl binary.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::*;
use serde_json::{json, Value};
use tether::Config;

#[test]
fn delete_forgets_a_session_and_closes_its_connection_with_4002() {
    let server = start();
    let (mut client, token) = server.new_session("d1");
    let reply = server.request("DELETE", "/reconnection/sessions/d1", None);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"client_id": "d1", "deleted": true}));
    assert_eq!(client.recv_until_closed().0, Some(4002));
    assert_eq!(server.get("/reconnection/sessions/d1").status, 404);
    assert_eq!(
        server
            .request("DELETE", "/reconnection/sessions/d1", None)
            .status,
        404
    );
    // The old token means nothing now: the id starts a new session.
    let mut again = server.connect(&format!("client_id=d1&resume_token={token}"));
    assert_eq!(again.recv_json()["data"]["session_restored"], false);
}

#[test]
fn admin_heartbeat_records_last_heartbeat() {
    let server = start();
    let (_client, _) = server.new_session("d2");
    assert!(server.session("d2")["last_heartbeat"].is_null());
    let reply = server.post("/reconnection/heartbeat/d2", "");
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["client_id"], "d2");
    let at = body["last_heartbeat"].as_u64().unwrap();
    assert_eq!(server.session("d2")["last_heartbeat"], at);
    assert_eq!(
        server.post("/reconnection/heartbeat/nobody", "").status,
        404
    );
}

#[test]
fn simulate_disconnect_cuts_the_socket_and_keeps_the_session() {
    let server = start();
    let (mut client, token) = server.new_session("d3");
    let reply = server.post("/reconnection/simulate-disconnect/d3", "");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"client_id": "d3", "was_connected": true, "state": "disconnected"})
    );
    // No close handshake: the client just sees the connection die.
    assert_eq!(client.recv_until_closed().0, None);
    assert_eq!(server.session("d3")["state"], "disconnected");
    server.publish_n(3, "a");
    assert_eq!(server.session("d3")["missed_events"], 3);
    let again = server
        .post("/reconnection/simulate-disconnect/d3", "")
        .json();
    assert_eq!(again["was_connected"], false);
    let (mut client, sync) = server.resume("d3", &token, None);
    assert_eq!(sync["data"]["missed_events"], 3);
    assert_eq!(seqs(&client.recv_events(3)), vec![1, 2, 3]);
    assert_eq!(
        server
            .post("/reconnection/simulate-disconnect/nobody", "")
            .status,
        404
    );
}

#[test]
fn config_and_health_show_no_secrets() {
    let server = start_with(Config {
        admin_token: Some("t0ps3cret".into()),
        ..config()
    });
    let reply = server.get("/reconnection/config");
    assert_eq!(reply.status, 200);
    assert!(!reply.body.contains("t0ps3cret"));
    let config = reply.json();
    assert_eq!(config["admin_token_set"], true);
    assert_eq!(config["ws_listen"], server.ws.to_string());
    let (_c, _) = server.new_session("d4");
    let health = server.get("/health").json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["sessions"], 1);
    assert_eq!(health["connected"], 1);
    assert!(health["uptime_s"].as_u64().is_some());
}

/// Reads the Prometheus text format strictly: every sample belongs to a
/// family announced by `# HELP` and `# TYPE` before it, counters end in
/// `_total`, label sets are well formed and values are numbers. Returns
/// each family's type and each sample's value.
fn parse_exposition(text: &str) -> (HashMap<String, String>, HashMap<String, f64>) {
    let mut types = HashMap::new();
    let mut helps = HashMap::new();
    let mut samples = HashMap::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and text");
            assert!(!help.is_empty());
            assert!(
                helps.insert(name.to_string(), ()).is_none(),
                "HELP twice for {name}"
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and type");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            assert!(helps.contains_key(name), "TYPE before HELP for {name}");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none());
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
        } else {
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "stray line {line:?}"
            );
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("labels close");
                    for pair in labels.split(',') {
                        let (k, v) = pair.split_once('=').expect("label=value");
                        assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                        assert!(
                            v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                            "{line}"
                        );
                    }
                    name
                }
                None => series,
            };
            assert!(name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'));
            assert!(types.contains_key(name), "sample {name} before its TYPE");
            samples.insert(series.to_string(), value);
        }
    }
    (types, samples)
}

#[test]
fn metrics_are_valid_prometheus_text_and_count_what_happened() {
    let server = start();
    let (mut a, token) = server.new_session("m1");
    let (_b, _) = server.new_session("m2");
    server.publish_n(4, "x");
    a.recv_events(4);
    drop(a);
    server.wait_state("m1", "disconnected");
    server.publish_n(2, "y");
    let (mut a, _) = server.resume("m1", &token, Some(4));
    a.recv_events(2);
    wait_until("deliveries counted", || {
        server
            .get("/metrics")
            .body
            .contains("tether_events_replayed_total 2\n")
    });

    let reply = server.get("/metrics");
    assert_eq!(reply.status, 200);
    let (types, samples) = parse_exposition(&reply.body);
    for (name, kind) in [
        ("tether_sessions", "gauge"),
        ("tether_retained_events", "gauge"),
        ("tether_connections_total", "counter"),
        ("tether_reconnections_total", "counter"),
        ("tether_events_published_total", "counter"),
        ("tether_events_delivered_total", "counter"),
        ("tether_events_replayed_total", "counter"),
        ("tether_events_dropped_total", "counter"),
        ("tether_heartbeat_timeouts_total", "counter"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    assert_eq!(samples["tether_sessions{state=\"connected\"}"], 2.0);
    assert_eq!(samples["tether_sessions{state=\"disconnected\"}"], 0.0);
    assert_eq!(samples["tether_events_published_total"], 6.0);
    assert_eq!(samples["tether_connections_total"], 3.0);
    assert_eq!(samples["tether_reconnections_total"], 1.0);
    // m1: 4 live + 2 replayed; m2: 6 live.
    assert_eq!(samples["tether_events_delivered_total"], 12.0);
    assert_eq!(samples["tether_retained_events"], 6.0);
}

#[test]
fn the_admin_token_guards_everything_but_health() {
    let server = start_with(Config {
        admin_token: Some("right".into()),
        ..config()
    });
    let url = |p: &str| format!("http://{}{p}", server.admin);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let status = |path: &str, auth: Option<&str>| {
        let mut req = agent.get(&url(path));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let mut resp = req.call().unwrap();
        let body: Value =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap_or(Value::Null);
        (resp.status().as_u16(), body)
    };
    for path in [
        "/reconnection/sessions",
        "/reconnection/config",
        "/metrics",
        "/nowhere",
    ] {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer righ"),
            Some("Basic right"),
            Some("right"),
        ] {
            let (code, body) = status(path, auth);
            assert_eq!(code, 401, "{path} {auth:?}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    assert_eq!(
        status("/reconnection/sessions", Some("Bearer right")).0,
        200
    );
    assert_eq!(
        status("/reconnection/sessions", Some("bearer right")).0,
        200
    );
    assert_eq!(status("/nowhere", Some("Bearer right")).0, 404);
    assert_eq!(status("/health", None).0, 200);
    let publish = agent
        .post(&url("/events"))
        .send(r#"{"event_type":"a"}"#)
        .unwrap()
        .status();
    assert_eq!(publish, 401);
}

/// Runs curl the way an operator would and returns (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

#[test]
fn an_operator_with_curl() {
    let server = start_with(Config {
        admin_token: Some("op-token".into()),
        ..config()
    });
    let base = format!("http://{}", server.admin);
    let auth = "Authorization: Bearer op-token";
    let (mut client, _) = server.new_session("ops");

    let events_url = format!("{base}/events");
    let publish = |data: &[&str]| {
        let mut args = vec!["-X", "POST", &events_url, "-H", auth];
        args.extend_from_slice(data);
        curl(&args)
    };
    let (code, body) = publish(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"event_type":"deploy.done","data":{"v":2},"targets":["ops"]}"#,
    ]);
    assert_eq!(code, 202, "{body}");
    let published: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(published["events"][0]["matched_sessions"], 1);
    assert_eq!(client.recv_events(1)[0]["data"], json!({"v": 2}));

    let (code, body) = curl(&[
        &format!("{base}/reconnection/sessions?state=connected"),
        "-H",
        auth,
    ]);
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["sessions"][0]["client_id"],
        "ops"
    );

    let (code, _) = curl(&[
        "-X",
        "POST",
        &format!("{base}/reconnection/heartbeat/ops"),
        "-H",
        auth,
    ]);
    assert_eq!(code, 200);
    let (code, body) = curl(&[&format!("{base}/metrics"), "-H", auth]);
    assert_eq!(code, 200);
    parse_exposition(&body);
    // A big body through curl (which sends Expect: 100-continue) is refused whole.
    let big = format!(
        r#"{{"event_type":"a","data":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let path = std::env::temp_dir().join(format!("tether-big-{}.json", std::process::id()));
    std::fs::write(&path, big).unwrap();
    let file = format!("@{}", path.display());
    let (code, body) = publish(&["--data-binary", &file]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, 413, "{body}");
    let (code, body) = curl(&[
        "-X",
        "DELETE",
        &format!("{base}/reconnection/sessions/ops"),
        "-H",
        auth,
    ]);
    assert_eq!(
        (code, body.as_str()),
        (200, r#"{"client_id":"ops","deleted":true}"#)
    );
    assert_eq!(client.recv_until_closed().0, Some(4002));
    let (code, _) = curl(&[&format!("{base}/reconnection/sessions")]);
    assert_eq!(code, 401);
    let (code, body) = curl(&[&format!("{base}/health")]);
    assert_eq!(code, 200, "{body}");
}
