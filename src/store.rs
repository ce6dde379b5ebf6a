//! Durability (`--data-dir`): an append-only log of the session table's
//! changes, group commit, snapshots, and recovery at start-up.
//!
//! # Why a log of our own, not SQLite
//!
//! What must survive is small and append-shaped: the changes listed in
//! `record.rs`, in the order they were applied. A log of length+CRC framed
//! records (`journal.rs`) is all the format needs; a torn tail is detected
//! and cut off, and snapshots bound the log. It keeps the binary small and
//! free of a C build, and every byte of the format is ours to explain.
//! SQLite (WAL) would have brought a trusted engine, but we would still have
//! to derive seqs from an ordered event log on top of it, so it would carry
//! the same logic plus a database.
//!
//! # How a publish becomes durable
//!
//! The dispatcher builds each event's record outside the session-table lock;
//! under the lock it appends the record to an in-memory buffer (no I/O) in
//! exactly the order the fan-out happens. The store thread writes the buffer
//! out, fsyncs it (every batch, or every `--fsync-interval-ms`), and only
//! then answers the publisher with 202 and lets the writers send those
//! events: a client never sees an event a crash could take back, so no seq is
//! ever reused. Many events share one fsync (group commit).
//!
//! # Snapshots
//!
//! When the current segment passes [`SEGMENT_BYTES`], when cleanup expired
//! something, and at shutdown, the store thread rotates to a new segment and
//! writes the state before it as a snapshot (temporary file, fsync, rename,
//! fsync of the directory). The previous snapshot and the segments after it
//! are kept as a fallback; anything older is deleted, so the directory holds
//! at most two snapshots and the segments since the older one.

use std::fs::{self, File};
use std::io;
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{error, info};

use crate::connection::Conn;
use crate::dispatcher::Published;
use crate::event::LiveEvents;
use crate::server::Shared;
use crate::session_table::SessionTable;

mod dir_lock;
mod recovery;
mod thread;

use dir_lock::lock_dir;
use recovery::recover;
pub(crate) use recovery::{event_from_record, Recovery};
pub(crate) use thread::run;

/// A log segment this large is closed and followed by a snapshot.
pub const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;
const SNAPSHOT_VERSION: u32 = 1;

/// The data directory's writer.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    /// `None`: fsync every batch. `Some(d)`: at most every `d`.
    fsync_interval: Option<Duration>,
    state: Mutex<State>,
    /// The store thread waits here for records.
    work: Condvar,
    /// Threads waiting for a record to become durable wait here.
    durable: Condvar,
    durable_lsn: AtomicU64,
    durable_event_id: AtomicU64,
    failed: AtomicBool,
    /// The open `LOCK` file whose exclusive lock is the directory's, held
    /// until the server has stopped writing.
    lock: Mutex<Option<File>>,
}

#[derive(Debug, Default)]
struct State {
    buffer: Vec<u8>,
    last_lsn: u64,
    last_event_id: u64,
    pending: Vec<PendingPublish>,
    waiters: Vec<(u64, Arc<Conn>)>,
    snapshot_requested: bool,
    stopping: bool,
}

#[derive(Debug)]
struct PendingPublish {
    last_id: u64,
    published: Vec<Published>,
    reply: Sender<Vec<Published>>,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a framed record to the log; `event_id` for event records.
    /// Called with the session-table lock held, so records keep the order in
    /// which the table applied them. Returns the record's position.
    pub(crate) fn append(&self, frame: &[u8], event_id: Option<u64>) -> u64 {
        let mut state = self.lock();
        // Nothing writes the buffer any more; it must not grow for ever.
        if !self.has_failed() {
            state.buffer.extend_from_slice(frame);
        }
        state.last_lsn += 1;
        if let Some(id) = event_id {
            state.last_event_id = state.last_event_id.max(id);
        }
        self.work.notify_one();
        state.last_lsn
    }

    /// The highest event id that is durable (under the fsync policy):
    /// writers send no event above it.
    pub(crate) fn durable_event_id(&self) -> u64 {
        self.durable_event_id.load(Ordering::Acquire)
    }

    /// Blocks until the record at `lsn` is durable. Returns `false` if the
    /// store failed or stopped first.
    pub(crate) fn wait_durable(&self, lsn: u64) -> bool {
        let mut state = self.lock();
        while self.durable_lsn.load(Ordering::Acquire) < lsn {
            if self.failed.load(Ordering::Acquire) || state.stopping {
                return false;
            }
            state = self.durable.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        true
    }

    /// Answers a publish once its last event is durable.
    pub(crate) fn reply_when_durable(
        &self,
        published: Vec<Published>,
        reply: Sender<Vec<Published>>,
    ) {
        let last_id = published.last().map_or(0, |p| p.id);
        let mut state = self.lock();
        // `fail` cleared the pending publishes under this lock; one added
        // after it would wait for ever. Dropping `reply` refuses it.
        if self.has_failed() {
            return;
        }
        if self.durable_event_id() >= last_id {
            drop(state);
            let _ = reply.send(published);
            return;
        }
        state.pending.push(PendingPublish {
            last_id,
            published,
            reply,
        });
    }

    /// Has the writer pool woken for `conn` once events after `seen` are
    /// durable (it stopped at `seen`, the durable id it saw).
    pub(crate) fn wake_when_durable(&self, conn: &Arc<Conn>, seen: u64, shared: &Shared) {
        let mut state = self.lock();
        if self.durable_event_id() > seen {
            drop(state);
            shared.writer.wake(conn);
            return;
        }
        state.waiters.push((seen, Arc::clone(conn)));
    }

    /// Asks for a snapshot soon (after cleanup expired something).
    pub(crate) fn request_snapshot(&self) {
        self.lock().snapshot_requested = true;
        self.work.notify_one();
    }

    /// Whether a write failed; publishing is refused from then on.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Tells the store thread to write everything, snapshot and stop.
    pub(crate) fn stop(&self) {
        self.lock().stopping = true;
        self.work.notify_one();
        self.durable.notify_all();
    }

    /// Gives the directory up, once the store thread has written its last
    /// byte, so a server started next in the same process can take it.
    pub(crate) fn release_lock(&self) {
        self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Everything up to `lsn` and `event_id` is durable: answer publishers,
    /// wake writers and waiting threads.
    fn mark_durable(&self, lsn: u64, event_id: u64, shared: &Shared) {
        let (replies, waiters) = {
            let mut state = self.lock();
            self.durable_lsn.store(lsn, Ordering::Release);
            self.durable_event_id.store(event_id, Ordering::Release);
            let (done, waiting): (Vec<_>, Vec<_>) = mem::take(&mut state.pending)
                .into_iter()
                .partition(|p| p.last_id <= event_id);
            state.pending = waiting;
            let (woken, still): (Vec<_>, Vec<_>) = mem::take(&mut state.waiters)
                .into_iter()
                .partition(|(seen, _)| *seen < event_id);
            state.waiters = still;
            (done, woken)
        };
        self.durable.notify_all();
        for p in replies {
            let _ = p.reply.send(p.published);
        }
        for (_, conn) in waiters {
            shared.writer.wake(&conn);
        }
    }

    fn fail(&self, what: &str, e: &io::Error) {
        error!(
            "data directory {}: {what} failed: {e}; publishes and new sessions are refused from now on",
            self.dir.display()
        );
        self.failed.store(true, Ordering::Release);
        let mut state = self.lock();
        state.pending.clear();
        state.buffer = Vec::new();
        drop(state);
        self.durable.notify_all();
    }
}

/// Opens (creating if needed) the data directory, recovers the table from
/// it and returns the store, ready for its thread.
///
/// # Errors
/// The directory cannot be created or read, another server holds its lock,
/// or no snapshot is readable and the log does not go back to the beginning.
pub(crate) fn open(
    dir: &Path,
    fsync_interval_ms: u64,
    table: &SessionTable,
    live: &Arc<LiveEvents>,
) -> io::Result<(Arc<Store>, Recovery)> {
    create_dir(dir)?;
    // Before anything is read: recovery cuts torn tails and a snapshot
    // deletes old segments, which would destroy a running server's log.
    let lock = lock_dir(dir)?;
    let started = Instant::now();
    let recovery = recover(dir, table, live)?;
    let counts = table.counts();
    info!(
        "recovered {} sessions and {} events from {} (snapshot {}, {} log records) in {} ms",
        counts.total,
        live.count(),
        dir.display(),
        recovery.snapshot,
        recovery.records,
        started.elapsed().as_millis()
    );
    let last_event_id = recovery.next_event_id - 1;
    let store = Store {
        dir: dir.to_path_buf(),
        fsync_interval: (fsync_interval_ms > 0).then(|| Duration::from_millis(fsync_interval_ms)),
        state: Mutex::new(State {
            last_event_id,
            // A fresh snapshot lets the old segments go.
            snapshot_requested: recovery.records > 0,
            ..State::default()
        }),
        work: Condvar::new(),
        durable: Condvar::new(),
        durable_lsn: AtomicU64::new(0),
        durable_event_id: AtomicU64::new(last_event_id),
        failed: AtomicBool::new(false),
        lock: Mutex::new(Some(lock)),
    };
    Ok((Arc::new(store), recovery))
}

fn create_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
