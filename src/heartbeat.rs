//! The heartbeat thread (contract section 7): pings connections that have
//! been silent for an interval and closes those silent for two; under
//! systemd it also feeds the watchdog.
//!
//! Any frame from the client counts as life (a message, a heartbeat, a ping
//! or a pong); the reader thread stamps `last_seen` on every read. The thread
//! wakes four times per interval, whatever the number of connections, so an
//! idle server with the default 30 s interval wakes every 7.5 s.
//!
//! The watchdog ping is sent only after a pass over the session table, so a
//! server whose table lock is wedged stops feeding the watchdog and systemd
//! restarts it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, Receiver};
use log::debug;

use crate::clock::now_ms;
use crate::connection::{close, Flushed};
use crate::notify;
use crate::server::Shared;

/// Runs until `stop` is dropped.
pub(crate) fn run(shared: Arc<Shared>, stop: Receiver<()>) {
    let interval = shared.config.heartbeat_interval_ms;
    let liveness = shared
        .config
        .heartbeat_enabled
        .then(|| Duration::from_millis((interval / 4).max(1)));
    let watchdog = notify::watchdog_interval().map(|w| w / 2);
    let tick = match (liveness, watchdog) {
        (Some(l), Some(w)) => l.min(w),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => {
            let _ = stop.recv();
            return;
        }
    };
    loop {
        select! {
            recv(stop) -> _ => return,
            default(tick) => {
                if liveness.is_some() {
                    check(&shared, interval, now_ms());
                } else {
                    shared.table.counts();
                }
                if watchdog.is_some() {
                    notify::notify("WATCHDOG=1");
                }
            }
        }
    }
}

fn check(shared: &Shared, interval: u64, now: u64) {
    for conn in shared.table.connections() {
        let seen = conn.last_seen.load(Ordering::Relaxed);
        let silent = now.saturating_sub(seen);
        if silent >= 2 * interval {
            debug!("{} silent for {silent} ms; closing it", conn.remote);
            shared
                .metrics
                .heartbeat_timeouts_total
                .fetch_add(1, Ordering::Relaxed);
            // Disconnected at once, not when the reader thread notices.
            shared.table.disconnect(&conn, now);
            conn.close(close::HEARTBEAT_TIMEOUT, "heartbeat_timeout");
        } else if silent >= interval && conn.last_ping.load(Ordering::Relaxed) <= seen {
            conn.last_ping.store(now, Ordering::Relaxed);
            match conn.ping() {
                Flushed::Done => {}
                Flushed::Blocked => shared.writer.retry(&conn),
                Flushed::Dead => conn.abort(),
            }
        }
    }
}
