//! A limit on how many lines of one kind are logged per second, for events that come in floods
//! (refused logins): past the limit a line is dropped and counted, and the next line written
//! says how many were dropped before it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lets at most `per_second` lines through in each whole second of the caller's clock, and
/// counts the ones it holds back. Lock-free, so one shared `static` serves every thread.
#[derive(Debug)]
pub struct Throttle {
    per_second: u32,
    /// The current second (high 32 bits) and the lines written in it (low 32 bits): one word,
    /// so that moving to a new second and counting its first line are one step.
    window: AtomicU64,
    /// Lines held back since the last one written.
    suppressed: AtomicU64,
}

impl Throttle {
    /// A throttle of `per_second` lines per second (none pass at 0).
    pub const fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written at `now_secs` (whole seconds of a monotonic clock):
    /// `Some(n)` with the number of lines held back since the last one written, to be reported
    /// on this one; `None` when this line is over the limit (it is counted).
    pub fn admit(&self, now_secs: u32) -> Option<u64> {
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (second, written) = ((current >> 32) as u32, current as u32);
            // A reading older than the window (another thread moved it on since this caller
            // read its clock) counts against the newer second rather than opening an old one.
            let (second, written) = if now_secs > second {
                (now_secs, 0)
            } else {
                (second, written)
            };
            if written >= self.per_second {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let next = (u64::from(second) << 32) | u64::from(written + 1);
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                // Lines held back meanwhile are reported by this line or the next one written;
                // each is counted once.
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_limit_are_held_back_and_reported_by_the_next_one() {
        let throttle = Throttle::new(3);
        let first: Vec<Option<u64>> = (0..5).map(|_| throttle.admit(7)).collect();
        assert_eq!(first, [Some(0), Some(0), Some(0), None, None]);
        // The next second: a fresh allowance, and its first line reports the two held back.
        assert_eq!(throttle.admit(8), Some(2));
        assert_eq!(throttle.admit(8), Some(0));
        // A clock reading from before the window counts against the current second.
        assert_eq!(throttle.admit(7), Some(0));
        assert_eq!(throttle.admit(7), None);
        assert_eq!(throttle.admit(8), None);
        // Seconds later: one held back since the last line written.
        assert_eq!(throttle.admit(20), Some(2));
    }

    #[test]
    fn threads_together_get_the_limit_and_every_line_held_back_is_counted() {
        let throttle = Throttle::new(10);
        let written = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..1_000).filter(|_| throttle.admit(1).is_some()).count()))
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().unwrap())
                .sum::<usize>()
        });
        assert_eq!(written, 10);
        assert_eq!(throttle.admit(2), Some(4_000 - 10));
    }

    #[test]
    fn a_zero_limit_lets_nothing_through() {
        let throttle = Throttle::new(0);
        assert_eq!(throttle.admit(1), None);
        assert_eq!(throttle.admit(2), None);
    }
}
