//! The cleanup thread (contract section 7): every `cleanup_interval_s`,
//! removes sessions disconnected for longer than the retention period and
//! releases retained events older than it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, Receiver};
use log::debug;

use crate::clock::now_ms;
use crate::server::Shared;

/// Runs until `stop` is dropped.
pub(crate) fn run(shared: Arc<Shared>, stop: Receiver<()>) {
    let every = Duration::from_secs(shared.config.cleanup_interval_s);
    let retention = shared.config.retention().as_millis() as u64;
    // With a data directory, a pass that expired something asks for a
    // snapshot, and so does the pass after it: the store keeps the previous
    // snapshot as a fallback, and that one still holds the expired data.
    let mut snapshot_again = false;
    loop {
        select! {
            recv(stop) -> _ => return,
            default(every) => {
                let expired = shared.table.expire(now_ms().saturating_sub(retention));
                shared
                    .metrics
                    .events_dropped_total
                    .fetch_add(expired.dropped, Ordering::Relaxed);
                let removed = expired.sessions > 0 || expired.events > 0;
                if let Some(store) = &shared.store {
                    if removed || snapshot_again {
                        store.request_snapshot();
                    }
                }
                snapshot_again = removed;
                if removed {
                    debug!(
                        "cleanup removed {} sessions and released {} events",
                        expired.sessions, expired.events
                    );
                }
            }
        }
    }
}
