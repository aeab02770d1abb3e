//! Reconnect delays: exponential from `min` to `max`, with jitter so that nodes which lost a peer
//! together do not redial it in lockstep; reset after a successful connect. The jitter comes from
//! the OS, or from a seeded sequence when the mesh is given a seed (simulations replay a run).

use std::time::Duration;

/// The delay before each reconnect attempt to one peer.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    ceiling: Duration,
    /// The state of the seeded jitter sequence; `None` draws from the OS.
    seeded: Option<u64>,
}

impl Backoff {
    /// Starts at `min`, never beyond `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Backoff {
            min,
            max,
            ceiling: min,
            seeded: None,
        }
    }

    /// Like [`Backoff::new`], but the jitter follows a sequence fixed by `seed` (when given), so
    /// that a simulated run repeats exactly.
    pub fn with_seed(min: Duration, max: Duration, seed: Option<u64>) -> Self {
        Backoff {
            seeded: seed,
            ..Backoff::new(min, max)
        }
    }

    /// The next delay: a random point in the upper half of the current ceiling (never below
    /// `min`); the ceiling then doubles, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let half = ceiling / 2;
        let fraction = match self.seeded.as_mut() {
            Some(state) => {
                *state = splitmix64(*state);
                (*state >> 32) as u32
            }
            // A failed random source only costs the jitter.
            None => getrandom::u32().unwrap_or(u32::MAX / 2),
        };
        let jitter = half.mul_f64(f64::from(fraction) / f64::from(u32::MAX));
        (half + jitter).clamp(self.min, self.max)
    }

    /// Back to `min`, after a link came up.
    pub fn reset(&mut self) {
        self.ceiling = self.min;
    }
}

/// One step of SplitMix64: a bijective mixer whose outputs pass for random.
pub fn splitmix64(state: u64) -> u64 {
    let z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_bounds_and_grow_to_the_maximum() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(1000);
        let mut backoff = Backoff::new(min, max);
        let delays: Vec<Duration> = (0..20).map(|_| backoff.next_delay()).collect();
        assert!(delays.iter().all(|d| *d >= min && *d <= max), "{delays:?}");
        // After enough failures the ceiling is max, so every delay is in its upper half.
        assert!(delays[10..].iter().all(|d| *d >= max / 2), "{delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= min * 2);
    }

    #[test]
    fn a_seeded_backoff_repeats_its_delays() {
        let (min, max) = (Duration::from_millis(10), Duration::from_millis(1000));
        let delays = |seed| {
            let mut backoff = Backoff::with_seed(min, max, Some(seed));
            (0..10).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(delays(7), delays(7));
        assert_ne!(delays(7), delays(8));
    }

    #[test]
    fn a_maximum_below_the_minimum_is_raised_to_it() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(10));
        assert_eq!(backoff.next_delay(), Duration::from_millis(50));
    }
}
