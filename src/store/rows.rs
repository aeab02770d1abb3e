//! A shard's rows as they are stored, chosen by a filter on their tree and key: what one node
//! copies from another to take over a set of owners at once (a slot group's snapshot), and the
//! batch that replaces a set of rows with another.

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::database::Database;
use super::error::StoreError;
use super::keys::{self, TreeKind};
use super::pending::Pending;
use super::worker::OpKind;
use super::{Stores, WriteBatch};

/// One stored row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Its tree.
    pub tree: TreeKind,
    /// Its key, as stored.
    pub key: Bytes,
    /// Its value.
    pub value: Bytes,
}

/// Chooses rows by tree and key.
pub type RowFilter = Arc<dyn Fn(TreeKind, &[u8]) -> bool + Send + Sync>;

/// The owner of a row of the entries or cursors tree (its key up to the separator), or the
/// key of a meta row; `None` for records (whose keys the caller knows).
pub fn row_owner(tree: TreeKind, key: &[u8]) -> Option<&[u8]> {
    match tree {
        TreeKind::Entries | TreeKind::Cursors => key.split(|byte| *byte == 0).next(),
        TreeKind::Meta => Some(key),
        TreeKind::Records => None,
    }
}

/// Where a scan of a shard's rows stopped: the tree and the last key looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowPosition {
    tree: TreeKind,
    key: Bytes,
}

/// One page of a scan of a shard's rows.
#[derive(Debug)]
pub struct RowsPage {
    /// The rows chosen among those looked at.
    pub rows: Vec<Row>,
    /// Where the next page starts; `None` once the shard is done.
    pub next: Option<RowPosition>,
}

/// Rows looked at per database operation, at most: the scan of a large shard is many short
/// operations, so the reads and writes of phones queued on the same database go in between.
pub const ROWS_PER_PAGE: usize = 16_384;

const TREES: [TreeKind; 4] = [
    TreeKind::Entries,
    TreeKind::Cursors,
    TreeKind::Meta,
    TreeKind::Records,
];

impl Database {
    /// The rows of `shard` that `keep` chooses among the next `scan` after `after` (from the
    /// start when `None`), tree by tree, in key order.
    pub(crate) fn rows(
        &self,
        shard: usize,
        keep: &RowFilter,
        after: Option<&RowPosition>,
        scan: usize,
    ) -> Result<RowsPage, StoreError> {
        let trees = self.trees(shard)?;
        let first = after.map_or(0, |after| {
            TREES
                .iter()
                .position(|tree| *tree == after.tree)
                .unwrap_or(0)
        });
        let mut rows = Vec::new();
        let mut looked = 0;
        for (index, kind) in TREES.iter().copied().enumerate().skip(first) {
            let tree = match kind {
                TreeKind::Entries => &trees.entries,
                TreeKind::Cursors => &trees.cursors,
                TreeKind::Meta => &trees.meta,
                TreeKind::Records => &trees.records,
            };
            let items = match after {
                Some(after) if index == first => {
                    tree.range::<&[u8], _>((Bound::Excluded(&after.key[..]), Bound::Unbounded))
                }
                _ => tree.iter(),
            };
            for item in items {
                let (key, value) = item.map_err(|error| StoreError::sled(self.path(), error))?;
                looked += 1;
                if keep(kind, &key) {
                    rows.push(Row {
                        tree: kind,
                        key: Bytes::copy_from_slice(&key),
                        value: Bytes::copy_from_slice(&value),
                    });
                }
                if looked >= scan {
                    let next = RowPosition {
                        tree: kind,
                        key: Bytes::copy_from_slice(&key),
                    };
                    return Ok(RowsPage {
                        rows,
                        next: Some(next),
                    });
                }
            }
        }
        Ok(RowsPage { rows, next: None })
    }
}

impl Stores {
    /// The rows of `shard` that `keep` chooses among the next [`ROWS_PER_PAGE`] after `after`
    /// (from the start when `None`).
    pub fn rows(
        &self,
        shard: usize,
        keep: RowFilter,
        after: Option<RowPosition>,
    ) -> Result<Pending<RowsPage>, StoreError> {
        let (done, pending) = Pending::channel();
        self.route(shard)?.submit(
            OpKind::Read,
            move |db| db.rows(shard, &keep, after.as_ref(), ROWS_PER_PAGE),
            done,
        )?;
        Ok(pending)
    }

    /// Every row of `shard` that `keep` chooses, page by page.
    pub async fn all_rows(&self, shard: usize, keep: RowFilter) -> Result<Vec<Row>, StoreError> {
        let mut rows = Vec::new();
        let mut after = None;
        loop {
            let page = self.rows(shard, keep.clone(), after.take())?.await?;
            rows.extend(page.rows);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(rows),
            }
        }
    }
}

impl WriteBatch {
    /// Removes the rows `old` (every entry of an owner up to the highest of its entries among
    /// them), then puts the rows `new`: written as one batch, a shard's rows go from one set to
    /// the other at once.
    pub fn replace_rows(&mut self, old: &[Row], new: &[Row]) -> Result<(), StoreError> {
        for row in old {
            match row.tree {
                TreeKind::Entries => {
                    let (owner, seq) = entry_parts(&row.key)?;
                    self.delete_entries_up_to(owner, seq);
                }
                TreeKind::Cursors => {
                    let (owner, device) = cursor_parts(&row.key)?;
                    self.delete_cursor(owner, &device);
                }
                TreeKind::Meta => {
                    self.delete_meta(&row.key);
                }
                TreeKind::Records => {
                    self.delete_record(&row.key);
                }
            }
        }
        for row in new {
            match row.tree {
                TreeKind::Entries => {
                    let (owner, seq) = entry_parts(&row.key)?;
                    self.put_entry(owner, seq, &row.value);
                }
                TreeKind::Cursors => {
                    let (owner, device) = cursor_parts(&row.key)?;
                    self.put_cursor(owner, &device, keys::cursor_seq(&row.value)?);
                }
                TreeKind::Meta => {
                    self.put_meta(&row.key, &row.value);
                }
                TreeKind::Records => {
                    self.put_record(&row.key, &row.value);
                }
            }
        }
        Ok(())
    }
}

fn owner_of(key: &[u8]) -> Result<&[u8], StoreError> {
    match key.iter().position(|byte| *byte == 0) {
        Some(at) => Ok(&key[..at]),
        None => Err(StoreError::invalid_key(
            "a row key without its owner's separator",
        )),
    }
}

fn entry_parts(key: &[u8]) -> Result<(&[u8], u64), StoreError> {
    let owner = owner_of(key)?;
    Ok((owner, keys::entry_seq(owner.len(), key)?))
}

fn cursor_parts(key: &[u8]) -> Result<(&[u8], String), StoreError> {
    let owner = owner_of(key)?;
    Ok((owner, keys::cursor_device(owner.len(), key)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    #[test]
    fn a_scan_in_small_pages_finds_what_one_pass_finds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store-0");
        let db = Database::open(0, 1, &path, &StoreConfig::new([path.clone()])).expect("open");
        let mut batch = WriteBatch::new();
        for owner in ["alice", "bob", "carol"] {
            for seq in 1..=4 {
                batch.put_entry(owner.as_bytes(), seq, b"entry");
            }
            batch
                .put_cursor(owner.as_bytes(), "phone", 2)
                .put_meta(owner.as_bytes(), b"meta")
                .put_record(format!("group/{owner}").as_bytes(), b"group");
        }
        db.write(5, &batch).expect("write");
        let keep: RowFilter = Arc::new(|_, key| !key.starts_with(b"bob"));
        let whole = db.rows(5, &keep, None, usize::MAX).expect("rows");
        assert!(whole.next.is_none());
        assert_eq!(whole.rows.len(), 2 * 4 + 2 + 2 + 3);
        for scan in [1, 2, 3, 7] {
            let mut rows = Vec::new();
            let mut after = None;
            loop {
                let page = db.rows(5, &keep, after.as_ref(), scan).expect("rows");
                rows.extend(page.rows);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(rows, whole.rows, "pages of {scan}");
        }
    }
}
