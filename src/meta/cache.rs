//! Write-back overlay with group commit.
//!
//! Filesystem operations apply their batch to `pending` (atomic: the batch
//! goes in under one lock). A flush moves everything pending to `inflight`,
//! runs the pre-commit hook (the pool makes shards durable), commits the
//! whole set as one store batch, then runs the after-commit actions queued
//! with those batches (shard garbage removal). Readers see
//! pending > inflight > store. `sync()` returns once every batch applied
//! before the call is durable; concurrent syncs share one commit.
//!
//! Invariant: a batch is never split across two store commits, and batches
//! are committed in the order they were applied.
//!
//! Poison policy (see `guard::panic`): `state` and `flushing` are taken
//! over when poisoned. Every section under `state` is a set of plain
//! assignments and map inserts that cannot panic half way (short of an
//! allocation failure, which aborts); the one step that can panic, the
//! pre-commit hook and the store commit, runs without `state` held and is
//! contained: a panic there is a failed commit (read-only until remount),
//! since the in-flight set may or may not have landed.

use super::{KvPairs, MetaError, MetaStore, Op};
use crate::guard::panic::{contain, lock_or_recover};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Work to do once the batch it came with is durable.
pub type AfterCommit = Box<dyn FnOnce() + Send>;

use super::Overlay;

#[derive(Default)]
struct State {
    pending: Overlay,
    pending_after: Vec<AfterCommit>,
    inflight: Arc<Overlay>,
    /// Number of batches applied so far.
    applied: u64,
    /// Every batch up to this number is durable.
    durable: u64,
    failed: bool,
    shutdown: bool,
    /// Value bytes under one key prefix, kept up to date by every batch.
    tally: Option<Tally>,
}

/// Sum of the value lengths of every key under `prefix`, persisted under
/// `key` in the same batch as each change to it (so it is exact after a
/// crash too).
struct Tally {
    prefix: Vec<u8>,
    key: Vec<u8>,
    bytes: u64,
}

/// The write-back metadata cache.
pub struct MetaCache {
    store: Arc<dyn MetaStore>,
    state: Mutex<State>,
    flushing: Mutex<()>,
    wake: Condvar,
    pre_commit: Box<dyn Fn() + Send + Sync>,
    /// Store commits made (each one write-ahead-log append and fdatasync
    /// per metadata replica).
    commits: std::sync::atomic::AtomicU64,
}

impl MetaCache {
    /// A cache over `store`; `pre_commit` runs before every store commit.
    pub fn new(store: Arc<dyn MetaStore>, pre_commit: Box<dyn Fn() + Send + Sync>) -> Arc<Self> {
        Arc::new(MetaCache {
            store,
            state: Mutex::new(State::default()),
            flushing: Mutex::new(()),
            wake: Condvar::new(),
            pre_commit,
            commits: Default::default(),
        })
    }

    /// The store behind the cache.
    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// Value of `key` as of the last applied batch.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        let inflight = {
            let st = lock_or_recover(&self.state);
            if let Some(v) = st.pending.get(key) {
                return Ok(v.clone());
            }
            st.inflight.clone()
        };
        if let Some(v) = inflight.get(key) {
            return Ok(v.clone());
        }
        // A flush may have finished between the two looks; the store then
        // has the value (flushes only move data forward).
        self.store.get(key)
    }

    /// Up to `limit` live pairs with `start <= key < end`.
    pub fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs, MetaError> {
        // Snapshot the overlay first, then read the store: a flush that
        // completes in between only copies overlay entries into the store.
        let overlay: Overlay = {
            let st = lock_or_recover(&self.state);
            let mut o: Overlay = st
                .inflight
                .range(start.to_vec()..end.to_vec())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (k, v) in st.pending.range(start.to_vec()..end.to_vec()) {
                o.insert(k.clone(), v.clone());
            }
            o
        };
        super::merge_range(&overlay, self.store.as_ref(), start, end, limit)
    }

    /// Up to `limit` live keys with `start <= key < end` and their value
    /// lengths; values in the store are not copied out.
    pub fn range_sizes(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<super::KeySizes, MetaError> {
        let overlay: std::collections::BTreeMap<Vec<u8>, Option<usize>> = {
            let st = lock_or_recover(&self.state);
            let mut o: std::collections::BTreeMap<Vec<u8>, Option<usize>> = st
                .inflight
                .range(start.to_vec()..end.to_vec())
                .map(|(k, v)| (k.clone(), v.as_ref().map(Vec::len)))
                .collect();
            for (k, v) in st.pending.range(start.to_vec()..end.to_vec()) {
                o.insert(k.clone(), v.as_ref().map(Vec::len));
            }
            o
        };
        super::merge_sizes(&overlay, self.store.as_ref(), start, end, limit)
    }

    /// Keep a tally of the value bytes under `prefix` (the filesystem's
    /// inline file data), persisted under `key` (outside `prefix`) in the
    /// batch of every change. The tally is read from `key`, or counted
    /// once from the keys' sizes when absent (a pool made before tallies).
    /// Call once, before the cache is shared.
    pub fn keep_tally(&self, prefix: &[u8], key: Vec<u8>) -> Result<(), MetaError> {
        assert!(
            !key.starts_with(prefix),
            "the tally key is outside its prefix"
        );
        let stored = self.get(&key)?.map(|v| {
            u64::from_be_bytes(v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]))
        });
        let bytes = match stored {
            Some(b) => b,
            None => {
                let end = super::prefix_end(prefix);
                let mut cursor = prefix.to_vec();
                let mut sum = 0u64;
                loop {
                    let page = self.range_sizes(&cursor, &end, 4096)?;
                    sum += page.iter().map(|(_, n)| *n as u64).sum::<u64>();
                    match page.last() {
                        Some((k, _)) if page.len() == 4096 => {
                            cursor.clone_from(k);
                            cursor.push(0);
                        }
                        _ => break,
                    }
                }
                sum
            }
        };
        lock_or_recover(&self.state).tally = Some(Tally {
            prefix: prefix.to_vec(),
            key: key.clone(),
            bytes,
        });
        if stored.is_none() {
            self.apply(vec![Op::Put(key, bytes.to_be_bytes().to_vec())], vec![])?;
        }
        Ok(())
    }

    /// The tally of [`MetaCache::keep_tally`] as of the last applied batch
    /// (0 when none is kept).
    pub fn tally(&self) -> u64 {
        lock_or_recover(&self.state)
            .tally
            .as_ref()
            .map_or(0, |t| t.bytes)
    }

    /// Change of the tally that `ops` make (all lookups before any change,
    /// so a failed store read leaves the batch unapplied).
    fn tally_delta(&self, st: &State, ops: &[Op]) -> Result<i128, MetaError> {
        let Some(t) = &st.tally else { return Ok(0) };
        let mut seen: std::collections::HashMap<&[u8], usize> = Default::default();
        let mut delta = 0i128;
        for op in ops {
            let (k, new) = match op {
                Op::Put(k, v) => (k, v.len()),
                Op::Del(k) => (k, 0),
            };
            if !k.starts_with(&t.prefix) {
                continue;
            }
            let old = match seen.get(k.as_slice()) {
                Some(&n) => n,
                None => match st.pending.get(k).or_else(|| st.inflight.get(k)) {
                    Some(v) => v.as_ref().map_or(0, Vec::len),
                    None => self.store.get(k)?.map_or(0, |v| v.len()),
                },
            };
            delta += new as i128 - old as i128;
            seen.insert(k.as_slice(), new);
        }
        Ok(delta)
    }

    /// Apply a batch atomically (visible at once, durable at the next flush).
    pub fn apply(&self, ops: Vec<Op>, after: Vec<AfterCommit>) -> Result<(), MetaError> {
        let mut st = lock_or_recover(&self.state);
        if st.failed {
            return Err(MetaError::ReadOnly);
        }
        let delta = self.tally_delta(&st, &ops)?;
        for op in ops {
            match op {
                Op::Put(k, v) => st.pending.insert(k, Some(v)),
                Op::Del(k) => st.pending.insert(k, None),
            };
        }
        if delta != 0 {
            if let Some(t) = st.tally.as_mut() {
                t.bytes = (t.bytes as i128 + delta).clamp(0, u64::MAX as i128) as u64;
                let (k, v) = (t.key.clone(), t.bytes.to_be_bytes().to_vec());
                st.pending.insert(k, Some(v));
            }
        }
        st.pending_after.extend(after);
        st.applied += 1;
        Ok(())
    }

    /// True when batches are waiting to be made durable.
    pub fn dirty(&self) -> bool {
        let st = lock_or_recover(&self.state);
        st.applied > st.durable
    }

    /// Make every batch applied so far durable.
    pub fn sync(&self) -> Result<(), MetaError> {
        let target = lock_or_recover(&self.state).applied;
        let _g = lock_or_recover(&self.flushing);
        {
            let st = lock_or_recover(&self.state);
            if st.failed {
                return Err(MetaError::ReadOnly);
            }
            if st.durable >= target {
                return Ok(()); // someone else's commit covered us
            }
        }
        self.flush_locked()
    }

    fn flush_locked(&self) -> Result<(), MetaError> {
        let (set, after, upto) = {
            let mut st = lock_or_recover(&self.state);
            if st.pending.is_empty() {
                st.durable = st.applied;
                return Ok(());
            }
            let set = Arc::new(std::mem::take(&mut st.pending));
            st.inflight = set.clone();
            (set, std::mem::take(&mut st.pending_after), st.applied)
        };
        let res = contain("metadata commit", || {
            (self.pre_commit)();
            let ops: Vec<Op> = set
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => Op::Put(k.clone(), v.clone()),
                    None => Op::Del(k.clone()),
                })
                .collect();
            self.store.commit(&ops)
        })
        .unwrap_or_else(|msg| {
            Err(MetaError::Store {
                store: "cache".into(),
                msg: format!("commit panicked: {msg}"),
            })
        });
        let mut st = lock_or_recover(&self.state);
        match res {
            Ok(()) => {
                self.commits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                st.inflight = Arc::new(Overlay::new());
                st.durable = upto;
                drop(st);
                for f in after {
                    f();
                }
                Ok(())
            }
            Err(e) => {
                // Keep serving what we have, but refuse new writes: guessing
                // which part of the batch landed could corrupt the namespace.
                log::error!("metadata commit failed; the filesystem is now read-only: {e}");
                st.failed = true;
                Err(e)
            }
        }
    }

    /// Store commits made since the cache was opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True after a failed commit.
    pub fn failed(&self) -> bool {
        lock_or_recover(&self.state).failed
    }

    /// Run the periodic flusher until [`MetaCache::shutdown`].
    pub fn run_flusher(self: Arc<Self>, every: Duration) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("meta-flush".into())
            .spawn(move || loop {
                {
                    let st = lock_or_recover(&self.state);
                    let (st, _) = self
                        .wake
                        .wait_timeout(st, every)
                        .unwrap_or_else(|p| p.into_inner());
                    if st.shutdown {
                        return;
                    }
                }
                if self.dirty() {
                    let _ = self.sync();
                }
            })
            .expect("spawn flusher")
    }

    /// Stop the flusher (after a final sync by the caller).
    pub fn shutdown(&self) {
        lock_or_recover(&self.state).shutdown = true;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MemStore;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_panicking_commit_makes_the_cache_read_only_and_later_syncs_do_not_panic() {
        let store: Arc<dyn MetaStore> = Arc::new(MemStore::default());
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let a = armed.clone();
        let c = MetaCache::new(
            store,
            Box::new(move || {
                if a.load(Ordering::SeqCst) {
                    panic!("pre-commit blew up");
                }
            }),
        );
        c.apply(vec![put("a", "1")], vec![]).unwrap();
        assert!(c.sync().is_err(), "a panicked commit is a failed commit");
        armed.store(false, Ordering::SeqCst);
        assert!(c.failed());
        // every later fsync answers an error, never a poison panic
        assert!(matches!(c.sync(), Err(MetaError::ReadOnly)));
        assert!(matches!(
            c.apply(vec![put("b", "2")], vec![]),
            Err(MetaError::ReadOnly)
        ));
        assert_eq!(c.get(b"a").unwrap(), Some(b"1".to_vec()));
    }

    fn put(k: &str, v: &str) -> Op {
        Op::Put(k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn overlay_reads_merge_and_sync_persists() {
        let store = Arc::new(MemStore::default());
        store
            .commit(&[put("a1", "s"), put("a3", "s"), put("a5", "s")])
            .unwrap();
        let c = MetaCache::new(store.clone(), Box::new(|| {}));
        c.apply(vec![put("a2", "p"), Op::Del(b"a3".to_vec())], vec![])
            .unwrap();
        let keys: Vec<Vec<u8>> = c
            .range(b"a", b"b", 10)
            .unwrap()
            .into_iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(keys, vec![b"a1".to_vec(), b"a2".to_vec(), b"a5".to_vec()]);
        assert_eq!(c.range(b"a", b"b", 2).unwrap().len(), 2);
        assert_eq!(store.get(b"a2").unwrap(), None, "not durable before sync");
        c.sync().unwrap();
        assert_eq!(store.get(b"a2").unwrap(), Some(b"p".to_vec()));
        assert_eq!(store.get(b"a3").unwrap(), None);
        assert!(!c.dirty());
    }

    #[test]
    fn pre_commit_runs_before_and_after_commit_runs_after() {
        let store = Arc::new(MemStore::default());
        let pre = Arc::new(AtomicUsize::new(0));
        let p2 = pre.clone();
        let c = MetaCache::new(
            store.clone(),
            Box::new(move || {
                p2.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let after = Arc::new(AtomicUsize::new(0));
        let a2 = after.clone();
        let s2 = store.clone();
        c.apply(
            vec![put("k", "v")],
            vec![Box::new(move || {
                assert_eq!(s2.get(b"k").unwrap(), Some(b"v".to_vec()));
                a2.fetch_add(1, Ordering::SeqCst);
            })],
        )
        .unwrap();
        c.sync().unwrap();
        assert_eq!(pre.load(Ordering::SeqCst), 1);
        assert_eq!(after.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn failed_commit_makes_cache_read_only() {
        let store = Arc::new(MemStore::default());
        let c = MetaCache::new(store.clone(), Box::new(|| {}));
        c.apply(vec![put("k", "v")], vec![]).unwrap();
        store.fail.store(true, Ordering::Relaxed);
        assert!(c.sync().is_err());
        assert!(matches!(
            c.apply(vec![put("x", "y")], vec![]),
            Err(MetaError::ReadOnly)
        ));
    }
}
