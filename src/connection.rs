//! One WebSocket connection once upgraded (`handshake.rs` gets it there):
//! its reader thread, and the handle the writer pool and the session table
//! use to reach it.
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
//!   (tungstenite's pongs and close frames through the `WebSocket`, every
//!   other message built in place and framed with tungstenite's
//!   `FrameHeader`), and a flush sends
//!   it with a per-call non-blocking send (`MSG_DONTWAIT`): a write never
//!   waits for a client, so no lock is ever held across a blocking socket
//!   call. A writer turn of hundreds of events is one `send`, not one per
//!   8 KiB: on loopback each `send` also runs the receiver's TCP path and
//!   wakes it (`BENCHMARKS.md` has what this saved);
//! - events are written by a small shared writer pool (`writer.rs`), not by a
//!   second thread per connection: a thread costs about 9 KiB of resident
//!   memory and 24 KiB of the kernel's, which would nearly double the cost
//!   of an idle connection (about 11 KiB resident), and one pool
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
use std::time::{Duration, Instant};

use log::debug;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::clock::now_ms;
use crate::conn_io::ConnIo;
use crate::protocol::{ClientMessage, WireError};
use crate::server::Shared;

/// Bytes read from the socket at a time, into the reader's stack. Client
/// messages are small commands.
const READ_CHUNK: usize = 1024;

/// Unsent output past which a connection is cut. A writer only adds to a
/// connection's output once it is empty, and then at most one turn (256 KiB,
/// or one event of up to 1 MiB), so anything beyond is replies (acks of
/// heartbeats, errors, pongs) piling up for a client that sends but does
/// not read: without a bound, its memory would grow as fast as it sends.
const MAX_UNSENT_BYTES: usize = 2 * 1024 * 1024;

/// Close codes of the contract.
pub mod close {
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// A frame RFC 6455 forbids (unmasked, a bad opcode, a bad length).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Bad resume token, bad `last_seq`, bad `client_id` or `client_type`.
    pub const POLICY: u16 = 1008;
    /// A new session could not be saved in the data directory.
    pub const INTERNAL_ERROR: u16 = 1011;
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
    pub(crate) fn new(
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
        let config = tungstenite::protocol::WebSocketConfig::default()
            .write_buffer_size(crate::conn_io::WS_WRITE_BUFFER);
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
    pub(crate) fn write_text(ws: &mut WebSocket<ConnIo>, text: &str) -> Flushed {
        if !Conn::queue_text(ws, text) {
            return Flushed::Dead;
        }
        Conn::flush(ws)
    }

    /// Queues one text message, framed straight into the connection's
    /// output as events are: through tungstenite, the connection would keep
    /// a buffer the size of its largest message for as long as it lasts.
    /// False once a close frame went out or came in.
    pub(crate) fn queue_text(ws: &mut WebSocket<ConnIo>, text: &str) -> bool {
        if !ws.can_write() {
            return false;
        }
        ws.get_mut()
            .write_text_frame(text.len(), |out| out.extend_from_slice(text.as_bytes()));
        true
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

/// A connection is over: its session, if still attached, becomes disconnected.
pub(crate) fn end(shared: &Shared, conn: &Conn) {
    if shared.table.disconnect(conn, now_ms()) {
        debug!("session {} disconnected", conn.client_id);
    }
    conn.abort();
}

/// A complete message read from the client.
enum Incoming {
    Text(tungstenite::Utf8Bytes),
    Binary,
}

/// Reads until the connection ends. The socket read happens without any
/// lock; only feeding the bytes to the `WebSocket` takes it.
pub(crate) fn read_loop(shared: &Arc<Shared>, conn: &Arc<Conn>) {
    let mut buf = [0u8; READ_CHUNK];
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
        let mut close_with = None;
        let mut flushed;
        let mut unsent;
        {
            let mut ws = conn.ws();
            ws.get_mut().feed(&buf[..n]);
            loop {
                match ws.read() {
                    Ok(Message::Text(text)) => incoming.push(Incoming::Text(text)),
                    Ok(Message::Binary(_)) => incoming.push(Incoming::Binary),
                    Ok(Message::Close(_)) => ended = true,
                    Ok(_) => {}
                    Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!("connection from {} ended: {e}", conn.remote);
                        close_with = close_for(&e);
                        ended = true;
                    }
                }
                if ended {
                    break;
                }
            }
            // Sends the pong or close reply tungstenite may have queued.
            flushed = Conn::flush(&mut ws);
            unsent = ws.get_ref().unsent();
        }
        // Messages read before a close frame (say, a final ack) still count.
        // The list goes with them: a connection waiting for its client
        // keeps no buffer.
        for message in std::mem::take(&mut incoming) {
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
                if !Conn::queue_text(&mut ws, &reply) {
                    flushed = Flushed::Dead;
                }
            }
            if flushed != Flushed::Dead {
                flushed = Conn::flush(&mut ws);
            }
            unsent = ws.get_ref().unsent();
        }
        if unsent > MAX_UNSENT_BYTES {
            debug!(
                "{} sends but does not read: {unsent} bytes unsent; cutting the connection",
                conn.remote
            );
            return;
        }
        if ended {
            if let Some((code, reason)) = close_with {
                conn.close(code, reason);
            }
            return;
        }
        match flushed {
            Flushed::Done => {}
            Flushed::Blocked => shared.writer.retry(conn),
            Flushed::Dead => return,
        }
    }
}

/// The close frame a read error deserves, if the socket can still take one:
/// the client broke a rule, and the code tells it which.
fn close_for(e: &WsError) -> Option<(u16, &'static str)> {
    match e {
        WsError::Capacity(_) => Some((close::TOO_BIG, "message too big")),
        WsError::Utf8(_) => Some((close::INVALID_DATA, "text message is not UTF-8")),
        WsError::Protocol(_) => Some((close::PROTOCOL_ERROR, "protocol error")),
        _ => None,
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
                Ok(change) => {
                    let saved = shared
                        .store
                        .as_ref()
                        .is_none_or(|store| store.wait_durable(change.lsn));
                    if !saved {
                        // A restart would bring the old preferences back, so
                        // they come back now and the client is told so.
                        shared.table.restore_preferences(conn, change.previous);
                        let err = WireError::new(
                            "storage_unavailable",
                            "the server cannot save preferences now; they are unchanged",
                        );
                        return vec![err.to_message()];
                    }
                    // New filters or pacing may make waiting events due.
                    shared.writer.wake(conn);
                    vec![change.reply]
                }
                Err(err) => vec![err.to_message()],
            }
        }
    }
}
