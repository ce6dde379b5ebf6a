//! One session: its identity, preferences, seq counters and retained events.
//!
//! A session's retained events always hold a contiguous run of seqs ending at
//! `current_seq`: events are appended at the back and released from the
//! front (acknowledged, overflowing `max_missed_events`, or expired). So a
//! retained event costs the session one pointer; its seq is its position.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::connection::Conn;
use crate::event::Event;
use crate::protocol::{ClientType, Preferences};
use crate::token::ResumeToken;

/// A client's session; it outlives its connections.
#[derive(Debug)]
pub struct Session {
    pub(crate) client_id: Arc<str>,
    pub(crate) client_type: ClientType,
    pub(crate) token: ResumeToken,
    pub(crate) preferences: Preferences,
    created_at: u64,
    connected_at: Option<u64>,
    pub(crate) disconnected_at: Option<u64>,
    pub(crate) last_heartbeat: Option<u64>,
    remote_addr: Option<SocketAddr>,
    current_seq: u64,
    acked_seq: u64,
    /// The highest seq ever written to a connection; releasing an event above
    /// it before it is written makes the event "dropped".
    written_seq: u64,
    retained: VecDeque<Arc<Event>>,
    missed_events: u64,
    dropped_events_total: u64,
    reconnect_count: u64,
    /// The live connection, if any.
    pub(crate) conn: Option<Arc<Conn>>,
    /// The newest seq handed to the live connection.
    sent_seq: u64,
    /// Events up to this seq are replayed (`"replayed":true`) on the live connection.
    replay_until: u64,
}

/// Events taken from a session for its connection, in seq order.
#[derive(Debug, Default)]
pub struct Batch {
    /// `(seq, event, replayed)`.
    pub items: Vec<(u64, Arc<Event>, bool)>,
    /// More events are waiting after these.
    pub more: bool,
}

/// What a resume found; the numbers of `reconnection_sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// The seq the client processed (from the query or the acknowledged seq).
    pub last_seq: u64,
    /// The session's newest seq.
    pub current_seq: u64,
    /// How many events will be replayed.
    pub missed_events: u64,
    /// 0 on a take-over.
    pub disconnected_ms: u64,
    /// Including this resume.
    pub reconnect_count: u64,
}

impl Session {
    /// A new, connected session with a fresh resume token.
    pub fn new(client_id: Arc<str>, client_type: ClientType, now: u64) -> Session {
        Session {
            client_id,
            client_type,
            token: ResumeToken::generate(),
            preferences: Preferences::defaults_for(client_type),
            created_at: now,
            connected_at: None,
            disconnected_at: None,
            last_heartbeat: None,
            remote_addr: None,
            current_seq: 0,
            acked_seq: 0,
            written_seq: 0,
            retained: VecDeque::new(),
            missed_events: 0,
            dropped_events_total: 0,
            reconnect_count: 0,
            conn: None,
            sent_seq: 0,
            replay_until: 0,
        }
    }

    /// Whether `conn` is the live connection.
    pub fn is_attached(&self, conn: &Conn) -> bool {
        self.conn.as_ref().is_some_and(|c| c.id == conn.id)
    }

    /// Whether a connection is attached.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The newest seq assigned to this session.
    pub fn current_seq(&self) -> u64 {
        self.current_seq
    }

    /// How many events are retained.
    pub fn retained_len(&self) -> usize {
        self.retained.len()
    }

    fn first_retained_seq(&self) -> u64 {
        self.current_seq + 1 - self.retained.len() as u64
    }

    /// Assigns the next seq to `event` and retains it, releasing the oldest
    /// event beyond `max_retained`. Returns whether an event was dropped
    /// (released before it was ever written to a connection).
    pub fn track(&mut self, event: Arc<Event>, max_retained: usize) -> bool {
        self.current_seq += 1;
        self.retained.push_back(event);
        if !self.is_connected() {
            self.missed_events += 1;
        }
        if self.retained.len() > max_retained {
            let released_seq = self.first_retained_seq();
            self.retained.pop_front();
            if released_seq > self.written_seq {
                self.dropped_events_total += 1;
                return true;
            }
        }
        false
    }

    /// Acknowledges everything up to `seq`, releasing those events.
    ///
    /// # Errors
    /// `Err(current_seq)` when `seq` is above `current_seq`; nothing changes.
    pub fn ack(&mut self, seq: u64) -> Result<(), u64> {
        if seq > self.current_seq {
            return Err(self.current_seq);
        }
        if seq > self.acked_seq {
            self.acked_seq = seq;
        }
        while !self.retained.is_empty() && self.first_retained_seq() <= seq {
            self.retained.pop_front();
        }
        Ok(())
    }

    /// Releases retained events published before `cutoff` (Unix ms).
    /// Returns how many of them were dropped (never written).
    pub fn expire(&mut self, cutoff: u64) -> u64 {
        let mut dropped = 0;
        while self.retained.front().is_some_and(|e| e.timestamp < cutoff) {
            if self.first_retained_seq() > self.written_seq {
                dropped += 1;
            }
            self.retained.pop_front();
        }
        self.dropped_events_total += dropped;
        dropped
    }

    /// Attaches a new connection that has processed up to `last_seq`.
    fn attach(&mut self, conn: Arc<Conn>, last_seq: u64, now: u64) {
        self.remote_addr = Some(conn.remote);
        self.conn = Some(conn);
        self.connected_at = Some(now);
        self.sent_seq = last_seq.max(self.first_retained_seq() - 1);
        self.replay_until = self.current_seq;
        self.missed_events = 0;
    }

    /// Attaches the first connection of a new session.
    pub fn connect_new(&mut self, conn: Arc<Conn>, now: u64) {
        self.attach(conn, 0, now);
    }

    /// Resumes on `conn` from `last_seq` (`None`: the acknowledged seq),
    /// acknowledging everything up to it. Returns the connection it replaces
    /// (a take-over) and the numbers for `reconnection_sync`.
    ///
    /// # Errors
    /// `Err(current_seq)` when `last_seq` is above `current_seq`; nothing changes.
    pub fn resume(
        &mut self,
        conn: Arc<Conn>,
        last_seq: Option<u64>,
        now: u64,
    ) -> Result<(Option<Arc<Conn>>, Resumed), u64> {
        let last_seq = last_seq.unwrap_or(self.acked_seq);
        self.ack(last_seq)?;
        let replaced = self.conn.take();
        let disconnected_ms = match (&replaced, self.disconnected_at) {
            (None, Some(at)) => now.saturating_sub(at),
            _ => 0,
        };
        self.attach(conn, last_seq, now);
        self.reconnect_count += 1;
        Ok((
            replaced,
            Resumed {
                last_seq,
                current_seq: self.current_seq,
                missed_events: self.current_seq - self.sent_seq,
                disconnected_ms,
                reconnect_count: self.reconnect_count,
            },
        ))
    }

    /// Detaches the live connection if it is `conn`. Returns whether it was.
    pub fn disconnect(&mut self, conn: &Conn, now: u64) -> bool {
        if !self.is_attached(conn) {
            return false;
        }
        self.conn = None;
        self.disconnected_at = Some(now);
        self.missed_events = 0;
        true
    }

    /// Takes up to `max` events not yet handed to the live connection.
    pub fn next_batch(&mut self, max: usize) -> Batch {
        let start = (self.sent_seq + 1).max(self.first_retained_seq());
        if start > self.current_seq {
            return Batch::default();
        }
        let available = (self.current_seq - start + 1) as usize;
        let take = available.min(max);
        let offset = (start - self.first_retained_seq()) as usize;
        let items = self
            .retained
            .range(offset..offset + take)
            .zip(start..)
            .map(|(event, seq)| (seq, Arc::clone(event), seq <= self.replay_until))
            .collect();
        self.sent_seq = start + take as u64 - 1;
        self.written_seq = self.written_seq.max(self.sent_seq);
        Batch {
            items,
            more: take < available,
        }
    }

    /// Whether the live connection is still being sent its replay.
    pub fn is_replaying(&self) -> bool {
        self.sent_seq < self.replay_until
    }

    /// The `<session>` object of the admin API. Never contains the token.
    pub fn to_json(&self) -> Value {
        json!({
            "client_id": &*self.client_id,
            "client_type": self.client_type,
            "state": if self.is_connected() { "connected" } else { "disconnected" },
            "created_at": self.created_at,
            "connected_at": self.connected_at,
            "disconnected_at": self.disconnected_at,
            "last_heartbeat": self.last_heartbeat,
            "current_seq": self.current_seq,
            "acked_seq": self.acked_seq,
            "missed_events": self.missed_events,
            "retained_events": self.retained.len(),
            "dropped_events_total": self.dropped_events_total,
            "reconnect_count": self.reconnect_count,
            "preferences": self.preferences,
            "remote_addr": self.remote_addr.map(|a| a.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{parse_publish_body, LiveEvents};

    fn events(n: u64) -> Vec<Arc<Event>> {
        let live = Arc::new(LiveEvents::default());
        let new = &parse_publish_body(r#"{"event_type":"t"}"#).unwrap()[0];
        (1..=n)
            .map(|i| Arc::new(Event::new(i, i * 10, new, &live)))
            .collect()
    }

    fn session() -> Session {
        Session::new("c1".into(), ClientType::Cli, 0)
    }

    #[test]
    fn seqs_are_contiguous_and_ack_releases() {
        let mut s = session();
        for e in events(5) {
            assert!(!s.track(e, 10));
        }
        assert_eq!((s.current_seq(), s.retained_len()), (5, 5));
        assert_eq!(s.ack(6), Err(5));
        s.ack(3).unwrap();
        assert_eq!(s.retained_len(), 2);
        let batch = s.next_batch(10);
        let seqs: Vec<u64> = batch.items.iter().map(|i| i.0).collect();
        assert_eq!(seqs, vec![4, 5]);
        assert_eq!(batch.items[0].1.id, 4);
    }

    #[test]
    fn overflow_counts_only_unwritten_events_as_dropped() {
        let mut s = session();
        let evs = events(6);
        for e in &evs[..3] {
            s.track(Arc::clone(e), 3);
        }
        assert_eq!(s.next_batch(2).items.len(), 2); // seqs 1 and 2 written
        assert!(!s.track(Arc::clone(&evs[3]), 3)); // releases 1: written
        assert!(!s.track(Arc::clone(&evs[4]), 3)); // releases 2: written
        assert!(s.track(Arc::clone(&evs[5]), 3)); // releases 3: never written
        assert_eq!(s.dropped_events_total, 1);
        let seqs: Vec<u64> = s.next_batch(10).items.iter().map(|i| i.0).collect();
        assert_eq!(seqs, vec![4, 5, 6]);
    }

    #[test]
    fn batches_are_bounded_and_report_more() {
        let mut s = session();
        for e in events(5) {
            s.track(e, 10);
        }
        let b = s.next_batch(3);
        assert_eq!((b.items.len(), b.more), (3, true));
        let b = s.next_batch(3);
        assert_eq!((b.items.len(), b.more), (2, false));
        assert!(s.next_batch(3).items.is_empty());
    }

    #[test]
    fn expiry_releases_old_events() {
        let mut s = session();
        for e in events(4) {
            s.track(e, 10);
        }
        assert_eq!(s.expire(25), 2);
        assert_eq!(s.retained_len(), 2);
        assert_eq!(s.dropped_events_total, 2);
    }
}
