//! What the data directory records: the changes to the session table that
//! decide which session gets which event under which seq, in the order they
//! were applied.
//!
//! Seqs are not written per session and event: replaying the events in
//! order against the same sessions with the same preferences assigns the
//! same seqs, so a published event costs one record whatever the number of
//! sessions. Acknowledgements, resumes and disconnects are recorded too;
//! they release events and keep the bookkeeping, but never move a seq.
//! Expiry is not recorded: it follows from the timestamps, and recovery
//! runs a cleanup pass.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::journal;
use crate::preferences::{ClientType, Preferences, Priority};

/// The kind byte of each record.
pub(crate) mod kind {
    /// A new session.
    pub const CREATED: u8 = b'C';
    /// A session resumed (and acknowledged up to `last_seq`).
    pub const RESUMED: u8 = b'R';
    /// A session's connection ended.
    pub const DISCONNECTED: u8 = b'D';
    /// A session's preferences changed.
    pub const PREFERENCES: u8 = b'P';
    /// An event was published.
    pub const EVENT: u8 = b'E';
    /// A session was deleted.
    pub const DELETED: u8 = b'X';
    /// A session acknowledged up to a seq.
    pub const ACKED: u8 = b'A';
    /// Snapshot: the header.
    pub const SNAPSHOT_HEADER: u8 = b'h';
    /// Snapshot: one retained event.
    pub const SNAPSHOT_EVENT: u8 = b'e';
    /// Snapshot: one session.
    pub const SNAPSHOT_SESSION: u8 = b's';
    /// Snapshot: the footer, proof that the snapshot is complete.
    pub const SNAPSHOT_FOOTER: u8 = b'f';
}

/// A new session.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Created {
    pub client_id: String,
    pub client_type: ClientType,
    pub token_hash: String,
    pub at: u64,
}

/// A resume.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Resumed {
    pub client_id: String,
    pub last_seq: u64,
    pub at: u64,
}

/// A disconnect.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Disconnected {
    pub client_id: String,
    pub at: u64,
    /// The session's highest seq written to a connection; absent in logs
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_seq: Option<u64>,
}

/// New preferences.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PreferencesSet {
    pub client_id: String,
    pub preferences: Preferences,
}

/// A deleted session.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Deleted {
    pub client_id: String,
}

/// An acknowledgement.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Acked {
    pub client_id: String,
    pub seq: u64,
}

/// A published event (written by `Event::record_json`).
#[derive(Debug, Deserialize)]
pub(crate) struct EventRecord {
    pub id: u64,
    pub event_type: String,
    pub priority: Priority,
    pub timestamp: u64,
    pub data: Box<RawValue>,
    #[serde(default)]
    pub targets: Option<Vec<String>>,
}

/// The first record of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotHeader {
    pub version: u32,
    /// The snapshot is the state before this log segment.
    pub segment: u64,
    pub next_event_id: u64,
    pub written_at: u64,
}

/// The last record of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotFooter {
    pub sessions: u64,
    pub events: u64,
}

/// One decoded log record.
#[derive(Debug)]
pub(crate) enum Record {
    Created(Created),
    Resumed(Resumed),
    Disconnected(Disconnected),
    Preferences(PreferencesSet),
    Event(EventRecord),
    Deleted(Deleted),
    Acked(Acked),
}

impl Record {
    /// Decodes a log record; `None` for an unknown kind or bad JSON.
    pub fn decode(kind: u8, json: &[u8]) -> Option<Record> {
        fn read<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Option<T> {
            serde_json::from_slice(json).ok()
        }
        Some(match kind {
            kind::CREATED => Record::Created(read(json)?),
            kind::RESUMED => Record::Resumed(read(json)?),
            kind::DISCONNECTED => Record::Disconnected(read(json)?),
            kind::PREFERENCES => Record::Preferences(read(json)?),
            kind::EVENT => Record::Event(read(json)?),
            kind::DELETED => Record::Deleted(read(json)?),
            kind::ACKED => Record::Acked(read(json)?),
            _ => return None,
        })
    }
}

/// A framed record of `kind` holding `value` as JSON.
pub(crate) fn encode<T: Serialize>(kind: u8, value: &T) -> Vec<u8> {
    let json = serde_json::to_vec(value).expect("records serialise");
    journal::frame(kind, &json)
}
