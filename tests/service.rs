//! Running as a service: the systemd notification protocol (READY, WATCHDOG,
//! STOPPING) over a datagram socket as systemd would listen on it; SIGTERM
//! tells clients when to come back and writes the data directory out; logs
//! fit journald; the unit file passes `systemd-analyze verify`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::Process;
use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

/// Receives notifications until one equals `want`; returns all received.
fn expect_notification(socket: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let state = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(state.clone());
            if state == want {
                return;
            }
        }
    }
    panic!("no {want} among {seen:?}");
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut server = Process::start(
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut seen = Vec::new();
    expect_notification(&socket, "READY=1", &mut seen);
    expect_notification(&socket, "WATCHDOG=1", &mut seen);
    expect_notification(&socket, "WATCHDOG=1", &mut seen);
    server.signal("TERM");
    expect_notification(&socket, "STOPPING=1", &mut seen);
    assert_eq!(server.wait_exit(), 0);
    assert_eq!(
        seen.iter().filter(|s| *s == "READY=1").count(),
        1,
        "{seen:?}"
    );
}

/// Reads until the close frame; returns its code and reason.
fn close_frame(client: &mut Client) -> (u16, String) {
    loop {
        match client.ws.read() {
            Ok(Message::Close(Some(frame))) => {
                return (frame.code.into(), frame.reason.to_string())
            }
            Ok(Message::Close(None)) => panic!("a close without a code"),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

#[test]
fn sigterm_tells_clients_when_to_return_and_keeps_their_events() {
    let dir = TempDir::new("sigterm");
    let data = dir.path().to_str().unwrap().to_string();
    let mut server = Process::start(&["--data-dir", &data], &[]);
    let mut clients = Vec::new();
    for id in ["x", "y", "z"] {
        let mut c = Client::connect(&server.url(&format!("client_id={id}&client_type=cli")));
        let token = c.recv_json()["data"]["resume_token"]
            .as_str()
            .unwrap()
            .to_string();
        clients.push((id, c, token));
    }
    let reply = ureq::post(&format!("http://{}/events", server.admin))
        .send(json!([{"event_type": "a"}, {"event_type": "b"}]).to_string())
        .unwrap()
        .status();
    assert_eq!(reply, 202);
    server.signal("TERM");
    for (_, c, _) in &mut clients {
        let (code, reason) = close_frame(c);
        assert_eq!(code, 1001);
        let reason: Value = serde_json::from_str(&reason).expect("the reason is JSON");
        let after = reason["retry_after_ms"].as_u64().expect("retry_after_ms");
        assert!((1000..31_000).contains(&after), "{after}");
    }
    assert_eq!(server.wait_exit(), 0);

    let server = Process::start(&["--data-dir", &data], &[]);
    for (id, _, token) in &clients {
        let mut c = Client::connect(
            &server.url(&format!("client_id={id}&resume_token={token}&last_seq=0")),
        );
        let sync = c.recv_json();
        assert_eq!(sync["type"], "reconnection_sync", "{sync}");
        assert_eq!(sync["data"]["missed_events"], 2);
        assert_eq!(seqs(&c.recv_events(2)), vec![1, 2]);
    }
}

#[test]
fn under_journald_lines_carry_a_level_and_no_timestamp() {
    let mut server = Process::start(&[], &[("JOURNAL_STREAM", "8:12345")]);
    server.signal("TERM");
    assert_eq!(server.wait_exit(), 0);
    let log = server.log();
    assert!(log.lines().count() >= 3, "{log}");
    for line in log.lines() {
        assert!(line.starts_with('['), "{line}");
    }
}

#[test]
fn the_unit_file_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed; .ci/run installs it");
        return;
    }
    let dir = TempDir::new("unit");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/tether.service"
    ))
    .unwrap()
    .replace("/usr/local/bin/tether", env!("CARGO_BIN_EXE_tether"));
    let path = dir.path().join("tether.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only complaints about our unit count; the host's other units are not ours.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tether.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}
