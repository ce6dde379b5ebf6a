//! How fast live events may go to one connection (contract sections 5 and
//! 10): a token bucket for `max_events_per_second`, and for `batched`
//! delivery the window each `event_batch` waits for.
//!
//! Batching is a trailing window: the first event after a quiet spell waits
//! `batch_interval_ms` so that others can join it; while events keep coming,
//! one batch goes out every `batch_interval_ms`; when nothing is due, nothing
//! is sent. Replay after a resume is not paced at all (`session.rs`).

use std::time::{Duration, Instant};

use crate::preferences::{Delivery, Preferences};

/// The most events in one `event_batch` message.
pub const MAX_BATCH_EVENTS: usize = 500;

/// One connection's bucket and batch window.
#[derive(Debug, Clone)]
pub struct Pacing {
    /// Tokens in millionths, so refills of a few microseconds add up exactly.
    micro_tokens: u64,
    refilled: Instant,
    /// When the pending batch goes out (`batched` only).
    window: Option<Instant>,
}

/// What may be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Up to this many live events, now.
    Now(usize),
    /// Nothing before this instant.
    At(Instant),
}

impl Pacing {
    /// A full bucket, as every connection starts with.
    pub fn new(preferences: &Preferences, now: Instant) -> Pacing {
        Pacing {
            micro_tokens: capacity(preferences),
            refilled: now,
            window: None,
        }
    }

    /// Follows a change of preferences: the bucket keeps its tokens up to
    /// its new size, and a change of delivery mode starts afresh.
    pub fn reconfigure(&mut self, old: &Preferences, new: &Preferences) {
        self.micro_tokens = self.micro_tokens.min(capacity(new));
        if old.delivery != new.delivery || old.batch_interval_ms != new.batch_interval_ms {
            self.window = None;
        }
    }

    fn refill(&mut self, preferences: &Preferences, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_micros() as u64;
        self.micro_tokens = self
            .micro_tokens
            .saturating_add(elapsed.saturating_mul(rate(preferences)))
            .min(capacity(preferences));
        self.refilled = now;
    }

    /// How many of `pending` live events may go now, or when to ask again.
    pub fn allowance(
        &mut self,
        preferences: &Preferences,
        pending: usize,
        now: Instant,
    ) -> Allowance {
        self.refill(preferences, now);
        if preferences.delivery == Delivery::Batched {
            let interval = Duration::from_millis(u64::from(preferences.batch_interval_ms));
            let window = *self.window.get_or_insert(now + interval);
            if now < window {
                return Allowance::At(window);
            }
        }
        if self.micro_tokens < ONE {
            return Allowance::At(self.next_tokens(preferences, pending, now));
        }
        Allowance::Now(((self.micro_tokens / ONE) as usize).min(pending))
    }

    /// Records that `sent` live events went out; `left` are still pending.
    /// Returns when to send again if something is left and must wait.
    pub fn spend(
        &mut self,
        preferences: &Preferences,
        sent: usize,
        left: usize,
        now: Instant,
    ) -> Option<Instant> {
        self.micro_tokens = self.micro_tokens.saturating_sub(sent as u64 * ONE);
        if left == 0 {
            self.window = None;
            return None;
        }
        match preferences.delivery {
            // Still within the open window while tokens last.
            Delivery::Batched if self.micro_tokens >= ONE => None,
            Delivery::Batched => {
                let next = now + Duration::from_millis(u64::from(preferences.batch_interval_ms));
                self.window = Some(next);
                Some(next)
            }
            Delivery::Immediate if self.micro_tokens >= ONE => None,
            Delivery::Immediate => Some(self.next_tokens(preferences, left, now)),
        }
    }

    /// When the bucket will hold enough tokens for the next send: one
    /// token, or [`PACED_BATCH`]'s worth when that is more (but no more than
    /// the `pending` events need).
    fn next_tokens(&self, preferences: &Preferences, pending: usize, now: Instant) -> Instant {
        let batch = rate(preferences) * PACED_BATCH.as_micros() as u64 / 1_000_000;
        let wanted = batch.min(pending as u64).max(1) * ONE;
        let missing = wanted - self.micro_tokens.min(wanted);
        now + Duration::from_micros(missing.div_ceil(rate(preferences)))
    }
}

/// One token, in millionths.
const ONE: u64 = 1_000_000;

/// A rate-limited connection is woken when this long's worth of tokens has
/// come in, not for every single token: at 10000 events/s that is 100
/// events per wake-up and send instead of 1, for the same rate. Below 100
/// events/s it is one token. A connection only waits here once it has
/// used up its bucket (a second's worth), so this delays only clients
/// already receiving more than their limit; at the limit, 2 ms instead of
/// 10 cost twice the server CPU per event (BENCHMARKS.md, M2 at N = 100).
pub const PACED_BATCH: Duration = Duration::from_millis(10);

/// Tokens per second, which is also millionths of a token per microsecond.
fn rate(preferences: &Preferences) -> u64 {
    u64::from(preferences.max_events_per_second.max(1))
}

/// The bucket's size in millionths: one second's worth, or for `batched` one
/// interval's worth when that is more (an `ios` client at 5/s with 2 s
/// batches gets up to 10 per batch).
fn capacity(preferences: &Preferences) -> u64 {
    let seconds_micros = match preferences.delivery {
        Delivery::Immediate => ONE,
        Delivery::Batched => ONE.max(u64::from(preferences.batch_interval_ms) * 1000),
    };
    rate(preferences) * seconds_micros
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preferences::ClientType;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn immediate_sends_while_tokens_last_then_waits_for_one() {
        let prefs = Preferences::defaults_for(ClientType::Cli); // 20/s
        let t0 = Instant::now();
        let mut p = Pacing::new(&prefs, t0);
        assert_eq!(p.allowance(&prefs, 50, t0), Allowance::Now(20));
        let next = p.spend(&prefs, 20, 30, t0).unwrap();
        assert_eq!(next, t0 + ms(50));
        assert_eq!(
            p.allowance(&prefs, 30, t0 + ms(10)),
            Allowance::At(t0 + ms(50))
        );
        assert_eq!(p.allowance(&prefs, 30, t0 + ms(100)), Allowance::Now(2));
    }

    #[test]
    fn a_fast_limited_connection_waits_for_a_batch_of_tokens() {
        let mut prefs = Preferences::defaults_for(ClientType::Cli);
        prefs.max_events_per_second = 10_000;
        let t0 = Instant::now();
        let mut p = Pacing::new(&prefs, t0);
        assert_eq!(p.allowance(&prefs, 20_000, t0), Allowance::Now(10_000));
        // 10 ms bring 100 tokens; fewer pending events need fewer.
        assert_eq!(p.spend(&prefs, 10_000, 200, t0), Some(t0 + ms(10)));
        assert_eq!(
            p.allowance(&prefs, 5, t0),
            Allowance::At(t0 + Duration::from_micros(500))
        );
        assert_eq!(p.allowance(&prefs, 200, t0 + ms(10)), Allowance::Now(100));
    }

    #[test]
    fn the_bucket_never_holds_more_than_its_capacity() {
        let prefs = Preferences::defaults_for(ClientType::Cli);
        let t0 = Instant::now();
        let mut p = Pacing::new(&prefs, t0);
        assert_eq!(
            p.allowance(&prefs, 1000, t0 + ms(60_000)),
            Allowance::Now(20)
        );
    }

    #[test]
    fn batched_waits_for_the_window_and_takes_an_interval_of_tokens() {
        let prefs = Preferences::defaults_for(ClientType::Ios); // 5/s, 2 s
        let t0 = Instant::now();
        let mut p = Pacing::new(&prefs, t0);
        assert_eq!(p.allowance(&prefs, 30, t0), Allowance::At(t0 + ms(2000)));
        assert_eq!(
            p.allowance(&prefs, 30, t0 + ms(1999)),
            Allowance::At(t0 + ms(2000))
        );
        let t1 = t0 + ms(2000);
        assert_eq!(p.allowance(&prefs, 30, t1), Allowance::Now(10));
        assert_eq!(p.spend(&prefs, 10, 20, t1), Some(t1 + ms(2000)));
        assert_eq!(p.allowance(&prefs, 20, t1 + ms(2000)), Allowance::Now(10));
        // Nothing left: the next event opens a new window.
        assert_eq!(p.spend(&prefs, 10, 0, t1 + ms(2000)), None);
        let t2 = t1 + ms(10_000);
        assert_eq!(p.allowance(&prefs, 1, t2), Allowance::At(t2 + ms(2000)));
    }

    #[test]
    fn a_smaller_bucket_after_an_update_keeps_at_most_its_size() {
        let old = Preferences::defaults_for(ClientType::Cli);
        let mut new = old.clone();
        new.max_events_per_second = 3;
        let t0 = Instant::now();
        let mut p = Pacing::new(&old, t0);
        p.reconfigure(&old, &new);
        assert_eq!(p.allowance(&new, 10, t0), Allowance::Now(3));
    }
}
