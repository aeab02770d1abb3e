// Copyright (c) Sean Lawlor
//
// This source code is licensed under both the MIT license found in the
// LICENSE-MIT file in the root directory of this source tree.

//! The unbounded queue behind an actor's message and supervision ports.
//!
//! An actor owns two such queues for its whole life, and most actors are idle most of the time.
//! A tokio unbounded channel costs about 0.8-1 KB each before the first message (its shared
//! state is padded to cache lines, and its first block of 32 slots is allocated up front). This
//! queue is one small allocation (a mutex around a `VecDeque` and the receiver's waker); its
//! buffer is allocated when a message waits and given back when the receiver finds the queue
//! empty and goes to sleep, so an idle actor holds none.
//!
//! Semantics are those of the tokio channel as the ports use it: `send` fails (returning the
//! value) once the receiver closed or was dropped; `recv` yields messages in order and `None`
//! once the queue is closed (receiver closed, or the sender dropped) and empty; `recv` is
//! cancel-safe (a message is taken only by the poll that returns it).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// A message that could not be sent: the receiver is gone. Holds the message.
#[derive(Debug)]
pub(crate) struct PortSendError<T>(pub(crate) T);

/// What the sender and the receiver share.
struct State<T> {
    queue: VecDeque<T>,
    waker: Option<Waker>,
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // No code that can panic runs under the lock, but a poisoned lock still holds a
        // consistent queue.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The sending half of an actor port.
pub(crate) struct PortSender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving half of an actor port.
pub(crate) struct PortReceiver<T> {
    shared: Arc<Shared<T>>,
}

/// A new, empty port.
pub(crate) fn actor_port<T>() -> (PortSender<T>, PortReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            waker: None,
            closed: false,
        }),
    });
    (
        PortSender {
            shared: shared.clone(),
        },
        PortReceiver { shared },
    )
}

impl<T> PortSender<T> {
    /// Queues `value` and wakes the receiver; fails when the receiver closed or is gone.
    pub(crate) fn send(&self, value: T) -> Result<(), PortSendError<T>> {
        let waker = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(PortSendError(value));
            }
            state.queue.push_back(value);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Drop for PortSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> PortReceiver<T> {
    /// The next message; `None` once the port is closed and empty.
    pub(crate) fn recv(&mut self) -> impl Future<Output = Option<T>> + '_ {
        std::future::poll_fn(move |cx| self.poll_recv(cx))
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.shared.lock();
        if let Some(value) = state.queue.pop_front() {
            return Poll::Ready(Some(value));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        // Going to sleep: an idle actor keeps no buffer.
        if state.queue.capacity() > 0 {
            state.queue = VecDeque::new();
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next message if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Result<T, ()> {
        self.shared.lock().queue.pop_front().ok_or(())
    }

    /// Refuses further sends; queued messages can still be received.
    pub(crate) fn close(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.waker = None;
    }
}

impl<T> Drop for PortReceiver<T> {
    fn drop(&mut self) {
        let queue = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.waker = None;
            std::mem::take(&mut state.queue)
        };
        // Messages are dropped outside the lock (their destructors may send to this port).
        drop(queue);
    }
}
