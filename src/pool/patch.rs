//! Small overwrites without rewriting the stripe: patches.
//!
//! A write into a committed stripe that touches a few pages changes only
//! those bytes of one or more data shards and the same byte ranges of
//! every parity shard (parity delta, `P' = P + g * (D' - D)`). The new
//! bytes of each touched shard go into one checksummed patch record
//! ([`crate::ec::patch`]) appended to a patch log on the member holding
//! that shard, and fdatasynced there; then the stripe's location gains a
//! [`PatchRef`] per record in one metadata commit. Until that commit the
//! records are unreferenced bytes in a log and the stripe reads as before;
//! after it, every shard reads as its base bytes with its patches applied.
//! A stripe is therefore wholly old or wholly new after a crash.
//!
//! Patched stripes never move: repair, rebalance and tiering fold a
//! stripe (rewrite it whole as a new generation) instead of copying its
//! shards, so a shard's patches always live on the shard's own member.
//!
//! A patch log is `patches/<number>` (hex, 8 digits) on a member, append
//! only, rotated at [`LOG_MAX`]; the pool counts the references into each
//! log and deletes a log that is no longer the one appended to once none
//! is left (after the commit that dropped the last one is durable).

use super::io::{IoFail, Ticket};
use super::*;
use crate::ec::{Patch, PatchId, BLOCK};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// A patch log is rotated when it reaches this size.
pub const LOG_MAX: u64 = 64 << 20;
/// Stripes patched per round of reads and appends (bounds the memory and
/// the queue depth a flush uses).
const PATCH_CHUNK: usize = 64;
/// Folder of the patch logs on a member.
pub const PATCH_DIR: &str = "patches";

/// Where one patch record lives, as the stripe's location names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchRef {
    /// Shard index the patch applies to.
    pub index: u8,
    /// Member holding the record (the shard's member).
    pub member: u16,
    /// Patch sequence (from the generation counter): later ones win.
    pub seq: u64,
    /// Patch log number on the member.
    pub log: u32,
    /// Offset of the record in the log.
    pub offset: u64,
    /// Length of the record.
    pub len: u32,
    /// Shard payload range its extents cover: `[from, to)`.
    pub from: u32,
    /// End of that range.
    pub to: u32,
}

impl PatchRef {
    /// True when the patch writes bytes in shard payload range `[from, to)`.
    pub fn touches(&self, from: usize, to: usize) -> bool {
        (self.from as usize) < to && from < self.to as usize
    }
}

impl StripeLoc {
    /// The patches of shard `slot`, in commit order.
    pub fn patches_of(&self, slot: usize) -> Vec<PatchRef> {
        self.patches
            .iter()
            .filter(|p| p.index as usize == slot)
            .cloned()
            .collect()
    }
}

/// Relative path of patch log `n`.
pub fn log_path(n: u32) -> String {
    format!("{PATCH_DIR}/{n:08x}")
}

/// Read one patch record and check it is exactly the one expected for
/// shard `id`.
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
    /// The record `p` names for shard `id`, from the cache or read from `d`.
    pub(super) fn get(
        &self,
        d: &dyn DiskBackend,
        p: &PatchRef,
        id: &ShardId,
    ) -> Result<Arc<Patch>, String> {
        let key = (p.member, p.log, p.offset);
        if let Some(hit) = self.inner.lock().unwrap().0.get(&key) {
            if hit.id.shard == *id && hit.id.seq == p.seq {
                return Ok(hit.clone());
            }
        }
        let patch = Arc::new(read_patch(d, p, id)?);
        let mut g = self.inner.lock().unwrap();
        if g.1 + patch.payload.len() > PATCH_CACHE_BYTES {
            g.0.clear();
            g.1 = 0;
        }
        g.1 += patch.payload.len();
        g.0.insert(key, patch.clone());
        Ok(patch)
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
    current: Option<(u32, u64)>,
    /// Next log number to create.
    next: u32,
    /// References (committed, or reserved by an append in progress) per log.
    live: BTreeMap<u32, u64>,
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

/// A record waiting to be appended: (slot, member, record bytes, extent range).
type Pending = (usize, u16, Vec<u8>, (u32, u32));

/// Merge sorted, possibly overlapping or touching ranges.
fn merge(mut r: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    r.sort();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(r.len());
    for (a, b) in r {
        match out.last_mut() {
            Some(l) if a <= l.1 => l.1 = l.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

impl Pool {
    /// At mount, before any patch is written: count the references of the
    /// committed stripe map into each member's patch logs, remove logs
    /// nothing references (left by commits that never happened, or
    /// released before a crash), and start new logs past the highest.
    pub fn open_patch_logs<'a>(&self, refs: impl Iterator<Item = &'a PatchRef>) {
        let mut live: HashMap<u16, BTreeMap<u32, u64>> = HashMap::new();
        for r in refs {
            *live.entry(r.member).or_default().entry(r.log).or_default() += 1;
        }
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
                if !mine.contains_key(&num) && m.live_disk().is_some() {
                    let _ = d.remove_file(&log_path(num));
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
                    next,
                    live: mine,
                },
            );
        }
    }

    /// Reserve room for `lens` records in member `mi`'s current log:
    /// (log, offset of the first, new log?).
    fn reserve(&self, mi: u16, lens: &[usize]) -> (u32, u64, bool) {
        let mut all = self.patch_logs.lock().unwrap();
        let logs = all.entry(mi).or_default();
        let total: u64 = lens.iter().map(|&l| l as u64).sum();
        let mut new = false;
        let rotate = logs
            .current
            .is_none_or(|(_, size)| size > 0 && size + total > LOG_MAX);
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
            new = true;
        }
        let logs = all.entry(mi).or_default();
        let (n, size) = logs.current.as_mut().expect("current log");
        let at = *size;
        *size += total;
        *logs.live.entry(*n).or_default() += lens.len() as u64;
        (*n, at, new)
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

    /// Write patches for a batch of committed stripes: for each, read the
    /// old bytes of the touched ranges of its data shards and of every
    /// parity shard, compute the new parity by delta, and append one record
    /// per touched shard to that shard's member's log; all records of one
    /// member go in one append and one fdatasync. Returns, per job, the
    /// references to commit, or `None` when the stripe must be written
    /// whole instead (a shard's member not online, a read that failed or
    /// did not verify, an append that failed). Records of a `None` job are
    /// released at once.
    pub fn patch_stripes(&self, jobs: &[PatchJob]) -> Vec<Option<Vec<PatchRef>>> {
        let mut out: Vec<Option<Vec<PatchRef>>> = vec![None; jobs.len()];
        // in chunks, so that no member queue overflows and the old bytes
        // read and the records built stay a bounded amount of memory
        for chunk in (0..jobs.len()).collect::<Vec<_>>().chunks(PATCH_CHUNK) {
            let reads: Vec<_> = chunk
                .iter()
                .map(|&j| self.start_old_reads(&jobs[j]))
                .collect();
            let deadline = Instant::now() + self.io_timeout();
            let records: Vec<(usize, Vec<Pending>)> = chunk
                .iter()
                .zip(reads)
                .filter_map(|(&j, r)| Some((j, self.compute_patch(&jobs[j], r?, deadline)?)))
                .collect();
            self.append_records(jobs, records, &mut out);
        }
        out
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
            let (log, at, new) = self.reserve(mi, &lens);
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
            let t: Result<Ticket<()>, IoFail> = self.slots[mi as usize].submit(move |d| {
                d.write_at(&r2, at, &[&bytes])?;
                d.sync_file(&r2)
            });
            started.push((mi, log, new, rel, places, t));
        }
        let mut failed = std::collections::BTreeSet::new();
        let mut refs: Vec<Vec<PatchRef>> = vec![Vec::new(); records.len()];
        for (mi, log, new, rel, places, t) in started {
            let r = t.and_then(|t| t.wait_until(deadline));
            self.slots[mi as usize].account(&r, &format!("append {rel}"));
            let ok = r.is_ok();
            if ok && new {
                self.unsynced
                    .lock()
                    .unwrap()
                    .push((mi, PATCH_DIR.to_string()));
            }
            for (n, r, off, len) in places {
                let (j, recs) = &records[n];
                let rec = &recs[r];
                if !ok {
                    failed.insert(n);
                }
                refs[n].push(PatchRef {
                    index: rec.0 as u8,
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
        for (n, r) in refs.into_iter().enumerate() {
            if failed.contains(&n) {
                self.release_patches(&r);
            } else {
                self.stats
                    .patches
                    .fetch_add(r.len() as u64, Ordering::Relaxed);
                out[records[n].0] = Some(r);
            }
        }
    }

    /// Queue the reads of the old bytes a patch needs: per touched data
    /// shard its block-aligned ranges, and for every parity shard the
    /// union. Returns the tickets with, per shard, the (extent) ranges in
    /// shard offsets, or `None` if the stripe cannot be patched.
    #[allow(clippy::type_complexity)]
    fn start_old_reads(
        &self,
        job: &PatchJob,
    ) -> Option<
        Vec<(
            usize,
            Vec<(usize, usize)>,
            Vec<(usize, usize)>,
            Ticket<Vec<Vec<u8>>>,
        )>,
    > {
        let k = self.k();
        let n = k + self.m();
        let loc = &job.loc;
        if loc.members.len() != n {
            return None;
        }
        let sl = self.codec.shard_len(loc.len as usize);
        // extents per data shard, in shard offsets
        let mut per: Vec<Vec<(usize, usize)>> = vec![Vec::new(); k];
        for (off, b) in &job.writes {
            let (mut pos, end) = (*off, off + b.len());
            if end > loc.len as usize {
                return None;
            }
            while pos < end {
                let d = pos / sl;
                let a = pos % sl;
                let take = (sl - a).min(end - pos);
                per[d].push((a, a + take));
                pos += take;
            }
        }
        let per: Vec<Vec<(usize, usize)>> = per.into_iter().map(merge).collect();
        let union = merge(per.iter().flatten().copied().collect());
        let mut out = Vec::new();
        for slot in 0..n {
            let extents = per.get(slot).unwrap_or(&union).clone();
            if extents.is_empty() {
                continue;
            }
            let mi = loc.members[slot];
            if mi == NO_MEMBER {
                return None;
            }
            let m = &self.slots[mi as usize];
            let disk = m.writable_disk()?.clone();
            // block-aligned regions to read and verify
            let regions = merge(
                extents
                    .iter()
                    .map(|&(a, b)| (a / BLOCK * BLOCK, (b.div_ceil(BLOCK) * BLOCK).min(sl)))
                    .collect(),
            );
            let id = self.shard_id(job.object, job.stripe, loc.generation, slot);
            let header = self.headers.lock().unwrap().get(&(mi, id)).cloned();
            let rel = shard_path(job.object, job.stripe, loc.generation, slot as u8);
            let patches = loc.patches_of(slot);
            let stripe_len = loc.len;
            let regs = regions.clone();
            let cache = self.patch_cache.clone();
            self.stats.shards_read.fetch_add(1, Ordering::Relaxed);
            let t = m
                .submit(move |_| {
                    let mut header = header;
                    let mut got = Vec::with_capacity(regs.len());
                    for &(from, to) in &regs {
                        let job = super::read::Job {
                            cache: cache.clone(),
                            disk: disk.clone(),
                            rel: rel.clone(),
                            id,
                            stripe_len,
                            payload_len: sl,
                            from,
                            to,
                            header: header.clone(),
                            patches: patches.clone(),
                        };
                        let (bytes, fresh) = job.run().map_err(std::io::Error::other)?;
                        if fresh.is_some() {
                            header = fresh;
                        }
                        got.push(bytes);
                    }
                    Ok(got)
                })
                .ok()?;
            out.push((slot, extents, regions, t));
        }
        Some(out)
    }

    /// Collect the old bytes and build the records of one patch job.
    #[allow(clippy::type_complexity)]
    fn compute_patch(
        &self,
        job: &PatchJob,
        reads: Vec<(
            usize,
            Vec<(usize, usize)>,
            Vec<(usize, usize)>,
            Ticket<Vec<Vec<u8>>>,
        )>,
        deadline: Instant,
    ) -> Option<Vec<Pending>> {
        let k = self.k();
        let loc = &job.loc;
        let sl = self.codec.shard_len(loc.len as usize);
        // (slot, extents, regions, region bytes)
        let mut shards = Vec::with_capacity(reads.len());
        let mut ok = true;
        for (slot, extents, regions, t) in reads {
            let mi = loc.members[slot];
            let r = t.wait_until(deadline);
            match r {
                Ok(bytes) => {
                    self.slots[mi as usize].note_ok();
                    shards.push((slot, extents, regions, bytes));
                }
                Err(e) => {
                    let id = self.shard_id(job.object, job.stripe, loc.generation, slot);
                    self.shard_failed(mi, &id, &format!("read {e}"));
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        // a view of shard bytes at shard offset `a` through the regions
        fn at<'a>(
            regions: &[(usize, usize)],
            bytes: &'a mut [Vec<u8>],
            a: usize,
            b: usize,
        ) -> &'a mut [u8] {
            let i = regions
                .iter()
                .position(|&(f, t)| f <= a && b <= t)
                .expect("extent inside a region");
            let f = regions[i].0;
            &mut bytes[i][a - f..b - f]
        }
        // new data bytes, and the deltas into parity
        let (data, parity): (Vec<_>, Vec<_>) = shards.into_iter().partition(|s| s.0 < k);
        let mut parity = parity;
        let mut data = data;
        for (d, extents, regions, bytes) in data.iter_mut() {
            for &(a, b) in extents.iter() {
                let mut newb = at(regions, bytes, a, b).to_vec();
                // apply the writes that fall in [a, b) of shard d
                for (off, w) in &job.writes {
                    let (ws, we) = (*off, off + w.len());
                    let (s0, s1) = (*d * sl + a, *d * sl + b);
                    let (x, y) = (ws.max(s0), we.min(s1));
                    if x < y {
                        newb[x - s0..y - s0].copy_from_slice(&w[x - ws..y - ws]);
                    }
                }
                let old = at(regions, bytes, a, b);
                let delta: Vec<u8> = old.iter().zip(&newb).map(|(o, n)| o ^ n).collect();
                for (p, _, pregions, pbytes) in parity.iter_mut() {
                    let target = at(pregions, pbytes, a, b);
                    self.codec.apply_delta(*p - k, *d, &delta, target);
                }
                old.copy_from_slice(&newb);
            }
        }
        let mut recs = Vec::new();
        for (slot, extents, regions, mut bytes) in data.into_iter().chain(parity) {
            let id = PatchId {
                shard: self.shard_id(job.object, job.stripe, loc.generation, slot),
                seq: job.seq,
            };
            let parts: Vec<(u32, Vec<u8>)> = extents
                .iter()
                .map(|&(a, b)| (a as u32, at(&regions, &mut bytes, a, b).to_vec()))
                .collect();
            let refs: Vec<(u32, &[u8])> = parts.iter().map(|(o, b)| (*o, b.as_slice())).collect();
            let rec = crate::ec::patch::seal(id, &refs);
            let from = extents.first().map_or(0, |e| e.0) as u32;
            let to = extents.last().map_or(0, |e| e.1) as u32;
            recs.push((slot, loc.members[slot], rec, (from, to)));
        }
        Some(recs)
    }
}
