//! Recovery at start-up: the newest readable snapshot, then the log
//! segments after it, cutting a torn tail where a crash left one. It runs
//! once, before the store exists, and hands the store thread only a
//! [`Recovery`]: where to go on writing.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::mem;
use std::path::Path;
use std::sync::Arc;

use log::warn;

use super::SNAPSHOT_VERSION;
use crate::event::{Event, LiveEvents, NewEvent};
use crate::journal::{self, FileKind, Frames};
use crate::record::{self, kind, Record, SnapshotFooter, SnapshotHeader};
use crate::session::{Session, SessionRecord};
use crate::session_table::SessionTable;

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

pub(super) fn recover(
    dir: &Path,
    table: &SessionTable,
    live: &Arc<LiveEvents>,
) -> io::Result<Recovery> {
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
