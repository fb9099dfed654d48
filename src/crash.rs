//! Crash simulation under the two seams: a member disk ([`CrashDisk`]) and a
//! metadata store ([`CrashMeta`]) that record every write and sync, keep
//! what a real disk would keep across a power cut (only what was synced),
//! and can stop the machine at a chosen event.
//!
//! - A [`CrashClock`] shared by all of them numbers every mutating or
//!   syncing call. With `stop_at(n)`, call `n` and every later one fail
//!   with EIO: the machine died just before it.
//! - [`CrashDisk::crash`] then rebuilds each disk from its durable state.
//!   Files changed since their last sync come back old, new or torn, as the
//!   [`Unsynced`] policy says: a real disk promises nothing for them.
//! - Each mount uses fresh views ([`CrashDisk::view`], [`CrashMeta::view`]):
//!   a view from before a crash fails every call, so threads of the dead
//!   mount cannot write into the next one.
//! - `fail` makes a disk return EIO (a lost member), `full` ENOSPC on
//!   writes, `slow_ms` delays reads; `corrupt` flips bytes.
//!
//! Durability follows POSIX: a written file is durable after `sync_file` of
//! it and `sync_dir` of its directory, or after `sync_fs`; a removal after
//! `sync_dir` or `sync_fs`; `write_atomic` is durable when it returns. A
//! metadata commit is atomic and durable when it returns, as the
//! [`MetaStore`] contract says (the WAL and LMDB have their own tests).

use crate::meta::{KvPairs, MemStore, MetaError, MetaStore, Op};
use crate::pool::DiskBackend;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Numbers the events of a simulated machine and stops it at a chosen one.
#[derive(Debug, Default)]
pub struct CrashClock {
    events: AtomicU64,
    /// Event number at which the machine stops (u64::MAX: never).
    stop: AtomicU64,
    /// Incremented at every crash; views of older epochs are dead.
    epoch: AtomicU64,
    /// Descriptions of the events so far, when tracing.
    trace: Mutex<Option<Vec<String>>>,
}

impl CrashClock {
    /// A clock that never stops.
    pub fn new() -> Arc<Self> {
        let c = CrashClock::default();
        c.stop.store(u64::MAX, Ordering::SeqCst);
        Arc::new(c)
    }

    /// Stop the machine at event `n` (counted from now on: the next event is 0).
    pub fn stop_at(&self, n: u64) {
        let now = self.events.load(Ordering::SeqCst);
        self.stop.store(now.saturating_add(n), Ordering::SeqCst);
    }

    /// Events so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::SeqCst)
    }

    /// True once the machine has stopped.
    pub fn stopped(&self) -> bool {
        self.events.load(Ordering::SeqCst) >= self.stop.load(Ordering::SeqCst)
    }

    /// Record event descriptions from now on (for failure reports).
    pub fn start_trace(&self) {
        *self.trace.lock().unwrap() = Some(Vec::new());
    }

    /// The recorded events.
    pub fn trace(&self) -> Vec<String> {
        self.trace.lock().unwrap().clone().unwrap_or_default()
    }

    /// Count one event; Err if the machine is (now) stopped.
    fn tick(&self, what: impl FnOnce() -> String) -> io::Result<()> {
        let stop = self.stop.load(Ordering::SeqCst);
        let n = self.events.fetch_add(1, Ordering::SeqCst);
        if n >= stop {
            self.events.fetch_sub(1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if let Some(t) = self.trace.lock().unwrap().as_mut() {
            t.push(format!("{n}: {}", what()));
        }
        Ok(())
    }

    fn begin_epoch(&self) -> u64 {
        self.stop.store(u64::MAX, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// What a crash does to a file changed since it was last made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsynced {
    /// Every unsynced change is lost.
    Lose,
    /// Every unsynced change survives (the page cache happened to be written).
    Keep,
    /// Chosen per file from the seed: lost, kept, or kept torn (cut short
    /// or with a zeroed block in the middle).
    Mixed(u64),
}

#[derive(Debug, Default)]
struct Files {
    /// What reads see.
    live: BTreeMap<String, Vec<u8>>,
    /// What survives a crash.
    durable: BTreeMap<String, Vec<u8>>,
    /// Paths whose contents were synced since their last change.
    content_synced: BTreeSet<String>,
    /// Paths whose directory entry was synced since their last change.
    entry_synced: BTreeSet<String>,
}

impl Files {
    fn settle(&mut self, rel: &str) {
        if self.content_synced.contains(rel) && self.entry_synced.contains(rel) {
            match self.live.get(rel) {
                Some(v) => self.durable.insert(rel.to_string(), v.clone()),
                None => self.durable.remove(rel),
            };
        }
    }
}

/// An in-memory member disk that loses unsynced writes in a crash.
#[derive(Debug)]
pub struct CrashDisk {
    clock: Arc<CrashClock>,
    files: Mutex<Files>,
    /// When set, every call fails with EIO (a lost member).
    pub fail: AtomicBool,
    /// When set, writes fail with ENOSPC (a full disk).
    pub full: AtomicBool,
    /// Milliseconds added to every read (a slow disk).
    pub slow_ms: AtomicU64,
}

fn dir_of(rel: &str) -> &str {
    rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

impl CrashDisk {
    /// An empty disk on `clock`.
    pub fn new(clock: Arc<CrashClock>) -> Arc<Self> {
        Arc::new(CrashDisk {
            clock,
            files: Mutex::new(Files::default()),
            fail: AtomicBool::new(false),
            full: AtomicBool::new(false),
            slow_ms: AtomicU64::new(0),
        })
    }

    /// A handle for one mount; dead after the next crash.
    pub fn view(self: &Arc<Self>) -> Arc<dyn DiskBackend> {
        Arc::new(View {
            disk: self.clone(),
            epoch: self.clock.epoch.load(Ordering::SeqCst),
        })
    }

    /// Lose power: keep the durable state, and for each unsynced file do
    /// what `policy` says. Call on every disk, then [`CrashClock`] is reset
    /// by the first call of [`crash_all`].
    fn crash(&self, policy: Unsynced, salt: u64) {
        let mut f = self.files.lock().unwrap();
        let mut out = f.durable.clone();
        let changed: BTreeSet<String> = f.live.keys().chain(f.durable.keys()).cloned().collect();
        for (i, rel) in changed.iter().enumerate() {
            let live = f.live.get(rel);
            if live == f.durable.get(rel) {
                continue;
            }
            let choice = match policy {
                Unsynced::Lose => 0,
                Unsynced::Keep => 1,
                Unsynced::Mixed(seed) => mix(seed ^ salt ^ (i as u64).wrapping_mul(0x9e37)) % 4,
            };
            match (choice, live) {
                (0, _) => {}
                (_, None) => {
                    out.remove(rel);
                }
                (1, Some(v)) => {
                    out.insert(rel.clone(), v.clone());
                }
                // a tear hits only bytes written since the last sync: the
                // prefix the file shares with its durable copy (an append
                // log's synced records) stays as it was
                (2, Some(v)) => {
                    let kept = shared_prefix(v, f.durable.get(rel));
                    let keep = kept + (mix(salt ^ i as u64) as usize) % (v.len() - kept + 1);
                    out.insert(rel.clone(), v[..keep].to_vec());
                }
                (_, Some(v)) => {
                    let mut t = v.clone();
                    let kept = shared_prefix(v, f.durable.get(rel));
                    if t.len() > kept {
                        let at = kept + (mix(salt ^ !(i as u64)) as usize) % (t.len() - kept);
                        let end = (at + 512).min(t.len());
                        t[at..end].fill(0);
                    }
                    out.insert(rel.clone(), t);
                }
            }
        }
        f.live = out.clone();
        f.durable = out;
        f.content_synced = f.live.keys().cloned().collect();
        f.entry_synced = f.content_synced.clone();
    }

    /// Apply `g` to the stored bytes of `rel` (live and durable).
    pub fn corrupt(&self, rel: &str, g: impl Fn(&mut Vec<u8>)) -> bool {
        let mut f = self.files.lock().unwrap();
        let mut hit = false;
        if let Some(v) = f.live.get_mut(rel) {
            g(v);
            hit = true;
        }
        if let Some(v) = f.durable.get_mut(rel) {
            g(v);
        }
        hit
    }

    /// Files whose live contents would not survive a crash as they are.
    pub fn unsynced(&self) -> Vec<String> {
        let f = self.files.lock().unwrap();
        f.live
            .keys()
            .chain(f.durable.keys())
            .filter(|k| f.live.get(*k) != f.durable.get(*k))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Every file on the disk (live view) with its length.
    pub fn list(&self) -> Vec<(String, usize)> {
        let f = self.files.lock().unwrap();
        f.live.iter().map(|(k, v)| (k.clone(), v.len())).collect()
    }

    /// The live contents of `rel`, if it exists.
    pub fn contents(&self, rel: &str) -> Option<Vec<u8>> {
        self.files.lock().unwrap().live.get(rel).cloned()
    }
}

/// Crash every disk and the metadata store of one machine with `policy`,
/// and start a new epoch: views from before are dead from now on.
pub fn crash_all(clock: &CrashClock, disks: &[Arc<CrashDisk>], meta: &CrashMeta, policy: Unsynced) {
    clock.begin_epoch();
    for (i, d) in disks.iter().enumerate() {
        d.crash(policy, i as u64 + 1);
    }
    let _ = meta; // commits are durable when they return: nothing to lose
}

/// SplitMix64 finaliser.
/// Length of the common prefix of `live` and `durable`.
fn shared_prefix(live: &[u8], durable: Option<&Vec<u8>>) -> usize {
    durable.map_or(0, |d| {
        live.iter()
            .zip(d.iter())
            .take_while(|(a, b)| a == b)
            .count()
    })
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One mount's handle on a [`CrashDisk`].
#[derive(Debug)]
struct View {
    disk: Arc<CrashDisk>,
    epoch: u64,
}

impl View {
    /// The disk's files, if this view may still use them. Checked under the
    /// lock, so nothing of a dead mount lands after a crash.
    fn files(&self) -> io::Result<std::sync::MutexGuard<'_, Files>> {
        let f = self.disk.files.lock().unwrap();
        if self.disk.fail.load(Ordering::Relaxed)
            || self.epoch != self.disk.clock.epoch.load(Ordering::SeqCst)
            || self.disk.clock.stopped()
        {
            return Err(eio());
        }
        Ok(f)
    }

    /// Wait as a slow disk would.
    fn slow(&self) {
        let ms = self.disk.slow_ms.load(Ordering::Relaxed);
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }

    /// The files, after counting one event.
    fn event(&self, what: impl FnOnce() -> String) -> io::Result<std::sync::MutexGuard<'_, Files>> {
        let f = self.files()?;
        self.disk.clock.tick(what)?;
        Ok(f)
    }
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

impl DiskBackend for View {
    fn describe(&self) -> String {
        "crash-sim".into()
    }
    fn local_root(&self) -> Option<&Path> {
        None
    }
    fn write_file(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        if self.disk.full.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let mut f = self.event(|| format!("write {rel}"))?;
        f.live.insert(rel.to_string(), parts.concat());
        f.content_synced.remove(rel);
        f.entry_synced.remove(rel);
        Ok(())
    }
    fn write_at(&self, rel: &str, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        if self.disk.full.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let mut f = self.event(|| format!("write at {offset} of {rel}"))?;
        let new = !f.live.contains_key(rel);
        crate::pool::splice_at(f.live.entry(rel.to_string()).or_default(), offset, parts);
        f.content_synced.remove(rel);
        if new {
            f.entry_synced.remove(rel);
        }
        Ok(())
    }
    fn write_atomic(&self, rel: &str, data: &[u8]) -> io::Result<()> {
        let mut f = self.event(|| format!("write+sync {rel}"))?;
        f.live.insert(rel.to_string(), data.to_vec());
        f.durable.insert(rel.to_string(), data.to_vec());
        f.content_synced.insert(rel.to_string());
        f.entry_synced.insert(rel.to_string());
        Ok(())
    }
    fn read_file(&self, rel: &str) -> io::Result<Vec<u8>> {
        self.slow();
        self.files()?.live.get(rel).cloned().ok_or_else(enoent)
    }
    fn read_range(&self, rel: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.slow();
        let f = self.files()?;
        let all = f.live.get(rel).ok_or_else(enoent)?;
        let s = (offset as usize).min(all.len());
        let e = s.saturating_add(len).min(all.len());
        Ok(all[s..e].to_vec())
    }
    fn remove_file(&self, rel: &str) -> io::Result<()> {
        let mut f = self.event(|| format!("remove {rel}"))?;
        if f.live.remove(rel).is_some() {
            // the removal needs a directory sync to be durable
            f.content_synced.insert(rel.to_string());
            f.entry_synced.remove(rel);
        }
        Ok(())
    }
    fn punch_hole(&self, rel: &str, offset: u64, len: u64) -> io::Result<()> {
        // Applied to the durable bytes at once: the punched bytes are dead
        // (no committed record names them), so losing them sooner is the
        // harsher case; and a torn crash can then still hit only bytes
        // written since the last sync (see `crash`), never a synced
        // record after the hole.
        let mut f = self.event(|| format!("punch {len} at {offset} of {rel}"))?;
        if let Some(v) = f.live.get_mut(rel) {
            crate::pool::zero_range(v, offset, len);
        }
        if let Some(v) = f.durable.get_mut(rel) {
            crate::pool::zero_range(v, offset, len);
        }
        Ok(())
    }
    fn list_dir(&self, rel: &str) -> io::Result<Vec<String>> {
        let prefix = format!("{rel}/");
        Ok(self
            .files()?
            .live
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string)
            .collect())
    }
    fn create_dir_all(&self, _rel: &str) -> io::Result<()> {
        self.files().map(|_| ())
    }
    fn sync_file(&self, rel: &str) -> io::Result<()> {
        let mut f = self.event(|| format!("fsync {rel}"))?;
        if !f.live.contains_key(rel) {
            return Err(enoent());
        }
        f.content_synced.insert(rel.to_string());
        f.settle(rel);
        Ok(())
    }
    fn sync_dir(&self, rel: &str) -> io::Result<()> {
        let mut f = self.event(|| format!("fsync dir {rel}"))?;
        let under: Vec<String> = f
            .live
            .keys()
            .chain(f.durable.keys())
            .filter(|k| dir_of(k) == rel)
            .cloned()
            .collect();
        for k in under {
            f.entry_synced.insert(k.clone());
            f.settle(&k);
        }
        Ok(())
    }
    fn capacity(&self) -> io::Result<(u64, u64)> {
        let _live = self.files()?;
        if self.disk.full.load(Ordering::Relaxed) {
            return Ok((1 << 40, 0));
        }
        Ok((1 << 40, 1 << 40))
    }
    fn sync_fs(&self) -> io::Result<()> {
        let mut f = self.event(|| "syncfs".into())?;
        f.durable = f.live.clone();
        f.content_synced = f.live.keys().cloned().collect();
        f.entry_synced = f.content_synced.clone();
        Ok(())
    }
    fn fs_id(&self) -> Option<u64> {
        None
    }
}

/// A metadata store on a [`CrashClock`]: each commit is one event, atomic
/// and durable when it returns.
#[derive(Debug)]
pub struct CrashMeta {
    clock: Arc<CrashClock>,
    store: MemStore,
}

impl CrashMeta {
    /// An empty store on `clock`.
    pub fn new(clock: Arc<CrashClock>) -> Arc<Self> {
        Arc::new(CrashMeta {
            clock,
            store: MemStore::default(),
        })
    }

    /// A handle for one mount; dead after the next crash.
    pub fn view(self: &Arc<Self>) -> Arc<dyn MetaStore> {
        Arc::new(MetaView {
            meta: self.clone(),
            epoch: self.clock.epoch.load(Ordering::SeqCst),
        })
    }
}

struct MetaView {
    meta: Arc<CrashMeta>,
    epoch: u64,
}

impl MetaView {
    fn alive(&self) -> Result<(), MetaError> {
        if self.epoch != self.meta.clock.epoch.load(Ordering::SeqCst) || self.meta.clock.stopped() {
            return Err(MetaError::Store {
                store: "crash-sim".into(),
                msg: "the machine has stopped".into(),
            });
        }
        Ok(())
    }
}

impl MetaStore for MetaView {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        self.alive()?;
        self.meta.store.get(key)
    }
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs, MetaError> {
        self.alive()?;
        self.meta.store.range(start, end, limit)
    }
    fn commit(&self, ops: &[Op]) -> Result<(), MetaError> {
        self.alive()?;
        self.meta
            .clock
            .tick(|| format!("metadata commit of {} ops", ops.len()))
            .map_err(|e| MetaError::Store {
                store: "crash-sim".into(),
                msg: e.to_string(),
            })?;
        self.meta.store.commit(ops)
    }
    fn sequence(&self) -> Result<u64, MetaError> {
        self.alive()?;
        self.meta.store.sequence()
    }
}
