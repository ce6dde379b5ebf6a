//! One session: its identity, preferences, seq counters and retained events.
//!
//! A session's retained events always hold a contiguous run of seqs ending at
//! `current_seq`: events are appended at the back and released from the
//! front (acknowledged, overflowing `max_missed_events`, or expired). So a
//! retained event costs the session one pointer; its seq is its position.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::connection::Conn;
use crate::event::Event;
use crate::pacing::{Allowance, Pacing, MAX_BATCH_EVENTS};
use crate::preferences::{ClientType, Delivery, Preferences};
use crate::token::TokenHash;

mod recovery;

pub(crate) use recovery::SessionRecord;

/// The most message bytes handed to a connection at once (one writer turn
/// or one `event_batch`): the writer frames a whole turn before sending it,
/// so with events of up to a mebibyte a turn of hundreds would otherwise
/// hold hundreds of them in memory at once.
pub const MAX_TURN_BYTES: usize = 256 * 1024;

/// Events an acknowledgement released. Callers drop them once the session
/// table is unlocked: when every client acknowledges at once, dropping the
/// last shared references of hundreds of events each, under the lock, kept
/// every writer waiting for tens of milliseconds.
pub type Released = Vec<Arc<Event>>;

/// A client's session; it outlives its connections.
#[derive(Debug)]
pub struct Session {
    pub(crate) client_id: Arc<str>,
    pub(crate) client_type: ClientType,
    pub(crate) token: TokenHash,
    pub(crate) preferences: Preferences,
    created_at: u64,
    connected_at: Option<u64>,
    pub(crate) disconnected_at: Option<u64>,
    pub(crate) last_heartbeat: Option<u64>,
    remote_addr: Option<SocketAddr>,
    current_seq: u64,
    acked_seq: u64,
    /// The highest seq ever written to a connection; releasing an event above
    /// it before it is written makes the event "dropped". Writes are not
    /// logged: recovery takes it from disconnects and, while the log shows
    /// the session connected, from every event (see `track`).
    written_seq: u64,
    retained: VecDeque<Arc<Event>>,
    missed_events: u64,
    dropped_events_total: u64,
    reconnect_count: u64,
    /// The live connection, if any.
    pub(crate) conn: Option<Arc<Conn>>,
    /// Where the live connection is in the session's events. Boxed, and
    /// only while connected: a disconnected session, kept for a day by
    /// default, carries just the pointer.
    sending: Option<Box<Sending>>,
    /// While the log is replayed: whether the session was connected then.
    replayed_connected: bool,
}

/// The live connection's place in its session's events.
#[derive(Debug)]
struct Sending {
    /// The newest seq handed to the connection.
    sent_seq: u64,
    /// Events up to this seq are replayed (`"replayed":true`).
    replay_until: u64,
    /// The connection's rate limit and batch window.
    pacing: Pacing,
}

/// What a session's connection should be sent now.
#[derive(Debug)]
pub struct Due {
    /// `(seq, event, replayed)`, in seq order.
    pub items: Vec<(u64, Arc<Event>, bool)>,
    /// Send them as one `event_batch` rather than one `event` each.
    pub as_batch: bool,
    /// What to do after sending them.
    pub then: Then,
}

/// When a connection needs the writer again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Not until new events arrive.
    Idle,
    /// At once: more is due (the writer moves on to others first).
    Continue,
    /// At this instant (rate limit or batch window).
    At(Instant),
    /// When more events are durable (`--data-dir`): the next ones are
    /// retained but not yet safe to send.
    Durable,
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
    /// A new session with the hash of its resume token.
    pub fn new(
        client_id: Arc<str>,
        client_type: ClientType,
        token: TokenHash,
        now: u64,
    ) -> Session {
        let preferences = Preferences::defaults_for(client_type);
        Session {
            client_id,
            client_type,
            token,
            preferences,
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
            sending: None,
            replayed_connected: false,
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

    /// Everything up to this seq is acknowledged.
    pub fn acked_seq(&self) -> u64 {
        self.acked_seq
    }

    /// The highest seq ever written to a connection.
    pub(crate) fn written_seq(&self) -> u64 {
        self.written_seq
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
        if self.replayed_connected {
            // What the connection was written is not in the log. Counting
            // it all as written can miss a slow reader's drops; the other
            // way, a client that never acks would show every release as
            // a drop after each crash.
            self.written_seq = self.current_seq;
        } else if !self.is_connected() {
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

    /// Acknowledges everything up to `seq`, and hands back the events it
    /// released.
    ///
    /// # Errors
    /// `Err(current_seq)` when `seq` is above `current_seq`; nothing changes.
    pub fn ack(&mut self, seq: u64) -> Result<Released, u64> {
        if seq > self.current_seq {
            return Err(self.current_seq);
        }
        if seq > self.acked_seq {
            self.acked_seq = seq;
        }
        let first = self.first_retained_seq();
        let count = (seq + 1)
            .saturating_sub(first)
            .min(self.retained.len() as u64);
        Ok(self.retained.drain(..count as usize).collect())
    }

    /// Releases retained events published before `cutoff` (Unix ms) into
    /// `released`. Returns how many were released and how many of those
    /// were dropped (never written to a connection).
    pub fn expire(&mut self, cutoff: u64, into: &mut Released) -> (u64, u64) {
        let (mut released, mut dropped) = (0, 0);
        while self.retained.front().is_some_and(|e| e.timestamp < cutoff) {
            if self.first_retained_seq() > self.written_seq {
                dropped += 1;
            }
            into.extend(self.retained.pop_front());
            released += 1;
        }
        self.dropped_events_total += dropped;
        if self.retained.capacity() > 64 && self.retained.len() < self.retained.capacity() / 4 {
            self.retained.shrink_to_fit();
        }
        (released, dropped)
    }

    /// Attaches a new connection that has processed up to `last_seq`;
    /// returns the seq sending starts after.
    fn attach(&mut self, conn: Arc<Conn>, last_seq: u64, now: u64) -> u64 {
        self.remote_addr = Some(conn.remote);
        self.conn = Some(conn);
        self.connected_at = Some(now);
        self.missed_events = 0;
        self.start_sending(last_seq)
    }

    /// Starts sending from after `last_seq` (or the oldest retained event),
    /// replaying what is retained now, with a full rate-limit bucket.
    /// Returns the seq sending starts after.
    fn start_sending(&mut self, last_seq: u64) -> u64 {
        let sent_seq = last_seq.max(self.first_retained_seq() - 1);
        self.sending = Some(Box::new(Sending {
            sent_seq,
            replay_until: self.current_seq,
            pacing: Pacing::new(&self.preferences, Instant::now()),
        }));
        sent_seq
    }

    /// Replaces the preferences; the live connection's pacing follows.
    pub fn set_preferences(&mut self, preferences: Preferences) {
        if let Some(sending) = &mut self.sending {
            sending.pacing.reconfigure(&self.preferences, &preferences);
        }
        self.preferences = preferences;
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
        drop(self.ack(last_seq)?);
        let replaced = self.conn.take();
        let disconnected_ms = match (&replaced, self.disconnected_at) {
            (None, Some(at)) => now.saturating_sub(at),
            _ => 0,
        };
        let sent_seq = self.attach(conn, last_seq, now);
        self.reconnect_count += 1;
        Ok((
            replaced,
            Resumed {
                last_seq,
                current_seq: self.current_seq,
                missed_events: self.current_seq - sent_seq,
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
        self.sending = None;
        self.disconnected_at = Some(now);
        self.missed_events = 0;
        true
    }

    /// The events due on the live connection now: first the replay, as fast
    /// as the connection takes it, then live events within the rate limit
    /// and batch window. At most `max_events` for `immediate` delivery, at
    /// most one batch's worth for `batched`. No event with an id above
    /// `durable_id` goes out: with a data directory, an event is sent only
    /// once a crash can no longer take it back. Nothing without a connection.
    pub fn take_due(&mut self, now: Instant, max_events: usize, durable_id: u64) -> Due {
        let as_batch = self.preferences.delivery == Delivery::Batched;
        let limit = if as_batch {
            MAX_BATCH_EVENTS
        } else {
            max_events
        };
        let nothing = |then| Due {
            items: Vec::new(),
            as_batch,
            then,
        };
        let Some(&Sending {
            sent_seq,
            replay_until,
            ..
        }) = self.sending.as_deref()
        else {
            return nothing(Then::Idle);
        };
        let start = (sent_seq + 1).max(self.first_retained_seq());
        // Ids grow with seqs, so the durable events are a prefix; usually
        // all of them, which the last one tells without a search through
        // events that are each an allocation of their own.
        let durable = match self.retained.back() {
            Some(last) if last.id <= durable_id => self.retained.len(),
            _ => self.retained.partition_point(|e| e.id <= durable_id),
        } as u64;
        let end = self.first_retained_seq() + durable - 1;
        let waiting = if end < self.current_seq {
            Then::Durable
        } else {
            Then::Idle
        };
        if start > end {
            return nothing(waiting);
        }
        if start <= replay_until {
            let count = limit.min((replay_until.min(end) - start + 1) as usize);
            let items = self.take(start, count);
            let then = if start + (items.len() as u64) <= end {
                Then::Continue
            } else {
                waiting
            };
            return Due {
                items,
                as_batch,
                then,
            };
        }
        let pending = (end - start + 1) as usize;
        let pacing = &mut self.sending.as_mut().expect("connected").pacing;
        let allowed = match pacing.allowance(&self.preferences, pending, now) {
            Allowance::At(at) => return nothing(Then::At(at)),
            Allowance::Now(n) => n.min(limit),
        };
        let items = self.take(start, allowed);
        let left = pending - items.len();
        let pacing = &mut self.sending.as_mut().expect("connected").pacing;
        let then = match pacing.spend(&self.preferences, items.len(), left, now) {
            Some(at) => Then::At(at),
            None if left > 0 => Then::Continue,
            None => waiting,
        };
        Due {
            items,
            as_batch,
            then,
        }
    }

    /// Hands up to `count` events from `start` to the live connection:
    /// fewer if their messages come to more than [`MAX_TURN_BYTES`], but
    /// always the first.
    fn take(&mut self, start: u64, count: usize) -> Vec<(u64, Arc<Event>, bool)> {
        let offset = (start - self.first_retained_seq()) as usize;
        let sending = self
            .sending
            .as_mut()
            .expect("only a connection is sent events");
        let replay_until = sending.replay_until;
        let mut bytes = 0;
        let items: Vec<_> = self
            .retained
            .range(offset..offset + count)
            .zip(start..)
            .take_while(|(event, seq)| {
                let first = bytes == 0;
                bytes += event.message_len(*seq, false);
                first || bytes <= MAX_TURN_BYTES
            })
            .map(|(event, seq)| (seq, Arc::clone(event), seq <= replay_until))
            .collect();
        sending.sent_seq = start + items.len() as u64 - 1;
        self.written_seq = self.written_seq.max(sending.sent_seq);
        items
    }

    /// Whether the live connection is still being sent its replay.
    pub fn is_replaying(&self) -> bool {
        self.sending
            .as_ref()
            .is_some_and(|s| s.sent_seq < s.replay_until)
    }

    /// The `<session>` object of the admin API. Never contains the token.
    pub fn view(&self) -> SessionView<'_> {
        SessionView {
            client_id: &self.client_id,
            client_type: self.client_type,
            state: if self.is_connected() {
                "connected"
            } else {
                "disconnected"
            },
            created_at: self.created_at,
            connected_at: self.connected_at,
            disconnected_at: self.disconnected_at,
            last_heartbeat: self.last_heartbeat,
            current_seq: self.current_seq,
            acked_seq: self.acked_seq,
            missed_events: self.missed_events,
            retained_events: self.retained.len(),
            dropped_events_total: self.dropped_events_total,
            reconnect_count: self.reconnect_count,
            preferences: &self.preferences,
            remote_addr: self.remote_addr,
        }
    }
}

/// A session as the admin API shows it (contract section 6), fields in the
/// contract's order.
#[derive(Debug, Serialize)]
pub struct SessionView<'a> {
    client_id: &'a str,
    client_type: ClientType,
    state: &'static str,
    created_at: u64,
    connected_at: Option<u64>,
    disconnected_at: Option<u64>,
    last_heartbeat: Option<u64>,
    current_seq: u64,
    acked_seq: u64,
    missed_events: u64,
    retained_events: usize,
    dropped_events_total: u64,
    reconnect_count: u64,
    preferences: &'a Preferences,
    remote_addr: Option<SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{parse_publish_body, LiveEvents};
    use std::time::Duration;

    /// `n` events with ids 1 to `n` (also for `recovery`'s tests).
    pub(super) fn events(n: u64) -> Vec<Arc<Event>> {
        let live = Arc::new(LiveEvents::default());
        let new = &parse_publish_body(r#"{"event_type":"t"}"#).unwrap()[0];
        (1..=n)
            .map(|i| Arc::new(Event::new(i, i * 10, new, &live)))
            .collect()
    }

    /// A session whose live connection may take 10000 events a second.
    fn session() -> Session {
        let mut s = Session::new("c1".into(), ClientType::Cli, TokenHash::generate().1, 0);
        let mut fast = s.preferences.clone();
        fast.max_events_per_second = 10_000;
        s.set_preferences(fast);
        s.start_sending(0);
        s
    }

    fn seqs(due: &Due) -> Vec<u64> {
        due.items.iter().map(|i| i.0).collect()
    }

    #[test]
    fn seqs_are_contiguous_and_ack_releases() {
        let mut s = session();
        for e in events(5) {
            assert!(!s.track(e, 10));
        }
        assert_eq!((s.current_seq(), s.retained_len()), (5, 5));
        assert_eq!(s.ack(6).err(), Some(5));
        let released = s.ack(3).unwrap();
        assert_eq!(released.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(s.retained_len(), 2);
        assert!(s.ack(3).unwrap().is_empty());
        let due = s.take_due(Instant::now(), 10, u64::MAX);
        assert_eq!(seqs(&due), vec![4, 5]);
        assert_eq!(due.items[0].1.id, 4);
    }

    #[test]
    fn a_turn_stops_at_its_byte_budget_but_takes_at_least_one_event() {
        let mut s = session();
        let live = Arc::new(LiveEvents::default());
        let data = format!(r#"{{"event_type":"big","data":"{}"}}"#, "x".repeat(100_000));
        let new = &parse_publish_body(&data).unwrap()[0];
        for id in 1..=4 {
            s.track(Arc::new(Event::new(id, id, new, &live)), 10);
        }
        // Two messages of about 100 kB fit in 256 KiB, a third does not.
        let due = s.take_due(Instant::now(), 10, u64::MAX);
        assert_eq!((seqs(&due), due.then), (vec![1, 2], Then::Continue));
        let due = s.take_due(Instant::now(), 10, u64::MAX);
        assert_eq!((seqs(&due), due.then), (vec![3, 4], Then::Idle));
        let huge = format!(r#"{{"event_type":"big","data":"{}"}}"#, "x".repeat(300_000));
        s.track(
            Arc::new(Event::new(
                5,
                5,
                &parse_publish_body(&huge).unwrap()[0],
                &live,
            )),
            10,
        );
        assert_eq!(seqs(&s.take_due(Instant::now(), 10, u64::MAX)), vec![5]);
    }

    #[test]
    fn overflow_counts_only_unwritten_events_as_dropped() {
        let mut s = session();
        let evs = events(6);
        for e in &evs[..3] {
            s.track(Arc::clone(e), 3);
        }
        assert_eq!(s.take_due(Instant::now(), 2, u64::MAX).items.len(), 2); // seqs 1 and 2 written
        assert!(!s.track(Arc::clone(&evs[3]), 3)); // releases 1: written
        assert!(!s.track(Arc::clone(&evs[4]), 3)); // releases 2: written
        assert!(s.track(Arc::clone(&evs[5]), 3)); // releases 3: never written
        assert_eq!(s.dropped_events_total, 1);
        assert_eq!(
            seqs(&s.take_due(Instant::now(), 10, u64::MAX)),
            vec![4, 5, 6]
        );
    }

    #[test]
    fn turns_are_bounded_and_say_what_comes_next() {
        let mut s = session();
        for e in events(5) {
            s.track(e, 10);
        }
        let due = s.take_due(Instant::now(), 3, u64::MAX);
        assert_eq!((due.items.len(), due.then), (3, Then::Continue));
        let due = s.take_due(Instant::now(), 3, u64::MAX);
        assert_eq!((due.items.len(), due.then), (2, Then::Idle));
        assert!(s.take_due(Instant::now(), 3, u64::MAX).items.is_empty());
    }

    #[test]
    fn live_events_are_rate_limited_but_replay_is_not() {
        let mut s = Session::new("c2".into(), ClientType::Cli, TokenHash::generate().1, 0); // 20/s
        s.start_sending(0);
        for e in events(50) {
            s.track(e, 100);
        }
        let t0 = Instant::now();
        let due = s.take_due(t0, 128, u64::MAX);
        assert_eq!(due.items.len(), 20);
        assert!(matches!(due.then, Then::At(at) if at > t0));
        // Disconnect and resume from 0: all 50 are replay, unpaced.
        s.start_sending(0);
        let due = s.take_due(t0, 128, u64::MAX);
        assert_eq!(due.items.len(), 50);
        assert!(due.items.iter().all(|i| i.2));
    }

    #[test]
    fn batched_sessions_wait_for_their_window() {
        let mut s = Session::new("c3".into(), ClientType::Web, TokenHash::generate().1, 0); // 10/s, 1 s
        s.start_sending(0);
        for e in events(3) {
            s.track(e, 100);
        }
        let t0 = Instant::now();
        let due = s.take_due(t0, 128, u64::MAX);
        assert!(due.items.is_empty());
        assert_eq!(due.then, Then::At(t0 + Duration::from_millis(1000)));
        let due = s.take_due(t0 + Duration::from_millis(1000), 128, u64::MAX);
        assert!(due.as_batch);
        assert_eq!((seqs(&due), due.then), (vec![1, 2, 3], Then::Idle));
    }

    #[test]
    fn only_durable_events_are_taken() {
        let mut s = session();
        for e in events(5) {
            s.track(e, 10);
        }
        let due = s.take_due(Instant::now(), 10, 3);
        assert_eq!((seqs(&due), due.then), (vec![1, 2, 3], Then::Durable));
        let due = s.take_due(Instant::now(), 10, 3);
        assert_eq!((due.items.len(), due.then), (0, Then::Durable));
        let due = s.take_due(Instant::now(), 10, 5);
        assert_eq!((seqs(&due), due.then), (vec![4, 5], Then::Idle));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_session_stays_small() {
        // Most of what a disconnected session costs (issue 5: at most 512 B,
        // measured by `make bench`); the connection's state is boxed apart.
        let size = std::mem::size_of::<Session>();
        assert!(size <= 280, "Session grew to {size} B");
    }

    #[test]
    fn expiry_releases_old_events() {
        let mut s = session();
        for e in events(4) {
            s.track(e, 10);
        }
        let mut released = Vec::new();
        assert_eq!(s.expire(25, &mut released), (2, 2));
        assert_eq!(released.len(), 2);
        assert_eq!(s.retained_len(), 2);
        assert_eq!(s.dropped_events_total, 2);
    }
}
