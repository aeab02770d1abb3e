//! A token bucket: paces a phone's messages (`--rate`) and keeps its frames under the server's
//! per-connection rate limit.

use std::time::{Duration, Instant};

/// Slack for floating-point rounding when comparing token counts.
const EPSILON: f64 = 1e-9;

/// Tokens refill continuously at `rate` per second up to `capacity`; `None` rate is unlimited.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: Option<f64>,
    capacity: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    /// A bucket that always has tokens.
    pub fn unlimited(now: Instant) -> Self {
        Self {
            rate: None,
            capacity: 0.0,
            tokens: 0.0,
            refilled: now,
        }
    }

    /// `rate` tokens per second (0 or less means unlimited), at most `capacity` saved up
    /// (at least one), starting with `initial` tokens (a fraction delays the first token).
    pub fn new(rate: f64, capacity: f64, initial: f64, now: Instant) -> Self {
        if rate <= 0.0 || !rate.is_finite() {
            return Self::unlimited(now);
        }
        let capacity = capacity.max(1.0);
        Self {
            rate: Some(rate),
            capacity,
            tokens: initial.min(capacity),
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(self.capacity);
            self.refilled = now;
        }
    }

    /// True when a token is available now (does not take it).
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.rate.is_none() || self.tokens >= 1.0 - EPSILON
    }

    /// Takes a token if one is available.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if !self.ready(now) {
            return false;
        }
        if self.rate.is_some() {
            self.tokens -= 1.0;
        }
        true
    }

    /// Takes a token even when none is available; the debt delays later tokens.
    pub fn force_take(&mut self, now: Instant) {
        self.refill(now);
        if self.rate.is_some() {
            self.tokens -= 1.0;
        }
    }

    /// When the next token is available (`now` if it already is).
    pub fn next_ready(&mut self, now: Instant) -> Instant {
        self.refill(now);
        match self.rate {
            Some(rate) if self.tokens < 1.0 - EPSILON => {
                now + Duration::from_secs_f64((1.0 - self.tokens) / rate)
            }
            _ => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn unlimited_buckets_never_run_out() {
        let t = Instant::now();
        let mut b = Bucket::new(0.0, 10.0, 0.0, t);
        for _ in 0..10_000 {
            assert!(b.try_take(t));
        }
        assert_eq!(b.next_ready(t), t);
    }

    #[test]
    fn tokens_refill_at_the_rate_up_to_the_capacity() {
        let t = Instant::now();
        let mut b = Bucket::new(100.0, 5.0, 5.0, t);
        for _ in 0..5 {
            assert!(b.try_take(t));
        }
        assert!(!b.try_take(t));
        // 10 ms at 100/s is one token.
        assert_eq!(b.next_ready(t), t + 10 * MS);
        assert!(!b.try_take(t + 9 * MS));
        assert!(b.try_take(t + 10 * MS));
        // A long pause saves up no more than the capacity.
        let later = t + Duration::from_secs(10);
        let mut taken = 0;
        while b.try_take(later) {
            taken += 1;
        }
        assert_eq!(taken, 5);
    }

    #[test]
    fn a_fractional_start_staggers_the_first_token() {
        let t = Instant::now();
        let mut b = Bucket::new(10.0, 1.0, 0.25, t);
        assert!(!b.ready(t));
        assert_eq!(b.next_ready(t), t + 75 * MS);
        assert!(b.try_take(t + 75 * MS));
    }

    #[test]
    fn forced_takes_create_a_debt() {
        let t = Instant::now();
        let mut b = Bucket::new(1000.0, 1.0, 1.0, t);
        b.force_take(t);
        b.force_take(t);
        b.force_take(t);
        // Two tokens owed plus one to take: 3 ms.
        assert!(!b.ready(t + 2 * MS));
        assert!(b.try_take(t + 3 * MS));
    }
}
