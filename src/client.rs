//! A synchronous tether client: it connects, receives events, acknowledges
//! them, sends heartbeats at the interval the server announces, and when the
//! connection drops it resumes its session the way contract section 8 says,
//! so the application sees every event exactly once and in seq order.
//!
//! ```no_run
//! use tether::client::{Client, ClientConfig, Received};
//!
//! let mut client = Client::new(ClientConfig {
//!     state_file: Some("demo.state".into()),
//!     ..ClientConfig::new("ws://127.0.0.1:8765/ws")
//! })?;
//! loop {
//!     match client.recv()? {
//!         Received::Event(event) => println!("{}", event.to_json()),
//!         Received::Gap(gap) => eprintln!("{gap}"),
//!         Received::Notice(notice) => eprintln!("{notice}"),
//!     }
//! }
//! # Ok::<(), tether::client::ClientError>(())
//! ```
//!
//! # How it works
//!
//! Everything happens on the caller's thread, inside [`Client::recv`]: one
//! blocking socket whose read timeout is set to the next thing due (a
//! heartbeat, an acknowledgement, the caller's deadline). There is no
//! background thread, so nothing happens between two calls; an application
//! that may sit for longer than the heartbeat interval between calls should
//! use [`Client::recv_timeout`] in its loop.
//!
//! # What counts as processed
//!
//! An item returned by `recv` is *processed* when the application calls
//! `recv` (or `recv_timeout`, or [`Client::close`]) again. Only processed
//! seqs are written to the state file, sent as `last_seq` on a resume, and
//! acknowledged to the server; the state file is written before any
//! acknowledgement, so the server never releases an event the file does not
//! record as processed. Acknowledgements go out every [`ClientConfig::ack_every`]
//! events, after [`ClientConfig::ack_delay`] of quiet, and with every heartbeat.
//!
//! # Exactly once, in order
//!
//! The client remembers the highest seq it has handed over. An event at or
//! below it (a replay of something already delivered) is dropped silently;
//! an event above the next expected seq means events were lost, and the
//! client returns a [`Received::Gap`] naming the missing seqs before the
//! event. A `reconnection_sync` with `gap: true` is reported the same way.
//! A resume answered with a new session (`session_restored: false`) is
//! reported as [`Notice::HistoryLost`]: whatever was published while the
//! client was away is gone.
//!
//! # Reconnecting
//!
//! The delays come from the server's announced `reconnection` block (or the
//! contract's defaults before the first connection), unless the caller set
//! [`ClientConfig::strategy`] or [`ClientConfig::max_retry_attempts`]; see
//! [`crate::backoff`] for the arithmetic and the jitter. The first connection
//! is not a retry: if it fails, the retries follow as after a lost
//! connection. After `max_retry_attempts` failed retries in a row, `recv`
//! returns [`ClientError::GaveUp`]. Close code 4000 (another connection took
//! the session over) and a refused resume stop the client instead of
//! retrying; 1001 (server shutting down) and every other loss are retried.

use std::collections::VecDeque;
use std::fmt;
use std::io::ErrorKind;
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Error as WsError, Message};

use crate::backoff::Backoff;
pub use crate::client_config::ClientConfig;
use crate::client_connection::{
    describe_close, heartbeat_settings, open, AttemptError, Connection, First,
};
pub use crate::client_error::{ClientError, ClientResult};
pub use crate::client_events::{Event, Gap, Notice, Received, Stats};
pub use crate::state_file::ResumeState;
use crate::state_file::StateFile;

/// Close code a newer connection's take-over sends to the older one.
const CLOSE_TAKEN_OVER: u16 = 4000;

/// How long [`Client::close`] waits for the server's close reply.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

enum Link {
    Up(Box<Connection>),
    /// The next attempt is due at this instant.
    Waiting(Instant),
    /// No automatic attempt: manual strategy, gave up, refused, taken over.
    Idle,
}

/// The session the client holds.
struct Session {
    client_id: String,
    resume_token: String,
}

/// A tether client. See the module documentation.
pub struct Client {
    config: ClientConfig,
    state_file: Option<StateFile>,
    session: Option<Session>,
    /// The last processed seq.
    processed: u64,
    /// The highest seq queued or handed over: anything at or below is a duplicate.
    delivered: u64,
    /// The highest seq acknowledged to the server on this connection.
    acked: u64,
    ack_due: Option<Instant>,
    /// The seq that becomes processed when the application comes back.
    handed: Option<u64>,
    queue: VecDeque<Received>,
    /// An error to return once the queue is drained.
    pending_error: Option<ClientError>,
    backoff: Backoff,
    link: Link,
    /// Failed retries in a row.
    failures: u32,
    /// Whether any attempt was made yet.
    attempted: bool,
    preferences_sent: bool,
    /// The server's `retry_after_ms` from its shutdown close frame: the
    /// next attempt waits at least this long.
    retry_after: Option<Duration>,
    stats: Stats,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.config.url)
            .field("client_id", &self.session.as_ref().map(|s| &s.client_id))
            .field("processed", &self.processed)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `config`. It reads the state file, if any, but does not
    /// connect yet: the first [`Client::recv`] does.
    ///
    /// # Errors
    /// [`ClientError::Config`] for a bad setting or a state file that
    /// belongs to another `client_id`; [`ClientError::StateFile`] for an
    /// unreadable state file.
    pub fn new(config: ClientConfig) -> ClientResult<Client> {
        config.validate()?;
        let state_file = config.state_file.clone().map(StateFile::new);
        let stored = match &state_file {
            Some(file) => file.load()?,
            None => None,
        };
        let resume = stored.or_else(|| config.resume.clone());
        if let (Some(resume), Some(id)) = (&resume, &config.client_id) {
            if &resume.client_id != id {
                return Err(ClientError::Config(format!(
                    "the resume state is for client {:?}, not {id:?}",
                    resume.client_id
                )));
            }
        }
        let mut backoff = Backoff::default();
        apply_overrides(&mut backoff, &config);
        let processed = resume.as_ref().map_or(0, |r| r.last_seq);
        Ok(Client {
            session: resume.map(|r| Session {
                client_id: r.client_id,
                resume_token: r.resume_token,
            }),
            processed,
            delivered: processed,
            acked: processed,
            ack_due: None,
            handed: None,
            queue: VecDeque::new(),
            pending_error: None,
            backoff,
            link: Link::Waiting(Instant::now()),
            failures: 0,
            attempted: false,
            preferences_sent: false,
            retry_after: None,
            stats: Stats::default(),
            state_file,
            config,
        })
    }

    /// The next event, gap or notice, connecting or reconnecting as needed.
    /// Calling it again marks the item it returned last as processed.
    ///
    /// # Errors
    /// [`ClientError::GaveUp`], [`ClientError::Disconnected`] (manual
    /// strategy), [`ClientError::TakenOver`], [`ClientError::Refused`], or
    /// [`ClientError::StateFile`] when the state cannot be written. After
    /// any of them the client stays disconnected until
    /// [`Client::reconnect`]; until then `recv` returns `Disconnected`.
    pub fn recv(&mut self) -> ClientResult<Received> {
        loop {
            if let Some(item) = self.next(None)? {
                return Ok(item);
            }
        }
    }

    /// Like [`Client::recv`], but returns `Ok(None)` once `timeout` has
    /// passed with nothing to hand over (a wait for a retry included).
    ///
    /// # Errors
    /// As [`Client::recv`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> ClientResult<Option<Received>> {
        self.next(Some(Instant::now() + timeout))
    }

    /// Makes the next `recv` try to connect at once, with the count of
    /// failed attempts reset: after [`ClientError::Disconnected`] (manual
    /// strategy) or [`ClientError::GaveUp`]. Does nothing while connected.
    pub fn reconnect(&mut self) {
        if !self.is_connected() {
            self.failures = 0;
            self.pending_error = None;
            self.link = Link::Waiting(Instant::now());
        }
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up(_))
    }

    /// The session and the last processed seq, for an application that
    /// keeps them itself. Contains the resume token: never log it.
    pub fn resume_state(&self) -> Option<ResumeState> {
        self.session.as_ref().map(|s| ResumeState {
            client_id: s.client_id.clone(),
            resume_token: s.resume_token.clone(),
            last_seq: self.processed,
        })
    }

    /// Counters since this client was created.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Marks the item returned last as processed, acknowledges everything
    /// processed and closes the connection with a close handshake (1000).
    /// The session stays on the server, ready to be resumed.
    ///
    /// # Errors
    /// [`ClientError::StateFile`] if the final state cannot be written.
    pub fn close(mut self) -> ClientResult<()> {
        let saved = self.finish_handed();
        if let Link::Up(mut conn) = std::mem::replace(&mut self.link, Link::Idle) {
            if self.processed > self.acked {
                let _ = conn.ws.send(Message::text(ack_message(self.processed)));
            }
            let _ = conn.ws.close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "client closing".into(),
            }));
            // Wait briefly for the server's close reply, so the session is
            // detached cleanly; events still arriving are left for a resume.
            let deadline = Instant::now() + CLOSE_WAIT;
            let _ = conn.ws.get_ref().set_read_timeout(Some(CLOSE_WAIT));
            while conn.ws.read().is_ok() && Instant::now() < deadline {}
        }
        saved
    }

    /// One step: an item, `None` at the deadline, or an error.
    fn next(&mut self, deadline: Option<Instant>) -> ClientResult<Option<Received>> {
        self.finish_handed()?;
        loop {
            if let Some(item) = self.queue.pop_front() {
                self.handed = item.seq();
                return Ok(Some(item));
            }
            if let Some(err) = self.pending_error.take() {
                return Err(err);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            match &self.link {
                Link::Idle => return Err(ClientError::Disconnected),
                Link::Waiting(at) if now < *at => {
                    let until = deadline.map_or(*at, |d| d.min(*at));
                    thread::sleep(until.saturating_duration_since(now));
                }
                Link::Waiting(_) => self.attempt(),
                Link::Up(_) => self.step(deadline),
            }
        }
    }

    /// The application came back: the item it had is processed.
    fn finish_handed(&mut self) -> ClientResult<()> {
        let Some(seq) = self.handed.take() else {
            return Ok(());
        };
        if seq <= self.processed {
            return Ok(());
        }
        self.processed = seq;
        self.save_state()?;
        if self.ack_due.is_none() {
            self.ack_due = Some(Instant::now() + self.config.ack_delay);
        }
        Ok(())
    }

    fn save_state(&mut self) -> ClientResult<()> {
        let Some(state) = self.resume_state() else {
            return Ok(());
        };
        let Some(file) = &mut self.state_file else {
            return Ok(());
        };
        let saved = file.save(&state);
        if saved.is_err() {
            // Going on would acknowledge events the file does not record.
            self.link = Link::Idle;
        }
        saved
    }

    /// Makes one connection attempt.
    fn attempt(&mut self) {
        match open(&self.connect_url(), self.config.connect_timeout) {
            Ok((conn, first)) => {
                self.failures = 0;
                self.attempted = true;
                self.stats.connections += 1;
                self.link = Link::Up(conn);
                if let Err(err) = self.on_first_message(first) {
                    self.pending_error = Some(err);
                }
            }
            Err(AttemptError::Fatal(err)) => {
                self.link = Link::Idle;
                self.pending_error = Some(err);
            }
            Err(AttemptError::Failed(reason)) => {
                // The very first attempt is not a retry (module docs).
                if self.attempted {
                    self.failures += 1;
                }
                self.attempted = true;
                self.schedule_retry(reason);
            }
        }
    }

    /// Plans the next attempt after a loss or a failed attempt, or gives up.
    fn schedule_retry(&mut self, reason: String) {
        if self.failures >= self.backoff.max_retry_attempts {
            self.link = Link::Idle;
            self.pending_error = Some(ClientError::GaveUp {
                attempts: self.failures,
                last_error: reason,
            });
            return;
        }
        let attempt = self.failures + 1;
        let hint = self.retry_after.take();
        match self.backoff.delay_with_jitter(attempt) {
            Some(delay) => {
                let delay = hint.map_or(delay, |h| h.max(delay));
                self.link = Link::Waiting(Instant::now() + delay);
                self.queue
                    .push_back(Received::Notice(Notice::Retrying { attempt, delay }));
            }
            None => {
                self.link = Link::Idle;
                self.pending_error = Some(ClientError::Disconnected);
            }
        }
    }

    /// The connection is gone: forget what was not handed over (the server
    /// replays it), tell the application, plan the next attempt.
    fn lost(&mut self, reason: String) {
        self.link = Link::Idle;
        self.queue
            .retain(|item| matches!(item, Received::Notice(_)));
        self.delivered = self.processed;
        self.ack_due = None;
        self.queue.push_back(Received::Notice(Notice::Disconnected {
            reason: reason.clone(),
        }));
        self.schedule_retry(reason);
    }

    /// The URL with the query this connection needs.
    fn connect_url(&self) -> String {
        let mut query = Vec::new();
        if let Some(session) = &self.session {
            query.push(format!("client_id={}", session.client_id));
            query.push(format!("resume_token={}", session.resume_token));
            query.push(format!("last_seq={}", self.processed));
        } else if let Some(id) = &self.config.client_id {
            query.push(format!("client_id={id}"));
        }
        if let Some(t) = self.config.client_type {
            query.push(format!("client_type={t}"));
        }
        if query.is_empty() {
            self.config.url.clone()
        } else {
            format!("{}?{}", self.config.url, query.join("&"))
        }
    }

    /// Takes in `connection_established` or `reconnection_sync`.
    fn on_first_message(&mut self, first: First) -> ClientResult<()> {
        let (data, new_session) = match first {
            First::Established(data) => (data, true),
            First::Sync(data) => (data, false),
        };
        self.backoff = self.backoff.updated_from(&data["reconnection"]);
        apply_overrides(&mut self.backoff, &self.config);
        if let Link::Up(conn) = &mut self.link {
            conn.heartbeat = heartbeat_settings(&data["heartbeat"]);
            if let Some(hb) = conn.heartbeat {
                conn.next_heartbeat = Instant::now() + hb.interval;
            }
        }
        let client_id = data["client_id"].as_str().unwrap_or("").to_string();
        self.acked = 0;
        self.ack_due = None;
        if new_session {
            let resume_token = data["resume_token"].as_str().unwrap_or("").to_string();
            if self.session.is_some() {
                self.queue.push_back(Received::Notice(Notice::HistoryLost {
                    client_id: client_id.clone(),
                }));
            }
            self.session = Some(Session {
                client_id: client_id.clone(),
                resume_token,
            });
            self.processed = 0;
            self.delivered = 0;
            // The new token must be on disk before anything else happens.
            self.save_state()?;
            self.queue.push_back(Received::Notice(Notice::Connected {
                client_id,
                client_type: data["client_type"].as_str().unwrap_or("").to_string(),
            }));
            self.send_preferences(true);
        } else {
            self.stats.resumes += 1;
            let last_seq = data["last_seq"].as_u64().unwrap_or(self.processed);
            self.acked = last_seq;
            self.delivered = self.processed.max(last_seq);
            self.queue.push_back(Received::Notice(Notice::Resumed {
                client_id,
                missed_events: data["missed_events"].as_u64().unwrap_or(0),
                reconnect_count: data["reconnect_count"].as_u64().unwrap_or(0),
            }));
            let dropped = data["dropped_events"].as_u64().unwrap_or(0);
            if data["gap"] == true && dropped > 0 {
                self.push_gap(last_seq + 1, last_seq + dropped);
            }
            self.send_preferences(false);
        }
        Ok(())
    }

    fn send_preferences(&mut self, new_session: bool) {
        let Some(preferences) = &self.config.preferences else {
            return;
        };
        if self.preferences_sent && !new_session {
            return;
        }
        let message = json!({"type": "update_preferences", "data": preferences}).to_string();
        if self.send(message) {
            self.preferences_sent = true;
        }
    }

    fn push_gap(&mut self, first_seq: u64, last_seq: u64) {
        self.stats.gaps += 1;
        self.queue.push_back(Received::Gap(Gap {
            first_seq,
            last_seq,
        }));
        self.delivered = last_seq;
    }

    /// Sends what is due, then reads one message (or times out).
    fn step(&mut self, deadline: Option<Instant>) {
        let now = Instant::now();
        let Link::Up(conn) = &mut self.link else {
            return;
        };
        let mut wake = deadline;
        let mut heartbeat_due = false;
        let mut silent_for = None;
        if let Some(hb) = conn.heartbeat {
            if now.duration_since(conn.last_received) > hb.timeout {
                silent_for = Some(hb.timeout);
            } else if now >= conn.next_heartbeat {
                conn.next_heartbeat = now + hb.interval;
                heartbeat_due = true;
            }
            wake = earliest(wake, conn.last_received + hb.timeout);
            wake = earliest(wake, conn.next_heartbeat);
        }
        if let Some(timeout) = silent_for {
            let ms = timeout.as_millis();
            self.lost(format!("nothing from the server for {ms} ms"));
            return;
        }
        if heartbeat_due {
            let text = json!({"type": "heartbeat", "last_seq": self.processed}).to_string();
            if self.send(text) {
                self.acked = self.processed;
                self.ack_due = None;
            }
            return;
        }
        if self.processed > self.acked {
            let due = self.ack_due.unwrap_or(now);
            if self.processed - self.acked >= self.config.ack_every || now >= due {
                if self.send(ack_message(self.processed)) {
                    self.acked = self.processed;
                    self.ack_due = None;
                }
                return;
            }
            wake = earliest(wake, due);
        }
        self.read_one(wake);
    }

    /// Reads one message, waiting at most until `wake`.
    fn read_one(&mut self, wake: Option<Instant>) {
        let Link::Up(conn) = &mut self.link else {
            return;
        };
        let timeout = wake.map(|w| {
            w.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        let read = match conn.ws.get_ref().set_read_timeout(timeout) {
            Ok(()) => conn.ws.read(),
            Err(e) => Err(WsError::Io(e)),
        };
        if read.is_ok() {
            conn.last_received = Instant::now();
        }
        match read {
            Ok(Message::Text(text)) => self.on_message(text.as_str()),
            Ok(Message::Close(frame)) => self.on_close(frame.as_ref()),
            Ok(_) => {}
            // A timeout, or a signal for the application: nothing was lost,
            // tungstenite keeps any partial frame for the next read.
            Err(WsError::Io(e))
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => self.lost(format!("connection lost: {e}")),
        }
    }

    fn on_close(&mut self, frame: Option<&CloseFrame>) {
        if frame.is_some_and(|f| u16::from(f.code) == CLOSE_TAKEN_OVER) {
            self.link = Link::Idle;
            self.queue
                .retain(|item| matches!(item, Received::Notice(_)));
            self.delivered = self.processed;
            self.pending_error = Some(ClientError::TakenOver);
            return;
        }
        // A server going away (1001) says when to come back; its spread
        // keeps a thousand clients from returning in the same instant.
        self.retry_after = frame
            .filter(|f| u16::from(f.code) == 1001)
            .and_then(|f| serde_json::from_str::<Value>(&f.reason).ok())
            .and_then(|reason| reason["retry_after_ms"].as_u64())
            .map(Duration::from_millis);
        self.lost(format!("closed by the server ({})", describe_close(frame)));
    }

    /// Handles a message after the first.
    fn on_message(&mut self, text: &str) {
        #[derive(Deserialize)]
        struct Kind<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
        }
        #[derive(Deserialize)]
        struct Batch {
            events: Vec<Event>,
        }
        #[derive(Deserialize)]
        struct ErrorMessage {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let Ok(Kind { kind }) = serde_json::from_str::<Kind<'_>>(text) else {
            return;
        };
        match kind.as_ref() {
            "event" => match serde_json::from_str::<Event>(text) {
                Ok(event) => self.accept(event),
                Err(e) => self.lost(format!("malformed event from the server: {e}")),
            },
            "event_batch" => match serde_json::from_str::<Batch>(text) {
                Ok(batch) => batch.events.into_iter().for_each(|e| self.accept(e)),
                Err(e) => self.lost(format!("malformed event_batch from the server: {e}")),
            },
            "preferences_updated" => {
                let data = serde_json::from_str::<Value>(text)
                    .map(|mut v| v["data"].take())
                    .unwrap_or(Value::Null);
                self.queue
                    .push_back(Received::Notice(Notice::PreferencesUpdated(data)));
            }
            "error" => {
                if let Ok(ErrorMessage { code, message }) = serde_json::from_str(text) {
                    self.queue
                        .push_back(Received::Notice(Notice::ServerError { code, message }));
                }
            }
            // heartbeat_ack only proves the server is alive.
            _ => {}
        }
    }

    /// Queues an event unless it was handed over already; reports a jump in
    /// seq as a gap first.
    fn accept(&mut self, event: Event) {
        if event.seq <= self.delivered {
            self.stats.duplicates_dropped += 1;
            return;
        }
        if event.seq > self.delivered + 1 {
            self.push_gap(self.delivered + 1, event.seq - 1);
        }
        self.delivered = event.seq;
        self.queue.push_back(Received::Event(event));
    }

    /// Sends one text message; on failure the connection is lost.
    fn send(&mut self, text: String) -> bool {
        let Link::Up(conn) = &mut self.link else {
            return false;
        };
        let sent = conn.ws.send(Message::text(text));
        match sent {
            Ok(()) => true,
            Err(e) => {
                self.lost(format!("connection lost while sending: {e}"));
                false
            }
        }
    }
}

/// The earlier of `a` (if any) and `b`.
fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn apply_overrides(backoff: &mut Backoff, config: &ClientConfig) {
    if let Some(strategy) = config.strategy {
        backoff.strategy = strategy;
    }
    if let Some(max) = config.max_retry_attempts {
        backoff.max_retry_attempts = max;
    }
}

fn ack_message(seq: u64) -> String {
    format!(r#"{{"type":"ack","seq":{seq}}}"#)
}
