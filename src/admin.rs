//! The admin HTTP API (contract section 6): [`route`] is a plain function
//! from a request to a reply, so every endpoint can be tested without a
//! socket. `admin_server.rs` serves it with tiny_http.

use std::sync::atomic::Ordering;

use serde::Serialize;
use serde_json::json;

use crate::clock::now_ms;
use crate::connection::close;
use crate::event::parse_publish_body;
use crate::metrics::Gauges;
use crate::protocol::percent_decode;
use crate::server::{PublishError, Shared};
use crate::session_table::SessionFilter;
use crate::token::constant_time_eq;

/// The largest `POST /events` body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

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

    /// The answer to a request over the admin API's cap on requests in flight.
    pub(crate) fn busy(max: usize) -> Reply {
        Reply::error(
            503,
            "too_many_requests",
            &format!("the admin API is handling {max} requests already; retry later"),
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

/// `GET /health`: 200 `ok`, or 503 `degraded` once the data directory
/// cannot be written, so a load balancer or a monitor sees a server that
/// refuses publishes and new sessions.
fn health(shared: &Shared) -> Reply {
    #[derive(Serialize)]
    struct Health {
        status: &'static str,
        uptime_s: u64,
        sessions: usize,
        connected: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        storage: Option<&'static str>,
    }
    let counts = shared.table.counts();
    let storage_failed = shared.storage_failed();
    Reply::json(
        if storage_failed { 503 } else { 200 },
        &Health {
            status: if storage_failed { "degraded" } else { "ok" },
            uptime_s: shared.started.elapsed().as_secs(),
            sessions: counts.total,
            connected: counts.connected,
            storage: storage_failed.then_some("failed"),
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
        storage_failed: shared.storage_failed().into(),
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
