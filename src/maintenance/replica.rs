//! Whole-file replicas of hot objects, read by the kernel through FUSE
//! passthrough.
//!
//! A bucket whose tier policy sets `hot_replica` gives each hot object (up
//! to [`REPLICA_MAX_BYTES`]) a plain copy of its bytes in one file on a
//! member of the hot class, beside its erasure-coded stripes. A read-only
//! open of such an object is answered with that file as the FUSE
//! passthrough backing file: the kernel then reads it directly, at the
//! backing disk's speed, without a round trip through this daemon.
//!
//! Invariants (review `docs/durability/0006-replicas-passthrough.md`):
//!
//! 1. The stripes stay authoritative. A replica is a derived copy: losing,
//!    rotting or dropping it never loses data, it only sends reads back to
//!    the stripes.
//! 2. A replica is named by its `R` record only after its file is durable
//!    (written, fsynced, renamed, directory fsynced), and only if the data
//!    it was copied from is still the committed data at that moment (the
//!    record carries the data version; see 3). A file that no record names
//!    is garbage, swept at every mount.
//! 3. A replica serves an open only when its record's data version equals
//!    the version of the committed stripe map and size, and the object has
//!    no writer and no buffered data. Every path that changes a file's
//!    bytes changes a stripe generation or its size, so a stale replica is
//!    never served, whichever path changed the data.
//! 4. Passthrough reads bypass the per-block checksums, so a replica's
//!    BLAKE3 is checked against its record at build, by every tier pass
//!    once it is older than half the verify interval if it was served
//!    since, and at an open when the last check is older than the verify
//!    interval (600 s by default).
//!    A mismatch drops the replica; the open is served from the stripes.
//! 5. An object's opens are all passthrough opens of one file or all
//!    ordinary ones, as the kernel requires: a read-only open while
//!    ordinary opens exist is served ordinarily.
//! 6. While any passthrough open of an object is live, the object is
//!    read-only: a writable open, a write or a truncate fails with ETXTBSY
//!    (the kernel requires every open of an inode in passthrough mode to
//!    be a passthrough open of the same backing file, and a passthrough
//!    writer would bypass the stripes).

use crate::fs::schema::*;
use crate::fs::{Fs, FsError, FsResult, Inner};
use crate::meta::Op;
use crate::pool::Health;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;

use crate::guard::beneath::{self, MemberFile};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Largest object given a replica.
pub const REPLICA_MAX_BYTES: u64 = 1 << 30;
/// Directory of replica files on a member.
pub const REPLICA_DIR: &str = "replicas";
/// Default seconds a verified replica may serve opens before it is
/// checked again.
pub const DEFAULT_VERIFY_SECS: u64 = 600;
/// Bytes copied per read when a replica is built.
const COPY_CHUNK: u32 = 1 << 20;

/// The `R` record of a replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaRec {
    /// Member holding the file.
    pub member: u16,
    /// File name under [`REPLICA_DIR`]: `<ino hex>-<nonce hex>`.
    pub name: String,
    /// Bytes (the object's size when copied).
    pub size: u64,
    /// Data version the copy was made from (see [`Fs::data_version`]).
    pub version: [u8; 32],
    /// BLAKE3 of the file's content.
    pub hash: [u8; 32],
}

/// Replica and passthrough state of a mounted filesystem.
#[derive(Debug)]
pub struct ReplicaState {
    /// Serve replicas through passthrough. Off until the FUSE session
    /// grants the capability (and with `--passthrough off`).
    pub passthrough: AtomicBool,
    /// Seconds a verified replica may serve opens unchecked (0: check at
    /// every open).
    pub verify_secs: AtomicU64,
    /// When each replica's content was last checked.
    verified: Mutex<HashMap<u64, Instant>>,
    /// Replicas served by passthrough since their last check: the ones a
    /// tier pass re-checks (the others are checked at their next open), so
    /// checking costs reads in proportion to what is being read, not to
    /// every replica the pool holds.
    used: Mutex<std::collections::HashSet<u64>>,
    /// Replicas built since mount.
    pub built: AtomicU64,
    /// Replicas dropped since mount (stale, cold, or corrupt).
    pub dropped: AtomicU64,
    /// Replicas found corrupt since mount.
    pub corrupt: AtomicU64,
    /// Opens served by passthrough since mount.
    pub passthrough_opens: AtomicU64,
}

impl Default for ReplicaState {
    fn default() -> Self {
        ReplicaState {
            passthrough: AtomicBool::new(false),
            verify_secs: AtomicU64::new(DEFAULT_VERIFY_SECS),
            verified: Mutex::new(HashMap::new()),
            used: Mutex::new(std::collections::HashSet::new()),
            built: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            passthrough_opens: AtomicU64::new(0),
        }
    }
}

impl ReplicaState {
    /// Seconds since the replica of `ino` was last verified, if ever.
    fn verified_age(&self, ino: u64) -> Option<f64> {
        self.verified
            .lock()
            .unwrap()
            .get(&ino)
            .map(|t| t.elapsed().as_secs_f64())
    }

    fn mark_verified(&self, ino: u64) {
        self.verified.lock().unwrap().insert(ino, Instant::now());
        self.used.lock().unwrap().remove(&ino);
    }

    fn mark_used(&self, ino: u64) {
        self.used.lock().unwrap().insert(ino);
    }

    fn in_use(&self, ino: u64) -> bool {
        self.used.lock().unwrap().contains(&ino)
    }

    fn forget(&self, ino: u64) {
        self.verified.lock().unwrap().remove(&ino);
        self.used.lock().unwrap().remove(&ino);
    }

    fn fresh(&self, ino: u64, within: f64) -> bool {
        self.verified_age(ino).is_some_and(|a| a < within)
    }
}

/// Why a replica is not used for an open.
#[derive(Debug, PartialEq)]
enum Usable {
    /// No record, or the object is being written.
    No,
    /// The record no longer matches the data (or its member is gone).
    Stale,
    /// Usable: the record and its file on the member.
    Yes(ReplicaRec, MemberFile),
}

/// Replicas and their bytes, for `shardctl tier status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplicaCounts {
    /// Replica records.
    pub replicas: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Whether opens are served by passthrough.
    pub passthrough: bool,
    /// Opens served by passthrough since mount.
    pub passthrough_opens: u64,
    /// Replicas built, dropped and found corrupt since mount.
    pub built: u64,
    /// see `built`
    pub dropped: u64,
    /// see `built`
    pub corrupt: u64,
}

fn io_err(what: &str, e: std::io::Error) -> String {
    format!("{what}: {e}")
}

impl Fs {
    /// The data version of `ino` at `size`: a hash of its committed stripe
    /// map (index, generation, length of every stripe) and the size. Every
    /// write, truncate or rewrite of a stripe gives it a new generation;
    /// moves of shards between members keep it.
    pub(crate) fn data_version(&self, ino: u64, size: u64) -> FsResult<[u8; 32]> {
        let mut h = blake3::Hasher::new();
        h.update(&size.to_le_bytes());
        for (s, loc) in self.stripes(ino)? {
            h.update(&s.to_le_bytes());
            // the version changes with every patch, the generation not
            h.update(&loc.version().to_le_bytes());
            h.update(&loc.len.to_le_bytes());
        }
        Ok(*h.finalize().as_bytes())
    }

    /// The replica record of `ino`, if any.
    pub fn replica(&self, ino: u64) -> FsResult<Option<ReplicaRec>> {
        match self.meta.get(&replica_key(ino))? {
            Some(v) => Ok(Some(dec("replica", &v)?)),
            None => Ok(None),
        }
    }

    /// A replica's file, if its member is readable and local and the
    /// record's name is one the daemon makes (a damaged or forged record
    /// never names another file).
    pub fn replica_path(&self, rec: &ReplicaRec) -> Option<MemberFile> {
        if !is_replica_name(&rec.name) {
            log::warn!(
                "replica record with a bad file name {:?}: ignored",
                rec.name
            );
            return None;
        }
        let m = self.pool.members().get(rec.member as usize)?;
        let root = m.live_disk()?.local_root()?;
        Some(MemberFile::new(root, format!("{REPLICA_DIR}/{}", rec.name)))
    }

    /// True when `ino` has a writer, buffered data or writes in flight.
    fn being_written(g: &Inner, ino: u64) -> bool {
        g.open.get(&ino).is_some_and(|of| {
            of.writers > 0 || !of.dirty.is_empty() || !of.inflight.is_empty() || of.inline_dirty
        })
    }

    fn replica_usable(&self, g: &Inner, ino: u64) -> FsResult<Usable> {
        if Self::being_written(g, ino) {
            return Ok(Usable::No);
        }
        let Some(rec) = self.replica(ino)? else {
            return Ok(Usable::No);
        };
        let inode = self.inode(g, ino)?;
        if inode.kind != Kind::File
            || !inode.striped
            || inode.size != rec.size
            || self.data_version(ino, inode.size)? != rec.version
        {
            return Ok(Usable::Stale);
        }
        match self.replica_path(&rec) {
            Some(p) => Ok(Usable::Yes(rec, p)),
            None => Ok(Usable::Stale),
        }
    }

    /// Open `ino`; a read-only open of an object with a usable, verified
    /// replica (and passthrough on) also returns the replica's file, which
    /// the FUSE glue hands to the kernel as the passthrough backing file.
    /// The handle then counts as a passthrough open until released.
    pub fn open_ex(&self, ino: u64, writable: bool) -> FsResult<(u64, Option<Arc<File>>)> {
        if writable || !self.replicas.passthrough.load(Ordering::Relaxed) {
            return Ok((self.open(ino, writable)?, None));
        }
        let within = self.replicas.verify_secs.load(Ordering::Relaxed) as f64;
        // the record this call verified and the descriptor it hashed (the
        // one handed to the kernel); false once a check failed
        let mut checked: Option<(ReplicaRec, File)> = None;
        let mut use_replica = true;
        // Every decision is taken and acted on under one hold of the lock,
        // so that no other open can change the inode's mode in between.
        loop {
            let mut g = self.lock();
            // the inode is in passthrough mode: every open must be a
            // passthrough open of the same file (its data cannot change
            // meanwhile: writers are refused)
            if let Some(of) = g.open.get(&ino).filter(|of| of.pt_refs > 0) {
                if of.pt_bad {
                    return Err(FsError::Corrupt(format!(
                        "inode {ino}: the replica its open readers use failed its checksum; \
                         new opens fail until they close"
                    )));
                }
                let (f, name) = of
                    .pt_file
                    .clone()
                    .expect("passthrough file while pt_refs > 0");
                let fh = self.grant_passthrough(&mut g, ino, f, name)?;
                return Ok((fh, of_file(&g, ino)));
            }
            let ordinary = |g: &mut Inner| -> FsResult<(u64, Option<Arc<File>>)> {
                Ok((self.open_locked(g, ino, false)?, None))
            };
            // the kernel refuses a passthrough open while the inode has
            // ordinary (cached) opens: this one is served ordinarily too
            if !use_replica || g.open.get(&ino).is_some_and(|of| of.refs > 0) {
                return ordinary(&mut g);
            }
            let (rec, path) = match self.replica_usable(&g, ino)? {
                Usable::Yes(rec, path) => (rec, path),
                Usable::No | Usable::Stale => return ordinary(&mut g),
            };
            let verified = match checked.take() {
                Some((r, f)) if r == rec => Some(Ok(f)),
                Some(_) => {
                    // replaced while this open checked the old one: no second check
                    return ordinary(&mut g);
                }
                None if self.replicas.fresh(ino, within) => Some(path.open_read()),
                None => None,
            };
            if let Some(opened) = verified {
                return match opened {
                    Ok(f) => {
                        let fh = self.grant_passthrough(&mut g, ino, Arc::new(f), rec.name)?;
                        Ok((fh, of_file(&g, ino)))
                    }
                    Err(e) => {
                        log::warn!("replica of inode {ino} at {path}: {e}");
                        ordinary(&mut g)
                    }
                };
            }
            drop(g);
            // check the content outside the lock, then decide again (a
            // replica replaced meanwhile has another record: no match)
            match self.verify_replica_file(ino, &rec, &path) {
                Some(f) => checked = Some((rec, f)),
                None => use_replica = false,
            }
        }
    }

    /// Open a read-only handle served by passthrough from `file`.
    fn grant_passthrough(
        &self,
        g: &mut Inner,
        ino: u64,
        file: Arc<File>,
        name: String,
    ) -> FsResult<u64> {
        let fh = self.open_locked(g, ino, false)?;
        let of = g.open.get_mut(&ino).expect("open");
        of.pt_refs += 1;
        if of.pt_file.is_none() {
            of.pt_file = Some((file, name));
        }
        g.handles.get_mut(&fh).expect("handle").passthrough = true;
        self.tier.touch(ino);
        self.replicas.mark_used(ino);
        self.replicas
            .passthrough_opens
            .fetch_add(1, Ordering::Relaxed);
        Ok(fh)
    }

    /// A passthrough handle that the kernel did not take (the backing
    /// file could not be registered) becomes an ordinary handle.
    pub fn passthrough_refused(&self, fh: u64) {
        let mut g = self.lock();
        let Some(h) = g.handles.get_mut(&fh) else {
            return;
        };
        if !std::mem::replace(&mut h.passthrough, false) {
            return;
        }
        let ino = h.ino;
        if let Some(of) = g.open.get_mut(&ino) {
            of.pt_refs -= 1;
            if of.pt_refs == 0 {
                of.pt_file = None;
                of.pt_bad = false;
            }
        }
    }

    /// Check a replica file against its record; a mismatch (or an
    /// unreadable file) drops the replica. True if it verified.
    fn verify_replica(&self, ino: u64, rec: &ReplicaRec, path: &MemberFile) -> bool {
        self.verify_replica_file(ino, rec, path).is_some()
    }

    /// [`Self::verify_replica`], returning the very descriptor whose
    /// content was checked (so the kernel gets the file that verified, not
    /// whatever the path names a moment later).
    fn verify_replica_file(&self, ino: u64, rec: &ReplicaRec, path: &MemberFile) -> Option<File> {
        let checked = path
            .open_read()
            .map_err(|e| io_err("open", e))
            .and_then(|mut f| {
                let (len, hash) = hash_file(&mut f)?;
                Ok((len == rec.size && hash == rec.hash).then_some(f))
            });
        let ok = match checked {
            Ok(f) => f,
            Err(e) => {
                log::warn!("replica of inode {ino}: {e}");
                None
            }
        };
        if ok.is_some() {
            self.replicas.mark_verified(ino);
            return ok;
        }
        log::error!(
            "replica of inode {ino} at {path} does not match its checksum: dropped, reads go to the stripes"
        );
        self.replicas.corrupt.fetch_add(1, Ordering::Relaxed);
        if let Some(of) = self.lock().open.get_mut(&ino) {
            if of.pt_file.as_ref().is_some_and(|(_, n)| *n == rec.name) {
                of.pt_bad = true;
            }
        }
        if let Err(e) = self.drop_replica_if(ino, Some(rec)) {
            log::warn!("dropping the replica of inode {ino}: {e}");
        }
        None
    }

    /// Copy `ino` into a new replica on an online local member of `class`
    /// (any class when None) and name it in its `R` record, replacing an
    /// older replica. Ok(false) when the object is not eligible or changed
    /// during the copy (the copy is then deleted).
    pub fn build_replica(&self, ino: u64, class: Option<&str>) -> FsResult<bool> {
        let inode = {
            let g = self.lock();
            if Self::being_written(&g, ino) {
                return Ok(false);
            }
            self.inode(&g, ino)?
        };
        if inode.kind != Kind::File || !inode.striped || inode.size > REPLICA_MAX_BYTES {
            return Ok(false);
        }
        let version = self.data_version(ino, inode.size)?;
        let Some((mi, root)) = self.replica_target(class, inode.size) else {
            return Ok(false);
        };
        let name = format!("{ino:x}-{:x}", rand::random::<u64>());
        let path = MemberFile::new(&root, format!("{REPLICA_DIR}/{name}"));
        let hash = match self.copy_out(ino, inode.size, &root, &name) {
            Ok(h) => h,
            Err(e) => {
                log::warn!("replica of inode {ino} on member {mi}: {e}");
                return Ok(false);
            }
        };
        let rec = ReplicaRec {
            member: mi,
            name,
            size: inode.size,
            version,
            hash,
        };
        // name it only if the data it was copied from is still current
        let committed = {
            let g = self.lock();
            let current = !Self::being_written(&g, ino)
                && self
                    .inode(&g, ino)
                    .is_ok_and(|i| i.striped && i.size == inode.size)
                && self.data_version(ino, inode.size)? == version;
            if current {
                let old = self.replica(ino)?;
                let old_path = old.as_ref().and_then(|o| self.replica_path(o));
                let after: Vec<crate::meta::AfterCommit> = match old_path {
                    Some(p) => vec![Box::new(move || {
                        let _ = p.remove();
                    })],
                    None => vec![],
                };
                self.meta
                    .apply(vec![Op::Put(replica_key(ino), enc(&rec))], after)?;
            }
            current
        };
        if !committed {
            let _ = path.remove();
            return Ok(false);
        }
        self.meta.sync()?;
        self.replicas.mark_verified(ino);
        self.replicas.built.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// An online member of `class` with a local root and room for `size`
    /// bytes (twice over, plus 64 MiB), the least loaded first; and its
    /// root, its replica directory created.
    fn replica_target(&self, class: Option<&str>, size: u64) -> Option<(u16, PathBuf)> {
        let m = self
            .pool
            .members()
            .iter()
            .filter(|m| m.health() == Health::Online)
            .filter(|m| class.is_none_or(|c| m.class() == Some(c)))
            .filter(|m| {
                m.live_disk().is_some_and(|d| {
                    d.local_root().is_some()
                        && d.capacity()
                            .is_ok_and(|(_, avail)| avail > size.saturating_mul(2) + (64 << 20))
                })
            })
            .min_by(|a, b| a.heat.load().total_cmp(&b.heat.load()))?;
        let root = m.live_disk()?.local_root()?;
        let made = beneath::open_root(root).and_then(|fd| {
            beneath::create_dir_all(&fd, REPLICA_DIR, crate::guard::modes::DIR_MODE)
        });
        if let Err(e) = made {
            log::warn!("member {}: {}/{REPLICA_DIR}: {e}", m.index, root.display());
            return None;
        }
        Some((m.index, root.to_path_buf()))
    }

    /// Write the object's bytes (read through the verified stripe path)
    /// to `replicas/name` beneath the member `root`, durably; returns their
    /// BLAKE3.
    fn copy_out(
        &self,
        ino: u64,
        size: u64,
        root: &std::path::Path,
        name: &str,
    ) -> Result<[u8; 32], String> {
        let tmp = MemberFile::new(root, format!("{REPLICA_DIR}/{name}.tmp"));
        let result = (|| {
            let mut f = tmp.create().map_err(|e| io_err("create", e))?;
            let mut h = blake3::Hasher::new();
            let mut off = 0u64;
            while off < size {
                let want = COPY_CHUNK.min((size - off) as u32);
                let data = self.read_quiet(ino, off, want).map_err(|e| e.to_string())?;
                if data.len() != want as usize {
                    return Err(format!("short read at {off}: the object changed"));
                }
                h.update(&data);
                f.write_all(&data).map_err(|e| io_err("write", e))?;
                off += want as u64;
            }
            f.sync_all().map_err(|e| io_err("fsync", e))?;
            let fd = beneath::open_root(root).map_err(|e| io_err("open member", e))?;
            beneath::rename(&fd, &tmp.rel, &format!("{REPLICA_DIR}/{name}"))
                .map_err(|e| io_err("rename", e))?;
            beneath::open_file(&fd, REPLICA_DIR, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err("fsync dir", e))?;
            Ok(*h.finalize().as_bytes())
        })();
        if result.is_err() {
            let _ = tmp.remove();
        }
        result
    }

    /// Drop the replica of `ino` (when `expect` is given, only if the
    /// record is still that one). The file is deleted once the record's
    /// removal is durable; passthrough opens already holding it keep
    /// reading it (the object is read-only while they are open).
    pub(crate) fn drop_replica_if(&self, ino: u64, expect: Option<&ReplicaRec>) -> FsResult<bool> {
        let g = self.lock();
        let Some(rec) = self.replica(ino)? else {
            return Ok(false);
        };
        if expect.is_some_and(|e| *e != rec) {
            return Ok(false);
        }
        let path = self.replica_path(&rec);
        let after: Vec<crate::meta::AfterCommit> = match path {
            Some(p) => vec![Box::new(move || {
                let _ = p.remove();
            })],
            None => vec![],
        };
        self.meta.apply(vec![Op::Del(replica_key(ino))], after)?;
        drop(g);
        self.replicas.forget(ino);
        self.replicas.dropped.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Drop the replica of `ino`, if any.
    pub fn drop_replica(&self, ino: u64) -> FsResult<bool> {
        self.drop_replica_if(ino, None)
    }

    /// Bring the replica of `ino` in line with its tier: `want_replica`
    /// builds one (or replaces a stale one), false drops it. A kept
    /// replica served since its last check, which is older than half the
    /// verify interval, is checked. Returns (built, dropped, bytes read by
    /// a check).
    pub(crate) fn settle_replica(
        &self,
        ino: u64,
        want_replica: Option<bool>,
        class: Option<&str>,
    ) -> FsResult<(bool, bool, u64)> {
        let usable = {
            let g = self.lock();
            self.replica_usable(&g, ino)?
        };
        match (usable, want_replica) {
            (Usable::No, Some(true)) => Ok((self.build_replica(ino, class)?, false, 0)),
            (Usable::No, _) => Ok((false, false, 0)),
            (Usable::Stale, Some(true)) => {
                let built = self.build_replica(ino, class)?;
                let dropped = !built && self.drop_replica(ino)?;
                Ok((built, dropped, 0))
            }
            (Usable::Stale, _) | (Usable::Yes(..), Some(false)) => {
                Ok((false, self.drop_replica(ino)?, 0))
            }
            (Usable::Yes(rec, path), _) => {
                let half = self.replicas.verify_secs.load(Ordering::Relaxed) as f64 / 2.0;
                if self.replicas.fresh(ino, half) || !self.replicas.in_use(ino) {
                    return Ok((false, false, 0));
                }
                if !self.verify_replica(ino, &rec, &path) {
                    // dropped: copy the good data again if it is wanted
                    let built = want_replica == Some(true) && self.build_replica(ino, class)?;
                    return Ok((built, true, rec.size));
                }
                Ok((false, false, rec.size))
            }
        }
    }

    /// Inodes with a replica record.
    pub fn replica_inodes(&self) -> FsResult<Vec<(u64, ReplicaRec)>> {
        self.meta
            .range(b"R", b"S", usize::MAX)?
            .into_iter()
            .map(|(k, v)| Ok((key_u64_at(&k, 1), dec("replica", &v)?)))
            .collect()
    }

    /// Counts for `shardctl tier status`.
    pub fn replica_counts(&self) -> FsResult<ReplicaCounts> {
        let recs = self.replica_inodes()?;
        let r = &self.replicas;
        Ok(ReplicaCounts {
            replicas: recs.len() as u64,
            bytes: recs.iter().map(|(_, r)| r.size).sum(),
            passthrough: r.passthrough.load(Ordering::Relaxed),
            passthrough_opens: r.passthrough_opens.load(Ordering::Relaxed),
            built: r.built.load(Ordering::Relaxed),
            dropped: r.dropped.load(Ordering::Relaxed),
            corrupt: r.corrupt.load(Ordering::Relaxed),
        })
    }

    /// Delete replica files that no record names (a crash between a copy
    /// and its record, or between a record's removal and the file's) and
    /// leftover temporary files. Runs at every mount, before serving. Only
    /// names the daemon makes are touched (anything else an admin put
    /// there stays), and only as entries of the member's own directory.
    pub(crate) fn sweep_replicas(&self) -> FsResult<u64> {
        let named: std::collections::HashSet<(u16, String)> = self
            .replica_inodes()?
            .into_iter()
            .map(|(_, r)| (r.member, r.name))
            .collect();
        let mut removed = 0;
        for m in self.pool.members() {
            let Some(root) = m.live_disk().and_then(|d| d.local_root()) else {
                continue;
            };
            let Ok(fd) = beneath::open_root(root) else {
                continue;
            };
            let Ok(names) = beneath::list_dir(&fd, REPLICA_DIR) else {
                continue;
            };
            for name in names {
                let ours = is_replica_name(&name)
                    || name.strip_suffix(".tmp").is_some_and(is_replica_name);
                if !ours {
                    log::warn!(
                        "member {}: {REPLICA_DIR}/{name:?} is not a replica file: left alone",
                        m.index
                    );
                    continue;
                }
                if named.contains(&(m.index, name.clone())) {
                    continue;
                }
                if beneath::unlink(&fd, &format!("{REPLICA_DIR}/{name}")).is_ok() {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            log::info!("removed {removed} replica files that no record names");
        }
        Ok(removed)
    }
}

/// The passthrough file of an open inode.
fn of_file(g: &Inner, ino: u64) -> Option<Arc<File>> {
    g.open
        .get(&ino)
        .and_then(|of| of.pt_file.as_ref().map(|(f, _)| f.clone()))
}

/// True for the names replica files get: `<ino hex>-<nonce hex>`.
pub(crate) fn is_replica_name(name: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    name.split_once('-').is_some_and(|(a, b)| hex(a) && hex(b))
}

/// (length, BLAKE3) of a file's content.
fn hash_file(f: &mut File) -> Result<(u64, [u8; 32]), String> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err("read", e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, *h.finalize().as_bytes()))
}
