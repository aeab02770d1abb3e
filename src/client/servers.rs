//! The addresses a phone may connect to: those it was given, then those a `Welcome` announced,
//! tried in turn.

use crate::proto::v1::Welcome;

/// A phone's list of server addresses (host:port) and the one it uses now.
///
/// It starts on the first address given. [`ServerList::advance`] moves to the next one (after a
/// failed connect or a lost connection), wrapping around. [`ServerList::learn`] adds the
/// addresses a `Welcome` announced that are not known yet, at the end, so the given order is
/// kept; an address is never dropped (a node that is down now may be back later).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerList {
    addrs: Vec<String>,
    current: usize,
}

impl ServerList {
    /// The given addresses, duplicates and empty strings removed; the first is current.
    pub fn new<S: Into<String>>(addrs: impl IntoIterator<Item = S>) -> Self {
        let mut list = Self::default();
        for addr in addrs {
            list.add(addr.into());
        }
        list
    }

    /// Every known address, in the order they are tried.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The address to connect to now; `None` when the list is empty.
    pub fn current(&self) -> Option<&str> {
        self.addrs.get(self.current).map(String::as_str)
    }

    /// Moves to the next address, after the last one back to the first.
    pub fn advance(&mut self) {
        if !self.addrs.is_empty() {
            self.current = (self.current + 1) % self.addrs.len();
        }
    }

    /// Remembers the other nodes a `Welcome` announced; returns how many were new.
    pub fn learn(&mut self, welcome: &Welcome) -> usize {
        let before = self.addrs.len();
        for addr in &welcome.peer_addrs {
            self.add(addr.clone());
        }
        self.addrs.len() - before
    }

    /// Moves to the first of `addrs` (a GoAway's other nodes), adding those not known yet;
    /// without any, to the next address (the one going away is not tried first).
    pub fn prefer(&mut self, addrs: &[String]) {
        for addr in addrs {
            self.add(addr.clone());
        }
        match addrs
            .iter()
            .find_map(|addr| self.addrs.iter().position(|known| known == addr))
        {
            Some(index) => self.current = index,
            None => self.advance(),
        }
    }

    fn add(&mut self, addr: String) {
        if !addr.is_empty() && !self.addrs.contains(&addr) {
            self.addrs.push(addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn welcome(peers: &[&str]) -> Welcome {
        Welcome {
            peer_addrs: peers.iter().map(|peer| (*peer).to_owned()).collect(),
            ..Welcome::default()
        }
    }

    #[test]
    fn the_first_address_is_used_first_and_the_others_in_turn() {
        let mut list = ServerList::new(["a:1", "b:1", "a:1", ""]);
        assert_eq!(list.addrs(), ["a:1", "b:1"]);
        assert_eq!(list.current(), Some("a:1"));
        list.advance();
        assert_eq!(list.current(), Some("b:1"));
        list.advance();
        assert_eq!(list.current(), Some("a:1"));
    }

    #[test]
    fn a_go_away_moves_to_its_first_alternate_or_else_to_the_next() {
        let mut list = ServerList::new(["a:1", "b:1"]);
        list.prefer(&["c:1".to_owned(), "b:1".to_owned()]);
        assert_eq!(list.addrs(), ["a:1", "b:1", "c:1"]);
        assert_eq!(list.current(), Some("c:1"));
        list.prefer(&[]);
        assert_eq!(list.current(), Some("a:1"));
    }

    #[test]
    fn announced_addresses_are_added_once_after_the_given_ones() {
        let mut list = ServerList::new(["a:1"]);
        assert_eq!(list.learn(&welcome(&["b:1", "c:1"])), 2);
        assert_eq!(list.learn(&welcome(&["c:1", "a:1"])), 0);
        assert_eq!(list.addrs(), ["a:1", "b:1", "c:1"]);
        assert_eq!(list.current(), Some("a:1"), "learning does not move");
        // A node no longer announced stays known.
        assert_eq!(list.learn(&welcome(&[])), 0);
        assert_eq!(list.addrs().len(), 3);
    }

    #[test]
    fn an_empty_list_has_no_current_address() {
        let mut list = ServerList::new(Vec::<String>::new());
        list.advance();
        assert_eq!(list.current(), None);
    }
}
