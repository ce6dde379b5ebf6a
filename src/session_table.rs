//! The session table: every session behind one lock, and the narrow set of
//! operations the rest of the server performs on it.
//!
//! The lock is held only for bookkeeping, never across socket I/O. A
//! connection's `ws` lock may be held while calling in here (see
//! `connection.rs`), so nothing in here takes a connection's lock.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::connection::Conn;
use crate::event::Event;
use crate::preferences::{ClientType, Preferences, Priority};
use crate::protocol::{
    heartbeat_ack, parse_seq, preferences_updated, Announcement, SyncSummary, WireError,
};
use crate::record;
use crate::session::{Due, Released, Session, SessionView};
use crate::store::Store;
use crate::token::TokenHash;

mod recovery;

/// What a connection asks for when it opens, beside its `client_id`.
#[derive(Debug)]
pub(crate) struct OpenRequest {
    /// From the query or the `User-Agent`; used for a new session only.
    pub client_type: ClientType,
    /// Required to resume.
    pub resume_token: Option<String>,
    /// As written in the query, validated here.
    pub last_seq: Option<String>,
}

/// A session opened or resumed on a connection.
#[derive(Debug)]
pub(crate) struct Opened {
    /// `connection_established` or `reconnection_sync`.
    pub first_message: String,
    /// Whether an existing session was resumed.
    pub resumed: bool,
    /// The connection this one took over from, to be closed with 4000.
    pub replaced: Option<Arc<Conn>>,
    /// The position of its record in the data directory (0 without one).
    pub lsn: u64,
}

/// Preferences just applied to a session.
#[derive(Debug)]
pub(crate) struct PreferencesChange {
    /// `preferences_updated`, to send once the change is durable.
    pub reply: String,
    /// The position of its record in the data directory (0 without one).
    pub lsn: u64,
    /// What they replaced, to put back if the change cannot be made durable.
    pub previous: Preferences,
}

/// The result of fanning events out.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    /// Per event, how many sessions it was tracked for.
    pub matched: Vec<usize>,
    /// Connections with new events, high-priority sessions first.
    pub wake: Vec<Arc<Conn>>,
    /// Events released before they were ever written.
    pub dropped: u64,
}

/// Events taken for a connection, and whether it is still being replayed to.
#[derive(Debug)]
pub(crate) struct Taken {
    /// The events and what comes next.
    pub due: Due,
    /// Replayed events remain after these.
    pub still_replaying: bool,
}

/// What a cleanup pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Whole sessions, disconnected for longer than the retention period.
    pub sessions: usize,
    /// Retained events older than the retention period, released from the
    /// sessions that remain.
    pub events: u64,
    /// Of those events, the ones never written to a client.
    pub dropped: u64,
}

/// Which sessions a listing wants.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionFilter {
    /// `Some(true)`: connected only; `Some(false)`: disconnected only.
    pub connected: Option<bool>,
    /// Only this client type.
    pub client_type: Option<ClientType>,
}

/// Session counts for `/health`, `/metrics` and the listing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// All sessions.
    pub total: usize,
    /// Sessions with a live connection.
    pub connected: usize,
}

/// Every session, by `client_id`.
#[derive(Debug)]
pub struct SessionTable {
    sessions: Mutex<Sessions>,
    max_retained: usize,
    announcement: Announcement,
    /// The data directory, once recovery is over (`--data-dir`).
    store: OnceLock<Arc<Store>>,
}

/// Sessions are boxed: a map keeps spare slots after it grows, and a slot
/// holding a pointer costs far less than one holding a whole session.
type Sessions = HashMap<Arc<str>, Box<Session>>;

impl SessionTable {
    /// An empty table retaining up to `max_retained` events per session.
    pub(crate) fn new(max_retained: usize, announcement: Announcement) -> Self {
        SessionTable {
            sessions: Mutex::new(HashMap::new()),
            max_retained,
            announcement,
            store: OnceLock::new(),
        }
    }

    /// From now on, every change is recorded in `store`.
    pub(crate) fn set_store(&self, store: Arc<Store>) {
        let _ = self.store.set(store);
    }

    /// Records a change (with the table locked, so records keep the order
    /// of the changes). Returns the record's position, 0 without a store.
    fn journal<T: Serialize>(&self, kind: u8, value: &T) -> u64 {
        match self.store.get() {
            Some(store) => store.append(&record::encode(kind, value), None),
            None => 0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Sessions> {
        // A panic elsewhere must not take every session down with it.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the session `conn` is attached to, if it still is.
    fn with_attached<R>(&self, conn: &Conn, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        let mut sessions = self.lock();
        let session = sessions.get_mut(&conn.client_id)?;
        if !session.is_attached(conn) {
            return None;
        }
        Some(f(session))
    }

    /// Opens a new session on `conn`, or resumes the existing one with its
    /// token (contract section 3).
    ///
    /// # Errors
    /// `invalid_resume_token` or `invalid_last_seq`; the session is untouched.
    pub(crate) fn open(
        &self,
        conn: &Arc<Conn>,
        request: OpenRequest,
        now: u64,
    ) -> Result<Opened, WireError> {
        let mut sessions = self.lock();
        let Some(session) = sessions.get_mut(&conn.client_id) else {
            let (token, hash) = TokenHash::generate();
            let mut session =
                Session::new(Arc::clone(&conn.client_id), request.client_type, hash, now);
            session.connect_new(Arc::clone(conn), now);
            let first_message = self.announcement.connection_established(
                &session.client_id,
                session.client_type,
                &token,
                &session.preferences,
            );
            let lsn = self.journal(
                record::kind::CREATED,
                &record::Created {
                    client_id: conn.client_id.to_string(),
                    client_type: session.client_type,
                    token_hash: session.token.to_hex(),
                    at: now,
                },
            );
            sessions.insert(Arc::clone(&conn.client_id), Box::new(session));
            return Ok(Opened {
                first_message,
                resumed: false,
                replaced: None,
                lsn,
            });
        };
        let token_ok = request
            .resume_token
            .as_deref()
            .is_some_and(|t| session.token.matches(t));
        if !token_ok {
            return Err(WireError::new(
                "invalid_resume_token",
                "this client_id has a session; resuming it needs its resume_token",
            ));
        }
        let bad_seq = |current: u64| {
            WireError::new(
                "invalid_last_seq",
                format!("last_seq must be a non-negative integer no larger than current_seq ({current})"),
            )
        };
        let last_seq = match request.last_seq {
            None => None,
            Some(raw) => Some(parse_seq(&raw).ok_or_else(|| bad_seq(session.current_seq()))?),
        };
        let (replaced, resumed) = session
            .resume(Arc::clone(conn), last_seq, now)
            .map_err(bad_seq)?;
        let lsn = self.journal(
            record::kind::RESUMED,
            &record::Resumed {
                client_id: conn.client_id.to_string(),
                last_seq: resumed.last_seq,
                at: now,
            },
        );
        let first_message = self.announcement.reconnection_sync(&SyncSummary {
            client_id: &session.client_id,
            client_type: session.client_type,
            last_seq: resumed.last_seq,
            current_seq: resumed.current_seq,
            missed_events: resumed.missed_events,
            disconnected_ms: resumed.disconnected_ms,
            reconnect_count: resumed.reconnect_count,
            preferences: &session.preferences,
        });
        Ok(Opened {
            first_message,
            resumed: true,
            replaced,
            lsn,
        })
    }

    /// Marks `conn`'s session disconnected if `conn` is still its connection.
    pub(crate) fn disconnect(&self, conn: &Conn, now: u64) -> bool {
        let mut sessions = self.lock();
        let Some(session) = sessions.get_mut(&conn.client_id) else {
            return false;
        };
        let done = session.disconnect(conn, now);
        if done {
            self.journal_disconnect(session, now);
        }
        done
    }

    fn journal_disconnect(&self, session: &Session, at: u64) {
        let record = record::Disconnected {
            client_id: session.client_id.to_string(),
            at,
            written_seq: Some(session.written_seq()),
        };
        self.journal(record::kind::DISCONNECTED, &record);
    }

    /// Acknowledges up to `seq` and records it if that released anything.
    fn ack_session(&self, session: &mut Session, seq: u64) -> Result<Released, u64> {
        let before = session.acked_seq();
        let released = session.ack(seq)?;
        if session.acked_seq() > before {
            let record = record::Acked {
                client_id: session.client_id.to_string(),
                seq,
            };
            self.journal(record::kind::ACKED, &record);
        }
        Ok(released)
    }

    /// Handles `{"type":"ack","seq":N}`.
    ///
    /// # Errors
    /// `invalid_ack` when `seq` is above `current_seq`; nothing is acknowledged.
    pub(crate) fn ack(&self, conn: &Conn, seq: u64) -> Result<(), WireError> {
        // The released events are dropped here, after the lock.
        let released = self.with_attached(conn, |s| self.ack_session(s, seq));
        released
            .unwrap_or(Ok(Vec::new()))
            .map(drop)
            .map_err(invalid_ack)
    }

    /// Handles a heartbeat: records it, acknowledges `last_seq` if given,
    /// and returns the `heartbeat_ack` plus an `invalid_ack` error if any.
    pub(crate) fn heartbeat(
        &self,
        conn: &Conn,
        last_seq: Option<u64>,
        now: u64,
    ) -> (String, Option<WireError>) {
        let answered = self.with_attached(conn, |s| {
            s.last_heartbeat = Some(now);
            let acked = last_seq.map(|seq| self.ack_session(s, seq));
            (heartbeat_ack(now, s.current_seq()), acked)
        });
        // The released events are dropped here, after the lock.
        match answered {
            Some((reply, Some(Err(current)))) => (reply, Some(invalid_ack(current))),
            Some((reply, _)) => (reply, None),
            // A connection just taken over (its close is on the way) still
            // hears its session's seq; it records and acknowledges nothing.
            None => {
                let current = self
                    .lock()
                    .get(&conn.client_id)
                    .map_or(0, |s| s.current_seq());
                (heartbeat_ack(now, current), None)
            }
        }
    }

    /// Handles `update_preferences`: applies them and returns the answer,
    /// which must wait until the change is durable.
    ///
    /// # Errors
    /// `invalid_preferences`, and the preferences stay as they were.
    pub(crate) fn update_preferences(
        &self,
        conn: &Conn,
        data: &Value,
    ) -> Result<PreferencesChange, WireError> {
        self.with_attached(conn, |s| {
            let next = s
                .preferences
                .updated(data)
                .map_err(|why| WireError::new("invalid_preferences", why))?;
            let previous = s.preferences.clone();
            let lsn = self.set_preferences(s, next);
            Ok(PreferencesChange {
                reply: preferences_updated(&s.preferences),
                lsn,
                previous,
            })
        })
        .unwrap_or_else(|| Err(WireError::new("invalid_preferences", "the session is gone")))
    }

    /// Puts back the preferences an update replaced, if `conn` still owns
    /// the session.
    pub(crate) fn restore_preferences(&self, conn: &Conn, previous: Preferences) {
        self.with_attached(conn, |s| self.set_preferences(s, previous));
    }

    fn set_preferences(&self, session: &mut Session, preferences: Preferences) -> u64 {
        let record = record::PreferencesSet {
            client_id: session.client_id.to_string(),
            preferences: preferences.clone(),
        };
        let lsn = self.journal(record::kind::PREFERENCES, &record);
        session.set_preferences(preferences);
        lsn
    }

    /// Assigns seqs to `events` in every matching session (or the targeted
    /// ones), retains them, and says which connections to wake, each once
    /// per `publish_id` (unique to the call). With a store, `records` holds
    /// each event's framed record, appended here in fan-out order.
    pub(crate) fn publish(
        &self,
        publish_id: u64,
        events: &[PublishedEvent],
        records: &[Vec<u8>],
    ) -> Fanout {
        let mut out = Fanout::default();
        // Woken in priority order: high, medium, low.
        let mut wake: [Vec<Arc<Conn>>; 3] = Default::default();
        let mut sessions = self.lock();
        // Each connection is listed once, however many events it gets: its
        // mark says which call listed it last.
        for (i, (event, targets)) in events.iter().enumerate() {
            if let (Some(store), Some(record)) = (self.store.get(), records.get(i)) {
                store.append(record, Some(event.id));
            }
            let (matched, dropped) = fan_out(
                &mut sessions,
                event,
                targets.as_deref(),
                self.max_retained,
                |s| {
                    let Some(conn) = &s.conn else { return };
                    // A queued connection's writer clears the flag before
                    // it takes what is due, under this lock: it will take
                    // this event too. Under a steady stream most are
                    // queued, and waking them again costs the most here.
                    if conn.queued.load(Ordering::Acquire) {
                        return;
                    }
                    if conn.fanout_mark.swap(publish_id, Ordering::Relaxed) == publish_id {
                        return;
                    }
                    let rank = match s.preferences.priority {
                        Priority::High | Priority::Critical => 0,
                        Priority::Medium => 1,
                        Priority::Low => 2,
                    };
                    wake[rank].push(Arc::clone(conn));
                },
            );
            out.matched.push(matched);
            out.dropped += dropped;
        }
        drop(sessions);
        out.wake = wake.into_iter().flatten().collect();
        out
    }

    /// The events due on `conn` now (see [`Session::take_due`]), or `None`
    /// if `conn` is no longer its session's connection.
    pub(crate) fn take_due(
        &self,
        conn: &Conn,
        now: Instant,
        max_events: usize,
        durable_id: u64,
    ) -> Option<Taken> {
        self.with_attached(conn, |s| {
            let due = s.take_due(now, max_events, durable_id);
            Taken {
                due,
                still_replaying: s.is_replaying(),
            }
        })
    }

    /// Removes sessions disconnected since before `cutoff` and releases
    /// events published before it (both Unix ms). Once everything has
    /// expired the table's memory is given back too.
    pub fn expire(&self, cutoff: u64) -> Expired {
        let mut expired = Expired::default();
        // Both are dropped after the lock (see `Released`).
        let mut released = Vec::new();
        let removed: Vec<Box<Session>> = {
            let mut sessions = self.lock();
            let gone: Vec<Arc<str>> = sessions
                .iter()
                .filter(|(_, s)| {
                    !s.is_connected() && s.disconnected_at.is_some_and(|at| at < cutoff)
                })
                .map(|(id, _)| Arc::clone(id))
                .collect();
            let removed = gone.iter().filter_map(|id| sessions.remove(id)).collect();
            for s in sessions.values_mut() {
                let (events, dropped) = s.expire(cutoff, &mut released);
                expired.events += events;
                expired.dropped += dropped;
            }
            if sessions.capacity() > 64 && sessions.len() < sessions.capacity() / 4 {
                sessions.shrink_to_fit();
            }
            removed
        };
        expired.sessions = removed.len();
        expired
    }

    /// Forgets a session. Returns `None` if unknown, else its connection
    /// (to be closed with 4002) if it had one.
    pub(crate) fn remove(&self, client_id: &str) -> Option<Option<Arc<Conn>>> {
        let mut sessions = self.lock();
        let session = sessions.remove(client_id)?;
        self.journal_deleted(client_id);
        Some(session.conn)
    }

    /// Forgets the session `conn` just created, if `conn` still owns it:
    /// its creation could not be made durable, so its token is never sent.
    pub(crate) fn discard_new(&self, conn: &Conn) {
        let mut sessions = self.lock();
        if sessions
            .get(&conn.client_id)
            .is_some_and(|s| s.is_attached(conn))
        {
            sessions.remove(&conn.client_id);
            self.journal_deleted(&conn.client_id);
        }
    }

    fn journal_deleted(&self, client_id: &str) {
        let record = record::Deleted {
            client_id: client_id.to_string(),
        };
        self.journal(record::kind::DELETED, &record);
    }

    /// Detaches a session's connection, keeping the session. Returns `None`
    /// if unknown, else the detached connection (to be cut) if it had one.
    pub(crate) fn detach(&self, client_id: &str, now: u64) -> Option<Option<Arc<Conn>>> {
        let mut sessions = self.lock();
        let session = sessions.get_mut(client_id)?;
        let conn = session.conn.clone();
        if let Some(conn) = &conn {
            session.disconnect(conn, now);
            self.journal_disconnect(session, now);
        }
        Some(conn)
    }

    /// Records a heartbeat from the admin API. `None` if unknown.
    pub(crate) fn record_heartbeat(&self, client_id: &str, now: u64) -> Option<u64> {
        let mut sessions = self.lock();
        let session = sessions.get_mut(client_id)?;
        session.last_heartbeat = Some(now);
        Some(now)
    }

    /// The live connections.
    pub(crate) fn connections(&self) -> Vec<Arc<Conn>> {
        self.lock()
            .values()
            .filter_map(|s| s.conn.clone())
            .collect()
    }

    /// How many sessions exist and how many are connected.
    pub fn counts(&self) -> Counts {
        let sessions = self.lock();
        Counts {
            total: sessions.len(),
            connected: sessions.values().filter(|s| s.is_connected()).count(),
        }
    }

    /// The admin API's listing: `{"sessions":[...],"total":..,"connected":..,
    /// "disconnected":..}`, sessions sorted by `client_id`.
    pub fn list_json(&self, filter: SessionFilter) -> String {
        #[derive(Serialize)]
        struct Listing<'a> {
            sessions: Vec<SessionView<'a>>,
            total: usize,
            connected: usize,
            disconnected: usize,
        }
        let sessions = self.lock();
        let mut picked: Vec<&Session> = sessions
            .values()
            .map(|s| &**s)
            .filter(|s| filter.connected.is_none_or(|c| c == s.is_connected()))
            .filter(|s| filter.client_type.is_none_or(|t| t == s.client_type))
            .collect();
        picked.sort_unstable_by(|a, b| a.client_id.cmp(&b.client_id));
        let connected = picked.iter().filter(|s| s.is_connected()).count();
        let listing = Listing {
            total: picked.len(),
            connected,
            disconnected: picked.len() - connected,
            sessions: picked.iter().map(|s| s.view()).collect(),
        };
        serde_json::to_string(&listing).expect("sessions serialise")
    }

    /// One `<session>` object, as JSON.
    pub fn get_json(&self, client_id: &str) -> Option<String> {
        let sessions = self.lock();
        let session = sessions.get(client_id)?;
        Some(serde_json::to_string(&session.view()).expect("sessions serialise"))
    }
}

/// An event to fan out, with its `targets`.
pub(crate) type PublishedEvent = (Arc<Event>, Option<Vec<String>>);

/// Tracks `event` in every matching session (or the targeted ones), calling
/// `on_match` for each. Returns how many matched and how many events that
/// released were dropped. Publishing and recovery share it, so a replayed
/// log assigns exactly the seqs the live server did.
fn fan_out(
    sessions: &mut Sessions,
    event: &Arc<Event>,
    targets: Option<&[String]>,
    max_retained: usize,
    mut on_match: impl FnMut(&Session),
) -> (usize, u64) {
    let (mut matched, mut dropped) = (0, 0);
    let mut track = |s: &mut Session| {
        if !s.preferences.matches(event.event_type(), event.priority) {
            return;
        }
        matched += 1;
        if s.track(Arc::clone(event), max_retained) {
            dropped += 1;
        }
        on_match(s);
    };
    match targets {
        None => sessions.values_mut().for_each(|s| track(s)),
        Some(ids) => {
            let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                if let Some(s) = sessions.get_mut(id) {
                    track(s);
                }
            }
        }
    }
    (matched, dropped)
}

fn invalid_ack(current_seq: u64) -> WireError {
    WireError::new(
        "invalid_ack",
        format!("cannot acknowledge beyond current_seq ({current_seq})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::event::{parse_publish_body, LiveEvents};
    use serde_json::json;

    fn table() -> SessionTable {
        SessionTable::new(100, Announcement::new(&Config::default()))
    }

    /// Opens a session on a test connection; the client's end of the socket
    /// goes to `clients` so it stays open for the test.
    fn open(
        table: &SessionTable,
        clients: &mut Vec<std::net::TcpStream>,
        id: u64,
        client_id: &str,
    ) -> Arc<Conn> {
        let (conn, client) = Conn::for_test(id, client_id);
        clients.push(client);
        let request = OpenRequest {
            client_type: ClientType::Cli,
            resume_token: None,
            last_seq: None,
        };
        table.open(&conn, request, 0).unwrap();
        conn
    }

    fn event(body: &str, id: u64) -> (Arc<Event>, Option<Vec<String>>) {
        let live = Arc::new(LiveEvents::default());
        let new = parse_publish_body(body).unwrap().remove(0);
        (Arc::new(Event::new(id, 0, &new, &live)), new.targets)
    }

    #[test]
    fn fan_out_wakes_high_priority_sessions_first() {
        let table = table();
        let mut clients = Vec::new();
        let mut expected = Vec::new();
        // Opened in an order unrelated to their priorities.
        for (i, priority) in ["low", "high", "medium", "low", "high", "medium"]
            .iter()
            .enumerate()
        {
            let conn = open(&table, &mut clients, i as u64, &format!("s{i}"));
            table
                .update_preferences(&conn, &json!({ "priority": priority }))
                .unwrap();
            expected.push((*priority, conn.id));
        }
        let rank = |p: &str| {
            ["high", "medium", "low"]
                .iter()
                .position(|q| *q == p)
                .unwrap()
        };
        let fanout = table.publish(1, &[event(r#"{"event_type":"x"}"#, 1)], &[]);
        let woken: Vec<usize> = fanout
            .wake
            .iter()
            .map(|c| rank(expected.iter().find(|(_, id)| *id == c.id).unwrap().0))
            .collect();
        assert_eq!(woken.len(), 6);
        assert!(
            woken.windows(2).all(|w| w[0] <= w[1]),
            "woken by rank {woken:?}"
        );
        assert_eq!(fanout.matched, vec![6]);
    }

    #[test]
    fn a_queued_connection_is_not_woken_again_and_still_gets_the_event() {
        let table = table();
        let mut clients = Vec::new();
        let idle = open(&table, &mut clients, 1, "idle");
        let queued = open(&table, &mut clients, 2, "queued");
        queued.queued.store(true, Ordering::Release);
        let fanout = table.publish(1, &[event(r#"{"event_type":"x"}"#, 1)], &[]);
        let woken: Vec<u64> = fanout.wake.iter().map(|c| c.id).collect();
        assert_eq!(woken, vec![idle.id]);
        assert_eq!(fanout.matched, vec![2]);
        let taken = table
            .take_due(&queued, Instant::now(), 512, u64::MAX)
            .expect("attached");
        let seqs: Vec<u64> = taken.due.items.iter().map(|i| i.0).collect();
        assert_eq!(seqs, vec![1]);
    }

    #[test]
    fn a_connection_taken_over_hears_its_sessions_seq_and_records_nothing() {
        let table = table();
        let mut clients = Vec::new();
        let mut connect = |id: u64, resume_token: Option<String>| {
            let (conn, client) = Conn::for_test(id, "t");
            clients.push(client);
            let request = OpenRequest {
                client_type: ClientType::Cli,
                resume_token,
                last_seq: None,
            };
            let opened = table.open(&conn, request, 0).unwrap();
            (conn, opened.first_message)
        };
        let (old, first) = connect(1, None);
        let first: Value = serde_json::from_str(&first).unwrap();
        let token = first["data"]["resume_token"].as_str().unwrap().to_string();
        table.publish(1, &[event(r#"{"event_type":"x"}"#, 1)], &[]);
        connect(2, Some(token));
        let (reply, error) = table.heartbeat(&old, Some(1), 5);
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["current_seq"], 1, "{reply}");
        assert!(error.is_none());
        let session: Value = serde_json::from_str(&table.get_json("t").unwrap()).unwrap();
        assert_eq!(session["last_heartbeat"], Value::Null, "{session}");
    }

    #[test]
    fn filtered_events_take_no_seq() {
        let table = table();
        let mut clients = Vec::new();
        let conn = open(&table, &mut clients, 1, "f");
        table
            .update_preferences(
                &conn,
                &json!({"event_types": ["build.*", "deploy"], "min_event_priority": "medium"}),
            )
            .unwrap();
        let events = [
            event(r#"{"event_type":"build.done"}"#, 1),
            event(r#"{"event_type":"build"}"#, 2),
            event(r#"{"event_type":"deploy","priority":"low"}"#, 3),
            event(r#"{"event_type":"deploy","priority":"critical"}"#, 4),
            event(r#"{"event_type":"other"}"#, 5),
        ];
        let fanout = table.publish(1, &events, &[]);
        assert_eq!(fanout.matched, vec![1, 0, 0, 1, 0]);
        let session: Value = serde_json::from_str(&table.get_json("f").unwrap()).unwrap();
        assert_eq!(session["current_seq"], 2);
    }
}
