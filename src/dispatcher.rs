//! The dispatcher thread: gives published events their ids, fans them out to
//! the session table and wakes the connections that have new events.
//!
//! It never touches a socket, so a slow or dead client cannot slow it or the
//! publisher waiting for its answer.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{select, Receiver, Sender};
use serde::Serialize;

use crate::clock::now_ms;
use crate::event::{Event, NewEvent};
use crate::journal;
use crate::record::kind;
use crate::server::Shared;
use crate::session_table::PublishedEvent;

/// Events fanned out under one hold of the session-table lock, so a
/// 1000-event publish does not keep connections from their sessions for long.
const EVENTS_PER_LOCK: usize = 64;

/// A publish waiting for the dispatcher.
#[derive(Debug)]
pub(crate) struct PublishRequest {
    /// The validated events.
    pub events: Vec<NewEvent>,
    /// Where the ids and match counts go.
    pub reply: Sender<Vec<Published>>,
}

/// One published event, as `POST /events` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Published {
    /// The event's global id.
    pub id: u64,
    /// How many sessions it was tracked for.
    pub matched_sessions: usize,
}

/// Runs until `stop` is dropped, giving out ids from `next_id` on.
pub(crate) fn run(
    shared: Arc<Shared>,
    requests: Receiver<PublishRequest>,
    stop: Receiver<()>,
    mut next_id: u64,
) {
    let mut last_timestamp = 0;
    loop {
        select! {
            recv(requests) -> request => match request {
                Ok(request) => {
                    if shared.storage_failed() {
                        // Dropping the reply tells the publisher it failed.
                        continue;
                    }
                    // Ids and timestamps both increase in seq order.
                    last_timestamp = now_ms().max(last_timestamp);
                    let published = publish(&shared, &mut next_id, last_timestamp, request.events);
                    match &shared.store {
                        // The answer waits until the events are durable.
                        Some(store) => store.reply_when_durable(published, request.reply),
                        None => {
                            let _ = request.reply.send(published);
                        }
                    }
                }
                Err(_) => return,
            },
            recv(stop) -> _ => return,
        }
    }
}

fn publish(
    shared: &Shared,
    next_id: &mut u64,
    timestamp: u64,
    events: Vec<NewEvent>,
) -> Vec<Published> {
    let events: Vec<PublishedEvent> = events
        .into_iter()
        .map(|new| {
            let event = Event::new(*next_id, timestamp, &new, &shared.live_events);
            *next_id += 1;
            (Arc::new(event), new.targets)
        })
        .collect();
    // Built before the table is locked; only appended under the lock.
    let records: Vec<Vec<u8>> = match shared.store {
        Some(_) => events
            .iter()
            .map(|(event, targets)| {
                journal::frame(kind::EVENT, &event.record_json(targets.as_deref()))
            })
            .collect(),
        None => Vec::new(),
    };
    let mut published = Vec::with_capacity(events.len());
    for (i, chunk) in events.chunks(EVENTS_PER_LOCK).enumerate() {
        let start = i * EVENTS_PER_LOCK;
        let chunk_records = records.get(start..start + chunk.len()).unwrap_or(&[]);
        // A chunk's first event id names it: ids are never reused.
        let chunk_id = chunk[0].0.id;
        let fanout = shared.table.publish(chunk_id, chunk, chunk_records);
        // With a store, writers send only durable events; those woken now
        // wait for the store, which wakes them again once the events are.
        for conn in &fanout.wake {
            shared.writer.wake(conn);
        }
        published.extend(
            chunk
                .iter()
                .zip(&fanout.matched)
                .map(|((event, _), &matched)| Published {
                    id: event.id,
                    matched_sessions: matched,
                }),
        );
        shared
            .metrics
            .events_dropped_total
            .fetch_add(fanout.dropped, Ordering::Relaxed);
    }
    shared
        .metrics
        .events_published_total
        .fetch_add(published.len() as u64, Ordering::Relaxed);
    published
}
