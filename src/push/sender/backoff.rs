//! Pauses between a push's attempts: exponential with full jitter. The ceiling starts at
//! `push.retry_base_ms` and doubles after each failure up to `push.retry_max_ms`; each pause is
//! drawn uniformly below the ceiling, so that pushes failing together (a gateway restart) come
//! back spread out instead of in waves.

use std::time::Duration;

/// The pauses of one push's retries.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    ceiling: Duration,
    max: Duration,
}

impl Backoff {
    /// The first ceiling is `base`, never more than `max`.
    pub(super) fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            ceiling: base.min(max),
            max,
        }
    }

    /// The next pause, with jitter from the OS (a failed random source only costs the jitter).
    pub(super) fn next_pause(&mut self) -> Duration {
        let draw = getrandom::u32().unwrap_or(u32::MAX / 2);
        self.next_pause_at(f64::from(draw) / f64::from(u32::MAX))
    }

    /// The next pause, `fraction` (0 to 1) of the current ceiling; the ceiling then doubles, up
    /// to the maximum.
    pub(super) fn next_pause_at(&mut self, fraction: f64) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = ceiling.saturating_mul(2).min(self.max);
        let fraction = if fraction.is_nan() {
            0.5
        } else {
            fraction.clamp(0.0, 1.0)
        };
        ceiling.mul_f64(fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_maximum() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_millis(3000));
        let ceilings: Vec<u128> = (0..6)
            .map(|_| backoff.next_pause_at(1.0).as_millis())
            .collect();
        assert_eq!(ceilings, [500, 1000, 2000, 3000, 3000, 3000]);
    }

    #[test]
    fn a_pause_is_the_drawn_fraction_of_the_ceiling() {
        let mut backoff = Backoff::new(Duration::from_millis(800), Duration::from_secs(30));
        assert_eq!(backoff.next_pause_at(0.0), Duration::ZERO);
        assert_eq!(backoff.next_pause_at(0.25), Duration::from_millis(400));
        assert_eq!(backoff.next_pause_at(7.0), Duration::from_millis(3200));
    }

    #[test]
    fn random_pauses_stay_below_the_ceiling() {
        let (base, max) = (Duration::from_millis(10), Duration::from_millis(1000));
        let mut backoff = Backoff::new(base, max);
        let mut ceiling = base;
        for _ in 0..20 {
            let pause = backoff.next_pause();
            assert!(pause <= ceiling, "{pause:?} over {ceiling:?}");
            ceiling = (ceiling * 2).min(max);
        }
    }

    #[test]
    fn a_base_over_the_maximum_is_capped() {
        let mut backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(1));
        assert_eq!(backoff.next_pause_at(1.0), Duration::from_secs(1));
    }
}
