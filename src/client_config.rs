//! How a tether client connects and behaves: [`ClientConfig`].

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::client_error::{ClientError, ClientResult};
use crate::config::Strategy;
use crate::preferences::ClientType;
use crate::protocol::is_valid_name;
use crate::state_file::ResumeState;

/// How a [`Client`](crate::client::Client) connects and behaves. Build it with
/// [`ClientConfig::new`] and struct-update syntax.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's WebSocket endpoint, `ws://HOST:PORT/ws` (no query:
    /// the client writes it). `wss://` needs TLS, which this build lacks.
    pub url: String,
    /// The session's `client_id`; `None` lets the server choose one (or
    /// takes it from the resume state).
    pub client_id: Option<String>,
    /// Sent as `client_type`; `None` lets the server detect it from the
    /// `User-Agent` (`tether/...`, so `cli`).
    pub client_type: Option<ClientType>,
    /// The session to resume, if the application kept it itself (see
    /// [`Client::resume_state`](crate::client::Client::resume_state)). Ignored when the state file has one.
    pub resume: Option<ResumeState>,
    /// Where to keep the resume state across restarts; `None` keeps it in
    /// memory only. See [`crate::state_file`].
    pub state_file: Option<PathBuf>,
    /// Preference fields sent as `update_preferences` (a JSON object): on
    /// every new session, and once after the first connection of this
    /// client (so a restart with other preferences applies them).
    pub preferences: Option<Value>,
    /// Overrides the announced strategy.
    pub strategy: Option<Strategy>,
    /// Overrides the announced `max_retry_attempts`.
    pub max_retry_attempts: Option<u32>,
    /// Limit on the TCP connect, the upgrade and the first message, and on
    /// every write. Default 10 s.
    pub connect_timeout: Duration,
    /// Acknowledge at the latest after this many processed events. Keep it
    /// well under the server's `max_missed_events / 2`. Default 100.
    pub ack_every: u64,
    /// Acknowledge processed events after this long without another ack.
    /// Default 1 s.
    pub ack_delay: Duration,
}

impl ClientConfig {
    /// The defaults, connecting to `url`.
    pub fn new(url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            url: url.into(),
            client_id: None,
            client_type: None,
            resume: None,
            state_file: None,
            preferences: None,
            strategy: None,
            max_retry_attempts: None,
            connect_timeout: Duration::from_secs(10),
            ack_every: 100,
            ack_delay: Duration::from_secs(1),
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`ClientError::Config`] naming the bad setting.
    pub fn validate(&self) -> ClientResult<()> {
        let bad = |msg: String| Err(ClientError::Config(msg));
        match self.url.split_once("://") {
            Some(("ws", rest)) if !rest.is_empty() && !rest.contains('?') => {}
            Some(("wss", _)) => {
                return bad(format!(
                    "url {}: wss:// needs TLS, which this build of tether does not include",
                    self.url
                ))
            }
            _ => {
                return bad(format!(
                    "url {:?} is not ws://HOST:PORT/PATH without a query",
                    self.url
                ))
            }
        }
        if let Some(id) = &self.client_id {
            if !is_valid_name(id) {
                return bad(format!(
                    "client id {id:?} is not 1-128 characters of A-Z a-z 0-9 . _ : -"
                ));
            }
        }
        if !matches!(&self.preferences, None | Some(Value::Object(_))) {
            return bad("preferences must be a JSON object".into());
        }
        if self.ack_every == 0 {
            return bad("ack_every must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_validation_names_the_problem() {
        let ok = ClientConfig::new("ws://127.0.0.1:8765/ws");
        ok.validate().unwrap();
        for (config, needle) in [
            (ClientConfig::new("http://x/ws"), "ws://"),
            (ClientConfig::new("wss://x/ws"), "TLS"),
            (ClientConfig::new("ws://x/ws?client_id=a"), "query"),
            (
                ClientConfig {
                    client_id: Some("a b".into()),
                    ..ok.clone()
                },
                "client id",
            ),
            (
                ClientConfig {
                    preferences: Some(json!([1])),
                    ..ok.clone()
                },
                "object",
            ),
        ] {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
