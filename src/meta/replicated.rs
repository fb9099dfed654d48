use super::{KvPairs, MetaError, MetaStore, Op, WalStore};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

type CommitJob = (Arc<[Op]>, crossbeam::channel::Sender<Result<(), MetaError>>);

/// One copy of the metadata.
pub struct Replica {
    /// Name for logs and status (the member path).
    pub name: String,
    /// The pool member holding it, if known.
    pub member: Option<u16>,
    /// The store.
    pub store: Arc<dyn MetaStore>,
    /// False after a failed call; the replica is skipped until remount.
    pub healthy: AtomicBool,
    /// The replica's commit thread (commits of all replicas run in
    /// parallel without spawning a thread per commit).
    jobs: crossbeam::channel::Sender<CommitJob>,
}

impl Replica {
    /// Wrap a store and start its commit thread.
    fn start(name: String, member: Option<u16>, store: Arc<dyn MetaStore>) -> Replica {
        let (tx, rx) = crossbeam::channel::unbounded::<CommitJob>();
        let worker = store.clone();
        std::thread::Builder::new()
            .name("meta-replica".into())
            .spawn(move || {
                // ends when the replica (and its sender) is dropped
                for (ops, reply) in rx {
                    let _ = reply.send(worker.commit(&ops));
                }
            })
            .expect("spawn replica committer");
        Replica {
            name,
            member,
            store,
            healthy: AtomicBool::new(true),
            jobs: tx,
        }
    }
}

/// Applies every batch to all healthy replicas, in parallel. A batch is
/// acknowledged when every healthy replica has it durably, so all healthy
/// replicas are always identical at acknowledged points; a replica that
/// fails drops out and is brought up to date at the next mount, or is
/// replaced at runtime by a fresh copy on another member
/// ([`ReplicatedStore::add_replica`]).
pub struct ReplicatedStore {
    replicas: RwLock<Vec<Arc<Replica>>>,
    /// Held by every commit and by `add_replica`'s copy, so a new replica
    /// is an exact copy at a commit boundary.
    commit_lock: Mutex<()>,
    /// A replica that has not committed a batch within this many ms (its
    /// disk hung) is dropped from the commit set like one that failed.
    deadline_ms: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for ReplicatedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .replicas
            .read()
            .unwrap()
            .iter()
            .map(|r| r.name.clone())
            .collect();
        write!(f, "ReplicatedStore({names:?})")
    }
}

impl ReplicatedStore {
    /// Wrap already-open replicas (must be identical).
    pub fn new(replicas: Vec<(String, Box<dyn MetaStore>)>) -> Self {
        Self::with_members(
            replicas
                .into_iter()
                .map(|(n, s)| (n, None, Arc::from(s)))
                .collect(),
        )
    }

    /// Wrap already-open replicas (must be identical), with the member
    /// holding each.
    pub fn with_members(replicas: Vec<(String, Option<u16>, Arc<dyn MetaStore>)>) -> Self {
        ReplicatedStore {
            replicas: RwLock::new(
                replicas
                    .into_iter()
                    .map(|(name, member, store)| Arc::new(Replica::start(name, member, store)))
                    .collect(),
            ),
            commit_lock: Mutex::new(()),
            deadline_ms: std::sync::atomic::AtomicU64::new(10_000),
        }
    }

    /// Set the commit deadline (see the field).
    pub fn set_commit_deadline(&self, d: std::time::Duration) {
        self.deadline_ms
            .store(d.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// Snapshot of the replica list.
    fn list(&self) -> Vec<Arc<Replica>> {
        self.replicas.read().unwrap().clone()
    }

    /// Members holding a healthy replica.
    pub fn healthy_members(&self) -> Vec<u16> {
        self.list()
            .iter()
            .filter(|r| r.healthy.load(Ordering::Relaxed))
            .filter_map(|r| r.member)
            .collect()
    }

    /// Make a new replica in `dir` on member `member`: a copy of a healthy
    /// replica taken between commits (no commit runs meanwhile), opened,
    /// checked to be at the same commit sequence, then added to the set so
    /// every later commit reaches it. `open` opens the copied directory.
    pub fn add_replica(
        &self,
        name: String,
        member: u16,
        dir: &std::path::Path,
        open: impl FnOnce(&std::path::Path) -> Result<Arc<dyn MetaStore>, MetaError>,
    ) -> Result<(), MetaError> {
        let _g = self.commit_lock.lock().unwrap();
        let src = self
            .list()
            .into_iter()
            .find(|r| r.healthy.load(Ordering::Relaxed))
            .ok_or(MetaError::ReadOnly)?;
        let seq = src.store.sequence()?;
        src.store.copy_to_dir(dir)?;
        let store = open(dir)?;
        let got = store.sequence()?;
        if got != seq {
            return Err(MetaError::Store {
                store: name,
                msg: format!("the copy is at commit {got}, its source at {seq}"),
            });
        }
        self.replicas
            .write()
            .unwrap()
            .push(Arc::new(Replica::start(name, Some(member), store)));
        Ok(())
    }

    /// Drop the replica on `member` from the set (it receives no more
    /// commits; its files stay where they are).
    pub fn drop_replica(&self, member: u16) {
        let _g = self.commit_lock.lock().unwrap();
        self.replicas
            .write()
            .unwrap()
            .retain(|r| r.member != Some(member));
    }

    /// Open LMDB replicas in `dirs` (name, directory). The replica with the
    /// highest commit sequence wins; lagging replicas are overwritten with a
    /// copy of it before the pool is used.
    pub fn open_lmdb(dirs: Vec<(String, Option<u16>, PathBuf)>) -> Result<Self, MetaError> {
        if dirs.is_empty() {
            return Err(MetaError::Store {
                store: "metadata".into(),
                msg: "no metadata replica is reachable: more than m members that hold \
                      metadata are missing"
                    .into(),
            });
        }
        let mut opened: Vec<(String, PathBuf, WalStore, u64)> = Vec::new();
        let mut members = std::collections::HashMap::new();
        for (name, member, dir) in dirs {
            members.insert(name.clone(), member);
            match WalStore::open(&dir).and_then(|s| s.sequence().map(|q| (s, q))) {
                Ok((s, q)) => opened.push((name, dir, s, q)),
                Err(e) => log::error!("metadata replica {name} unusable, skipped: {e}"),
            }
        }
        let best = opened
            .iter()
            .map(|o| o.3)
            .max()
            .ok_or_else(|| MetaError::Store {
                store: "metadata".into(),
                msg: "no metadata replica could be opened".into(),
            })?;
        let mut lagging = Vec::new();
        for (i, o) in opened.iter().enumerate() {
            if o.3 < best {
                log::warn!(
                    "metadata replica {} is at commit {} of {}: refreshing it",
                    o.0,
                    o.3,
                    best
                );
                lagging.push(i);
            }
        }
        for &i in lagging.iter().rev() {
            let (name, dir, store, _) = opened.remove(i);
            store.close();
            let src = opened.iter().find(|o| o.3 == best).expect("best stays");
            src.2.snapshot_to_dir(&dir)?;
            let s = WalStore::open(&dir)?;
            opened.push((name, dir, s, best));
        }
        Ok(ReplicatedStore::with_members(
            opened
                .into_iter()
                .map(|(n, _, s, _)| {
                    let m = members.get(&n).copied().flatten();
                    (n, m, Arc::new(s) as Arc<dyn MetaStore>)
                })
                .collect(),
        ))
    }

    /// (name, healthy) of every replica.
    pub fn replica_states(&self) -> Vec<(String, bool)> {
        self.list()
            .iter()
            .map(|r| (r.name.clone(), r.healthy.load(Ordering::Relaxed)))
            .collect()
    }

    fn first_healthy<T>(
        &self,
        f: impl Fn(&dyn MetaStore) -> Result<T, MetaError>,
    ) -> Result<T, MetaError> {
        let mut last = None;
        for r in &self.list() {
            if !r.healthy.load(Ordering::Relaxed) {
                continue;
            }
            match f(r.store.as_ref()) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    log::error!("metadata replica {} failed a read: {e}", r.name);
                    r.healthy.store(false, Ordering::Relaxed);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(MetaError::ReadOnly))
    }
}

impl MetaStore for ReplicatedStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        self.first_healthy(|s| s.get(key))
    }

    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs, MetaError> {
        self.first_healthy(|s| s.range(start, end, limit))
    }

    fn range_sizes(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<super::KeySizes, MetaError> {
        self.first_healthy(|s| s.range_sizes(start, end, limit))
    }

    fn commit(&self, ops: &[Op]) -> Result<(), MetaError> {
        let _g = self.commit_lock.lock().unwrap();
        let replicas = self.list();
        let ops: Arc<[Op]> = Arc::from(ops);
        let pending: Vec<(usize, crossbeam::channel::Receiver<Result<(), MetaError>>)> = replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.healthy.load(Ordering::Relaxed))
            .map(|(i, r)| {
                let (tx, rx) = crossbeam::channel::bounded(1);
                let _ = r.jobs.send((ops.clone(), tx));
                (i, rx)
            })
            .collect();
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_millis(self.deadline_ms.load(Ordering::Relaxed));
        let results: Vec<(usize, Result<(), MetaError>)> = pending
            .into_iter()
            .map(|(i, rx)| {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let r = match rx.recv_timeout(left) {
                    Ok(r) => r,
                    Err(crossbeam::channel::RecvTimeoutError::Timeout) => Err(MetaError::Store {
                        store: replicas[i].name.clone(),
                        msg: format!(
                            "no answer within {} ms (its disk may be hung)",
                            self.deadline_ms.load(Ordering::Relaxed)
                        ),
                    }),
                    Err(_) => Err(MetaError::ReadOnly),
                };
                (i, r)
            })
            .collect();
        let mut ok = 0;
        let mut last = None;
        for (i, r) in results {
            match r {
                Ok(()) => ok += 1,
                Err(e) => {
                    log::error!(
                        "metadata replica {} failed a commit and is dropped until remount: {e}",
                        replicas[i].name
                    );
                    replicas[i].healthy.store(false, Ordering::Relaxed);
                    last = Some(e);
                }
            }
        }
        if ok == 0 {
            return Err(last.unwrap_or(MetaError::ReadOnly));
        }
        Ok(())
    }

    fn sequence(&self) -> Result<u64, MetaError> {
        self.first_healthy(|s| s.sequence())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{LmdbStore, MemStore};
    use std::sync::Arc;

    struct Shared(Arc<MemStore>);
    impl MetaStore for Shared {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
            self.0.get(key)
        }
        fn range(&self, a: &[u8], b: &[u8], l: usize) -> Result<KvPairs, MetaError> {
            self.0.range(a, b, l)
        }
        fn commit(&self, ops: &[Op]) -> Result<(), MetaError> {
            self.0.commit(ops)
        }
        fn sequence(&self) -> Result<u64, MetaError> {
            self.0.sequence()
        }
    }

    #[test]
    fn survives_losing_all_but_one_replica() {
        let mems: Vec<Arc<MemStore>> = (0..3).map(|_| Arc::new(MemStore::default())).collect();
        let r = ReplicatedStore::new(
            mems.iter()
                .enumerate()
                .map(|(i, m)| {
                    (
                        format!("r{i}"),
                        Box::new(Shared(m.clone())) as Box<dyn MetaStore>,
                    )
                })
                .collect(),
        );
        r.commit(&[Op::Put(b"k".to_vec(), b"1".to_vec())]).unwrap();
        mems[0].fail.store(true, Ordering::Relaxed);
        mems[1].fail.store(true, Ordering::Relaxed);
        r.commit(&[Op::Put(b"k".to_vec(), b"2".to_vec())]).unwrap();
        assert_eq!(r.get(b"k").unwrap(), Some(b"2".to_vec()));
        mems[2].fail.store(true, Ordering::Relaxed);
        assert!(r.commit(&[Op::Del(b"k".to_vec())]).is_err());
    }

    #[test]
    fn lagging_lmdb_replica_is_refreshed_on_open() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        {
            let sa = LmdbStore::open(&a).unwrap();
            let sb = LmdbStore::open(&b).unwrap();
            sa.commit(&[Op::Put(b"x".to_vec(), b"old".to_vec())])
                .unwrap();
            sb.commit(&[Op::Put(b"x".to_vec(), b"old".to_vec())])
                .unwrap();
            sa.commit(&[Op::Put(b"x".to_vec(), b"new".to_vec())])
                .unwrap();
            sa.close();
            sb.close();
        }
        let r = ReplicatedStore::open_lmdb(vec![
            ("b".into(), None, b.clone()),
            ("a".into(), None, a.clone()),
        ])
        .unwrap();
        assert_eq!(r.get(b"x").unwrap(), Some(b"new".to_vec()));
        // every replica now answers the newest value
        for rep in &r.list() {
            assert_eq!(rep.store.get(b"x").unwrap(), Some(b"new".to_vec()));
        }
    }
}
