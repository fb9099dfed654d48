//! Tiering: hot objects on members of a fast class, cold ones on a
//! capacity class.
//!
//! Every object (inode) has a temperature: a count of reads and writes that
//! halves every [`HALF_LIFE`], and the time of its last access (the inode's
//! access or modification time when this mount has not seen it yet). A
//! policy per bucket, falling back to the pool default, names the hot and
//! the cold member class. An object whose temperature reaches
//! `promote_reads` is hot; one not accessed for `demote_after_secs` is
//! cold; in between an object stays where it is, so objects do not flap.
//!
//! A tier pass walks every bucket with a policy and moves the shards of
//! objects whose members are of the wrong class onto members of the right
//! class (online, holding no shard of the stripe, no doubled failure
//! domain), as many as such members allow. A move is the rebalance move: a
//! verified copy made durable, a compare-and-swap commit of the new
//! location (a concurrent overwrite or delete wins, and the copy is
//! dropped), then the old copy deleted. Reads during a move use the old
//! location until the commit and start over if it changes under them, so
//! a move never fails a read or mixes data, and a crash at any point
//! leaves either location whole. New stripes prefer the pool's hot class.

use super::repair::{MoveBatch, Pacer, Task};
use crate::fs::schema::*;
use crate::fs::{Fs, FsError, FsResult};
use crate::meta::Op;
use crate::pool::{Health, StripeLoc, NO_MEMBER};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An object's access count halves in this time.
pub const HALF_LIFE: Duration = Duration::from_secs(600);

/// Where a bucket's (or the pool's) data lives by temperature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierPolicy {
    /// Member class for hot objects (None: tiering off).
    pub hot_class: Option<String>,
    /// Member class for cold objects.
    pub cold_class: Option<String>,
    /// Decayed accesses that make an object hot.
    pub promote_reads: f64,
    /// Seconds without access that make an object cold.
    pub demote_after_secs: u64,
    /// Give hot objects a whole-file replica on the hot class, served to
    /// read-only opens by FUSE passthrough (see `fs::replica`).
    #[serde(default)]
    pub hot_replica: bool,
}

impl Default for TierPolicy {
    fn default() -> Self {
        TierPolicy {
            hot_class: None,
            cold_class: None,
            promote_reads: 4.0,
            demote_after_secs: 3600,
            hot_replica: false,
        }
    }
}

impl TierPolicy {
    /// True if the policy asks for anything (classes or replicas).
    pub fn active(&self) -> bool {
        self.hot_class.is_some() || self.cold_class.is_some() || self.hot_replica
    }
}

/// A policy record as written before `hot_replica` existed.
#[derive(Deserialize)]
struct TierPolicyV1 {
    hot_class: Option<String>,
    cold_class: Option<String>,
    promote_reads: f64,
    demote_after_secs: u64,
}

/// Decode a stored policy, of either record version.
fn dec_policy(b: &[u8]) -> FsResult<TierPolicy> {
    match bincode::deserialize::<TierPolicy>(b) {
        Ok(p) => Ok(p),
        Err(_) => {
            let v1: TierPolicyV1 = dec("tier policy", b)?;
            Ok(TierPolicy {
                hot_class: v1.hot_class,
                cold_class: v1.cold_class,
                promote_reads: v1.promote_reads,
                demote_after_secs: v1.demote_after_secs,
                hot_replica: false,
            })
        }
    }
}

/// Hot or cold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// On the hot class.
    Hot,
    /// On the cold class.
    Cold,
}

#[derive(Debug, Clone, Copy)]
struct Temp {
    /// Accesses, decayed to the time of the last one.
    score: f64,
    /// When this mount last saw an access (or loaded the entry).
    at: Instant,
    /// Seconds idle before `at` (entries loaded at mount carry their idle
    /// time from the last mount; an `Instant` cannot reach before boot).
    idle_before: f64,
}

impl Temp {
    /// Seconds since the last access.
    fn idle(&self, now: Instant) -> f64 {
        (now - self.at).as_secs_f64() + self.idle_before
    }
}

/// Tier passes save temperatures this often.
const SAVE_TEMPS_EVERY: Duration = Duration::from_secs(600);

/// Temperatures kept across mounts: the hottest this many objects.
pub const SAVED_TEMPS: usize = 100_000;

/// The `S`"temps" record: when it was written (Unix seconds) and, per
/// object, (inode, decayed accesses at its last access, seconds idle).
#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedTemps {
    at_unix: i64,
    temps: Vec<(u64, f64, f64)>,
}

/// Temperatures and tiering counters of a mounted filesystem.
#[derive(Debug, Default)]
pub struct TierState {
    /// Temperatures by inode, in shards so that every read and write (each
    /// touches one) rarely waits for another.
    temps: [Mutex<HashMap<u64, Temp>>; TEMP_SHARDS],
    /// Shards moved since mount, and objects moved.
    pub moved: std::sync::atomic::AtomicU64,
    /// Last pass: objects found hot, cold, and shards still to move.
    pub last: Mutex<TierCounts>,
    /// When temperatures were last saved to the metadata.
    saved_at: Mutex<Option<Instant>>,
}

/// What the last tier pass saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TierCounts {
    /// Objects wanted on the hot class.
    pub hot_objects: u64,
    /// Objects wanted on the cold class.
    pub cold_objects: u64,
    /// Shards on a member of the wrong class that found no room.
    pub pending_shards: u64,
    /// Shards moved in the pass.
    pub moved_shards: u64,
    /// Replicas built in the pass.
    #[serde(default)]
    pub replicas_built: u64,
    /// Replicas dropped in the pass (cold, stale, corrupt or unwanted).
    #[serde(default)]
    pub replicas_dropped: u64,
}

/// `shardctl tier status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TierStatus {
    /// Shard bytes per member class ("" for members without one).
    pub bytes_per_class: std::collections::BTreeMap<String, u64>,
    /// Online members per class.
    pub members_per_class: std::collections::BTreeMap<String, u64>,
    /// The pool default policy.
    pub default_policy: TierPolicy,
    /// Policies set per bucket: (bucket name, policy).
    pub bucket_policies: Vec<(String, TierPolicy)>,
    /// Shards moved since mount.
    pub moved_shards: u64,
    /// The last pass.
    pub last_pass: TierCounts,
    /// Whole-file replicas and passthrough.
    #[serde(default)]
    pub replicas: super::replica::ReplicaCounts,
}

/// Lock shards of the temperature table.
const TEMP_SHARDS: usize = 16;

impl TierState {
    fn shard(&self, ino: u64) -> &Mutex<HashMap<u64, Temp>> {
        &self.temps[(ino % TEMP_SHARDS as u64) as usize]
    }

    /// An access to `ino` (a read or a write).
    pub fn touch(&self, ino: u64) {
        let now = Instant::now();
        let mut t = self.shard(ino).lock().unwrap();
        let e = t.entry(ino).or_insert(Temp {
            score: 0.0,
            at: now,
            idle_before: 0.0,
        });
        e.score = decay_secs(e.score, e.idle(now)) + 1.0;
        e.at = now;
        e.idle_before = 0.0;
    }

    /// (decayed accesses, seconds since the last access) if seen this
    /// mount or saved by an earlier one.
    pub fn temperature(&self, ino: u64) -> Option<(f64, f64)> {
        let now = Instant::now();
        self.shard(ino).lock().unwrap().get(&ino).map(|e| {
            let idle = e.idle(now);
            (decay_secs(e.score, idle), idle)
        })
    }

    /// The hottest `max` temperatures, to keep across mounts.
    fn snapshot(&self, max: usize) -> SavedTemps {
        let now = Instant::now();
        let mut temps: Vec<(u64, f64, f64)> = Vec::new();
        for shard in &self.temps {
            for (ino, e) in shard.lock().unwrap().iter() {
                temps.push((*ino, e.score, e.idle(now)));
            }
        }
        if temps.len() > max {
            temps.sort_by(|a, b| decay_secs(b.1, b.2).total_cmp(&decay_secs(a.1, a.2)));
            temps.truncate(max);
        }
        SavedTemps {
            at_unix: now_unix(),
            temps,
        }
    }

    /// Take back saved temperatures; the time since they were saved counts
    /// as idle. Objects seen by this mount already keep their own.
    fn restore(&self, saved: SavedTemps) {
        let gap = (now_unix() - saved.at_unix).max(0) as f64;
        let now = Instant::now();
        for (ino, score, idle) in saved.temps {
            if !(score.is_finite() && idle.is_finite()) {
                continue;
            }
            self.shard(ino).lock().unwrap().entry(ino).or_insert(Temp {
                score,
                at: now,
                idle_before: idle + gap,
            });
        }
    }

    /// Forget an object (deleted).
    pub fn forget(&self, ino: u64) {
        self.shard(ino).lock().unwrap().remove(&ino);
    }
}

fn decay_secs(score: f64, secs: f64) -> f64 {
    score * 0.5f64.powf(secs / HALF_LIFE.as_secs_f64())
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A bucket's policy and its striped files.
type BucketFiles = (TierPolicy, Vec<(u64, Inode)>);

fn policy_key(bucket: u64) -> Vec<u8> {
    let mut k = b"P".to_vec();
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

impl Fs {
    /// The policy for `bucket` (its own, else the pool default).
    pub fn tier_policy(&self, bucket: u64) -> FsResult<TierPolicy> {
        for key in [policy_key(bucket), policy_key(0)] {
            if let Some(v) = self.meta.get(&key)? {
                return dec_policy(&v);
            }
        }
        Ok(TierPolicy::default())
    }

    /// Set the policy of a bucket (by name) or, with `None`, the pool
    /// default (which also steers where new stripes go). Classes must be
    /// declared by some member.
    pub fn set_tier_policy(&self, bucket: Option<&[u8]>, p: TierPolicy) -> FsResult<()> {
        for c in [&p.hot_class, &p.cold_class].into_iter().flatten() {
            if !self.pool.members().iter().any(|m| m.class() == Some(c)) {
                return Err(FsError::Invalid(format!(
                    "no member has class {c:?}: declare classes with `shardfs mkfs --classes` \
                     or `shardctl disk add --class`"
                )));
            }
        }
        if p.hot_class.is_some() && p.hot_class == p.cold_class {
            return Err(FsError::Invalid(
                "the hot and the cold class must differ".into(),
            ));
        }
        if !(p.promote_reads > 0.0 && p.promote_reads.is_finite()) || p.demote_after_secs == 0 {
            return Err(FsError::Invalid(
                "promote-reads must be positive and demote-after at least 1 second".into(),
            ));
        }
        let key = match bucket {
            None => policy_key(0),
            Some(name) => {
                let a = self.lookup(ROOT_INO, name)?;
                if a.kind != Kind::Dir {
                    return Err(FsError::NotDir);
                }
                policy_key(a.ino)
            }
        };
        self.meta.apply(vec![Op::Put(key, enc(&p))], vec![])?;
        self.meta.sync()?;
        if bucket.is_none() {
            self.pool.set_write_class(p.hot_class.clone());
        }
        Ok(())
    }

    /// Keep the hottest temperatures in the metadata (at unmount, and
    /// every 10 minutes from the tier passes) so that a restart does not
    /// make every object look idle since its inode times.
    pub fn save_temperatures(&self) -> FsResult<()> {
        let saved = self.tier.snapshot(SAVED_TEMPS);
        self.meta
            .apply(vec![Op::Put(counter_key("temps"), enc(&saved))], vec![])?;
        *self.tier.saved_at.lock().unwrap() = Some(Instant::now());
        Ok(())
    }

    /// Take back the temperatures the last mount saved (at mount).
    pub(crate) fn load_temperatures(&self) -> FsResult<()> {
        if let Some(v) = self.meta.get(&counter_key("temps"))? {
            match bincode::deserialize::<SavedTemps>(&v) {
                Ok(saved) => self.tier.restore(saved),
                // temperatures are hints: a bad record costs only them
                Err(e) => log::warn!("saved temperatures unreadable ({e}); starting cold"),
            }
        }
        Ok(())
    }

    /// Load the pool default's hot class into placement (at mount).
    pub(crate) fn load_tier_policy(&self) -> FsResult<()> {
        if let Some(v) = self.meta.get(&policy_key(0))? {
            let p: TierPolicy = dec_policy(&v)?;
            self.pool.set_write_class(p.hot_class);
        }
        Ok(())
    }

    /// Where `ino` should live under `p`: Some(tier) to move it there,
    /// None to leave it.
    fn wanted_tier(&self, ino: u64, inode: &Inode, p: &TierPolicy) -> Option<Tier> {
        let (score, idle) = match self.tier.temperature(ino) {
            Some(t) => t,
            None => {
                // not seen this mount: its times say how long it has rested
                let last = inode.atime.0.max(inode.mtime.0);
                (0.0, (now().0 - last).max(0) as f64)
            }
        };
        if score >= p.promote_reads {
            Some(Tier::Hot)
        } else if idle >= p.demote_after_secs as f64 {
            Some(Tier::Cold)
        } else {
            None
        }
    }

    /// Every bucket with its policy, and the files below it.
    fn tier_walk(&self) -> FsResult<Vec<BucketFiles>> {
        let mut out = Vec::new();
        let buckets = self.list_dir_entries(ROOT_INO)?;
        // an inode is visited once even when hard links put it in several
        // directories or buckets (the first bucket's policy applies)
        let mut seen = std::collections::HashSet::new();
        for (name, bino) in buckets {
            let _ = name;
            let p = self.tier_policy(bino)?;
            if !p.active() {
                continue;
            }
            let mut files = Vec::new();
            let mut stack = vec![bino];
            while let Some(d) = stack.pop() {
                for (_, ino) in self.list_dir_entries(d)? {
                    if !seen.insert(ino) {
                        continue;
                    }
                    let Ok(inode) = self.load_inode(ino) else {
                        continue;
                    };
                    match inode.kind {
                        Kind::Dir => stack.push(ino),
                        Kind::File if inode.striped => files.push((ino, inode)),
                        _ => {}
                    }
                }
            }
            out.push((p, files));
        }
        Ok(out)
    }

    /// (name, inode) of every entry of a directory.
    fn list_dir_entries(&self, dir: u64) -> FsResult<Vec<(Vec<u8>, u64)>> {
        let pre = dirent_prefix(dir);
        self.meta
            .range(&pre, &crate::meta::prefix_end(&pre), usize::MAX)?
            .into_iter()
            .map(|(k, v)| {
                let d: Dirent = dec("dirent", &v)?;
                Ok((k[9..].to_vec(), d.ino))
            })
            .collect()
    }

    /// One tier pass, paced by `task`. `force` puts every object of a
    /// bucket with a policy on that tier (tests; `shardctl tier start
    /// --all-hot|--all-cold`).
    pub fn tier_pass(&self, task: &Task, force: Option<Tier>) -> FsResult<TierCounts> {
        self.meta.sync()?;
        let walk = self.tier_walk()?;
        let total: u64 = walk.iter().map(|(_, f)| f.len() as u64).sum();
        let mut pacer = Pacer::start(task, total, self.stripe_size());
        let mut counts = TierCounts::default();
        let mut batch = MoveBatch::default();
        let mut done = 0u64;
        // replicas of objects this pass does not visit (their bucket lost
        // its policy, or they are no longer named) are dropped at the end
        let mut replicated: std::collections::HashSet<u64> =
            self.replica_inodes()?.into_iter().map(|(i, _)| i).collect();
        for (policy, files) in walk {
            for (ino, inode) in files {
                if task.cancel.load(Ordering::Relaxed) {
                    break;
                }
                done += 1;
                let want = force.or_else(|| self.wanted_tier(ino, &inode, &policy));
                let class = match want {
                    Some(Tier::Hot) => {
                        counts.hot_objects += 1;
                        policy.hot_class.as_deref()
                    }
                    Some(Tier::Cold) => {
                        counts.cold_objects += 1;
                        policy.cold_class.as_deref()
                    }
                    None => None,
                };
                if policy.hot_replica || replicated.contains(&ino) {
                    let want_replica = match want {
                        _ if !policy.hot_replica => Some(false),
                        Some(Tier::Hot) => Some(true),
                        Some(Tier::Cold) => Some(false),
                        None => None,
                    };
                    let hot = policy.hot_class.as_deref();
                    match self.settle_replica(ino, want_replica, hot) {
                        Ok((b, d, checked)) => {
                            // copies and checks are paced like the moves
                            let read = checked + if b { inode.size } else { 0 };
                            if read > 0 {
                                pacer.account(read);
                            }
                            counts.replicas_built += b as u64;
                            counts.replicas_dropped += d as u64;
                        }
                        Err(e) => log::warn!("replica of inode {ino}: {e}"),
                    }
                }
                replicated.remove(&ino);
                let Some(class) = class else { continue };
                for (s, loc) in self.stripes(ino)? {
                    let (writes, stuck) = self.move_to_class(ino, s, &loc, class);
                    counts.pending_shards += stuck;
                    for _ in &writes {
                        pacer.account(self.pool.codec.shard_len(loc.len as usize) as u64);
                    }
                    batch.add(self, ino, s, loc, writes)?;
                }
                let mut p = task.progress.lock().unwrap();
                p.stripes_done = done;
                p.bytes_done = done * self.stripe_size();
                p.shards = batch.moved;
                p.rate = pacer.rate();
            }
        }
        batch.commit(self)?;
        if !task.cancel.load(Ordering::Relaxed) {
            for ino in replicated {
                counts.replicas_dropped += self.drop_replica(ino)? as u64;
            }
        }
        counts.moved_shards = batch.moved;
        let stale = self
            .tier
            .saved_at
            .lock()
            .unwrap()
            .is_none_or(|t| t.elapsed() >= SAVE_TEMPS_EVERY);
        if stale {
            if let Err(e) = self.save_temperatures() {
                log::warn!("temperatures not saved: {e}");
            }
        }
        self.tier
            .moved
            .fetch_add(counts.moved_shards, Ordering::Relaxed);
        *self.tier.last.lock().unwrap() = counts.clone();
        let mut p = task.progress.lock().unwrap();
        p.running = false;
        p.passes += 1;
        p.shards = counts.moved_shards;
        p.remaining = counts.pending_shards;
        p.eta_secs = None;
        p.last_pass_end = Some(super::repair::now_secs());
        Ok(counts)
    }

    /// Copy the shards of a stripe that sit on members of another class
    /// onto members of `class` (not durable, not named: the caller
    /// commits). Returns the copies (slot, member) and the shards that
    /// found no member to go to.
    fn move_to_class(
        &self,
        ino: u64,
        s: u64,
        loc: &StripeLoc,
        class: &str,
    ) -> (Vec<super::repair::Written>, u64) {
        let mut cur = loc.members.clone();
        let mut writes = Vec::new();
        let mut stuck = 0;
        for slot in 0..cur.len() {
            let mi = cur[slot];
            if mi == NO_MEMBER || self.pool.member(mi).class() == Some(class) {
                continue;
            }
            if !matches!(
                self.pool.member(mi).health(),
                Health::Online | Health::Suspect
            ) {
                continue; // repair's job
            }
            let target = self
                .pool
                .members()
                .iter()
                .filter(|m| m.class() == Some(class) && m.health() == Health::Online)
                .filter(|m| !cur.contains(&m.index))
                .filter(|m| crate::pool::placement::domain_ok(&self.pool, &cur, mi, m.index))
                .min_by(|a, b| a.heat.load().total_cmp(&b.heat.load()))
                .map(|m| m.index);
            let Some(to) = target else {
                stuck += 1;
                continue;
            };
            if let Ok(place) = self.pool.copy_shard(ino, s, loc, slot, to) {
                cur[slot] = to;
                writes.push((slot, to, place));
            }
        }
        (writes, stuck)
    }

    /// Bytes per class, policies and counters for `shardctl tier status`.
    pub fn tier_status(&self) -> FsResult<TierStatus> {
        let used = self.shard_bytes_per_member()?;
        let mut st = TierStatus {
            default_policy: match self.meta.get(&policy_key(0))? {
                Some(v) => dec_policy(&v)?,
                None => TierPolicy::default(),
            },
            moved_shards: self.tier.moved.load(Ordering::Relaxed),
            last_pass: self.tier.last.lock().unwrap().clone(),
            replicas: self.replica_counts()?,
            ..TierStatus::default()
        };
        for m in self.pool.members() {
            let c = m.class().unwrap_or_default().to_string();
            *st.bytes_per_class.entry(c.clone()).or_default() +=
                used.get(m.index as usize).copied().unwrap_or(0);
            if m.health() == Health::Online {
                *st.members_per_class.entry(c).or_default() += 1;
            }
        }
        for (name, bino) in self.list_dir_entries(ROOT_INO)? {
            if let Some(v) = self.meta.get(&policy_key(bino))? {
                st.bucket_policies
                    .push((String::from_utf8_lossy(&name).into_owned(), dec_policy(&v)?));
            }
        }
        Ok(st)
    }
}
