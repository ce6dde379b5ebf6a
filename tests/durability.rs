//! --data-dir: sessions, preferences, seqs and retained events survive a
//! restart; a log cut or damaged anywhere recovers to a valid prefix; a
//! damaged snapshot falls back to the previous one; expired data leaves the
//! disk; the directory stays bounded; a second server on the same directory
//! refuses to start. (Crashes: `crash.rs`.)

mod common;

use std::fs;
use std::path::Path;

use common::process::{run_to_exit, tether, Process};
use common::*;
use serde_json::{json, Value};
use tether::Config;

fn durable(dir: &Path) -> Config {
    Config {
        data_dir: Some(dir.to_path_buf()),
        ..config()
    }
}

fn stop(server: TestServer) {
    drop(server);
}

#[test]
fn a_restart_keeps_sessions_preferences_seqs_and_events() {
    let dir = TempDir::new("restart");
    let server = start_with(durable(dir.path()));
    let (mut a, token_a) = server.new_session("a");
    a.set_preferences(&json!({"event_types": ["keep.*"]}));
    let token_b = server.session_gone_after("b", 0);
    let ids = server.publish(&json!([
        {"event_type": "keep.1", "data": 1},
        {"event_type": "drop.1", "data": 2},
        {"event_type": "keep.2", "data": 3},
    ]));
    assert_eq!(seqs(&a.recv_events(2)), vec![1, 2]);
    a.send_json(&json!({"type": "ack", "seq": 1}));
    wait_until("ack", || server.session("a")["acked_seq"] == 1);
    let before_a = server.session("a");
    let before_b = server.session("b");
    drop(a);
    stop(server);

    let server = start_with(durable(dir.path()));
    let after_a = server.session("a");
    let after_b = server.session("b");
    for field in [
        "current_seq",
        "acked_seq",
        "retained_events",
        "preferences",
        "created_at",
        "client_type",
    ] {
        assert_eq!(after_a[field], before_a[field], "a.{field}");
        assert_eq!(after_b[field], before_b[field], "b.{field}");
    }
    assert_eq!(after_a["state"], "disconnected");
    assert_eq!(after_b["current_seq"], 3);

    // Both resume with their old tokens and get exactly what they had not processed.
    let (mut a, sync) = server.resume("a", &token_a, None);
    assert_eq!(sync["data"]["last_seq"], 1);
    assert_eq!(sync["data"]["missed_events"], 1);
    let replayed = a.recv_events(1);
    assert_eq!(
        (replayed[0]["seq"].as_u64(), replayed[0]["id"].as_u64()),
        (Some(2), Some(ids[2]))
    );
    let (mut b, sync) = server.resume("b", &token_b, Some(1));
    assert_eq!(sync["data"]["missed_events"], 2);
    assert_eq!(seqs(&b.recv_events(2)), vec![2, 3]);

    // Seqs and ids go on where they stopped.
    let next = server.publish(&json!({"event_type": "keep.3"}));
    assert!(next[0] > ids[2], "ids are never reused");
    assert_eq!(seqs(&a.recv_events(1)), vec![3]);
    assert_eq!(seqs(&b.recv_events(1)), vec![4]);
    // A wrong token is still refused.
    let mut stranger = server.connect("client_id=a&resume_token=00");
    assert_eq!(stranger.recv_json()["code"], "invalid_resume_token");
}

#[test]
fn without_a_data_directory_a_restart_forgets() {
    let server = start();
    let token = server.session_gone_after("m", 1);
    stop(server);
    let server = start();
    let mut client = server.connect(&format!("client_id=m&resume_token={token}&last_seq=1"));
    let first = client.recv_json();
    assert_eq!(first["type"], "connection_established");
    assert_eq!(first["data"]["session_restored"], false);
}

/// One record of the log: where it ends, its kind and its JSON.
struct LogRecord {
    end: usize,
    kind: u8,
    json: Value,
}

fn parse_log(bytes: &[u8]) -> Vec<LogRecord> {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos + 8 < bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let payload = &bytes[pos + 8..pos + 8 + len];
        pos += 8 + len;
        records.push(LogRecord {
            end: pos,
            kind: payload[0],
            json: serde_json::from_slice(&payload[1..]).unwrap(),
        });
    }
    assert_eq!(pos, bytes.len());
    records
}

/// What the sessions should hold after replaying `records`: for each
/// session, the data of its events in seq order.
fn model(records: &[LogRecord]) -> Vec<(String, Vec<i64>)> {
    let mut sessions: Vec<(String, Vec<String>, Vec<i64>)> = Vec::new();
    for r in records {
        match r.kind {
            b'C' => sessions.push((r.json["client_id"].as_str().unwrap().into(), vec![], vec![])),
            b'P' => {
                let s = sessions
                    .iter_mut()
                    .find(|s| s.0 == r.json["client_id"])
                    .unwrap();
                s.1 = r.json["preferences"]["event_types"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().trim_end_matches('*').to_string())
                    .collect();
            }
            b'E' => {
                let t = r.json["event_type"].as_str().unwrap();
                for s in &mut sessions {
                    if s.1.is_empty() || s.1.iter().any(|p| t.starts_with(p.as_str())) {
                        s.2.push(r.json["data"].as_i64().unwrap());
                    }
                }
            }
            _ => {}
        }
    }
    sessions
        .into_iter()
        .map(|(id, _, data)| (id, data))
        .collect()
}

/// A data directory holding only a log that reaches back to the start: two
/// sessions, one with a filter, and events published one per request.
fn logged_history(dir: &Path) -> (Vec<u8>, String) {
    let server = start_with(durable(dir));
    let (_t, token) = server.new_session("t");
    for i in 0..8 {
        let t = if i % 2 == 0 { "keep.x" } else { "drop.x" };
        server.publish(&json!({"event_type": t, "data": i}));
    }
    let (mut u, _) = server.new_session("u");
    u.set_preferences(&json!({"event_types": ["keep.*"]}));
    for i in 8..16 {
        let t = if i % 2 == 0 { "keep.x" } else { "drop.x" };
        server.publish(&json!({"event_type": t, "data": i}));
    }
    drop(u);
    drop(_t);
    stop(server);
    // Keep only the first segment, which holds the whole history.
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "log-0000000000.tlog" {
            fs::remove_file(path).unwrap();
        }
    }
    (fs::read(dir.join("log-0000000000.tlog")).unwrap(), token)
}

/// Starts a server on `dir` and checks that every session holds exactly
/// what replaying `prefix` gives; then that what is published after the
/// recovery survives a second restart (a torn tail that stayed in place
/// would hide every later record).
fn assert_recovers(dir: &Path, prefix: &[LogRecord], token: &str, what: &str) {
    let mut expected = model(prefix);
    let server = start_with(durable(dir));
    check_sessions(&server, &expected, token, what);
    server.publish(&json!({"event_type": "keep.after", "data": 999}));
    stop(server);
    for (_, data) in &mut expected {
        data.push(999);
    }
    let server = start_with(durable(dir));
    check_sessions(&server, &expected, token, &format!("{what}, restarted"));
}

fn check_sessions(server: &TestServer, expected: &[(String, Vec<i64>)], token: &str, what: &str) {
    let listing = server.get("/reconnection/sessions").json();
    assert_eq!(listing["total"], expected.len(), "{what}");
    for (id, data) in expected {
        assert_eq!(
            server.session(id)["current_seq"],
            data.len(),
            "{what}: {id}"
        );
    }
    if let Some((_, data)) = expected.iter().find(|(id, _)| id == "t") {
        let (mut t, sync) = server.resume("t", token, Some(0));
        assert_eq!(sync["data"]["missed_events"], data.len(), "{what}");
        let events = t.recv_events(data.len());
        let got: Vec<i64> = events.iter().map(|e| e["data"].as_i64().unwrap()).collect();
        assert_eq!(&got, data, "{what}");
        assert_eq!(seqs(&events), (1..=data.len() as u64).collect::<Vec<_>>());
    }
}

/// Removes everything in `dir` and writes `log` as its only segment.
fn only_log(dir: &Path, log: &[u8]) {
    for entry in fs::read_dir(dir).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    fs::write(dir.join("log-0000000000.tlog"), log).unwrap();
}

#[test]
fn a_log_cut_or_damaged_anywhere_recovers_a_valid_prefix() {
    let source = TempDir::new("history");
    let (log, token) = logged_history(source.path());
    let records = parse_log(&log);
    assert!(records.len() >= 18, "{} records", records.len());
    let mut cuts: Vec<usize> = vec![0, 1, 7, 8, 9];
    for r in &records {
        cuts.extend([r.end - 1, r.end, r.end + 1, r.end.saturating_sub(r.end / 3)]);
    }
    cuts.retain(|&c| c <= log.len());
    cuts.sort_unstable();
    cuts.dedup();
    let work = TempDir::new("cut");
    let records_before = |end: usize| -> Vec<LogRecord> {
        records
            .iter()
            .filter(|r| r.end <= end)
            .map(|r| LogRecord {
                end: r.end,
                kind: r.kind,
                json: r.json.clone(),
            })
            .collect()
    };
    for &cut in &cuts {
        only_log(work.path(), &log[..cut]);
        assert_recovers(
            work.path(),
            &records_before(cut),
            &token,
            &format!("cut at {cut}"),
        );
    }
    // A flipped byte inside a record: that record and everything after it go.
    for (i, r) in records.iter().enumerate().step_by(3) {
        let start = if i == 0 { 0 } else { records[i - 1].end };
        for at in [start + 2, start + 5, start + 9, r.end - 1] {
            let mut damaged = log.clone();
            damaged[at] ^= 0x20;
            only_log(work.path(), &damaged);
            assert_recovers(
                work.path(),
                &records_before(start),
                &token,
                &format!("byte {at} flipped"),
            );
        }
    }
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_previous_one() {
    let dir = TempDir::new("snapshots");
    let server = start_with(durable(dir.path()));
    let token = server.session_gone_after("s", 3);
    stop(server);
    let server = start_with(durable(dir.path()));
    server.publish_n(2, "b");
    stop(server);
    let snapshots: Vec<String> = dir
        .contents()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| n.ends_with(".tsnap"))
        .collect();
    assert!(snapshots.len() >= 2, "{snapshots:?}");
    let newest = dir.path().join(snapshots.last().unwrap());
    let mut bytes = fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&newest, bytes).unwrap();

    let server = start_with(durable(dir.path()));
    assert_eq!(server.session("s")["current_seq"], 5);
    let (mut client, _) = server.resume("s", &token, Some(3));
    assert_eq!(seqs(&client.recv_events(2)), vec![4, 5]);
}

#[test]
fn expired_data_leaves_the_disk() {
    let dir = TempDir::new("expiry");
    let server = start_with(Config {
        retention_hours: 0.0003, // about a second
        cleanup_interval_s: 1,
        ..durable(dir.path())
    });
    server.session_gone_after("e", 0);
    let marker = "remember-me-9f2c";
    server.publish(&json!({"event_type": "x", "data": marker}));
    let on_disk = || {
        dir.contents()
            .iter()
            .any(|(_, bytes)| bytes.windows(marker.len()).any(|w| w == marker.as_bytes()))
    };
    assert!(on_disk());
    wait_until("the session expires", || {
        server.get("/reconnection/sessions").json()["total"] == 0
    });
    wait_until("the event leaves the data directory", || !on_disk());
    stop(server);
    let server = start_with(durable(dir.path()));
    assert_eq!(server.get("/reconnection/sessions").json()["total"], 0);
}

#[test]
fn the_directory_stays_bounded_across_restarts() {
    let dir = TempDir::new("bounded");
    let mut sizes = Vec::new();
    for round in 0..6 {
        let server = start_with(durable(dir.path()));
        if round > 0 {
            let old = format!("/reconnection/sessions/r{}", round - 1);
            assert_eq!(server.request("DELETE", &old, None).status, 200);
        }
        let (mut c, _) = server.new_session(&format!("r{round}"));
        server.publish_n(50, "x");
        c.recv_events(50);
        c.send_json(&json!({"type": "ack", "seq": 50}));
        wait_until("ack", || {
            server.session(&format!("r{round}"))["acked_seq"] == 50
        });
        drop(c);
        stop(server);
        // LOCK (a few bytes, the same file every time) on top of the bound.
        let files: Vec<_> = dir
            .contents()
            .into_iter()
            .filter(|(name, _)| name != "LOCK")
            .collect();
        assert!(
            files.len() <= 5,
            "round {round}: {:?}",
            files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        sizes.push(files.iter().map(|f| f.1.len()).sum::<usize>());
    }
    // Each round's events are acknowledged and its session deleted in the
    // next, so the directory does not grow with the rounds.
    assert!(sizes[5] < sizes[2] * 2, "{sizes:?}");
}

/// The log does not record what was written to each connection, yet after
/// a crash a session that read everything and never acknowledged shows no
/// drops, whether it had disconnected or was still connected, and one that
/// missed events still shows them dropped.
#[test]
fn a_crash_does_not_turn_written_events_into_dropped_ones() {
    let dir = TempDir::new("dropped");
    let data = dir.path().to_str().unwrap().to_string();
    let args = [
        "--data-dir",
        &data,
        "--max-missed-events",
        "10",
        "--no-heartbeat",
    ];
    let mut first = Process::start(&args, &[]);
    let dropped = |server: &Process, id: &str| server.session(id)["dropped_events_total"].clone();
    let connect = |id: &str| {
        let mut client = Client::connect(&first.url(&format!("client_id={id}&client_type=cli")));
        assert_eq!(client.recv_json()["type"], "connection_established");
        client
    };
    let (mut left, mut stayed, away) = (connect("left"), connect("stayed"), connect("away"));
    away.close();
    first.wait_state("away", "disconnected");
    // No more at once than a session retains, each read before the next.
    for round in 1..=3 {
        publish_to(&first, 10);
        for client in [&mut left, &mut stayed] {
            assert_eq!(seqs(&client.recv_events(10)).last(), Some(&(round * 10)));
        }
    }
    left.close();
    first.wait_state("left", "disconnected");
    publish_to(&first, 5);
    assert_eq!(seqs(&stayed.recv_events(5)).last(), Some(&35));
    // 25 of the 35 events were released: all written but to `away`.
    let live: Vec<Value> = ["left", "stayed", "away"]
        .iter()
        .map(|id| dropped(&first, id))
        .collect();
    assert_eq!(live, vec![json!(0), json!(0), json!(25)]);

    first.kill();
    drop(stayed);
    let second = Process::start(&args, &[]);
    for (id, expected) in ["left", "stayed", "away"].iter().zip(&live) {
        assert_eq!(&dropped(&second, id), expected, "{id} after the crash");
    }
}

/// Publishes `n` events through `server`'s admin API; they must be accepted.
fn publish_to(server: &Process, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"event_type": "e", "data": i}))
        .collect();
    let (status, body) = server.post("/events", &Value::Array(events).to_string());
    assert_eq!(status, 202, "{body}");
}

#[test]
fn a_second_server_on_a_directory_in_use_refuses_to_start_and_the_first_loses_nothing() {
    let dir = TempDir::new("two-servers");
    let data = dir.path().to_str().unwrap().to_string();
    let mut first = Process::start(&["--data-dir", &data, "--no-heartbeat"], &[]);
    let mut client = Client::connect(&first.url("client_id=d&client_type=cli"));
    assert_eq!(client.recv_json()["type"], "connection_established");
    client.close();
    publish_to(&first, 100);
    let before = dir.contents();

    let mut second = tether();
    second.args([
        "serve",
        "--ws-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
    ]);
    let (code, stderr) = run_to_exit(second);
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("tether:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&format!("--data-dir {data}")) && lines[0].contains("another tether"),
        "{stderr}"
    );
    assert_eq!(
        dir.contents(),
        before,
        "the refused server touched the directory"
    );

    // The first goes on: everything it accepted survives its crash.
    publish_to(&first, 200);
    first.kill();
    let restarted = Process::start(&["--data-dir", &data, "--no-heartbeat"], &[]);
    assert_eq!(restarted.session("d")["current_seq"], 300);
}
