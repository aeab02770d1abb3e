//! The global directory: which datacenter is each user's (and each group's) home.
//!
//! A rule plus overrides, not a replicated table: `wan.homes` names a user's home outright;
//! otherwise an id ending in `@<datacenter>` is homed there (groups get the suffix of the
//! datacenter they are created in); otherwise the longest matching `prefixes` entry of any
//! datacenter (phone numbers by country code); otherwise a hash of the id spread evenly over
//! the datacenters. Every node of every
//! datacenter computes the same answer from the same configuration with no look-up and no
//! round trip, and a partition between datacenters cannot make the directory unavailable or
//! let two sides disagree (a table kept by consensus across oceans would do both: every
//! change pays an ocean round trip and a cut leaves the minority side unable to write). The
//! price: a home moves only by a configuration change rolled out everywhere, and moving a
//! user's mailbox with it is an operator's job.

use std::collections::HashMap;

use super::config::WanConfig;
use crate::mesh::backoff::splitmix64;
use crate::shard::key_hash;

/// Mixed into the home hash, so that homes do not follow slots or shards (both take the key
/// hash modulo a count).
const HOME_SALT: u64 = 0x686f_6d65_6463_7331;

/// The home datacenter of every key.
#[derive(Clone, Debug)]
pub struct Directory {
    names: Vec<String>,
    local: usize,
    overrides: HashMap<String, usize>,
    /// (prefix, datacenter), longest prefix first.
    prefixes: Vec<(String, usize)>,
}

impl Directory {
    /// The directory of a validated `[wan]` section.
    pub fn new(config: &WanConfig) -> Directory {
        let index_of = |name: &str| {
            config
                .datacenters
                .iter()
                .position(|dc| dc.name == name)
                .unwrap_or(0)
        };
        let mut prefixes: Vec<(String, usize)> = config
            .datacenters
            .iter()
            .enumerate()
            .flat_map(|(index, dc)| dc.prefixes.iter().map(move |p| (p.clone(), index)))
            .collect();
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Directory {
            names: config
                .datacenters
                .iter()
                .map(|dc| dc.name.clone())
                .collect(),
            local: config.local_index().unwrap_or(0),
            overrides: config
                .homes
                .iter()
                .map(|(user, home)| (user.clone(), index_of(home)))
                .collect(),
            prefixes,
        }
    }

    /// The index of `key`'s home datacenter.
    pub fn home(&self, key: &str) -> usize {
        if let Some(home) = self.overrides.get(key) {
            return *home;
        }
        if let Some((_, suffix)) = key.rsplit_once('@')
            && let Some(home) = self.names.iter().position(|name| name == suffix)
        {
            return home;
        }
        if let Some((_, home)) = self.prefixes.iter().find(|(p, _)| key.starts_with(p)) {
            return *home;
        }
        (splitmix64(key_hash(key.as_bytes()) ^ HOME_SALT) % self.names.len().max(1) as u64) as usize
    }

    /// Whether `key` is homed in this cluster's datacenter.
    pub fn is_local(&self, key: &str) -> bool {
        self.home(key) == self.local
    }

    /// This cluster's datacenter's index.
    pub fn local(&self) -> usize {
        self.local
    }

    /// The name of datacenter `index`.
    pub fn name(&self, index: usize) -> &str {
        self.names.get(index).map_or("", String::as_str)
    }

    /// How many datacenters there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none (never, for a validated section).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory() -> Directory {
        let mut wan: WanConfig = toml::from_str(
            r#"
            datacenter = "east"
            homes = { "alice" = "west", "+1555" = "east" }
            [[datacenters]]
            name = "east"
            gateways = [{ node = 1, addr = "127.0.0.1:7404" }]
            [[datacenters]]
            name = "west"
            gateways = [{ node = 1, addr = "127.0.0.2:7404" }]
            prefixes = ["+1", "+1555"]
            [[datacenters]]
            name = "south"
            gateways = [{ node = 1, addr = "127.0.0.3:7404" }]
            prefixes = ["+15"]
            "#,
        )
        .expect("parses");
        wan.resolve_secret(None);
        Directory::new(&wan)
    }

    #[test]
    fn overrides_win_then_the_longest_prefix_then_the_hash() {
        let directory = directory();
        assert_eq!(directory.home("alice"), 1);
        assert_eq!(directory.home("+1555"), 0);
        assert_eq!(directory.home("+15551234"), 1);
        assert_eq!(directory.home("+1512"), 2);
        assert_eq!(directory.home("+1212"), 1);
        assert_eq!(directory.home("g1f@south"), 2);
        assert_eq!(directory.home("+1555@south"), 2);
        assert_eq!(directory.home("bob@north"), directory.home("bob@north"));
        assert!(!directory.is_local("alice"));
        assert_eq!(directory.name(1), "west");
    }

    #[test]
    fn hashed_homes_spread_evenly_and_independently_of_slots() {
        let directory = directory();
        let mut homes = [0usize; 3];
        let mut by_slot_parity = [[0usize; 3]; 2];
        for i in 0..30_000 {
            let key = format!("user-{i}");
            let home = directory.home(&key);
            homes[home] += 1;
            let slot = crate::cluster::route::slot_of(key.as_bytes(), 512);
            by_slot_parity[slot as usize % 2][home] += 1;
        }
        assert!(
            homes.iter().all(|n| (9_000..11_000).contains(n)),
            "{homes:?}"
        );
        for parity in by_slot_parity {
            assert!(parity.iter().all(|n| *n > 4_000), "{parity:?}");
        }
    }

    #[test]
    fn homes_are_stable_across_builds() {
        // A change here moves users of live datacenters: never change the rule.
        let directory = directory();
        let homes: Vec<usize> = ["bob", "carol", "dave", "erin"]
            .iter()
            .map(|user| directory.home(user))
            .collect();
        assert_eq!(homes, vec![1, 0, 1, 0]);
    }
}
