//! [`Pending`]: the future of one store operation, for async callers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::error::StoreError;

/// The outcome of one queued store operation; resolves once its database thread has run it
/// (to [`StoreError::Closed`] if the thread died first).
#[derive(Debug)]
#[must_use = "the operation's outcome is only known when this resolves"]
pub struct Pending<T> {
    receiver: oneshot::Receiver<Result<T, StoreError>>,
}

impl<T: Send + 'static> Pending<T> {
    /// A completion callback and the future it resolves.
    pub(crate) fn channel() -> (impl FnOnce(Result<T, StoreError>) + Send + 'static, Self) {
        let (sender, receiver) = oneshot::channel();
        let done = move |result| {
            // The caller stopped waiting; the operation ran all the same.
            let _ = sender.send(result);
        };
        (done, Pending { receiver })
    }
}

impl<T> Pending<T> {
    /// The raw channel the outcome arrives on (closed without a value if the thread died).
    pub fn into_receiver(self) -> oneshot::Receiver<Result<T, StoreError>> {
        self.receiver
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, StoreError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(context)
            .map(|received| received.unwrap_or(Err(StoreError::Closed)))
    }
}
