//! A set of owners' state as the stores hold it: every row of their mailboxes (entries,
//! cursors, account), their dedup tables and, for groups, their snapshot and logged entries.
//! A slot group's snapshot is this for the owners of its slots: exported by a member whose
//! stores hold everything up to its durable point, installed by one too far behind to catch up
//! from the log (its rows of those owners are replaced at once, shard by shard, then its
//! workers reload them).
//!
//! The rows are read while write-back goes on, so they may hold more than the durable point
//! (never less: everything up to it is in the stores); the log after the point is applied on
//! top, and applying a record twice leaves a mailbox or group as applying it once.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::group::record as group_record;
use crate::proto::storage::{StoreRow, StoreRows};
use crate::shard::SHARDS;
use crate::store::{Row, RowFilter, StoreError, Stores, TreeKind, WriteBatch, row_owner};

use super::record::DEDUP_PREFIX;

/// Says yes or no to an owner's bytes.
type Choose = dyn Fn(&[u8]) -> bool + Send + Sync;

/// Chooses owners (user or group ids) by their bytes.
#[derive(Clone)]
pub struct Owners(Arc<Choose>);

impl Owners {
    /// The owners `choose` says yes to.
    pub fn new(choose: impl Fn(&[u8]) -> bool + Send + Sync + 'static) -> Owners {
        Owners(Arc::new(choose))
    }

    /// Whether `owner` is one of them.
    pub fn contains(&self, owner: &[u8]) -> bool {
        (self.0)(owner)
    }
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Owners")
    }
}

/// A snapshot could not be made or installed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The stores failed or are overloaded (the snapshot is tried again).
    #[error("snapshot store: {0}")]
    Store(#[from] StoreError),
    /// The bytes are not a snapshot.
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A row names a shard or tree that does not exist.
    #[error("snapshot row of shard {shard}, tree {tree}: no such place")]
    Place {
        /// The row's shard.
        shard: u32,
        /// The row's tree.
        tree: u32,
    },
    /// Reloading the owners into the workers failed.
    #[error("snapshot reload: {0}")]
    Reload(String),
}

/// The owner a stored row belongs to; `None` for rows of no owner (the node's checkpoints).
pub fn owner_of_row(tree: TreeKind, key: &[u8]) -> Option<&[u8]> {
    if let Some(owner) = row_owner(tree, key) {
        return Some(owner);
    }
    if let Some(rest) = key.strip_prefix(DEDUP_PREFIX.as_bytes()) {
        return rest.split(|byte| *byte == 0).next();
    }
    if let Some(group) = key.strip_prefix(group_record::PRUNED_PREFIX.as_bytes()) {
        return Some(group);
    }
    if let Some(rest) = key.strip_prefix(group_record::LOG_PREFIX.as_bytes()) {
        // `glog/<group>/<seq>`: group ids may hold '/', seqs do not.
        let end = rest.iter().rposition(|byte| *byte == b'/')?;
        return Some(&rest[..end]);
    }
    key.strip_prefix(group_record::SNAPSHOT_PREFIX.as_bytes())
}

fn rows_of(owners: Owners) -> RowFilter {
    Arc::new(move |tree, key| owner_of_row(tree, key).is_some_and(|owner| owners.contains(owner)))
}

fn tree_code(tree: TreeKind) -> u32 {
    match tree {
        TreeKind::Entries => 0,
        TreeKind::Cursors => 1,
        TreeKind::Meta => 2,
        TreeKind::Records => 3,
    }
}

fn tree_of(code: u32) -> Option<TreeKind> {
    Some(match code {
        0 => TreeKind::Entries,
        1 => TreeKind::Cursors,
        2 => TreeKind::Meta,
        3 => TreeKind::Records,
        _ => return None,
    })
}

/// Every row of `owners` in `stores`, encoded (`StoreRows`).
pub async fn export(stores: &Stores, owners: Owners) -> Result<Bytes, SnapshotError> {
    let keep = rows_of(owners);
    let mut rows = Vec::new();
    for shard in 0..SHARDS {
        for row in stores.all_rows(shard, keep.clone()).await? {
            rows.push(StoreRow {
                shard: shard as u32,
                tree: tree_code(row.tree),
                key: row.key,
                value: row.value,
            });
        }
    }
    Ok(Bytes::from(
        StoreRows {
            rows,
            media: Vec::new(),
        }
        .encode_to_vec(),
    ))
}

/// Replaces every row of `owners` in `stores` with those of `snapshot` (one batch per shard).
/// Not durable until the stores' next checkpoint.
pub async fn replace(
    stores: &Stores,
    owners: Owners,
    snapshot: &Bytes,
) -> Result<(), SnapshotError> {
    let decoded = StoreRows::decode(snapshot.clone())?;
    let mut by_shard: Vec<Vec<Row>> = (0..SHARDS).map(|_| Vec::new()).collect();
    let keep = rows_of(owners);
    for row in decoded.rows {
        let place = SnapshotError::Place {
            shard: row.shard,
            tree: row.tree,
        };
        let (Some(tree), Some(shard)) = (tree_of(row.tree), by_shard.get_mut(row.shard as usize))
        else {
            return Err(place);
        };
        // Only rows of the owners asked for: a snapshot cannot touch anything else.
        if keep(tree, &row.key) {
            shard.push(Row {
                tree,
                key: row.key,
                value: row.value,
            });
        }
    }
    for (shard, new) in by_shard.into_iter().enumerate() {
        let old = stores.all_rows(shard, keep.clone()).await?;
        let mut batch = WriteBatch::new();
        batch.replace_rows(&old, &new)?;
        if !batch.is_empty() {
            stores.write_batch(shard, batch)?.await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn owners(names: &'static [&'static str]) -> Owners {
        Owners::new(move |owner| names.iter().any(|name| name.as_bytes() == owner))
    }

    fn open(dir: &std::path::Path) -> Stores {
        Stores::open(StoreConfig::new([dir.join("store-0"), dir.join("store-1")])).expect("open")
    }

    /// alice's and bob's mailboxes and dedup rows, the group g1's snapshot, log and pruned
    /// mark, and a checkpoint record that belongs to nobody, each in its owner's shard.
    async fn fill(stores: &Stores, tag: &str) {
        let value = |text: &str| Bytes::from(format!("{tag}{text}"));
        for owner in ["alice", "bob", "g1"] {
            let shard = crate::shard::shard_of(crate::shard::key_hash(owner.as_bytes()));
            let mut batch = WriteBatch::new();
            batch
                .put_entry(owner.as_bytes(), 1, value("e1"))
                .put_entry(owner.as_bytes(), 2, value("e2"))
                .put_cursor(owner.as_bytes(), "phone", 1)
                .put_meta(owner.as_bytes(), value("meta"))
                .put_record(
                    &super::super::record::dedup_key(owner, "carol", "d", 0),
                    value("dedup"),
                )
                .put_record(&group_record::snapshot_key(owner), value("group"))
                .put_record(&group_record::log_key(owner, 7), value("glog"))
                .put_record(&group_record::pruned_key(owner), value("pruned"));
            stores
                .write_batch(shard, batch)
                .expect("queue")
                .await
                .expect("write");
        }
        let mut batch = WriteBatch::new();
        batch.put_record(b"checkpoint/slot-3", value("mark"));
        stores
            .write_batch(0, batch)
            .expect("queue")
            .await
            .expect("write");
    }

    async fn rows(stores: &Stores, who: Owners) -> Vec<Row> {
        let keep = rows_of(who);
        let mut all = Vec::new();
        for shard in 0..SHARDS {
            all.extend(stores.all_rows(shard, keep.clone()).await.expect("rows"));
        }
        all
    }

    #[test]
    fn every_kind_of_row_names_its_owner() {
        assert_eq!(
            owner_of_row(TreeKind::Entries, b"alice\0\0\0\0\0\0\0\0\x01"),
            Some(&b"alice"[..])
        );
        assert_eq!(
            owner_of_row(TreeKind::Cursors, b"alice\0phone"),
            Some(&b"alice"[..])
        );
        assert_eq!(owner_of_row(TreeKind::Meta, b"alice"), Some(&b"alice"[..]));
        let dedup = super::super::record::dedup_key("alice", "bob", "d", 3);
        assert_eq!(owner_of_row(TreeKind::Records, &dedup), Some(&b"alice"[..]));
        let log = group_record::log_key("a/b", 9);
        assert_eq!(owner_of_row(TreeKind::Records, &log), Some(&b"a/b"[..]));
        let pruned = group_record::pruned_key("g1");
        assert_eq!(owner_of_row(TreeKind::Records, &pruned), Some(&b"g1"[..]));
        let snapshot = group_record::snapshot_key("g1");
        assert_eq!(owner_of_row(TreeKind::Records, &snapshot), Some(&b"g1"[..]));
        assert_eq!(owner_of_row(TreeKind::Records, b"checkpoint/slot-3"), None);
    }

    #[tokio::test]
    async fn a_snapshot_replaces_the_rows_of_its_owners_and_nothing_else() {
        let from_dir = tempfile::tempdir().expect("tempdir");
        let into_dir = tempfile::tempdir().expect("tempdir");
        let from = open(from_dir.path());
        let into = open(into_dir.path());
        fill(&from, "new-").await;
        fill(&into, "old-").await;
        // Rows the snapshot no longer has go: an entry the exporter deleted since.
        let shard = crate::shard::shard_of(crate::shard::key_hash(b"alice"));
        let mut batch = WriteBatch::new();
        batch.put_entry(b"alice", 3, Bytes::from_static(b"old-e3"));
        into.write_batch(shard, batch)
            .expect("queue")
            .await
            .expect("write");

        let chosen = owners(&["alice", "g1"]);
        let snapshot = export(&from, chosen.clone()).await.expect("export");
        replace(&into, chosen.clone(), &snapshot)
            .await
            .expect("replace");

        assert_eq!(rows(&into, chosen.clone()).await, rows(&from, chosen).await);
        // bob's rows and the node's own record are untouched.
        let bob = rows(&into, owners(&["bob"])).await;
        assert!(!bob.is_empty());
        assert!(
            bob.iter()
                .filter(|row| row.tree != TreeKind::Cursors)
                .all(|row| row.value.starts_with(b"old-")),
            "{bob:?}"
        );
        let mark = into
            .get_record(0, b"checkpoint/slot-3")
            .expect("queue")
            .await
            .expect("read");
        assert!(mark.is_some_and(|mark| mark.starts_with(b"old-")));
    }
}
