//! A link's pending outbound calls: call id to the waiting caller. Replies complete them, the
//! caller's deadline removes them, and a link that goes down fails every one at once.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::error::CallError;

/// What a caller waits on.
pub(crate) type Waiter = oneshot::Receiver<Result<Bytes, CallError>>;

/// The pending calls of one link.
#[derive(Debug, Default)]
pub(crate) struct PendingCalls {
    next_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    closed: bool,
    /// In id order, so that a closed link fails its calls in the order they were made.
    waiting: BTreeMap<u64, oneshot::Sender<Result<Bytes, CallError>>>,
}

impl PendingCalls {
    /// Registers a new call; `None` once the link is down.
    pub(crate) fn register(&self) -> Option<(u64, Waiter)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed {
            return None;
        }
        state.waiting.insert(id, tx);
        Some((id, rx))
    }

    /// Hands a reply to its caller; false if nobody waits for it any more (deadline passed).
    pub(crate) fn complete(&self, id: u64, result: Result<Bytes, CallError>) -> bool {
        let sender = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.waiting.remove(&id)
        };
        match sender {
            Some(sender) => sender.send(result).is_ok(),
            None => false,
        }
    }

    /// Forgets a call whose caller stopped waiting.
    pub(crate) fn forget(&self, id: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.waiting.remove(&id);
    }

    /// Fails every pending call with `error` and refuses new ones (the link is down).
    pub(crate) fn close(&self, error: &CallError) {
        let waiting = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.closed = true;
            std::mem::take(&mut state.waiting)
        };
        for (_, sender) in waiting {
            let _ = sender.send(Err(error.clone()));
        }
    }

    /// Calls waiting for a reply.
    pub(crate) fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_complete_their_call_and_closing_fails_the_rest() {
        let calls = PendingCalls::default();
        let (a, wait_a) = calls.register().expect("open");
        let (_b, wait_b) = calls.register().expect("open");
        assert!(calls.complete(a, Ok(Bytes::from_static(b"ok"))));
        assert!(
            !calls.complete(a, Ok(Bytes::new())),
            "a second reply finds nobody"
        );
        assert_eq!(wait_a.await.expect("sent"), Ok(Bytes::from_static(b"ok")));
        calls.close(&CallError::LinkDown);
        assert_eq!(wait_b.await.expect("sent"), Err(CallError::LinkDown));
        assert!(calls.register().is_none());
        assert_eq!(calls.len(), 0);
    }
}
