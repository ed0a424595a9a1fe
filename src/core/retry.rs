//! One retry policy for every retrying loop: Stream Loads, sink DDL and catalog lookups,
//! the reader's reconnects and the startup checks. Capped exponential backoff with jitter,
//! for as long as it takes unless bounded (outages of days are normal: invariant 13).
//!
//! The exponential sequence comes from `backon`. The jitter is applied here and only ever
//! shortens a delay, so the cap holds (backon's own jitter can double a delay).

use std::time::Duration;

use backon::BackoffBuilder;

/// Retry schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Fraction of each delay that is randomised away (0.0 = none, 0.5 = up to half).
    pub jitter: f64,
    /// `None` (default) = retry for as long as it takes.
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            jitter: 0.3,
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    /// A policy with these bounds and the default jitter, unbounded attempts.
    pub fn new(initial_delay: Duration, max_delay: Duration) -> Self {
        RetryPolicy {
            initial_delay,
            max_delay,
            ..RetryPolicy::default()
        }
    }

    fn exponential(&self) -> backon::ExponentialBackoff {
        backon::ExponentialBuilder::new()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay.max(self.initial_delay))
            .with_factor(2.0)
            .without_max_times()
            .build()
    }

    fn jittered(&self, d: Duration) -> Duration {
        // backon computes in f32: drop the sub-microsecond noise.
        let d = Duration::from_micros(d.as_secs_f64().mul_add(1e6, 0.5) as u64);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return d;
        }
        d.mul_f64(1.0 - jitter * rand::random::<f64>())
    }

    /// The delay before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        // The sequence reaches the cap long before 64 doublings.
        let n = attempt.clamp(1, 64) as usize;
        let base = self
            .exponential()
            .nth(n - 1)
            .unwrap_or(self.max_delay)
            .min(self.max_delay.max(self.initial_delay));
        self.jittered(base)
    }

    /// A running schedule for one retrying loop.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: self.clone(),
            inner: self.exponential(),
            attempt: 0,
        }
    }

    /// Whether `attempt` (1-based, the one that just failed) may be followed by another.
    pub fn may_retry(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|m| attempt < m)
    }
}

/// The state of one retrying loop: the next delay, and how many attempts failed so far.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    inner: backon::ExponentialBackoff,
    attempt: u32,
}

impl Backoff {
    /// The delay before the next attempt, or `None` when the policy's attempts are used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.attempt = self.attempt.saturating_add(1);
        if !self.policy.may_retry(self.attempt) {
            return None;
        }
        let d = self.inner.next().unwrap_or(self.policy.max_delay);
        Some(self.policy.jittered(d.min(self.policy.max_delay)))
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over (after a success, or a long healthy period).
    pub fn reset(&mut self) {
        self.inner = self.policy.exponential();
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_never_pass_it() {
        let p = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            jitter: 0.0,
            max_attempts: None,
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(5), Duration::from_millis(1600));
        assert_eq!(p.delay(6), Duration::from_secs(2));
        assert_eq!(p.delay(1000), Duration::from_secs(2));
        let mut b = p.backoff();
        let got: Vec<_> = (0..7).map(|_| b.next_delay().unwrap()).collect();
        assert_eq!(got[0], Duration::from_millis(100));
        assert_eq!(got[6], Duration::from_secs(2));
        b.reset();
        assert_eq!(b.next_delay(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn jitter_only_shortens_and_attempts_can_be_bounded() {
        let p = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            jitter: 0.5,
            max_attempts: Some(3),
        };
        for a in 1..20 {
            let d = p.delay(a);
            assert!(d <= Duration::from_secs(1), "{d:?}");
        }
        let mut b = p.backoff();
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_some());
        assert_eq!(b.next_delay(), None, "third attempt is the last");
        assert_eq!(b.attempts(), 3);
    }
}
