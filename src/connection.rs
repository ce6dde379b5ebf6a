//! One WebSocket connection: the handshake, the reader thread, and the
//! handle the writer pool and the session table use to reach it.
//!
//! # Why one thread per connection, and a shared writer pool
//!
//! tungstenite's blocking `WebSocket` needs `&mut` for both reading and
//! writing, so a thread blocked in `read()` cannot also write events, and
//! splitting it into two `WebSocket`s over cloned streams interleaves frames
//! (tungstenite #311). Polling with short read timeouts would wake every idle
//! client many times a second. Instead:
//!
//! - the connection's own thread blocks in `read()` on the socket *without*
//!   any lock, then takes the connection's lock and feeds the bytes to the one
//!   `WebSocket` through [`ConnIo`], whose reads hand out those bytes and then
//!   report `WouldBlock`;
//! - every write goes, under the same lock, into [`ConnIo`]'s output buffer
//!   (tungstenite's messages through the `WebSocket`, event messages built
//!   in place and framed with tungstenite's `FrameHeader`), and a flush sends
//!   it with a per-call non-blocking send (`MSG_DONTWAIT`): a write never
//!   waits for a client, so no lock is ever held across a blocking socket
//!   call. A writer turn of hundreds of events is one `send`, not one per
//!   8 KiB: on loopback each `send` also runs the receiver's TCP path and
//!   wakes it (`BENCHMARKS.md` has what this saved);
//! - events are written by a small shared writer pool (`writer.rs`), not by a
//!   second thread per connection: a thread costs about 10 KiB of resident
//!   memory, which would double the cost of an idle connection, and one pool
//!   thread writing to many sockets wakes far less often than one thread per
//!   socket. A client that stops reading fills its socket buffer; its writes
//!   then return `WouldBlock`, the pool moves on, and retries it later with a
//!   growing delay. Its events wait in its session's retained buffer.
//!
//! Lock order: a connection's `ws` lock may be held while taking the session
//! table's lock, never the other way round.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, warn};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::clock::now_ms;
use crate::conn_io::{ConnIo, WS_WRITE_BUFFER};
use crate::protocol::{ClientMessage, ClientType, ConnectQuery, WireError};
use crate::server::Shared;
use crate::session_table::OpenRequest;

/// How long a client may take to send its upgrade request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the socket at a time. Client messages are small commands.
const READ_CHUNK: usize = 1024;
/// tungstenite's own input buffer; its default of 128 KiB per connection is
/// what a proxy moving bulk data wants, not a server of small messages.
const WS_READ_BUFFER: usize = 512;
/// The reader thread's stack: it only reads, feeds tungstenite and handles
/// small, depth-limited JSON messages. Only the pages it touches are resident.
const READER_STACK_SIZE: usize = 64 * 1024;

/// Close codes of the contract.
pub mod close {
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Bad resume token, bad `last_seq`, bad `client_id` or `client_type`.
    pub const POLICY: u16 = 1008;
    /// No thread could be started for the connection.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// A message larger than `max_message_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// A newer connection resumed this session.
    pub const TAKEN_OVER: u16 = 4000;
    /// Silent for two heartbeat intervals.
    pub const HEARTBEAT_TIMEOUT: u16 = 4001;
    /// The session was deleted through the admin API.
    pub const SESSION_DELETED: u16 = 4002;
    /// `reconnection_sync` and the replay took longer than `state_sync_timeout_ms`.
    pub const SYNC_TIMEOUT: u16 = 4003;
}

/// What a write attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything is in the socket.
    Done,
    /// The socket is full; the rest waits in [`ConnIo`]'s output buffer.
    Blocked,
    /// The connection is gone.
    Dead,
}

/// A live connection, shared by its reader thread, the writer pool, the
/// session it is attached to and the timers.
#[derive(Debug)]
pub struct Conn {
    /// Unique for the life of the server.
    pub id: u64,
    /// The session this connection belongs to.
    pub client_id: Arc<str>,
    /// The peer's address.
    pub remote: SocketAddr,
    stream: Arc<TcpStream>,
    ws: Mutex<WebSocket<ConnIo>>,
    /// In the writer pool's queue; keeps a connection there at most once.
    pub(crate) queued: AtomicBool,
    /// Delay before the next retry of a blocked write, in microseconds.
    pub(crate) retry_us: AtomicU32,
    /// The earliest pending timer wake-up (see `Writer::wake_at`); 0: none.
    pub(crate) timer_at: AtomicU64,
    /// Unix ms of the last ping the heartbeat thread sent.
    pub(crate) last_ping: AtomicU64,
    /// The last fan-out that listed this connection for waking.
    pub(crate) fanout_mark: AtomicU64,
    /// Unix ms of the last frame from the client.
    pub(crate) last_seen: AtomicU64,
    /// Set once a close or abort has begun; nothing more is written.
    closed: AtomicBool,
    /// Still writing `reconnection_sync` and the replay.
    pub(crate) replaying: AtomicBool,
    /// The first message is written; events may follow.
    pub(crate) ready: AtomicBool,
    /// When the replay must be done by (state_sync_timeout_ms).
    pub(crate) sync_deadline: Instant,
}

impl Conn {
    fn new(
        id: u64,
        client_id: Arc<str>,
        remote: SocketAddr,
        stream: Arc<TcpStream>,
        ws: WebSocket<ConnIo>,
        sync_timeout: Duration,
    ) -> Conn {
        Conn {
            id,
            client_id,
            remote,
            stream,
            ws: Mutex::new(ws),
            queued: AtomicBool::new(false),
            retry_us: AtomicU32::new(0),
            timer_at: AtomicU64::new(0),
            last_ping: AtomicU64::new(0),
            fanout_mark: AtomicU64::new(0),
            last_seen: AtomicU64::new(now_ms()),
            closed: AtomicBool::new(false),
            replaying: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            sync_deadline: Instant::now() + sync_timeout,
        }
    }

    /// A connection over a real loopback socket, for tests of the code
    /// that holds connections; returns the client's end too.
    #[cfg(test)]
    pub(crate) fn for_test(id: u64, client_id: &str) -> (Arc<Conn>, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, remote) = listener.accept().unwrap();
        let stream = Arc::new(server);
        let io = ConnIo::new(Arc::clone(&stream), None);
        let config = WebSocketConfig::default().write_buffer_size(WS_WRITE_BUFFER);
        let ws = WebSocket::from_raw_socket(io, tungstenite::protocol::Role::Server, Some(config));
        let conn = Conn::new(
            id,
            client_id.into(),
            remote,
            stream,
            ws,
            Duration::from_secs(5),
        );
        (Arc::new(conn), client)
    }

    /// Locks the connection's `WebSocket`.
    pub(crate) fn ws(&self) -> MutexGuard<'_, WebSocket<ConnIo>> {
        self.ws.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a close or abort has begun.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Writes whatever is buffered, without blocking.
    pub(crate) fn flush(ws: &mut WebSocket<ConnIo>) -> Flushed {
        match ws.flush() {
            Ok(()) => Flushed::Done,
            Err(e) => {
                // Once the close handshake is over, tungstenite hands the
                // close reply to the stream and reports the connection
                // closed without flushing it; it must still go out.
                if !matches!(e, WsError::Io(_)) {
                    let _ = ws.get_mut().flush();
                }
                classify_write_error(&e)
            }
        }
    }

    /// Queues one text message and flushes, without blocking.
    pub(crate) fn write_text(ws: &mut WebSocket<ConnIo>, text: String) -> Flushed {
        match ws.write(Message::text(text)) {
            Ok(()) => Conn::flush(ws),
            Err(e) => classify_write_error(&e),
        }
    }

    /// Sends a WebSocket ping, without blocking.
    pub(crate) fn ping(&self) -> Flushed {
        let mut ws = self.ws();
        match ws.write(Message::Ping(Default::default())) {
            Ok(()) => Conn::flush(&mut ws),
            Err(e) => classify_write_error(&e),
        }
    }

    /// Sends a close frame with `code` and `reason`, then shuts the socket
    /// down so the reader thread ends. A client that is not reading may miss
    /// the frame; it then sees the connection drop.
    pub fn close(&self, code: u16, reason: &str) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut ws = self.ws();
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let _ = ws.close(Some(frame));
            let _ = Conn::flush(&mut ws);
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Cuts the connection with no close handshake, as a network failure would.
    pub fn abort(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

pub(crate) fn classify_write_error(e: &WsError) -> Flushed {
    match e {
        WsError::Io(io) if io.kind() == io::ErrorKind::WouldBlock => Flushed::Blocked,
        _ => Flushed::Dead,
    }
}

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
pub(crate) fn handshake(shared: Arc<Shared>, stream: TcpStream, remote: SocketAddr) {
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
            return Err(http_error(
                503,
                "too_many_connections",
                "the server is at --max-connections; retry later",
            ));
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
    let io = ConnIo::new(Arc::clone(&stream), Some(Arc::clone(&head)));
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

/// A connection is over: its session, if still attached, becomes disconnected.
fn end(shared: &Shared, conn: &Conn) {
    if shared.table.disconnect(conn, now_ms()) {
        debug!("session {} disconnected", conn.client_id);
    }
    conn.abort();
}

fn http_error(status: u16, code: &str, message: &str) -> ErrorResponse {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
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
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let response = format!(
        "HTTP/1.1 {status} {text}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = (&*stream).write_all(response.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
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

/// Writes `err` and a 1008 close frame, without blocking.
fn refuse(ws: &mut WebSocket<ConnIo>, err: &WireError) {
    let _ = Conn::write_text(ws, err.to_message());
    let _ = ws.close(Some(CloseFrame {
        code: CloseCode::from(close::POLICY),
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
            refuse(&mut ws, &err);
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
            refuse(&mut conn.ws(), &err);
            conn.abort();
            return None;
        }
    };
    if opened.resumed {
        conn.replaying.store(true, Ordering::Release);
    }
    // A new session's token is only handed out once a crash can no longer
    // forget the session.
    if let (Some(store), false) = (&shared.store, opened.resumed) {
        store.wait_durable(opened.lsn);
    }
    // The first message precedes every event: writers skip a connection
    // until it is ready.
    let flushed = Conn::write_text(&mut conn.ws(), opened.first_message);
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

/// A complete message read from the client.
enum Incoming {
    Text(tungstenite::Utf8Bytes),
    Binary,
}

/// Reads until the connection ends. The socket read happens without any
/// lock; only feeding the bytes to the `WebSocket` takes it.
fn read_loop(shared: &Arc<Shared>, conn: &Arc<Conn>) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut incoming = Vec::new();
    loop {
        let n = match (&*conn.stream).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                debug!("read from {} failed: {e}", conn.remote);
                return;
            }
        };
        conn.last_seen.store(now_ms(), Ordering::Relaxed);
        let mut ended = false;
        let mut flushed;
        {
            let mut ws = conn.ws();
            ws.get_mut().feed(std::mem::take(&mut buf), n);
            loop {
                match ws.read() {
                    Ok(Message::Text(text)) => incoming.push(Incoming::Text(text)),
                    Ok(Message::Binary(_)) => incoming.push(Incoming::Binary),
                    Ok(Message::Close(_)) => ended = true,
                    Ok(_) => {}
                    Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(WsError::Capacity(e)) => {
                        debug!("{} sent an oversized message: {e}", conn.remote);
                        drop(ws);
                        conn.close(close::TOO_BIG, "message too big");
                        return;
                    }
                    Err(e) => {
                        debug!("connection from {} ended: {e}", conn.remote);
                        ended = true;
                    }
                }
                if ended {
                    break;
                }
            }
            buf = ws.get_mut().take_input();
            // Sends the pong or close reply tungstenite may have queued.
            flushed = Conn::flush(&mut ws);
        }
        // Messages read before a close frame (say, a final ack) still count.
        for message in incoming.drain(..) {
            let replies = match message {
                Incoming::Text(text) => handle_message(shared, conn, text.as_str()),
                Incoming::Binary => vec![WireError::new(
                    "unsupported_frame",
                    "binary frames are not supported; send JSON text",
                )
                .to_message()],
            };
            if replies.is_empty() {
                continue;
            }
            let mut ws = conn.ws();
            for reply in replies {
                if let Err(e) = ws.write(Message::text(reply)) {
                    flushed = classify_write_error(&e);
                }
            }
            if flushed != Flushed::Dead {
                flushed = Conn::flush(&mut ws);
            }
        }
        if ended {
            return;
        }
        match flushed {
            Flushed::Done => {}
            Flushed::Blocked => shared.writer.retry(conn),
            Flushed::Dead => return,
        }
    }
}

/// Answers one client message; returns the replies to send.
fn handle_message(shared: &Shared, conn: &Arc<Conn>, text: &str) -> Vec<String> {
    match ClientMessage::parse(text) {
        Err(err) => vec![err.to_message()],
        Ok(ClientMessage::Ack { seq }) => match shared.table.ack(conn, seq) {
            Ok(()) => Vec::new(),
            Err(err) => vec![err.to_message()],
        },
        Ok(ClientMessage::Heartbeat { last_seq }) => {
            let (acked, bad_field) = match last_seq {
                Ok(seq) => (seq, None),
                Err(err) => (None, Some(err)),
            };
            let (ack_reply, ack_error) = shared.table.heartbeat(conn, acked, now_ms());
            std::iter::once(ack_reply)
                .chain(
                    bad_field
                        .into_iter()
                        .chain(ack_error)
                        .map(|e| e.to_message()),
                )
                .collect()
        }
        Ok(ClientMessage::UpdatePreferences { data }) => {
            match shared.table.update_preferences(conn, &data) {
                Ok((reply, lsn)) => {
                    if let Some(store) = &shared.store {
                        store.wait_durable(lsn);
                    }
                    // New filters or pacing may make waiting events due.
                    shared.writer.wake(conn);
                    vec![reply]
                }
                Err(err) => vec![err.to_message()],
            }
        }
    }
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
