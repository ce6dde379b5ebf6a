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

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, TryLockError};
use std::io::{self, Write};
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{debug, error, info, warn};

use crate::clock::now_ms;
use crate::connection::Conn;
use crate::dispatcher::Published;
use crate::event::{Event, LiveEvents, NewEvent};
use crate::journal::{self, FileKind, Frames};
use crate::record::{self, kind, Record, SnapshotFooter, SnapshotHeader};
use crate::server::Shared;
use crate::session::{Session, SessionRecord};
use crate::session_table::SessionTable;

/// A log segment this large is closed and followed by a snapshot.
pub const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;
const SNAPSHOT_VERSION: u32 = 1;
/// The file a running server holds locked, so only one uses the directory.
const LOCK_FILE: &str = "LOCK";
/// How long a held lock is retried before the start is refused.
const LOCK_WAIT: Duration = Duration::from_millis(500);

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

/// What recovery found.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Recovery {
    /// The next event id to assign.
    pub next_event_id: u64,
    /// The segment new records go to.
    pub next_segment: u64,
    /// The snapshot recovery started from (0: none).
    pub snapshot: u64,
    /// Log records replayed after it.
    pub records: u64,
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

/// Takes the exclusive lock on `dir`'s `LOCK` file and writes our pid into
/// it, for the refusal a second server prints. The lock goes with the
/// process, however it dies, so a crash leaves nothing to clean up.
fn lock_dir(dir: &Path) -> io::Result<File> {
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

fn recover(dir: &Path, table: &SessionTable, live: &Arc<LiveEvents>) -> io::Result<Recovery> {
    let snapshots = journal::list(dir, FileKind::Snapshot)?;
    let logs = journal::list(dir, FileKind::Log)?;
    let mut recovery = Recovery {
        next_event_id: 1,
        ..Recovery::default()
    };
    let mut base = None;
    // The latest time the log or snapshot shows the server alive.
    let mut last_ts = 0;
    for &n in snapshots.iter().rev() {
        match read_snapshot(&journal::path(dir, FileKind::Snapshot, n), live) {
            Ok((header, sessions)) => {
                table.restore(sessions);
                recovery.next_event_id = header.next_event_id;
                last_ts = header.written_at;
                recovery.snapshot = n;
                base = Some(n);
                break;
            }
            Err(why) => warn!("snapshot {n} is unusable ({why}); trying an older one"),
        }
    }
    let base = match base {
        Some(n) => n,
        None if snapshots.is_empty() || logs.first() == Some(&0) => 0,
        None => {
            return Err(io::Error::other(format!(
                "no readable snapshot in {} and the log does not reach back to its start; \
                 move the directory aside to start empty",
                dir.display()
            )))
        }
    };
    for (expected, &n) in (base..).zip(logs.iter().filter(|&&n| n >= base)) {
        let path = journal::path(dir, FileKind::Log, n);
        if n != expected {
            warn!(
                "log segment {expected} is missing; ignoring {} and later",
                path.display()
            );
            remove_logs_from(dir, &logs, n)?;
            break;
        }
        let data = fs::read(&path)?;
        let mut frames = Frames::new(&data);
        let mut valid = 0;
        let mut intact = true;
        while let Some((k, json)) = frames.next() {
            let applied = Record::decode(k, json)
                .map(|r| table.replay(r, live, &mut recovery.next_event_id, &mut last_ts));
            if applied != Some(true) {
                intact = false;
                break;
            }
            recovery.records += 1;
            valid = frames.valid_len();
        }
        if intact && !frames.is_torn() {
            continue;
        }
        warn!(
            "{} ends in a torn or corrupt record at byte {valid}; keeping the {valid} bytes before it",
            path.display()
        );
        fs::OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(valid as u64)?;
        remove_logs_from(dir, &logs, n + 1)?;
        break;
    }
    table.finish_recovery(last_ts);
    recovery.next_segment = logs.last().map_or(base, |&n| (n + 1).max(base));
    Ok(recovery)
}

fn remove_logs_from(dir: &Path, logs: &[u64], from: u64) -> io::Result<()> {
    for &n in logs.iter().filter(|&&n| n >= from) {
        fs::remove_file(journal::path(dir, FileKind::Log, n))?;
    }
    journal::sync_dir(dir)
}

fn read_snapshot(
    path: &Path,
    live: &Arc<LiveEvents>,
) -> Result<(SnapshotHeader, Vec<Session>), String> {
    let data = fs::read(path).map_err(|e| e.to_string())?;
    let mut frames = Frames::new(&data);
    let header: SnapshotHeader = match frames.next() {
        Some((kind::SNAPSHOT_HEADER, json)) => {
            serde_json::from_slice(json).map_err(|e| e.to_string())?
        }
        _ => return Err("no header".into()),
    };
    if header.version != SNAPSHOT_VERSION {
        return Err(format!(
            "version {} is not {SNAPSHOT_VERSION}",
            header.version
        ));
    }
    let mut events: HashMap<u64, Arc<Event>> = HashMap::new();
    let mut sessions = Vec::new();
    let mut footer = None;
    for (k, json) in frames.by_ref() {
        if footer.is_some() {
            return Err("records after the footer".into());
        }
        match k {
            kind::SNAPSHOT_EVENT => {
                let rec: record::EventRecord =
                    serde_json::from_slice(json).map_err(|e| e.to_string())?;
                let event = event_from_record(rec, live);
                events.insert(event.id, Arc::new(event));
            }
            kind::SNAPSHOT_SESSION => {
                let mut rec: SessionRecord =
                    serde_json::from_slice(json).map_err(|e| e.to_string())?;
                let retained = mem::take(&mut rec.retained)
                    .into_iter()
                    .map(|id| {
                        events
                            .get(&id)
                            .cloned()
                            .ok_or(format!("event {id} is missing"))
                    })
                    .collect::<Result<_, _>>()?;
                let id = rec.client_id.clone();
                let session = Session::from_record(rec, retained)
                    .ok_or(format!("session {id:?} is inconsistent"))?;
                sessions.push(session);
            }
            kind::SNAPSHOT_FOOTER => {
                footer = Some(
                    serde_json::from_slice::<SnapshotFooter>(json).map_err(|e| e.to_string())?,
                );
            }
            other => return Err(format!("unknown record kind {other}")),
        }
    }
    let footer = footer.ok_or("no footer: the snapshot is incomplete")?;
    if frames.is_torn()
        || footer.sessions != sessions.len() as u64
        || footer.events != events.len() as u64
    {
        return Err("the snapshot is damaged".into());
    }
    Ok((header, sessions))
}

/// An event read back from the data directory.
pub(crate) fn event_from_record(rec: record::EventRecord, live: &Arc<LiveEvents>) -> Event {
    let new = NewEvent {
        event_type: rec.event_type,
        data: rec.data,
        priority: rec.priority,
        targets: None,
    };
    Event::new(rec.id, rec.timestamp, &new, live)
}

/// The store thread: writes and syncs the log, answers publishers, takes
/// snapshots; stops after a last snapshot when asked.
pub(crate) fn run(shared: Arc<Shared>, store: Arc<Store>, recovery: Recovery) {
    let mut segment = recovery.next_segment;
    let mut previous_snapshot = recovery.snapshot;
    let mut file = match open_segment(&store.dir, segment) {
        Ok(file) => file,
        Err(e) => return store.fail("creating a log segment", &e),
    };
    let mut segment_bytes = 0u64;
    let mut synced_at = Instant::now();
    let mut unsynced = false;
    loop {
        let (batch, lsn, event_id, snapshot, stopping) = {
            let mut state = store.lock();
            loop {
                if !state.buffer.is_empty() || state.snapshot_requested || state.stopping {
                    break;
                }
                match store.fsync_interval {
                    Some(interval) if unsynced => {
                        let wait = interval.saturating_sub(synced_at.elapsed());
                        if wait.is_zero() {
                            break;
                        }
                        state = store
                            .work
                            .wait_timeout(state, wait)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    _ => state = store.work.wait(state).unwrap_or_else(|e| e.into_inner()),
                }
            }
            (
                mem::take(&mut state.buffer),
                state.last_lsn,
                state.last_event_id,
                mem::take(&mut state.snapshot_requested),
                state.stopping,
            )
        };
        if !batch.is_empty() {
            if let Err(e) = file.write_all(&batch) {
                return store.fail("writing the log", &e);
            }
            segment_bytes += batch.len() as u64;
            unsynced = true;
        }
        let sync_due = match store.fsync_interval {
            None => true,
            Some(interval) => stopping || snapshot || synced_at.elapsed() >= interval,
        };
        if unsynced && sync_due {
            if let Err(e) = file.sync_data() {
                return store.fail("syncing the log", &e);
            }
            unsynced = false;
            synced_at = Instant::now();
        }
        // Under an interval policy a written record is durable against a
        // crash of the process; a power cut may take the last interval.
        store.mark_durable(lsn, event_id, &shared);
        if snapshot || stopping || segment_bytes >= SEGMENT_BYTES {
            match take_snapshot(&shared, &store, &mut file, segment, previous_snapshot) {
                Ok(()) => {
                    previous_snapshot = segment + 1;
                    segment += 1;
                    segment_bytes = 0;
                }
                Err(e) => return store.fail("taking a snapshot", &e),
            }
        }
        if stopping {
            debug!("data directory flushed");
            return;
        }
    }
}

fn open_segment(dir: &Path, n: u64) -> io::Result<File> {
    let file = journal::create(&journal::path(dir, FileKind::Log, n))?;
    journal::sync_dir(dir)?;
    Ok(file)
}

/// Closes segment `segment`, writes snapshot `segment + 1` (the state before
/// the next segment) and deletes what the previous snapshot made obsolete.
fn take_snapshot(
    shared: &Shared,
    store: &Store,
    file: &mut File,
    segment: u64,
    previous: u64,
) -> io::Result<()> {
    let next = segment + 1;
    let started = Instant::now();
    // The table and the buffer are captured at the same instant, so the
    // snapshot is exactly the state after the records written so far.
    let ((tail, lsn, event_id), sessions) = shared.table.capture(|| {
        let mut state = store.lock();
        (
            mem::take(&mut state.buffer),
            state.last_lsn,
            state.last_event_id,
        )
    });
    file.write_all(&tail)?;
    file.sync_data()?;
    *file = open_segment(&store.dir, next)?;
    store.mark_durable(lsn, event_id, shared);

    let mut out = Vec::new();
    let header = SnapshotHeader {
        version: SNAPSHOT_VERSION,
        segment: next,
        next_event_id: event_id + 1,
        written_at: now_ms(),
    };
    out.extend(record::encode(kind::SNAPSHOT_HEADER, &header));
    let mut written = HashSet::new();
    let mut session_count = 0u64;
    for (_, events) in &sessions {
        for event in events {
            if written.insert(event.id) {
                journal::frame_into(&mut out, kind::SNAPSHOT_EVENT, &event.record_json(None));
            }
        }
    }
    for (mut rec, events) in sessions {
        rec.retained = events.iter().map(|e| e.id).collect();
        out.extend(record::encode(kind::SNAPSHOT_SESSION, &rec));
        session_count += 1;
    }
    let footer = SnapshotFooter {
        sessions: session_count,
        events: written.len() as u64,
    };
    out.extend(record::encode(kind::SNAPSHOT_FOOTER, &footer));
    journal::write_atomically(&journal::path(&store.dir, FileKind::Snapshot, next), &out)?;

    // Keep the previous snapshot and the segments after it as a fallback.
    for n in journal::list(&store.dir, FileKind::Snapshot)? {
        if n < previous {
            fs::remove_file(journal::path(&store.dir, FileKind::Snapshot, n))?;
        }
    }
    for n in journal::list(&store.dir, FileKind::Log)? {
        if n < previous {
            fs::remove_file(journal::path(&store.dir, FileKind::Log, n))?;
        }
    }
    journal::sync_dir(&store.dir)?;
    debug!(
        "snapshot {next}: {session_count} sessions, {} events, {} bytes in {} ms",
        written.len(),
        out.len(),
        started.elapsed().as_millis()
    );
    Ok(())
}
