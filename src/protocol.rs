//! The wire contract's messages: names, the messages a client may send, the
//! control messages the server sends and the connect query (contract
//! sections 3 and 4). Client types, priorities and preferences are in
//! `preferences.rs`; event messages are built in `event.rs`, where the
//! shared part of each event is serialised once.

use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::preferences::{ClientType, Preferences};

/// The longest `client_id` and `event_type`.
pub const MAX_NAME_LEN: usize = 128;

/// Whether `s` is a valid `client_id` or `event_type`: 1-128 characters of
/// `A-Z a-z 0-9 . _ : -`.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.bytes().all(is_name_byte)
}

pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

/// An answer to bad client input: an `error` message that keeps the connection open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// The machine-readable code of contract section 4.
    pub code: &'static str,
    /// A human-readable explanation.
    pub message: String,
}

impl WireError {
    /// An error with this code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
        }
    }

    /// The `{"type":"error",...}` message.
    pub fn to_message(&self) -> String {
        #[derive(Serialize)]
        struct ErrorMessage<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            code: &'a str,
            message: &'a str,
        }
        serde_json::to_string(&ErrorMessage {
            kind: "error",
            code: self.code,
            message: &self.message,
        })
        .expect("messages serialise")
    }
}

/// A message from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `{"type":"heartbeat"}`, optionally acknowledging up to `last_seq`.
    /// A malformed `last_seq` still gets its `heartbeat_ack`, plus the error.
    Heartbeat {
        /// The acknowledged seq, if any.
        last_seq: Result<Option<u64>, WireError>,
    },
    /// `{"type":"ack","seq":N}`.
    Ack {
        /// Everything up to this seq is processed.
        seq: u64,
    },
    /// `{"type":"update_preferences","data":{...}}`.
    UpdatePreferences {
        /// The fields to change.
        data: Value,
    },
}

impl ClientMessage {
    /// Reads one text message from a client.
    ///
    /// # Errors
    /// `invalid_message` for text that is not JSON or has fields of the wrong
    /// type, `unknown_type` for JSON without a known `type`.
    pub fn parse(text: &str) -> Result<ClientMessage, WireError> {
        if nesting_depth(text) > MAX_MESSAGE_DEPTH {
            return Err(WireError::new(
                "invalid_message",
                format!("JSON nested deeper than {MAX_MESSAGE_DEPTH} levels"),
            ));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| WireError::new("invalid_message", format!("not JSON: {e}")))?;
        let Some(fields) = value.as_object() else {
            return Err(WireError::new(
                "unknown_type",
                "a message is a JSON object with a \"type\"",
            ));
        };
        match fields.get("type").and_then(Value::as_str) {
            Some("heartbeat") => Ok(ClientMessage::Heartbeat {
                last_seq: match fields.get("last_seq") {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => seq_field("last_seq", v).map(Some),
                },
            }),
            Some("ack") => {
                let v = fields.get("seq").unwrap_or(&Value::Null);
                Ok(ClientMessage::Ack {
                    seq: seq_field("seq", v)?,
                })
            }
            Some("update_preferences") => match fields.get("data") {
                Some(data @ Value::Object(_)) => {
                    Ok(ClientMessage::UpdatePreferences { data: data.clone() })
                }
                _ => Err(WireError::new(
                    "invalid_preferences",
                    "update_preferences needs a \"data\" object",
                )),
            },
            Some(other) => Err(WireError::new(
                "unknown_type",
                format!("unknown message type \"{other}\""),
            )),
            None => Err(WireError::new(
                "unknown_type",
                "a message needs a string \"type\"",
            )),
        }
    }
}

/// The deepest nesting a client message may have. The deepest real message
/// (`update_preferences` with `event_types`) has 3 levels; the limit keeps
/// the recursive parser well inside a connection thread's small stack.
pub const MAX_MESSAGE_DEPTH: usize = 16;

/// How deeply arrays and objects nest in `text`, ignoring brackets inside
/// strings. Malformed text gets some number; the parser rejects it anyway.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn seq_field(name: &str, v: &Value) -> Result<u64, WireError> {
    v.as_u64().ok_or_else(|| {
        WireError::new(
            "invalid_message",
            format!("\"{name}\" must be a non-negative integer"),
        )
    })
}

/// A server message: `{"type": ..., "data": ...}`, with `type` first as
/// in the contract's examples.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: T,
}

fn envelope<T: Serialize>(kind: &str, data: T) -> String {
    serde_json::to_string(&Envelope { kind, data }).expect("messages serialise")
}

/// The `heartbeat` block of the first message.
#[derive(Debug, Clone, Serialize)]
struct HeartbeatSettings {
    enabled: bool,
    interval_ms: u64,
    timeout_ms: u64,
}

/// The `reconnection` block of the first message.
#[derive(Debug, Clone, Serialize)]
struct ReconnectionSettings {
    strategy: &'static str,
    max_retry_attempts: u32,
    initial_delay_ms: u64,
    max_delay_ms: u64,
    backoff_multiplier: f64,
    state_sync_timeout_ms: u64,
}

/// The heartbeat and reconnection settings every first message announces.
#[derive(Debug, Clone)]
pub struct Announcement {
    heartbeat: HeartbeatSettings,
    reconnection: ReconnectionSettings,
}

#[derive(Serialize)]
struct Established<'a> {
    client_id: &'a str,
    client_type: ClientType,
    resume_token: &'a str,
    session_restored: bool,
    current_seq: u64,
    preferences: &'a Preferences,
    heartbeat: &'a HeartbeatSettings,
    reconnection: &'a ReconnectionSettings,
}

#[derive(Serialize)]
struct Sync<'a> {
    client_id: &'a str,
    client_type: ClientType,
    session_restored: bool,
    last_seq: u64,
    current_seq: u64,
    missed_events: u64,
    gap: bool,
    dropped_events: u64,
    disconnected_ms: u64,
    reconnect_count: u64,
    preferences: &'a Preferences,
    heartbeat: &'a HeartbeatSettings,
    reconnection: &'a ReconnectionSettings,
}

impl Announcement {
    /// The blocks of contract section 3 for this configuration.
    pub fn new(config: &Config) -> Self {
        Announcement {
            heartbeat: HeartbeatSettings {
                enabled: config.heartbeat_enabled,
                interval_ms: config.heartbeat_interval_ms,
                timeout_ms: config.heartbeat_interval_ms * 2,
            },
            reconnection: ReconnectionSettings {
                strategy: config.strategy.as_str(),
                max_retry_attempts: config.max_retry_attempts,
                initial_delay_ms: config.initial_delay_ms,
                max_delay_ms: config.max_delay_ms,
                backoff_multiplier: config.backoff_multiplier,
                state_sync_timeout_ms: config.state_sync_timeout_ms,
            },
        }
    }

    /// `connection_established` for a new session; the only message that
    /// carries the resume token.
    pub fn connection_established(
        &self,
        client_id: &str,
        client_type: ClientType,
        resume_token: &str,
        preferences: &Preferences,
    ) -> String {
        envelope(
            "connection_established",
            Established {
                client_id,
                client_type,
                resume_token,
                session_restored: false,
                current_seq: 0,
                preferences,
                heartbeat: &self.heartbeat,
                reconnection: &self.reconnection,
            },
        )
    }

    /// `reconnection_sync` for a resumed session.
    pub fn reconnection_sync(&self, sync: &SyncSummary<'_>) -> String {
        let requested = sync.current_seq - sync.last_seq;
        envelope(
            "reconnection_sync",
            Sync {
                client_id: sync.client_id,
                client_type: sync.client_type,
                session_restored: true,
                last_seq: sync.last_seq,
                current_seq: sync.current_seq,
                missed_events: sync.missed_events,
                gap: sync.missed_events < requested,
                dropped_events: requested - sync.missed_events,
                disconnected_ms: sync.disconnected_ms,
                reconnect_count: sync.reconnect_count,
                preferences: sync.preferences,
                heartbeat: &self.heartbeat,
                reconnection: &self.reconnection,
            },
        )
    }
}

/// What a resume found, for `reconnection_sync`.
#[derive(Debug)]
pub struct SyncSummary<'a> {
    /// The session.
    pub client_id: &'a str,
    /// Its (kept) type.
    pub client_type: ClientType,
    /// The seq the client says it processed.
    pub last_seq: u64,
    /// The session's newest seq.
    pub current_seq: u64,
    /// How many events follow as replay.
    pub missed_events: u64,
    /// Time since the disconnect; 0 on a take-over.
    pub disconnected_ms: u64,
    /// Including this resume.
    pub reconnect_count: u64,
    /// The session's (kept) preferences.
    pub preferences: &'a Preferences,
}

/// `{"type":"heartbeat_ack",...}`.
pub fn heartbeat_ack(server_time: u64, current_seq: u64) -> String {
    format!(r#"{{"type":"heartbeat_ack","server_time":{server_time},"current_seq":{current_seq}}}"#)
}

/// `{"type":"preferences_updated",...}`.
pub fn preferences_updated(preferences: &Preferences) -> String {
    envelope("preferences_updated", preferences)
}

/// The query parameters of `/ws` (contract sections 3 and 10). An empty
/// value counts as omitted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnectQuery {
    /// `client_id`, not yet validated.
    pub client_id: Option<String>,
    /// `client_type`, not yet validated.
    pub client_type: Option<String>,
    /// `resume_token`.
    pub resume_token: Option<String>,
    /// `last_seq`, not yet validated.
    pub last_seq: Option<String>,
}

impl ConnectQuery {
    /// Reads a query string (without the `?`), percent-decoding values.
    /// Unknown parameters are ignored; for a repeated one the last wins.
    pub fn parse(query: &str) -> ConnectQuery {
        let mut q = ConnectQuery::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            let value = (!value.is_empty()).then_some(value);
            match key {
                "client_id" => q.client_id = value,
                "client_type" => q.client_type = value,
                "resume_token" => q.resume_token = value,
                "last_seq" => q.last_seq = value,
                _ => {}
            }
        }
        q
    }
}

/// Decodes `%XX` escapes; a malformed escape is kept as written, so it fails
/// the validation of whatever parameter it is in.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `last_seq`: a non-negative decimal integer.
pub fn parse_seq(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ack","seq":3}"#),
            Ok(ClientMessage::Ack { seq: 3 })
        );
        let code = |t: &str| ClientMessage::parse(t).unwrap_err().code;
        assert_eq!(code("not json"), "invalid_message");
        assert_eq!(code("[1]"), "unknown_type");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"seq":1}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"ack","seq":"x"}"#), "invalid_message");
        assert_eq!(code(r#"{"type":"ack","seq":-1}"#), "invalid_message");
        assert_eq!(code(r#"{"type":"ack"}"#), "invalid_message");
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"heartbeat","last_seq":"x"}"#),
            Ok(ClientMessage::Heartbeat { last_seq: Err(_) })
        ));
        assert_eq!(
            ClientMessage::parse(r#"{"type":"heartbeat","last_seq":4}"#),
            Ok(ClientMessage::Heartbeat {
                last_seq: Ok(Some(4))
            })
        );
    }

    #[test]
    fn nesting_is_measured_outside_strings() {
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":"[[[["}]}"#), 3);
        assert_eq!(nesting_depth(r#""\"[""#), 0);
        let deep = format!("{}{}", "[".repeat(17), "]".repeat(17));
        assert_eq!(
            ClientMessage::parse(&deep).unwrap_err().code,
            "invalid_message"
        );
    }

    #[test]
    fn query_parsing() {
        let q =
            ConnectQuery::parse("client_id=a%3Ab&last_seq=&resume_token=ff&x=1&client_type=cli");
        assert_eq!(q.client_id.as_deref(), Some("a:b"));
        assert_eq!(q.last_seq, None);
        assert_eq!(q.resume_token.as_deref(), Some("ff"));
        assert_eq!(q.client_type.as_deref(), Some("cli"));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(parse_seq("12"), Some(12));
        assert_eq!(parse_seq("-1"), None);
        assert_eq!(parse_seq("+1"), None);
        assert_eq!(parse_seq("1.0"), None);
    }
}
