//! A new connection's first moments: the WebSocket upgrade, the checks of
//! its query, opening or resuming its session and the first message, on a
//! short-lived thread; then the connection moves to a reader thread of its
//! own (`connection.rs`).
//!
//! A request that is not an upgrade gets an HTTP error, not a silent close,
//! and a connection refused by the contract gets its error message and a
//! 1008 close.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, warn};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error as WsError, WebSocket};

use crate::clock::now_ms;
use crate::conn_io::{ConnIo, Handshaking, WS_WRITE_BUFFER};
use crate::connection::{close, end, read_loop, Conn, Flushed};
use crate::preferences::ClientType;
use crate::protocol::{ConnectQuery, WireError};
use crate::server::Shared;
use crate::session_table::OpenRequest;

/// The answer to an upgrade over `--max-connections`, whether a handshake
/// thread or the listener itself gives it.
const TOO_MANY_CONNECTIONS: (&str, &str) = (
    "too_many_connections",
    "the server is at --max-connections; retry later",
);
/// How long a client may take over its whole upgrade request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// tungstenite's own input buffer; its default of 128 KiB per connection is
/// what a proxy moving bulk data wants, not a server of small messages.
/// Every connection keeps this much for as long as it lasts, so it fits a
/// heartbeat or an ack; a longer message grows it (tungstenite reserves a
/// frame's whole length), and is then read this many bytes at a time.
const WS_READ_BUFFER: usize = 64;
/// The reader thread's stack: it only reads, feeds tungstenite and handles
/// small, depth-limited JSON messages. Only the pages it touches are resident.
pub(crate) const READER_STACK_SIZE: usize = 64 * 1024;

/// A connection's claim on the server's limits: one connection thread, and
/// once upgraded one of `--max-connections`. Given back when dropped, so an
/// early return or a panic cannot leak it. It moves from the handshake
/// thread to the reader thread with the connection.
struct Admission {
    shared: Arc<Shared>,
    upgraded: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared.conn_threads.fetch_sub(1, Ordering::AcqRel);
        if self.upgraded {
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What the upgrade request said, captured by the handshake callback.
#[derive(Default)]
struct Upgrade {
    query: ConnectQuery,
    user_agent: Option<String>,
    admitted: bool,
}

/// Handshakes one accepted TCP connection, opens its session, writes the
/// first message and hands the connection to a reader thread of its own.
///
/// The handshake runs on this short-lived thread, not on the reader, because
/// it is the deepest and most allocating step of a connection's life: the
/// stack pages and allocator caches it leaves behind would otherwise stay
/// with every idle connection for as long as it lives.
///
/// The accept loop has counted this connection in `shared.conn_threads`.
pub(crate) fn accept(shared: Arc<Shared>, stream: TcpStream, remote: SocketAddr) {
    let mut admission = Admission {
        shared: Arc::clone(&shared),
        upgraded: false,
    };
    let stream = Arc::new(stream);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT));

    let mut upgrade = Upgrade::default();
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_message_size(Some(shared.config.max_message_bytes))
        .max_frame_size(Some(shared.config.max_message_bytes));
    // The signature is tungstenite's; its error response is what it is.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != "/ws" {
            return Err(http_error(
                404,
                "not_found",
                "WebSocket connections go to /ws",
            ));
        }
        let max = shared.config.max_connections;
        let admitted = shared
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            let (code, message) = TOO_MANY_CONNECTIONS;
            return Err(http_error(503, code, message));
        }
        upgrade.admitted = true;
        upgrade.query = ConnectQuery::parse(req.uri().query().unwrap_or(""));
        upgrade.user_agent = req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(resp)
    };
    let head = Arc::new(Mutex::new(Vec::new()));
    let handshaking = Handshaking {
        head: Arc::clone(&head),
        deadline: Instant::now() + HANDSHAKE_TIMEOUT,
    };
    let io = ConnIo::new(Arc::clone(&stream), Some(handshaking));
    let result = match tungstenite::accept_hdr_with_config(io, callback, Some(config)) {
        Ok(ws) => Ok(ws),
        Err(HandshakeError::Failure(e)) => Err(Some(e)),
        Err(HandshakeError::Interrupted(_)) => Err(None),
    };
    admission.upgraded = upgrade.admitted;
    let mut ws = match result {
        Ok(ws) => ws,
        Err(Some(WsError::Http(resp))) => {
            debug!(
                "refused a WebSocket request from {remote} with HTTP {}",
                resp.status()
            );
            return;
        }
        Err(Some(WsError::Io(e))) => {
            debug!("handshake from {remote} failed: {e}");
            return;
        }
        Err(Some(e)) => {
            debug!("{remote} sent no WebSocket upgrade: {e}");
            let head = head.lock().unwrap_or_else(|e| e.into_inner());
            answer_non_upgrade(&stream, &head);
            return;
        }
        Err(None) => {
            debug!("handshake from {remote} timed out");
            return;
        }
    };
    ws.get_mut().end_handshake();
    drop(head);
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    shared
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);

    let Some(conn) = open_session(&shared, ws, &stream, remote, upgrade) else {
        return;
    };
    let reader_conn = Arc::clone(&conn);
    let spawned = thread::Builder::new()
        .name("tether-conn".into())
        .stack_size(READER_STACK_SIZE)
        .spawn(move || {
            let shared = Arc::clone(&admission.shared);
            read_loop(&shared, &reader_conn);
            end(&shared, &reader_conn);
            drop(admission);
        });
    if let Err(e) = spawned {
        warn!("cannot start a reader thread ({e}); closing the connection from {remote}");
        conn.close(close::TRY_AGAIN_LATER, "server overloaded");
        end(&shared, &conn);
    }
}

fn http_error(status: u16, code: &str, message: &str) -> ErrorResponse {
    let body = error_body(code, message);
    let mut resp = ErrorResponse::new(Some(body.clone()));
    *resp.status_mut() = tungstenite::http::StatusCode::from_u16(status).expect("valid status");
    let headers = resp.headers_mut();
    headers.insert(
        "Content-Type",
        "application/json".parse().expect("valid header"),
    );
    headers.insert("Content-Length", body.len().into());
    headers.insert("Connection", "close".parse().expect("valid header"));
    resp
}

/// A request tungstenite could not upgrade gets an HTTP answer instead of a
/// silent close: 404 off `/ws`, 426 on `/ws`, 400 if it was not HTTP at all.
fn answer_non_upgrade(stream: &TcpStream, head: &[u8]) {
    let (status, text, extra, code, message) = match request_path(head) {
        Some(path) if path == "/ws" => (
            426,
            "Upgrade Required",
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
            "upgrade_required",
            "/ws accepts WebSocket upgrades only",
        ),
        Some(_) => (
            404,
            "Not Found",
            "",
            "not_found",
            "WebSocket connections go to /ws",
        ),
        None => (400, "Bad Request", "", "bad_request", "not an HTTP request"),
    };
    let _ = (&*stream).write_all(raw_error(status, text, extra, code, message).as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

/// Answers 503 to a connection the listener has no thread for, without
/// ever blocking the listener: what the client sent so far is read first,
/// so the close does not reset the connection under an unread request
/// where that can be helped, then the answer goes out if the socket takes
/// it at once. A request still to come meets a reset; the answer, already
/// in the client's socket, is still there to read.
pub(crate) fn refuse_without_a_thread(stream: &TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let _ = (&*stream).read(&mut [0u8; 4096]);
    let (code, message) = TOO_MANY_CONNECTIONS;
    let answer = raw_error(503, "Service Unavailable", "", code, message);
    let _ = (&*stream).write(answer.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

/// tether's JSON error body, as the admin API answers too.
fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message}}).to_string()
}

/// A whole HTTP error response with tether's JSON error body.
fn raw_error(status: u16, text: &str, extra: &str, code: &str, message: &str) -> String {
    let body = error_body(code, message);
    format!(
        "HTTP/1.1 {status} {text}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn request_path(head: &[u8]) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {}
        Err(_) => return None,
    }
    let path = req.path?;
    Some(path.split('?').next().unwrap_or(path).to_string())
}

/// Writes `err` and a close frame of `code`, without blocking.
fn refuse(ws: &mut WebSocket<ConnIo>, err: &WireError, code: u16) {
    let _ = Conn::write_text(ws, &err.to_message());
    let _ = ws.close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: err.code.into(),
    }));
    let _ = Conn::flush(ws);
}

/// Validates the query, opens or resumes the session and writes the first
/// message. Returns the connection if it stays open.
fn open_session(
    shared: &Arc<Shared>,
    mut ws: WebSocket<ConnIo>,
    stream: &Arc<TcpStream>,
    remote: SocketAddr,
    upgrade: Upgrade,
) -> Option<Arc<Conn>> {
    let Upgrade {
        query, user_agent, ..
    } = upgrade;
    let checked = check_query(query.client_id, query.client_type, user_agent.as_deref());
    let (client_id, client_type) = match checked {
        Ok(ok) => ok,
        Err(err) => {
            debug!("refused a connection from {remote}: {}", err.code);
            refuse(&mut ws, &err, close::POLICY);
            let _ = stream.shutdown(Shutdown::Both);
            return None;
        }
    };
    let conn = Arc::new(Conn::new(
        shared.next_conn_id.fetch_add(1, Ordering::Relaxed),
        client_id.into(),
        remote,
        Arc::clone(stream),
        ws,
        Duration::from_millis(shared.config.state_sync_timeout_ms),
    ));
    let request = OpenRequest {
        client_type,
        resume_token: query.resume_token,
        last_seq: query.last_seq,
    };
    let opened = match shared.table.open(&conn, request, now_ms()) {
        Ok(opened) => opened,
        Err(err) => {
            debug!(
                "refused session {} from {remote}: {}",
                conn.client_id, err.code
            );
            refuse(&mut conn.ws(), &err, close::POLICY);
            conn.abort();
            return None;
        }
    };
    if opened.resumed {
        conn.replaying.store(true, Ordering::Release);
    }
    // A new session's token is only handed out once a crash can no longer
    // forget the session. A resume needs no wait: its session is already
    // durable and its token stays good across a restart, which at worst
    // replays events the client will drop by seq.
    if let (Some(store), false) = (&shared.store, opened.resumed) {
        if !store.wait_durable(opened.lsn) {
            shared.table.discard_new(&conn);
            if store.has_failed() {
                debug!(
                    "refused session {} from {remote}: storage_unavailable",
                    conn.client_id
                );
                let err = WireError::new(
                    "storage_unavailable",
                    "the server cannot save new sessions now; try again later",
                );
                refuse(&mut conn.ws(), &err, close::INTERNAL_ERROR);
                conn.abort();
            } else {
                shared.close_going_away(&conn);
            }
            return None;
        }
    }
    // The first message precedes every event: writers skip a connection
    // until it is ready.
    let flushed = Conn::write_text(&mut conn.ws(), &opened.first_message);
    conn.ready.store(true, Ordering::Release);
    if let Some(old) = opened.replaced {
        old.close(close::TAKEN_OVER, "session_taken_over");
    }
    if opened.resumed {
        shared
            .metrics
            .reconnections_total
            .fetch_add(1, Ordering::Relaxed);
    }
    // A shutdown that began meanwhile may have listed the connections
    // before this one; whichever close comes first tells the client when to
    // come back.
    if shared.is_shutting_down() {
        shared.close_going_away(&conn);
    }
    match flushed {
        Flushed::Dead => conn.abort(),
        _ => shared.writer.wake(&conn),
    }
    Some(conn)
}

/// The session's `client_id` (given or generated) and `client_type` (given,
/// else from the `User-Agent`).
fn check_query(
    client_id: Option<String>,
    client_type: Option<String>,
    user_agent: Option<&str>,
) -> Result<(String, ClientType), WireError> {
    let client_id = match client_id {
        Some(id) if crate::protocol::is_valid_name(&id) => id,
        Some(_) => {
            return Err(WireError::new(
                "invalid_client_id",
                "client_id must be 1-128 characters of A-Z a-z 0-9 . _ : -",
            ))
        }
        None => crate::token::generate_client_id(),
    };
    let client_type = match client_type {
        None => ClientType::from_user_agent(user_agent),
        Some(t) => t.parse().map_err(|()| {
            WireError::new("invalid_client_type", "client_type must be ios, cli or web")
        })?,
    };
    Ok((client_id, client_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_path_reads_the_request_line() {
        assert_eq!(
            request_path(b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").as_deref(),
            Some("/ws")
        );
        assert_eq!(
            request_path(b"POST /other HTTP/1.1\r\n\r\n").as_deref(),
            Some("/other")
        );
        assert_eq!(request_path(b"\x16\x03\x01garbage"), None);
    }
}
