//! The `tether` binary: flags and their environment variables, one-line
//! errors with exit code 2, the bound addresses logged for port 0, a clean
//! stop on SIGTERM (clients get 1001), and no secret in any log line.

mod common;

use common::process::{tether, Process};
use common::*;

/// Runs the binary to completion: exit code and stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = tether()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn defaults_show_in_the_running_config() {
    let server = Process::start(&[], &[]);
    let config = server.get("/reconnection/config");
    assert_eq!(config["ws_listen"], server.ws.to_string());
    assert_eq!(config["admin_listen"], server.admin.to_string());
    assert_eq!(config["admin_token_set"], false);
    assert_eq!(config["strategy"], "exponential_backoff");
    assert_eq!(config["max_retry_attempts"], 10);
    assert_eq!(config["initial_delay_ms"], 1000);
    assert_eq!(config["max_delay_ms"], 30000);
    assert_eq!(config["backoff_multiplier"], 2.0);
    assert_eq!(config["retention_hours"], 24.0);
    assert_eq!(config["max_missed_events"], 1000);
    assert_eq!(config["state_sync_timeout_ms"], 5000);
    assert_eq!(config["heartbeat_enabled"], true);
    assert_eq!(config["heartbeat_interval_ms"], 30000);
    assert_eq!(config["cleanup_interval_s"], 3600);
    assert_eq!(config["max_connections"], 10000);
    assert_eq!(config["max_message_bytes"], 65536);
}

#[test]
fn environment_variables_set_flags_and_flags_win() {
    let server = Process::start(
        &["--max-missed-events", "9", "--retention-hours=0.5"],
        &[
            ("TETHER_MAX_MISSED_EVENTS", "7"),
            ("TETHER_NO_HEARTBEAT", "TRUE"),
            ("TETHER_STRATEGY", "linear_backoff"),
            ("TETHER_MAX_CONNECTIONS", "42"),
        ],
    );
    let config = server.get("/reconnection/config");
    assert_eq!(config["max_missed_events"], 9);
    assert_eq!(config["retention_hours"], 0.5);
    assert_eq!(config["heartbeat_enabled"], false);
    assert_eq!(config["strategy"], "linear_backoff");
    assert_eq!(config["max_connections"], 42);
    // And clients are told.
    let mut client = Client::connect(&server.url("client_type=cli"));
    let first = client.recv_json();
    assert_eq!(first["data"]["reconnection"]["strategy"], "linear_backoff");
    assert_eq!(first["data"]["heartbeat"]["enabled"], false);
}

#[test]
fn bad_values_exit_2_with_one_line_naming_the_flag() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        (
            &["serve", "--max-connections", "lots"],
            &[],
            "--max-connections",
        ),
        (
            &["serve", "--backoff-multiplier", "fast"],
            &[],
            "--backoff-multiplier",
        ),
        (&["serve", "--log-level", "loud"], &[], "--log-level"),
        (&["serve", "--strategy", "sometimes"], &[], "--strategy"),
        (
            &["serve", "--retention-hours", "-1"],
            &[],
            "--retention-hours",
        ),
        // Too long to be a duration: the cleanup thread once died of it.
        (
            &["serve", "--retention-hours", "1e300"],
            &[],
            "--retention-hours",
        ),
        (
            &["serve", "--state-sync-timeout-ms", "0"],
            &[],
            "--state-sync-timeout-ms",
        ),
        (&["serve", "--ws-listen", "nowhere"], &[], "--ws-listen"),
        (&["serve", "--frobnicate"], &[], "--frobnicate"),
        (
            &["serve"],
            &[("TETHER_NO_HEARTBEAT", "maybe")],
            "--no-heartbeat",
        ),
        (
            &["serve"],
            &[("TETHER_MAX_MESSAGE_BYTES", "")],
            "--max-message-bytes",
        ),
        (
            &[
                "serve",
                "--admin-listen",
                "0.0.0.0:0",
                "--ws-listen",
                "127.0.0.1:0",
            ],
            &[],
            "--admin-token",
        ),
        (&["dance"], &[], "dance"),
    ];
    for (args, env, flag) in cases {
        let (code, stderr) = run(args, env);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn help_lists_the_flags() {
    let out = tether().args(["serve", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--ws-listen",
        "--admin-token",
        "--no-heartbeat",
        "--log-level",
        "TETHER_MAX_CONNECTIONS",
    ] {
        assert!(help.contains(flag), "{flag}");
    }
    let out = tether().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout).unwrap().contains("serve"));
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_0() {
    let mut server = Process::start(&[], &[]);
    let mut a = Client::connect(&server.url("client_id=a&client_type=cli"));
    let mut b = Client::connect(&server.url("client_id=b&client_type=web"));
    a.recv_json();
    b.recv_json();
    server.signal("TERM");
    assert_eq!(a.recv_until_closed().0, Some(1001));
    assert_eq!(b.recv_until_closed().0, Some(1001));
    assert_eq!(server.wait_exit(), 0);
    // The listeners are gone.
    assert!(std::net::TcpStream::connect(server.ws).is_err());
}

#[test]
fn sigint_also_stops_cleanly() {
    let mut server = Process::start(&[], &[]);
    server.signal("INT");
    assert_eq!(server.wait_exit(), 0);
}

#[test]
fn tokens_never_reach_the_log_even_at_trace() {
    let mut server = Process::start(
        &["--log-level", "trace", "--admin-token", "admin-s3cret"],
        &[],
    );
    let mut client = Client::connect(&server.url("client_id=sec&client_type=cli"));
    let token = client.recv_json()["data"]["resume_token"]
        .as_str()
        .unwrap()
        .to_string();
    drop(client);
    // A resume, a refused resume and admin calls, all of which get logged.
    let mut resumed = Client::connect(&server.url(&format!("client_id=sec&resume_token={token}")));
    assert_eq!(resumed.recv_json()["type"], "reconnection_sync");
    let mut refused = Client::connect(&server.url("client_id=sec&resume_token=deadbeef"));
    assert_eq!(refused.recv_json()["code"], "invalid_resume_token");
    let status = ureq::get(&format!("http://{}/reconnection/sessions", server.admin))
        .header("Authorization", "Bearer admin-s3cret")
        .call()
        .unwrap()
        .status();
    assert_eq!(status, 200);
    server.signal("TERM");
    assert_eq!(server.wait_exit(), 0);
    let log = server.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains(&token), "the resume token was logged:\n{log}");
    assert!(
        !log.contains("admin-s3cret"),
        "the admin token was logged:\n{log}"
    );
    assert!(!log.contains("deadbeef"), "a query was logged:\n{log}");
    for line in log.lines() {
        assert!(
            ["[ERROR]", "[WARN]", "[INFO]", "[DEBUG]", "[TRACE]"]
                .iter()
                .any(|l| line.contains(l)),
            "a log line without a visible level: {line}"
        );
    }
}
