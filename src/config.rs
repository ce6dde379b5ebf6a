//! Server settings: every default in one place, and their validation.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use log::LevelFilter;

use crate::error::{Error, Result};

/// How a client should pace its reconnection attempts (contract section 8).
/// The server only announces it; clients apply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Retry at once.
    Immediate,
    /// `initial_delay_ms * backoff_multiplier^(n-1)`, capped at `max_delay_ms`.
    ExponentialBackoff,
    /// `initial_delay_ms * n`, capped at `max_delay_ms`.
    LinearBackoff,
    /// Never retry on its own.
    Manual,
}

impl Strategy {
    /// The name used on the wire and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Immediate => "immediate",
            Strategy::ExponentialBackoff => "exponential_backoff",
            Strategy::LinearBackoff => "linear_backoff",
            Strategy::Manual => "manual",
        }
    }
}

impl FromStr for Strategy {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "immediate" => Ok(Strategy::Immediate),
            "exponential_backoff" => Ok(Strategy::ExponentialBackoff),
            "linear_backoff" => Ok(Strategy::LinearBackoff),
            "manual" => Ok(Strategy::Manual),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything `tether serve` can be told. `Config::default()` is what runs
/// when no flag is given; each field names its flag.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--ws-listen`: where WebSocket clients connect. Port 0 picks a free port.
    pub ws_listen: String,
    /// `--admin-listen`: the admin HTTP API. Keep it on loopback unless an
    /// admin token is set; the server refuses to start otherwise.
    pub admin_listen: String,
    /// `--admin-token`: when set, every admin endpoint but `/health` needs
    /// `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// `--strategy`: the reconnection strategy announced to clients.
    pub strategy: Strategy,
    /// `--max-retry-attempts`: failed attempts in a row after which a client gives up.
    pub max_retry_attempts: u32,
    /// `--initial-delay-ms`: the first backoff delay announced to clients.
    pub initial_delay_ms: u64,
    /// `--max-delay-ms`: the cap on the announced backoff delay.
    pub max_delay_ms: u64,
    /// `--backoff-multiplier`: growth factor of exponential backoff.
    pub backoff_multiplier: f64,
    /// `--retention-hours`: how long a disconnected session and a retained
    /// event are kept. Lower it on a small machine with many transient clients.
    pub retention_hours: f64,
    /// `--max-missed-events`: retained events per session before the oldest
    /// are released. Memory per session grows with it (8 bytes per event
    /// pointer; the event itself is shared).
    pub max_missed_events: usize,
    /// `--state-sync-timeout-ms`: how long writing `reconnection_sync` and the
    /// replay may take before the connection is closed with 4003.
    pub state_sync_timeout_ms: u64,
    /// Cleared by `--no-heartbeat`.
    pub heartbeat_enabled: bool,
    /// `--heartbeat-interval-ms`: a silent connection is pinged after one
    /// interval and declared dead after two.
    pub heartbeat_interval_ms: u64,
    /// `--cleanup-interval-s`: how often expired sessions and events are removed.
    pub cleanup_interval_s: u64,
    /// `--max-connections`: WebSocket connections beyond this get HTTP 503.
    pub max_connections: usize,
    /// `--max-message-bytes`: the largest client message; larger ones close
    /// the connection with 1009.
    pub max_message_bytes: usize,
    /// `--log-level`.
    pub log_level: LevelFilter,
    /// `--data-dir`: where sessions and events are kept across restarts.
    /// `None`: in memory only; a restart forgets every session.
    pub data_dir: Option<PathBuf>,
    /// `--fsync-interval-ms`: 0 syncs the log to disk before every answer
    /// to a publisher (the default); N syncs at most every N ms, answering
    /// once the log is written, so a power cut can lose the last N ms (a
    /// crash of the process alone loses nothing).
    pub fsync_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ws_listen: "127.0.0.1:8765".into(),
            admin_listen: "127.0.0.1:8766".into(),
            admin_token: None,
            strategy: Strategy::ExponentialBackoff,
            max_retry_attempts: 10,
            initial_delay_ms: 1000,
            max_delay_ms: 30_000,
            backoff_multiplier: 2.0,
            retention_hours: 24.0,
            max_missed_events: 1000,
            state_sync_timeout_ms: 5000,
            heartbeat_enabled: true,
            heartbeat_interval_ms: 30_000,
            cleanup_interval_s: 3600,
            max_connections: 10_000,
            max_message_bytes: 64 * 1024,
            log_level: LevelFilter::Info,
            data_dir: None,
            fsync_interval_ms: 0,
        }
    }
}

/// The smallest `--max-message-bytes`: an `update_preferences` message with a
/// few event types must still fit.
pub const MIN_MESSAGE_BYTES: usize = 256;
/// The largest `--max-message-bytes`: client messages are small commands.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The longest `--retention-hours`: longer is "forever" in practice, and a
/// duration must fit the clock's arithmetic.
pub const MAX_RETENTION_HOURS: f64 = 876_000.0;

impl Config {
    /// Checks every setting and returns an error naming the flag of the first bad one.
    pub fn validate(&self) -> Result<()> {
        let ws = resolve("--ws-listen", &self.ws_listen)?;
        let admin = resolve("--admin-listen", &self.admin_listen)?;
        if ws.port() != 0 && ws == admin {
            return Err(bad("--admin-listen", "must differ from --ws-listen"));
        }
        if !admin.ip().is_loopback() && self.admin_token.is_none() {
            return Err(Error::Config(format!(
                "--admin-listen {admin} is not a loopback address: set --admin-token \
                 (or TETHER_ADMIN_TOKEN) to protect the admin API"
            )));
        }
        if matches!(&self.admin_token, Some(t) if t.trim().is_empty()) {
            return Err(bad("--admin-token", "must not be empty"));
        }
        if self.initial_delay_ms > self.max_delay_ms {
            return Err(bad("--initial-delay-ms", "must not exceed --max-delay-ms"));
        }
        if !(self.backoff_multiplier.is_finite() && self.backoff_multiplier >= 1.0) {
            return Err(bad("--backoff-multiplier", "must be a number >= 1.0"));
        }
        if !(self.retention_hours > 0.0 && self.retention_hours <= MAX_RETENTION_HOURS) {
            return Err(bad(
                "--retention-hours",
                &format!("must be a number > 0 and at most {MAX_RETENTION_HOURS} (100 years)"),
            ));
        }
        if self.state_sync_timeout_ms == 0 {
            // 0 would close every resume with a replay to send: no session
            // that missed anything could ever be resumed.
            return Err(bad("--state-sync-timeout-ms", "must be at least 1"));
        }
        if self.max_missed_events == 0 {
            return Err(bad("--max-missed-events", "must be at least 1"));
        }
        if self.heartbeat_interval_ms < 10 {
            return Err(bad("--heartbeat-interval-ms", "must be at least 10"));
        }
        if self.cleanup_interval_s == 0 {
            return Err(bad("--cleanup-interval-s", "must be at least 1"));
        }
        if self.max_connections == 0 {
            return Err(bad("--max-connections", "must be at least 1"));
        }
        if matches!(&self.data_dir, Some(d) if d.as_os_str().is_empty()) {
            return Err(bad("--data-dir", "must not be empty"));
        }
        if self.fsync_interval_ms > 60_000 {
            return Err(bad("--fsync-interval-ms", "must be at most 60000"));
        }
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return Err(bad(
                "--max-message-bytes",
                &format!("must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES}"),
            ));
        }
        Ok(())
    }

    /// The retention period as a duration.
    pub fn retention(&self) -> Duration {
        Duration::from_secs_f64(self.retention_hours * 3600.0)
    }
}

/// Resolves a listen address, naming `flag` when it does not parse.
pub(crate) fn resolve(flag: &str, addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| bad(flag, &format!("'{addr}' is not a HOST:PORT address")))
}

fn bad(flag: &str, why: &str) -> Error {
    Error::Config(format!("invalid value for {flag}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn public_admin_needs_a_token() {
        let mut config = Config {
            admin_listen: "0.0.0.0:8766".into(),
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("--admin-token"), "{err}");
        config.admin_token = Some("s3cret".into());
        config.validate().unwrap();
    }

    #[test]
    fn errors_name_the_flag() {
        let config = Config {
            max_missed_events: 0,
            ..Config::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--max-missed-events"));
    }

    #[test]
    fn strategy_names_round_trip() {
        for s in [
            Strategy::Immediate,
            Strategy::ExponentialBackoff,
            Strategy::LinearBackoff,
            Strategy::Manual,
        ] {
            assert_eq!(s.as_str().parse::<Strategy>(), Ok(s));
        }
        assert!("exponential".parse::<Strategy>().is_err());
    }
}
