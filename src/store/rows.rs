//! A shard's rows as they are stored, chosen by a filter on their tree and key: what one node
//! copies from another to take over a set of owners at once (a slot group's snapshot), and the
//! batch that replaces a set of rows with another.

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

impl Database {
    /// Every row of `shard` that `keep` chooses, tree by tree, in key order.
    pub(crate) fn rows(&self, shard: usize, keep: &RowFilter) -> Result<Vec<Row>, StoreError> {
        let trees = self.trees(shard)?;
        let mut rows = Vec::new();
        for (tree, kind) in [
            (&trees.entries, TreeKind::Entries),
            (&trees.cursors, TreeKind::Cursors),
            (&trees.meta, TreeKind::Meta),
            (&trees.records, TreeKind::Records),
        ] {
            for item in tree.iter() {
                let (key, value) = item.map_err(|error| StoreError::sled(self.path(), error))?;
                if keep(kind, &key) {
                    rows.push(Row {
                        tree: kind,
                        key: Bytes::copy_from_slice(&key),
                        value: Bytes::copy_from_slice(&value),
                    });
                }
            }
        }
        Ok(rows)
    }
}

impl Stores {
    /// Every row of `shard` that `keep` chooses (a scan of the shard's four trees).
    pub fn rows(&self, shard: usize, keep: RowFilter) -> Result<Pending<Vec<Row>>, StoreError> {
        let (done, pending) = Pending::channel();
        self.route(shard)?
            .submit(OpKind::Read, move |db| db.rows(shard, &keep), done)?;
        Ok(pending)
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
