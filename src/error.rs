//! The one error type of the library.

use std::fmt;
use std::io;

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop the server from starting or a command from running.
#[derive(Debug)]
pub enum Error {
    /// A setting is out of range or malformed. The message names the flag;
    /// the caller should fix the configuration (the binary exits with code 2).
    Config(String),
    /// A listener could not be bound or another OS call failed at start-up.
    /// Usually the port is taken or the process lacks a permission.
    Io(io::Error),
    /// An OS thread could not be started; the machine is out of threads or memory.
    Thread(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => f.write_str(msg),
            Error::Io(err) => write!(f, "i/o error: {err}"),
            Error::Thread(err) => write!(f, "cannot start a thread: {err}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(_) => None,
            Error::Io(err) | Error::Thread(err) => Some(err),
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::Io(err)
    }
}
