//! One memory budget for everything open files buffer: stripe buffers,
//! stripes in flight to the stripe writers, pages of small overwrites,
//! inline contents and the last stripe read for a write. Per-file limits
//! (`MAX_DIRTY_STRIPES`, `MAX_DIRTY_PAGES`) keep one writer's pipeline
//! short; this budget bounds the sum over every open file, so 10,000 open
//! files cannot hold 10,000 files' worth of buffers.
//!
//! Accounting is cheap and conservative: each write adds what it made its
//! file grow to an estimate that never shrinks on its own. When the
//! estimate passes the budget the open files are counted exactly, and if
//! they do hold more than the budget, the writer that crossed it writes
//! out the biggest files (as a close would, without the fsync) until half
//! the budget is left. Writers wait; the daemon does not grow.

use super::{Fs, FsResult, Inner, OpenFile, PAGE};
use std::sync::atomic::Ordering;

/// Default budget: 256 MiB.
pub const DEFAULT_DIRTY_BUDGET: usize = 256 << 20;

impl OpenFile {
    /// Bytes this open file holds in buffers and caches.
    pub(super) fn mem(&self, stripe_size: usize) -> usize {
        (self.dirty.len() + self.inflight.len()) * stripe_size
            + self.page_count * PAGE
            + self.inline.as_ref().map_or(0, |v| v.capacity())
            + self.cache.as_ref().map_or(0, |c| c.2.len())
    }
}

impl Fs {
    /// The budget in force, bytes.
    pub fn dirty_budget(&self) -> usize {
        self.budget.load(Ordering::Relaxed)
    }

    /// Set the budget (at least 4 stripes, so one writer's pipeline fits).
    pub fn set_dirty_budget(&self, bytes: usize) {
        let floor = 4 * self.stripe_size() as usize;
        self.budget.store(bytes.max(floor), Ordering::Relaxed);
    }

    /// Bytes held by every open file now (counted exactly).
    pub fn buffered_bytes(&self) -> usize {
        let g = self.lock();
        let ss = self.stripe_size() as usize;
        g.open.values().map(|of| of.mem(ss)).sum()
    }

    /// After a write that made `ino` hold `before` bytes and now more:
    /// charge the growth, and keep the total within the budget.
    pub(super) fn charge(&self, g: &mut Inner, ino: u64, before: usize) -> FsResult<()> {
        let ss = self.stripe_size() as usize;
        let now = g.open.get(&ino).map_or(0, |of| of.mem(ss));
        g.mem_estimate += now.saturating_sub(before);
        let budget = self.dirty_budget();
        if g.mem_estimate <= budget {
            return Ok(());
        }
        let mut total: usize = g.open.values().map(|of| of.mem(ss)).sum();
        if total > budget {
            let mut by_size: Vec<(usize, u64)> =
                g.open.iter().map(|(&i, of)| (of.mem(ss), i)).collect();
            by_size.sort_unstable_by(|a, b| b.cmp(a));
            for (held, victim) in by_size {
                if total <= budget / 2 {
                    break;
                }
                self.write_out(g, victim)?;
                let left = g.open.get(&victim).map_or(0, |of| of.mem(ss));
                total -= held.saturating_sub(left);
            }
            self.pool
                .stats
                .budget_flushes
                .fetch_add(1, Ordering::Relaxed);
        }
        g.mem_estimate = total;
        Ok(())
    }

    /// Write out everything `ino` buffers (into the metadata cache, as a
    /// close does) and drop what it caches.
    fn write_out(&self, g: &mut Inner, ino: u64) -> FsResult<()> {
        self.flush_file_locked(g, ino)?;
        if let Some(of) = g.open.get_mut(&ino) {
            of.cache = None;
            if !of.inline_dirty {
                of.inline = None;
            }
        }
        Ok(())
    }
}
