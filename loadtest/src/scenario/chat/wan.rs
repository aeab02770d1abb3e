//! `chat --wan-config`: phones of linked tern clusters in several datacenters. The `[wan]`
//! section of a node's configuration names the datacenters, their client addresses and the rule
//! that gives every user a home datacenter; each phone logs in at its home's nodes, and each
//! pair is a same-datacenter or a cross-datacenter conversation.

use std::net::SocketAddr;
use std::path::Path;

use tern::client::ClientTls;
use tern::wan::{Directory, WanConfig};

use crate::dial::Dialer;
use crate::error::LoadError;
use crate::target::resolve_all;

/// Whether the two users of a pair are homed in one datacenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairClass {
    /// Both homed in the same datacenter: their messages stay in it.
    Same,
    /// Homed in different datacenters: their messages cross the link between them.
    Cross,
}

/// The datacenters of a run: the home of every user, and where each datacenter's phones log in.
#[derive(Debug, Clone)]
pub struct Datacenters {
    directory: Directory,
    /// Per datacenter (in configuration order), its client addresses; `None` when it lists
    /// none (its phones then use `--server`).
    dialers: Vec<Option<Dialer>>,
}

/// Reads the `[wan]` table of the TOML file at `path` (the rest of the file is not looked at).
pub fn load_section(path: &Path) -> Result<WanConfig, LoadError> {
    let error = |reason: String| LoadError::WanConfig {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    parse_section(&text).map_err(error)
}

/// The `[wan]` table of a node's configuration text, checked for what the load needs: at least
/// one datacenter, names unique, overrides naming listed datacenters.
pub fn parse_section(text: &str) -> Result<WanConfig, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let section = table
        .remove("wan")
        .ok_or_else(|| "it has no [wan] section".to_owned())?;
    let wan: WanConfig = section.try_into().map_err(|e| format!("[wan]: {e}"))?;
    if wan.datacenters.is_empty() {
        return Err("[wan] lists no datacenters".to_owned());
    }
    for (index, dc) in wan.datacenters.iter().enumerate() {
        if wan.datacenters[..index].iter().any(|d| d.name == dc.name) {
            return Err(format!("[wan] lists datacenter {} twice", dc.name));
        }
    }
    if let Some((user, home)) = wan
        .homes
        .iter()
        .find(|(_, home)| !wan.datacenters.iter().any(|dc| &dc.name == *home))
    {
        return Err(format!(
            "wan.homes: {user:?} is homed in {home:?}, which is not a datacenter"
        ));
    }
    Ok(wan)
}

/// User names of pair `pair`: `<prefix>a<pair>` and `<prefix>b<pair>` (phones `2 * pair` and
/// `2 * pair + 1`).
pub fn pair_users(prefix: &str, pair: usize) -> (String, String) {
    (format!("{prefix}a{pair}"), format!("{prefix}b{pair}"))
}

impl Datacenters {
    /// The datacenters of `wan`, their client addresses resolved; their phones connect under
    /// TLS when `tls` is given.
    pub async fn new(wan: &WanConfig, tls: Option<&ClientTls>) -> Result<Self, LoadError> {
        let mut dialers = Vec::with_capacity(wan.datacenters.len());
        for dc in &wan.datacenters {
            dialers.push(if dc.clients.is_empty() {
                None
            } else {
                let addrs: Vec<SocketAddr> = resolve_all(&dc.clients.join(",")).await?;
                Some(Dialer::spread(&addrs)?.with_tls(tls.cloned()))
            });
        }
        Ok(Self {
            directory: Directory::new(wan),
            dialers,
        })
    }

    /// The index of `user`'s home datacenter.
    pub fn home(&self, user: &str) -> usize {
        self.directory.home(user)
    }

    /// The name of datacenter `index`.
    pub fn name(&self, index: usize) -> &str {
        self.directory.name(index)
    }

    /// How many datacenters there are.
    pub fn len(&self) -> usize {
        self.directory.len()
    }

    /// Where phones homed in datacenter `index` log in (`None`: it lists no client address).
    pub fn dialer(&self, index: usize) -> Option<&Dialer> {
        self.dialers.get(index).and_then(Option::as_ref)
    }

    /// Names of the datacenters that list no client address.
    pub fn without_clients(&self) -> Vec<&str> {
        (0..self.dialers.len())
            .filter(|index| self.dialers[*index].is_none())
            .map(|index| self.name(index))
            .collect()
    }

    /// Whether pair `pair` (users with `prefix`) is a same- or a cross-datacenter conversation.
    pub fn classify(&self, prefix: &str, pair: usize) -> PairClass {
        classify(&self.directory, prefix, pair)
    }

    /// Pairs of `0..pairs` that are (same-datacenter, cross-datacenter) conversations.
    pub fn census(&self, prefix: &str, pairs: usize) -> (usize, usize) {
        census(&self.directory, prefix, pairs)
    }
}

/// Whether pair `pair` (users with `prefix`) is a same- or a cross-datacenter conversation.
pub fn classify(directory: &Directory, prefix: &str, pair: usize) -> PairClass {
    let (a, b) = pair_users(prefix, pair);
    if directory.home(&a) == directory.home(&b) {
        PairClass::Same
    } else {
        PairClass::Cross
    }
}

/// Pairs of `0..pairs` that are (same-datacenter, cross-datacenter) conversations.
pub fn census(directory: &Directory, prefix: &str, pairs: usize) -> (usize, usize) {
    let cross = (0..pairs)
        .filter(|pair| classify(directory, prefix, *pair) == PairClass::Cross)
        .count();
    (pairs - cross, cross)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's configuration: other sections and unknown keys outside `[wan]` are ignored.
    const CONFIG: &str = r#"
        [node]
        client_addr = "10.78.1.1:7400"
        not_a_key_of_the_loader = true

        [cluster]
        node = 1

        [wan]
        datacenter = "east"
        secret_file = "/nonexistent/secret"
        homes = { "load-a0" = "east", "load-b0" = "west", "load-a1" = "west", "load-b1" = "west" }

        [[wan.datacenters]]
        name = "east"
        clients = ["10.78.1.1:7400", "10.78.1.2:7400"]
        gateways = [{ node = 1, addr = "10.78.0.1:7404" }]

        [[wan.datacenters]]
        name = "west"
        clients = ["10.78.2.4:7400"]
        gateways = [{ node = 4, addr = "10.78.0.1:7405" }]
        prefixes = ["+1"]
    "#;

    fn directory() -> Directory {
        Directory::new(&parse_section(CONFIG).unwrap())
    }

    #[test]
    fn only_the_wan_section_is_read() {
        let wan = parse_section(CONFIG).unwrap();
        assert_eq!(wan.datacenter, "east");
        assert_eq!(wan.datacenters.len(), 2);
        assert_eq!(wan.datacenters[1].clients, ["10.78.2.4:7400"]);
        assert!(parse_section("[node]\nid = \"x\"\n").is_err());
        let unknown = CONFIG.replace("datacenter = \"east\"", "datacentre = \"east\"");
        assert!(parse_section(&unknown).unwrap_err().contains("[wan]"));
        let bad_home = CONFIG.replace("\"load-b1\" = \"west\"", "\"load-b1\" = \"north\"");
        assert!(parse_section(&bad_home).unwrap_err().contains("north"));
    }

    #[test]
    fn pairs_are_same_or_cross_by_their_users_homes() {
        let directory = directory();
        // Pair 0: east and west; pair 1: both west (overrides).
        assert_eq!(classify(&directory, "load-", 0), PairClass::Cross);
        assert_eq!(classify(&directory, "load-", 1), PairClass::Same);
        // Prefixes: both users of every "+1" pair are homed in west.
        assert_eq!(census(&directory, "+1", 50), (50, 0));
        // The hash rule spreads the other pairs over both datacenters: about half cross.
        let (same, cross) = census(&directory, "hashed-", 1000);
        assert_eq!(same + cross, 1000);
        assert!((400..600).contains(&cross), "{same} same, {cross} cross");
        // The census agrees with pair-by-pair classification.
        let by_pair = (0..1000)
            .filter(|pair| classify(&directory, "hashed-", *pair) == PairClass::Cross)
            .count();
        assert_eq!(by_pair, cross);
    }

    #[tokio::test]
    async fn each_datacenter_gets_its_own_client_addresses() {
        let wan = parse_section(CONFIG).unwrap();
        let mut no_clients = wan.clone();
        no_clients.datacenters[1].clients.clear();
        let dcs = Datacenters::new(&wan, None).await.unwrap();
        assert_eq!(dcs.home("load-b0"), 1);
        assert_eq!(dcs.name(1), "west");
        let east: Vec<SocketAddr> = ["10.78.1.1:7400", "10.78.1.2:7400"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(dcs.dialer(0).unwrap().servers(), east.as_slice());
        assert!(dcs.without_clients().is_empty());
        let dcs = Datacenters::new(&no_clients, None).await.unwrap();
        assert!(dcs.dialer(1).is_none());
        assert_eq!(dcs.without_clients(), ["west"]);
    }
}
