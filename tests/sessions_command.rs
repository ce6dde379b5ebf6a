//! `tether sessions`: a readable table of sessions, one session field by
//! field, `--json` for the admin API's answer, exit code 1 with the server's
//! message for an unknown session.

mod client_support;
mod common;

use client_support::*;
use common::*;
use serde_json::Value;

#[test]
fn table_single_session_and_json() {
    let server = start();
    let (_a, _) = server.new_session("s-one");
    let token = server.session_gone_after("s-two", 2);
    let url = format!("http://{}", server.admin);

    let (code, stdout, stderr) = run(&["sessions", "--admin", &url], "");
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("CLIENT_ID"), "{stdout}");
    assert!(
        lines[1].starts_with("s-one ") && lines[1].contains("connected"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("s-two ") && lines[2].contains("disconnected"),
        "{stdout}"
    );
    assert_eq!(lines[3], "2 sessions, 1 connected, 1 disconnected");
    assert!(!stdout.contains(&token));

    let (code, stdout, _) = run(&["sessions", "--admin", &url, "s-two"], "");
    assert_eq!(code, 0);
    assert!(stdout.contains("current_seq"), "{stdout}");
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("state") && l.ends_with("disconnected")));

    let (code, stdout, _) = run(&["sessions", "--admin", &url, "--json"], "");
    assert_eq!(code, 0);
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["total"], 2);

    let (code, stdout, stderr) = run(&["sessions", "--admin", &url, "nobody"], "");
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(stderr.contains("404 session_not_found"), "{stderr}");

    let (code, _, stderr) = run(&["sessions", "--admin", &url, "a", "b"], "");
    assert_eq!(code, 2, "{stderr}");
}
