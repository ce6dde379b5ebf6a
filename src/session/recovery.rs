//! A session's side of `--data-dir` recovery: the record a snapshot keeps,
//! and the bookkeeping of replaying the log's changes without a connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Session;
use crate::event::Event;
use crate::preferences::{ClientType, Preferences};
use crate::token::TokenHash;

impl Session {
    /// Replays a resume from the data directory's log: the acknowledgement
    /// and the bookkeeping, without a connection.
    pub(crate) fn replay_resume(&mut self, last_seq: u64, at: u64) {
        let _ = self.ack(last_seq);
        self.reconnect_count += 1;
        self.connected_at = Some(at);
        self.missed_events = 0;
        self.replayed_connected = true;
    }

    /// Replays the creation of a session: it was connected from then on.
    pub(crate) fn replay_create(&mut self, at: u64) {
        self.connected_at = Some(at);
        self.replayed_connected = true;
    }

    /// Replays a disconnect from the log, with the seq written by then
    /// (`None` in logs from before it was recorded).
    pub(crate) fn replay_disconnect(&mut self, at: u64, written_seq: Option<u64>) {
        if let Some(written) = written_seq {
            self.written_seq = written.min(self.current_seq);
        }
        self.disconnected_at = Some(at);
        self.missed_events = 0;
        self.replayed_connected = false;
    }

    /// After recovery every session is disconnected; one that was connected
    /// when the server stopped is taken to have disconnected at `at`.
    pub(crate) fn mark_recovered(&mut self, at: u64) {
        self.replayed_connected = false;
        if self.was_connected() || self.disconnected_at.is_none() {
            self.disconnected_at = Some(at.max(self.connected_at.unwrap_or(0)));
        }
    }

    /// Whether the session's last recorded change was a connection.
    fn was_connected(&self) -> bool {
        match (self.connected_at, self.disconnected_at) {
            (Some(c), Some(d)) => c > d,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// The durable part of the session and its retained events, for a
    /// snapshot.
    pub(crate) fn to_record(&self) -> (SessionRecord, Vec<Arc<Event>>) {
        let record = SessionRecord {
            client_id: self.client_id.to_string(),
            client_type: self.client_type,
            token_hash: self.token.to_hex(),
            preferences: self.preferences.clone(),
            created_at: self.created_at,
            connected_at: self.connected_at,
            disconnected_at: self.disconnected_at,
            last_heartbeat: self.last_heartbeat,
            remote_addr: self.remote_addr,
            current_seq: self.current_seq,
            acked_seq: self.acked_seq,
            written_seq: self.written_seq,
            missed_events: self.missed_events,
            dropped_events_total: self.dropped_events_total,
            reconnect_count: self.reconnect_count,
            retained: Vec::new(),
        };
        (record, self.retained.iter().cloned().collect())
    }

    /// A session read back from a snapshot, with its retained events
    /// (`None` if the record is inconsistent).
    pub(crate) fn from_record(
        record: SessionRecord,
        retained: VecDeque<Arc<Event>>,
    ) -> Option<Session> {
        if retained.len() as u64 > record.current_seq || record.acked_seq > record.current_seq {
            return None;
        }
        let mut session = Session::new(
            record.client_id.into(),
            record.client_type,
            TokenHash::from_hex(&record.token_hash)?,
            record.created_at,
        );
        session.preferences = record.preferences;
        session.connected_at = record.connected_at;
        session.disconnected_at = record.disconnected_at;
        session.last_heartbeat = record.last_heartbeat;
        session.remote_addr = record.remote_addr;
        session.current_seq = record.current_seq;
        session.acked_seq = record.acked_seq;
        session.written_seq = record.written_seq;
        session.missed_events = record.missed_events;
        session.dropped_events_total = record.dropped_events_total;
        session.reconnect_count = record.reconnect_count;
        session.retained = retained;
        // The log after the snapshot replays over a connected session.
        session.replayed_connected = session.was_connected();
        Some(session)
    }
}

/// The durable part of a session, as a snapshot stores it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub client_id: String,
    pub client_type: ClientType,
    pub token_hash: String,
    pub preferences: Preferences,
    pub created_at: u64,
    pub connected_at: Option<u64>,
    pub disconnected_at: Option<u64>,
    pub last_heartbeat: Option<u64>,
    pub remote_addr: Option<SocketAddr>,
    pub current_seq: u64,
    pub acked_seq: u64,
    pub written_seq: u64,
    pub missed_events: u64,
    pub dropped_events_total: u64,
    pub reconnect_count: u64,
    /// Ids of the retained events, oldest first; their seqs end at `current_seq`.
    pub retained: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::events;

    /// A snapshot's session, connected or not when it was taken, replayed
    /// over: what the log cannot tell (writes) is taken as done while it
    /// was connected, and as not done while it was away.
    #[test]
    fn a_restored_session_replays_events_as_its_state_was() {
        for connected in [true, false] {
            let mut s = Session::new("c1".into(), ClientType::Cli, TokenHash::generate().1, 0);
            s.replay_create(5);
            if !connected {
                s.replay_disconnect(6, Some(0));
            }
            let (record, retained) = s.to_record();
            let mut s = Session::from_record(record, retained.into()).unwrap();
            for e in events(15) {
                assert_eq!(s.track(e, 10), !connected && s.current_seq() > 10);
            }
            s.mark_recovered(7);
            let view = serde_json::to_value(s.view()).unwrap();
            let expected = if connected { (0, 0) } else { (5, 15) };
            assert_eq!(
                (
                    view["dropped_events_total"].as_u64(),
                    view["missed_events"].as_u64()
                ),
                (Some(expected.0), Some(expected.1)),
                "connected: {connected}"
            );
        }
    }
}
