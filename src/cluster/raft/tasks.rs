//! The background tasks a Raft group owns (the metadata group's controller and registration,
//! the slot groups' ticker and founding): stopped together, and aborted when their owner is
//! dropped.

use std::sync::{Mutex, MutexGuard};

use tokio::task::JoinHandle;

/// Tasks that end with their owner.
#[derive(Default)]
pub(crate) struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Tasks {
    fn lock(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `task` (and forgets those that ended).
    pub(crate) fn push(&self, task: JoinHandle<()>) {
        let mut tasks = self.lock();
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
    }

    /// Aborts every task and waits until each has ended.
    pub(crate) async fn stop(&self) {
        let tasks = std::mem::take(&mut *self.lock());
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in self.lock().drain(..) {
            task.abort();
        }
    }
}
