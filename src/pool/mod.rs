//! The pool of member disks: superblocks, membership, placement and shard
//! I/O. The pool knows stripes and shards, never inodes or names.

mod disk;
mod format;
pub mod heat;
pub mod placement;
mod read;
mod superblock;

pub use disk::{DirDisk, DiskBackend, MemDisk};
pub use format::{
    assemble, assemble_with, check_new_member_dir, mkfs, open_members, open_members_with, DiskWrap,
    MkfsOptions,
};
pub use read::ReadPolicy;
pub use superblock::{new_id, Superblock, FORMAT_VERSION, SUPERBLOCK_FILE};

use crate::ec::{Codec, ShardHeader, ShardId};
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Above this many pending shard files, `sync_pending` syncs whole
/// filesystems instead of single files.
const SYNCFS_THRESHOLD: usize = 24;

/// Marks a shard slot with no member (the shard was never written).
pub const NO_MEMBER: u16 = u16::MAX;

/// Where the shards of one stripe generation live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeLoc {
    /// Generation; part of every shard's name and header.
    pub generation: u64,
    /// File bytes held by the stripe.
    pub len: u32,
    /// `members[i]` holds shard i, or [`NO_MEMBER`].
    pub members: Vec<u16>,
}

/// Errors of the pool layer.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Fewer than k verified shards could be read.
    #[error("object {object} stripe {stripe}: only {have} of {need} shards readable")]
    Unreadable {
        /// inode
        object: u64,
        /// stripe index
        stripe: u64,
        /// verified shards found
        have: usize,
        /// k
        need: usize,
    },
    /// Too few healthy members to write a stripe safely.
    #[error("only {have} healthy members, {need} needed to write")]
    BelowWriteQuorum {
        /// healthy members
        have: usize,
        /// minimum
        need: usize,
    },
    /// Members are out of space.
    #[error("members are out of space")]
    NoSpace,
    /// Opening or formatting the pool failed; the message names the member and the fix.
    #[error("{0}")]
    Setup(String),
}

/// Counters shown by `shardctl status`.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Shards found missing, unreadable or corrupt on read.
    pub bad_shards: AtomicU64,
    /// Stripes decoded with parity because a data shard was bad.
    pub reconstructions: AtomicU64,
    /// Shard files written.
    pub shards_written: AtomicU64,
    /// Shard files read.
    pub shards_read: AtomicU64,
    /// Reads that asked more shards because one was slower than its
    /// member's recent p95.
    pub hedges: AtomicU64,
}

/// Health of a member. Reads use online, suspect and draining members;
/// new shards (writes, repair) go to online members only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Serving reads and writes.
    Online,
    /// Errors seen recently: still read, no new shards.
    Suspect,
    /// Taken out (too many errors, or `shardctl disk fail`): neither read
    /// nor written; repair rebuilds its shards elsewhere.
    Failed,
    /// Being emptied (`shardctl disk drain`): read, no new shards; repair
    /// moves its shards off, then it is removed.
    Draining,
    /// Emptied by a drain: holds no referenced shard.
    Removed,
    /// Not given at mount.
    Missing,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            0 => Health::Online,
            1 => Health::Suspect,
            2 => Health::Failed,
            3 => Health::Draining,
            4 => Health::Removed,
            _ => Health::Missing,
        }
    }

    /// Lower-case name, as shown by `shardctl status`.
    pub fn name(self) -> &'static str {
        match self {
            Health::Online => "online",
            Health::Suspect => "suspect",
            Health::Failed => "failed",
            Health::Draining => "draining",
            Health::Removed => "removed",
            Health::Missing => "missing",
        }
    }

    /// True if shards on a member in this state can be read.
    pub fn readable(self) -> bool {
        matches!(self, Health::Online | Health::Suspect | Health::Draining)
    }
}

/// Consecutive I/O errors that make an online member suspect.
pub const SUSPECT_AFTER: u64 = 3;
/// Consecutive I/O errors that make a member failed.
pub const FAIL_AFTER: u64 = 24;
/// Consecutive successes that make a suspect member online again.
pub const CLEAR_AFTER: u64 = 256;

/// Most members a pool can have (slots are preallocated so that members
/// can join a running pool without moving the others).
pub const MAX_MEMBERS: usize = 512;

/// One member disk of the pool, or an unused slot (no id yet).
#[derive(Debug)]
pub struct Member {
    /// Index in the superblock's member list.
    pub index: u16,
    /// Member id from the superblock (set once; unset: unused slot).
    id: OnceLock<String>,
    /// Path given at mount (or at `disk add`).
    path: OnceLock<String>,
    /// The disk, if it was present at mount (or added since).
    disk: OnceLock<Arc<dyn DiskBackend>>,
    /// Declared failure domain, if any.
    domain: OnceLock<String>,
    /// Load on the member, measured by the [`heat::Metered`] wrapper every
    /// disk call passes through.
    pub heat: Arc<heat::Heat>,
    /// HDD emulation limits, when the member is emulated.
    pub emulated: OnceLock<heat::Limits>,
    /// Device class ("ssd", "hdd", ...), if declared.
    class: OnceLock<String>,
    /// [`Health`] as a number (see [`Member::health`]).
    state: std::sync::atomic::AtomicU8,
    /// I/O errors seen on this member.
    pub errors: AtomicU64,
    /// Errors since the last success, and successes since the last error.
    streak_errors: AtomicU64,
    streak_ok: AtomicU64,
    free: AtomicU64,
    total: AtomicU64,
}

impl Member {
    /// A member with the given index and id; online when `disk` is given.
    pub fn new(index: u16, id: String, path: String, disk: Option<Arc<dyn DiskBackend>>) -> Self {
        let m = Member::slot(index);
        m.id.set(id).expect("fresh slot");
        m.path.set(path).expect("fresh slot");
        if let Some(d) = disk {
            m.attach_disk(d);
            m.state.store(Health::Online as u8, Ordering::Relaxed);
        }
        m
    }

    /// Set the slot's disk, measured into the member's heat.
    fn attach_disk(&self, d: Arc<dyn DiskBackend>) {
        let metered: Arc<dyn DiskBackend> = Arc::new(heat::Metered::new(d, self.heat.clone()));
        self.disk.set(metered).expect("fresh slot");
    }

    /// An unused slot.
    fn slot(index: u16) -> Self {
        Member {
            index,
            id: OnceLock::new(),
            path: OnceLock::new(),
            disk: OnceLock::new(),
            domain: OnceLock::new(),
            heat: Arc::default(),
            emulated: OnceLock::new(),
            class: OnceLock::new(),
            state: std::sync::atomic::AtomicU8::new(Health::Missing as u8),
            errors: AtomicU64::new(0),
            streak_errors: AtomicU64::new(0),
            streak_ok: AtomicU64::new(0),
            free: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    /// Member id ("" for an unused slot).
    pub fn id(&self) -> &str {
        self.id.get().map(String::as_str).unwrap_or("")
    }

    /// Path given at mount or `disk add`, or "(missing)".
    pub fn path(&self) -> &str {
        self.path.get().map(String::as_str).unwrap_or("(missing)")
    }

    /// Declared failure domain, if any.
    pub fn domain(&self) -> Option<&str> {
        self.domain.get().map(String::as_str)
    }

    /// Set the declared failure domain (once, at pool open or `disk add`).
    pub fn set_domain(&self, d: String) {
        let _ = self.domain.set(d);
    }

    /// Declared device class, if any.
    pub fn class(&self) -> Option<&str> {
        self.class.get().map(String::as_str)
    }

    /// Set the device class (once, at pool open or `disk add`).
    pub fn set_class(&self, c: String) {
        let _ = self.class.set(c);
    }

    /// The disk, whatever the member's health (None: not present).
    pub fn disk(&self) -> Option<&Arc<dyn DiskBackend>> {
        self.disk.get()
    }

    /// The disk if shards on the member can be read (online, suspect, draining).
    pub fn live_disk(&self) -> Option<&Arc<dyn DiskBackend>> {
        if self.health().readable() {
            self.disk.get()
        } else {
            None
        }
    }

    /// The disk if new shards may go to the member (online only).
    pub fn writable_disk(&self) -> Option<&Arc<dyn DiskBackend>> {
        if self.health() == Health::Online {
            self.disk.get()
        } else {
            None
        }
    }

    /// Current health.
    pub fn health(&self) -> Health {
        Health::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Set the health (admin commands, persisted states at mount). A
    /// member without a disk stays missing.
    pub fn set_health(&self, h: Health) {
        if self.disk.get().is_none() {
            return;
        }
        let old = self.health();
        if old != h {
            log::warn!(
                "member {} ({}): {} -> {}",
                self.index,
                self.path(),
                old.name(),
                h.name()
            );
            self.state.store(h as u8, Ordering::Relaxed);
            self.streak_errors.store(0, Ordering::Relaxed);
            self.streak_ok.store(0, Ordering::Relaxed);
        }
    }

    /// Move from `from` to `to` only if the member is in `from`.
    fn transition(&self, from: Health, to: Health, why: &str) -> bool {
        let ok = self
            .state
            .compare_exchange(from as u8, to as u8, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if ok {
            log::warn!(
                "member {} ({}): {} -> {}: {why}",
                self.index,
                self.path(),
                from.name(),
                to.name()
            );
        }
        ok
    }

    /// Take the member out now (its superblock is missing or foreign).
    pub fn fail_now(&self, why: &str) {
        for from in [Health::Online, Health::Suspect, Health::Draining] {
            if self.transition(from, Health::Failed, why) {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A successful I/O: a long enough run clears suspicion.
    fn note_ok(&self) {
        self.streak_errors.store(0, Ordering::Relaxed);
        let n = self.streak_ok.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= CLEAR_AFTER && self.health() == Health::Suspect {
            self.transition(Health::Suspect, Health::Online, "errors stopped");
        }
    }

    /// (total, free) bytes as last measured.
    pub fn capacity(&self) -> (u64, u64) {
        (
            self.total.load(Ordering::Relaxed),
            self.free.load(Ordering::Relaxed),
        )
    }

    /// An I/O error of the health probe (the superblock read failed):
    /// counted like any other, so a dead member that reads route around
    /// (heat-aware reads prefer the others) still fails out in time.
    pub fn note_probe_error(&self, what: &str) {
        self.note_error(what)
    }

    /// An I/O error (or a shard that failed verification): counted; runs
    /// of errors make the member suspect, then failed.
    fn note_error(&self, what: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.streak_ok.store(0, Ordering::Relaxed);
        log::warn!("member {} ({}): {}", self.index, self.path(), what);
        let n = self.streak_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= FAIL_AFTER {
            for from in [Health::Online, Health::Suspect] {
                self.transition(
                    from,
                    Health::Failed,
                    "too many consecutive errors; repair rebuilds its shards elsewhere",
                );
            }
        } else if n >= SUSPECT_AFTER {
            self.transition(Health::Online, Health::Suspect, "consecutive errors");
        }
    }
}

/// The mounted pool.
#[derive(Debug)]
pub struct Pool {
    /// Pool-wide layout (member-specific fields are those of the first member read).
    pub sb: Superblock,
    /// The stripe code.
    pub codec: Codec,
    /// Member slots, by index: `[..count]` are the pool's members, the
    /// rest unused until `disk add` fills the next one.
    slots: Vec<Member>,
    /// Members in the pool (slots in use). Only grows.
    count: AtomicUsize,
    /// Serialises `disk add` and changes of the metadata replica set.
    add_lock: Mutex<()>,
    /// Read policy: false = heat-aware and hedged, true = naive.
    naive_reads: AtomicBool,
    /// Shard reads still out after this many ms count as I/O errors.
    io_timeout_ms: AtomicU64,
    /// Heat policy hedges slow shard reads.
    hedging: AtomicBool,
    /// Hedges that may be spent now (see `read::HEDGE_RATE`).
    hedge_tokens: Mutex<f64>,
    /// Member class new stripes prefer (the pool's hot tier), if any.
    write_class: Mutex<Option<String>>,
    /// (epoch, members) holding metadata replicas; see
    /// [`Superblock::meta_epoch`].
    meta_set: Mutex<(u64, Vec<u16>)>,
    /// Counters.
    pub stats: PoolStats,
    pool_bytes: [u8; 16],
    /// Shard files written but not yet fsynced: (member, relative path).
    unsynced: Mutex<Vec<(u16, String)>>,
    /// Verified headers (block tables) of shards read by range, so a small
    /// read costs one block read. Shard files are immutable, so an entry
    /// stays true; the payload blocks are still verified on every read.
    headers: Mutex<std::collections::HashMap<(u16, ShardId), Arc<ShardHeader>>>,
    /// Set when a superseded shard could not be deleted.
    garbage_left: AtomicBool,
    /// Set when a stripe was written with fewer than k+m shards (repair
    /// has work); taken by the maintenance thread.
    degraded_writes: AtomicBool,
    /// Placement's random numbers, seeded from the pool id so that a test
    /// replaying the same operations gets the same placement.
    rng: Mutex<rand::rngs::StdRng>,
    /// Shards found unreadable or corrupt on a readable member, for repair:
    /// (object, stripe, generation, index).
    bad: Mutex<std::collections::BTreeSet<(u64, u64, u64, u8)>>,
}

/// Headers kept by the range-read cache (about 2 KiB each for 1 MiB
/// shards); the cache is emptied when full.
const HEADER_CACHE_ENTRIES: usize = 32 * 1024;

/// Relative path of a shard file on its member.
pub fn shard_path(object: u64, stripe: u64, generation: u64, index: u8) -> String {
    let dir = (object.wrapping_mul(31).wrapping_add(stripe)) & 0xff;
    format!("shards/{dir:02x}/{object:x}.{stripe:x}.{generation:x}.{index}")
}

/// Parse a shard file name back into (object, stripe, generation, index).
pub fn parse_shard_name(name: &str) -> Option<(u64, u64, u64, u8)> {
    let mut it = name.split('.');
    let o = u64::from_str_radix(it.next()?, 16).ok()?;
    let s = u64::from_str_radix(it.next()?, 16).ok()?;
    let g = u64::from_str_radix(it.next()?, 16).ok()?;
    let i = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((o, s, g, i))
}

impl Pool {
    /// Build a pool from opened members (see [`open_members`]).
    pub fn new(sb: Superblock, members: Vec<Member>) -> Result<Pool, PoolError> {
        if members.len() > MAX_MEMBERS {
            return Err(PoolError::Setup(format!(
                "{} members: a pool has at most {MAX_MEMBERS}",
                members.len()
            )));
        }
        let count = members.len();
        let meta_set = (sb.meta_epoch, sb.meta_replicas.clone());
        let mut slots = members;
        for (i, m) in slots.iter().enumerate() {
            if let Some(d) = sb.domains.get(i) {
                m.set_domain(d.clone());
            }
            if let Some(c) = sb.classes.get(i).filter(|c| !c.is_empty()) {
                m.set_class(c.clone());
            }
        }
        for i in count..MAX_MEMBERS {
            slots.push(Member::slot(i as u16));
        }
        let codec = Codec::new(sb.k as usize, sb.m as usize)
            .map_err(|e| PoolError::Setup(e.to_string()))?;
        let seeded = {
            use rand::SeedableRng;
            let b = sb.pool_bytes();
            rand::rngs::StdRng::seed_from_u64(u64::from_le_bytes(b[..8].try_into().unwrap()))
        };
        let pool = Pool {
            pool_bytes: sb.pool_bytes(),
            sb,
            codec,
            slots,
            count: AtomicUsize::new(count),
            add_lock: Mutex::new(()),
            meta_set: Mutex::new(meta_set),
            naive_reads: AtomicBool::new(false),
            io_timeout_ms: AtomicU64::new(10_000),
            hedging: AtomicBool::new(true),
            hedge_tokens: Mutex::new(0.0),
            write_class: Mutex::new(None),
            stats: PoolStats::default(),
            unsynced: Mutex::new(Vec::new()),
            headers: Mutex::new(Default::default()),
            garbage_left: AtomicBool::new(false),
            bad: Mutex::new(Default::default()),
            degraded_writes: AtomicBool::new(false),
            rng: Mutex::new(seeded),
        };
        pool.refresh_capacity();
        Ok(pool)
    }

    /// The pool's members, by index (grows when a member is added).
    pub fn members(&self) -> &[Member] {
        &self.slots[..self.count.load(Ordering::Acquire)]
    }

    /// Member `i` (an unused slot, which has no disk, if `i` is not yet a
    /// member). Panics if `i` is beyond every slot.
    pub fn member(&self, i: u16) -> &Member {
        &self.slots[i as usize]
    }

    /// Join `disk` (empty, unformatted) to the running pool as a new
    /// member, online at once; returns its index. Protocol (each step
    /// durable before the next):
    /// 1. the new member's superblock, listing it at the next free index;
    /// 2. every present member's superblock, rewritten with the longer list;
    /// 3. the slot is filled and published: placement sees it from now on.
    ///
    /// A crash after 1 leaves the new member's list the longest: mounted
    /// with it, the pool includes it (still empty); mounted without it,
    /// the pool is as before, and the half-added directory is refused with
    /// a message if it shows up later with a conflicting slot. A member
    /// whose superblock could not be rewritten in 2 is brought up to date
    /// at the next mount ([`Pool::refresh_superblocks`]).
    pub fn add_member(
        &self,
        disk: Arc<dyn DiskBackend>,
        path: String,
        domain: Option<String>,
        class: Option<String>,
    ) -> Result<u16, PoolError> {
        if let Some(c) = &class {
            if !format::valid_class(c) {
                return Err(PoolError::Setup(format!(
                    "--class {c:?}: 1 to 32 letters, digits, '-' or '_' (e.g. ssd, hdd)"
                )));
            }
        }
        let _g = self.add_lock.lock().unwrap();
        let n = self.members().len();
        if n >= MAX_MEMBERS {
            return Err(PoolError::Setup(format!(
                "the pool already has {MAX_MEMBERS} members, the most it can have"
            )));
        }
        if disk.read_file(SUPERBLOCK_FILE).is_ok() {
            return Err(PoolError::Setup(format!(
                "{path} is already a shardfs member: remove its contents first if you mean to reuse it"
            )));
        }
        let declared = self.members().iter().any(|m| m.domain().is_some());
        let domains: Vec<String> = match (&domain, declared) {
            (Some(d), _) if d.is_empty() || d.len() > 64 || d.contains(',') => {
                return Err(PoolError::Setup(format!(
                    "--domain {d:?}: a failure domain name has 1 to 64 characters and no comma"
                )))
            }
            (None, true) => {
                return Err(PoolError::Setup(
                    "this pool declares a failure domain for every member: give --domain".into(),
                ))
            }
            (Some(d), false) if n > 0 => {
                return Err(PoolError::Setup(format!(
                    "--domain {d}: this pool declares no failure domains (set them at mkfs), \
                     so the new member cannot declare one"
                )))
            }
            (Some(d), _) => self
                .members()
                .iter()
                .map(|m| m.domain().unwrap_or_default().to_string())
                .chain([d.clone()])
                .collect(),
            (None, false) => Vec::new(),
        };
        let id = new_id();
        let mut sb = self.current_superblock();
        sb.members.push(id.clone());
        sb.domains = domains;
        if class.is_some() || !sb.classes.is_empty() {
            sb.classes.resize(n, String::new());
            sb.classes.push(class.clone().unwrap_or_default());
        }
        sb.member_id = id.clone();
        sb.member_index = n as u16;
        format::format_disk(disk.as_ref(), &sb)
            .map_err(|e| PoolError::Setup(format!("{path}: formatting the new member: {e}")))?;
        self.write_superblocks(&sb);
        let m = &self.slots[n];
        m.id.set(id).expect("unused slot");
        m.path.set(path.clone()).expect("unused slot");
        if let Some(d) = domain {
            m.set_domain(d);
        }
        if let Some(c) = class {
            m.set_class(c);
        }
        m.attach_disk(disk);
        m.state.store(Health::Online as u8, Ordering::Relaxed);
        if let Some(d) = m.disk() {
            if let Ok((t, f)) = d.capacity() {
                m.total.store(t, Ordering::Relaxed);
                m.free.store(f, Ordering::Relaxed);
            }
        }
        self.count.store(n + 1, Ordering::Release);
        log::warn!("member {n} ({path}) added to the pool; new stripes use it, rebalance moves data onto it");
        Ok(n as u16)
    }

    /// Rewrite every present member's superblock from `newest` (the pool's
    /// current member list) where it differs; failures are logged and left
    /// for the next mount.
    fn write_superblocks(&self, newest: &Superblock) {
        for m in self.members() {
            let Some(d) = m.disk() else { continue };
            let mut sb = newest.clone();
            sb.member_id = m.id().to_string();
            sb.member_index = m.index;
            let current = d
                .read_file(SUPERBLOCK_FILE)
                .ok()
                .and_then(|b| Superblock::decode(&b).ok());
            if current.as_ref() == Some(&sb) {
                continue;
            }
            if current.is_some_and(|c| c.pool_id != sb.pool_id || c.member_id != sb.member_id) {
                continue; // not ours any more: leave it alone
            }
            if let Err(e) = d.write_atomic(SUPERBLOCK_FILE, &sb.encode()) {
                m.note_error(&format!("updating the superblock's member list: {e}"));
            }
        }
    }

    /// The superblock as it should now read (member-specific fields are
    /// the first member's): current member list, domains and metadata set.
    fn current_superblock(&self) -> Superblock {
        let mut sb = self.sb.clone();
        sb.members = self.members().iter().map(|m| m.id().to_string()).collect();
        let declared = self.members().iter().any(|m| m.domain().is_some());
        sb.domains = if declared {
            self.members()
                .iter()
                .map(|m| m.domain().unwrap_or_default().to_string())
                .collect()
        } else {
            Vec::new()
        };
        sb.classes = if self.members().iter().any(|m| m.class().is_some()) {
            self.members()
                .iter()
                .map(|m| m.class().unwrap_or_default().to_string())
                .collect()
        } else {
            Vec::new()
        };
        let (epoch, set) = self.meta_set.lock().unwrap().clone();
        sb.meta_epoch = epoch;
        sb.meta_replicas = set;
        sb
    }

    /// Bring every present member's superblock up to the pool's member
    /// list and metadata set (a member that missed a `disk add` or a
    /// replica move, or was absent then).
    pub fn refresh_superblocks(&self) {
        let _g = self.add_lock.lock().unwrap();
        self.write_superblocks(&self.current_superblock());
    }

    /// Members holding metadata replicas.
    pub fn meta_replicas(&self) -> Vec<u16> {
        self.meta_set.lock().unwrap().1.clone()
    }

    /// Record a new metadata replica set in every present member's
    /// superblock (epoch + 1); a member that cannot be written is brought
    /// up to date at a later mount.
    pub fn set_meta_replicas(&self, set: Vec<u16>) {
        let _g = self.add_lock.lock().unwrap();
        {
            let mut ms = self.meta_set.lock().unwrap();
            ms.0 += 1;
            ms.1 = set;
        }
        self.write_superblocks(&self.current_superblock());
    }

    /// Make new stripes prefer members of `class` (the hot tier).
    pub fn set_write_class(&self, class: Option<String>) {
        *self.write_class.lock().unwrap() = class;
    }

    /// The class new stripes prefer.
    pub fn write_class(&self) -> Option<String> {
        self.write_class.lock().unwrap().clone()
    }

    /// A uniform random number in [0, 1) from the pool's generator.
    pub fn random(&self) -> f64 {
        use rand::Rng;
        self.rng.lock().unwrap().random::<f64>()
    }

    /// Bytes of file data in a full stripe.
    pub fn stripe_size(&self) -> u64 {
        self.sb.k as u64 * self.sb.shard_size as u64
    }

    /// k
    pub fn k(&self) -> usize {
        self.sb.k as usize
    }

    /// m
    pub fn m(&self) -> usize {
        self.sb.m as usize
    }

    /// Members that may take new shards (online).
    pub fn online_count(&self) -> usize {
        self.members()
            .iter()
            .filter(|m| m.writable_disk().is_some())
            .count()
    }

    /// Re-read every member's capacity.
    pub fn refresh_capacity(&self) {
        for m in self.members() {
            if let Some(d) = m.live_disk() {
                match d.capacity() {
                    Ok((t, f)) => {
                        m.total.store(t, Ordering::Relaxed);
                        m.free.store(f, Ordering::Relaxed);
                    }
                    Err(e) => m.note_error(&format!("statvfs failed: {e}")),
                }
            }
        }
    }

    /// True when at least k+m online members have room for `shards` more
    /// shards of `shard_len` bytes each (fresh statvfs, not the cached
    /// capacity). Lets a caller write asynchronously only when it will not
    /// run out of space; near full it writes synchronously, so ENOSPC
    /// reaches the write that caused it.
    pub fn has_room(&self, shard_len: usize, shards: usize) -> bool {
        let need = (shard_len as u64 + 64 * 1024) * shards as u64;
        let with_room = self
            .members()
            .iter()
            .filter_map(|m| m.writable_disk())
            .filter(|d| d.capacity().map(|(_, free)| free >= need).unwrap_or(false))
            .count();
        with_room >= self.k() + self.m()
    }

    /// Usable (total, free) bytes after parity.
    pub fn usable_capacity(&self) -> (u64, u64) {
        let (mut t, mut f) = (0u128, 0u128);
        for m in self.members() {
            let (mt, mf) = m.capacity();
            t += mt as u128;
            f += mf as u128;
        }
        let scale = |x: u128| (x * self.k() as u128 / (self.k() + self.m()) as u128) as u64;
        (scale(t), scale(f))
    }

    /// Write one stripe generation: encode, place and write k+m shards.
    /// Shards are not durable until [`Pool::sync_pending`] returns.
    pub fn write_stripe(
        &self,
        object: u64,
        stripe: u64,
        generation: u64,
        data: &[u8],
    ) -> Result<StripeLoc, PoolError> {
        let n = self.k() + self.m();
        let min = self.k() + 1;
        let (padded, parity) = self.codec.encode_parity(data);
        let shards = self.shard_slices(&padded, &parity, data.len());
        let mut members = vec![NO_MEMBER; n];
        let mut used: Vec<u16> = Vec::new();
        let online = self.online_count();
        if online < min {
            log::error!(
                "only {online} members online, below the write quorum of {min} (k+1): \
                 refusing writes (EROFS); reads go on"
            );
            return Err(PoolError::BelowWriteQuorum {
                have: online,
                need: min,
            });
        }
        let mut todo: Vec<usize> = (0..n).collect();
        let mut out_of_space = false;
        // Two rounds: shards whose member failed are retried on unused members.
        for _round in 0..2 {
            let holders: Vec<u16> = members
                .iter()
                .copied()
                .filter(|&m| m != NO_MEMBER)
                .collect();
            // the hot class first (tiering), then anyone
            let mut targets = match self.write_class() {
                Some(c) => placement::choose_in(self, todo.len(), &used, &holders, Some(&c)),
                None => Vec::new(),
            };
            if targets.len() < todo.len() {
                let mut ex = used.clone();
                ex.extend(&targets);
                let mut h = holders.clone();
                h.extend(&targets);
                targets.extend(placement::choose(self, todo.len() - targets.len(), &ex, &h));
            }
            let jobs: Vec<(usize, u16)> = todo.iter().copied().zip(targets).collect();
            let results: Vec<(usize, u16, Result<(), bool>)> = std::thread::scope(|s| {
                let handles: Vec<_> = jobs
                    .iter()
                    .map(|&(idx, mi)| {
                        let shard: &[u8] = shards[idx];
                        s.spawn(move || {
                            let id = ShardId {
                                pool: self.pool_bytes,
                                object,
                                stripe,
                                generation,
                                index: idx as u8,
                            };
                            let header = ShardHeader::header(
                                id,
                                self.sb.k,
                                self.sb.m,
                                data.len() as u32,
                                shard,
                            );
                            let rel = shard_path(object, stripe, generation, idx as u8);
                            (idx, mi, self.write_shard(mi, &rel, &[&header, shard]))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            todo.clear();
            for (idx, mi, res) in results {
                used.push(mi);
                match res {
                    Ok(()) => members[idx] = mi,
                    Err(full) => {
                        out_of_space |= full;
                        todo.push(idx);
                    }
                }
            }
            if todo.is_empty() {
                break;
            }
        }
        let written = members.iter().filter(|&&m| m != NO_MEMBER).count();
        if written < min {
            // the shards that did land are useless: remove them now
            for (i, &mi) in members.iter().enumerate() {
                if mi != NO_MEMBER {
                    if let Some(d) = self.slots[mi as usize].live_disk() {
                        let _ = d.remove_file(&shard_path(object, stripe, generation, i as u8));
                    }
                }
            }
            if out_of_space {
                log::error!(
                    "object {object} stripe {stripe}: members are full, only {written} shards \
                     could be written (ENOSPC)"
                );
                return Err(PoolError::NoSpace);
            }
            log::error!(
                "object {object} stripe {stripe}: only {written} shards could be written, \
                 below the write quorum of {min} (k+1): refusing the write (EROFS)"
            );
            return Err(PoolError::BelowWriteQuorum {
                have: written,
                need: min,
            });
        }
        if written < n {
            log::warn!(
                "object {object} stripe {stripe} gen {generation} written degraded: {written} of {n} shards"
            );
            self.degraded_writes.store(true, Ordering::Relaxed);
        }
        Ok(StripeLoc {
            generation,
            len: data.len() as u32,
            members,
        })
    }

    /// Write new copies of shards `slots` of a stripe generation whose data
    /// is `data`: in place when the slot's member is online (a rotten copy
    /// on a healthy disk), else on an online member holding no shard of the
    /// stripe (never two shards of a stripe on one member). Returns (slot, member)
    /// for every shard written; fewer than asked when members run out.
    /// Not durable until [`Pool::sync_pending`].
    pub fn rebuild_shards(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
        data: &[u8],
        slots: &[usize],
    ) -> Vec<(usize, u16)> {
        let (padded, parity) = self.codec.encode_parity(data);
        let shards = self.shard_slices(&padded, &parity, data.len());
        let mut exclude: Vec<u16> = loc.members.clone();
        // members keeping a shard of the stripe: their domains are avoided
        let mut holders: Vec<u16> = loc
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| !slots.contains(i))
            .map(|(_, &m)| m)
            .collect();
        let mut done = Vec::new();
        for &slot in slots {
            let id = self.shard_id(object, stripe, loc.generation, slot);
            let header =
                ShardHeader::header(id, self.sb.k, self.sb.m, data.len() as u32, shards[slot]);
            let rel = shard_path(object, stripe, loc.generation, slot as u8);
            // a bad copy on a healthy member (bit rot) is rewritten in place
            let here = loc.members[slot];
            if here != NO_MEMBER
                && self.slots[here as usize].writable_disk().is_some()
                && self
                    .write_shard(here, &rel, &[&header, shards[slot]])
                    .is_ok()
            {
                self.headers.lock().unwrap().remove(&(here, id));
                done.push((slot, here));
                holders.push(here);
                continue;
            }
            // a few tries: a target may fail (then it is excluded too)
            for _ in 0..3 {
                let Some(&mi) = placement::choose(self, 1, &exclude, &holders).first() else {
                    break;
                };
                exclude.push(mi);
                if self.write_shard(mi, &rel, &[&header, shards[slot]]).is_ok() {
                    done.push((slot, mi));
                    holders.push(mi);
                    break;
                }
            }
        }
        done
    }

    /// Copy shard `slot` of a stripe generation from the member that holds
    /// it to member `to` (rebalance): the copy is read and verified, then
    /// written as a new file. Not durable until [`Pool::sync_pending`];
    /// the caller commits the new location and then removes the old copy.
    pub fn copy_shard(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
        slot: usize,
        to: u16,
    ) -> Result<(), String> {
        let from = loc.members[slot];
        let id = self.shard_id(object, stripe, loc.generation, slot);
        let payload = match self.read_shard(from, id, loc.len) {
            Ok(p) => p,
            Err(e) => {
                self.shard_failed(from, &id, &e);
                return Err(e);
            }
        };
        let header = ShardHeader::header(id, self.sb.k, self.sb.m, loc.len, &payload);
        let rel = shard_path(object, stripe, loc.generation, slot as u8);
        self.write_shard(to, &rel, &[&header, &payload])
            .map_err(|full| {
                if full {
                    "target member is full".to_string()
                } else {
                    "write to the target member failed".to_string()
                }
            })
    }

    /// Remove one shard file (a replaced copy) if its member is reachable.
    pub fn remove_shard(&self, mi: u16, object: u64, stripe: u64, generation: u64, index: u8) {
        if let Some(d) = self.members().get(mi as usize).and_then(|m| m.live_disk()) {
            let rel = shard_path(object, stripe, generation, index);
            if d.remove_file(&rel).is_err() {
                self.garbage_left.store(true, Ordering::Relaxed);
            }
        } else if mi != NO_MEMBER {
            // stays on the absent member until the next sweep
            self.garbage_left.store(true, Ordering::Relaxed);
        }
    }

    /// The k+m shard payloads of an encoded stripe of `data_len` bytes: k
    /// slices of the padded data, then the parity shards.
    fn shard_slices<'a>(
        &self,
        padded: &'a [u8],
        parity: &'a [Vec<u8>],
        data_len: usize,
    ) -> Vec<&'a [u8]> {
        padded
            .chunks(self.codec.shard_len(data_len))
            .chain(parity.iter().map(Vec::as_slice))
            .collect()
    }

    /// Write one shard file; `Err(true)` when the member is out of space.
    fn write_shard(&self, mi: u16, rel: &str, bytes: &[&[u8]]) -> Result<(), bool> {
        let m = &self.slots[mi as usize];
        let Some(d) = m.writable_disk() else {
            return Err(false);
        };
        match d.write_file(rel, bytes) {
            Ok(()) => {
                m.note_ok();
                self.stats.shards_written.fetch_add(1, Ordering::Relaxed);
                self.unsynced.lock().unwrap().push((mi, rel.to_string()));
                Ok(())
            }
            Err(e) => {
                m.note_error(&format!("write {rel}: {e}"));
                // do not leave a partial shard behind
                let _ = d.remove_file(rel);
                Err(e.raw_os_error() == Some(libc::ENOSPC))
            }
        }
    }

    /// The disk and relative path of a shard about to be read (counted).
    fn shard_file(&self, mi: u16, id: &ShardId) -> Result<(&Arc<dyn DiskBackend>, String), String> {
        let m = self
            .members()
            .get(mi as usize)
            .ok_or_else(|| format!("no member {mi}"))?;
        let d = m.live_disk().ok_or("member offline")?;
        self.stats.shards_read.fetch_add(1, Ordering::Relaxed);
        Ok((d, shard_path(id.object, id.stripe, id.generation, id.index)))
    }

    /// Read one shard and verify it is exactly the shard expected.
    pub fn read_shard(&self, mi: u16, id: ShardId, stripe_len: u32) -> Result<Vec<u8>, String> {
        let (d, rel) = self.shard_file(mi, &id)?;
        let bytes = d.read_file(&rel).map_err(|e| format!("read {rel}: {e}"))?;
        let (h, payload) = ShardHeader::open(&bytes).map_err(|e| format!("{rel}: {e}"))?;
        if h.id != id || h.stripe_len != stripe_len {
            return Err(format!("{rel}: header names another shard"));
        }
        self.slots[mi as usize].note_ok();
        Ok(payload.to_vec())
    }

    /// Record a shard that failed to read or verify on member `mi`: the
    /// member's error count, and the shard for repair.
    pub fn shard_failed(&self, mi: u16, id: &ShardId, why: &str) {
        self.stats.bad_shards.fetch_add(1, Ordering::Relaxed);
        let m = &self.slots[mi as usize];
        // I/O errors say the disk is failing; a checksum mismatch says a
        // sector rotted (counted, repaired in place, but no verdict on
        // the member)
        if why.starts_with("read ") || why.contains("offline") {
            m.note_error(why);
        } else {
            m.errors.fetch_add(1, Ordering::Relaxed);
            log::warn!("member {} ({}): {why}", m.index, m.path());
        }
        self.bad
            .lock()
            .unwrap()
            .insert((id.object, id.stripe, id.generation, id.index));
    }

    /// True if the shard was found bad and not yet repaired.
    pub fn is_bad(&self, object: u64, stripe: u64, generation: u64, index: u8) -> bool {
        self.bad
            .lock()
            .unwrap()
            .contains(&(object, stripe, generation, index))
    }

    /// Forget a bad shard (repaired, or its stripe rewritten).
    pub fn clear_bad(&self, object: u64, stripe: u64, generation: u64, index: u8) {
        self.bad
            .lock()
            .unwrap()
            .remove(&(object, stripe, generation, index));
    }

    /// Number of shards known bad and not yet repaired.
    pub fn bad_count(&self) -> usize {
        self.bad.lock().unwrap().len()
    }

    /// Read bytes `start..end` of one shard's payload, verifying the header
    /// and only the checksum blocks the range touches.
    pub fn read_shard_range(
        &self,
        mi: u16,
        id: ShardId,
        stripe_len: u32,
        start: usize,
        end: usize,
    ) -> Result<Vec<u8>, String> {
        use crate::ec::{header_len, BLOCK};
        let (d, rel) = self.shard_file(mi, &id)?;
        let payload_len = self.codec.shard_len(stripe_len as usize);
        let hlen = header_len(payload_len);
        let cached = self.headers.lock().unwrap().get(&(mi, id)).cloned();
        let h = match cached {
            Some(h) => h,
            None => {
                let hb = d
                    .read_range(&rel, 0, hlen)
                    .map_err(|e| format!("read {rel}: {e}"))?;
                let (h, _) = ShardHeader::open_header(&hb).map_err(|e| format!("{rel}: {e}"))?;
                if h.id != id || h.stripe_len != stripe_len || h.payload_len as usize != payload_len
                {
                    return Err(format!("{rel}: header names another shard"));
                }
                let h = Arc::new(h);
                let mut cache = self.headers.lock().unwrap();
                if cache.len() >= HEADER_CACHE_ENTRIES {
                    cache.clear();
                }
                cache.insert((mi, id), h.clone());
                h
            }
        };
        let first = start / BLOCK;
        let last = end.div_ceil(BLOCK).min(h.blocks.len());
        let from = first * BLOCK;
        let to = (last * BLOCK).min(payload_len);
        let data = d
            .read_range(&rel, (hlen + from) as u64, to - from)
            .map_err(|e| format!("read {rel}: {e}"))?;
        if data.len() != to - from {
            return Err(format!("{rel}: short read (truncated shard)"));
        }
        h.verify_blocks(first, &data)
            .map_err(|e| format!("{rel}: {e}"))?;
        self.slots[mi as usize].note_ok();
        Ok(data[start - from..end - from].to_vec())
    }

    /// The identity of shard `index` of a stripe generation.
    pub fn shard_id_of(&self, object: u64, stripe: u64, generation: u64, index: usize) -> ShardId {
        self.shard_id(object, stripe, generation, index)
    }

    fn shard_id(&self, object: u64, stripe: u64, generation: u64, index: usize) -> ShardId {
        ShardId {
            pool: self.pool_bytes,
            object,
            stripe,
            generation,
            index: index as u8,
        }
    }

    /// Verify every shard of a stripe: `Ok(())` or the reason, per shard.
    pub fn verify_stripe(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
    ) -> Vec<Result<(), String>> {
        (0..loc.members.len())
            .map(|i| {
                if loc.members[i] == NO_MEMBER {
                    return Err("never written".into());
                }
                let id = self.shard_id(object, stripe, loc.generation, i);
                self.read_shard(loc.members[i], id, loc.len).map(|_| ())
            })
            .collect()
    }

    /// Remove the shard files of a stripe generation (after the metadata
    /// that dropped it is durable). Missing members are skipped: their
    /// orphans are reclaimed by the mount-time sweep.
    pub fn delete_stripe(&self, object: u64, stripe: u64, loc: &StripeLoc) {
        for (i, &mi) in loc.members.iter().enumerate() {
            if mi == NO_MEMBER {
                continue;
            }
            match self.slots[mi as usize].live_disk() {
                Some(d) => {
                    let rel = shard_path(object, stripe, loc.generation, i as u8);
                    if let Err(e) = d.remove_file(&rel) {
                        self.slots[mi as usize].note_error(&format!("remove {rel}: {e}"));
                        self.garbage_left.store(true, Ordering::Relaxed);
                    }
                }
                // the shard stays on the absent member: sweep at next mount
                None => self.garbage_left.store(true, Ordering::Relaxed),
            }
        }
    }

    /// True (once) if a stripe was written degraded since the last call.
    pub fn take_degraded_writes(&self) -> bool {
        self.degraded_writes.swap(false, Ordering::Relaxed)
    }

    /// Note that unreferenced shard files may exist (the next mount sweeps).
    pub fn mark_garbage(&self) {
        self.garbage_left.store(true, Ordering::Relaxed);
    }

    /// True when some superseded shard could not be deleted (member offline
    /// or failing), so the next mount must sweep.
    pub fn garbage_left(&self) -> bool {
        self.garbage_left.load(Ordering::Relaxed)
    }

    /// Make every shard written so far durable (fsync files, then their
    /// directories). Called before a metadata commit that refers to them.
    pub fn sync_pending(&self) {
        let list = std::mem::take(&mut *self.unsynced.lock().unwrap());
        if list.is_empty() {
            return;
        }
        if list.len() > SYNCFS_THRESHOLD {
            return self.sync_filesystems(&list);
        }
        let mut per_member: Vec<Vec<String>> = vec![Vec::new(); self.slots.len()];
        for (mi, rel) in list {
            per_member[mi as usize].push(rel);
        }
        std::thread::scope(|s| {
            for (mi, rels) in per_member.into_iter().enumerate() {
                if rels.is_empty() {
                    continue;
                }
                let m = &self.slots[mi];
                s.spawn(move || {
                    let Some(d) = m.live_disk() else { return };
                    let mut dirs = std::collections::BTreeSet::new();
                    for rel in &rels {
                        match d.sync_file(rel) {
                            Ok(()) => {}
                            // superseded and already reclaimed
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => m.note_error(&format!("fsync {rel}: {e}")),
                        }
                        if let Some((dir, _)) = rel.rsplit_once('/') {
                            dirs.insert(dir.to_string());
                        }
                    }
                    for dir in dirs {
                        if let Err(e) = d.sync_dir(&dir) {
                            m.note_error(&format!("fsync dir {dir}: {e}"));
                        }
                    }
                });
            }
        });
    }

    /// syncfs once per filesystem holding members with pending shards (in
    /// parallel): one writeback pass instead of a journal commit per file.
    fn sync_filesystems(&self, list: &[(u16, String)]) {
        let mut groups: std::collections::BTreeMap<Option<u64>, Vec<u16>> = Default::default();
        let mut seen = std::collections::BTreeSet::new();
        for (mi, _) in list {
            if !seen.insert(*mi) {
                continue;
            }
            let m = &self.slots[*mi as usize];
            let Some(d) = m.live_disk() else { continue };
            // unknown filesystems are synced on their own
            let key = d.fs_id().or(Some(u64::MAX - *mi as u64));
            groups.entry(key).or_default().push(*mi);
        }
        std::thread::scope(|s| {
            for members in groups.values() {
                let m = &self.slots[members[0] as usize];
                s.spawn(move || {
                    if let Some(d) = m.live_disk() {
                        if let Err(e) = d.sync_fs() {
                            m.note_error(&format!("syncfs: {e}"));
                        }
                    }
                });
            }
        });
    }

    /// Every shard file on every member present: (member, file name).
    pub fn list_all_shards(&self) -> Vec<(u16, String)> {
        let mut out = Vec::new();
        // every member with a disk, whatever its health: a failed or
        // removed member's unreferenced copies are garbage too
        for m in self.members() {
            let Some(d) = m.disk() else { continue };
            for dir in 0..256 {
                let rel = format!("shards/{dir:02x}");
                match d.list_dir(&rel) {
                    Ok(names) => {
                        out.extend(names.into_iter().map(|n| (m.index, format!("{rel}/{n}"))))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) => {
                        // a member we cannot list may hold garbage: the
                        // next mount must sweep again
                        self.mark_garbage();
                        break;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_round_trip() {
        let p = shard_path(0xabc, 7, 0x99, 5);
        let name = p.rsplit('/').next().unwrap();
        assert_eq!(parse_shard_name(name), Some((0xabc, 7, 0x99, 5)));
        assert_eq!(parse_shard_name("x.tmp"), None);
    }
}
