//! A map keyed by device id, for the few devices of one user.
//!
//! Every user has a mailbox cursor and an account entry per device, and most users have one
//! device. A hash map takes a table of at least four buckets for one entry (about 128 bytes of
//! heap for a cursor); a vector sorted by device id takes one slot per device (one 32-byte
//! allocation), and finds a device by binary search, so a user with many devices stays cheap to
//! look up too.

use crate::message::Id;

/// Values per device, sorted by device id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMap<V>(Vec<(Id, V)>);

impl<V> Default for DeviceMap<V> {
    fn default() -> Self {
        DeviceMap(Vec::new())
    }
}

impl<V> DeviceMap<V> {
    fn position(&self, device: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(known, _)| (**known).cmp(device))
    }

    /// The value of `device`.
    pub fn get(&self, device: &str) -> Option<&V> {
        self.position(device).ok().map(|index| &self.0[index].1)
    }

    /// True when `device` has a value.
    pub fn contains_key(&self, device: &str) -> bool {
        self.position(device).is_ok()
    }

    /// The value of `device`, inserting `make()` first when it has none.
    pub fn get_or_insert_with(&mut self, device: &Id, make: impl FnOnce() -> V) -> &mut V {
        let index = match self.position(device) {
            Ok(index) => index,
            Err(index) => {
                self.0.insert(index, (device.clone(), make()));
                index
            }
        };
        &mut self.0[index].1
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no device has a value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Devices and their values, by device id.
    pub fn iter(&self) -> impl Iterator<Item = (&Id, &V)> {
        self.0.iter().map(|(device, value)| (device, value))
    }

    /// The values, by device id.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, value)| value)
    }

    /// Devices and their values, mutable, by device id.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Id, &mut V)> {
        self.0.iter_mut().map(|(device, value)| (&*device, value))
    }

    /// The values, mutable, by device id.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.iter_mut().map(|(_, value)| value)
    }
}

impl<V> FromIterator<(Id, V)> for DeviceMap<V> {
    /// Later values of a repeated device replace earlier ones, as in a hash map.
    fn from_iter<I: IntoIterator<Item = (Id, V)>>(iter: I) -> Self {
        let mut map = DeviceMap::default();
        for (device, value) in iter {
            match map.position(&device) {
                Ok(index) => map.0[index].1 = value,
                Err(index) => map.0.insert(index, (device, value)),
            }
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_stay_sorted_and_are_found_whatever_the_insertion_order() {
        let mut map = DeviceMap::default();
        for (device, value) in [("phone", 1), ("laptop", 2), ("tablet", 3), ("desk", 4)] {
            *map.get_or_insert_with(&Id::from(device), || 0) += value;
        }
        *map.get_or_insert_with(&Id::from("phone"), || 100) += 10;
        let order: Vec<(&str, u64)> = map.iter().map(|(d, v)| (&**d, *v)).collect();
        assert_eq!(
            order,
            [("desk", 4), ("laptop", 2), ("phone", 11), ("tablet", 3)]
        );
        assert_eq!(map.get("tablet"), Some(&3));
        assert_eq!(map.get("watch"), None);
        assert!(map.contains_key("desk") && !map.contains_key("des"));
        assert_eq!((map.len(), map.values().min()), (4, Some(&2)));
    }

    #[test]
    fn collecting_keeps_the_last_value_of_a_repeated_device() {
        let map: DeviceMap<u64> = [("b", 1), ("a", 2), ("b", 3)]
            .into_iter()
            .map(|(device, value)| (Id::from(device), value))
            .collect();
        assert_eq!(map.iter().count(), 2);
        assert_eq!((map.get("a"), map.get("b")), (Some(&2), Some(&3)));
    }
}
