//! A background thread's handle that `&self` methods can look at and join once.

use std::sync::{Mutex, PoisonError};
use std::thread::{self, JoinHandle};

/// The handle of a thread owned by a shared value (the journal, a store): kept behind a lock so
/// that health checks and shutdown, which only hold `&self`, can see it and join it.
#[derive(Debug)]
pub(crate) struct ThreadHandle<T>(Mutex<Option<JoinHandle<T>>>);

impl<T> ThreadHandle<T> {
    pub(crate) fn new(handle: JoinHandle<T>) -> Self {
        Self(Mutex::new(Some(handle)))
    }

    /// True while the thread runs: false once it ended, or was joined.
    pub(crate) fn running(&self) -> bool {
        self.slot()
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }

    /// Waits for the thread to end and returns how it ended (`Err` if it panicked); `None` if it
    /// was joined before. Blocks.
    pub(crate) fn join(&self) -> Option<thread::Result<T>> {
        let thread = self.slot().take();
        thread.map(JoinHandle::join)
    }

    /// The handle; a panic while it was locked does not matter to a handle.
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<T>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
