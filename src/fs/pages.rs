//! Small overwrites of committed stripes: buffered as pages, written out
//! as patches (`pool::patch`) instead of rewriting the stripe.
//!
//! A write that lands inside the committed bytes of a stripe, without
//! covering all of it, is kept as the [`PAGE`]s it touches (a partly
//! written page is first filled from the committed stripe, one small
//! verified read). At fsync, close, or when the file holds
//! `MAX_DIRTY_PAGES` pages, every buffered stripe is written out as patches
//! in one batch (one append and fdatasync per member, m+1 copies of each
//! stripe's record, nothing read) and committed in one metadata batch. A
//! stripe that cannot be patched (fewer than m+1 of its members writable,
//! an append that fails, too many pages or patches) is written whole
//! instead, as any other buffered stripe.

use super::schema::*;
use super::{Fs, FsResult, Inner, MAX_PATCHES, MAX_STRIPE_PAGES, PAGE};
use crate::meta::Op;
use crate::pool::{PatchJob, PatchRef, StripeLoc};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Copy the buffered pages' bytes that fall in stripe range
/// `[from, from + buf.len())` into `buf`.
pub(super) fn overlay_pages(pages: &BTreeMap<u32, Vec<u8>>, from: usize, buf: &mut [u8]) {
    let to = from + buf.len();
    let first = (from / PAGE) as u32;
    for (&p, bytes) in pages.range(first..) {
        let pa = p as usize * PAGE;
        if pa >= to {
            break;
        }
        let (s, e) = (pa.max(from), (pa + bytes.len()).min(to));
        if s < e {
            buf[s - from..e - from].copy_from_slice(&bytes[s - pa..e - pa]);
        }
    }
}

impl Fs {
    /// Buffer `bytes` at `in_off` of stripe `s` as pages, if this write is
    /// a small overwrite of committed bytes (see the module comment).
    /// Returns false when the caller must use a whole-stripe buffer.
    pub(super) fn write_pages(
        &self,
        g: &mut Inner,
        ino: u64,
        s: u64,
        in_off: usize,
        bytes: &[u8],
    ) -> FsResult<bool> {
        let ss = self.stripe_size();
        let of = g.open.get(&ino).expect("open");
        let end = in_off + bytes.len();
        let have = of.pages.get(&s).map_or(0, |p| p.len());
        if of.dirty.contains_key(&s)
            || s * ss + end as u64 > of.inode.size
            || (have == 0 && in_off == 0 && end as u64 == ss)
        {
            log::debug!(
                "inode {ino} stripe {s}: whole-stripe write (buffered {}, past EOF {}, whole {})",
                of.dirty.contains_key(&s),
                s * ss + end as u64 > of.inode.size,
                have == 0 && in_off == 0 && end as u64 == ss
            );
            return Ok(false);
        }
        if of.inflight.contains_key(&s) {
            self.reap_one(g, ino, s)?;
        }
        let Some(loc) = self.stripe_loc(ino, s)? else {
            return Ok(false);
        };
        if end > loc.len as usize {
            return Ok(false);
        }
        let (first, last) = (in_off / PAGE, (end - 1) / PAGE);
        let pages = g.open.get(&ino).expect("open").pages.get(&s);
        let new = (first..=last)
            .filter(|&p| !pages.is_some_and(|m| m.contains_key(&(p as u32))))
            .count();
        if have + new > MAX_STRIPE_PAGES {
            if have > 0 {
                self.pages_to_whole(g, ino, s)?;
            }
            return Ok(false);
        }
        for p in first..=last {
            let pa = p * PAGE;
            let pe = (pa + PAGE).min(loc.len as usize);
            let present = g.open[&ino]
                .pages
                .get(&s)
                .is_some_and(|m| m.contains_key(&(p as u32)));
            if !present {
                let page = if in_off <= pa && end >= pe {
                    vec![0u8; pe - pa]
                } else {
                    self.committed_bytes(g, ino, s, &loc, pa, pe)?
                };
                let of = g.open.get_mut(&ino).expect("open");
                of.pages.entry(s).or_default().insert(p as u32, page);
                of.page_count += 1;
            }
            let page = g
                .open
                .get_mut(&ino)
                .expect("open")
                .pages
                .get_mut(&s)
                .and_then(|m| m.get_mut(&(p as u32)))
                .expect("page");
            let (a, b) = (in_off.max(pa), end.min(pe));
            page[a - pa..b - pa].copy_from_slice(&bytes[a - in_off..b - in_off]);
        }
        Ok(true)
    }

    /// Bytes `[a, b)` of committed stripe `s` (from the file's cached
    /// stripe if it is current, else one verified range read).
    fn committed_bytes(
        &self,
        g: &mut Inner,
        ino: u64,
        s: u64,
        loc: &StripeLoc,
        a: usize,
        b: usize,
    ) -> FsResult<Vec<u8>> {
        if let Some((cs, cv, data)) = &g.open[&ino].cache {
            if *cs == s && *cv == loc.version() {
                return Ok(data[a..b].to_vec());
            }
        }
        let mut v = self.pool.read_stripe_range(ino, s, loc, a, b)?;
        v.resize(b - a, 0);
        Ok(v)
    }

    /// Turn the pages of stripe `s` into a whole-stripe buffer (the
    /// committed stripe with the pages over it).
    pub(super) fn pages_to_whole(&self, g: &mut Inner, ino: u64, s: u64) -> FsResult<()> {
        let ss = self.stripe_size();
        // read before taking the pages: a failed read keeps them
        let mut buf = self.read_committed_stripe(g, ino, s)?.as_ref().clone();
        let of = g.open.get_mut(&ino).expect("open");
        let Some(pages) = of.pages.remove(&s) else {
            return Ok(());
        };
        of.page_count -= pages.len();
        overlay_pages(&pages, 0, &mut buf);
        let valid = of.inode.size.saturating_sub(s * ss).min(ss) as usize;
        buf[valid..].fill(0);
        of.dirty.insert(s, buf);
        Ok(())
    }

    /// Write out every buffered page of `ino`: patches for the stripes that
    /// can take them, committed in one batch with the inode; whole-stripe
    /// writes for the rest.
    pub(super) fn flush_pages(&self, g: &mut Inner, ino: u64) -> FsResult<()> {
        let ss = self.stripe_size();
        let stripes: Vec<u64> = g.open[&ino].pages.keys().copied().collect();
        let mut jobs = Vec::new();
        let mut whole = Vec::new();
        // patches a job's merged patch replaces, by job
        let mut replaced: Vec<Vec<PatchRef>> = Vec::new();
        for s in stripes {
            let Some(mut loc) = self.stripe_loc(ino, s)? else {
                whole.push(s);
                continue;
            };
            let len = loc.len as usize;
            let pages: Vec<(usize, Vec<u8>)> = g.open[&ino].pages[&s]
                .iter()
                .map(|(&p, b)| (p as usize * PAGE, b))
                .filter(|(pa, _)| *pa < len)
                .map(|(pa, b)| (pa, b[..b.len().min(len - pa)].to_vec()))
                .collect();
            let (writes, old) = if loc.patch_count() < MAX_PATCHES {
                (pages, Vec::new())
            } else {
                // full: one patch holding the newer ones merged and the new
                // pages replaces them, unless that grows too big (the
                // stripe is then rewritten whole)
                let first = merge_from(&loc, pages.iter().map(|p| p.1.len()).sum());
                match self
                    .pool
                    .merged_patches(ino, s, &loc, first, MERGED_PATCH_MAX)
                {
                    Some(merged) => {
                        let keep: std::collections::HashSet<u64> =
                            loc.patch_groups().iter().take(first).map(|g| g.0).collect();
                        let (kept, old): (Vec<PatchRef>, Vec<PatchRef>) =
                            std::mem::take(&mut loc.patches)
                                .into_iter()
                                .partition(|p| keep.contains(&p.seq));
                        loc.patches = kept;
                        (overlay_extents(merged, pages), old)
                    }
                    None => {
                        self.pool
                            .stats
                            .full_patch_rewrites
                            .fetch_add(1, Ordering::Relaxed);
                        whole.push(s);
                        continue;
                    }
                }
            };
            let seq = g.next_gen;
            g.next_gen += 1;
            jobs.push(PatchJob {
                object: ino,
                stripe: s,
                loc,
                seq,
                writes,
            });
            replaced.push(old);
        }
        let results = if jobs.is_empty() {
            Vec::new()
        } else {
            self.pool.patch_stripes(&jobs)
        };
        let mut ops = Vec::new();
        let mut after: Vec<crate::meta::AfterCommit> = Vec::new();
        let mut covered = 0u64;
        for ((job, res), old) in jobs.iter().zip(results).zip(replaced) {
            let Some(refs) = res else {
                whole.push(job.stripe);
                continue;
            };
            if !old.is_empty() {
                // the merged patch stands for these once its commit is
                // durable; till then they stay referenced (a crash keeps
                // the old location, whose records are all still there)
                let pool = self.pool.clone();
                after.push(Box::new(move || pool.release_patches(&old)));
                self.pool
                    .stats
                    .merged_patches
                    .fetch_add(1, Ordering::Relaxed);
            }
            let mut loc = job.loc.clone();
            loc.patches.extend(refs);
            ops.push(Op::Put(stripe_key(ino, job.stripe), enc(&loc)));
            let of = g.open.get_mut(&ino).expect("open");
            if let Some(p) = of.pages.remove(&job.stripe) {
                of.page_count -= p.len();
            }
            if of.cache.as_ref().is_some_and(|c| c.0 == job.stripe) {
                of.cache = None;
            }
            covered = covered.max(job.stripe * ss + job.loc.len as u64);
            self.note_patched(ino, job.stripe);
        }
        if !ops.is_empty() {
            self.commit_stripes(g, ino, covered, ops, after)?;
        }
        if whole.is_empty() {
            return Ok(());
        }
        for &s in &whole {
            self.pages_to_whole(g, ino, s)?;
        }
        self.flush_stripes(g, ino, &whole)
    }
}

/// Most bytes one merged patch may hold (see `flush_pages`); past it the
/// stripe is rewritten whole. Writes per patch, merges and whole
/// rewrites together, are least about here for random page updates: a
/// merge every `MAX_PATCHES` patches costs the merged bytes, a rewrite
/// every few merges the whole stripe.
const MERGED_PATCH_MAX: usize = 1 << 20;

/// Which of a full stripe's patches to merge with `new` bytes: the
/// newest ones, back to (not including) the first that is bigger than
/// everything after it together, and at least the newest quarter. Sizes
/// then grow geometrically from new to old, as in a size-tiered LSM
/// tree: a byte is merged again a few times, not at every merge, and the
/// big old merged patches are left alone until the stripe is folded.
fn merge_from(loc: &StripeLoc, new: usize) -> usize {
    let sizes: Vec<usize> = loc
        .patch_groups()
        .iter()
        .map(|g| g.1[0].len as usize)
        .collect();
    let least = (MAX_PATCHES / 4).max(2).min(sizes.len());
    let mut first = sizes.len();
    let mut after = new;
    while first > 0 {
        let size = sizes[first - 1];
        if sizes.len() - first >= least && size > after {
            break;
        }
        after += size;
        first -= 1;
    }
    first
}

/// Lay `pages` (disjoint `(offset, bytes)` extents) over `merged` (the
/// same): the disjoint, sorted extents covering both, where `pages` win.
/// Every byte of the result comes from one or the other.
fn overlay_extents(
    merged: Vec<(usize, Vec<u8>)>,
    pages: Vec<(usize, Vec<u8>)>,
) -> Vec<(usize, Vec<u8>)> {
    let mut spans: Vec<(usize, usize)> = merged
        .iter()
        .chain(pages.iter())
        .filter(|e| !e.1.is_empty())
        .map(|(o, b)| (*o, o + b.len()))
        .collect();
    crate::pool::patch::merge_spans(&mut spans)
        .into_iter()
        .map(|(a, b)| {
            let mut buf = vec![0u8; b - a];
            for (o, bytes) in merged.iter().chain(pages.iter()) {
                let (s, e) = ((*o).max(a), (o + bytes.len()).min(b));
                if s < e {
                    buf[s - a..e - a].copy_from_slice(&bytes[s - o..e - o]);
                }
            }
            (a, buf)
        })
        .collect()
}

#[cfg(test)]
mod merge_tests {
    use super::{merge_from, overlay_extents};
    use crate::pool::{PatchRef, StripeLoc};

    fn loc_with(sizes: &[u32]) -> StripeLoc {
        let mut loc = StripeLoc {
            generation: 1,
            len: 8192,
            members: vec![0, 1, 2, 3, 4, 5],
            patches: Vec::new(),
            places: Vec::new(),
        };
        for (i, &len) in sizes.iter().enumerate() {
            for copy in 0..3u8 {
                loc.patches.push(PatchRef {
                    copy,
                    member: copy as u16,
                    seq: 10 + i as u64,
                    log: 0,
                    offset: 0,
                    len,
                    from: 0,
                    to: 1,
                });
            }
        }
        loc
    }

    #[test]
    fn merges_take_the_small_newest_patches_and_leave_big_old_ones() {
        // 16 small ones: all of them (nothing older is bigger)
        assert_eq!(merge_from(&loc_with(&[4096; 16]), 4096), 0);
        // a big merged one, then 15 small: the 15 small only
        let mut s = vec![200_000];
        s.extend([4096; 15]);
        assert_eq!(merge_from(&loc_with(&s), 4096), 1);
        // a merged one no bigger than the small ones after it: taken too
        let mut s = vec![60_000];
        s.extend([4096; 15]);
        assert_eq!(merge_from(&loc_with(&s), 4096), 0);
        // two big old levels: both left alone
        let mut s = vec![500_000, 300_000];
        s.extend([4096; 14]);
        assert_eq!(merge_from(&loc_with(&s), 4096), 2);
        // a big newest patch: the newest quarter is taken at least (and
        // then the small ones before it, being smaller than it)
        let mut s = vec![900_000];
        s.extend([4096; 11]);
        s.extend([200_000; 4]);
        assert_eq!(merge_from(&loc_with(&s), 4096), 1);
    }

    #[test]
    fn pages_win_over_merged_bytes_and_extents_join() {
        let merged = vec![(0, vec![1u8; 8]), (20, vec![2u8; 4])];
        let pages = vec![(4, vec![9u8; 8]), (24, vec![3u8; 2]), (40, vec![4u8; 1])];
        let out = overlay_extents(merged, pages);
        assert_eq!(
            out,
            vec![
                (0, vec![1, 1, 1, 1, 9, 9, 9, 9, 9, 9, 9, 9]),
                (20, vec![2, 2, 2, 2, 3, 3]),
                (40, vec![4]),
            ]
        );
    }
}
