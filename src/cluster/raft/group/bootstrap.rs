//! Bootstrapping the metadata group: the lowest seed creates it, but only once a majority of the
//! seeds (itself included) answer that they hold no group and none answers that it does. A
//! lowest seed whose data directory was lost therefore rejoins the group the others hold instead
//! of founding a second one; with too few seeds reachable it waits.

use std::sync::Arc;

use futures_util::future::join_all;

use super::{RETRY_PAUSE, Shared};
use crate::cluster::raft::network::{self, RPC_DEADLINE};
use crate::proto::mesh as pb;

/// What the other seeds said.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Census {
    /// One of them holds the group: this node joins it.
    Exists,
    /// A majority of the seeds, this node included, hold nothing: found the group.
    Fresh,
    /// Too few answered to tell.
    Unknown,
}

/// Counts the answers: `fresh` seeds without a group besides this one, `holding` seeds with one,
/// out of `seeds` in all.
pub(super) fn census(seeds: usize, fresh: usize, holding: usize) -> Census {
    if holding > 0 {
        Census::Exists
    } else if (fresh + 1) * 2 > seeds {
        Census::Fresh
    } else {
        Census::Unknown
    }
}

/// Asks every other seed whether it holds the group, until the census tells; then founds the
/// group (and registers the seeds) or leaves joining to the node's own registration.
pub(super) async fn bootstrap(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut rounds = 0u32;
    loop {
        match shared.raft.is_initialized().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "metadata bootstrap stopped");
                return;
            }
        }
        match probe(&shared).await {
            Census::Exists => {
                tracing::info!("a seed holds the metadata group already: joining it");
                return;
            }
            Census::Fresh => {
                if let Err(error) = shared.initialize().await {
                    tracing::warn!(%error, "metadata bootstrap failed");
                    return;
                }
                let seeds = shared.config.seeds.clone();
                super::tasks::register(shared, seeds).await;
                return;
            }
            Census::Unknown => {
                rounds += 1;
                if rounds.is_multiple_of(50) {
                    tracing::warn!(
                        rounds,
                        "metadata group not founded: fewer than a majority of the seeds answer"
                    );
                }
            }
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            () = tokio::time::sleep(RETRY_PAUSE * 3) => {}
        }
    }
}

async fn probe(shared: &Shared) -> Census {
    let others: Vec<u64> = shared
        .config
        .seeds
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id != shared.config.node)
        .collect();
    let answers = join_all(others.iter().map(|peer| {
        let request = pb::raft_request::Request::Probe(pb::ProbeRequest {});
        network::call(&shared.transport, *peer, request, RPC_DEADLINE)
    }))
    .await;
    let (mut fresh, mut holding) = (0, 0);
    for answer in answers {
        if let Ok(pb::raft_response::Response::Probe(probe)) = answer {
            if probe.initialized {
                holding += 1;
            } else {
                fresh += 1;
            }
        }
    }
    census(shared.config.seeds.len(), fresh, holding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_founded_only_by_a_fresh_majority_and_never_beside_one() {
        assert_eq!(census(1, 0, 0), Census::Fresh);
        assert_eq!(census(3, 0, 0), Census::Unknown);
        assert_eq!(census(3, 1, 0), Census::Fresh);
        assert_eq!(census(3, 1, 1), Census::Exists);
        assert_eq!(census(3, 0, 1), Census::Exists);
        assert_eq!(census(5, 1, 0), Census::Unknown);
        assert_eq!(census(5, 2, 0), Census::Fresh);
        assert_eq!(census(4, 1, 0), Census::Unknown);
    }
}
