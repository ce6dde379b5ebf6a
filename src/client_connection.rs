//! One connection of a tether client: connecting, upgrading, reading the
//! server's first message, and what the client keeps about it.

use std::fmt;
use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::client_error::ClientError;

/// Error codes of a first message that retrying cannot fix.
const REFUSALS: &[&str] = &[
    "invalid_resume_token",
    "invalid_last_seq",
    "invalid_client_id",
    "invalid_client_type",
];

/// The announced heartbeat settings of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heartbeat {
    pub interval: Duration,
    pub timeout: Duration,
}

/// A live connection.
pub(crate) struct Connection {
    pub ws: WebSocket<TcpStream>,
    pub heartbeat: Option<Heartbeat>,
    pub next_heartbeat: Instant,
    pub last_received: Instant,
}

/// Why an attempt failed.
pub(crate) enum AttemptError {
    /// Worth retrying.
    Failed(String),
    /// Retrying would get the same answer.
    Fatal(ClientError),
}

/// The server's first message on a connection.
pub(crate) enum First {
    Established(Value),
    Sync(Value),
}

/// Connects, upgrades and reads the first message.
pub(crate) fn open(url: &str, timeout: Duration) -> Result<(Box<Connection>, First), AttemptError> {
    let failed = |what: &str, e: &dyn fmt::Display| AttemptError::Failed(format!("{what}: {e}"));
    let mut request = url
        .into_client_request()
        .map_err(|e| AttemptError::Fatal(ClientError::Config(format!("bad url: {e}"))))?;
    let agent = concat!("tether/", env!("CARGO_PKG_VERSION"));
    request
        .headers_mut()
        .insert("User-Agent", agent.parse().expect("a valid header value"));
    let host = request.uri().host().unwrap_or("").to_string();
    let port = request.uri().port_u16().unwrap_or(80);
    let addrs = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| failed(&format!("cannot resolve {host}"), &e))?;
    let mut stream = Err(std::io::Error::new(ErrorKind::NotFound, "no address"));
    for addr in addrs {
        stream = TcpStream::connect_timeout(&addr, timeout);
        if stream.is_ok() {
            break;
        }
    }
    let stream = stream.map_err(|e| failed(&format!("cannot connect to {host}:{port}"), &e))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| failed("socket", &e))?;
    let mut ws = match tungstenite::client::client_with_config(request, stream, None) {
        Ok((ws, _)) => ws,
        Err(HandshakeError::Failure(WsError::Http(resp))) => {
            return Err(AttemptError::Failed(format!(
                "the server answered HTTP {}",
                resp.status()
            )))
        }
        Err(HandshakeError::Failure(e)) => return Err(failed("handshake failed", &e)),
        Err(HandshakeError::Interrupted(_)) => {
            return Err(AttemptError::Failed("handshake timed out".into()))
        }
    };
    let first = loop {
        match ws.read() {
            Ok(Message::Text(text)) => break text,
            Ok(Message::Close(frame)) => {
                return Err(AttemptError::Failed(format!(
                    "closed before the first message ({})",
                    describe_close(frame.as_ref())
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(failed("no first message", &e)),
        }
    };
    let value: Value = serde_json::from_str(first.as_str())
        .map_err(|e| failed("the first message is not JSON", &e))?;
    let first = match value["type"].as_str() {
        Some("connection_established") => First::Established(value["data"].clone()),
        Some("reconnection_sync") => First::Sync(value["data"].clone()),
        Some("error") => {
            let code = value["code"].as_str().unwrap_or("").to_string();
            let message = value["message"].as_str().unwrap_or("").to_string();
            return Err(if REFUSALS.contains(&code.as_str()) {
                AttemptError::Fatal(ClientError::Refused { code, message })
            } else {
                AttemptError::Failed(format!("server error {code}: {message}"))
            });
        }
        _ => {
            return Err(AttemptError::Failed(format!(
                "unexpected first message {value}"
            )))
        }
    };
    let now = Instant::now();
    Ok((
        Box::new(Connection {
            ws,
            heartbeat: None,
            next_heartbeat: now,
            last_received: now,
        }),
        first,
    ))
}

/// The heartbeat a first message announced, if enabled.
pub(crate) fn heartbeat_settings(announced: &Value) -> Option<Heartbeat> {
    if announced["enabled"] == false {
        return None;
    }
    let interval = announced["interval_ms"].as_u64().filter(|ms| *ms > 0)?;
    let timeout = announced["timeout_ms"]
        .as_u64()
        .filter(|t| *t > interval)
        .unwrap_or(interval * 2);
    Some(Heartbeat {
        interval: Duration::from_millis(interval),
        timeout: Duration::from_millis(timeout),
    })
}

/// A close frame in words, for notices and errors.
pub(crate) fn describe_close(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) if f.reason.is_empty() => format!("code {}", u16::from(f.code)),
        Some(f) => format!("code {}, {}", u16::from(f.code), f.reason),
        None => "no close code".into(),
    }
}
