//! Small overwrites without rewriting the stripe: patches.
//!
//! A write into a committed stripe that touches a few pages writes the new
//! bytes, and nothing else, as one checksummed patch record
//! ([`crate::ec::patch`]) appended to a patch log on m+1 of the stripe's
//! members (each copy fdatasynced there); then the stripe's location gains
//! a [`PatchRef`] per copy in one metadata commit. Nothing is read first:
//! the shards, parity included, stay as they were, one consistent
//! codeword, and a read lays the patches over the bytes they decode to.
//! Until the commit the records are unreferenced bytes in a log and the
//! stripe reads as before; after it, as its data with the patch over it.
//! A stripe is therefore wholly old or wholly new after a crash, and m
//! lost members leave at least one copy of every patch.
//!
//! The copies go to members that hold shards of the stripe, so a member
//! lost takes the stripe into repair, which folds it (rewrites it whole as
//! a new generation) and so restores m+1 copies of everything. Patched
//! stripes never move otherwise: rebalance and tiering fold first.
//!
//! A patch log is `patches/<number>` (hex, 8 digits) on a member, append
//! only, rotated at [`LOG_MAX`]; the pool counts the references into each
//! log and deletes a log that is no longer the one appended to once none
//! is left (after the commit that dropped the last one is durable).

use super::io::{IoFail, Ticket};
use super::*;
use crate::ec::patch::OVERLAY;
use crate::ec::{Patch, PatchId};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// A patch log is rotated when it reaches this size.
pub const LOG_MAX: u64 = 64 << 20;
/// A log's blocks are allocated ahead of its appends in steps of this
/// size (`fallocate`): an append then lands in blocks the file already
/// has, within its size, so its fdatasync commits no size or block
/// allocation change. Measured here with fio (4 KiB writes, fdatasync
/// each): 2,671 µs per sync growing a file, 519 µs into allocated blocks.
/// The bytes past the last record are zeros, which hold no record magic
/// (recovery's scan skips them).
pub const LOG_ALLOC_STEP: u64 = 8 << 20;
/// Stripes patched per round of appends (bounds the memory and the queue
/// depth a flush uses).
const PATCH_CHUNK: usize = 64;
/// Folder of the patch logs on a member.
pub const PATCH_DIR: &str = "patches";

/// Where one copy of a patch record lives, as the stripe's location
/// names it (a patch has m+1 copies, one `PatchRef` each, same `seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchRef {
    /// Copy number of the record, 0..=m.
    pub copy: u8,
    /// Member holding this copy.
    pub member: u16,
    /// Patch sequence (from the generation counter): later ones win.
    pub seq: u64,
    /// Patch log number on the member.
    pub log: u32,
    /// Offset of the record in the log.
    pub offset: u64,
    /// Length of the record.
    pub len: u32,
    /// Stripe data range its extents cover: `[from, to)`.
    pub from: u32,
    /// End of that range.
    pub to: u32,
}

impl PatchRef {
    /// True when the patch writes bytes in stripe data range `[from, to)`.
    pub fn touches(&self, from: usize, to: usize) -> bool {
        (self.from as usize) < to && from < self.to as usize
    }
}

impl StripeLoc {
    /// The patches, one entry per patch with its copies, in commit order.
    pub fn patch_groups(&self) -> Vec<(u64, Vec<&PatchRef>)> {
        let mut out: Vec<(u64, Vec<&PatchRef>)> = Vec::new();
        for p in &self.patches {
            match out.iter_mut().find(|g| g.0 == p.seq) {
                Some(g) => g.1.push(p),
                None => out.push((p.seq, vec![p])),
            }
        }
        out
    }

    /// Number of patches (not copies): the copies of a patch are listed
    /// together (one commit adds them), so each new sequence starts one.
    pub fn patch_count(&self) -> usize {
        let mut n = 0;
        let mut last = None;
        for p in &self.patches {
            if last != Some(p.seq) {
                n += 1;
                last = Some(p.seq);
            }
        }
        n
    }
}

/// Sort `spans` (`[start, end)` ranges) and join the ones that overlap or
/// touch.
pub fn merge_spans(spans: &mut [(usize, usize)]) -> Vec<(usize, usize)> {
    spans.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for &(a, b) in spans.iter() {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// References into the members' logs: member -> log -> records named.
pub type LogRefs = HashMap<u16, BTreeMap<u32, u64>>;

/// Count the references a committed stripe location holds into the
/// members' logs (its patch copies and its shard records).
pub fn count_log_refs(refs: &mut LogRefs, loc: &StripeLoc) {
    for r in &loc.patches {
        *refs.entry(r.member).or_default().entry(r.log).or_default() += 1;
    }
    for (i, &mi) in loc.members.iter().enumerate() {
        let p = loc.place(i);
        if mi != NO_MEMBER && !p.is_file() {
            *refs.entry(mi).or_default().entry(p.log).or_default() += 1;
        }
    }
}

/// Relative path of patch log `n`.
pub fn log_path(n: u32) -> String {
    format!("{PATCH_DIR}/{n:08x}")
}

/// Read one patch record and check it is exactly the one expected for
/// stripe `id` (whose `index` is [`OVERLAY`]).
pub(super) fn read_patch(d: &dyn DiskBackend, p: &PatchRef, id: &ShardId) -> Result<Patch, String> {
    let rel = log_path(p.log);
    let bytes = d
        .read_range(&rel, p.offset, p.len as usize)
        .map_err(|e| format!("read {rel}: {e}"))?;
    let patch = Patch::open(&bytes).map_err(|e| format!("{rel}@{}: {e}", p.offset))?;
    if patch.id.shard != *id || patch.id.seq != p.seq {
        return Err(format!("{rel}@{}: record names another patch", p.offset));
    }
    Ok(patch)
}

/// Verified patch records recently read, so that reads of a patched
/// region, the old bytes of the next patch and folds do not read and hash
/// the same record again. Records are immutable and a (member, log,
/// offset) names one record for the life of the daemon (log numbers are
/// never reused); the identity is checked again on every hit.
#[derive(Debug, Default)]
pub struct PatchCache {
    /// Records by (member, log, offset), and their payload bytes in all.
    inner: Mutex<(CachedPatches, usize)>,
}

/// Records by (member, log, offset).
type CachedPatches = HashMap<(u16, u32, u64), Arc<Patch>>;

/// Payload bytes the patch cache holds before it is emptied.
const PATCH_CACHE_BYTES: usize = 32 << 20;

impl PatchCache {
    /// The cached record `p` names, if it is the one expected for `id`.
    pub(super) fn lookup(&self, p: &PatchRef, id: &ShardId) -> Option<Arc<Patch>> {
        let g = self.inner.lock().unwrap();
        let hit = g.0.get(&(p.member, p.log, p.offset))?;
        (hit.id.shard == *id && hit.id.seq == p.seq).then(|| hit.clone())
    }

    /// Remember a record read and verified at `p`.
    pub(super) fn insert(&self, p: &PatchRef, patch: Arc<Patch>) {
        let mut g = self.inner.lock().unwrap();
        if g.1 + patch.payload.len() > PATCH_CACHE_BYTES {
            g.0.clear();
            g.1 = 0;
        }
        g.1 += patch.payload.len();
        g.0.insert((p.member, p.log, p.offset), patch);
    }

    /// Forget every record (a log was deleted: its numbers are not reused,
    /// but the memory is better spent elsewhere).
    pub fn clear(&self) {
        let mut g = self.inner.lock().unwrap();
        g.0.clear();
        g.1 = 0;
    }
}

/// Patch logs of one member.
#[derive(Debug, Default)]
pub(super) struct Logs {
    /// The log appended to, and its size (none yet this session).
    pub(super) current: Option<(u32, u64)>,
    /// Bytes of the current log allocated ahead (see [`LOG_ALLOC_STEP`]).
    allocated: u64,
    /// Next log number to create.
    next: u32,
    /// References (committed, or reserved by an append in progress) per log.
    pub(super) live: BTreeMap<u32, u64>,
    /// An append to the current log succeeded and queued its folder's
    /// sync (so the log's directory entry is durable before any commit
    /// names a record in it). Until then every append reports the log as
    /// new: when the first append fails (a member that fails, then comes
    /// back), the next one must still have the folder synced, or a crash
    /// loses the whole log.
    dir_queued: bool,
}

/// New bytes for one committed stripe: `(stripe offset, bytes)` extents,
/// within the stripe's length, not overlapping.
#[derive(Debug, Clone)]
pub struct PatchJob {
    /// Inode.
    pub object: u64,
    /// Stripe index.
    pub stripe: u64,
    /// The committed location the patch applies to.
    pub loc: StripeLoc,
    /// Sequence for the new patches.
    pub seq: u64,
    /// What to write.
    pub writes: Vec<(usize, Vec<u8>)>,
}

/// A record copy waiting to be appended: (copy, member, record bytes, data range).
type Pending = (usize, u16, Arc<Vec<u8>>, (u32, u32));

impl Pool {
    /// At mount, before any record is written: take the references of
    /// the committed stripe map into each member's logs (patch and shard
    /// records, counted by [`count_log_refs`]), remove logs nothing
    /// references (left by commits that never happened, or released
    /// before a crash), and start new logs past the highest.
    pub fn open_patch_logs(&self, mut live: LogRefs) {
        let mut all = self.patch_logs.lock().unwrap();
        for m in self.members() {
            let Some(d) = m.disk() else { continue };
            let names = match d.list_dir(PATCH_DIR) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(_) => {
                    self.mark_garbage();
                    Vec::new()
                }
            };
            let mine = live.remove(&m.index).unwrap_or_default();
            let mut highest = 0u32;
            for n in names {
                let Some(num) = u32::from_str_radix(&n, 16).ok().filter(|_| n.len() == 8) else {
                    continue; // not ours: left alone
                };
                highest = highest.max(num.saturating_add(1));
                // (a member failed by an admin is still swept: its disk
                // is there, and what it holds is no longer named)
                if !mine.contains_key(&num) && d.remove_file(&log_path(num)).is_err() {
                    self.mark_garbage();
                }
            }
            let next = highest.max(mine.keys().next_back().map_or(0, |&l| l + 1));
            if m.live_disk().is_some() {
                let _ = d.create_dir_all(PATCH_DIR);
            }
            all.insert(
                m.index,
                Logs {
                    current: None,
                    allocated: 0,
                    next,
                    live: mine,
                    dir_queued: false,
                },
            );
        }
    }

    /// Reserve room for `lens` records in member `mi`'s current log:
    /// (log, offset of the first, new log?).
    fn reserve(&self, mi: u16, lens: &[usize]) -> (u32, u64, bool, u64) {
        self.reserve_aligned(mi, lens, 1)
    }

    /// [`Pool::reserve`] of records starting at a multiple of `align`, the
    /// space after them padded to the next multiple (shard records, see
    /// [`super::records`]). The padding reads as zeros.
    pub(super) fn reserve_aligned(
        &self,
        mi: u16,
        lens: &[usize],
        align: u64,
    ) -> (u32, u64, bool, u64) {
        let mut all = self.patch_logs.lock().unwrap();
        let logs = all.entry(mi).or_default();
        let total: u64 = lens.iter().map(|&l| l as u64).sum();
        let mut new = false;
        let rotate = logs
            .current
            .is_none_or(|(_, size)| size > 0 && size.next_multiple_of(align) + total > LOG_MAX);
        if rotate {
            if let Some((old, _)) = logs.current.take() {
                if logs.live.get(&old).copied().unwrap_or(0) == 0 {
                    logs.live.remove(&old);
                    drop(all);
                    self.remove_later(mi, log_path(old));
                    all = self.patch_logs.lock().unwrap();
                }
            }
            let logs = all.entry(mi).or_default();
            let n = logs.next;
            logs.next += 1;
            logs.current = Some((n, 0));
            logs.allocated = 0;
            logs.dir_queued = false;
            new = true;
        }
        let logs = all.entry(mi).or_default();
        let (n, size) = logs.current.as_mut().expect("current log");
        let at = size.next_multiple_of(align);
        *size = (at + total).next_multiple_of(align);
        // allocate the next step ahead when this append passes the end of
        // what is allocated (0: nothing to allocate)
        let allocate = if *size > logs.allocated {
            logs.allocated = size.div_ceil(LOG_ALLOC_STEP) * LOG_ALLOC_STEP;
            logs.allocated
        } else {
            0
        };
        *logs.live.entry(*n).or_default() += lens.len() as u64;
        (*n, at, new || !logs.dir_queued, allocate)
    }

    /// An append to `log` of member `mi` that reported the log as new
    /// succeeded and its folder's sync is queued in `unsynced`: later
    /// appends to it need not queue it again.
    pub(super) fn log_dir_queued(&self, mi: u16, log: u32) {
        self.unsynced
            .lock()
            .unwrap()
            .push((mi, PATCH_DIR.to_string()));
        let mut all = self.patch_logs.lock().unwrap();
        let logs = all.entry(mi).or_default();
        if logs.current.map(|(n, _)| n) == Some(log) {
            logs.dir_queued = true;
        }
    }

    /// Drop references to patch records (their stripe was folded,
    /// rewritten or deleted, and that is durable, or they were never
    /// committed). A log with none left, and not being appended to, is
    /// deleted.
    pub fn release_patches(&self, refs: &[PatchRef]) {
        if refs.is_empty() {
            return;
        }
        let mut dead = Vec::new();
        {
            let mut all = self.patch_logs.lock().unwrap();
            for r in refs {
                let logs = all.entry(r.member).or_default();
                if let Some(c) = logs.live.get_mut(&r.log) {
                    *c = c.saturating_sub(1);
                    let current = logs.current.map(|(n, _)| n) == Some(r.log);
                    if *c == 0 && !current {
                        logs.live.remove(&r.log);
                        dead.push((r.member, r.log));
                    }
                }
            }
        }
        for (mi, log) in dead {
            self.remove_later(mi, log_path(log));
        }
    }

    /// Forget the verified patch records held in memory (so the next read
    /// of each goes to a member again).
    pub fn forget_cached_patches(&self) {
        self.patch_cache.clear();
    }

    /// Patch logs and their live references, per member: (member, logs, references).
    pub fn patch_log_counts(&self) -> Vec<(u16, usize, u64)> {
        let all = self.patch_logs.lock().unwrap();
        let mut v: Vec<(u16, usize, u64)> = all
            .iter()
            .map(|(&mi, l)| (mi, l.live.len(), l.live.values().sum()))
            .collect();
        v.sort();
        v
    }

    /// Write patches for a batch of committed stripes: for each, one
    /// record of the new bytes, appended to the logs of m+1 of the
    /// stripe's writable members (the least loaded); all records of one
    /// member go in one append and one fdatasync. Returns, per job, the
    /// references to commit, or `None` when the stripe must be written
    /// whole instead (fewer than m+1 of its members writable, an append
    /// that failed). Records of a `None` job are released at once.
    pub fn patch_stripes(&self, jobs: &[PatchJob]) -> Vec<Option<Vec<PatchRef>>> {
        let mut out: Vec<Option<Vec<PatchRef>>> = vec![None; jobs.len()];
        // in chunks, so that no member queue overflows and the records
        // built stay a bounded amount of memory
        for chunk in (0..jobs.len()).collect::<Vec<_>>().chunks(PATCH_CHUNK) {
            let records: Vec<(usize, Vec<Pending>)> = chunk
                .iter()
                .filter_map(|&j| Some((j, self.build_patch(&jobs[j])?)))
                .collect();
            self.append_records(jobs, records, &mut out);
        }
        out
    }

    /// The record of one patch job and the members its copies go to.
    fn build_patch(&self, job: &PatchJob) -> Option<Vec<Pending>> {
        let loc = &job.loc;
        let len = loc.len as usize;
        let mut writes: Vec<(usize, &[u8])> = job
            .writes
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(o, b)| (*o, b.as_slice()))
            .collect();
        writes.sort_by_key(|w| w.0);
        if writes.is_empty()
            || writes.iter().any(|(o, b)| o + b.len() > len)
            || writes.windows(2).any(|w| w[0].0 + w[0].1.len() > w[1].0)
        {
            return None;
        }
        // m+1 distinct writable members of the stripe, least loaded first
        let mut slots: Vec<(f64, usize)> = (0..loc.members.len())
            .filter(|&i| loc.members[i] != NO_MEMBER)
            .filter(|&i| {
                self.slots[loc.members[i] as usize]
                    .writable_disk()
                    .is_some()
            })
            .map(|i| (self.score(loc, i), i))
            .collect();
        slots.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut members: Vec<u16> = Vec::new();
        for (_, i) in slots {
            if !members.contains(&loc.members[i]) {
                members.push(loc.members[i]);
            }
        }
        let copies = self.m() + 1;
        if members.len() < copies {
            return None;
        }
        let id = PatchId {
            shard: self.shard_id(job.object, job.stripe, loc.generation, OVERLAY as usize),
            seq: job.seq,
        };
        let parts: Vec<(u32, &[u8])> = writes.iter().map(|(o, b)| (*o as u32, *b)).collect();
        let rec = Arc::new(crate::ec::patch::seal(id, &parts));
        let from = writes[0].0 as u32;
        let to = writes
            .iter()
            .map(|(o, b)| o + b.len())
            .max()
            .expect("writes") as u32;
        Some(
            members[..copies]
                .iter()
                .enumerate()
                .map(|(c, &mi)| (c, mi, rec.clone(), (from, to)))
                .collect(),
        )
    }

    /// Append the records of some patch jobs, one append and fdatasync per
    /// member, and set `out[job]` to the references of each job whose
    /// records all landed (the others' are released).
    fn append_records(
        &self,
        jobs: &[PatchJob],
        records: Vec<(usize, Vec<Pending>)>,
        out: &mut [Option<Vec<PatchRef>>],
    ) {
        let mut per_member: BTreeMap<u16, Vec<(usize, usize)>> = BTreeMap::new();
        for (n, (_, recs)) in records.iter().enumerate() {
            for (r, rec) in recs.iter().enumerate() {
                per_member.entry(rec.1).or_default().push((n, r));
            }
        }
        let deadline = Instant::now() + self.io_timeout();
        let mut started = Vec::new();
        for (mi, list) in per_member {
            let lens: Vec<usize> = list.iter().map(|&(n, r)| records[n].1[r].2.len()).collect();
            let (log, at, new, allocate) = self.reserve(mi, &lens);
            let mut bytes = Vec::with_capacity(lens.iter().sum());
            let mut places = Vec::with_capacity(list.len());
            let mut off = at;
            for (&(n, r), &len) in list.iter().zip(&lens) {
                bytes.extend_from_slice(&records[n].1[r].2);
                places.push((n, r, off, len));
                off += len as u64;
            }
            let rel = log_path(log);
            let r2 = rel.clone();
            let t: Result<Ticket<()>, IoFail> = self.slots[mi as usize]
                .submit(move |d| d.write_at_durable(&r2, at, &[&bytes], allocate));
            started.push((mi, log, new, rel, places, t));
        }
        let mut failed = std::collections::BTreeSet::new();
        let mut refs: Vec<Vec<PatchRef>> = vec![Vec::new(); records.len()];
        for (mi, log, new, rel, places, t) in started {
            let r = t.and_then(|t| t.wait_until(deadline));
            self.slots[mi as usize].account(&r, &format!("append {rel}"));
            let ok = r.is_ok();
            if ok && new {
                self.log_dir_queued(mi, log);
            }
            for (n, r, off, len) in places {
                let (j, recs) = &records[n];
                let rec = &recs[r];
                if !ok {
                    failed.insert(n);
                }
                refs[n].push(PatchRef {
                    copy: rec.0 as u8,
                    member: mi,
                    seq: jobs[*j].seq,
                    log,
                    offset: off,
                    len: len as u32,
                    from: rec.3 .0,
                    to: rec.3 .1,
                });
            }
        }
        for (n, mut r) in refs.into_iter().enumerate() {
            if failed.contains(&n) {
                self.release_patches(&r);
            } else {
                r.sort_by_key(|p| p.copy);
                self.stats.patches.fetch_add(1, Ordering::Relaxed);
                // the record just written is what reads of these places
                // would verify: cache it (reads, merges and folds of a
                // freshly patched stripe then read no log)
                if let Some(rec) = records[n].1.first() {
                    if let Ok(patch) = Patch::open(&rec.2) {
                        let patch = Arc::new(patch);
                        for p in &r {
                            self.patch_cache.insert(p, patch.clone());
                        }
                    }
                }
                out[records[n].0] = Some(r);
            }
        }
    }

    /// Lay the stripe's patches that touch data range `[from, from +
    /// buf.len())` over `buf` (the bytes the shards decode to there), in
    /// commit order. Each patch is read from the first of its copies that
    /// answers within the I/O deadline and verifies; a copy that does not
    /// counts against its member. Fails only when no copy of a patch can
    /// be read.
    pub(super) fn overlay(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
        from: usize,
        buf: &mut [u8],
    ) -> Result<(), PoolError> {
        let to = from + buf.len();
        if loc.patches.is_empty() || from >= to {
            return Ok(());
        }
        let id = self.shard_id(object, stripe, loc.generation, OVERLAY as usize);
        for (seq, copies) in loc.patch_groups() {
            if !copies[0].touches(from, to) {
                continue;
            }
            let patch = self.read_patch_copies(&id, &copies).ok_or_else(|| {
                log::error!("object {object} stripe {stripe}: no copy of patch {seq} readable");
                PoolError::Unreadable {
                    object,
                    stripe,
                    have: 0,
                    need: 1,
                }
            })?;
            patch.overlay(from, buf);
        }
        Ok(())
    }

    /// The bytes the stripe's patches from the `first`-th on lay over it,
    /// merged (later patches win): sorted, disjoint `(offset, bytes)`
    /// extents covering exactly the union of those patches' extents, so
    /// that one patch holding them, committed after the ones before
    /// `first`, stands for all of them. `None` when a patch cannot be read
    /// or the union is larger than `max` bytes.
    pub fn merged_patches(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
        first: usize,
        max: usize,
    ) -> Option<Vec<(usize, Vec<u8>)>> {
        let id = self.shard_id(object, stripe, loc.generation, OVERLAY as usize);
        let mut patches = Vec::new();
        for (_, copies) in loc.patch_groups().into_iter().skip(first) {
            patches.push(self.read_patch_copies(&id, &copies)?);
        }
        let mut spans: Vec<(usize, usize)> = patches
            .iter()
            .flat_map(|p| p.extents.iter())
            .filter(|e| e.1 > 0)
            .map(|&(o, l)| (o as usize, o as usize + l as usize))
            .collect();
        let spans = merge_spans(&mut spans);
        if spans.iter().map(|s| s.1 - s.0).sum::<usize>() > max {
            return None;
        }
        Some(
            spans
                .into_iter()
                .map(|(a, b)| {
                    let mut buf = vec![0u8; b - a];
                    for p in &patches {
                        p.overlay(a, &mut buf);
                    }
                    (a, buf)
                })
                .collect(),
        )
    }

    /// One verified copy of a patch: from the cache, or read from the
    /// copies' members in order (live ones first).
    fn read_patch_copies(&self, id: &ShardId, copies: &[&PatchRef]) -> Option<Arc<Patch>> {
        for p in copies {
            if let Some(hit) = self.patch_cache.lookup(p, id) {
                return Some(hit);
            }
        }
        let mut order: Vec<&PatchRef> = copies.to_vec();
        order.sort_by_key(|p| self.slots[p.member as usize].live_disk().is_none());
        for p in order {
            match self.read_patch_copy(id, p) {
                Ok(patch) => return Some(patch),
                Err(e) => log::warn!(
                    "patch {} copy {} on member {}: {e}",
                    p.seq,
                    p.copy,
                    p.member
                ),
            }
        }
        None
    }

    /// Read and verify one copy on its member's workers, within the I/O
    /// deadline.
    fn read_patch_copy(&self, id: &ShardId, p: &PatchRef) -> Result<Arc<Patch>, String> {
        let m = self
            .members()
            .get(p.member as usize)
            .ok_or_else(|| format!("no member {}", p.member))?;
        if m.disk().is_none() {
            return Err("member not present".into());
        }
        let (p2, id2) = ((*p).clone(), *id);
        let r = m
            .submit(move |d| read_patch(d, &p2, &id2).map_err(std::io::Error::other))
            .and_then(|t| t.wait_until(Instant::now() + self.io_timeout()));
        m.account(&r, &format!("read patch {}", log_path(p.log)));
        let patch = Arc::new(r.map_err(|e| e.to_string())?);
        self.patch_cache.insert(p, patch.clone());
        Ok(patch)
    }

    /// Verify every copy of every patch of a stripe (scrub): the copies
    /// that do not read or verify, with the reason.
    pub fn verify_patches(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
    ) -> Vec<(PatchRef, String)> {
        let id = self.shard_id(object, stripe, loc.generation, OVERLAY as usize);
        let mut bad = Vec::new();
        for p in &loc.patches {
            if let Err(e) = self.read_patch_copy(&id, p) {
                bad.push((p.clone(), e));
            }
        }
        bad
    }
}
