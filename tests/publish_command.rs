//! `tether publish`: one event from flags or many from stdin (in batches of
//! up to 1000 events and 1 MiB), the ids printed one per line; the server's
//! error and exit code 1 on failure, exit code 2 on bad arguments; `--token`
//! or `TETHER_ADMIN_TOKEN` for a server with an admin token.

mod client_support;
mod common;

use client_support::*;
use common::*;
use serde_json::json;

fn admin(server: &TestServer) -> String {
    format!("http://{}", server.admin)
}

#[test]
fn one_event_from_flags() {
    let server = start();
    let (mut client, _) = server.new_session("p1");
    let url = admin(&server);
    let (code, stdout, stderr) = run(
        &[
            "publish",
            "--admin",
            &url,
            "--type",
            "build.done",
            "--data",
            r#"{"ok":true}"#,
            "--priority=critical",
            "--target",
            "p1",
            "--target",
            "nobody",
        ],
        "",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "1\n");
    let event = &client.recv_events(1)[0];
    assert_eq!(event["event_type"], "build.done");
    assert_eq!(event["data"], json!({"ok": true}));
    assert_eq!(event["priority"], "critical");
}

#[test]
fn many_events_from_stdin_in_batches_of_1000() {
    // The client reads only after the publish: room for all 1500 events.
    let server = start_with(tether::Config {
        max_missed_events: 5000,
        ..config()
    });
    let (mut client, _) = server.new_session("p2");
    let mut input = String::new();
    for i in 0..1500 {
        input.push_str(&json!({"event_type": "bulk", "data": i}).to_string());
        input.push('\n');
        if i == 10 {
            input.push('\n'); // blank lines are skipped
        }
    }
    let (code, stdout, stderr) = run(&["publish", "--admin", &admin(&server)], &input);
    assert_eq!(code, 0, "{stderr}");
    let ids: Vec<u64> = stdout.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(ids, (1..=1500).collect::<Vec<u64>>());
    let events = client.recv_events(1500);
    assert_eq!(events[1499]["data"], 1499);
}

#[test]
fn batches_also_stop_at_the_body_limit() {
    let server = start();
    // 1000 events of about 1.5 KB: 1.5 MB, over the 1 MiB a request takes.
    let pad = "x".repeat(1500);
    let input: String = (0..1000)
        .map(|i| json!({"event_type": "big", "data": {"i": i, "pad": pad}}).to_string() + "\n")
        .collect();
    let (code, stdout, stderr) = run(&["publish", "--admin", &admin(&server)], &input);
    assert_eq!(code, 0, "{stderr}");
    let ids: Vec<u64> = stdout.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(ids, (1..=1000).collect::<Vec<u64>>());

    // An event no request can carry is refused before anything is sent.
    let huge = json!({"event_type": "huge", "data": "y".repeat(1 << 20)}).to_string();
    let (code, stdout, stderr) = run(
        &["publish", "--admin", &admin(&server)],
        &format!("{{\"event_type\":\"ok\"}}\n{huge}\n"),
    );
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("line 2"), "{stderr}");
    assert_eq!(server.metric("tether_events_published_total"), 1000.0);
}

#[test]
fn failures_print_the_servers_message_and_exit_1() {
    let server = start();
    let url = admin(&server);
    let (code, stdout, stderr) = run(
        &["publish", "--admin", &url],
        "{\"event_type\":\"ok\"}\n{\"event_type\":\"x\",\"priority\":null}\n",
    );
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(stderr.contains("400 invalid_event"), "{stderr}");
    assert!(stderr.contains("priority"), "{stderr}");
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("tether_events_published_total 0"),
        "{metrics}"
    );

    let (code, _, stderr) = run(&["publish", "--admin", &url], "not json\n");
    assert_eq!(code, 1);
    assert!(stderr.contains("line 1"), "{stderr}");

    let (code, _, stderr) = run(
        &["publish", "--admin", "http://127.0.0.1:1", "--type", "t"],
        "",
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}

#[test]
fn the_admin_token_comes_from_the_flag_or_the_environment() {
    let server = start_with(tether::Config {
        admin_token: Some("s3cret".into()),
        ..config()
    });
    let url = admin(&server);
    let (code, _, stderr) = run(&["publish", "--admin", &url, "--type", "t"], "");
    assert_eq!(code, 1);
    assert!(stderr.contains("401 unauthorized"), "{stderr}");
    let (code, stdout, stderr) = run(
        &[
            "publish", "--admin", &url, "--token", "s3cret", "--type", "t",
        ],
        "",
    );
    assert_eq!((code, stdout.as_str()), (0, "1\n"), "{stderr}");
    let out = tether()
        .args(["publish", "--admin", &url, "--type", "t"])
        .env("TETHER_ADMIN_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n");
}

#[test]
fn bad_arguments_exit_2_naming_the_flag() {
    for (list, flag) in [
        (vec!["publish", "--type", "t"], "--admin"),
        (
            vec!["publish", "--admin", "ftp://x", "--type", "t"],
            "--admin",
        ),
        (
            vec!["publish", "--admin", "http://x", "--type", "a b"],
            "--type",
        ),
        (
            vec![
                "publish", "--admin", "http://x", "--type", "t", "--data", "{",
            ],
            "--data",
        ),
        (
            vec![
                "publish",
                "--admin",
                "http://x",
                "--type",
                "t",
                "--priority",
                "urgent",
            ],
            "--priority",
        ),
        (
            vec![
                "publish", "--admin", "http://x", "--type", "t", "--target", "a/b",
            ],
            "--target",
        ),
        (
            vec!["publish", "--admin", "http://x", "--data", "1"],
            "--data",
        ),
        (
            vec!["publish", "--admin", "http://x", "--token="],
            "--token",
        ),
    ] {
        let (code, _, stderr) = run(&list, "");
        assert_eq!(code, 2, "{list:?}: {stderr}");
        assert!(stderr.contains(flag), "{list:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}
