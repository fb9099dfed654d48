//! Folding: a patched stripe rewritten whole as a new generation, its
//! patches then released (and their logs deleted once nothing else uses
//! them). Runs for stripes idle for a while (the maintenance worker), for
//! stripes repair must rebuild (patched stripes never move), and when a
//! stripe has too many patches (the next flush writes it whole).

use crate::fs::schema::*;
use crate::fs::{Fs, FsResult};
use crate::meta::{AfterCommit, Op};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Fs {
    /// Remember that stripe `s` of `ino` was patched now.
    pub(crate) fn note_patched(&self, ino: u64, s: u64) {
        self.patched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((ino, s), Instant::now());
    }

    /// Stripes known to carry patches.
    pub fn patched_count(&self) -> usize {
        self.patched.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Rewrite stripe `s` of `ino` whole if it carries patches. Returns
    /// true if it was folded.
    ///
    /// The stripe is read and its new generation written without the
    /// filesystem lock, so a fold (4 MiB read, k+m shards written) never
    /// stalls the mount; the commit takes the lock and happens only if the
    /// stripe's location is still the one folded and no write of the
    /// stripe is buffered or in flight (else the new shards, named by
    /// nothing, are removed and the fold is left for later).
    pub fn fold_stripe(&self, ino: u64, s: u64) -> FsResult<bool> {
        let (loc, generation) = {
            let mut g = self.lock();
            // A write in flight commits first (a fold would make it stale).
            if g.open
                .get(&ino)
                .is_some_and(|of| of.inflight.contains_key(&s))
            {
                self.reap_one(&mut g, ino, s)?;
            }
            // A whole-stripe buffer of an open file is written out first:
            // it supersedes the patched stripe (all its shards land on
            // writable members, so it is also repaired). Left buffered, it
            // would make the fold below give up every time, and repair of
            // a stripe that lost a member would wait for the file's close
            // (the model check found this).
            if g.open.get(&ino).is_some_and(|of| of.dirty.contains_key(&s)) {
                self.flush_stripes(&mut g, ino, &[s])?;
            }
            let Some(loc) = self.stripe_loc(ino, s)? else {
                drop(g);
                self.forget_patched(ino, s);
                return Ok(false);
            };
            if loc.patches.is_empty() {
                drop(g);
                self.forget_patched(ino, s);
                return Ok(false);
            }
            let generation = g.next_gen;
            g.next_gen += 1;
            (loc, generation)
        };
        let data = self.pool.read_stripe(ino, s, &loc)?;
        let new = self.pool.write_stripe(ino, s, generation, &data)?;
        let mut g = self.lock();
        let busy = g
            .open
            .get(&ino)
            .is_some_and(|of| of.inflight.contains_key(&s) || of.dirty.contains_key(&s));
        if busy || self.stripe_loc(ino, s)?.as_ref() != Some(&loc) {
            drop(g);
            // named by no committed location: safe to remove at once
            self.pool.delete_stripe(ino, s, &new);
            return Ok(false);
        }
        let pool = self.pool.clone();
        let old = loc.clone();
        let after: Vec<AfterCommit> = vec![Box::new(move || pool.delete_stripe(ino, s, &old))];
        let ops = vec![
            Op::Put(stripe_key(ino, s), enc(&new)),
            Op::Put(counter_key("gen"), g.next_gen.to_be_bytes().to_vec()),
        ];
        self.meta.apply(ops, after)?;
        if let Some(of) = g.open.get_mut(&ino) {
            if of.cache.as_ref().is_some_and(|c| c.0 == s) {
                of.cache = None;
            }
        }
        drop(g);
        self.forget_patched(ino, s);
        self.pool.stats.folds.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    fn forget_patched(&self, ino: u64, s: u64) {
        self.patched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(ino, s));
    }

    /// Fold up to `max` patched stripes not patched for `idle`, oldest
    /// first; returns how many were folded. Errors are logged and the
    /// stripe is tried again later.
    pub fn fold_idle(&self, idle: Duration, max: usize) -> usize {
        let now = Instant::now();
        let mut due: Vec<(Instant, (u64, u64))> = self
            .patched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, &t)| now.duration_since(t) >= idle)
            .map(|(&k, &t)| (t, k))
            .collect();
        due.sort();
        let mut folded = 0;
        for (_, (ino, s)) in due.into_iter().take(max) {
            match self.fold_stripe(ino, s) {
                Ok(true) => folded += 1,
                Ok(false) => {}
                Err(e) => log::warn!("fold of inode {ino} stripe {s}: {e}"),
            }
        }
        if folded > 0 {
            // the superseded generations and patch logs go after the commit
            if let Err(e) = self.meta.sync() {
                log::error!("fold commit: {e}");
            }
        }
        folded
    }

    /// At mount: count the stripe map's references into every member's
    /// logs (removing logs nothing references) and note the patched
    /// stripes for folding. After an unclean stop (`sweep`), also punch
    /// out every byte of the logs that no committed record covers (see
    /// `Pool::sweep_log_gaps`).
    pub(crate) fn open_patches(&self, sweep: bool) -> FsResult<()> {
        let mut refs = crate::pool::patch::LogRefs::new();
        let mut extents: std::collections::BTreeMap<(u16, u32), Vec<(u64, u64)>> =
            Default::default();
        self.for_each_stripe(|ino, s, loc| {
            if !loc.patches.is_empty() {
                self.note_patched(ino, s);
            }
            crate::pool::patch::count_log_refs(&mut refs, &loc);
            if sweep {
                let rec =
                    crate::pool::records::record_len(self.pool.codec.shard_len(loc.len as usize));
                for (i, &mi) in loc.members.iter().enumerate() {
                    let p = loc.place(i);
                    if mi != crate::pool::NO_MEMBER && !p.is_file() {
                        extents
                            .entry((mi, p.log))
                            .or_default()
                            .push((p.offset(), rec));
                    }
                }
                for r in &loc.patches {
                    extents
                        .entry((r.member, r.log))
                        .or_default()
                        .push((r.offset, r.len as u64));
                }
            }
        })?;
        self.pool.open_patch_logs(refs);
        if sweep {
            let n = self.pool.sweep_log_gaps(&extents);
            if n > 0 {
                log::info!("reclaimed up to {n} bytes of unreferenced records in the logs");
            }
        }
        Ok(())
    }
}
