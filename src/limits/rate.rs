//! A token bucket kept as one number: the generic cell rate algorithm (GCRA). No I/O and no
//! clock of its own: every call takes `now`, so tests drive time by hand.
//!
//! A bucket of `burst` tokens refilled at `count` per `period` is stored as its theoretical
//! arrival time `tat` (microseconds on the monotonic clock): the instant at which the bucket
//! would be full again. An event at `now` is admitted when `max(tat, now) + interval` lies no
//! more than `burst × interval` ahead of `now`, and then becomes the new `tat`. A `tat` at or
//! before `now` is a full bucket, the same as no entry at all: idle buckets can be forgotten
//! without losing anything.

/// A rate limit: `count` events per period, at most `burst` of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Microseconds one token takes to come back (the period divided by the count).
    interval_us: u64,
    /// How far ahead of `now` the arrival time may run: `burst` intervals.
    tolerance_us: u64,
}

impl Rate {
    /// `count` events per `period_us` microseconds, in bursts of up to `burst` (at least 1);
    /// `None` when `count` is 0 (the limit is off).
    pub fn new(count: u32, period_us: u64, burst: u32) -> Option<Self> {
        if count == 0 {
            return None;
        }
        let interval_us = (period_us / u64::from(count)).max(1);
        Some(Self {
            interval_us,
            tolerance_us: interval_us.saturating_mul(u64::from(burst.max(1))),
        })
    }

    /// `count` events per second, in bursts of up to `burst`.
    pub fn per_second(count: u32, burst: u32) -> Option<Self> {
        Self::new(count, 1_000_000, burst)
    }

    /// `count` events per minute, in bursts of up to `count` (a minute's allowance at once).
    pub fn per_minute(count: u32) -> Option<Self> {
        Self::new(count, 60_000_000, count)
    }

    /// The bucket whose arrival time is `tat` (0 for a fresh one) takes one event at `now`:
    /// `Ok` with the new arrival time, or `Err` with the microseconds until it would be
    /// admitted (the bucket is left as it was).
    pub fn admit(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let next = tat.max(now).saturating_add(self.interval_us);
        let ahead = next - now;
        if ahead <= self.tolerance_us {
            Ok(next)
        } else {
            Err(ahead - self.tolerance_us)
        }
    }

    /// True when a bucket with arrival time `tat` is full at `now` (forgetting it changes
    /// nothing).
    pub fn is_idle(tat: u64, now: u64) -> bool {
        tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::Rate;

    /// Takes events at `now` until one is refused; returns how many passed and the delay.
    fn drain(rate: &Rate, tat: &mut u64, now: u64) -> (u32, u64) {
        let mut passed = 0;
        loop {
            match rate.admit(*tat, now) {
                Ok(next) => {
                    *tat = next;
                    passed += 1;
                }
                Err(wait) => return (passed, wait),
            }
        }
    }

    #[test]
    fn a_fresh_bucket_admits_its_burst_then_refills_at_the_rate() {
        let rate = Rate::per_second(10, 30).unwrap();
        let mut tat = 0;
        let start = 5_000_000;
        assert_eq!(drain(&rate, &mut tat, start), (30, 100_000));
        // After the announced delay exactly one more passes; a second later, ten.
        assert_eq!(drain(&rate, &mut tat, start + 100_000), (1, 100_000));
        assert_eq!(drain(&rate, &mut tat, start + 1_100_000).0, 10);
        // Long idle: full again (and only the burst, not what the idle time would add up to).
        assert!(Rate::is_idle(tat, start + 10_000_000));
        assert_eq!(drain(&rate, &mut tat, start + 10_000_000).0, 30);
    }

    #[test]
    fn a_refused_event_does_not_use_up_the_bucket() {
        let rate = Rate::per_minute(2).unwrap();
        let mut tat = 0;
        let now = 1_000;
        assert_eq!(drain(&rate, &mut tat, now), (2, 30_000_000));
        let before = tat;
        assert!(rate.admit(tat, now + 1).is_err());
        assert_eq!(tat, before);
        assert!(!Rate::is_idle(tat, now + 59_000_000));
        assert!(Rate::is_idle(tat, now + 60_000_000));
    }

    #[test]
    fn zero_turns_the_limit_off_and_a_burst_of_zero_is_one() {
        assert_eq!(Rate::per_second(0, 10), None);
        assert_eq!(Rate::per_minute(0), None);
        let rate = Rate::per_second(1, 0).unwrap();
        let mut tat = 0;
        assert_eq!(drain(&rate, &mut tat, 7).0, 1);
    }
}
