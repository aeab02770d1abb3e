//! [`Countdown`]: joins the outcomes of several databases' operations into one completion.

use std::sync::{Mutex, PoisonError};

use super::error::StoreError;

/// The completion the last outcome calls.
pub(crate) type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Joins the outcomes of several databases into one completion, called once.
pub(crate) struct Countdown {
    state: Mutex<CountdownState>,
}

struct CountdownState {
    remaining: usize,
    first_error: Option<StoreError>,
    done: Option<Done>,
}

impl Countdown {
    pub(crate) fn new(count: usize, done: Done) -> Self {
        let countdown = Countdown {
            state: Mutex::new(CountdownState {
                remaining: count,
                first_error: None,
                done: Some(done),
            }),
        };
        if count == 0 {
            countdown.finish();
        }
        countdown
    }

    /// Counts one database's outcome; the last one calls `done`.
    pub(crate) fn arrive(&self, result: Result<(), StoreError>) {
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.remaining = state.remaining.saturating_sub(1);
            if let Err(error) = result {
                state.first_error.get_or_insert(error);
            }
            if state.remaining > 0 {
                return;
            }
        }
        self.finish();
    }

    /// Calls `done` (once) with the first error, outside the lock.
    fn finish(&self) {
        let (done, outcome) = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let outcome = state.first_error.take().map_or(Ok(()), Err);
            (state.done.take(), outcome)
        };
        if let Some(done) = done {
            done(outcome);
        }
    }
}
