//! `tether listen`: a [`Client`] on the command line. Each event is one
//! JSON line on stdout; status lines go to stderr.
//!
//! # Printing and the state file: at least once
//!
//! An event is printed (and stdout flushed) first, and recorded as
//! processed in the state file only when the loop comes back for the next
//! one. A `listen` killed between the two prints that one event again when
//! started with the same state file: the same line, same `seq`, so a
//! consumer can drop it. The other order (record, then print) would lose
//! that event instead, and a lost event cannot be told from one that never
//! existed, while a repeated seq can. So: nothing lost, and at most one
//! event printed twice, only after a SIGKILL. SIGINT and SIGTERM stop
//! between events and record the last one, so they repeat nothing.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::UsageError;
use crate::client::{Client, ClientConfig, ClientError, Received};
use crate::config::Strategy;
use crate::flags::{self, Flag};
use crate::preferences::is_valid_pattern;

/// How often the loop looks at the stop flag when nothing arrives.
const STOP_POLL: Duration = Duration::from_millis(200);

const FLAGS: &[Flag] = &[
    Flag::value(
        "url",
        "URL",
        "the server's WebSocket endpoint, ws://HOST:PORT/ws (required)",
    ),
    Flag::value(
        "client-id",
        "ID",
        "the session's client_id [default: from the state file, else chosen by the server]",
    ),
    Flag::value(
        "client-type",
        "TYPE",
        "cli, ios or web [default: cli, from the User-Agent]",
    ),
    Flag::value(
        "state-file",
        "PATH",
        "keep client_id, resume token and last processed seq here, and resume from it",
    ),
    Flag::value(
        "event-types",
        "LIST",
        "subscribe to these event types only, comma-separated; 'build.*' is a prefix",
    ),
    Flag::value(
        "max-events-per-second",
        "N",
        "ask the server for this delivery rate (1-10000)",
    ),
    Flag::value(
        "strategy",
        "NAME",
        "override the announced strategy: immediate, exponential_backoff, linear_backoff, manual",
    ),
    Flag::value(
        "max-retry-attempts",
        "N",
        "override the announced number of failed attempts before giving up",
    ),
];

/// The text of `tether listen --help`.
pub fn help() -> String {
    flags::help(
        "Print the events of a tether session, one JSON line each, resuming across disconnects.\n\
         Status lines go to stderr. Exit code 0 on SIGINT/SIGTERM, 1 after giving up, 2 on bad arguments.",
        "tether listen --url ws://HOST:PORT/ws [FLAGS]",
        FLAGS,
    )
}

/// What `tether listen ...` asked for.
#[derive(Debug)]
pub enum ListenCommand {
    /// Run with this client configuration.
    Run(Box<ClientConfig>),
    /// Print [`help`].
    Help,
}

/// Parses the arguments after `listen`.
///
/// # Errors
/// A [`UsageError`] naming the flag.
pub fn parse(args: &[String]) -> Result<ListenCommand, UsageError> {
    let p = flags::parse("listen", FLAGS, args, 0)?;
    if p.help {
        return Ok(ListenCommand::Help);
    }
    let mut config = ClientConfig::new(p.required("url")?);
    config.client_id = p.get("client-id").map(str::to_string);
    config.client_type = p.parsed("client-type", "cli, ios or web", |v| v.parse().ok())?;
    config.state_file = p.get("state-file").map(Into::into);
    config.strategy = p.parsed(
        "strategy",
        "immediate, exponential_backoff, linear_backoff or manual",
        |v| v.parse::<Strategy>().ok(),
    )?;
    config.max_retry_attempts = p.parsed("max-retry-attempts", "a non-negative integer", |v| {
        v.parse().ok()
    })?;
    let mut preferences = serde_json::Map::new();
    if let Some(list) = p.get("event-types") {
        let patterns: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
        if let Some(bad) = patterns.iter().find(|p| !is_valid_pattern(p)) {
            return Err(flags::invalid(
                "event-types",
                bad,
                "event types of A-Z a-z 0-9 . _ : - or a prefix ending in '*'",
            ));
        }
        preferences.insert("event_types".into(), json!(patterns));
    }
    let rate = p.parsed("max-events-per-second", "an integer from 1 to 10000", |v| {
        v.parse::<u32>().ok().filter(|n| (1..=10_000).contains(n))
    })?;
    if let Some(rate) = rate {
        preferences.insert("max_events_per_second".into(), json!(rate));
    }
    if !preferences.is_empty() {
        config.preferences = Some(Value::Object(preferences));
    }
    config
        .validate()
        .map_err(|e| UsageError(flag_for(&e.to_string())))?;
    Ok(ListenCommand::Run(Box::new(config)))
}

/// Names the flag in a configuration error.
fn flag_for(message: &str) -> String {
    if message.starts_with("url") {
        format!("invalid value for --url: {message}")
    } else if message.starts_with("client id") {
        format!("invalid value for --client-id: {message}")
    } else {
        message.to_string()
    }
}

/// Runs `tether listen` until `stop` is set (exit code 0) or the client
/// gives up (1). Events go to `out`; status lines to stderr.
pub fn run(config: ClientConfig, stop: &AtomicBool, out: &mut dyn Write) -> u8 {
    let state_file = config.state_file.is_some();
    let mut client = match Client::new(config) {
        Ok(client) => client,
        Err(e @ ClientError::StateFile { .. }) if state_file => {
            eprintln!("tether: invalid value for --state-file: {e}");
            return 2;
        }
        Err(e) => {
            eprintln!("tether: {e}");
            return 2;
        }
    };
    loop {
        if stop.load(Ordering::Acquire) {
            return match client.close() {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("tether: {e}");
                    1
                }
            };
        }
        match client.recv_timeout(STOP_POLL) {
            Ok(None) => {}
            Ok(Some(Received::Event(event))) => {
                let mut line = event.to_json();
                line.push('\n');
                if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
                    eprintln!("tether: cannot write to stdout: {e}");
                    return 1;
                }
            }
            Ok(Some(Received::Gap(gap))) => eprintln!("tether: {gap}"),
            Ok(Some(Received::Notice(notice))) => eprintln!("tether: {notice}"),
            Err(e @ ClientError::GaveUp { .. }) => {
                eprintln!("tether: {e}");
                return 1;
            }
            Err(e) => {
                eprintln!("tether: giving up: {e}");
                return 1;
            }
        }
    }
}
