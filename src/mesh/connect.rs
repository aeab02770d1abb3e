//! How links come to be and go: the accept loop, the dialers, the handshake outcome (refusals
//! logged and counted), installing an authenticated link as its peer's, and the guard that takes
//! it out of service when its driver ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::Semaphore;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::handshake::{self, Authenticated, Role};
use super::link::{self, Link};
use super::peers::{Peer, lock};
use super::{BoxFuture, CallError, HandshakeError, Inner, NodeId, Transport, config, telemetry};

impl<T: Transport> Inner<T> {
    /// The peer entry for an authenticated node, created if it announced itself.
    pub(super) fn peer_for(self: &Arc<Self>, auth: &Authenticated, remote: &str) -> Arc<Peer> {
        let announced = dialable(&auth.listen, remote);
        let peer = {
            let mut peers = lock(&self.peers);
            let peer = peers
                .entry(auth.node)
                .or_insert_with(|| Peer::new(auth.node, announced.clone()));
            if peer.addr().is_empty() {
                *lock(&peer.addr) = announced;
            }
            Arc::clone(peer)
        };
        self.ensure_dialer(&peer);
        peer
    }

    pub(super) async fn accept_loop(self: Arc<Self>, mut listener: T::Listener) {
        let handshakes = Arc::new(Semaphore::new(config::MAX_PENDING_HANDSHAKES));
        loop {
            let accepted = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                accepted = self.transport.accept(&mut listener) => accepted,
            };
            let (stream, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %err, "mesh accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
                tracing::warn!(%remote, "too many mesh handshakes pending, connection closed");
                continue;
            };
            let inner = Arc::clone(&self);
            self.spawn(async move {
                let secured = tokio::time::timeout(
                    config::HANDSHAKE_TIMEOUT,
                    inner.transport.secure(stream, &remote),
                )
                .await;
                let mut stream = match secured {
                    Ok(Ok(stream)) => stream,
                    // Counted and logged with its reason by the transport; a timeout here.
                    Ok(Err(_)) => return,
                    Err(_) => {
                        inner.handshake_failed(&remote, None, &HandshakeError::Timeout);
                        return;
                    }
                };
                let auth =
                    match handshake::handshake(&mut stream, Role::Acceptor, &inner.identity, None)
                        .await
                    {
                        Ok(auth) => auth,
                        Err(err) => {
                            inner.handshake_failed(&remote, None, &err);
                            return;
                        }
                    };
                drop(permit);
                let peer = inner.peer_for(&auth, &remote);
                let dialed_by = auth.node;
                if let Some(run) = inner.install(&peer, stream, auth, remote, dialed_by) {
                    run.await;
                }
            });
        }
    }

    pub(super) async fn dial_loop(self: Arc<Self>, peer: Arc<Peer>) {
        let seed = self
            .jitter_seed
            .map(|seed| super::backoff::splitmix64(seed ^ peer.id));
        let mut backoff = Backoff::with_seed(self.backoff.0, self.backoff.1, seed);
        let me = self.identity.node;
        let mut dialed_by = peer.dialed_by.subscribe();
        let mut first = true;
        loop {
            if !first {
                let delay = backoff.next_delay();
                tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            first = false;
            // Dial while no link of ours is up: none, or one the peer dialed (which ours replaces,
            // so that every pair settles on the link its lower id dialed).
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                changed = dialed_by.wait_for(|by| *by != Some(me)) => if changed.is_err() { return },
            }
            let addr = peer.addr();
            let attempt = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                attempt = self.dial(&peer, &addr) => attempt,
            };
            let (stream, auth) = match attempt {
                Ok(established) => established,
                Err(err) => {
                    self.handshake_failed(&addr, Some(peer.id), &err);
                    continue;
                }
            };
            let Some(run) = self.install(&peer, stream, auth, addr, self.identity.node) else {
                continue;
            };
            let Some(_driver) = self.spawn(run) else {
                return;
            };
            let since = Instant::now();
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                changed = dialed_by.wait_for(|by| *by != Some(me)) => if changed.is_err() { return },
            }
            // A link that lasted is a success: the next dial starts from the shortest delay.
            if since.elapsed() >= self.timings.dead_after {
                backoff.reset();
            }
        }
    }

    /// Connects to a peer and runs the dialer's side of the handshake.
    pub(super) async fn dial(
        &self,
        peer: &Peer,
        addr: &str,
    ) -> Result<(T::Stream, Authenticated), HandshakeError> {
        // A blackholed address would otherwise hold the dialer for minutes.
        let mut stream =
            match tokio::time::timeout(config::HANDSHAKE_TIMEOUT, self.transport.connect(addr))
                .await
            {
                Ok(connected) => connected?,
                Err(_) => return Err(HandshakeError::Timeout),
            };
        let auth =
            handshake::handshake(&mut stream, Role::Dialer, &self.identity, Some(peer.id)).await?;
        Ok((stream, auth))
    }

    /// Installs an authenticated link as the peer's link and returns its driver, or `None` if
    /// the peer's current link stays (the new stream is then dropped, which closes it).
    pub(super) fn install(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        stream: T::Stream,
        auth: Authenticated,
        addr: String,
        dialed_by: NodeId,
    ) -> Option<BoxFuture<'static, ()>> {
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        let (link, receivers) = Link::new(
            id,
            peer.id,
            dialed_by,
            addr,
            self.lane_capacity,
            self.shutdown.child_token(),
            self.peer_label,
        );
        // Known before the link is: a call arriving on it finds the incarnation it came from.
        if auth.incarnation != 0 {
            peer.set_incarnation(auth.incarnation);
        }
        if !peer.install(self.identity.node, &link) {
            tracing::debug!(peer = peer.id, dialed_by, "duplicate mesh link closed");
            return None;
        }
        let down = Down {
            peer: Arc::clone(peer),
            link: Arc::clone(&link),
            shutdown: self.shutdown.clone(),
        };
        // A peer removed meanwhile keeps no link.
        let known = lock(&self.peers)
            .get(&peer.id)
            .is_some_and(|current| Arc::ptr_eq(current, peer));
        if !known {
            return None;
        }
        tracing::info!(
            peer = peer.id,
            addr = %link.addr,
            outbound = dialed_by == self.identity.node,
            "mesh link up"
        );
        let handlers = Arc::clone(&self.handlers);
        let timings = self.timings;
        Some(Box::pin(async move {
            let end = link::drive(
                Arc::clone(&link),
                stream,
                auth.leftover,
                receivers,
                handlers,
                timings,
            )
            .await;
            match &end {
                link::LinkEnd::Closed | link::LinkEnd::PeerClosed => {
                    tracing::info!(peer = link.peer, reason = %end, "mesh link down");
                }
                _ => tracing::warn!(peer = link.peer, reason = %end, "mesh link down"),
            }
            drop(down);
        }))
    }

    pub(super) fn handshake_failed(&self, addr: &str, peer: Option<NodeId>, err: &HandshakeError) {
        if err.is_refusal() || matches!(err, HandshakeError::Refused(_)) {
            telemetry::handshake_refused(err.reason());
            tracing::warn!(%addr, ?peer, reason = err.reason(), error = %err, "mesh handshake refused");
        } else {
            tracing::debug!(%addr, ?peer, error = %err, "mesh handshake failed");
        }
    }
}

/// Takes a link out of service when its driver ends, however it ends (return, abort, panic).
struct Down {
    peer: Arc<Peer>,
    link: Arc<Link>,
    shutdown: CancellationToken,
}

impl Drop for Down {
    fn drop(&mut self) {
        let error = if self.shutdown.is_cancelled() {
            CallError::ShuttingDown
        } else {
            CallError::LinkDown
        };
        self.link.mark_down(&error);
        self.peer.uninstall(&self.link);
    }
}

/// The address to dial a peer at: the one it announced, with the host it connected from when it
/// announced a wildcard host (it listens on every interface).
fn dialable(announced: &str, remote: &str) -> String {
    use std::net::SocketAddr;
    match (
        announced.parse::<SocketAddr>(),
        remote.parse::<SocketAddr>(),
    ) {
        (Ok(listen), Ok(remote)) if listen.ip().is_unspecified() => {
            SocketAddr::new(remote.ip(), listen.port()).to_string()
        }
        _ => announced.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::dialable;

    #[test]
    fn a_wildcard_listen_address_is_dialed_at_the_host_it_came_from() {
        assert_eq!(dialable("0.0.0.0:7000", "10.0.0.5:40000"), "10.0.0.5:7000");
        assert_eq!(dialable("[::]:7000", "[fd00::5]:40000"), "[fd00::5]:7000");
        assert_eq!(dialable("10.0.0.6:7000", "10.0.0.5:40000"), "10.0.0.6:7000");
        assert_eq!(dialable("node2:7000", "10.0.0.5:40000"), "node2:7000");
    }
}
