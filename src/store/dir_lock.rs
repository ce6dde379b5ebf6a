//! The data directory's `LOCK` file, so that at most one server uses a
//! directory: a second one would cut the first one's log and delete its
//! segments. Apart from the store because it concerns the directory, not
//! the records in it.

use std::fs::{self, File, TryLockError};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The file a running server holds locked, so only one uses the directory.
const LOCK_FILE: &str = "LOCK";
/// How long a held lock is retried before the start is refused.
const LOCK_WAIT: Duration = Duration::from_millis(500);

/// Takes the exclusive lock on `dir`'s `LOCK` file and writes our pid into
/// it, for the refusal a second server prints. The lock goes with the
/// process, however it dies, so a crash leaves nothing to clean up.
pub(super) fn lock_dir(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LOCK_FILE);
    // Not truncated on open: until we hold the lock the pid is the holder's.
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)?;
    // A child process forked by any thread of this process holds a copy of
    // every descriptor until it execs, LOCK's included: a server restarted
    // in a process that also spawns children can find the lock its
    // predecessor released still held for a moment.
    let deadline = Instant::now() + LOCK_WAIT;
    let mut locked = file.try_lock();
    while matches!(locked, Err(TryLockError::WouldBlock)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        locked = file.try_lock();
    }
    match locked {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path)
                .ok()
                .and_then(|pid| pid.trim().parse::<u32>().ok())
                .map_or(String::new(), |pid| format!(" (pid {pid})"));
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "another tether{holder} is using this directory; \
                     stop it or choose another directory"
                ),
            ));
        }
        Err(TryLockError::Error(e)) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot lock {}: {e}", path.display()),
            ))
        }
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}
