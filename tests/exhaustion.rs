//! Out of file descriptors: the WebSocket accept loop survives `EMFILE`,
//! and the admin API, whose tiny_http accept thread ends on its first
//! `accept()` error (tiny_http #283), comes back once descriptors free up.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::process::Process;
use common::*;

/// A WebSocket client that gives up after `wait` instead of hanging on a
/// server that cannot accept.
fn try_connect(server: &Process, wait: Duration) -> Option<Client> {
    let stream = TcpStream::connect(server.ws).ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    let url = server.url("client_type=cli");
    let (ws, _) = tungstenite::client(
        url.as_str(),
        tungstenite::stream::MaybeTlsStream::Plain(stream),
    )
    .ok()?;
    let mut client = Client { ws };
    match client.recv() {
        Received::Json(first) if first["type"] == "connection_established" => Some(client),
        _ => None,
    }
}

fn health(server: &Process, wait: Duration) -> Option<u16> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(wait))
        .build()
        .into();
    agent
        .get(&format!("http://{}/health", server.admin))
        .call()
        .ok()
        .map(|r| r.status().as_u16())
}

#[test]
fn the_server_survives_running_out_of_descriptors() {
    let mut server = Process::start_with_fd_limit(48);
    assert_eq!(health(&server, TIMEOUT), Some(200));
    // Fill the descriptor table with idle clients.
    let mut clients = Vec::new();
    while let Some(client) = try_connect(&server, Duration::from_millis(300)) {
        clients.push(client);
        assert!(clients.len() < 200, "the descriptor limit did not apply");
    }
    assert!(
        clients.len() > 10,
        "only {} clients connected",
        clients.len()
    );
    // The admin API cannot accept either; its accept thread hits EMFILE.
    assert_eq!(health(&server, Duration::from_millis(500)), None);
    wait_until("the admin API's failure is logged", || {
        let log = server.log();
        log.contains("admin API stopped accepting") || log.contains("a tiny_http thread failed")
    });

    drop(clients);
    wait_until("the admin API answers again", || {
        health(&server, Duration::from_millis(500)) == Some(200)
    });
    assert!(
        try_connect(&server, TIMEOUT).is_some(),
        "no new WebSocket connection"
    );
    let log = server.log();
    assert!(log.contains("cannot accept WebSocket connections"), "{log}");
    assert!(log.contains("admin API accepting again"), "{log}");
    server.signal("TERM");
    assert_eq!(server.wait_exit(), 0);
}
