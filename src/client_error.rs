//! The error type of the client side: the WebSocket client, its state file,
//! and the admin API client behind `tether publish` and `tether sessions`.
//!
//! It is separate from the server's [`crate::Error`] because the two never
//! meet: a program that only consumes events never sees a server start-up
//! error, and the server never sees these.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A `Result` whose error defaults to [`ClientError`].
pub type ClientResult<T, E = ClientError> = std::result::Result<T, E>;

/// What can stop a client call. Each variant says what the caller should do.
#[derive(Debug)]
pub enum ClientError {
    /// A setting is malformed (a URL that is not `ws://`, a bad client id).
    /// Fix the configuration; `tether` exits with code 2.
    Config(String),
    /// The state file could not be read, parsed or written. Reading errors
    /// come before any connection; a writing error stops the client, since
    /// going on would acknowledge events the file does not record.
    StateFile {
        /// The state file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `max_retry_attempts` attempts in a row failed. The session is still
    /// on the server; [`crate::client::Client::reconnect`] starts over.
    GaveUp {
        /// How many attempts failed in a row.
        attempts: u32,
        /// Why the last one failed.
        last_error: String,
    },
    /// The connection is down and the strategy is `manual`: call
    /// [`crate::client::Client::reconnect`] when it is time to try again.
    Disconnected,
    /// A newer connection resumed this session (close code 4000). Another
    /// process holds the same resume token; this client stops rather than
    /// take the session back and forth.
    TakenOver,
    /// The server refused the session (`invalid_resume_token`,
    /// `invalid_last_seq`, `invalid_client_id`, ...): retrying would get the
    /// same answer. The resume state does not match the server's.
    Refused {
        /// The error code of the contract.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The admin API answered with an error status.
    Http {
        /// The HTTP status.
        status: u16,
        /// The `code` of the error body (or `http_error` if there was none).
        code: String,
        /// The `message` of the error body, or the raw body.
        message: String,
    },
    /// The admin API could not be reached, or its answer could not be read.
    Unreachable(String),
    /// Reading input or writing output failed.
    Io(io::Error),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Config(msg) => f.write_str(msg),
            ClientError::StateFile { path, reason } => {
                write!(f, "state file {}: {reason}", path.display())
            }
            ClientError::GaveUp {
                attempts,
                last_error,
            } => write!(
                f,
                "giving up after {attempts} failed attempts in a row (last: {last_error})"
            ),
            ClientError::Disconnected => {
                f.write_str("disconnected, and the strategy is manual: not reconnecting")
            }
            ClientError::TakenOver => {
                f.write_str("another connection resumed this session (close 4000); stopping")
            }
            ClientError::Refused { code, message } => {
                write!(f, "the server refused the session: {code}: {message}")
            }
            ClientError::Http {
                status,
                code,
                message,
            } => write!(f, "the server answered {status} {code}: {message}"),
            ClientError::Unreachable(msg) => f.write_str(msg),
            ClientError::Io(err) => write!(f, "i/o error: {err}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(err: io::Error) -> Self {
        ClientError::Io(err)
    }
}
