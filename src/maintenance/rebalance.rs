//! Rebalance: move shards from members holding more than their share onto
//! members holding less (a member just added holds nothing).
//!
//! A member's share of the shard bytes is proportional to its capacity
//! (members may differ in size). One pass walks the committed stripe table,
//! counting each online member's shard bytes, then walks it again planning
//! moves: a shard moves from the stripe's most over-full member to the most
//! under-full online member that holds no shard of the stripe, when that
//! lowers the spread (the excess difference exceeds one shard). A move is a
//! verified copy, made durable, then committed with the same compare and
//! swap as repair (a concurrent overwrite or delete wins, and the copy is
//! discarded); the old copy is deleted after the commit.

use super::repair::{MoveBatch, Pacer, Task};
use crate::fs::{Fs, FsResult};
use crate::pool::{Health, NO_MEMBER};
use std::sync::atomic::Ordering;

impl Fs {
    /// Shard bytes held by each member, per the committed stripe table.
    pub fn shard_bytes_per_member(&self) -> FsResult<Vec<u64>> {
        let mut used = vec![0u64; self.pool.members().len()];
        self.for_each_stripe(|_, _, loc| {
            let l = self.pool.codec.shard_len(loc.len as usize) as u64;
            for &mi in &loc.members {
                if let Some(u) = used.get_mut(mi as usize) {
                    *u += l;
                }
            }
        })?;
        Ok(used)
    }

    /// max/mean of shard bytes over online members (1.0 = perfectly even;
    /// None when they hold nothing).
    pub fn imbalance(&self) -> FsResult<Option<f64>> {
        let used = self.shard_bytes_per_member()?;
        let online: Vec<u64> = self
            .pool
            .members()
            .iter()
            .filter(|m| m.health() == Health::Online)
            .map(|m| used.get(m.index as usize).copied().unwrap_or(0))
            .collect();
        let sum: u64 = online.iter().sum();
        if online.is_empty() || sum == 0 {
            return Ok(None);
        }
        let mean = sum as f64 / online.len() as f64;
        Ok(Some(*online.iter().max().unwrap() as f64 / mean))
    }

    /// One rebalance pass, paced by `task`: rounds over the stripe table
    /// until a round finds nothing worth moving (at most 4). Returns the
    /// shards moved.
    pub fn rebalance_pass(&self, task: &Task) -> FsResult<u64> {
        let mut total = 0;
        for _ in 0..4 {
            let (moved, dropped) = self.rebalance_round(task)?;
            total += moved;
            if moved == 0 || task.cancel.load(Ordering::Relaxed) {
                self.finish_rebalance(task, total, dropped);
                break;
            }
        }
        Ok(total)
    }

    /// One walk over the stripe table: (shards moved, moves dropped because
    /// their stripe changed).
    fn rebalance_round(&self, task: &Task) -> FsResult<(u64, u64)> {
        // work on what is committed
        self.meta.sync()?;
        let n = self.pool.members().len();
        let mut used: Vec<f64> = self
            .shard_bytes_per_member()?
            .into_iter()
            .map(|b| b as f64)
            .collect();
        used.resize(n, 0.0);
        let online: Vec<bool> = (0..n)
            .map(|i| self.pool.member(i as u16).health() == Health::Online)
            .collect();
        // capacity weights (a member whose size is unknown counts as the mean)
        let caps: Vec<f64> = (0..n)
            .map(|i| self.pool.member(i as u16).capacity().0 as f64)
            .collect();
        let known: Vec<f64> = caps.iter().copied().filter(|&c| c > 0.0).collect();
        let mean_cap = if known.is_empty() {
            1.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        let weight: Vec<f64> = caps
            .iter()
            .zip(&online)
            .map(|(&c, &on)| {
                if !on {
                    0.0
                } else if c > 0.0 {
                    c
                } else {
                    mean_cap
                }
            })
            .collect();
        let total: f64 = (0..n).filter(|&i| online[i]).map(|i| used[i]).sum();
        let wsum: f64 = weight.iter().sum();
        if total == 0.0 || wsum == 0.0 {
            return Ok((0, 0));
        }
        // excess over the fair share, per member (online members only)
        let mut excess: Vec<f64> = (0..n).map(|i| used[i] - total * weight[i] / wsum).collect();
        let mut stripes = Vec::new();
        self.for_each_stripe(|ino, s, loc| stripes.push((ino, s, loc)))?;
        let mut pacer = Pacer::start(task, stripes.len() as u64, self.stripe_size());
        let mut batch = MoveBatch::default();
        for (done, (ino, s, loc)) in stripes.into_iter().enumerate() {
            if task.cancel.load(Ordering::Relaxed) {
                break;
            }
            let l = self.pool.codec.shard_len(loc.len as usize) as f64;
            let mut cur = loc.members.clone();
            let mut writes = Vec::new();
            loop {
                // the stripe's most over-full online member...
                let from = (0..cur.len())
                    .filter(|&i| cur[i] != NO_MEMBER && online[cur[i] as usize])
                    .max_by(|&a, &b| excess[cur[a] as usize].total_cmp(&excess[cur[b] as usize]));
                let Some(slot) = from else { break };
                // ...and the most under-full one outside the stripe that
                // doubles up no failure domain
                let to = (0..n as u16)
                    .filter(|&mi| online[mi as usize] && !cur.contains(&mi))
                    .filter(|&mi| {
                        crate::pool::placement::domain_ok(&self.pool, &cur, cur[slot], mi)
                    })
                    .min_by(|&a, &b| excess[a as usize].total_cmp(&excess[b as usize]));
                let Some(to) = to else { break };
                let fm = cur[slot] as usize;
                if !(excess[fm] > l / 2.0
                    && excess[to as usize] < -l / 2.0
                    && excess[fm] - excess[to as usize] > l)
                {
                    break;
                }
                // the copy is read from the committed location, even for a
                // second move in this stripe (each slot moves once)
                if writes.iter().any(|&(sl, _, _)| sl == slot) {
                    break;
                }
                let place = match self.pool.copy_shard(ino, s, &loc, slot, to) {
                    Ok(p) => p,
                    Err(e) => {
                        log::warn!("rebalance: inode {ino} stripe {s} to member {to}: {e}");
                        break;
                    }
                };
                pacer.account(l as u64);
                excess[fm] -= l;
                excess[to as usize] += l;
                cur[slot] = to;
                writes.push((slot, to, place));
            }
            batch.add(self, ino, s, loc, writes)?;
            let mut p = task.progress.lock().unwrap();
            p.stripes_done = done as u64 + 1;
            p.bytes_done = p.stripes_done * self.stripe_size();
            p.shards = batch.moved;
            p.rate = pacer.rate();
            let left = p.bytes_total.saturating_sub(p.bytes_done) as f64;
            p.eta_secs = (p.rate > 0.0).then(|| left / p.rate);
        }
        batch.commit(self)?;
        Ok((batch.moved, batch.dropped()))
    }

    fn finish_rebalance(&self, task: &Task, moved: u64, lost: u64) {
        let mut p = task.progress.lock().unwrap();
        p.running = false;
        p.passes += 1;
        p.shards = moved;
        p.stripes_failed = lost;
        p.eta_secs = None;
        p.last_pass_end = Some(super::repair::now_secs());
    }
}

impl Fs {
    /// `shardctl disk add DIR`: check that `dir` is an empty directory
    /// that is not a member yet, take its lock (held in `locks` with the
    /// other members'), format it and join it to the pool (online at once;
    /// the caller asks for a rebalance). Returns its index.
    pub fn add_member_dir(
        &self,
        dir: &std::path::Path,
        domain: Option<String>,
        class: Option<String>,
        locks: &crate::guard::lock::PoolLocks,
    ) -> FsResult<u16> {
        let roots: Vec<std::path::PathBuf> = self
            .pool
            .members()
            .iter()
            .filter_map(|m| {
                m.disk()
                    .and_then(|d| d.local_root())
                    .map(|r| r.to_path_buf())
            })
            .collect();
        crate::pool::check_new_member_dir(dir, &roots)?;
        locks
            .lock(dir)
            .map_err(|e| crate::fs::FsError::Pool(crate::pool::PoolError::Setup(e)))?;
        let disk = std::sync::Arc::new(crate::pool::DirDisk::new(dir));
        let added = self
            .pool
            .add_member(disk, dir.display().to_string(), domain, class);
        if added.is_err() {
            locks.release_unformatted(dir);
        }
        Ok(added?)
    }
}

impl Fs {
    /// Write the namespace catalog ([`crate::catalog`]) to every member
    /// that can be written, after committing pending metadata. Returns
    /// (members written, catalog bytes). The copy is fuzzy across tables
    /// (each record is some committed version) but never torn within one.
    /// Streamed: the store is read in batches of [`CATALOG_BATCH`] records
    /// and each batch goes out to every member before the next is read,
    /// so memory does not grow with the namespace.
    pub fn write_catalog(&self) -> FsResult<(usize, usize)> {
        use crate::catalog::{CatalogHeader, CatalogWriter, CATALOG_FILE, TABLES};
        self.meta.sync()?;
        let store = self.meta.store();
        let sequence = store.sequence()?;
        let h = CatalogHeader {
            pool_id: self.pool.sb.pool_id.clone(),
            sequence,
            created: super::repair::now_secs(),
            pairs: 0,
        };
        let mut sinks = Vec::new();
        for m in self.pool.members() {
            let Some(d) = m.writable_disk() else { continue };
            let out = match d.create_atomic(CATALOG_FILE) {
                Ok(Some(f)) => CatalogSink::Streamed(f),
                Ok(None) => CatalogSink::Gathered(Vec::new()),
                Err(e) => {
                    log::warn!(
                        "member {} ({}): writing the catalog: {e}",
                        m.index,
                        m.path()
                    );
                    continue;
                }
            };
            sinks.push((m, d, Some(out)));
        }
        let mut w = CatalogWriter::new(Fan(&mut sinks), &h).map_err(catalog_error)?;
        for t in TABLES {
            let mut cursor = vec![t];
            loop {
                let batch = store.range(&cursor, &[t + 1], CATALOG_BATCH)?;
                let Some(last) = batch.last() else { break };
                cursor = last.0.clone();
                cursor.push(0);
                for (k, v) in &batch {
                    w.add(k, v).map_err(catalog_error)?;
                }
            }
        }
        let (_, _, bytes) = w.finish().map_err(catalog_error)?;
        let mut written = 0;
        for (m, d, out) in sinks {
            let r = match out {
                Some(CatalogSink::Streamed(f)) => f.commit(),
                Some(CatalogSink::Gathered(b)) => d.write_atomic(CATALOG_FILE, &b),
                None => continue, // failed while streaming (logged)
            };
            match r {
                Ok(()) => written += 1,
                Err(e) => log::warn!(
                    "member {} ({}): writing the catalog: {e}",
                    m.index,
                    m.path()
                ),
            }
        }
        Ok((written, bytes as usize))
    }
}

/// A catalog that could go to no member.
fn catalog_error(e: std::io::Error) -> crate::fs::FsError {
    crate::fs::FsError::Pool(crate::pool::PoolError::Setup(format!(
        "writing the catalog: {e}"
    )))
}

/// Records read from the store per batch while writing the catalog.
const CATALOG_BATCH: usize = 256;

/// Where one member's catalog goes while it is written.
enum CatalogSink<'a> {
    /// A temporary file on the member (committed at the end).
    Streamed(Box<dyn crate::pool::AtomicFile + 'a>),
    /// Bytes for a backend that does not stream.
    Gathered(Vec<u8>),
}

/// Every member's catalog at once: a member whose write fails drops out
/// (logged) and the others go on; an error only when none is left.
struct Fan<'s, 'a>(
    &'s mut Vec<(
        &'a crate::pool::Member,
        &'a std::sync::Arc<dyn crate::pool::DiskBackend>,
        Option<CatalogSink<'a>>,
    )>,
);

impl std::io::Write for Fan<'_, '_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut live = 0;
        for (m, _, out) in self.0.iter_mut() {
            let r = match out {
                Some(CatalogSink::Streamed(f)) => f.write_all(b),
                Some(CatalogSink::Gathered(v)) => {
                    v.extend_from_slice(b);
                    Ok(())
                }
                None => continue,
            };
            match r {
                Ok(()) => live += 1,
                Err(e) => {
                    log::warn!(
                        "member {} ({}): writing the catalog: {e}",
                        m.index,
                        m.path()
                    );
                    *out = None; // dropped: its temporary file is removed
                }
            }
        }
        if live == 0 && !self.0.is_empty() {
            return Err(std::io::Error::other("no member could take the catalog"));
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        for (_, _, out) in self.0.iter_mut() {
            if let Some(CatalogSink::Streamed(f)) = out {
                f.flush()?;
            }
        }
        Ok(())
    }
}

impl Fs {
    /// Heat rebalance: move shards of hot stripes from the members that
    /// serve the most accesses to members that serve the fewest. An
    /// object's heat is its decayed access count (tiering's temperature);
    /// a member's heat is the sum over the stripes it holds a shard of. A
    /// read can only choose among the members of its stripe, so when a few
    /// hot objects share members, those run hot whatever the read policy:
    /// this spreads them. Moves are rebalance moves (verified copy, durable,
    /// compare-and-swap commit), at most `max_moves`. Returns the moves.
    pub fn heat_rebalance_pass(&self, task: &Task, max_moves: u64) -> FsResult<u64> {
        self.meta.sync()?;
        let n = self.pool.members().len();
        let online: Vec<bool> = (0..n)
            .map(|i| self.pool.member(i as u16).health() == Health::Online)
            .collect();
        let mut hot: Vec<(f64, u64, u64, crate::pool::StripeLoc)> = Vec::new();
        self.for_each_stripe(|ino, s, loc| {
            if let Some((w, _)) = self.tier.temperature(ino) {
                if w > 0.0 {
                    hot.push((w, ino, s, loc));
                }
            }
        })?;
        let mut heat = vec![0.0f64; n];
        for (w, _, _, loc) in &hot {
            for &mi in &loc.members {
                if let Some(h) = heat.get_mut(mi as usize) {
                    *h += w;
                }
            }
        }
        hot.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut pacer = Pacer::start(task, hot.len() as u64, self.stripe_size());
        let mut batch = MoveBatch::default();
        for (w, ino, s, loc) in hot {
            if batch.planned >= max_moves || task.cancel.load(Ordering::Relaxed) {
                break;
            }
            let mut cur = loc.members.clone();
            let mut writes = Vec::new();
            // the stripe's hottest online member...
            let Some(slot) = (0..cur.len())
                .filter(|&i| cur[i] != NO_MEMBER && online[cur[i] as usize])
                .max_by(|&a, &b| heat[cur[a] as usize].total_cmp(&heat[cur[b] as usize]))
            else {
                continue;
            };
            let from = cur[slot];
            // ...to the coolest online member outside it
            let to = (0..n as u16)
                .filter(|&mi| online[mi as usize] && !cur.contains(&mi))
                .filter(|&mi| crate::pool::placement::domain_ok(&self.pool, &cur, from, mi))
                .min_by(|&a, &b| heat[a as usize].total_cmp(&heat[b as usize]));
            let Some(to) = to else { continue };
            if heat[from as usize] - heat[to as usize] <= w {
                continue; // moving would not lower the spread
            }
            let Ok(place) = self.pool.copy_shard(ino, s, &loc, slot, to) else {
                continue;
            };
            pacer.account(self.pool.codec.shard_len(loc.len as usize) as u64);
            heat[from as usize] -= w;
            heat[to as usize] += w;
            cur[slot] = to;
            writes.push((slot, to, place));
            batch.add(self, ino, s, loc, writes)?;
        }
        batch.commit(self)?;
        self.finish_rebalance(task, batch.moved, batch.dropped());
        Ok(batch.moved)
    }
}
