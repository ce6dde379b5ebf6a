//! The client's resume state and the file that keeps it across restarts.
//!
//! The file holds `client_id`, `resume_token` and the last processed `seq`
//! as one JSON object. It is replaced atomically: written to `PATH.tmp`
//! (mode 0600, since the token is a secret) and renamed over `PATH`, so a
//! process killed at any instant leaves either the old or the new state,
//! never a torn one. There is no `fsync`: the guarantee covers the death of
//! the process (SIGKILL, a crash), which is what the file is for, not the
//! loss of power, which would cost an fsync per event. One process at a
//! time may use a state file.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client_error::{ClientError, ClientResult};
use crate::protocol::is_valid_name;

/// What a client needs to resume its session: who it is, its secret, and
/// the last seq it processed. Its `Debug` hides the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    /// The session's `client_id`.
    pub client_id: String,
    /// The secret from `connection_established`.
    pub resume_token: String,
    /// The last seq the application processed.
    pub last_seq: u64,
}

impl fmt::Debug for ResumeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumeState")
            .field("client_id", &self.client_id)
            .field("resume_token", &"<redacted>")
            .field("last_seq", &self.last_seq)
            .finish()
    }
}

/// A state file at a path.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    tmp: PathBuf,
    /// Whether a stale temporary file may still lie around.
    fresh_tmp: bool,
}

impl StateFile {
    /// The state file at `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        let path = path.into();
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        StateFile {
            path,
            tmp: tmp.into(),
            fresh_tmp: false,
        }
    }

    /// Where the state is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; `None` if the file does not exist yet.
    ///
    /// # Errors
    /// [`ClientError::StateFile`] if the file cannot be read or is not a
    /// state this client wrote.
    pub fn load(&self) -> ClientResult<Option<ResumeState>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(e.to_string())),
        };
        let state: ResumeState = serde_json::from_str(&text)
            .map_err(|e| self.error(format!("not a tether state file ({e})")))?;
        if !is_valid_name(&state.client_id) || !is_url_safe(&state.resume_token) {
            return Err(self.error("holds a malformed client_id or resume_token".into()));
        }
        Ok(Some(state))
    }

    /// Replaces the state atomically (temporary file, then rename).
    ///
    /// # Errors
    /// [`ClientError::StateFile`] if the file cannot be written.
    pub fn save(&mut self, state: &ResumeState) -> ClientResult<()> {
        if !self.fresh_tmp {
            // A temporary file left by a killed process may have other
            // permissions; start from none.
            let _ = fs::remove_file(&self.tmp);
            self.fresh_tmp = true;
        }
        let mut text = serde_json::to_string(state).expect("a state serialises");
        text.push('\n');
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.tmp)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .and_then(|()| fs::rename(&self.tmp, &self.path));
        written.map_err(|e| self.error(format!("cannot write it: {e}")))
    }

    fn error(&self, reason: String) -> ClientError {
        ClientError::StateFile {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Whether a token can go into a query string unescaped.
fn is_url_safe(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tether-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn round_trip_with_private_permissions() {
        let path = temp_path("round-trip.json");
        let _ = fs::remove_file(&path);
        let mut file = StateFile::new(&path);
        assert_eq!(file.load().unwrap(), None);
        let state = ResumeState {
            client_id: "c1".into(),
            resume_token: "ab12".into(),
            last_seq: 41,
        };
        file.save(&state).unwrap();
        file.save(&ResumeState {
            last_seq: 42,
            ..state.clone()
        })
        .unwrap();
        let loaded = file.load().unwrap().unwrap();
        assert_eq!(loaded.last_seq, 42);
        assert_eq!(loaded.client_id, "c1");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!format!("{loaded:?}").contains("ab12"));
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let path = temp_path("garbage.json");
        fs::write(&path, "not json").unwrap();
        let err = StateFile::new(&path).load().unwrap_err().to_string();
        assert!(err.contains("garbage.json"), "{err}");
        fs::write(
            &path,
            r#"{"client_id":"c1","resume_token":"a&b","last_seq":1}"#,
        )
        .unwrap();
        assert!(StateFile::new(&path).load().is_err());
        fs::remove_file(&path).unwrap();
    }
}
