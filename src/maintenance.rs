//! The daemon's maintenance thread: member probes, repair and scrub.
//!
//! Every few seconds (or at once when asked through the control socket) it
//! probes members that errors made suspect or failed, and runs repair
//! passes while stripes need them. A scrub pass runs when asked, and every
//! `scrub_interval` (default a week).

use crate::fs::{Fs, Task};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Repair and scrub state shared by the thread and the control socket.
#[derive(Debug, Default)]
pub struct Maintenance {
    /// Repair progress and rate limit.
    pub repair: Task,
    /// Scrub progress and rate limit.
    pub scrub: Task,
    /// Rebalance progress and rate limit.
    pub rebalance: Task,
    stop: AtomicBool,
}

impl Maintenance {
    /// Ask the thread to end after its current step.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.repair.cancel.store(true, Ordering::SeqCst);
        self.scrub.cancel.store(true, Ordering::SeqCst);
        self.rebalance.cancel.store(true, Ordering::SeqCst);
        self.repair.request();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Start the maintenance thread.
pub fn spawn(
    fs: Arc<Fs>,
    m: Arc<Maintenance>,
    tick: Duration,
    scrub_interval: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("maintenance".into())
        .spawn(move || {
            let mut last_scrub = Instant::now();
            // the first look covers stripes left degraded by the last mount
            let mut first = true;
            let mut last_health = Vec::new();
            let mut ticks = 0u64;
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
            }
        })
        .expect("spawn maintenance thread")
}

/// Run a rebalance pass if one was asked for (after `disk add`, or by
/// `shardctl rebalance start`). Repair goes first: a rebalance starts only
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
}

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
