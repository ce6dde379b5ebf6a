//! Reconnection delays (contract section 8): the arithmetic of each strategy
//! and the jitter the bundled client adds.
//!
//! # Jitter
//!
//! The client uses *equal jitter*: before attempt `n` it waits a delay drawn
//! uniformly from `[d/2, d]`, where `d` is the contract's delay for attempt
//! `n` (so never longer than the contract says, nor than `max_delay_ms`, and
//! never less than half of it). `immediate` stays 0 and `manual` never
//! retries. Half the delay keeps backing off as the server announced; the
//! random half spreads out clients that all lost their connection at the
//! same moment (a server restart), so they do not come back in one wave.
//! The randomness comes from the OS random source.

use std::time::Duration;

use serde_json::Value;

use crate::config::{Config, Strategy};

/// How a client paces its reconnection attempts: the `reconnection` block a
/// server announces in its first message, or the contract's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Which formula gives the delays.
    pub strategy: Strategy,
    /// Failed attempts in a row after which the client gives up.
    pub max_retry_attempts: u32,
    /// The first delay of the backoff strategies.
    pub initial_delay_ms: u64,
    /// No delay is longer than this.
    pub max_delay_ms: u64,
    /// Growth factor of `exponential_backoff`.
    pub backoff_multiplier: f64,
}

impl Default for Backoff {
    /// The contract's defaults, the same as `tether serve` announces with no flags.
    fn default() -> Self {
        let config = Config::default();
        Backoff {
            strategy: config.strategy,
            max_retry_attempts: config.max_retry_attempts,
            initial_delay_ms: config.initial_delay_ms,
            max_delay_ms: config.max_delay_ms,
            backoff_multiplier: config.backoff_multiplier,
        }
    }
}

impl Backoff {
    /// The settings of an announced `reconnection` block; a field that is
    /// missing or malformed keeps its value from `self`.
    pub fn updated_from(&self, announced: &Value) -> Backoff {
        let int = |name: &str, default: u64| announced[name].as_u64().unwrap_or(default);
        Backoff {
            strategy: announced["strategy"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(self.strategy),
            max_retry_attempts: u32::try_from(int(
                "max_retry_attempts",
                u64::from(self.max_retry_attempts),
            ))
            .unwrap_or(u32::MAX),
            initial_delay_ms: int("initial_delay_ms", self.initial_delay_ms),
            max_delay_ms: int("max_delay_ms", self.max_delay_ms),
            backoff_multiplier: announced["backoff_multiplier"]
                .as_f64()
                .filter(|m| m.is_finite() && *m >= 1.0)
                .unwrap_or(self.backoff_multiplier),
        }
    }

    /// The contract's delay before attempt `attempt` (1, 2, ...), without
    /// jitter; `None` for `manual`, which never retries on its own.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        let n = attempt.max(1);
        let max = self.max_delay_ms as f64;
        let ms = match self.strategy {
            Strategy::Immediate => 0.0,
            Strategy::ExponentialBackoff => {
                let exponent = i32::try_from(n - 1).unwrap_or(i32::MAX);
                (self.initial_delay_ms as f64 * self.backoff_multiplier.powi(exponent)).min(max)
            }
            Strategy::LinearBackoff => (self.initial_delay_ms as f64 * f64::from(n)).min(max),
            Strategy::Manual => return None,
        };
        Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0))
    }

    /// The delay before attempt `attempt` with equal jitter, `random` being
    /// a number in `[0, 1)`: `d/2 + random * d/2`, `d` as in [`Backoff::delay`].
    pub fn jittered(&self, attempt: u32, random: f64) -> Option<Duration> {
        let d = self.delay(attempt)?;
        Some(d / 2 + d.mul_f64(random.clamp(0.0, 1.0) / 2.0))
    }

    /// [`Backoff::jittered`] with a random number from the OS.
    pub fn delay_with_jitter(&self, attempt: u32) -> Option<Duration> {
        self.jittered(attempt, unit_random())
    }
}

/// A number uniformly drawn from `[0, 1)`; 0.5 if the OS random source fails.
fn unit_random() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    // The top 53 bits fill an f64's mantissa exactly.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backoff(strategy: Strategy) -> Backoff {
        Backoff {
            strategy,
            max_retry_attempts: 10,
            initial_delay_ms: 1000,
            max_delay_ms: 8000,
            backoff_multiplier: 2.0,
        }
    }

    fn secs(b: &Backoff, attempts: std::ops::RangeInclusive<u32>) -> Vec<f64> {
        attempts
            .map(|n| b.delay(n).unwrap().as_secs_f64())
            .collect()
    }

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let b = backoff(Strategy::ExponentialBackoff);
        assert_eq!(secs(&b, 1..=6), vec![1.0, 2.0, 4.0, 8.0, 8.0, 8.0]);
        // A huge attempt number neither overflows nor passes the cap.
        assert_eq!(b.delay(u32::MAX), Some(Duration::from_secs(8)));
    }

    #[test]
    fn linear_adds_the_initial_delay_up_to_the_cap() {
        let b = backoff(Strategy::LinearBackoff);
        assert_eq!(
            secs(&b, 1..=10),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 8.0, 8.0]
        );
    }

    #[test]
    fn immediate_is_zero_and_manual_never_retries() {
        let b = backoff(Strategy::Immediate);
        assert_eq!(b.delay(1), Some(Duration::ZERO));
        assert_eq!(b.delay_with_jitter(7), Some(Duration::ZERO));
        let m = backoff(Strategy::Manual);
        assert_eq!(m.delay(1), None);
        assert_eq!(m.delay_with_jitter(1), None);
    }

    #[test]
    fn jitter_stays_between_half_and_the_whole_delay() {
        let b = backoff(Strategy::ExponentialBackoff);
        assert_eq!(b.jittered(3, 0.0), Some(Duration::from_secs(2)));
        assert_eq!(b.jittered(3, 1.0), Some(Duration::from_secs(4)));
        for attempt in 1..=6 {
            let d = b.delay(attempt).unwrap();
            let mut seen_low = false;
            let mut seen_high = false;
            for _ in 0..200 {
                let j = b.delay_with_jitter(attempt).unwrap();
                assert!(j >= d / 2 && j <= d, "attempt {attempt}: {j:?} vs {d:?}");
                seen_low |= j < d.mul_f64(0.75);
                seen_high |= j > d.mul_f64(0.75);
            }
            // 200 draws that all land on one side of the middle would mean the
            // jitter is not spread over its range.
            assert!(seen_low && seen_high, "attempt {attempt}");
        }
    }

    #[test]
    fn announced_settings_replace_the_defaults() {
        let announced = json!({"strategy":"linear_backoff","max_retry_attempts":3,
            "initial_delay_ms":10,"max_delay_ms":25,"backoff_multiplier":1.5,
            "state_sync_timeout_ms":5000});
        let b = Backoff::default().updated_from(&announced);
        assert_eq!(b.strategy, Strategy::LinearBackoff);
        assert_eq!(b.max_retry_attempts, 3);
        assert_eq!(secs(&b, 1..=3), vec![0.01, 0.02, 0.025]);
        assert_eq!(b.backoff_multiplier, 1.5);
        let kept = b.updated_from(&json!({"strategy":"bogus"}));
        assert_eq!(kept, b);
    }
}
