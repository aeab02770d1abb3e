//! The source a phone connects from, as the per-address limits count it: an IPv4 address, or
//! an IPv6 /64 (one subscriber's network: a phone changes its address within its /64 at will).

use std::net::IpAddr;

/// A source address packed in 8 bytes: an IPv4 address in the low 32 bits (the high ones
/// zero), or the first 64 bits of an IPv6 address. The two never collide: an IPv6 /64 whose
/// first 32 bits are zero is in `::/8`, which no peer on a network connects from (its IPv4-mapped
/// addresses are counted as IPv4, and `::1` takes the place of the unused IPv4 `0.0.0.0`). Kept
/// with each connection, so smaller than an `IpAddr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(u64);

impl SourceKey {
    /// The key of a peer's address.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self(u64::from(u32::from(v4))),
            IpAddr::V6(v6) => Self((u128::from(v6) >> 64) as u64),
        }
    }

    /// The packed key.
    pub fn get(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::SourceKey;

    fn key(text: &str) -> SourceKey {
        SourceKey::of(text.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn ipv4_addresses_are_their_own_sources() {
        assert_ne!(key("127.0.0.1"), key("127.0.0.2"));
        assert_eq!(key("10.1.2.3").get(), 0x0a01_0203);
        assert_eq!(key("::ffff:10.1.2.3"), key("10.1.2.3"));
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:abcd::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2::1").get(), 0x2001_0db8_0001_0002);
        assert_ne!(key("::1"), key("127.0.0.1"));
    }
}
