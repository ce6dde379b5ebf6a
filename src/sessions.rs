//! `tether sessions`: the sessions of a server as a readable table (or one
//! session, field by field), or with `--json` the admin API's raw answer.

use std::fmt::Write as _;
use std::io::Write;

use serde_json::Value;

use crate::cli::UsageError;
use crate::client_error::ClientResult;
use crate::clock::now_ms;
use crate::flags::{self, Flag};
use crate::publish::AdminTarget;

/// `sessions`' own flags.
const FLAGS: &[Flag] = &[Flag::switch(
    "json",
    "print the admin API's JSON answer as it is",
)];

/// The text of `tether sessions --help`.
pub fn help() -> String {
    flags::help(
        "List the sessions of a tether server, or show one.",
        "tether sessions --admin URL [--token T] [--json] [CLIENT_ID]",
        &AdminTarget::flags(FLAGS),
    )
}

/// What `tether sessions ...` asked for.
#[derive(Debug)]
pub enum SessionsCommand {
    /// Show the sessions (or the one named).
    Show {
        /// Where.
        admin: AdminTarget,
        /// One session only.
        client_id: Option<String>,
        /// Raw JSON instead of a table.
        json: bool,
    },
    /// Print [`help`].
    Help,
}

/// Parses the arguments after `sessions`, reading `TETHER_ADMIN_TOKEN` through `env`.
///
/// # Errors
/// A [`UsageError`] naming the flag.
pub fn parse(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SessionsCommand, UsageError> {
    let Some((p, admin)) = AdminTarget::parse_command("sessions", FLAGS, args, 1, env)? else {
        return Ok(SessionsCommand::Help);
    };
    Ok(SessionsCommand::Show {
        admin,
        client_id: p.positionals.first().cloned(),
        json: p.switch("json")?,
    })
}

/// Fetches and prints the sessions (or one).
///
/// # Errors
/// The server's error (404 for an unknown session), or why it could not be reached.
pub fn show(
    admin: &AdminTarget,
    client_id: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> ClientResult<()> {
    let client = admin.client();
    let answer = match client_id {
        Some(id) => client.session(id)?,
        None => client.sessions()?,
    };
    let text = match (json, client_id) {
        (true, _) => format!("{answer}\n"),
        (false, Some(_)) => one_session(&answer, now_ms()),
        (false, None) => table(&answer),
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

const COLUMNS: &[(&str, &str)] = &[
    ("CLIENT_ID", "client_id"),
    ("TYPE", "client_type"),
    ("STATE", "state"),
    ("SEQ", "current_seq"),
    ("ACKED", "acked_seq"),
    ("RETAINED", "retained_events"),
    ("MISSED", "missed_events"),
    ("DROPPED", "dropped_events_total"),
    ("RECONNECTS", "reconnect_count"),
    ("REMOTE", "remote_addr"),
];

/// The listing as an aligned table and a summary line.
pub fn table(answer: &Value) -> String {
    let sessions = answer["sessions"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| COLUMNS.iter().map(|(_, f)| cell(&s[*f])).collect())
        .collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (title, _))| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([title.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let headers: Vec<String> = COLUMNS.iter().map(|(t, _)| t.to_string()).collect();
    for row in std::iter::once(&headers).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(
        out,
        "{} sessions, {} connected, {} disconnected",
        cell(&answer["total"]),
        cell(&answer["connected"]),
        cell(&answer["disconnected"])
    );
    out
}

/// One session, a field per line; times also as how long ago.
pub fn one_session(session: &Value, now: u64) -> String {
    let mut out = String::new();
    let Some(fields) = session.as_object() else {
        return format!("{session}\n");
    };
    let width = fields.keys().map(String::len).max().unwrap_or(0);
    for (name, value) in fields {
        let mut text = cell(value);
        let is_time = matches!(
            name.as_str(),
            "created_at" | "connected_at" | "disconnected_at" | "last_heartbeat"
        );
        if let (true, Some(ms)) = (is_time, value.as_u64()) {
            let _ = write!(text, " ({} ago)", ago(now.saturating_sub(ms)));
        }
        let _ = writeln!(out, "{name:<width$}  {text}");
    }
    out
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_columns_and_counts() {
        let answer = json!({"sessions": [
            {"client_id":"a","client_type":"cli","state":"connected","current_seq":12,
             "acked_seq":10,"retained_events":2,"missed_events":0,"dropped_events_total":0,
             "reconnect_count":1,"remote_addr":"127.0.0.1:5000"},
            {"client_id":"longer-name","client_type":"ios","state":"disconnected","current_seq":3,
             "acked_seq":3,"retained_events":0,"missed_events":4,"dropped_events_total":1,
             "reconnect_count":0,"remote_addr":null}],
            "total":2,"connected":1,"disconnected":1});
        let text = table(&answer);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("CLIENT_ID    TYPE  STATE"), "{text}");
        assert!(
            lines[1].starts_with("a            cli   connected"),
            "{text}"
        );
        assert!(lines[2].ends_with("-"), "{text}");
        assert_eq!(lines[3], "2 sessions, 1 connected, 1 disconnected");
    }

    #[test]
    fn one_session_shows_times_as_ago() {
        let text = one_session(
            &json!({"client_id":"a","created_at":1000,"last_heartbeat":null}),
            126_000,
        );
        assert!(text.contains("created_at      1000 (2 min ago)"), "{text}");
        assert!(text.contains("last_heartbeat  -"), "{text}");
    }
}
