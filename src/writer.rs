//! The writer pool: a few threads that write events to every connection,
//! and the timer that retries connections whose socket was full.
//!
//! A connection is queued at most once (its `queued` flag); a pool thread
//! takes it, writes up to [`MAX_EVENTS_PER_TURN`] of its events without ever
//! blocking, and queues it again if more are waiting, so one busy client
//! cannot monopolise a thread. A turn's messages are framed into a buffer the
//! thread lends the connection and leave in one `send`. When a client's
//! socket is full, the rest stays with the connection (the buffer is then
//! its own) and the timer wakes the connection again after a
//! delay that doubles from [`FIRST_RETRY`] up to [`MAX_RETRY`]: a client that
//! stopped reading costs a few cheap attempts a second, and costs the other
//! clients nothing. See `connection.rs` for why there is no writer thread per
//! connection.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use crate::conn_io::ConnIo;
use crate::connection::{close, Conn, Flushed};
use crate::event::Event;
use crate::server::Shared;
use crate::session::{Then, MAX_TURN_BYTES};

/// Events written to one connection before the pool moves to the next one.
/// Each turn costs a session-table lock, a queue round trip and a final
/// partial send, so during a fan-out fewer, longer turns are cheaper; 512
/// events of a few hundred bytes are still only about 0.1 ms of writing.
pub const MAX_EVENTS_PER_TURN: usize = 512;
/// The first retry of a full socket, in microseconds.
const FIRST_RETRY: u32 = 200;
/// The longest delay between retries, in microseconds.
const MAX_RETRY: u32 = 250_000;

/// The handle through which connections are woken for writing.
#[derive(Debug)]
pub(crate) struct Writer {
    work: Sender<Arc<Conn>>,
    later: Sender<Timed>,
    /// The origin of the instants kept in each connection's `timer_at`.
    epoch: Instant,
}

impl Writer {
    /// A writer handle with the queues its pool and timer will drain.
    pub(crate) fn new() -> (Writer, Receiver<Arc<Conn>>, Receiver<Timed>) {
        let (work, work_rx) = crossbeam_channel::unbounded();
        let (later, later_rx) = crossbeam_channel::unbounded();
        let epoch = Instant::now();
        (Writer { work, later, epoch }, work_rx, later_rx)
    }

    /// Queues `conn` for writing unless it is queued already.
    pub(crate) fn wake(&self, conn: &Arc<Conn>) {
        if !conn.queued.swap(true, Ordering::AcqRel) {
            let _ = self.work.send(Arc::clone(conn));
        }
    }

    /// Queues `conn` again after its next backoff delay: its socket was full.
    pub(crate) fn retry(&self, conn: &Arc<Conn>) {
        let previous = conn.retry_us.load(Ordering::Relaxed);
        let delay = if previous == 0 {
            FIRST_RETRY
        } else {
            previous.saturating_mul(2).min(MAX_RETRY)
        };
        conn.retry_us.store(delay, Ordering::Relaxed);
        self.wake_at(
            conn,
            Instant::now() + Duration::from_micros(u64::from(delay)),
        );
    }

    /// Queues `conn` at `at`, unless it is already due to be woken by then:
    /// a connection paced by its rate limit is woken by every new event, and
    /// only the earliest wake-up needs a timer.
    pub(crate) fn wake_at(&self, conn: &Arc<Conn>, at: Instant) {
        // Microseconds since the epoch, plus one so that 0 means "none".
        let mark = at.saturating_duration_since(self.epoch).as_micros() as u64 + 1;
        let mut current = conn.timer_at.load(Ordering::Acquire);
        loop {
            if current != 0 && current <= mark {
                return;
            }
            match conn
                .timer_at
                .compare_exchange(current, mark, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        let _ = self.later.send(Timed {
            at,
            mark,
            conn: Arc::clone(conn),
        });
    }

    /// A timer fired: wakes the connection if this was its earliest timer.
    fn fire(&self, timed: &Timed) {
        let cleared = timed.conn.timer_at.compare_exchange(
            timed.mark,
            0,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if cleared.is_ok() {
            self.wake(&timed.conn);
        }
    }
}

/// A connection to wake at a given instant.
#[derive(Debug)]
pub(crate) struct Timed {
    at: Instant,
    mark: u64,
    conn: Arc<Conn>,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Timed {}

impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timed {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.at.cmp(&other.at)
    }
}

/// A pool thread: serves queued connections until `stop` is dropped.
pub(crate) fn run_pool_thread(shared: Arc<Shared>, work: Receiver<Arc<Conn>>, stop: Receiver<()>) {
    // Each turn's messages are framed into this, then sent in one call.
    let mut buffer = Vec::new();
    loop {
        select! {
            recv(work) -> conn => match conn {
                Ok(conn) => {
                    serve(&shared, &conn, &mut buffer);
                    // A turn is at most MAX_TURN_BYTES, or one event when
                    // that is larger (up to a mebibyte): keep no more than
                    // common turns need.
                    if buffer.capacity() > 2 * MAX_TURN_BYTES {
                        buffer = Vec::new();
                    }
                }
                Err(_) => return,
            },
            recv(stop) -> _ => return,
        }
    }
}

/// The timer thread: wakes connections when their time comes.
pub(crate) fn run_timer(shared: Arc<Shared>, later: Receiver<Timed>, stop: Receiver<()>) {
    let mut due: BinaryHeap<Reverse<Timed>> = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while due.peek().is_some_and(|t| t.0.at <= now) {
            let Reverse(timed) = due.pop().expect("peeked");
            shared.writer.fire(&timed);
        }
        // With nothing due, sleep until told otherwise; a new entry or the
        // stop signal ends the wait.
        let wait = due.peek().map_or(Duration::from_secs(3600), |t| {
            t.0.at.saturating_duration_since(now)
        });
        select! {
            recv(later) -> timed => match timed {
                Ok(timed) => due.push(Reverse(timed)),
                Err(_) => return,
            },
            recv(stop) -> _ => return,
            default(wait) => {}
        }
    }
}

/// Writes what `conn` has due, without blocking, framing it into `buffer`.
fn serve(shared: &Shared, conn: &Arc<Conn>, buffer: &mut Vec<u8>) {
    conn.queued.store(false, Ordering::Release);
    if conn.is_closed() || !conn.ready.load(Ordering::Acquire) {
        return;
    }
    let mut ws = conn.ws();
    let now = Instant::now();
    if conn.replaying.load(Ordering::Acquire) && now > conn.sync_deadline {
        drop(ws);
        conn.close(close::SYNC_TIMEOUT, "sync_timeout");
        return;
    }
    let mut flushed = Conn::flush(&mut ws);
    if flushed != Flushed::Done {
        drop(ws);
        after_write(shared, conn, flushed, Then::Continue);
        return;
    }
    if !ws.can_write() {
        // A close frame went out or came in: the connection is ending, and
        // its events stay with its session.
        return;
    }
    let durable_id = shared.durable_event_id();
    let Some(taken) = shared
        .table
        .take_due(conn, now, MAX_EVENTS_PER_TURN, durable_id)
    else {
        return;
    };
    if !taken.still_replaying {
        conn.replaying.store(false, Ordering::Release);
    }
    let due = &taken.due;
    let io = ws.get_mut();
    io.lend(buffer);
    if due.as_batch {
        if !due.items.is_empty() {
            write_batch(io, &due.items);
        }
    } else {
        for (seq, event, replayed) in &due.items {
            let len = event.message_len(*seq, *replayed);
            io.write_text_frame(len, |out| event.write_message(out, *seq, *replayed));
        }
    }
    flushed = Conn::flush(&mut ws);
    ws.get_mut().give_back(buffer);
    drop(ws);
    let replayed = due.items.iter().filter(|i| i.2).count() as u64;
    let metrics = &shared.metrics;
    metrics
        .events_delivered_total
        .fetch_add(due.items.len() as u64, Ordering::Relaxed);
    metrics
        .events_replayed_total
        .fetch_add(replayed, Ordering::Relaxed);
    let then = match (due.then, &shared.store) {
        (Then::Durable, Some(store)) => {
            store.wake_when_durable(conn, durable_id, shared);
            Then::Idle
        }
        (then, _) => then,
    };
    after_write(shared, conn, flushed, then);
}

/// Appends `{"type":"event_batch","events":[...]}` as one message.
fn write_batch(io: &mut ConnIo, items: &[(u64, Arc<Event>, bool)]) {
    const START: &[u8] = br#"{"type":"event_batch","events":["#;
    const END: &[u8] = b"]}";
    let items_len: usize = items
        .iter()
        .map(|(seq, event, replayed)| event.item_len(*seq, *replayed))
        .sum();
    let commas = items.len().saturating_sub(1);
    io.write_text_frame(START.len() + items_len + commas + END.len(), |out| {
        out.extend_from_slice(START);
        for (i, (seq, event, replayed)) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            event.write_item(out, *seq, *replayed);
        }
        out.extend_from_slice(END);
    });
}

fn after_write(shared: &Shared, conn: &Arc<Conn>, flushed: Flushed, then: Then) {
    match flushed {
        Flushed::Done => {
            conn.retry_us.store(0, Ordering::Relaxed);
            match then {
                Then::Idle | Then::Durable => {}
                Then::Continue => shared.writer.wake(conn),
                Then::At(at) => shared.writer.wake_at(conn, at),
            }
        }
        Flushed::Blocked => shared.writer.retry(conn),
        Flushed::Dead => conn.abort(),
    }
}
