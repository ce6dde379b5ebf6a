//! Client types, priorities and a session's preferences (contract section
//! 5): their defaults per client type, their validation, and the
//! `event_types` patterns.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::{is_name_byte, is_valid_name, MAX_NAME_LEN};

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
}
