//! The store thread: the only writer of the log and the snapshots, so
//! group commit, segment rotation and snapshot-taking need no lock on the
//! files, only the store's state lock to take the buffered records.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::mem;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use log::debug;

use super::{Recovery, Store, SEGMENT_BYTES, SNAPSHOT_VERSION};
use crate::clock::now_ms;
use crate::journal::{self, FileKind};
use crate::record::{self, kind, SnapshotFooter, SnapshotHeader};
use crate::server::Shared;

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
