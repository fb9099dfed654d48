//! One member disk of the pool: identity, health and its I/O workers.

use super::io::{IoFail, Workers};
use super::{heat, DiskBackend};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Health of a member. Reads use online, suspect and draining members;
/// new shards (writes, repair) go to online members only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Serving reads and writes.
    Online,
    /// Errors seen recently: still read, no new shards.
    Suspect,
    /// Taken out (too many errors, or `shardctl disk fail`): neither read
    /// nor written; repair rebuilds its shards elsewhere.
    Failed,
    /// Being emptied (`shardctl disk drain`): read, no new shards; repair
    /// moves its shards off, then it is removed.
    Draining,
    /// Emptied by a drain: holds no referenced shard.
    Removed,
    /// Not given at mount.
    Missing,
}

impl Health {
    pub(super) fn from_u8(v: u8) -> Health {
        match v {
            0 => Health::Online,
            1 => Health::Suspect,
            2 => Health::Failed,
            3 => Health::Draining,
            4 => Health::Removed,
            _ => Health::Missing,
        }
    }

    /// Lower-case name, as shown by `shardctl status`.
    pub fn name(self) -> &'static str {
        match self {
            Health::Online => "online",
            Health::Suspect => "suspect",
            Health::Failed => "failed",
            Health::Draining => "draining",
            Health::Removed => "removed",
            Health::Missing => "missing",
        }
    }

    /// True if shards on a member in this state can be read.
    pub fn readable(self) -> bool {
        matches!(self, Health::Online | Health::Suspect | Health::Draining)
    }
}

/// Consecutive I/O errors that make an online member suspect.
pub const SUSPECT_AFTER: u64 = 3;
/// Consecutive I/O errors that make a member failed.
pub const FAIL_AFTER: u64 = 24;
/// Health changes a member remembers.
pub const HISTORY: usize = 16;
/// Consecutive successes that make a suspect member online again.
pub const CLEAR_AFTER: u64 = 256;

/// Most members a pool can have (slots are preallocated so that members
/// can join a running pool without moving the others).
pub const MAX_MEMBERS: usize = 512;

/// One member disk of the pool, or an unused slot (no id yet).
#[derive(Debug)]
pub struct Member {
    /// Index in the superblock's member list.
    pub index: u16,
    /// Member id from the superblock (set once; unset: unused slot).
    pub(super) id: OnceLock<String>,
    /// Path given at mount (or at `disk add`).
    pub(super) path: OnceLock<String>,
    /// The disk, if it was present at mount (or added since).
    pub(super) disk: OnceLock<Arc<dyn DiskBackend>>,
    /// Declared failure domain, if any.
    domain: OnceLock<String>,
    /// Load on the member, measured by the [`heat::Metered`] wrapper every
    /// disk call passes through.
    pub heat: Arc<heat::Heat>,
    /// HDD emulation limits, when the member is emulated.
    pub emulated: OnceLock<heat::Limits>,
    /// The member's I/O workers (started with its disk).
    io: OnceLock<Workers>,
    /// Device class ("ssd", "hdd", ...), if declared.
    class: OnceLock<String>,
    /// [`Health`] as a number (see [`Member::health`]).
    pub(super) state: std::sync::atomic::AtomicU8,
    /// I/O errors seen on this member.
    pub errors: AtomicU64,
    /// Errors since the last success, and successes since the last error.
    pub(super) streak_errors: AtomicU64,
    pub(super) streak_ok: AtomicU64,
    /// The last health changes (from, to), oldest first, at most
    /// [`HISTORY`]: a transition is visible after the fact even when the
    /// state moved on before anyone looked.
    history: std::sync::Mutex<std::collections::VecDeque<(Health, Health)>>,
    pub(super) free: AtomicU64,
    pub(super) total: AtomicU64,
    /// The host filesystem the disk is on (st_dev of its root), read when
    /// the disk is attached: members on one filesystem share its space.
    fs_dev: OnceLock<Option<u64>>,
}

impl Member {
    /// A member with the given index and id; online when `disk` is given.
    pub fn new(index: u16, id: String, path: String, disk: Option<Arc<dyn DiskBackend>>) -> Self {
        let m = Member::slot(index);
        m.id.set(id).expect("fresh slot");
        m.path.set(path).expect("fresh slot");
        if let Some(d) = disk {
            m.attach_disk(d);
            m.state.store(Health::Online as u8, Ordering::Relaxed);
        }
        m
    }

    /// Set the slot's disk, measured into the member's heat.
    pub(super) fn attach_disk(&self, d: Arc<dyn DiskBackend>) {
        let _ = self.fs_dev.set(d.fs_id());
        let metered: Arc<dyn DiskBackend> = Arc::new(heat::Metered::new(d, self.heat.clone()));
        self.disk.set(metered).expect("fresh slot");
        let _ = self.io.set(Workers::start(self.index));
    }

    /// Queue `f` on the member's I/O workers with its disk (whatever its
    /// health: callers choose which members to use).
    pub fn submit<T, F>(&self, f: F) -> Result<super::io::Ticket<T>, IoFail>
    where
        T: Send + 'static,
        F: FnOnce(&dyn DiskBackend) -> std::io::Result<T> + Send + 'static,
    {
        let (Some(d), Some(io)) = (self.disk.get(), self.io.get()) else {
            return Err(IoFail::Io(std::io::Error::other("member not present")));
        };
        let d = d.clone();
        io.submit(move || f(d.as_ref()))
    }

    /// Run `f` on the member's workers, waiting at most `timeout`. A
    /// failure other than ENOSPC or a missing file counts as an error of
    /// the member (timeouts and a full queue included); a success counts
    /// towards clearing suspicion.
    pub fn call<T, F>(&self, timeout: Duration, what: &str, f: F) -> Result<T, IoFail>
    where
        T: Send + 'static,
        F: FnOnce(&dyn DiskBackend) -> std::io::Result<T> + Send + 'static,
    {
        let r = self
            .submit(f)
            .and_then(|t| t.wait_until(std::time::Instant::now() + timeout));
        self.account(&r, what);
        r
    }

    /// [`Member::call`] without counting the outcome (the caller judges it).
    pub fn call_quiet<T, F>(&self, timeout: Duration, f: F) -> Result<T, IoFail>
    where
        T: Send + 'static,
        F: FnOnce(&dyn DiskBackend) -> std::io::Result<T> + Send + 'static,
    {
        self.submit(f)
            .and_then(|t| t.wait_until(std::time::Instant::now() + timeout))
    }

    /// Read the member's superblock file on its workers, within `timeout`
    /// (the health probe: a hung member answers with a timeout).
    pub fn read_superblock(&self, timeout: Duration) -> std::io::Result<Vec<u8>> {
        self.call_quiet(timeout, |d| d.read_file(super::SUPERBLOCK_FILE))
            .map_err(|e| match e {
                IoFail::Io(e) => e,
                other => std::io::Error::new(std::io::ErrorKind::TimedOut, other.to_string()),
            })
    }

    /// Count the outcome of a call against the member's health.
    pub fn account<T>(&self, r: &Result<T, IoFail>, what: &str) {
        match r {
            Ok(_) => self.note_ok(),
            Err(e) if e.is_full() || e.is_not_found() => {}
            Err(e) => self.note_error(&format!("{what}: {e}")),
        }
    }

    /// An unused slot.
    pub(super) fn slot(index: u16) -> Self {
        Member {
            index,
            id: OnceLock::new(),
            path: OnceLock::new(),
            disk: OnceLock::new(),
            domain: OnceLock::new(),
            heat: Arc::default(),
            emulated: OnceLock::new(),
            io: OnceLock::new(),
            class: OnceLock::new(),
            state: std::sync::atomic::AtomicU8::new(Health::Missing as u8),
            errors: AtomicU64::new(0),
            streak_errors: AtomicU64::new(0),
            streak_ok: AtomicU64::new(0),
            history: std::sync::Mutex::new(std::collections::VecDeque::new()),
            free: AtomicU64::new(0),
            total: AtomicU64::new(0),
            fs_dev: OnceLock::new(),
        }
    }

    /// Member id ("" for an unused slot).
    pub fn id(&self) -> &str {
        self.id.get().map(String::as_str).unwrap_or("")
    }

    /// Path given at mount or `disk add`, or "(missing)".
    pub fn path(&self) -> &str {
        self.path.get().map(String::as_str).unwrap_or("(missing)")
    }

    /// Declared failure domain, if any.
    pub fn domain(&self) -> Option<&str> {
        self.domain.get().map(String::as_str)
    }

    /// Set the declared failure domain (once, at pool open or `disk add`).
    pub fn set_domain(&self, d: String) {
        let _ = self.domain.set(d);
    }

    /// Declared device class, if any.
    pub fn class(&self) -> Option<&str> {
        self.class.get().map(String::as_str)
    }

    /// Set the device class (once, at pool open or `disk add`).
    pub fn set_class(&self, c: String) {
        let _ = self.class.set(c);
    }

    /// The disk, whatever the member's health (None: not present).
    pub fn disk(&self) -> Option<&Arc<dyn DiskBackend>> {
        self.disk.get()
    }

    /// The disk if shards on the member can be read (online, suspect, draining).
    pub fn live_disk(&self) -> Option<&Arc<dyn DiskBackend>> {
        if self.health().readable() {
            self.disk.get()
        } else {
            None
        }
    }

    /// The disk if new shards may go to the member (online only).
    pub fn writable_disk(&self) -> Option<&Arc<dyn DiskBackend>> {
        if self.health() == Health::Online {
            self.disk.get()
        } else {
            None
        }
    }

    /// Current health.
    pub fn health(&self) -> Health {
        Health::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Set the health (admin commands, persisted states at mount). A
    /// member without a disk stays missing.
    pub fn set_health(&self, h: Health) {
        if self.disk.get().is_none() {
            return;
        }
        let old = self.health();
        if old != h {
            log::warn!(
                "member {} ({}): {} -> {}",
                self.index,
                self.path(),
                old.name(),
                h.name()
            );
            self.state.store(h as u8, Ordering::Relaxed);
            self.streak_errors.store(0, Ordering::Relaxed);
            self.streak_ok.store(0, Ordering::Relaxed);
        }
    }

    /// Move from `from` to `to` only if the member is in `from`.
    pub(super) fn transition(&self, from: Health, to: Health, why: &str) -> bool {
        let ok = self
            .state
            .compare_exchange(from as u8, to as u8, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if ok {
            let mut h = crate::guard::panic::lock_or_recover(&self.history);
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back((from, to));
            drop(h);
            log::warn!(
                "member {} ({}): {} -> {}: {why}",
                self.index,
                self.path(),
                from.name(),
                to.name()
            );
        }
        ok
    }

    /// The last health changes (from, to), oldest first.
    pub fn health_history(&self) -> Vec<(Health, Health)> {
        crate::guard::panic::lock_or_recover(&self.history)
            .iter()
            .copied()
            .collect()
    }

    /// Take the member out now (its superblock is missing or foreign).
    pub fn fail_now(&self, why: &str) {
        for from in [Health::Online, Health::Suspect, Health::Draining] {
            if self.transition(from, Health::Failed, why) {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A successful I/O: a long enough run clears suspicion.
    pub(super) fn note_ok(&self) {
        self.streak_errors.store(0, Ordering::Relaxed);
        let n = self.streak_ok.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= CLEAR_AFTER && self.health() == Health::Suspect {
            self.transition(Health::Suspect, Health::Online, "errors stopped");
        }
    }

    /// The device of the member's host filesystem, if known.
    pub fn fs_dev(&self) -> Option<u64> {
        self.fs_dev.get().copied().flatten()
    }

    /// (total, free) bytes of the member's filesystem at the last refresh.
    pub fn capacity(&self) -> (u64, u64) {
        (
            self.total.load(Ordering::Relaxed),
            self.free.load(Ordering::Relaxed),
        )
    }

    /// An I/O error of the health probe (the superblock read failed):
    /// counted like any other, so a dead member that reads route around
    /// (heat-aware reads prefer the others) still fails out in time.
    pub fn note_probe_error(&self, what: &str) {
        self.note_error(what)
    }

    /// An I/O error (or a shard that failed verification): counted; runs
    /// of errors make the member suspect, then failed.
    pub(super) fn note_error(&self, what: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.streak_ok.store(0, Ordering::Relaxed);
        log::warn!("member {} ({}): {}", self.index, self.path(), what);
        let n = self.streak_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= FAIL_AFTER {
            for from in [Health::Online, Health::Suspect] {
                self.transition(
                    from,
                    Health::Failed,
                    "too many consecutive errors; repair rebuilds its shards elsewhere",
                );
            }
        } else if n >= SUSPECT_AFTER {
            self.transition(Health::Online, Health::Suspect, "consecutive errors");
        }
    }
}
