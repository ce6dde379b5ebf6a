//! The admin HTTP API (contract section 6) on tiny_http.
//!
//! [`route`] is a plain function from a request to a reply, so every
//! endpoint can be tested without a socket; the rest is tiny_http glue.
//!
//! tiny_http's accept thread ends on the first `accept()` error (for
//! example `EMFILE` when the process is out of file descriptors, tiny_http
//! #283) and then reports that error once through `recv()`. The handler that
//! sees it builds a new tiny_http server on the same listening socket (kept
//! open here), so the admin API comes back as soon as descriptors free up.

use std::io::{self, Read};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, error, warn};
use serde::Serialize;
use serde_json::json;

use crate::clock::now_ms;
use crate::connection::close;
use crate::error::{Error, Result};
use crate::event::parse_publish_body;
use crate::metrics::Gauges;
use crate::protocol::percent_decode;
use crate::server::{PublishError, Shared};
use crate::session_table::SessionFilter;
use crate::token::constant_time_eq;

/// The largest `POST /events` body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Threads taking requests from tiny_http.
const HANDLER_THREADS: usize = 2;

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over [`MAX_BODY_BYTES`]: 413.
    TooLarge,
    /// Not UTF-8, or the connection failed mid-body: 400.
    Unreadable,
}

/// A request, as [`route`] sees it.
#[derive(Debug)]
pub struct AdminRequest<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// Path and query, as sent.
    pub url: &'a str,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The body (empty for methods without one).
    pub body: std::result::Result<String, BodyError>,
}

/// A response, as [`route`] produces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body: JSON, or the metrics text.
    pub body: String,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Reply {
    fn json(status: u16, body: &impl Serialize) -> Reply {
        Reply::raw_json(
            status,
            serde_json::to_string(body).expect("replies serialise"),
        )
    }

    fn raw_json(status: u16, body: String) -> Reply {
        Reply {
            status,
            body,
            content_type: "application/json",
            allow: None,
        }
    }

    fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply::json(
            status,
            &json!({"error": {"code": code, "message": message}}),
        )
    }

    fn method_not_allowed(allow: &'static str) -> Reply {
        let mut reply = Reply::error(
            405,
            "method_not_allowed",
            &format!("this endpoint accepts {allow}"),
        );
        reply.allow = Some(allow);
        reply
    }
}

/// Answers one admin request.
pub fn route(shared: &Shared, req: &AdminRequest<'_>) -> Reply {
    let (path, query) = req.url.split_once('?').unwrap_or((req.url, ""));
    if path == "/health" {
        return match req.method {
            "GET" => health(shared),
            _ => Reply::method_not_allowed("GET"),
        };
    }
    if !authorized(shared, req.authorization) {
        return Reply::error(
            401,
            "unauthorized",
            "this endpoint needs 'Authorization: Bearer <admin token>'",
        );
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (segments.as_slice(), req.method) {
        (["events"], "POST") => publish(shared, &req.body),
        (["events"], _) => Reply::method_not_allowed("POST"),
        (["metrics"], "GET") => metrics(shared),
        (["metrics"], _) => Reply::method_not_allowed("GET"),
        (["reconnection", "sessions"], "GET") => list_sessions(shared, query),
        (["reconnection", "sessions"], _) => Reply::method_not_allowed("GET"),
        (["reconnection", "config"], "GET") => config(shared),
        (["reconnection", "config"], _) => Reply::method_not_allowed("GET"),
        (["reconnection", "sessions", id], method) => {
            let id = percent_decode(id);
            match method {
                "GET" => match shared.table.get_json(&id) {
                    Some(session) => Reply::raw_json(200, session),
                    None => unknown_session(&id),
                },
                "DELETE" => delete_session(shared, &id),
                _ => Reply::method_not_allowed("GET, DELETE"),
            }
        }
        (["reconnection", "heartbeat", id], "POST") => {
            let id = percent_decode(id);
            match shared.table.record_heartbeat(&id, now_ms()) {
                Some(at) => Reply::json(200, &json!({"client_id": id, "last_heartbeat": at})),
                None => unknown_session(&id),
            }
        }
        (["reconnection", "simulate-disconnect", id], "POST") => {
            let id = percent_decode(id);
            match shared.table.detach(&id, now_ms()) {
                Some(conn) => {
                    let was_connected = conn.is_some();
                    if let Some(conn) = conn {
                        conn.abort();
                    }
                    Reply::json(
                        200,
                        &json!({"client_id": id, "was_connected": was_connected, "state": "disconnected"}),
                    )
                }
                None => unknown_session(&id),
            }
        }
        (["reconnection", "heartbeat" | "simulate-disconnect", _], _) => {
            Reply::method_not_allowed("POST")
        }
        _ => Reply::error(404, "not_found", &format!("no endpoint at {path}")),
    }
}

fn authorized(shared: &Shared, authorization: Option<&str>) -> bool {
    let Some(expected) = &shared.config.admin_token else {
        return true;
    };
    let Some(header) = authorization else {
        return false;
    };
    let Some((scheme, token)) = header.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq(token.trim().as_bytes(), expected.as_bytes())
}

fn unknown_session(id: &str) -> Reply {
    Reply::error(404, "session_not_found", &format!("no session {id:?}"))
}

fn health(shared: &Shared) -> Reply {
    #[derive(Serialize)]
    struct Health {
        status: &'static str,
        uptime_s: u64,
        sessions: usize,
        connected: usize,
    }
    let counts = shared.table.counts();
    Reply::json(
        200,
        &Health {
            status: "ok",
            uptime_s: shared.started.elapsed().as_secs(),
            sessions: counts.total,
            connected: counts.connected,
        },
    )
}

fn metrics(shared: &Shared) -> Reply {
    let counts = shared.table.counts();
    let text = shared.metrics.render(Gauges {
        connected: counts.connected,
        disconnected: counts.total - counts.connected,
        retained_events: shared.live_events.count(),
        connections: shared.connections.load(Ordering::Relaxed),
    });
    Reply {
        status: 200,
        body: text,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        allow: None,
    }
}

/// `GET /reconnection/config`: the running configuration, no secrets.
#[derive(Serialize)]
struct RunningConfig {
    ws_listen: String,
    admin_listen: String,
    admin_token_set: bool,
    strategy: &'static str,
    max_retry_attempts: u32,
    initial_delay_ms: u64,
    max_delay_ms: u64,
    backoff_multiplier: f64,
    retention_hours: f64,
    max_missed_events: usize,
    state_sync_timeout_ms: u64,
    heartbeat_enabled: bool,
    heartbeat_interval_ms: u64,
    cleanup_interval_s: u64,
    max_connections: usize,
    max_message_bytes: usize,
    data_dir: Option<String>,
    fsync_interval_ms: u64,
}

fn config(shared: &Shared) -> Reply {
    let c = &shared.config;
    Reply::json(
        200,
        &RunningConfig {
            ws_listen: shared.ws_addr.to_string(),
            admin_listen: shared.admin_addr.to_string(),
            admin_token_set: c.admin_token.is_some(),
            strategy: c.strategy.as_str(),
            max_retry_attempts: c.max_retry_attempts,
            initial_delay_ms: c.initial_delay_ms,
            max_delay_ms: c.max_delay_ms,
            backoff_multiplier: c.backoff_multiplier,
            retention_hours: c.retention_hours,
            max_missed_events: c.max_missed_events,
            state_sync_timeout_ms: c.state_sync_timeout_ms,
            heartbeat_enabled: c.heartbeat_enabled,
            heartbeat_interval_ms: c.heartbeat_interval_ms,
            cleanup_interval_s: c.cleanup_interval_s,
            max_connections: c.max_connections,
            max_message_bytes: c.max_message_bytes,
            data_dir: c.data_dir.as_ref().map(|d| d.display().to_string()),
            fsync_interval_ms: c.fsync_interval_ms,
        },
    )
}

fn publish(shared: &Shared, body: &std::result::Result<String, BodyError>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return Reply::error(
                413,
                "payload_too_large",
                &format!("the body is over {MAX_BODY_BYTES} bytes"),
            )
        }
        Err(BodyError::Unreadable) => {
            return Reply::error(400, "invalid_body", "the body is not readable UTF-8 text")
        }
    };
    let events = match parse_publish_body(body) {
        Ok(events) => events,
        Err(why) => return Reply::error(400, "invalid_event", &why),
    };
    match shared.publish(events) {
        Ok(published) => Reply::json(
            202,
            &json!({"accepted": published.len(), "events": published}),
        ),
        Err(PublishError::ShuttingDown) => {
            Reply::error(503, "shutting_down", "the server is shutting down")
        }
        Err(PublishError::Storage) => Reply::error(
            503,
            "storage_unavailable",
            "the data directory cannot be written; see the server's log",
        ),
    }
}

fn list_sessions(shared: &Shared, query: &str) -> Reply {
    let mut filter = SessionFilter::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "state" => {
                filter.connected = match value.as_str() {
                    "connected" => Some(true),
                    "disconnected" => Some(false),
                    _ => {
                        return Reply::error(
                            400,
                            "invalid_filter",
                            "state must be connected or disconnected",
                        )
                    }
                }
            }
            "client_type" => match value.parse() {
                Ok(t) => filter.client_type = Some(t),
                Err(()) => {
                    return Reply::error(
                        400,
                        "invalid_filter",
                        "client_type must be ios, cli or web",
                    )
                }
            },
            _ => {}
        }
    }
    Reply::raw_json(200, shared.table.list_json(filter))
}

fn delete_session(shared: &Shared, id: &str) -> Reply {
    match shared.table.remove(id) {
        Some(conn) => {
            if let Some(conn) = conn {
                conn.close(close::SESSION_DELETED, "session_deleted");
            }
            Reply::json(200, &json!({"client_id": id, "deleted": true}))
        }
        None => unknown_session(id),
    }
}

/// The running admin listener and its handler threads.
pub(crate) struct AdminServer {
    current: Arc<Mutex<Arc<tiny_http::Server>>>,
    handlers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("handlers", &self.handlers.len())
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Serves the admin API on `listener` until [`AdminServer::stop`].
    pub(crate) fn start(shared: &Arc<Shared>, listener: TcpListener) -> Result<AdminServer> {
        let server = serve_on(&listener)?;
        let current = Arc::new(Mutex::new(Arc::new(server)));
        let listener = Arc::new(listener);
        let mut handlers = Vec::new();
        for i in 0..HANDLER_THREADS {
            let (shared, current, listener) = (
                Arc::clone(shared),
                Arc::clone(&current),
                Arc::clone(&listener),
            );
            let handle = thread::Builder::new()
                .name(format!("tether-admin-{i}"))
                .spawn(move || handler_loop(&shared, &current, &listener))
                .map_err(Error::Thread)?;
            handlers.push(handle);
        }
        Ok(AdminServer { current, handlers })
    }

    /// Stops the handlers and closes the listener. The caller has set the
    /// shutting-down flag, so handlers exit when unblocked.
    pub(crate) fn stop(self) {
        {
            let server = self.current.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..self.handlers.len() {
                server.unblock();
            }
        }
        for handle in self.handlers {
            let _ = handle.join();
        }
    }
}

fn serve_on(listener: &TcpListener) -> Result<tiny_http::Server> {
    let listener = listener.try_clone()?;
    tiny_http::Server::from_listener(listener, None)
        .map_err(|e| Error::Io(io::Error::other(e.to_string())))
}

fn handler_loop(
    shared: &Arc<Shared>,
    current: &Mutex<Arc<tiny_http::Server>>,
    listener: &TcpListener,
) {
    loop {
        if shared.is_shutting_down() {
            return;
        }
        let server = Arc::clone(&current.lock().unwrap_or_else(|e| e.into_inner()));
        match server.recv() {
            Ok(request) => handle(shared, request),
            Err(e) if e.kind() == io::ErrorKind::Other && e.to_string() == "thread unblocked" => {}
            Err(e) => {
                if shared.is_shutting_down() {
                    return;
                }
                error!("admin API stopped accepting ({e}); restarting it");
                thread::sleep(Duration::from_millis(100));
                let mut slot = current.lock().unwrap_or_else(|e| e.into_inner());
                if Arc::ptr_eq(&slot, &server) {
                    match serve_on(listener) {
                        Ok(fresh) => {
                            *slot = Arc::new(fresh);
                            // Wake the other handlers still waiting on the dead server.
                            for _ in 0..HANDLER_THREADS {
                                server.unblock();
                            }
                        }
                        Err(e) => warn!("admin API restart failed: {e}; retrying"),
                    }
                }
            }
        }
    }
}

fn handle(shared: &Shared, mut request: tiny_http::Request) {
    let method = request.method().as_str().to_string();
    let url = request.url().to_string();
    let authorization = header(&request, "Authorization");
    let body = if method == "POST" || method == "PUT" || method == "PATCH" {
        read_body(&mut request)
    } else {
        Ok(String::new())
    };
    let too_large = body == Err(BodyError::TooLarge);
    let reply = route(
        shared,
        &AdminRequest {
            method: &method,
            url: &url,
            authorization: authorization.as_deref(),
            body,
        },
    );
    // Never log the URL's query or any header: they may hold secrets.
    debug!(
        "admin {method} {} -> {}",
        url.split('?').next().unwrap_or(""),
        reply.status
    );
    let mut response = tiny_http::Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_header(
            tiny_http::Header::from_bytes("Content-Type", reply.content_type)
                .expect("valid header"),
        );
    if let Some(allow) = reply.allow {
        response.add_header(tiny_http::Header::from_bytes("Allow", allow).expect("valid header"));
    }
    if too_large {
        // The unread rest of the body must not be taken for the next request.
        response.add_header(
            tiny_http::Header::from_bytes("Connection", "close").expect("valid header"),
        );
    }
    if let Err(e) = request.respond(response) {
        debug!("admin response not sent: {e}");
    }
}

fn header(request: &tiny_http::Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_string())
}

fn read_body(request: &mut tiny_http::Request) -> std::result::Result<String, BodyError> {
    if request.body_length().is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|_| BodyError::Unreadable)?;
    if body.len() > MAX_BODY_BYTES {
        return Err(BodyError::TooLarge);
    }
    String::from_utf8(body).map_err(|_| BodyError::Unreadable)
}
