//! The command line of `tether serve`: flags, their environment variables and
//! the help text (contract section 9).
//!
//! Every flag `--some-flag` can also come from `TETHER_SOME_FLAG`; a flag on
//! the command line beats the variable. A bad value is one line naming the
//! flag, and the binary exits with code 2.

use std::fmt;

use log::LevelFilter;

use crate::config::{Config, Strategy};

/// A command-line mistake: print it as one line and exit with code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// What `tether serve ...` asked for.
#[derive(Debug)]
pub enum ServeCommand {
    /// Run the server with this configuration.
    Run(Box<Config>),
    /// `--help`: print [`serve_help`] and exit 0.
    Help,
}

/// The flags of `tether serve`: name, value placeholder, help line.
/// A placeholder of `""` marks a switch.
const SERVE_FLAGS: &[(&str, &str, &str)] = &[
    ("ws-listen", "ADDR", "WebSocket listener [default: 127.0.0.1:8765]"),
    ("admin-listen", "ADDR", "admin HTTP listener [default: 127.0.0.1:8766]"),
    ("admin-token", "TOKEN", "require 'Authorization: Bearer TOKEN' on the admin API"),
    ("strategy", "NAME", "announced reconnection strategy: immediate, exponential_backoff, linear_backoff, manual [default: exponential_backoff]"),
    ("max-retry-attempts", "N", "announced attempts before a client gives up [default: 10]"),
    ("initial-delay-ms", "N", "announced first backoff delay [default: 1000]"),
    ("max-delay-ms", "N", "announced backoff cap [default: 30000]"),
    ("backoff-multiplier", "X", "announced exponential factor [default: 2.0]"),
    ("retention-hours", "X", "keep disconnected sessions and events this long, decimals allowed, at most 876000 [default: 24]"),
    ("max-missed-events", "N", "retained events per session [default: 1000]"),
    ("state-sync-timeout-ms", "N", "time allowed for reconnection_sync and replay, at least 1 [default: 5000]"),
    ("no-heartbeat", "", "turn liveness checks off"),
    ("heartbeat-interval-ms", "N", "ping a silent connection after this, drop it after twice this [default: 30000]"),
    ("cleanup-interval-s", "N", "how often expired sessions and events are removed [default: 3600]"),
    ("max-connections", "N", "WebSocket connections beyond this get HTTP 503 [default: 10000]"),
    ("max-message-bytes", "N", "largest client message; larger ones close with 1009 [default: 65536]"),
    ("log-level", "LEVEL", "off, error, warn, info, debug or trace; logs go to stderr [default: info]"),
    ("data-dir", "DIR", "keep sessions and events here across restarts [default: none, memory only]"),
    ("fsync-interval-ms", "N", "0: fsync the log before answering a publish; N: at most every N ms (a power cut may lose N ms) [default: 0]"),
];

/// The text of `tether serve --help`.
pub fn serve_help() -> String {
    let mut out = String::from(
        "Run the tether server.\n\nUsage: tether serve [FLAGS]\n\nFlags (each also read from TETHER_<FLAG>, e.g. --admin-token -> TETHER_ADMIN_TOKEN; a flag beats the variable):\n",
    );
    for (name, value, help) in SERVE_FLAGS {
        let left = if value.is_empty() {
            format!("--{name}")
        } else {
            format!("--{name} {value}")
        };
        out.push_str(&format!("  {left:<30} {help}\n"));
        out.push_str(&format!("  {:<30} env: {}\n", "", env_name(name)));
    }
    out.push_str("  --help                         print this help\n");
    out
}

/// The environment variable of a flag: `admin-token` -> `TETHER_ADMIN_TOKEN`.
pub fn env_name(flag: &str) -> String {
    format!("TETHER_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

/// Parses the arguments after `serve`, reading variables through `env`.
///
/// # Errors
/// A [`UsageError`] naming the flag for an unknown flag, a missing value or a
/// value that does not parse or is out of range.
pub fn parse_serve(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServeCommand, UsageError> {
    let mut config = Config::default();
    for (name, value, _) in SERVE_FLAGS {
        if let Some(v) = env(&env_name(name)) {
            let source = format!(" (from {})", env_name(name));
            apply(&mut config, name, !value.is_empty(), Some(&v), &source)?;
        }
    }
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--help" || arg == "-h" {
            return Ok(ServeCommand::Help);
        }
        let Some(body) = arg.strip_prefix("--") else {
            return Err(UsageError(format!(
                "unexpected argument '{arg}' for 'tether serve' (see tether serve --help)"
            )));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some((_, placeholder, _)) = SERVE_FLAGS.iter().find(|(n, _, _)| *n == name) else {
            return Err(UsageError(format!(
                "unknown flag --{name} for 'tether serve' (see tether serve --help)"
            )));
        };
        let takes_value = !placeholder.is_empty();
        let value = match (inline, takes_value) {
            (Some(v), _) => Some(v),
            (None, true) => match args.get(i) {
                Some(v) => {
                    i += 1;
                    Some(v.clone())
                }
                None => return Err(UsageError(format!("--{name} needs a value"))),
            },
            (None, false) => None,
        };
        apply(&mut config, name, takes_value, value.as_deref(), "")?;
    }
    config.validate().map_err(|e| UsageError(e.to_string()))?;
    Ok(ServeCommand::Run(Box::new(config)))
}

fn apply(
    config: &mut Config,
    name: &str,
    takes_value: bool,
    value: Option<&str>,
    source: &str,
) -> Result<(), UsageError> {
    let raw = value.unwrap_or("");
    let bad = |expected: &str| {
        UsageError(format!(
            "invalid value '{raw}' for --{name}{source}: expected {expected}"
        ))
    };
    if !takes_value {
        // A bare switch means "on"; a value (from `--switch=v` or the
        // environment) must be one of the documented spellings.
        let on = match value {
            None => true,
            Some(v) => parse_switch(v).ok_or_else(|| bad("1, 0, true, false, yes or no"))?,
        };
        match name {
            "no-heartbeat" => config.heartbeat_enabled = !on,
            _ => unreachable!("switch {name} has no setter"),
        }
        return Ok(());
    }
    let int = || {
        raw.parse::<u64>()
            .map_err(|_| bad("a non-negative integer"))
    };
    let float = || {
        raw.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .ok_or_else(|| bad("a number"))
    };
    match name {
        "ws-listen" => config.ws_listen = raw.to_string(),
        "admin-listen" => config.admin_listen = raw.to_string(),
        "admin-token" => {
            if raw.is_empty() {
                return Err(bad("a non-empty token"));
            }
            config.admin_token = Some(raw.to_string());
        }
        "strategy" => {
            config.strategy = raw
                .parse::<Strategy>()
                .map_err(|_| bad("immediate, exponential_backoff, linear_backoff or manual"))?
        }
        "max-retry-attempts" => {
            config.max_retry_attempts =
                u32::try_from(int()?).map_err(|_| bad("a smaller number"))?
        }
        "initial-delay-ms" => config.initial_delay_ms = int()?,
        "max-delay-ms" => config.max_delay_ms = int()?,
        "backoff-multiplier" => config.backoff_multiplier = float()?,
        "retention-hours" => config.retention_hours = float()?,
        "max-missed-events" => config.max_missed_events = usize_of(int()?),
        "state-sync-timeout-ms" => config.state_sync_timeout_ms = int()?,
        "heartbeat-interval-ms" => config.heartbeat_interval_ms = int()?,
        "cleanup-interval-s" => config.cleanup_interval_s = int()?,
        "max-connections" => config.max_connections = usize_of(int()?),
        "max-message-bytes" => config.max_message_bytes = usize_of(int()?),
        "data-dir" => {
            if raw.is_empty() {
                return Err(bad("a directory"));
            }
            config.data_dir = Some(raw.into());
        }
        "fsync-interval-ms" => config.fsync_interval_ms = int()?,
        "log-level" => {
            config.log_level =
                parse_level(raw).ok_or_else(|| bad("off, error, warn, info, debug or trace"))?
        }
        _ => unreachable!("flag {name} has no setter"),
    }
    Ok(())
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `1/true/yes` and `0/false/no`, case-insensitive; anything else is `None`.
pub fn parse_switch(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Some(true),
        "0" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// A log level name, case-insensitive.
pub fn parse_level(v: &str) -> Option<LevelFilter> {
    match v.to_ascii_lowercase().as_str() {
        "off" => Some(LevelFilter::Off),
        "error" => Some(LevelFilter::Error),
        "warn" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn run(list: &[&str], vars: &[(&str, &str)]) -> Result<Config, UsageError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match parse_serve(&args(list), &env)? {
            ServeCommand::Run(c) => Ok(*c),
            ServeCommand::Help => panic!("unexpected help"),
        }
    }

    #[test]
    fn no_flags_gives_defaults() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.ws_listen, "127.0.0.1:8765");
        assert_eq!(c.max_missed_events, 1000);
        assert!(c.heartbeat_enabled);
    }

    #[test]
    fn both_value_forms_and_switches() {
        let c = run(
            &[
                "--max-connections",
                "5",
                "--retention-hours=0.001",
                "--no-heartbeat",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.max_connections, 5);
        assert!((c.retention_hours - 0.001).abs() < 1e-12);
        assert!(!c.heartbeat_enabled);
    }

    #[test]
    fn flag_beats_environment() {
        let c = run(
            &["--max-missed-events", "7"],
            &[
                ("TETHER_MAX_MISSED_EVENTS", "9"),
                ("TETHER_NO_HEARTBEAT", "YES"),
            ],
        )
        .unwrap();
        assert_eq!(c.max_missed_events, 7);
        assert!(!c.heartbeat_enabled);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (list, vars, flag) in [
            (
                vec!["--max-connections", "many"],
                vec![],
                "--max-connections",
            ),
            (vec!["--log-level", "loud"], vec![], "--log-level"),
            (vec![], vec![("TETHER_NO_HEARTBEAT", "")], "--no-heartbeat"),
            (vec![], vec![("TETHER_STRATEGY", "fast")], "--strategy"),
            (
                vec!["--max-message-bytes", "1"],
                vec![],
                "--max-message-bytes",
            ),
            (vec!["--bogus"], vec![], "--bogus"),
            (vec!["--ws-listen"], vec![], "--ws-listen"),
        ] {
            let err = run(&list, &vars).unwrap_err().0;
            assert!(err.contains(flag), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn help_lists_every_flag_and_its_variable() {
        let help = serve_help();
        for (name, _, _) in SERVE_FLAGS {
            assert!(help.contains(&format!("--{name}")));
            assert!(help.contains(&env_name(name)));
        }
    }
}
