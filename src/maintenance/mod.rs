//! Background work, kept out of `fs/` (which is POSIX semantics only):
//! repair and scrub ([`repair`]), rebalance and drain ([`rebalance`]),
//! tiering ([`tier`]), whole-file replicas ([`replica`]) and folding
//! patches back into their stripes ([`fold`]) are `impl Fs` blocks that
//! reach the filesystem's state through its crate-visible internals, and
//! this module's thread runs them.
//!
//! The daemon's maintenance thread: member probes, repair and scrub.
//!
//! Every few seconds (or at once when asked through the control socket) it
//! probes members that errors made suspect or failed, and runs repair
//! passes while stripes need them. A scrub pass runs when asked, and every
//! `scrub_interval` (default a week).

pub mod fold;
pub mod rebalance;
pub mod repair;
pub mod replica;
pub mod tier;

use crate::fs::{Fs, Task};
use crate::meta::{MetaStore, ReplicatedStore, WalStore};
use crate::pool::Health;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Repair and scrub state shared by the thread and the control socket.
#[derive(Debug)]
pub struct Maintenance {
    /// Repair progress and rate limit.
    pub repair: Task,
    /// Scrub progress and rate limit.
    pub scrub: Task,
    /// Rebalance progress and rate limit.
    pub rebalance: Task,
    /// Tiering progress and rate limit.
    pub tier: Task,
    /// The tier to force every object onto in the next requested pass.
    pub tier_force: std::sync::Mutex<Option<crate::fs::Tier>>,
    /// Seconds between tier passes (when a policy is set).
    pub tier_interval_secs: std::sync::atomic::AtomicU64,
    /// The metadata replicas, when they are LMDB stores in member
    /// directories (the daemon): kept at their count on members in service.
    pub replicas: std::sync::OnceLock<Arc<ReplicatedStore>>,
    /// Seconds between namespace catalog writes (when the metadata
    /// changed); 0 disables them.
    pub catalog_interval_secs: std::sync::atomic::AtomicU64,
    /// What the supervisor saw: restarts after a panic, the last message.
    pub supervision: std::sync::Mutex<Supervision>,
    stop: AtomicBool,
}

/// The maintenance worker's panics, as its supervisor counts them (shown
/// by `shardctl status`).
#[derive(Debug, Default, Clone)]
pub struct Supervision {
    /// Times the worker panicked and was restarted.
    pub restarts: u64,
    /// The last panic's message.
    pub last_panic: Option<String>,
}

/// First wait before a panicked worker is restarted; doubled per panic in
/// a row up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait before a restart.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            repair: Task::default(),
            scrub: Task::default(),
            rebalance: Task::default(),
            tier: Task::default(),
            tier_force: Default::default(),
            tier_interval_secs: std::sync::atomic::AtomicU64::new(60),
            replicas: Default::default(),
            catalog_interval_secs: std::sync::atomic::AtomicU64::new(600),
            supervision: Default::default(),
            stop: AtomicBool::new(false),
        }
    }
}

impl Maintenance {
    /// Ask the thread to end after its current step.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.repair.cancel.store(true, Ordering::SeqCst);
        self.scrub.cancel.store(true, Ordering::SeqCst);
        self.rebalance.cancel.store(true, Ordering::SeqCst);
        self.tier.cancel.store(true, Ordering::SeqCst);
        self.repair.request();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Patched stripes not patched for this long are folded.
pub const FOLD_IDLE: Duration = Duration::from_secs(30);
/// Most stripes folded per maintenance tick.
const FOLD_PER_TICK: usize = 64;

/// Start the maintenance thread, supervised: a panic in the worker is
/// logged loudly, counted in [`Maintenance::supervision`] and the worker
/// restarted (from a fresh first look) after a backoff of 1 s, doubling up
/// to 60 s while it keeps panicking within a minute of its start.
pub fn spawn(
    fs: Arc<Fs>,
    m: Arc<Maintenance>,
    tick: Duration,
    scrub_interval: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("maintenance".into())
        .spawn(move || {
            let mut backoff = BACKOFF_MIN;
            while !m.stopped() {
                let started = Instant::now();
                let r = crate::guard::panic::contain("maintenance worker", || {
                    run(fs.clone(), m.clone(), tick, scrub_interval)
                });
                let Err(msg) = r else { break };
                // a running task's pass ended with the panic
                for t in [&m.repair, &m.scrub, &m.rebalance, &m.tier] {
                    crate::guard::panic::lock_or_recover(&t.progress).running = false;
                }
                let restarts = {
                    let mut s = crate::guard::panic::lock_or_recover(&m.supervision);
                    s.restarts += 1;
                    s.last_panic = Some(msg.clone());
                    s.restarts
                };
                if started.elapsed() > BACKOFF_MAX {
                    backoff = BACKOFF_MIN;
                }
                log::error!(
                    "MAINTENANCE WORKER PANICKED ({restarts} restarts so far): {msg}; \
                     repair, scrub, rebalance and tiering restart in {backoff:?}"
                );
                let until = Instant::now() + backoff;
                while !m.stopped() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(100));
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        })
        .expect("spawn maintenance thread")
}

/// The maintenance worker: runs until [`Maintenance::stop`].
fn run(fs: Arc<Fs>, m: Arc<Maintenance>, tick: Duration, scrub_interval: Duration) {
    let mut last_scrub = Instant::now();
    // the first look covers stripes left degraded by the last mount
    let mut first = true;
    let mut last_health = Vec::new();
    let mut ticks = 0u64;
    let mut catalog = (Instant::now(), 0u64);
    let mut last_tier = Instant::now();
    while !m.stopped() {
        ticks += 1;
        m.repair.wait(tick);
        if m.stopped() {
            break;
        }
        let requested = m.repair.requested.swap(false, Ordering::SeqCst);
        if let Err(e) = fs.probe_members() {
            log::warn!("member probe: {e}");
        }
        if let Some(r) = m.replicas.get() {
            if let Err(e) = heal_metadata(&fs, r) {
                log::error!("metadata replicas: {e}");
            }
        }
        maybe_write_catalog(&fs, &m, &mut catalog);
        // patched stripes left alone for a while are rewritten
        // whole, so patch logs empty out and are deleted
        fs.fold_idle(FOLD_IDLE, FOLD_PER_TICK);
        // the stripe table is scanned only when something may need
        // repair: a request, a change of member health, a shard
        // known bad, a stripe written degraded, or work left over
        // (work left that could not be done is retried every 12 ticks)
        let left = m.repair.snapshot().remaining > 0 && ticks.is_multiple_of(12);
        let health: Vec<_> = fs.pool.members().iter().map(|x| x.health()).collect();
        let changed = health != last_health;
        last_health = health;
        let degraded = fs.pool.take_degraded_writes();
        let look = std::mem::take(&mut first)
            || requested
            || left
            || changed
            || degraded
            || fs.pool.bad_count() > 0;
        if !look {
            maybe_scrub(&fs, &m, &mut last_scrub, scrub_interval);
            maybe_rebalance(&fs, &m);
            maybe_tier(&fs, &m, &mut last_tier);
            continue;
        }
        // repair until nothing is left or a pass makes no progress
        let mut before = u64::MAX;
        loop {
            let need = match fs.repair_plan() {
                Ok(p) => p.len() as u64,
                Err(e) => {
                    log::error!("repair plan: {e}");
                    break;
                }
            };
            if need == 0 || need >= before || m.stopped() {
                break;
            }
            before = need;
            log::info!("repair: {need} stripes need work");
            match fs.repair_pass(&m.repair) {
                Ok(left) => log::info!("repair pass done: {left} stripes left"),
                Err(e) => {
                    log::error!("repair pass: {e}");
                    break;
                }
            }
        }
        maybe_scrub(&fs, &m, &mut last_scrub, scrub_interval);
        maybe_rebalance(&fs, &m);
        maybe_tier(&fs, &m, &mut last_tier);
    }
}

/// Keep the metadata replica count: a replica on a member that failed, is
/// draining, was removed or is missing, or whose store failed, is replaced
/// by a fresh copy on an online member that holds none (preferring a
/// failure domain no other replica uses). Order, for crash safety: the
/// copy is made durable and joins the commit set, then every superblock
/// records the new set (higher epoch), then the old replica is dropped.
/// Returns the moves made: (from, to).
pub fn heal_metadata(fs: &Fs, replicas: &ReplicatedStore) -> Result<Vec<(u16, u16)>, String> {
    let pool = &fs.pool;
    let mut listed = pool.meta_replicas();
    let healthy = replicas.healthy_members();
    let in_service = |mi: u16| matches!(pool.member(mi).health(), Health::Online | Health::Suspect);
    let gone: Vec<u16> = listed
        .iter()
        .copied()
        .filter(|&mi| !(healthy.contains(&mi) && in_service(mi)))
        .collect();
    let mut moves = Vec::new();
    for old in gone {
        let keep: Vec<u16> = listed.iter().copied().filter(|&x| x != old).collect();
        let used_domains: Vec<&str> = keep
            .iter()
            .filter_map(|&x| pool.member(x).domain())
            .collect();
        let Some(target) = pool
            .members()
            .iter()
            .filter(|t| t.health() == Health::Online && !listed.contains(&t.index))
            .filter(|t| t.disk().and_then(|d| d.local_root()).is_some())
            .min_by_key(|t| {
                (
                    t.domain().is_some_and(|d| used_domains.contains(&d)),
                    t.index,
                )
            })
        else {
            log::warn!(
                "metadata replica on member {old} is lost and no online member can take a new one"
            );
            break;
        };
        let root = target
            .disk()
            .and_then(|d| d.local_root())
            .expect("filtered")
            .to_path_buf();
        let dir = root.join(crate::daemon::META_DIR);
        log::warn!(
            "metadata replica on member {old} ({}) is out of service: copying the metadata to member {} ({})",
            pool.member(old).health().name(),
            target.index,
            target.path()
        );
        replicas
            .add_replica(target.path().to_string(), target.index, &dir, |d| {
                Ok(Arc::new(WalStore::open(d)?) as Arc<dyn MetaStore>)
            })
            .map_err(|e| format!("copying the metadata to member {}: {e}", target.index))?;
        let new: Vec<u16> = listed
            .iter()
            .map(|&x| if x == old { target.index } else { x })
            .collect();
        pool.set_meta_replicas(new.clone());
        replicas.drop_replica(old);
        listed = new;
        moves.push((old, target.index));
    }
    Ok(moves)
}

/// Write the namespace catalog when the interval has passed and the
/// metadata changed since the last one.
fn maybe_write_catalog(fs: &Fs, m: &Maintenance, last: &mut (Instant, u64)) {
    let every = m.catalog_interval_secs.load(Ordering::Relaxed);
    if every == 0 || last.0.elapsed() < Duration::from_secs(every) {
        return;
    }
    let seq = fs.meta.store().sequence().unwrap_or(0);
    if seq == last.1 {
        return;
    }
    match fs.write_catalog() {
        Ok((n, bytes)) => {
            log::info!("namespace catalog written to {n} members ({bytes} bytes)");
            *last = (Instant::now(), seq);
        }
        Err(e) => {
            log::warn!("namespace catalog not written: {e}");
            last.0 = Instant::now();
        }
    }
}

/// Run a tier pass when asked, or every `tier_interval_secs` (0: never)
/// while some bucket (or the pool) has a tier policy.
fn maybe_tier(fs: &Fs, m: &Maintenance, last: &mut Instant) {
    if m.stopped() {
        return;
    }
    let asked = m.tier.requested.swap(false, Ordering::SeqCst);
    let every = m.tier_interval_secs.load(Ordering::Relaxed);
    let due = every > 0
        && last.elapsed() >= Duration::from_secs(every)
        && fs
            .meta
            .range(b"P", b"Q", 1)
            .map(|r| !r.is_empty())
            .unwrap_or(false);
    if !(asked || due) {
        return;
    }
    *last = Instant::now();
    let force = if asked {
        m.tier_force.lock().unwrap().take()
    } else {
        None
    };
    match fs.tier_pass(&m.tier, force) {
        Ok(c) => {
            if c.moved_shards > 0 || asked {
                log::info!(
                    "tier pass: {} objects hot, {} cold, {} shards moved, {} waiting for room",
                    c.hot_objects,
                    c.cold_objects,
                    c.moved_shards,
                    c.pending_shards
                )
            }
        }
        Err(e) => log::error!("tier pass: {e}"),
    }
}

/// Run a rebalance pass if one was asked for (after `disk add`, or by
/// `shardctl rebalance start`): shard bytes by capacity, then a heat
/// rebalance of the stripes of objects accessed this mount. Repair goes first: a rebalance starts only
/// when no stripe needs repair.
fn maybe_rebalance(fs: &Fs, m: &Maintenance) {
    if m.stopped() || !m.rebalance.requested.load(Ordering::SeqCst) {
        return;
    }
    if fs.repair_plan().map(|p| !p.is_empty()).unwrap_or(true) {
        return; // retried on a later tick
    }
    m.rebalance.requested.store(false, Ordering::SeqCst);
    log::info!("rebalance pass started");
    match fs.rebalance_pass(&m.rebalance) {
        Ok(n) => log::info!(
            "rebalance pass done: {n} shards moved, spread (max/mean) now {:?}",
            fs.imbalance().ok().flatten()
        ),
        Err(e) => log::error!("rebalance pass: {e}"),
    }
    // then spread the hot stripes (objects read or written this mount)
    match fs.heat_rebalance_pass(&m.rebalance, HEAT_MOVES_PER_PASS) {
        Ok(n) => log::info!("heat rebalance done: {n} shards of hot stripes moved"),
        Err(e) => log::error!("heat rebalance: {e}"),
    }
}

/// Most shards one heat rebalance moves.
const HEAT_MOVES_PER_PASS: u64 = 1000;

/// Run a scrub pass if one was asked for or is due.
fn maybe_scrub(fs: &Fs, m: &Maintenance, last_scrub: &mut Instant, interval: Duration) {
    let due = last_scrub.elapsed() >= interval;
    if !(m.scrub.requested.swap(false, Ordering::SeqCst) || due) || m.stopped() {
        return;
    }
    *last_scrub = Instant::now();
    log::info!("scrub pass started");
    match fs.scrub_pass(&m.scrub) {
        Ok(()) => {
            let p = m.scrub.snapshot();
            log::info!(
                "scrub pass done: {} stripes, {} bad shards, {} repaired",
                p.stripes_done,
                p.shards,
                p.repaired
            );
        }
        Err(e) => log::error!("scrub pass: {e}"),
    }
}
