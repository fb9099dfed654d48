//! The pool of member disks: superblocks, membership, placement and shard
//! I/O. The pool knows stripes and shards, never inodes or names.

pub mod direct;
mod disk;
mod fdcache;
mod format;
pub mod heat;
pub mod io;
mod member;
mod membership;
pub mod patch;
pub mod placement;
mod read;
pub mod records;
mod superblock;
pub mod validate;
mod write;

pub(crate) use disk::{splice_at, zero_range};
pub use disk::{AtomicFile, DirDisk, DiskBackend, MemDisk};
pub use format::{
    assemble, assemble_with, check_new_member_dir, mkfs, open_members, open_members_with,
    sort_member_dirs, DiskWrap, MkfsOptions,
};
pub use member::{Health, Member, CLEAR_AFTER, FAIL_AFTER, MAX_MEMBERS, SUSPECT_AFTER};
pub use patch::{PatchJob, PatchRef};
pub use read::ReadPolicy;
pub use superblock::{new_id, Superblock, FORMAT_VERSION, SUPERBLOCK_FILE};

use crate::ec::{Codec, ShardHeader, ShardId};
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Threads writing full stripes in the background (each waits on member
/// I/O most of the time; encoding and hashing use the rest).
const STRIPE_WRITERS: usize = 4;

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
    /// Patches over the generation's data, in commit order, m+1 copies of
    /// each (see [`patch`]): the stripe's bytes are those its shards
    /// decode to, with every patch laid over them. Empty for a stripe
    /// written whole.
    pub patches: Vec<PatchRef>,
    /// `places[i]`: where shard i lies on `members[i]` (format 3: a
    /// record in one of the member's logs). Empty, or [`Place::FILE`] for
    /// a slot, when the shard is a file of its own (format 2 and before).
    pub places: Vec<Place>,
}

/// Where one shard lies on its member: a record in a log (format 3), or
/// its own shard file ([`Place::FILE`], pools made before format 3).
/// Records start on [`LOG_ALIGN`] boundaries, so the offset is kept in
/// units of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Place {
    /// Log number on the member (`patches/<8 hex digits>`).
    pub log: u32,
    /// Offset of the record in the log, in [`LOG_ALIGN`] units.
    pub block: u32,
}

/// Alignment of shard records in a log (offset and padded length): a
/// record can be written with O_DIRECT and its space freed by punching
/// whole filesystem blocks.
pub const LOG_ALIGN: u64 = 4096;

impl Place {
    /// The shard is a file of its own (`shards/DD/...`).
    pub const FILE: Place = Place {
        log: u32::MAX,
        block: u32::MAX,
    };

    /// True for a shard file of its own.
    pub fn is_file(self) -> bool {
        self == Place::FILE
    }

    /// Byte offset of the record in its log.
    pub fn offset(self) -> u64 {
        self.block as u64 * LOG_ALIGN
    }
}

/// A stripe location as format version 2 stored it (shard files only).
#[derive(Deserialize)]
struct StripeLocV2 {
    generation: u64,
    len: u32,
    members: Vec<u16>,
    patches: Vec<PatchRef>,
}

/// A stripe location as format version 1 stored it (no patches).
#[derive(Deserialize)]
struct StripeLocV1 {
    generation: u64,
    len: u32,
    members: Vec<u16>,
}

impl StripeLoc {
    /// Decode a stored location: this format, or version 1's (which had
    /// no patch list and decodes with none).
    pub fn decode(b: &[u8]) -> Result<StripeLoc, String> {
        // newest first: an older value is too short to decode as a newer one
        let e = match bincode::deserialize::<StripeLoc>(b) {
            Ok(l) => return Ok(l),
            Err(e) => e,
        };
        if let Ok(v) = bincode::deserialize::<StripeLocV2>(b) {
            return Ok(StripeLoc {
                generation: v.generation,
                len: v.len,
                members: v.members,
                patches: v.patches,
                places: Vec::new(),
            });
        }
        match bincode::deserialize::<StripeLocV1>(b) {
            Ok(v) => Ok(StripeLoc {
                generation: v.generation,
                len: v.len,
                members: v.members,
                patches: Vec::new(),
                places: Vec::new(),
            }),
            Err(_) => Err(format!("stripe location: {e}")),
        }
    }

    /// Where shard `slot` lies on its member.
    pub fn place(&self, slot: usize) -> Place {
        self.places.get(slot).copied().unwrap_or(Place::FILE)
    }

    /// Set shard `slot` to (`member`, `place`).
    pub fn set_shard(&mut self, slot: usize, member: u16, place: Place) {
        if self.places.len() < self.members.len() {
            self.places.resize(self.members.len(), Place::FILE);
        }
        self.members[slot] = member;
        self.places[slot] = place;
    }

    /// True when shard `slot` is (`member`, `place`).
    pub fn holds(&self, slot: usize, member: u16, place: Place) -> bool {
        self.members.get(slot) == Some(&member) && self.place(slot) == place
    }

    /// The latest change of the stripe's bytes: its generation, or its
    /// newest patch. Two locations of one stripe with the same version
    /// hold the same bytes.
    pub fn version(&self) -> u64 {
        self.patches
            .iter()
            .map(|p| p.seq)
            .max()
            .unwrap_or(0)
            .max(self.generation)
    }
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
    /// Stripes decoded with parity because a shard was missing (member
    /// absent or out of service, never written) or bad (unreadable, corrupt,
    /// timed out).
    pub reconstructions: AtomicU64,
    /// Stripes decoded with parity by choice: every shard was there, but
    /// the read skipped busy or slow data shards (heat policy, hedges).
    pub parity_by_choice: AtomicU64,
    /// Shard files written.
    pub shards_written: AtomicU64,
    /// Shard files read.
    pub shards_read: AtomicU64,
    /// Of those, reads answered from the page cache on the reader's own
    /// thread (no worker hand-off; see `fdcache`).
    pub cached_reads: AtomicU64,
    /// Of those, reads whose bytes the reader's thread waited for in the
    /// page cache after its probe started the disk read (see
    /// `Pool::poll_cached_piece`).
    pub polled_reads: AtomicU64,
    /// Reads that asked more shards because one was slower than its
    /// member's recent p95.
    pub hedges: AtomicU64,
    /// Patch records written (small overwrites that did not rewrite a stripe).
    pub patches: AtomicU64,
    /// Patched stripes folded back into whole stripes.
    pub folds: AtomicU64,
    /// Stripes whose patches were merged into one (they had reached the
    /// most a stripe carries).
    pub merged_patches: AtomicU64,
    /// Writes into stripes with full patches whose merge would have been
    /// too big: the stripe was rewritten whole.
    pub full_patch_rewrites: AtomicU64,
    /// Times the open files' buffers passed the memory budget and the
    /// biggest were written out (see `fs::budget`).
    pub budget_flushes: AtomicU64,
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
    /// Threads polling the page cache now (see `Pool::poll_cached_piece`).
    pollers: std::sync::atomic::AtomicUsize,
    /// Member class new stripes prefer (the pool's hot tier), if any.
    write_class: Mutex<Option<String>>,
    /// (epoch, members) holding metadata replicas; see
    /// [`Superblock::meta_epoch`].
    meta_set: Mutex<(u64, Vec<u16>)>,
    /// Counters.
    pub stats: PoolStats,
    pool_bytes: [u8; 16],
    /// Directories that gained shard or log files not yet synced: (member, directory).
    unsynced: Mutex<Vec<(u16, String)>>,
    /// Verified headers (block tables) of shards read by range, so a small
    /// read costs one block read. Shard files are immutable, so an entry
    /// stays true; the payload blocks are still verified on every read.
    headers: Mutex<std::collections::HashMap<(u16, ShardId), Arc<ShardHeader>>>,
    /// Set when a superseded shard could not be deleted (shared with the
    /// member workers doing removals).
    garbage_left: Arc<AtomicBool>,
    /// Removals queued on member workers and not yet done.
    removals: Arc<AtomicU64>,
    /// Writers of full stripes handed off by open files (encode, place,
    /// write): long-lived threads instead of one per stripe.
    pub stripe_writers: io::Workers,
    /// Verified patch records recently read.
    patch_cache: Arc<patch::PatchCache>,
    /// Patch logs per member (see [`patch`]).
    patch_logs: Mutex<std::collections::HashMap<u16, patch::Logs>>,
    /// Set when a stripe was written with fewer than k+m shards (repair
    /// has work); taken by the maintenance thread.
    degraded_writes: AtomicBool,
    /// Placement's random numbers, seeded from the pool id so that a test
    /// replaying the same operations gets the same placement.
    rng: Mutex<rand::rngs::StdRng>,
    /// Shards found unreadable or corrupt on a readable member, for repair:
    /// (object, stripe, generation, index).
    bad: Mutex<std::collections::BTreeSet<(u64, u64, u64, u8)>>,
    /// New shards are written as files of their own (format 2), for
    /// tests of older pools; see [`Pool::write_shard_files`].
    legacy_files: AtomicBool,
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
            pollers: Default::default(),
            write_class: Mutex::new(None),
            stats: PoolStats::default(),
            unsynced: Mutex::new(Vec::new()),
            headers: Mutex::new(Default::default()),
            garbage_left: Arc::new(AtomicBool::new(false)),
            removals: Arc::new(AtomicU64::new(0)),
            patch_logs: Mutex::new(Default::default()),
            patch_cache: Arc::default(),
            stripe_writers: io::Workers::named("stripe-write", STRIPE_WRITERS, 64),
            bad: Mutex::new(Default::default()),
            degraded_writes: AtomicBool::new(false),
            rng: Mutex::new(seeded),
            legacy_files: AtomicBool::new(false),
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
        for (m, r) in self.statvfs_all(false) {
            match r {
                Ok((t, f)) => {
                    m.total.store(t, Ordering::Relaxed);
                    m.free.store(f, Ordering::Relaxed);
                }
                Err(e) => m.note_error(&format!("statvfs failed: {e}")),
            }
        }
    }

    /// statvfs of every readable (or, with `writable`, online) member, on
    /// their workers in parallel, within the I/O deadline.
    #[allow(clippy::type_complexity)]
    fn statvfs_all(&self, writable: bool) -> Vec<(&Member, Result<(u64, u64), io::IoFail>)> {
        let deadline = std::time::Instant::now() + self.io_timeout();
        let started: Vec<_> = self
            .members()
            .iter()
            .filter(|m| {
                if writable {
                    m.writable_disk().is_some()
                } else {
                    m.live_disk().is_some()
                }
            })
            .map(|m| (m, m.submit(|d| d.capacity())))
            .collect();
        started
            .into_iter()
            .map(|(m, t)| (m, t.and_then(|t| t.wait_until(deadline))))
            .collect()
    }

    /// True when at least k+m online members have room for `shards` more
    /// shards of `shard_len` bytes each (fresh statvfs, not the cached
    /// capacity). Lets a caller write asynchronously only when it will not
    /// run out of space; near full it writes synchronously, so ENOSPC
    /// reaches the write that caused it.
    pub fn has_room(&self, shard_len: usize, shards: usize) -> bool {
        let need = (shard_len as u64 + 64 * 1024) * shards as u64;
        let with_room = self
            .statvfs_all(true)
            .into_iter()
            .filter(|(_, r)| r.as_ref().is_ok_and(|(_, free)| *free >= need))
            .count();
        with_room >= self.k() + self.m()
    }

    /// Usable (total, free) bytes after parity. Members on one host
    /// filesystem (one st_dev) share its space: it is counted once.
    pub fn usable_capacity(&self) -> (u64, u64) {
        let (mut t, mut f) = (0u128, 0u128);
        let mut shared: std::collections::HashMap<u64, (u64, u64)> = Default::default();
        for m in self.members() {
            let (mt, mf) = m.capacity();
            match m.fs_dev() {
                Some(dev) => {
                    // one filesystem measured at slightly different times
                    let e = shared.entry(dev).or_default();
                    *e = (e.0.max(mt), e.1.max(mf));
                }
                None => {
                    t += mt as u128;
                    f += mf as u128;
                }
            }
        }
        for (mt, mf) in shared.into_values() {
            t += mt as u128;
            f += mf as u128;
        }
        let scale = |x: u128| (x * self.k() as u128 / (self.k() + self.m()) as u128) as u64;
        (scale(t), scale(f))
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
                self.read_shard(loc.members[i], id, loc).map(|_| ())
            })
            .collect()
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
    /// Wait (at most `timeout`) until every removal queued so far is done
    /// or has failed; true if none is left.
    pub fn settle_removals(&self, timeout: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + timeout;
        while self.removals.load(Ordering::SeqCst) > 0 {
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    /// Removals still queued are waited for, up to the I/O deadline (one
    /// still out then may not happen: it counts as garbage).
    pub fn garbage_left(&self) -> bool {
        !self.settle_removals(self.io_timeout()) || self.garbage_left.load(Ordering::Relaxed)
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
