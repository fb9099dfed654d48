//! The metadata seam: an ordered key-value store with atomic, durable
//! batches. The filesystem's schema lives in `fs::schema`; this layer knows
//! nothing of inodes or shards.
//!
//! - [`LmdbStore`]: LMDB through heed, in durable mode (one per replica).
//! - [`MemStore`]: in memory, for tests.
//! - [`WalStore`]: a write-ahead log in front of LMDB: a commit is one
//!   append and one fdatasync; batches reach LMDB in checkpoints.
//! - [`ReplicatedStore`]: the same batch applied to several stores (one per
//!   metadata member), so metadata survives the loss of m members.
//! - [`MetaCache`]: write-back overlay with group commit in front of a store.

mod cache;
mod lmdb;
mod mem;
mod replicated;
mod wal;

pub use cache::{AfterCommit, MetaCache};
pub use lmdb::LmdbStore;
pub use mem::MemStore;
pub use replicated::ReplicatedStore;
pub use wal::WalStore;

/// Errors of the metadata layer.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The backing store failed.
    #[error("metadata store {store}: {msg}")]
    Store {
        /// which store
        store: String,
        /// what happened
        msg: String,
    },
    /// The store's host filesystem (or its map, at its size limit) is full:
    /// ENOSPC for the writer. The message names the store.
    #[error("metadata out of space: {0}")]
    NoSpace(String),
    /// A commit failed earlier; the store refuses writes until remount.
    #[error("metadata is read-only after a failed commit")]
    ReadOnly,
}

/// Key-value pairs returned by range scans.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Keys with the lengths of their values, from [`MetaStore::range_sizes`].
pub type KeySizes = Vec<(Vec<u8>, usize)>;

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set key to value.
    Put(Vec<u8>, Vec<u8>),
    /// Remove key (absent is fine).
    Del(Vec<u8>),
}

/// An ordered key-value store whose batches are atomic and durable.
pub trait MetaStore: Send + Sync {
    /// Value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError>;
    /// Up to `limit` pairs with `start <= key < end`, in key order.
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs, MetaError>;
    /// Keys with `start <= key < end` and the length of each value, up to
    /// `limit`, in key order, without handing the values out (stores that
    /// can read a length without copying the value say so by overriding).
    fn range_sizes(&self, start: &[u8], end: &[u8], limit: usize) -> Result<KeySizes, MetaError> {
        Ok(self
            .range(start, end, limit)?
            .into_iter()
            .map(|(k, v)| (k, v.len()))
            .collect())
    }
    /// Apply `ops` atomically; durable when this returns.
    fn commit(&self, ops: &[Op]) -> Result<(), MetaError>;
    /// Number of batches committed over the store's life.
    fn sequence(&self) -> Result<u64, MetaError>;
    /// Write a consistent, durable copy of the store into directory `dest`
    /// (a new replica). Stores that cannot copy themselves say so.
    fn copy_to_dir(&self, dest: &std::path::Path) -> Result<(), MetaError> {
        Err(MetaError::Store {
            store: dest.display().to_string(),
            msg: "this metadata store cannot be copied".into(),
        })
    }
}

/// Pending changes over a store: key -> new value, or `None` for deleted.
pub type Overlay = std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Up to `limit` live pairs in `[start, end)` of `overlay` laid over
/// `store`. The overlay must be a snapshot taken before the store is read
/// (a concurrent flush only copies overlay entries into the store).
pub fn merge_range(
    overlay: &Overlay,
    store: &dyn MetaStore,
    start: &[u8],
    end: &[u8],
    limit: usize,
) -> Result<KvPairs, MetaError> {
    merge_pages(
        overlay,
        |from, n| store.range(from, end, n),
        start,
        end,
        limit,
    )
}

/// [`merge_range`] for key sizes: up to `limit` live keys of `[start,
/// end)` with their value lengths, `overlay` (key -> length, `None` for
/// deleted) laid over `store`; the same snapshot rule applies.
pub fn merge_sizes(
    overlay: &std::collections::BTreeMap<Vec<u8>, Option<usize>>,
    store: &dyn MetaStore,
    start: &[u8],
    end: &[u8],
    limit: usize,
) -> Result<KeySizes, MetaError> {
    merge_pages(
        overlay,
        |from, n| store.range_sizes(from, end, n),
        start,
        end,
        limit,
    )
}

/// The merge behind [`merge_range`] and [`merge_sizes`]: `fetch(from, n)`
/// reads up to `n` store entries from key `from` on (to `end`), page by
/// page until `limit` store keys not shadowed by the overlay are found;
/// then the overlay's live entries are laid over them.
fn merge_pages<V: Clone>(
    overlay: &std::collections::BTreeMap<Vec<u8>, Option<V>>,
    fetch: impl Fn(&[u8], usize) -> Result<Vec<(Vec<u8>, V)>, MetaError>,
    start: &[u8],
    end: &[u8],
    limit: usize,
) -> Result<Vec<(Vec<u8>, V)>, MetaError> {
    let mut out: std::collections::BTreeMap<Vec<u8>, V> = Default::default();
    let mut cursor = start.to_vec();
    let page = limit.clamp(16, 4096);
    let mut store_count = 0;
    loop {
        let batch = fetch(&cursor, page)?;
        let n = batch.len();
        for (k, v) in batch {
            cursor.clone_from(&k);
            if !overlay.contains_key(&k) {
                store_count += 1;
                out.insert(k, v);
            }
        }
        if n < page || store_count >= limit {
            break;
        }
        cursor.push(0);
    }
    for (k, v) in overlay.range(start.to_vec()..end.to_vec()) {
        if let Some(v) = v {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(out.into_iter().take(limit).collect())
}

/// Key under which stores keep their commit sequence (outside every table).
pub const SEQ_KEY: &[u8] = b"\x00seq";

/// Smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}
