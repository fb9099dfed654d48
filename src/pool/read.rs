//! Reading stripes: which shards to read, and when to read more.
//!
//! A read needs either every data shard its byte range touches (no decode)
//! or any k shards (decode). Under the heat-aware policy the cheaper of the
//! two is chosen by expected wait: the slowest member of each set, from
//! its heat (requests in flight times recent latency). Reads are hedged: a
//! shard read still out after its member's recent p95 latency makes the
//! read ask enough other shards to finish without it, and the first set
//! that completes wins (late answers are dropped). The naive policy reads
//! the touched data shards and turns to parity only on an error, as a
//! system without heat would.
//!
//! Every shard read runs on its own thread, so a read never waits on one
//! that is no longer needed. A read still out after the I/O timeout counts
//! as an I/O error of its member (timeouts move members to suspect, then
//! failed), and the read goes on without it.

use super::{shard_path, DiskBackend, Health, Pool, PoolError, StripeLoc, NO_MEMBER};
use crate::ec::{header_len, ShardHeader, ShardId, BLOCK};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How stripe reads choose shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadPolicy {
    /// The k shards on the least-loaded members (parity when that beats
    /// queueing behind a hot data shard), hedged at the member's p95.
    Heat,
    /// Data shards first; parity only after an error; no hedging.
    Naive,
}

impl ReadPolicy {
    /// Parse "heat" or "naive".
    pub fn parse(s: &str) -> Result<ReadPolicy, String> {
        match s {
            "heat" => Ok(ReadPolicy::Heat),
            "naive" => Ok(ReadPolicy::Naive),
            _ => Err(format!("read policy {s:?}: give heat or naive")),
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ReadPolicy::Heat => "heat",
            ReadPolicy::Naive => "naive",
        }
    }
}

/// A hedge never fires sooner than this after a read starts.
const MIN_HEDGE: Duration = Duration::from_millis(1);
/// Hedge budget: each stripe read earns this many hedges, and at most
/// `HEDGE_BURST` are banked. Without a budget, per-shard p95 hedging of a
/// k-shard read fires for about 1 - 0.95^k of reads (19 % at k = 4), and
/// the extra reads (which cannot be cancelled once queued at a disk) load
/// the hot members further: measured, p99 rose 4x (docs/heat.md). With it,
/// hedges add at most about 5 % to the reads, as "The Tail at Scale"
/// recommends.
const HEDGE_RATE: f64 = 0.05;
const HEDGE_BURST: f64 = 20.0;
/// How much slower than the best k an idle target member may look and
/// still be read directly (see `gather`). At 2.0, the service-time
/// averages of idle members (a mix of cold reads and page-cache hits)
/// sent 28 % of 4 KiB QD1 reads to a decode of k shards: four disk reads
/// instead of one, for no gain (bench/randread-io.sh: 3,443 IOPS and 25
/// KiB read from the disk per read; at 8.0, 743 decodes in 109,663 reads
/// and 5,483 IOPS in the same loaded conditions). A member that really is
/// slow is still avoided (tests/heat.rs: 80× slower), and a read that
/// outlasts the member's p95 is hedged.
const IDLE_MARGIN: f64 = 8.0;
/// Longest a small read polls the page cache for bytes whose disk read a
/// probe started (see `Pool::poll_cached_piece`).
const POLL_BUDGET: Duration = Duration::from_millis(1);
/// A member slower than this at p95 (all operations, syncs included) is
/// a disk where a poll of [`POLL_BUDGET`] mostly runs out: not polled.
const POLL_MAX_P95: Duration = Duration::from_millis(10);
/// Most threads polling at once in the pool.
const POLLERS: usize = 2;
/// Expected-wait penalty of a parity shard (decoding costs CPU).
const PARITY_PENALTY: f64 = 1.05;

/// Where shard `slot` of stripe generation `loc` lies on its member:
/// (file, offset of its bytes, in a log?).
pub(super) fn shard_addr(
    object: u64,
    stripe: u64,
    loc: &StripeLoc,
    slot: usize,
) -> (String, u64, bool) {
    let p = loc.place(slot);
    if p.is_file() {
        (
            shard_path(object, stripe, loc.generation, slot as u8),
            0,
            false,
        )
    } else {
        (super::patch::log_path(p.log), p.offset(), true)
    }
}

/// The bytes of a payload region `[from, to)` of one shard, verified.
pub(super) type Piece = Result<(Vec<u8>, Option<Arc<ShardHeader>>), String>;

/// What one shard read needs (moved to its member's worker).
pub(super) struct Job {
    pub(super) disk: Arc<dyn DiskBackend>,
    /// The shard file, or the log holding the shard's record.
    pub(super) rel: String,
    /// Offset of the shard's bytes in `rel` (0 for a shard file).
    pub(super) base: u64,
    /// The shard is a record in a log (not a whole file).
    pub(super) in_log: bool,
    pub(super) id: ShardId,
    pub(super) stripe_len: u32,
    pub(super) payload_len: usize,
    pub(super) from: usize,
    pub(super) to: usize,
    pub(super) header: Option<Arc<ShardHeader>>,
}

impl Job {
    /// Read and verify the region: a whole shard in one read (every block
    /// verified), or the header (cached after the first read) and the
    /// blocks the region covers. Patches are not part of a shard: the
    /// stripe's readers lay them over the decoded data.
    pub(super) fn run(self) -> Piece {
        self.read_base()
    }

    fn read_base(&self) -> Piece {
        let rel = &self.rel;
        let check = |h: &ShardHeader| -> Result<(), String> {
            if h.id != self.id || h.stripe_len != self.stripe_len {
                return Err(format!("{rel}: header names another shard"));
            }
            Ok(())
        };
        if self.from == 0 && self.to == self.payload_len && self.header.is_none() {
            let bytes = if self.in_log {
                let whole = header_len(self.payload_len) + self.payload_len;
                self.disk.read_range(rel, self.base, whole)
            } else {
                self.disk.read_file(rel)
            }
            .map_err(|e| format!("read {rel}: {e}"))?;
            let (h, payload) = ShardHeader::open(&bytes).map_err(|e| format!("{rel}: {e}"))?;
            check(&h)?;
            let payload = payload.to_vec();
            return Ok((payload, Some(Arc::new(h))));
        }
        let hlen = header_len(self.payload_len);
        let (h, fresh) = match &self.header {
            Some(h) => (h.clone(), None),
            None => {
                let hb = self
                    .disk
                    .read_range(rel, self.base, hlen)
                    .map_err(|e| format!("read {rel}: {e}"))?;
                let (h, _) = ShardHeader::open_header(&hb).map_err(|e| format!("{rel}: {e}"))?;
                check(&h)?;
                if h.payload_len as usize != self.payload_len {
                    return Err(format!("{rel}: header names another shard"));
                }
                let h = Arc::new(h);
                (h.clone(), Some(h))
            }
        };
        let first = self.from / BLOCK;
        let data = self
            .disk
            .read_range(
                rel,
                self.base + (hlen + self.from) as u64,
                self.to - self.from,
            )
            .map_err(|e| format!("read {rel}: {e}"))?;
        if data.len() != self.to - self.from {
            return Err(format!("{rel}: short read (truncated shard)"));
        }
        h.verify_blocks(first, &data)
            .map_err(|e| format!("{rel}: {e}"))?;
        Ok((data, fresh))
    }
}

/// A shard read in flight.
struct Pending {
    slot: usize,
    started: Instant,
    hedge_at: Instant,
    /// Already counted as slow (a hedge fired for it).
    slow: bool,
}

impl Pool {
    /// The read policy in force.
    pub fn read_policy(&self) -> ReadPolicy {
        if self.naive_reads.load(Ordering::Relaxed) {
            ReadPolicy::Naive
        } else {
            ReadPolicy::Heat
        }
    }

    /// Change the read policy (takes effect at the next read).
    pub fn set_read_policy(&self, p: ReadPolicy) {
        self.naive_reads
            .store(p == ReadPolicy::Naive, Ordering::Relaxed);
    }

    /// Turn hedged reads on or off (heat policy only; on by default).
    pub fn set_hedging(&self, on: bool) {
        self.hedging.store(on, Ordering::Relaxed);
    }

    /// Fill the hedge budget to its burst (tests: a hedge then does not
    /// depend on how many earlier reads happened to be slow).
    #[doc(hidden)]
    pub fn fill_hedge_budget(&self) {
        *self.hedge_tokens.lock().unwrap() = HEDGE_BURST;
    }

    /// Reads still out after this long count as I/O errors.
    pub fn io_timeout(&self) -> Duration {
        Duration::from_millis(self.io_timeout_ms.load(Ordering::Relaxed))
    }

    /// Set the I/O timeout.
    pub fn set_io_timeout(&self, d: Duration) {
        self.io_timeout_ms
            .store(d.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// Expected wait at the member of `slot`, with the parity penalty.
    pub(super) fn score(&self, loc: &StripeLoc, slot: usize) -> f64 {
        let l = self.slots[loc.members[slot] as usize].heat.load();
        if slot >= self.k() {
            l * PARITY_PENALTY
        } else {
            l
        }
    }

    /// Read region `[from, to)` (block-aligned payload offsets) of the
    /// shards of a stripe until either every slot in `targets` or any k
    /// slots have verified pieces. Returns the pieces by slot.
    fn gather(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
        from: usize,
        to: usize,
        targets: &[usize],
    ) -> (Vec<Option<Vec<u8>>>, bool) {
        let k = self.k();
        let n = loc.members.len();
        let payload_len = self.codec.shard_len(loc.len as usize);
        let policy = self.read_policy();
        let live: Vec<usize> = (0..n)
            .filter(|&i| loc.members[i] != NO_MEMBER)
            .filter(|&i| self.slots[loc.members[i] as usize].live_disk().is_some())
            .collect();
        // a shard wanted that is missing, or a read that failed: parity is
        // then used by need, not by choice (status tells them apart)
        let mut trouble = targets.iter().any(|t| !live.contains(t));
        // target blocks all in the page cache: read here, whatever the heat
        // (a page-cache hit loads no disk, and a decode would read k)
        // (the hits are kept when some target misses, and no slot is
        // probed twice)
        let mut early: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut probed = vec![false; n];
        if !trouble && !targets.is_empty() {
            for &t in targets {
                probed[t] = true;
                match self.read_cached_piece(object, stripe, loc, t, from, to) {
                    Some(b) => early[t] = Some(b),
                    None if targets.len() == 1 => {
                        // a small read: wait a little for the bytes the
                        // probe sent for
                        early[t] = self.poll_cached_piece(object, stripe, loc, t, from, to);
                        break;
                    }
                    None => break,
                }
            }
            if targets.iter().all(|&t| early[t].is_some()) {
                return (early, false);
            }
        }
        // the first set to ask, and the order of the rest
        let (mut order, first): (Vec<usize>, Vec<usize>) = match policy {
            ReadPolicy::Naive => {
                let mut o: Vec<usize> = live.clone();
                o.sort_by_key(|&i| (!targets.contains(&i), i >= k, i));
                let first = o.iter().copied().filter(|i| targets.contains(i)).collect();
                (o, first)
            }
            ReadPolicy::Heat => {
                let scores: Vec<(f64, usize)> =
                    live.iter().map(|&i| (self.score(loc, i), i)).collect();
                let mut o = scores.clone();
                o.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let cost = |set: &[usize]| {
                    set.iter()
                        .map(|i| {
                            scores
                                .iter()
                                .find(|s| s.1 == *i)
                                .map(|s| s.0)
                                .unwrap_or(f64::INFINITY)
                        })
                        .fold(0.0f64, f64::max)
                };
                let best_k: Vec<usize> = o.iter().take(k).map(|s| s.1).collect();
                let all_targets_live = targets.iter().all(|t| live.contains(t));
                // idle target members are read unless clearly slower: a
                // decode waits for the slowest of k and loads k-1 more
                // disks, and service-time noise between equal idle disks
                // alone sent a third of 4 KiB reads through one (measured)
                let idle = all_targets_live
                    && targets
                        .iter()
                        .all(|&t| self.slots[loc.members[t] as usize].heat.idle());
                let margin = if idle { IDLE_MARGIN } else { 1.0 };
                let first = if all_targets_live && cost(targets) <= margin * cost(&best_k) {
                    targets.to_vec()
                } else {
                    best_k
                };
                (o.into_iter().map(|s| s.1).collect(), first)
            }
        };
        order.retain(|i| !first.contains(i) && early[*i].is_none());
        let first: Vec<usize> = first.into_iter().filter(|&i| early[i].is_none()).collect();
        if policy == ReadPolicy::Heat {
            let mut t = self.hedge_tokens.lock().unwrap();
            *t = (*t + HEDGE_RATE).min(HEDGE_BURST);
        }
        let mut pieces = early;
        let (tx, rx) = crossbeam::channel::unbounded::<(usize, Piece)>();
        let mut pending: Vec<Pending> = Vec::new();
        let launch = |slot: usize, pending: &mut Vec<Pending>| {
            let mi = loc.members[slot];
            let m = &self.slots[mi as usize];
            let Some(disk) = m.live_disk().cloned() else {
                let _ = tx.send((slot, Err("member offline".into())));
                return;
            };
            let id = self.shard_id(object, stripe, loc.generation, slot);
            let header = self.headers.lock().unwrap().get(&(mi, id)).cloned();
            self.stats.shards_read.fetch_add(1, Ordering::Relaxed);
            let (rel, base, in_log) = shard_addr(object, stripe, loc, slot);
            let job = Job {
                disk,
                rel,
                base,
                in_log,
                id,
                stripe_len: loc.len,
                payload_len,
                from,
                to,
                header,
            };
            let tx = tx.clone();
            let now = Instant::now();
            let hedge_at = match policy {
                ReadPolicy::Heat if self.hedging.load(Ordering::Relaxed) => {
                    now + m.heat.p95().max(MIN_HEDGE)
                }
                _ => now + self.io_timeout(),
            };
            pending.push(Pending {
                slot,
                started: now,
                hedge_at,
                slow: false,
            });
            // blocks already in the page cache are read on this thread
            // (see fdcache.rs; not again for a slot the first pass
            // probed); anything else goes to the worker
            if let Some(data) = job.header.as_ref().filter(|_| !probed[slot]).and_then(|h| {
                self.cached_blocks(&*job.disk, (&job.rel, job.base), h, payload_len, from, to)
            }) {
                let _ = tx.send((slot, Ok((data, None))));
                return;
            }
            // on the member's own workers; a member whose queue is full
            // (hung) answers at once with an error
            let tx2 = tx.clone();
            if let Err(e) = m.submit(move |_| {
                let _ = tx2.send((slot, job.run()));
                Ok(())
            }) {
                let _ = tx.send((slot, Err(format!("read: {e}"))));
            }
        };
        for &slot in &first {
            launch(slot, &mut pending);
        }
        let done = |pieces: &[Option<Vec<u8>>]| {
            pieces.iter().filter(|p| p.is_some()).count() >= k
                || (!targets.is_empty() && targets.iter().all(|&t| pieces[t].is_some()))
        };
        // ask enough other shards that k can arrive without the slow and
        // failed ones
        let top_up =
            |pieces: &[Option<Vec<u8>>], pending: &mut Vec<Pending>, order: &mut Vec<usize>| {
                let have = pieces.iter().filter(|p| p.is_some()).count()
                    + pending.iter().filter(|p| !p.slow).count();
                for _ in have..k {
                    if order.is_empty() {
                        break;
                    }
                    let slot = order.remove(0);
                    launch(slot, pending);
                }
            };
        let timeout = self.io_timeout();
        while !done(&pieces) {
            if pending.is_empty() {
                if order.is_empty() {
                    break;
                }
                top_up(&pieces, &mut pending, &mut order);
                continue;
            }
            let now = Instant::now();
            let next_hedge = pending.iter().filter(|p| !p.slow).map(|p| p.hedge_at).min();
            let next_timeout = pending
                .iter()
                .map(|p| p.started + timeout)
                .min()
                .expect("pending");
            let wake = next_hedge.map_or(next_timeout, |h| h.min(next_timeout));
            match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok((slot, res)) => {
                    let Some(at) = pending.iter().position(|p| p.slot == slot) else {
                        continue; // timed out earlier: too late
                    };
                    pending.remove(at);
                    let mi = loc.members[slot];
                    match res {
                        Ok((bytes, header)) => {
                            self.slots[mi as usize].note_ok();
                            if let Some(h) = header {
                                let id = self.shard_id(object, stripe, loc.generation, slot);
                                let mut cache = self.headers.lock().unwrap();
                                if cache.len() >= super::HEADER_CACHE_ENTRIES {
                                    cache.clear();
                                }
                                cache.insert((mi, id), h);
                            }
                            pieces[slot] = Some(bytes);
                        }
                        Err(e) => {
                            trouble = true;
                            let id = self.shard_id(object, stripe, loc.generation, slot);
                            self.shard_failed(mi, &id, &e);
                            top_up(&pieces, &mut pending, &mut order);
                        }
                    }
                }
                Err(_) => {
                    let now = Instant::now();
                    // reads out past the I/O timeout: errors of their member
                    let mut i = 0;
                    while i < pending.len() {
                        if now >= pending[i].started + timeout {
                            let p = pending.remove(i);
                            trouble = true;
                            let mi = loc.members[p.slot];
                            let id = self.shard_id(object, stripe, loc.generation, p.slot);
                            self.shard_failed(
                                mi,
                                &id,
                                &format!("read timed out after {} ms", timeout.as_millis()),
                            );
                        } else {
                            i += 1;
                        }
                    }
                    // hedge: reads slower than their member's p95, while
                    // the budget lasts (else wait for them)
                    let mut hedged = false;
                    for p in pending.iter_mut() {
                        if !p.slow && now >= p.hedge_at {
                            let mut t = self.hedge_tokens.lock().unwrap();
                            if *t >= 1.0 {
                                *t -= 1.0;
                                p.slow = true;
                                hedged = true;
                            } else {
                                // no budget: this one is waited for
                                p.hedge_at = p.started + timeout;
                            }
                        }
                    }
                    if hedged {
                        self.stats.hedges.fetch_add(1, Ordering::Relaxed);
                    }
                    top_up(&pieces, &mut pending, &mut order);
                }
            }
        }
        (pieces, trouble)
    }

    /// [`Pool::read_cached_piece`] for the one shard a small read needs,
    /// waiting a little for a miss: `None` when the wait is not taken or
    /// runs out (the caller then asks the member's workers).
    ///
    /// A miss of the first probe has already started the disk read of
    /// exactly those pages (RWF_NOWAIT starts readahead, and shard files
    /// have readahead off; `disk.rs`), so the bytes usually arrive within
    /// one disk latency. Polling for them on this thread saves the two
    /// thread wake-ups of a worker hand-off, which cost as much as the
    /// disk read on a loaded machine (bench/randread-io.sh).
    ///
    /// The wait never blocks: every poll is a RWF_NOWAIT read of a file
    /// already open, so a member that hangs costs at most [`POLL_BUDGET`]
    /// before the read goes to its workers, where it is timed out and
    /// counted. It is taken only on an online, unemulated member whose
    /// p95 is at most [`POLL_MAX_P95`], by at most [`POLLERS`] threads at
    /// once (the CPU it spends is bounded).
    fn poll_cached_piece(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
        slot: usize,
        from: usize,
        to: usize,
    ) -> Option<Vec<u8>> {
        let m = self.slots.get(loc.members[slot] as usize)?;
        if m.health() != Health::Online || m.emulated.get().is_some() || m.heat.p95() > POLL_MAX_P95
        {
            return None;
        }
        if self.pollers.fetch_add(1, Ordering::AcqRel) >= POLLERS {
            self.pollers.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let until = Instant::now() + POLL_BUDGET;
        let mut got = None;
        while Instant::now() < until {
            // a few hundred nanoseconds per poll; yield between them so
            // the other core's work (and the disk's interrupt) goes on
            std::thread::yield_now();
            if let Some(b) = self.read_cached_piece(object, stripe, loc, slot, from, to) {
                got = Some(b);
                break;
            }
        }
        self.pollers.fetch_sub(1, Ordering::AcqRel);
        if got.is_some() {
            self.stats.polled_reads.fetch_add(1, Ordering::Relaxed);
        }
        got
    }

    /// Payload bytes `from..to` of shard `slot` of a stripe, if its header
    /// is known and its blocks are in the page cache now (never waits for
    /// the device); verified.
    fn read_cached_piece(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
        slot: usize,
        from: usize,
        to: usize,
    ) -> Option<Vec<u8>> {
        let mi = loc.members[slot];
        let m = self.slots.get(mi as usize)?;
        let disk = m.live_disk()?.clone();
        let id = self.shard_id(object, stripe, loc.generation, slot);
        let header = self.headers.lock().unwrap().get(&(mi, id)).cloned()?;
        let payload_len = self.codec.shard_len(loc.len as usize);
        let (rel, base, _) = shard_addr(object, stripe, loc, slot);
        let data = self.cached_blocks(&*disk, (&rel, base), &header, payload_len, from, to)?;
        self.stats.shards_read.fetch_add(1, Ordering::Relaxed);
        Some(data)
    }

    /// The verified payload blocks `from..to` of `rel` from the page cache
    /// (see `fdcache`), or `None` (not cached, or not verifying: the
    /// worker's read then finds and reports what is wrong).
    fn cached_blocks(
        &self,
        disk: &dyn DiskBackend,
        (rel, base): (&str, u64),
        h: &ShardHeader,
        payload_len: usize,
        from: usize,
        to: usize,
    ) -> Option<Vec<u8>> {
        if h.payload_len as usize != payload_len {
            return None;
        }
        let at = base + (header_len(payload_len) + from) as u64;
        let data = disk.read_cached(rel, at, to - from)?;
        h.verify_blocks(from / BLOCK, &data).ok()?;
        self.stats.cached_reads.fetch_add(1, Ordering::Relaxed);
        Some(data)
    }

    /// Count a decode that used parity: by need (a shard missing or bad)
    /// or by choice (data shards skipped as busy or slow).
    fn count_parity_read(&self, trouble: bool) {
        if trouble {
            self.stats.reconstructions.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.parity_by_choice.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Read a stripe's `loc.len` bytes, verifying every shard used and
    /// decoding from parity when data shards are missing, bad, slow or on
    /// hot members.
    pub fn read_stripe(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
    ) -> Result<Vec<u8>, PoolError> {
        let k = self.k();
        let shards = self.read_shards(object, stripe, loc)?;
        let good = shards.iter().filter(|s| s.is_some()).count();
        let mut data =
            self.codec
                .decode(shards, loc.len as usize)
                .map_err(|_| PoolError::Unreadable {
                    object,
                    stripe,
                    have: good,
                    need: k,
                })?;
        self.overlay(object, stripe, loc, 0, &mut data)?;
        Ok(data)
    }

    /// The verified whole shards of a stripe as a read of it finds them:
    /// the data shards, or any k when some are missing, bad, slow or on
    /// hot members (members out of service as a last resort). `shards[i]`
    /// is shard i's payload or `None` (not read, or not readable); at
    /// least k are present. Patches are not applied (they lie over the
    /// decoded data, not in shards).
    pub fn read_shards(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
    ) -> Result<Vec<Option<Vec<u8>>>, PoolError> {
        let k = self.k();
        let payload_len = self.codec.shard_len(loc.len as usize);
        let targets: Vec<usize> = (0..k).collect();
        let (mut shards, mut trouble) = self.gather(object, stripe, loc, 0, payload_len, &targets);
        let mut good = shards.iter().filter(|s| s.is_some()).count();
        if good < k {
            trouble = true;
            good = self.read_out_of_service(object, stripe, loc, &mut shards, good);
        }
        if good < k {
            log::error!("object {object} stripe {stripe}: only {good} of {k} shards readable");
            return Err(PoolError::Unreadable {
                object,
                stripe,
                have: good,
                need: k,
            });
        }
        if shards[..k].iter().any(|s| s.is_none()) {
            self.count_parity_read(trouble);
            log::debug!("object {object} stripe {stripe}: decoded with parity");
        }
        Ok(shards)
    }

    /// Last resort before EIO: members taken out of service (failed,
    /// draining, removed) may still hold verifiable copies; a failing
    /// member never fails a read while k good shards exist. Returns the
    /// number of good shards now.
    fn read_out_of_service(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
        shards: &mut [Option<Vec<u8>>],
        mut good: usize,
    ) -> usize {
        let k = self.k();
        for (i, slot) in shards.iter_mut().enumerate() {
            if good >= k {
                break;
            }
            let mi = loc.members[i];
            if slot.is_some() || mi == NO_MEMBER {
                continue;
            }
            let m = &self.slots[mi as usize];
            let Some(d) = m.disk() else { continue };
            if m.live_disk().is_some() {
                continue; // already tried
            }
            let _ = d;
            let id = self.shard_id(object, stripe, loc.generation, i);
            let ok = self.read_whole_shard(mi, id, loc).ok();
            if let Some(p) = ok {
                log::warn!(
                    "object {object} stripe {stripe}: shard {i} read from member {mi} ({}) \
                     although it is {}",
                    m.path(),
                    m.health().name()
                );
                *slot = Some(p);
                good += 1;
            }
        }
        good
    }

    /// Read bytes `start..end` of a stripe's data (within `loc.len`),
    /// verifying only the blocks read: from the data shards the range
    /// touches, or (hot, slow or bad members) decoded from the same blocks
    /// of any k shards. Any problem falls back to a full stripe read.
    pub fn read_stripe_range(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
        start: usize,
        end: usize,
    ) -> Result<Vec<u8>, PoolError> {
        let end = end.min(loc.len as usize);
        let start = start.min(end);
        if start == end {
            return Ok(Vec::new());
        }
        let len = self.codec.shard_len(loc.len as usize);
        // the data shards the range touches: (shard, from, to)
        let mut segs = Vec::new();
        let mut pos = start;
        while pos < end {
            let i = pos / len;
            let a = pos % len;
            let b = len.min(a + (end - pos));
            segs.push((i, a, b));
            pos += b - a;
        }
        // one block-aligned region of shard offsets covering every segment
        let from = segs.iter().map(|s| s.1).min().expect("segments") / BLOCK * BLOCK;
        let to = (segs
            .iter()
            .map(|s| s.2)
            .max()
            .expect("segments")
            .div_ceil(BLOCK)
            * BLOCK)
            .min(len);
        let targets: Vec<usize> = segs.iter().map(|s| s.0).collect();
        let (mut pieces, trouble) = self.gather(object, stripe, loc, from, to, &targets);
        if !targets.iter().all(|&t| pieces[t].is_some()) {
            if pieces.iter().filter(|p| p.is_some()).count() >= self.k() {
                // decode the region's data pieces from any k
                if self.codec.reconstruct(&mut pieces).is_err() {
                    let full = self.read_stripe(object, stripe, loc)?;
                    return Ok(full[start..end].to_vec());
                }
                self.count_parity_read(trouble);
            } else {
                let full = self.read_stripe(object, stripe, loc)?;
                return Ok(full[start..end].to_vec());
            }
        }
        let mut out = Vec::with_capacity(end - start);
        for (i, a, b) in segs {
            let p = pieces[i].as_ref().expect("present or reconstructed");
            out.extend_from_slice(&p[a - from..b - from]);
        }
        self.overlay(object, stripe, loc, start, &mut out)?;
        Ok(out)
    }

    /// Read all of shard `id` (of stripe `loc`) from member `mi` (readable
    /// or not: the caller chooses), on the member's workers within the I/O
    /// deadline, verified (the base shard: patches lie over the decoded
    /// data, not in shards).
    fn read_whole_shard(&self, mi: u16, id: ShardId, loc: &StripeLoc) -> Result<Vec<u8>, String> {
        let m = self
            .members()
            .get(mi as usize)
            .ok_or_else(|| format!("no member {mi}"))?;
        let disk = m.disk().ok_or("member not present")?.clone();
        self.stats.shards_read.fetch_add(1, Ordering::Relaxed);
        let payload_len = self.codec.shard_len(loc.len as usize);
        let (rel, base, in_log) = shard_addr(id.object, id.stripe, loc, id.index as usize);
        let job = Job {
            disk,
            rel,
            base,
            in_log,
            id,
            stripe_len: loc.len,
            payload_len,
            from: 0,
            to: payload_len,
            header: None,
        };
        let r = m
            .submit(move |_| Ok(job.run()))
            .and_then(|t| t.wait_until(Instant::now() + self.io_timeout()));
        match r {
            Ok(Ok((payload, _))) => Ok(payload),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// Read one shard from a readable member and verify it is exactly the
    /// shard expected (as written: patches are not in shards).
    pub fn read_shard(&self, mi: u16, id: ShardId, loc: &StripeLoc) -> Result<Vec<u8>, String> {
        let m = self
            .members()
            .get(mi as usize)
            .ok_or_else(|| format!("no member {mi}"))?;
        if m.live_disk().is_none() {
            return Err("member offline".into());
        }
        let p = self.read_whole_shard(mi, id, loc)?;
        m.note_ok();
        Ok(p)
    }
}
