//! `tether publish`: publish one event from flags, or many from stdin (one
//! JSON event object per line, sent in batches of up to 1000 events and
//! 1 MiB), and print the id of each published event, one per line.

use std::io::{BufRead, Write};

use serde_json::{json, Value};

use crate::admin::MAX_BODY_BYTES;
use crate::admin_client::AdminClient;
use crate::cli::UsageError;
use crate::client_error::{ClientError, ClientResult};
use crate::event::MAX_EVENTS_PER_REQUEST;
use crate::flags::{self, Flag};
use crate::preferences::Priority;
use crate::protocol::is_valid_name;

/// The flags of every admin subcommand.
const ADMIN_FLAGS: &[Flag] = &[
    Flag::value("admin", "URL", "the admin API, http://HOST:PORT (required)"),
    Flag::value(
        "token",
        "TOKEN",
        "the admin token [default: TETHER_ADMIN_TOKEN, if set]",
    ),
];

/// `publish`'s own flags.
const FLAGS: &[Flag] = &[
    Flag::value(
        "type",
        "TYPE",
        "the event_type; without it, events are read from stdin, one JSON object per line",
    ),
    Flag::value("data", "JSON", "the event's data [default: null]"),
    Flag::value(
        "priority",
        "P",
        "low, medium, high or critical [default: medium]",
    ),
    Flag::repeated(
        "target",
        "ID",
        "deliver to this client_id only; repeat for several [default: every matching session]",
    ),
];

/// The text of `tether publish --help`.
pub fn help() -> String {
    flags::help(
        "Publish events through the admin API and print their ids, one per line.\n\
         With --type, one event from the flags; without it, one JSON event object per line of stdin\n\
         (sent in batches of up to 1000 events and 1 MiB). Exit code 1 with the server's message on failure, 2 on bad arguments.",
        "tether publish --admin URL [--token T] --type T [--data JSON] [--priority P] [--target ID]...\n       \
         tether publish --admin URL [--token T] < events.jsonl",
        &AdminTarget::flags(FLAGS),
    )
}

/// What `tether publish ...` asked for.
#[derive(Debug)]
pub enum PublishCommand {
    /// Publish this one event (a `POST /events` body).
    One {
        /// Where.
        admin: AdminTarget,
        /// The event object.
        event: Value,
    },
    /// Publish the events of stdin.
    Stdin {
        /// Where.
        admin: AdminTarget,
    },
    /// Print [`help`].
    Help,
}

/// The admin API to talk to.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// `http://HOST:PORT`.
    pub url: String,
    /// The bearer token, if any.
    pub token: Option<String>,
}

impl AdminTarget {
    /// From `--admin` and `--token` (else `TETHER_ADMIN_TOKEN` through `env`).
    ///
    /// # Errors
    /// A usage error naming `--admin` or `--token`.
    pub fn from_flags(
        p: &flags::Parsed,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AdminTarget, UsageError> {
        let url = p.required("admin")?.to_string();
        AdminClient::new(&url, None)
            .map_err(|e| UsageError(format!("invalid value for --admin: {e}")))?;
        let token = match p.get("token") {
            Some("") => return Err(flags::invalid("token", "", "a non-empty token")),
            Some(t) => Some(t.to_string()),
            None => env("TETHER_ADMIN_TOKEN").filter(|t| !t.is_empty()),
        };
        Ok(AdminTarget { url, token })
    }

    /// The flags of an admin subcommand: `--admin`, `--token` and its own.
    pub fn flags(own: &[Flag]) -> Vec<Flag> {
        [ADMIN_FLAGS, own].concat()
    }

    /// Parses the arguments of an admin subcommand (`publish`, `sessions`)
    /// whose own flags are `own`: `None` for `--help`, else the flags and
    /// the admin API they name.
    ///
    /// # Errors
    /// A usage error naming the flag.
    pub fn parse_command(
        command: &'static str,
        own: &[Flag],
        args: &[String],
        max_positionals: usize,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<(flags::Parsed, AdminTarget)>, UsageError> {
        let p = flags::parse(command, &AdminTarget::flags(own), args, max_positionals)?;
        if p.help {
            return Ok(None);
        }
        let admin = AdminTarget::from_flags(&p, env)?;
        Ok(Some((p, admin)))
    }

    /// The client for it.
    pub fn client(&self) -> AdminClient {
        AdminClient::new(&self.url, self.token.as_deref()).expect("checked when parsed")
    }
}

/// Parses the arguments after `publish`, reading `TETHER_ADMIN_TOKEN` through `env`.
///
/// # Errors
/// A [`UsageError`] naming the flag.
pub fn parse(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PublishCommand, UsageError> {
    let Some((p, admin)) = AdminTarget::parse_command("publish", FLAGS, args, 0, env)? else {
        return Ok(PublishCommand::Help);
    };
    let Some(event_type) = p.get("type") else {
        if let Some(flag) = ["data", "priority", "target"]
            .into_iter()
            .find(|f| p.get(f).is_some())
        {
            return Err(UsageError(format!(
                "--{flag} needs --type (without --type, whole events are read from stdin)"
            )));
        }
        return Ok(PublishCommand::Stdin { admin });
    };
    if !is_valid_name(event_type) {
        return Err(flags::invalid(
            "type",
            event_type,
            "1-128 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    let mut event = json!({ "event_type": event_type });
    if let Some(data) = p.parsed("data", "JSON", |v| serde_json::from_str::<Value>(v).ok())? {
        event["data"] = data;
    }
    if let Some(priority) = p.parsed("priority", "low, medium, high or critical", |v| {
        v.parse::<Priority>().ok()
    })? {
        event["priority"] = json!(priority);
    }
    let targets = p.all("target");
    if let Some(bad) = targets.iter().find(|t| !is_valid_name(t)) {
        return Err(flags::invalid(
            "target",
            bad,
            "a client_id of 1-128 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    if !targets.is_empty() {
        event["targets"] = json!(targets);
    }
    Ok(PublishCommand::One { admin, event })
}

/// Publishes one event and prints its id to `out`.
///
/// # Errors
/// The server's error, or why it could not be reached.
pub fn publish_one(admin: &AdminTarget, event: &Value, out: &mut dyn Write) -> ClientResult<()> {
    let accepted = admin.client().publish(&event.to_string())?;
    for a in accepted {
        writeln!(out, "{}", a.id)?;
    }
    Ok(())
}

/// Publishes the events of `input`, one JSON object per line (blank lines
/// skipped), in batches that fit one request (at most 1000 events and
/// 1 MiB of body), printing each id to `out` as its batch is accepted. A
/// bad line stops before its batch is sent.
///
/// # Errors
/// A line that is not a JSON object or is too big for any request (naming
/// the line), or the server's error; the batches before it stay published.
pub fn publish_lines(
    admin: &AdminTarget,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> ClientResult<()> {
    let client = admin.client();
    // The request body being built: `[`, then the events, each followed by
    // a comma, the last of which becomes the closing `]`.
    let mut body = String::from("[");
    let mut events = 0;
    let mut published = 0usize;
    let mut send = |body: &mut String, events: &mut usize| -> ClientResult<()> {
        if *events == 0 {
            return Ok(());
        }
        body.pop();
        body.push(']');
        let request = std::mem::replace(body, String::from("["));
        *events = 0;
        let accepted = client.publish(&request).map_err(|e| after(published, e))?;
        for a in &accepted {
            writeln!(out, "{}", a.id)?;
        }
        out.flush()?;
        published += accepted.len();
        Ok(())
    };
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event = match serde_json::from_str::<Value>(&line) {
            Ok(event @ Value::Object(_)) => event.to_string(),
            _ => {
                return Err(ClientError::Config(format!(
                    "stdin line {}: not a JSON event object",
                    i + 1
                )))
            }
        };
        // `[` + the event + `]`.
        if event.len() + 2 > MAX_BODY_BYTES {
            return Err(ClientError::Config(format!(
                "stdin line {}: the event is {} bytes; a request is at most {MAX_BODY_BYTES}",
                i + 1,
                event.len()
            )));
        }
        if body.len() + event.len() + 1 > MAX_BODY_BYTES {
            send(&mut body, &mut events)?;
        }
        body.push_str(&event);
        body.push(',');
        events += 1;
        if events == MAX_EVENTS_PER_REQUEST {
            send(&mut body, &mut events)?;
        }
    }
    send(&mut body, &mut events)
}

/// Says how many events were published before an error.
fn after(published: usize, e: ClientError) -> ClientError {
    match e {
        ClientError::Http {
            status,
            code,
            message,
        } if published > 0 => ClientError::Http {
            status,
            code,
            message: format!("{message} ({published} events published before this batch)"),
        },
        other => other,
    }
}
