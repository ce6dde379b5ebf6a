//! The wire contract's vocabulary: client types, priorities, preferences, the
//! messages a client may send and the control messages the server sends
//! (contract sections 3, 4 and 5). Event messages are built in `event.rs`,
//! where the shared part of each event is serialised once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;

/// The longest `client_id` and `event_type`.
pub const MAX_NAME_LEN: usize = 128;

/// Whether `s` is a valid `client_id` or `event_type`: 1-128 characters of
/// `A-Z a-z 0-9 . _ : -`.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.bytes().all(is_name_byte)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

/// The three kinds of client, each with its own default preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientType {
    /// The iOS app: batched, gentle on the battery.
    Ios,
    /// A terminal or script: immediate.
    Cli,
    /// A browser page: batched.
    Web,
}

impl ClientType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientType::Ios => "ios",
            ClientType::Cli => "cli",
            ClientType::Web => "web",
        }
    }

    /// The client type a `User-Agent` header suggests (contract section 3):
    /// the first matching rule wins, and no header means `web`.
    pub fn from_user_agent(user_agent: Option<&str>) -> ClientType {
        let Some(ua) = user_agent else {
            return ClientType::Web;
        };
        let ua = ua.to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| ua.contains(n));
        if has(&["cfnetwork", "darwin/"]) {
            ClientType::Ios
        } else if has(&["mozilla/"]) {
            ClientType::Web
        } else if has(&[
            "curl",
            "websocat",
            "wscat",
            "python",
            "go-http-client",
            "tether",
        ]) {
            ClientType::Cli
        } else {
            ClientType::Web
        }
    }
}

impl FromStr for ClientType {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "ios" => Ok(ClientType::Ios),
            "cli" => Ok(ClientType::Cli),
            "web" => Ok(ClientType::Web),
            _ => Err(()),
        }
    }
}

impl fmt::Display for ClientType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event's priority, and a client's delivery priority (which never is `critical`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// The lowest.
    Low,
    /// The default of a published event.
    Medium,
    /// Served before medium and low.
    High,
    /// Events only; above every filter but `min_event_priority: critical`.
    Critical,
}

impl Priority {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

impl FromStr for Priority {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "low" => Ok(Priority::Low),
            "medium" => Ok(Priority::Medium),
            "high" => Ok(Priority::High),
            "critical" => Ok(Priority::Critical),
            _ => Err(()),
        }
    }
}

/// How events reach a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// One `event` message per event.
    Immediate,
    /// `event_batch` messages every `batch_interval_ms`.
    Batched,
}

/// A session's delivery preferences (contract section 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    /// `immediate` or `batched`.
    pub delivery: Delivery,
    /// 50-60000 for `batched`; kept but unused (0-60000) for `immediate`.
    pub batch_interval_ms: u32,
    /// The delivery rate limit, 1-10000.
    pub max_events_per_second: u32,
    /// The session's delivery priority when an event fans out.
    pub priority: Priority,
    /// Subscription filter: exact names or `prefix*`; empty means all.
    pub event_types: Vec<Box<str>>,
    /// Events below this priority are neither delivered nor tracked.
    pub min_event_priority: Priority,
}

impl Preferences {
    /// The defaults of a client type.
    pub fn defaults_for(client_type: ClientType) -> Preferences {
        let (delivery, batch_interval_ms, max_events_per_second, priority) = match client_type {
            ClientType::Ios => (Delivery::Batched, 2000, 5, Priority::Medium),
            ClientType::Cli => (Delivery::Immediate, 0, 20, Priority::High),
            ClientType::Web => (Delivery::Batched, 1000, 10, Priority::Medium),
        };
        Preferences {
            delivery,
            batch_interval_ms,
            max_events_per_second,
            priority,
            event_types: Vec::new(),
            min_event_priority: Priority::Low,
        }
    }

    /// Whether an event of this type and priority is for this session.
    pub fn matches(&self, event_type: &str, priority: Priority) -> bool {
        priority >= self.min_event_priority
            && (self.event_types.is_empty()
                || self
                    .event_types
                    .iter()
                    .any(|pattern| pattern_matches(pattern, event_type)))
    }

    /// The preferences that result from applying `update` (any subset of the
    /// fields) to these. Nothing changes unless the whole result is valid.
    ///
    /// # Errors
    /// A human-readable reason for an unknown field, a wrong type or a value
    /// out of range; the caller answers `invalid_preferences`.
    pub fn updated(&self, update: &Value) -> Result<Preferences, String> {
        let Value::Object(fields) = update else {
            return Err("\"data\" must be an object of preference fields".into());
        };
        let mut next = self.clone();
        for (name, value) in fields {
            match name.as_str() {
                "delivery" => {
                    next.delivery = match value.as_str() {
                        Some("immediate") => Delivery::Immediate,
                        Some("batched") => Delivery::Batched,
                        _ => return Err("delivery must be \"immediate\" or \"batched\"".into()),
                    }
                }
                "batch_interval_ms" => next.batch_interval_ms = int_field(name, value, 60_000)?,
                "max_events_per_second" => {
                    next.max_events_per_second = int_field(name, value, 10_000)?
                }
                "priority" => {
                    next.priority = match value.as_str().and_then(|s| s.parse().ok()) {
                        Some(p) if p != Priority::Critical => p,
                        _ => return Err("priority must be \"low\", \"medium\" or \"high\"".into()),
                    }
                }
                "min_event_priority" => {
                    next.min_event_priority = value.as_str().and_then(|s| s.parse().ok()).ok_or(
                        "min_event_priority must be \"low\", \"medium\", \"high\" or \"critical\"",
                    )?
                }
                "event_types" => next.event_types = event_types_field(value)?,
                other => return Err(format!("unknown preference field \"{other}\"")),
            }
        }
        next.validate()?;
        Ok(next)
    }

    fn validate(&self) -> Result<(), String> {
        if self.delivery == Delivery::Batched && self.batch_interval_ms < 50 {
            return Err("batch_interval_ms must be 50-60000 for batched delivery".into());
        }
        if self.max_events_per_second == 0 {
            return Err("max_events_per_second must be 1-10000".into());
        }
        Ok(())
    }
}

fn int_field(name: &str, value: &Value, max: u32) -> Result<u32, String> {
    value
        .as_u64()
        .filter(|n| *n <= u64::from(max))
        .map(|n| n as u32)
        .ok_or_else(|| format!("{name} must be an integer no larger than {max}"))
}

fn event_types_field(value: &Value) -> Result<Vec<Box<str>>, String> {
    let Value::Array(items) = value else {
        return Err("event_types must be an array of strings".into());
    };
    items
        .iter()
        .map(|item| match item.as_str() {
            Some(p) if is_valid_pattern(p) => Ok(p.into()),
            _ => Err(format!(
                "event_types entry {item} is not an event type or a prefix ending in '*'"
            )),
        })
        .collect()
}

/// `*` alone, an event type, or an event-type prefix followed by one `*`.
pub fn is_valid_pattern(p: &str) -> bool {
    match p.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => prefix.len() < MAX_NAME_LEN && prefix.bytes().all(is_name_byte),
        None => is_valid_name(p),
    }
}

/// `build.*` matches names starting with `build.` (not `build` itself); `*`
/// matches everything; anything else matches exactly.
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => event_type.len() > prefix.len() && event_type.starts_with(prefix),
        None => pattern == event_type,
    }
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
    use serde_json::json;

    #[test]
    fn user_agent_rules_in_order() {
        let cases = [
            (None, ClientType::Web),
            (
                Some("MyApp/1.0 CFNetwork/1410 Darwin/22.6.0"),
                ClientType::Ios,
            ),
            (
                Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Safari"),
                ClientType::Web,
            ),
            (Some("curl/8.5.0"), ClientType::Cli),
            (Some("Python/3.11 websockets/12"), ClientType::Cli),
            (Some("Go-http-client/1.1"), ClientType::Cli),
            (Some("tether/0.1"), ClientType::Cli),
            (Some("SomethingElse/2"), ClientType::Web),
            (Some("darwin/ and curl"), ClientType::Ios),
        ];
        for (ua, want) in cases {
            assert_eq!(ClientType::from_user_agent(ua), want, "{ua:?}");
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let ios = Preferences::defaults_for(ClientType::Ios);
        assert_eq!(
            serde_json::to_value(&ios).unwrap(),
            json!({"delivery":"batched","batch_interval_ms":2000,"max_events_per_second":5,
                   "priority":"medium","event_types":[],"min_event_priority":"low"})
        );
        let cli = Preferences::defaults_for(ClientType::Cli);
        assert_eq!(
            (cli.delivery, cli.max_events_per_second, cli.priority),
            (Delivery::Immediate, 20, Priority::High)
        );
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("build.*", "build.finished"));
        assert!(!pattern_matches("build.*", "build."));
        assert!(!pattern_matches("build.*", "build"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("deploy", "deploy"));
        assert!(!pattern_matches("deploy", "deploy.x"));
        assert!(is_valid_pattern("*") && is_valid_pattern("a.b*") && is_valid_pattern("x"));
        assert!(!is_valid_pattern("a*b") && !is_valid_pattern("") && !is_valid_pattern("a b"));
        assert!(!is_valid_pattern("**"));
    }

    #[test]
    fn preference_updates_validate_the_result() {
        let cli = Preferences::defaults_for(ClientType::Cli);
        assert!(cli.updated(&json!({"delivery": "batched"})).is_err());
        let p = cli
            .updated(&json!({"delivery": "batched", "batch_interval_ms": 50}))
            .unwrap();
        assert_eq!(p.delivery, Delivery::Batched);
        for bad in [
            json!({"max_events_per_second": 0}),
            json!({"max_events_per_second": 10001}),
            json!({"priority": "critical"}),
            json!({"priority": null}),
            json!({"event_types": ["a*b"]}),
            json!({"event_types": "a"}),
            json!({"colour": "red"}),
            json!({"batch_interval_ms": -1}),
            json!({"batch_interval_ms": 1.5}),
        ] {
            assert!(cli.updated(&bad).is_err(), "{bad}");
        }
    }

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
