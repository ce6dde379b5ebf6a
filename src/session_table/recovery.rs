//! The session table's side of `--data-dir` recovery: restoring a snapshot,
//! replaying the log over it, and copying the table for the next snapshot.
//! Replaying fans events out with the same code as publishing, so a
//! recovered session has exactly the seqs the live server gave it.

use std::sync::Arc;

use super::{fan_out, SessionTable};
use crate::event::{Event, LiveEvents};
use crate::record::Record;
use crate::session::{Session, SessionRecord};
use crate::token::TokenHash;

/// A session's durable state and its retained events, copied for a snapshot.
pub(crate) type Captured = (SessionRecord, Vec<Arc<Event>>);

impl SessionTable {
    /// Puts sessions read from a snapshot into the (empty) table.
    pub(crate) fn restore(&self, restored: Vec<Session>) {
        let mut sessions = self.lock();
        sessions.clear();
        for session in restored {
            sessions.insert(Arc::clone(&session.client_id), Box::new(session));
        }
    }

    /// Applies one record read back from the log. `next_event_id` and
    /// `last_ts` follow what the records show. Returns `false` for a record
    /// that cannot have been written by a sound server (recovery stops there).
    pub(crate) fn replay(
        &self,
        record: Record,
        live: &Arc<LiveEvents>,
        next_event_id: &mut u64,
        last_ts: &mut u64,
    ) -> bool {
        let mut sessions = self.lock();
        let mut seen = |at: u64| *last_ts = (*last_ts).max(at);
        match record {
            Record::Created(r) => {
                let Some(hash) = TokenHash::from_hex(&r.token_hash) else {
                    return false;
                };
                seen(r.at);
                let id: Arc<str> = r.client_id.into();
                let mut session = Session::new(Arc::clone(&id), r.client_type, hash, r.at);
                session.replay_create(r.at);
                sessions.insert(id, Box::new(session));
            }
            Record::Resumed(r) => {
                seen(r.at);
                if let Some(s) = sessions.get_mut(r.client_id.as_str()) {
                    s.replay_resume(r.last_seq, r.at);
                }
            }
            Record::Disconnected(r) => {
                seen(r.at);
                if let Some(s) = sessions.get_mut(r.client_id.as_str()) {
                    s.replay_disconnect(r.at, r.written_seq);
                }
            }
            Record::Preferences(r) => {
                if let Some(s) = sessions.get_mut(r.client_id.as_str()) {
                    s.set_preferences(r.preferences);
                }
            }
            Record::Deleted(r) => {
                sessions.remove(r.client_id.as_str());
            }
            Record::Acked(r) => {
                if let Some(s) = sessions.get_mut(r.client_id.as_str()) {
                    let _ = s.ack(r.seq);
                }
            }
            Record::Event(r) => {
                seen(r.timestamp);
                *next_event_id = (*next_event_id).max(r.id + 1);
                let targets = r.targets.clone();
                let event = Arc::new(crate::store::event_from_record(r, live));
                fan_out(
                    &mut sessions,
                    &event,
                    targets.as_deref(),
                    self.max_retained,
                    |_| {},
                );
            }
        }
        true
    }

    /// Ends recovery: every session is disconnected, those that were
    /// connected as of `at`.
    pub(crate) fn finish_recovery(&self, at: u64) {
        for session in self.lock().values_mut() {
            session.mark_recovered(at);
        }
    }

    /// Runs `f` and copies every session's durable state at one instant,
    /// with the table locked (for a snapshot that matches the log exactly).
    pub(crate) fn capture<R>(&self, f: impl FnOnce() -> R) -> (R, Vec<Captured>) {
        let sessions = self.lock();
        let result = f();
        let copied = sessions.values().map(|s| s.to_record()).collect();
        (result, copied)
    }
}
