//! `tether listen`: one JSON line per event on stdout and status lines on
//! stderr; a listen SIGKILLed and started again with its state file prints
//! every event it had not printed (at most the one being printed when it was
//! killed again); exit codes 0 on SIGTERM/SIGINT, 1 after giving up, 2 on
//! bad arguments; the resume token appears only in the state file, mode 0600.

mod client_support;
mod common;

use std::os::unix::fs::PermissionsExt;

use client_support::*;
use common::*;
use serde_json::Value;

fn args(server: &TestServer, id: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--url".to_string(),
        server.url(""),
        format!("--client-id={id}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn prints_events_as_json_lines_and_status_on_stderr() {
    let server = start();
    let mut listen = Listen::start(&args(&server, "l1", &["--event-types", "build.*,deploy"]));
    listen.wait_stderr("preferences updated");
    let body = r#"[{"event_type":"build.started","data":{"n":1},"priority":"high"},
        {"event_type":"other"}, {"event_type":"deploy","data":[1.50]}]"#;
    assert_eq!(server.post("/events", body).status, 202);
    listen.wait_printed(2);
    let events = listen.events().concat();
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(events[0]["event_type"], "build.started");
    assert_eq!(events[0]["priority"], "high");
    assert_eq!(events[0]["data"], serde_json::json!({"n": 1}));
    assert_eq!(events[0]["replayed"], false);
    assert!(events[0]["id"].as_u64().is_some() && events[0]["timestamp"].as_u64().is_some());
    assert_eq!(events[1]["seq"], 2);
    assert_eq!(events[1]["event_type"], "deploy");
    // The publisher's JSON is printed as it was written.
    assert!(listen.out.lock().unwrap()[0][1].contains("\"data\":[1.50]"));
    assert!(listen.stderr().contains("connected: new session l1 (cli)"));
    listen.signal("INT");
    assert_eq!(listen.wait_exit(), 0);
}

#[test]
fn sigkill_and_restart_resumes_without_loss_and_keeps_the_token_private() {
    let server = start();
    let path = state_path("kill.json");
    let state = format!("--state-file={}", path.display());
    let mut listen = Listen::start(&args(&server, "l2", &[&state]));
    listen.wait_stderr("connected");
    server.publish_n(3, "a");
    listen.wait_printed(3);
    listen.kill_and_restart();
    listen.wait_stderr("resumed session l2");
    server.publish_n(2, "b");
    listen.wait_printed(5);
    let (events, repeats) = join_incarnations(&listen.events());
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert!(repeats <= 1);
    listen.signal("TERM");
    assert_eq!(listen.wait_exit(), 0);

    let text = std::fs::read_to_string(&path).unwrap();
    let state: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(state["client_id"], "l2");
    assert_eq!(state["last_seq"], 5);
    let token = state["resume_token"].as_str().unwrap();
    assert!(token.len() >= 32);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let printed = listen.out.lock().unwrap().concat().join("\n");
    assert!(!printed.contains(token) && !listen.stderr().contains(token));
    // A clean stop acknowledged everything.
    assert_eq!(server.session("l2")["acked_seq"], 5);
}

#[test]
fn a_restart_after_sigterm_prints_nothing_twice() {
    let server = start();
    let path = state_path("term.json");
    let state = format!("--state-file={}", path.display());
    let mut listen = Listen::start(&args(&server, "l3", &[&state]));
    listen.wait_stderr("connected");
    server.publish_n(4, "a");
    listen.wait_printed(4);
    listen.signal("TERM");
    assert_eq!(listen.wait_exit(), 0);
    server.publish_n(1, "b");
    let mut again = Listen::start(&args(&server, "l3", &[&state]));
    again.wait_printed(1);
    let events = again.events().concat();
    assert_eq!(events[0]["seq"], 5);
    assert_eq!(events[0]["replayed"], true);
    again.signal("TERM");
    assert_eq!(again.wait_exit(), 0);
    assert_eq!(again.printed(), 1);
}

#[test]
fn gives_up_with_exit_code_1() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    drop(listener);
    let (code, _, stderr) = run(
        &[
            "listen",
            "--url",
            &url,
            "--strategy",
            "immediate",
            "--max-retry-attempts=2",
        ],
        "",
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("retrying in 0 ms (attempt 2)"), "{stderr}");
    assert!(
        stderr.contains("giving up after 2 failed attempts"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_exit_2_with_one_line_naming_the_flag() {
    let dir = state_path("x").parent().unwrap().to_path_buf();
    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "not a state").unwrap();
    let garbage_flag = format!("--state-file={}", garbage.display());
    let url = "ws://127.0.0.1:1/ws";
    for (list, flag) in [
        (vec!["listen"], "--url"),
        (vec!["listen", "--url", "http://x/ws"], "--url"),
        (
            vec!["listen", "--url", url, "--client-id", "a b"],
            "--client-id",
        ),
        (
            vec!["listen", "--url", url, "--client-type", "tv"],
            "--client-type",
        ),
        (
            vec!["listen", "--url", url, "--event-types", "a*b"],
            "--event-types",
        ),
        (
            vec!["listen", "--url", url, "--strategy", "fast"],
            "--strategy",
        ),
        (
            vec!["listen", "--url", url, "--max-retry-attempts", "-1"],
            "--max-retry-attempts",
        ),
        (
            vec!["listen", "--url", url, "--max-events-per-second=0"],
            "--max-events-per-second",
        ),
        (vec!["listen", "--url", url, "--colour"], "--colour"),
        (vec!["listen", "--url", url, &garbage_flag], "--state-file"),
    ] {
        let (code, stdout, stderr) = run(&list, "");
        assert_eq!(code, 2, "{list:?}: {stderr}");
        assert!(stderr.contains(flag), "{list:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stdout.is_empty());
    }
    let (code, stdout, _) = run(&["listen", "--help"], "");
    assert_eq!(code, 0);
    for flag in [
        "--url",
        "--state-file",
        "--event-types",
        "--max-events-per-second",
        "--strategy",
    ] {
        assert!(stdout.contains(flag), "{flag}");
    }
}
