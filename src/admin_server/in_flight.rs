//! A count with a cap, and a bounded wait for it to reach zero: the admin
//! requests being handled, and the admin threads waiting for requests.
//!
//! A request may block in socket I/O that nothing here can interrupt, so
//! the cap on requests is what bounds the threads handling them (and the
//! answers they hold in memory), and stop waits only a grace period for
//! them.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The count of requests in flight and its limit.
#[derive(Debug)]
pub(super) struct InFlight {
    count: Mutex<usize>,
    changed: Condvar,
    max: usize,
}

/// One request's place under the cap, given back when dropped, also when
/// its thread could not start or panicked.
#[derive(Debug)]
pub(super) struct Slot(Arc<InFlight>);

impl InFlight {
    pub(super) fn new(max: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            count: Mutex::new(0),
            changed: Condvar::new(),
            max,
        })
    }

    /// A slot, or `None` when `max` requests are in flight already.
    pub(super) fn enter(self: &Arc<Self>) -> Option<Slot> {
        let mut count = self.lock();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot(Arc::clone(self)))
    }

    /// How many are in flight now.
    pub(super) fn count(&self) -> usize {
        *self.lock()
    }

    /// Waits until no request is in flight or `grace` has passed, and
    /// returns how many still are.
    pub(super) fn wait_idle(&self, grace: Duration) -> usize {
        let count = self.lock();
        let (count, _) = self
            .changed
            .wait_timeout_while(count, grace, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
        *count
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.lock() -= 1;
        self.0.changed.notify_all();
    }
}
