//! Repair and scrub.
//!
//! Repair finds every committed stripe with a shard that is missing (never
//! written, or on a failed, removed or missing member), known bad (a read
//! or scrub found it unreadable or corrupt) or on a draining member, and
//! rebuilds those shards from any k good ones onto online members that
//! hold no shard of the stripe. The new placement is committed only if the
//! stripe's location is still the one that was repaired (compare and swap
//! under the filesystem lock), so a concurrent overwrite or delete always
//! wins and nothing old is resurrected; the replaced copies are deleted
//! after the commit. Stripes with the fewest good shards go first. A
//! byte-rate limit, changeable at any time, paces the work.
//!
//! Scrub reads every shard of every stripe, data and parity, verifies its
//! BLAKE3 checksums, and repairs what is wrong at once.

use crate::fs::schema::*;
use crate::fs::{Fs, FsResult};
use crate::meta::Op;
use crate::pool::{Health, StripeLoc, NO_MEMBER};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default repair and scrub rate: 64 MiB/s.
pub const DEFAULT_RATE: u64 = 64 << 20;
/// Stripes rebuilt per sync and metadata commit.
const REPAIR_BATCH: usize = 32;
/// Threads rebuilding stripes at once in a repair pass (each reads,
/// computes and writes one stripe at a time).
const REPAIR_WORKERS: usize = 4;
/// Stripes a repair pass has handed out and not yet taken back: the
/// workers' queue, so they go on while a batch is committed.
const REPAIR_WINDOW: usize = 2 * REPAIR_WORKERS;

/// Progress of repair or scrub, as `shardctl` shows it.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Progress {
    /// A pass is running.
    pub running: bool,
    /// Passes finished since mount.
    pub passes: u64,
    /// Stripes in the current (or last) pass.
    pub stripes_total: u64,
    /// Stripes handled so far in it.
    pub stripes_done: u64,
    /// Stripe bytes in the pass and done so far.
    pub bytes_total: u64,
    /// Bytes handled so far.
    pub bytes_done: u64,
    /// Shards rebuilt (repair) or found bad (scrub) in the pass.
    pub shards: u64,
    /// Shards repaired after scrub found them bad.
    pub repaired: u64,
    /// Stripes that could not be handled (fewer than k good shards, no
    /// room) or were skipped because they changed meanwhile.
    pub stripes_failed: u64,
    /// Measured rate of the pass, bytes/s.
    pub rate: f64,
    /// Limit, bytes/s (0: none).
    pub rate_limit: u64,
    /// Estimated seconds left.
    pub eta_secs: Option<f64>,
    /// Unix time the last full pass ended.
    pub last_pass_end: Option<u64>,
    /// Stripes still needing repair after the last pass.
    pub remaining: u64,
}

/// Shared state of one background task (repair or scrub): progress, rate
/// limit, and a wake-up for the daemon thread. Poison policy
/// (`guard::panic`): `progress` (counters, shown by status) and `wake_lock`
/// (no data) are taken over when poisoned, so status keeps answering after
/// a panicked pass and the restarted worker can run the next.
#[derive(Debug)]
pub struct Task {
    /// Progress, updated as the pass goes.
    pub progress: Mutex<Progress>,
    /// Bytes per second (0: unlimited).
    pub rate_limit: AtomicU64,
    /// Set to ask for a pass now.
    pub requested: AtomicBool,
    /// Set to end a running pass early (unmount).
    pub cancel: AtomicBool,
    wake: Condvar,
    wake_lock: Mutex<()>,
}

impl Default for Task {
    fn default() -> Self {
        Task {
            progress: Mutex::new(Progress::default()),
            rate_limit: AtomicU64::new(DEFAULT_RATE),
            requested: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
        }
    }
}

impl Task {
    /// Ask for a pass now.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let _g = crate::guard::panic::lock_or_recover(&self.wake_lock);
        self.wake.notify_all();
    }

    /// Ask for a pass of this task, run by the thread that waits on
    /// `waker` (the maintenance thread waits on repair's).
    pub fn request_via(&self, waker: &Task) {
        self.requested.store(true, Ordering::SeqCst);
        waker.request_wake();
    }

    /// Wake the thread waiting on this task without asking for a pass.
    fn request_wake(&self) {
        let _g = crate::guard::panic::lock_or_recover(&self.wake_lock);
        self.wake.notify_all();
    }

    /// Wait until a pass is requested or `timeout` passes, leaving the
    /// request set for the caller to take.
    pub fn wait(&self, timeout: Duration) {
        let g = crate::guard::panic::lock_or_recover(&self.wake_lock);
        if !self.requested.load(Ordering::SeqCst) {
            let _ = self.wake.wait_timeout(g, timeout);
        }
    }

    /// A snapshot of the progress.
    pub fn snapshot(&self) -> Progress {
        let mut p = crate::guard::panic::lock_or_recover(&self.progress).clone();
        p.rate_limit = self.rate_limit.load(Ordering::Relaxed);
        p
    }
}

/// Paces work to a byte rate read at every step (so a change applies at once).
pub(crate) struct Pacer<'a> {
    task: &'a Task,
    start: Instant,
    bytes: u64,
}

impl<'a> Pacer<'a> {
    /// Reset `task`'s progress for a pass over `stripes` stripes of
    /// `stripe_size` bytes, and start pacing.
    pub(crate) fn start(task: &'a Task, stripes: u64, stripe_size: u64) -> Self {
        let mut p = crate::guard::panic::lock_or_recover(&task.progress);
        *p = Progress {
            running: true,
            passes: p.passes,
            last_pass_end: p.last_pass_end,
            stripes_total: stripes,
            bytes_total: stripes * stripe_size,
            ..Progress::default()
        };
        drop(p);
        Pacer {
            task,
            start: Instant::now(),
            bytes: 0,
        }
    }

    pub(crate) fn account(&mut self, n: u64) {
        self.bytes += n;
        let limit = self.task.rate_limit.load(Ordering::Relaxed);
        if limit == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / limit as f64);
        let spent = self.start.elapsed();
        if due > spent {
            std::thread::sleep((due - spent).min(Duration::from_secs(5)));
        }
    }

    pub(crate) fn rate(&self) -> f64 {
        self.bytes as f64 / self.start.elapsed().as_secs_f64().max(1e-6)
    }
}

/// One stripe that needs work.
#[derive(Debug, Clone)]
pub struct RepairItem {
    /// inode
    pub ino: u64,
    /// stripe index
    pub stripe: u64,
    /// its committed location when planned
    pub loc: StripeLoc,
    /// shard slots to rebuild or move
    pub slots: Vec<usize>,
}

/// A shard copy written and not yet named: (slot, member, place).
pub(crate) type Written = (usize, u16, crate::pool::Place);

/// Moves (copies made durable by the next sync, not yet named) of
/// rebalance, heat rebalance and tier passes, committed in batches with
/// repair's compare-and-swap commit.
#[derive(Default)]
pub(crate) struct MoveBatch {
    items: Vec<(RepairItem, Vec<Written>)>,
    /// Shards committed so far.
    pub moved: u64,
    /// Shards copied so far (committed or not).
    pub planned: u64,
}

impl MoveBatch {
    /// Queue the copies `writes` (slot, member, place) of one stripe; commit the
    /// batch when it is full.
    pub fn add(
        &mut self,
        fs: &Fs,
        ino: u64,
        stripe: u64,
        loc: StripeLoc,
        writes: Vec<Written>,
    ) -> FsResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        self.planned += writes.len() as u64;
        let item = RepairItem {
            ino,
            stripe,
            slots: writes.iter().map(|w| w.0).collect(),
            loc,
        };
        self.items.push((item, writes));
        if self.items.len() >= REPAIR_BATCH {
            self.commit(fs)?;
        }
        Ok(())
    }

    /// Commit what is queued.
    pub fn commit(&mut self, fs: &Fs) -> FsResult<()> {
        let items = std::mem::take(&mut self.items);
        self.moved += fs.commit_repairs(items)?.iter().sum::<usize>() as u64;
        Ok(())
    }

    /// Copies whose stripe changed meanwhile (dropped), once all is committed.
    pub fn dropped(&self) -> u64 {
        self.planned - self.moved.min(self.planned)
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Fs {
    /// Every committed stripe in key order, in batches (no lock held).
    pub(crate) fn for_each_stripe(&self, mut f: impl FnMut(u64, u64, StripeLoc)) -> FsResult<()> {
        let mut cursor = b"T".to_vec();
        loop {
            let batch = self.meta.range(&cursor, b"U", 1024)?;
            let Some(last) = batch.last() else { break };
            cursor = last.0.clone();
            cursor.push(0);
            for (k, v) in batch {
                let loc: StripeLoc = dec_loc(&self.pool, &v)?;
                f(key_u64_at(&k, 1), key_u64_at(&k, 9), loc);
            }
        }
        Ok(())
    }

    /// Shard slots of a stripe that need a new copy.
    fn slots_needing_repair(&self, ino: u64, s: u64, loc: &StripeLoc) -> Vec<usize> {
        (0..loc.members.len())
            .filter(|&i| {
                let mi = loc.members[i];
                if mi == NO_MEMBER {
                    return true;
                }
                let h = self.pool.member(mi).health();
                !matches!(h, Health::Online | Health::Suspect)
                    || self.pool.is_bad(ino, s, loc.generation, i as u8)
            })
            .collect()
    }

    /// The stripes needing repair, fewest good shards first.
    pub fn repair_plan(&self) -> FsResult<Vec<RepairItem>> {
        let mut items = Vec::new();
        self.for_each_stripe(|ino, stripe, loc| {
            let slots = self.slots_needing_repair(ino, stripe, &loc);
            if !slots.is_empty() {
                items.push(RepairItem {
                    ino,
                    stripe,
                    loc,
                    slots,
                });
            }
        })?;
        items.sort_by_key(|it| it.loc.members.len() - it.slots.len());
        Ok(items)
    }

    /// Rebuild the planned shards of one stripe and commit the new
    /// placement if the stripe did not change meanwhile. Returns the
    /// number of shards rebuilt (0: skipped, changed, or not possible now).
    pub fn repair_stripe(&self, it: &RepairItem) -> FsResult<usize> {
        let written = self.rebuild(it)?;
        Ok(self.commit_repairs(vec![(it.clone(), written)])?[0])
    }

    /// Decode a stripe and write new copies of its planned shards (not yet
    /// durable, not yet named): (slot, member, place) for each copy written.
    fn rebuild(&self, it: &RepairItem) -> FsResult<Vec<Written>> {
        if !it.loc.patches.is_empty() {
            // a patched stripe never moves: it is rewritten whole instead
            // (all its shards on online members), which repairs it
            if let Err(e) = self.fold_stripe(it.ino, it.stripe) {
                log::error!(
                    "repair of inode {} stripe {} (fold): {e}",
                    it.ino,
                    it.stripe
                );
            }
            return Ok(Vec::new());
        }
        let shards = match self.pool.read_shards(it.ino, it.stripe, &it.loc) {
            Ok(d) => d,
            Err(e) => {
                log::error!("repair of inode {} stripe {}: {e}", it.ino, it.stripe);
                return Ok(Vec::new());
            }
        };
        // reading may have found more bad shards: include them; a shard
        // flagged earlier that now verifies (its member was briefly away)
        // only loses the flag. A flagged slot is always read again here,
        // whole and with its on-disk header: the stripe read may have
        // checked its payload against a cached header only, and a flip in
        // the header or block table would then pass (the model check
        // found this: a header flip scrub had flagged was left unrepaired).
        let mut slots = self.slots_needing_repair(it.ino, it.stripe, &it.loc);
        slots.retain(|&i| {
            let mi = it.loc.members[i];
            let readable = mi != NO_MEMBER
                && matches!(
                    self.pool.member(mi).health(),
                    Health::Online | Health::Suspect
                );
            if readable {
                let id = self
                    .pool
                    .shard_id_of(it.ino, it.stripe, it.loc.generation, i);
                if self.pool.read_shard(mi, id, &it.loc).is_ok() {
                    self.pool
                        .clear_bad(it.ino, it.stripe, it.loc.generation, i as u8);
                    return false;
                }
            }
            true
        });
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        // only the slots to rebuild are computed, from the shards read
        Ok(self
            .pool
            .rebuild_shards(it.ino, it.stripe, &it.loc, &shards, &slots))
    }

    /// Make a batch of rebuilt copies durable (one sync), then name them:
    /// each stripe's new placement is applied only if its committed
    /// location is still the one repaired (compare and swap under the
    /// filesystem lock), all in one metadata commit. Copies of stripes that
    /// changed meanwhile are deleted. Returns the shards committed per item.
    pub(crate) fn commit_repairs(
        &self,
        batch: Vec<(RepairItem, Vec<Written>)>,
    ) -> FsResult<Vec<usize>> {
        if batch.iter().all(|(_, w)| w.is_empty()) {
            return Ok(vec![0; batch.len()]);
        }
        self.pool.sync_pending();
        let mut counts = Vec::with_capacity(batch.len());
        let mut losers = Vec::new();
        {
            let _g = self.lock();
            for (it, written) in &batch {
                if written.is_empty() {
                    counts.push(0);
                    continue;
                }
                let cur = self.stripe_loc_committed(it.ino, it.stripe)?;
                if cur.as_ref() != Some(&it.loc) {
                    // overwritten or deleted meanwhile: the newer state
                    // wins, and the copies are garbage, except a copy the
                    // committed location names (the same stripe moved
                    // twice in one batch, e.g. a hard-linked file seen in
                    // two buckets, writes the same file name twice: the
                    // model check found that deleting it lost the shard)
                    let named: Vec<Written> = written
                        .iter()
                        .copied()
                        .filter(|&(slot, mi, place)| {
                            !cur.as_ref().is_some_and(|c| {
                                c.generation == it.loc.generation && c.holds(slot, mi, place)
                            })
                        })
                        .collect();
                    losers.push((it.clone(), named));
                    counts.push(0);
                    continue;
                }
                let mut new = it.loc.clone();
                for &(slot, mi, place) in written {
                    new.set_shard(slot, mi, place);
                }
                // every copy replaced leaves the old one behind (a copy
                // rewritten on the same member is a new record too)
                let replaced: Vec<Written> = written
                    .iter()
                    .filter(|&&(slot, mi, place)| !it.loc.holds(slot, mi, place))
                    .map(|&(slot, _, _)| (slot, it.loc.members[slot], it.loc.place(slot)))
                    .collect();
                let cleared: Vec<usize> = written.iter().map(|&(slot, _, _)| slot).collect();
                let pool = self.pool.clone();
                let (ino, stripe, generation) = (it.ino, it.stripe, it.loc.generation);
                let old_loc = it.loc.clone();
                let after: Vec<crate::meta::AfterCommit> = vec![Box::new(move || {
                    for (slot, old, place) in replaced {
                        pool.remove_shard((old, place), ino, stripe, &old_loc, slot as u8);
                    }
                    for slot in cleared {
                        pool.clear_bad(ino, stripe, generation, slot as u8);
                    }
                })];
                self.meta.apply(
                    vec![Op::Put(stripe_key(it.ino, it.stripe), enc(&new))],
                    after,
                )?;
                counts.push(written.len());
            }
        }
        for (it, written) in losers {
            // (a copy rewritten in place belongs to a generation no longer
            // named, so it is garbage too)
            for (slot, mi, place) in written {
                self.pool
                    .remove_shard((mi, place), it.ino, it.stripe, &it.loc, slot as u8);
            }
        }
        self.meta.sync()?;
        Ok(counts)
    }

    fn stripe_loc_committed(&self, ino: u64, s: u64) -> FsResult<Option<StripeLoc>> {
        match self.meta.get(&stripe_key(ino, s))? {
            Some(b) => Ok(Some(dec_loc(&self.pool, &b)?)),
            None => Ok(None),
        }
    }

    /// One repair pass over every stripe that needs it, paced by `task`,
    /// after committing pending metadata. Returns the number of stripes
    /// still needing repair afterwards.
    pub fn repair_pass(&self, task: &Task) -> FsResult<u64> {
        // work on what is committed: what a crash would leave
        self.meta.sync()?;
        let plan = self.repair_plan()?;
        let ss = self.stripe_size();
        let mut pacer = Pacer::start(task, plan.len() as u64, ss);
        let result = self.repair_pipelined(task, &plan, &mut pacer);
        if let Err(e) = result {
            crate::guard::panic::lock_or_recover(&task.progress).running = false;
            return Err(e);
        }
        self.finish_drains()?;
        let remaining = self.repair_plan()?.len() as u64;
        let mut p = crate::guard::panic::lock_or_recover(&task.progress);
        p.running = false;
        p.passes += 1;
        p.eta_secs = None;
        p.last_pass_end = Some(now_secs());
        p.remaining = remaining;
        Ok(remaining)
    }

    /// Rebuild the stripes of `plan` in a bounded pipeline and commit them
    /// in batches. [`REPAIR_WORKERS`] threads each take the next stripe,
    /// read any k of its shards (on the members' own I/O workers),
    /// compute only the shards it lacks and write them (durable but for
    /// their directory entries); while they work on the next stripes,
    /// this thread takes their results and commits every
    /// [`REPAIR_BATCH`] of them with one sync and one metadata commit
    /// ([`Fs::commit_repairs`]: compare and swap, so a stripe changed
    /// meanwhile loses its copies). The pacer is charged as each stripe is
    /// handed out, so the rate limit holds whatever the depth; at most
    /// [`REPAIR_WINDOW`] stripes are handed out and not yet taken back (a
    /// worker holds the shards of one stripe at a time). Cancelling stops
    /// handing out; what was handed out is finished and committed.
    fn repair_pipelined(
        &self,
        task: &Task,
        plan: &[RepairItem],
        pacer: &mut Pacer,
    ) -> FsResult<()> {
        let ss = self.stripe_size();
        let (work_tx, work_rx) = crossbeam::channel::bounded::<usize>(REPAIR_WINDOW);
        let (done_tx, done_rx) = crossbeam::channel::unbounded::<(usize, FsResult<Vec<Written>>)>();
        std::thread::scope(|scope| {
            for w in 0..REPAIR_WORKERS.min(plan.len()) {
                let work_rx = work_rx.clone();
                let done_tx = done_tx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("repair.{w}"))
                    .spawn_scoped(scope, move || {
                        for i in work_rx {
                            // a panic is this stripe's error, not a lost
                            // answer the committer would wait for forever
                            let r = crate::guard::panic::contain("repair worker", || {
                                self.rebuild(&plan[i])
                            })
                            .unwrap_or_else(|msg| {
                                Err(crate::fs::FsError::Invalid(format!(
                                    "repair worker panicked: {msg}"
                                )))
                            });
                            if done_tx.send((i, r)).is_err() {
                                break;
                            }
                        }
                    });
                if let Err(e) = spawned {
                    log::error!("repair: cannot start worker thread: {e}");
                }
            }
            drop(work_rx);
            drop(done_tx);
            let mut next = 0;
            let mut out = 0usize;
            let mut first_err: Option<crate::fs::FsError> = None;
            let mut batch: Vec<(RepairItem, Vec<Written>)> = Vec::new();
            let commit =
                |batch: &mut Vec<(RepairItem, Vec<Written>)>, pacer: &Pacer| -> FsResult<()> {
                    let items = std::mem::take(batch);
                    let planned: Vec<usize> = items.iter().map(|(it, _)| it.slots.len()).collect();
                    let counts = self.commit_repairs(items)?;
                    let mut p = crate::guard::panic::lock_or_recover(&task.progress);
                    for (want, n) in planned.into_iter().zip(counts) {
                        p.stripes_done += 1;
                        p.bytes_done += ss;
                        p.shards += n as u64;
                        if n < want {
                            p.stripes_failed += 1;
                        }
                    }
                    p.rate = pacer.rate();
                    let left = p.bytes_total.saturating_sub(p.bytes_done) as f64;
                    p.eta_secs = (p.rate > 0.0).then(|| left / p.rate);
                    Ok(())
                };
            loop {
                let stop = first_err.is_some() || task.cancel.load(Ordering::Relaxed);
                // hand out stripes while the window has room (the pacer
                // sleeps here when the rate limit says so)
                while !stop && next < plan.len() && out < REPAIR_WINDOW {
                    pacer.account(plan[next].loc.len as u64);
                    if work_tx.send(next).is_err() {
                        break;
                    }
                    next += 1;
                    out += 1;
                }
                if out == 0 {
                    break;
                }
                let Ok((i, r)) = done_rx.recv() else {
                    // every worker is gone (none could start)
                    break;
                };
                out -= 1;
                match r {
                    Ok(written) => batch.push((plan[i].clone(), written)),
                    Err(e) => {
                        log::error!(
                            "repair of inode {} stripe {}: {e}",
                            plan[i].ino,
                            plan[i].stripe
                        );
                        // copies written for it stay unnamed (garbage
                        // the next mount sweeps)
                        self.pool.mark_garbage();
                        first_err.get_or_insert(e);
                    }
                }
                if batch.len() >= REPAIR_BATCH {
                    if let Err(e) = commit(&mut batch, pacer) {
                        first_err.get_or_insert(e);
                    }
                }
            }
            drop(work_tx);
            if first_err.is_none()
                && next < plan.len()
                && out == 0
                && !task.cancel.load(Ordering::Relaxed)
            {
                // no worker could be started: do the work here
                for it in &plan[next..] {
                    pacer.account(it.loc.len as u64);
                    match self.rebuild(it) {
                        Ok(w) => batch.push((it.clone(), w)),
                        Err(e) => {
                            first_err.get_or_insert(e);
                            break;
                        }
                    }
                    if batch.len() >= REPAIR_BATCH {
                        commit(&mut batch, pacer)?;
                    }
                }
            }
            if !batch.is_empty() {
                commit(&mut batch, pacer)?;
            }
            match first_err {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }

    /// A draining member that no committed stripe references any more is
    /// removed (persisted).
    fn finish_drains(&self) -> FsResult<()> {
        let draining: Vec<u16> = self
            .pool
            .members()
            .iter()
            .filter(|m| m.health() == Health::Draining)
            .map(|m| m.index)
            .collect();
        if draining.is_empty() {
            return Ok(());
        }
        let mut used = std::collections::BTreeSet::new();
        self.for_each_stripe(|_, _, loc| {
            for mi in loc.members {
                used.insert(mi);
            }
        })?;
        for mi in draining {
            if !used.contains(&mi) {
                self.set_member_health(mi, Health::Removed)?;
            }
        }
        Ok(())
    }

    /// Set a member's health and persist it (admin states survive a remount).
    pub fn set_member_health(&self, index: u16, h: Health) -> FsResult<()> {
        let m = self
            .pool
            .members()
            .get(index as usize)
            .ok_or_else(|| crate::fs::FsError::Invalid(format!("no member {index}")))?;
        if m.disk().is_none() {
            return Err(crate::fs::FsError::Invalid(format!(
                "member {index} is missing from this mount"
            )));
        }
        m.set_health(h);
        let op = match h {
            Health::Online | Health::Suspect | Health::Missing => Op::Del(health_key(index)),
            _ => Op::Put(health_key(index), enc(&h)),
        };
        self.meta.apply(vec![op], vec![])?;
        self.meta.sync()?;
        Ok(())
    }

    /// Apply the persisted member states (at mount).
    pub(crate) fn load_member_health(&self) -> FsResult<()> {
        for (k, v) in self.meta.range(b"H", b"I", usize::MAX)? {
            if k.len() != 3 {
                continue;
            }
            let index = u16::from_be_bytes([k[1], k[2]]);
            let h: Health = dec("health", &v)?;
            if let Some(m) = self.pool.members().get(index as usize) {
                m.set_health(h);
            }
        }
        Ok(())
    }

    /// One scrub pass, after committing pending metadata: read and verify
    /// every shard of every stripe, and repair the stripes with bad shards
    /// at once.
    pub fn scrub_pass(&self, task: &Task) -> FsResult<()> {
        /// Stripe locations read from the store at a time.
        const SCRUB_BATCH: usize = 1024;
        // verify what is committed: a stripe hidden by an uncommitted
        // truncate or unlink would come back unverified after a crash (the
        // model check found this)
        self.meta.sync()?;
        // streamed: the committed store is read in batches (the pass holds
        // one batch of locations, not every stripe of the pool), first
        // counting the stripes (keys only) for the progress line
        let store = self.meta.store().clone();
        let mut total = 0u64;
        let mut cursor = b"T".to_vec();
        loop {
            let keys = store.range_sizes(&cursor, b"U", SCRUB_BATCH * 4)?;
            let Some(last) = keys.last() else { break };
            cursor = last.0.clone();
            cursor.push(0);
            total += keys.len() as u64;
        }
        let ss = self.stripe_size();
        let mut pacer = Pacer::start(task, total, ss);
        let mut cursor = b"T".to_vec();
        let mut batch = std::collections::VecDeque::new();
        loop {
            if batch.is_empty() {
                let next = store.range(&cursor, b"U", SCRUB_BATCH)?;
                let Some(last) = next.last() else { break };
                cursor = last.0.clone();
                cursor.push(0);
                batch.extend(next);
            }
            let Some((k, v)) = batch.pop_front() else {
                break;
            };
            let (ino, s, loc) = (
                key_u64_at(&k, 1),
                key_u64_at(&k, 9),
                dec_loc(&self.pool, &v)?,
            );
            if task.cancel.load(Ordering::Relaxed) {
                break;
            }
            let checks = self.pool.verify_stripe(ino, s, &loc);
            let mut bad = 0;
            for (i, r) in checks.iter().enumerate() {
                let mi = loc.members[i];
                if let Err(e) = r {
                    if mi != NO_MEMBER && self.pool.member(mi).live_disk().is_some() {
                        let id = self.pool.shard_id_of(ino, s, loc.generation, i);
                        self.pool.shard_failed(mi, &id, &format!("scrub: {e}"));
                        bad += 1;
                    }
                }
            }
            // every copy of every patch is checked too; a bad copy is
            // mended by folding the stripe (rewritten whole from the
            // shards and a good copy, so all its bytes have m+1 sources)
            let bad_patches = self.pool.verify_patches(ino, s, &loc);
            for (p, e) in &bad_patches {
                log::warn!(
                    "scrub: inode {ino} stripe {s}: patch {} copy {} on member {}: {e}",
                    p.seq,
                    p.copy,
                    p.member
                );
            }
            bad += bad_patches.len() as u64;
            let slots = self.slots_needing_repair(ino, s, &loc);
            let mut repaired = 0;
            if !bad_patches.is_empty() && slots.is_empty() {
                match self.fold_stripe(ino, s) {
                    Ok(true) => repaired = bad_patches.len(),
                    Ok(false) => {}
                    Err(e) => log::error!("scrub: fold of inode {ino} stripe {s}: {e}"),
                }
            }
            if !slots.is_empty() {
                repaired = self.repair_stripe(&RepairItem {
                    ino,
                    stripe: s,
                    loc: loc.clone(),
                    slots,
                })?;
            }
            pacer.account(
                loc.len as u64 * (self.pool.k() + self.pool.m()) as u64 / self.pool.k() as u64,
            );
            let mut p = crate::guard::panic::lock_or_recover(&task.progress);
            p.stripes_done += 1;
            p.bytes_done += ss;
            p.shards += bad;
            p.repaired += repaired as u64;
            p.rate = pacer.rate();
            let left = p.bytes_total.saturating_sub(p.bytes_done) as f64;
            p.eta_secs = (p.rate > 0.0).then(|| left / p.rate);
        }
        let mut p = crate::guard::panic::lock_or_recover(&task.progress);
        p.running = false;
        p.passes += 1;
        p.eta_secs = None;
        p.last_pass_end = Some(now_secs());
        Ok(())
    }
}

impl Fs {
    /// Check members that errors made suspect or failed (not those an admin
    /// took out): one whose superblock reads back as this pool's member is
    /// online again. Its shards need no trust: a shard is used only when
    /// committed metadata names its member, generation and index, and it is
    /// verified against its checksums on every read; copies that repair
    /// replaced meanwhile are unreferenced, so never read, and the next
    /// mount's sweep deletes them. Returns the members brought back.
    pub fn probe_members(&self) -> FsResult<Vec<u16>> {
        let admin: std::collections::BTreeSet<u16> = self
            .meta
            .range(b"H", b"I", usize::MAX)?
            .into_iter()
            .filter(|(k, _)| k.len() == 3)
            .map(|(k, _)| u16::from_be_bytes([k[1], k[2]]))
            .collect();
        let mut back = Vec::new();
        for m in self.pool.members() {
            // a member in service whose superblock vanished or names
            // another member (the disk was unmounted or swapped under us)
            // is taken out at once: what it would serve is not ours
            if matches!(
                m.health(),
                Health::Online | Health::Suspect | Health::Draining
            ) && m.disk().is_some()
            {
                match m.read_superblock(self.pool.io_timeout()) {
                    Ok(b) => {
                        let ours = crate::pool::Superblock::decode(&b).is_ok_and(|sb| {
                            sb.pool_id == self.pool.sb.pool_id && sb.member_id == m.id()
                        });
                        if !ours {
                            m.fail_now("its superblock names another pool or member");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        m.fail_now("its superblock is gone (disk unmounted or replaced?)")
                    }
                    Err(e) => m.note_probe_error(&format!("probe: superblock read: {e}")),
                }
            }
            let h = m.health();
            if !matches!(h, Health::Suspect | Health::Failed) || admin.contains(&m.index) {
                continue;
            }
            if m.disk().is_none() {
                continue;
            }
            let ok = m
                .read_superblock(self.pool.io_timeout())
                .ok()
                .and_then(|b| crate::pool::Superblock::decode(&b).ok())
                .is_some_and(|sb| sb.pool_id == self.pool.sb.pool_id && sb.member_id == m.id());
            if ok {
                m.set_health(Health::Online);
                back.push(m.index);
            }
        }
        if !back.is_empty() {
            // copies replaced while the member was away are unreferenced:
            // never read, and deleted by the next mount's sweep. Not here:
            // a sweep against the running mount's metadata would race with
            // writes in flight and uncommitted generations (the model
            // check found exactly that: a committed shard deleted because
            // the cache already named a newer, uncommitted generation).
            self.pool.mark_garbage();
        }
        Ok(back)
    }
}
