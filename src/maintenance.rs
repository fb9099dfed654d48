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
    stop: AtomicBool,
}

impl Maintenance {
    /// Ask the thread to end after its current step.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
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
            while !m.stopped() {
                m.repair.wait(tick);
                if m.stopped() {
                    break;
                }
                if let Err(e) = fs.probe_members() {
                    log::warn!("member probe: {e}");
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
                let scrub_due = last_scrub.elapsed() >= scrub_interval;
                if m.scrub.requested.swap(false, Ordering::SeqCst) || scrub_due {
                    last_scrub = Instant::now();
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
            }
        })
        .expect("spawn maintenance thread")
}
