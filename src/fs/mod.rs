//! POSIX semantics over inodes, directories and file handles. No fuser
//! types here: the FUSE glue in `crate::fuse` calls these methods, and so
//! do the tests below FUSE.
//!
//! Locking: one mutex (`inner`) orders every namespace change and the
//! in-memory state of open files. Metadata batches are applied to the
//! write-back cache under it; waiting for durability (`MetaCache::sync`)
//! happens after it is released.

mod budget;
mod data;
mod error;
mod namespace;
mod pages;
pub use crate::maintenance::repair::{Progress, RepairItem, Task, DEFAULT_RATE};
pub use crate::maintenance::replica::{
    ReplicaCounts, ReplicaRec, ReplicaState, DEFAULT_VERIFY_SECS, REPLICA_DIR,
};
pub use crate::maintenance::tier::{Tier, TierCounts, TierPolicy, TierState, TierStatus};
pub use namespace::{relatime_due, AtimeMode, NewNode, SetAttr};
pub mod names;
pub mod schema;
mod xattr;

pub use budget::DEFAULT_DIRTY_BUDGET;
pub use error::FsError;
pub use schema::{Inode, Kind, ROOT_INO};

use crate::meta::{MetaCache, Op};
use crate::pool::{Pool, StripeLoc};
use schema::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// Result of filesystem operations.
pub type FsResult<T> = Result<T, FsError>;

/// Largest file size (2^50 bytes: far beyond any member, and offsets stay exact).
pub const MAX_FILE_SIZE: u64 = 1 << 50;
/// Dirty stripes an open file may buffer before they are written out.
const MAX_DIRTY_STRIPES: usize = 2;
/// Granule of small overwrites buffered as pages.
pub const PAGE: usize = 4096;
/// Pages one open file may buffer before they are written out as patches
/// (64 MiB; all open files together stay within `fs::budget`).
const MAX_DIRTY_PAGES: usize = 16 * 1024;
/// Pages of one stripe beyond which the stripe is rewritten whole instead
/// of patched: a patch writes m+1 copies of each page and reads nothing,
/// a rewrite reads the stripe and writes k+m shards, so with 4+2 and
/// 1 MiB shards the two cost the same bytes written at 512 pages.
const MAX_STRIPE_PAGES: usize = 384;
/// Patches a stripe may carry (each read of a patched range lays every
/// patch that touches it, and each costs its stripe location ~105 bytes
/// of metadata); past it a flush merges the newest into one (see
/// `pages::merge_from`), or rewrites the stripe whole when the merge would
/// be too big. 16 → 32 cut the bytes written per sqlite transaction from
/// 658 to 613 KiB (`/tmp/ab/sqlio.sh`, see docs/PERFORMANCE.md).
pub const MAX_PATCHES: usize = 32;

/// State of a file while any handle (or pending writeback) has it open.
#[derive(Debug)]
pub(crate) struct OpenFile {
    pub(crate) refs: u32,
    /// Authoritative inode while open; `inode.size` is the logical size.
    pub(crate) inode: Inode,
    /// Size covered by durable (committed) data and metadata.
    pub(crate) persisted_size: u64,
    /// Inline content, loaded on first use.
    pub(crate) inline: Option<Vec<u8>>,
    pub(crate) inline_dirty: bool,
    /// Stripe buffers not yet written, each `stripe_size` long.
    pub(crate) dirty: BTreeMap<u64, Vec<u8>>,
    /// Pages written into committed stripes and not yet written out, by
    /// stripe, then page ([`PAGE`] bytes each, clipped to the stripe's
    /// length): small overwrites, written out as patches (`fs::data`). A
    /// stripe has either a buffer in `dirty` or pages here, never both,
    /// and never pages while a write of it is in flight.
    pub(crate) pages: BTreeMap<u64, BTreeMap<u32, Vec<u8>>>,
    /// Pages in `pages`, all stripes together.
    pub(crate) page_count: usize,
    /// Inode fields changed since the last persist.
    pub(crate) attr_dirty: bool,
    /// Last stripe read: (stripe, version (see `StripeLoc::version`), data).
    pub(crate) cache: Option<(u64, u64, Arc<Vec<u8>>)>,
    /// Full stripes being written in the background, by stripe.
    pub(crate) inflight: BTreeMap<u64, InFlight>,
    /// True once committed stripes past EOF were looked for (see
    /// `Fs::clear_past_eof`); growth in this open session needs no check.
    pub(crate) eof_checked: bool,
    /// Writable handles.
    pub(crate) writers: u32,
    /// Handles served by passthrough from the object's replica. While any
    /// is live the object is read-only (ETXTBSY; see `fs::replica`).
    pub(crate) pt_refs: u32,
    /// The replica file those handles read, and its name: the kernel wants
    /// every open of an inode in passthrough mode on the same backing file.
    pub(crate) pt_file: Option<(Arc<std::fs::File>, String)>,
    /// The file in use was found corrupt: new opens fail (EIO) until the
    /// passthrough handles are closed.
    pub(crate) pt_bad: bool,
}

/// A stripe handed to a background writer. Its metadata is committed when
/// the writer is reaped (next write, close, fsync, truncate), in the
/// caller's order; reads see its bytes meanwhile.
#[derive(Debug)]
pub(crate) struct InFlight {
    generation: u64,
    len: usize,
    data: Arc<Vec<u8>>,
    /// Result from the pool's stripe writers.
    done: crossbeam::channel::Receiver<std::io::Result<Result<StripeLoc, crate::pool::PoolError>>>,
}

#[derive(Debug)]
pub(crate) struct Handle {
    pub(crate) ino: u64,
    pub(crate) writable: bool,
    /// Served by passthrough (counted in `OpenFile::pt_refs`).
    pub(crate) passthrough: bool,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) open: HashMap<u64, OpenFile>,
    pub(crate) handles: HashMap<u64, Handle>,
    pub(crate) next_fh: u64,
    pub(crate) next_ino: u64,
    pub(crate) next_gen: u64,
    /// Stripe buffers no longer used, kept for reuse: a fresh 4 MiB buffer
    /// costs a thousand page faults and the kernel's zeroing.
    pub(crate) spare: Vec<Vec<u8>>,
    /// What open files hold, as far as writes have charged it (an upper
    /// bound until recounted; see `fs::budget`).
    pub(crate) mem_estimate: usize,
}

/// Attributes handed to the FUSE glue.
pub type Attr = Inode;

/// One readdir entry: (inode, offset of the next entry, kind, name).
pub type DirEntry = (u64, u64, Kind, Vec<u8>);

/// The filesystem.
pub struct Fs {
    /// The pool of members.
    pub pool: Arc<Pool>,
    /// Metadata, through the write-back cache.
    pub meta: Arc<MetaCache>,
    /// Object temperatures and tiering counters.
    pub tier: TierState,
    /// Whole-file replicas and passthrough.
    pub replicas: ReplicaState,
    /// Stripes carrying patches, and when each was last patched (for
    /// folding; see `maintenance::fold`).
    pub(crate) patched: Mutex<HashMap<(u64, u64), std::time::Instant>>,
    /// When statfs last had the members' space measured.
    capacity_at: Mutex<Option<std::time::Instant>>,
    /// Bytes open files may buffer in all (see `fs::budget`).
    budget: std::sync::atomic::AtomicUsize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fs({:?})", self.pool.sb.pool_id)
    }
}

fn read_counter(meta: &MetaCache, name: &str, default: u64) -> FsResult<u64> {
    Ok(meta
        .get(&counter_key(name))?
        .map(|v| u64::from_be_bytes(v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8])))
        .unwrap_or(default))
}

impl Fs {
    /// Open the filesystem over a pool and its metadata: create the root on
    /// a new pool, reclaim orphans and unreferenced shards left by a crash.
    pub fn mount(pool: Arc<Pool>, meta: Arc<MetaCache>) -> FsResult<Fs> {
        let next_ino = read_counter(&meta, "ino", ROOT_INO + 1)?;
        // Generations are persisted with every stripe write; leave a gap so a
        // number never repeats even if the last counter update was lost.
        let next_gen = read_counter(&meta, "gen", 1)? + 1_000_000;
        let fs = Fs {
            pool,
            meta,
            tier: TierState::default(),
            replicas: ReplicaState::default(),
            patched: Mutex::new(HashMap::new()),
            capacity_at: Mutex::new(None),
            budget: std::sync::atomic::AtomicUsize::new(budget::DEFAULT_DIRTY_BUDGET),
            inner: Mutex::new(Inner {
                open: HashMap::new(),
                handles: HashMap::new(),
                next_fh: 1,
                next_ino,
                next_gen,
                spare: Vec::new(),
                mem_estimate: 0,
            }),
        };
        // inline file data, for statfs
        fs.meta.keep_tally(b"B", counter_key("inline_bytes"))?;
        if fs.meta.get(&inode_key(ROOT_INO))?.is_none() {
            let t = now();
            let root = Inode {
                ino: ROOT_INO,
                kind: Kind::Dir,
                perm: 0o755,
                uid: 0,
                gid: 0,
                nlink: 2,
                size: 0,
                atime: t,
                mtime: t,
                ctime: t,
                crtime: t,
                rdev: 0,
                parent: ROOT_INO,
                next_cookie: FIRST_COOKIE,
                striped: false,
                target: Vec::new(),
            };
            fs.meta
                .apply(vec![Op::Put(inode_key(ROOT_INO), enc(&root))], vec![])?;
            fs.meta.sync()?;
        }
        fs.load_member_health()?;
        // members that missed a `disk add` learn the current member list
        fs.pool.refresh_superblocks();
        fs.load_tier_policy()?;
        fs.load_temperatures()?;
        // A clean unmount leaves no orphans and no unreferenced shards; after
        // anything else (kill -9, crash, a member that missed deletions)
        // sweep before serving.
        let clean = read_counter(&fs.meta, "clean", 0)? == 1;
        if clean {
            log::info!("last unmount was clean: no sweep needed");
        } else {
            fs.reclaim_orphans()?;
        }
        fs.open_patches(!clean)?;
        fs.sweep_replicas()?;
        fs.meta.apply(
            vec![Op::Put(counter_key("clean"), 0u64.to_be_bytes().to_vec())],
            vec![],
        )?;
        fs.meta.sync()?;
        Ok(fs)
    }

    /// The open-file table. Poison policy (`guard::panic`): taken over
    /// when poisoned. Its sections are map inserts/removes and counter
    /// bumps; an open file's dirty stripe is written back (or not) as a
    /// whole, so a request that panicked with the lock held leaves the
    /// table as valid as between two requests, and fsync/close of every
    /// other file must keep working.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::guard::panic::lock_or_recover(&self.inner)
    }

    /// Inode record: the open copy if the file is open, else from metadata.
    pub(crate) fn inode(&self, g: &Inner, ino: u64) -> FsResult<Inode> {
        if let Some(of) = g.open.get(&ino) {
            return Ok(of.inode.clone());
        }
        self.load_inode(ino)
    }

    pub(crate) fn load_inode(&self, ino: u64) -> FsResult<Inode> {
        match self.meta.get(&inode_key(ino))? {
            Some(b) => dec("inode", &b),
            None => Err(FsError::NotFound),
        }
    }

    /// Record for metadata of an inode that may be open (durable size only).
    fn persist_record(g: &Inner, inode: &Inode) -> Vec<u8> {
        match g.open.get(&inode.ino) {
            Some(of) => {
                let mut r = inode.clone();
                r.size = of.persisted_size.min(inode.size);
                enc(&r)
            }
            None => enc(inode),
        }
    }

    /// Store an updated inode: in the open copy and/or in a batch.
    fn put_inode(g: &mut Inner, inode: &Inode, ops: &mut Vec<Op>) {
        ops.push(Op::Put(
            inode_key(inode.ino),
            Self::persist_record(g, inode),
        ));
        if let Some(of) = g.open.get_mut(&inode.ino) {
            of.inode = inode.clone();
        }
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let g = self.lock();
        self.inode(&g, ino)
    }

    /// Make all metadata durable (fsyncdir, syncfs, unmount).
    pub fn sync_all(&self) -> FsResult<()> {
        let inos: Vec<u64> = self.lock().open.keys().copied().collect();
        for ino in inos {
            let mut g = self.lock();
            if g.open.contains_key(&ino) {
                self.flush_file_locked(&mut g, ino)?;
            }
        }
        self.meta.sync()?;
        Ok(())
    }

    /// Final sync at unmount: flush everything and, if nothing was left to
    /// sweep, record that the unmount was clean.
    pub fn unmount_sync(&self) -> FsResult<()> {
        // temperatures are hints: failing to keep them fails nothing else
        if let Err(e) = self.save_temperatures() {
            log::warn!("temperatures not saved: {e}");
        }
        self.sync_all()?;
        let orphans = !self.meta.range(b"O", b"P", 1)?.is_empty();
        if !orphans && !self.pool.garbage_left() && self.lock().open.is_empty() {
            self.meta.apply(
                vec![Op::Put(counter_key("clean"), 1u64.to_be_bytes().to_vec())],
                vec![],
            )?;
            self.meta.sync()?;
        }
        Ok(())
    }

    /// Delete inodes unlinked while open before a crash or unmount, and shard
    /// files that no committed stripe map points to. Runs at mount, before
    /// any other operation.
    fn reclaim_orphans(&self) -> FsResult<()> {
        let orphans = self.meta.range(b"O", b"P", usize::MAX)?;
        for (k, _) in &orphans {
            let ino = key_u64_at(k, 1);
            log::info!("reclaiming inode {ino}, unlinked while open before the last stop");
            let mut ops = Vec::new();
            let mut after = Vec::new();
            self.destroy_ops(ino, &mut ops, &mut after)?;
            self.meta.apply(ops, after)?;
        }
        self.meta.sync()?;
        let mut removed = 0u64;
        for (mi, rel) in self.pool.list_all_shards() {
            let name = rel.rsplit('/').next().unwrap_or("");
            let keep = match crate::pool::parse_shard_name(name) {
                Some((object, stripe, generation, index)) => {
                    match self.meta.get(&stripe_key(object, stripe))? {
                        Some(b) => {
                            let loc: StripeLoc = dec_loc(&self.pool, &b)?;
                            loc.generation == generation
                                && loc.holds(index as usize, mi, crate::pool::Place::FILE)
                        }
                        None => false,
                    }
                }
                None => false,
            };
            if !keep {
                if let Some(d) = self.pool.member(mi).disk() {
                    if d.remove_file(&rel).is_ok() {
                        removed += 1;
                    } else {
                        self.pool.mark_garbage();
                    }
                }
            }
        }
        if removed > 0 {
            log::info!("reclaimed {removed} unreferenced shard files");
        }
        Ok(())
    }

    /// Batch ops that delete an inode and everything it owns; shard files
    /// are removed after the batch is durable.
    fn destroy_ops(
        &self,
        ino: u64,
        ops: &mut Vec<Op>,
        after: &mut Vec<crate::meta::AfterCommit>,
    ) -> FsResult<()> {
        ops.push(Op::Del(inode_key(ino)));
        ops.push(Op::Del(inline_key(ino)));
        ops.push(Op::Del(orphan_key(ino)));
        if let Some(rec) = self.replica(ino)? {
            ops.push(Op::Del(replica_key(ino)));
            if let Some(p) = self.replica_path(&rec) {
                after.push(Box::new(move || {
                    let _ = p.remove();
                }));
            }
        }
        let xp = xattr_prefix(ino);
        for (k, _) in self
            .meta
            .range(&xp, &crate::meta::prefix_end(&xp), usize::MAX)?
        {
            ops.push(Op::Del(k));
        }
        self.drop_stripes_from(ino, 0, |_| false, ops, after)?;
        Ok(())
    }

    /// Batch ops that drop the committed stripes of `ino` from stripe
    /// `first` on (except those `keep` names); their shards are deleted
    /// after the batch is durable. Returns the stripes dropped.
    pub(super) fn drop_stripes_from(
        &self,
        ino: u64,
        first: u64,
        keep: impl Fn(u64) -> bool,
        ops: &mut Vec<Op>,
        after: &mut Vec<crate::meta::AfterCommit>,
    ) -> FsResult<Vec<u64>> {
        let sp = stripe_prefix(ino);
        let mut dropped = Vec::new();
        for (k, v) in self.meta.range(
            &stripe_key(ino, first),
            &crate::meta::prefix_end(&sp),
            usize::MAX,
        )? {
            let stripe = key_u64_at(&k, 9);
            if keep(stripe) {
                continue;
            }
            let loc: StripeLoc = dec_loc(&self.pool, &v)?;
            ops.push(Op::Del(k));
            let pool = self.pool.clone();
            after.push(Box::new(move || pool.delete_stripe(ino, stripe, &loc)));
            dropped.push(stripe);
        }
        Ok(dropped)
    }

    /// Usable (total, free) bytes and file counts for statfs. The members'
    /// space is measured again at most once a second; inline file data
    /// (kept in the metadata, not in shards) counts as used.
    pub fn statfs(&self) -> (u64, u64, u64) {
        {
            let mut at = crate::guard::panic::lock_or_recover(&self.capacity_at);
            if at.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
                self.pool.refresh_capacity();
                *at = Some(std::time::Instant::now());
            }
        }
        let (t, f) = self.pool.usable_capacity();
        let f = f.saturating_sub(self.meta.tally());
        let files = self.lock().next_ino;
        (t, f, files)
    }

    /// Stripe size of the pool.
    pub fn stripe_size(&self) -> u64 {
        self.pool.stripe_size()
    }

    /// Resolve a '/'-separated path from the root to an inode.
    pub fn resolve(&self, path: &str) -> FsResult<Inode> {
        let mut ino = ROOT_INO;
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            ino = self.lookup(ino, comp.as_bytes())?.ino;
        }
        self.getattr(ino)
    }

    /// Stripe map of a file: (stripe index, location).
    pub fn stripes(&self, ino: u64) -> FsResult<Vec<(u64, StripeLoc)>> {
        let sp = stripe_prefix(ino);
        self.meta
            .range(&sp, &crate::meta::prefix_end(&sp), usize::MAX)?
            .into_iter()
            .map(|(k, v)| Ok((key_u64_at(&k, 9), dec_loc(&self.pool, &v)?)))
            .collect()
    }

    /// Count of objects (inodes) and stripes, for status.
    pub fn counts(&self) -> FsResult<(u64, u64, u64)> {
        let mut inodes = 0;
        let mut stripes = 0;
        let mut degraded = 0;
        let mut cursor = b"I".to_vec();
        loop {
            let batch = self.meta.range(&cursor, b"J", 4096)?;
            if batch.is_empty() {
                break;
            }
            inodes += batch.len() as u64;
            cursor = batch.last().unwrap().0.clone();
            cursor.push(0);
        }
        let mut cursor = b"T".to_vec();
        loop {
            let batch = self.meta.range(&cursor, b"U", 4096)?;
            if batch.is_empty() {
                break;
            }
            for (_, v) in &batch {
                stripes += 1;
                let loc: StripeLoc = dec_loc(&self.pool, v)?;
                let healthy = loc
                    .members
                    .iter()
                    .filter(|&&m| {
                        m != crate::pool::NO_MEMBER && self.pool.member(m).live_disk().is_some()
                    })
                    .count();
                if healthy < loc.members.len() {
                    degraded += 1;
                }
            }
            cursor = batch.last().unwrap().0.clone();
            cursor.push(0);
        }
        Ok((inodes, stripes, degraded))
    }
}
