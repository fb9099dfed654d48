use super::{KvPairs, MetaError, MetaStore, Op, SEQ_KEY};
use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

/// LMDB through heed, in its default durable mode: every commit is fsynced
/// before it returns. (heed is used instead of the archived lmdb-rkv; see
/// docs/DESIGN.md.)
///
/// The map grows: a write that fails with MDB_MAP_FULL doubles the map (up
/// to [`MAX_MAP_SIZE`]) and runs again. The directory keeps a reserve file
/// ([`RESERVE_FILE`]) that a commit failing with ENOSPC deletes before its
/// one retry, so metadata (a delete that frees space, above all) can still
/// be committed on a full host filesystem. See
/// docs/durability/0012-meta-map-growth-reserve.md.
pub struct LmdbStore {
    env: Env,
    db: Database<Bytes, Bytes>,
    path: PathBuf,
    /// Every transaction of `env` runs under a shared guard; a map resize
    /// takes it exclusively, so no transaction of this process is open
    /// while the map changes (what `mdb_env_set_mapsize` requires).
    txns: RwLock<()>,
    reserve: Mutex<Reserve>,
}

/// State of the directory's reserve file.
struct Reserve {
    /// wanted size in bytes (0: none, the host filesystem is too small)
    bytes: u64,
    /// the file is in place at full size
    present: bool,
    /// last attempt to put it back after a release
    last_try: Option<Instant>,
}

impl std::fmt::Debug for LmdbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LmdbStore({})", self.path.display())
    }
}

/// Initial virtual size of the LMDB map; pages are only used as written.
pub const MAP_SIZE: usize = 64 << 30;
/// The map is never grown beyond this; a write that needs more fails with
/// [`MetaError::NoSpace`].
pub const MAX_MAP_SIZE: usize = 4 << 40;
/// Reserve file kept in every metadata directory.
pub const RESERVE_FILE: &str = "reserve.bin";
/// Files of a metadata replica directory, none of which may be a symlink
/// (the directory neither): they are opened by path.
const STORE_FILES: [&str; 5] = ["data.mdb", "lock.mdb", "data.mdb.copy", "wal", RESERVE_FILE];
/// Size of the reserve file, or 1/64 of the host filesystem if that is
/// less (small test members).
pub const RESERVE_BYTES: u64 = 16 << 20;
/// After a release, putting the reserve back is tried at most this often
/// (on a successful commit), and only with four reserves of room free.
const RESERVE_RETRY: Duration = Duration::from_secs(30);
/// Map sizes are kept multiples of this (a multiple of every page size).
const MAP_ALIGN: usize = 1 << 20;

/// Why one attempt at a write transaction failed.
enum Attempt {
    /// MDB_MAP_FULL with the map at this size
    MapFull(usize),
    /// ENOSPC (or EDQUOT) from the host filesystem
    NoSpace(heed::Error),
    /// anything else
    Other(heed::Error),
}

impl From<heed::Error> for Attempt {
    fn from(e: heed::Error) -> Self {
        match &e {
            heed::Error::Mdb(heed::MdbError::MapFull) => Attempt::MapFull(0),
            heed::Error::Io(io) if io.raw_os_error().is_some_and(no_space) => Attempt::NoSpace(e),
            heed::Error::Mdb(heed::MdbError::Other(c)) if no_space(*c) => Attempt::NoSpace(e),
            _ => Attempt::Other(e),
        }
    }
}

/// ENOSPC, or EDQUOT (a full quota: the reserve frees it too).
fn no_space(errno: i32) -> bool {
    errno == libc::ENOSPC || errno == libc::EDQUOT
}

/// Reserve size for a host filesystem of `total` bytes.
fn reserve_bytes_for(total: u64) -> u64 {
    RESERVE_BYTES.min(total / 64) & !4095
}

/// Free and total bytes of the filesystem holding `dir`.
fn fs_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let frsize = st.fragment_size() as u64;
    Ok((
        st.blocks_available() as u64 * frsize,
        st.blocks() as u64 * frsize,
    ))
}

/// True if `p` is a file of at least `bytes` bytes, all allocated.
fn reserve_in_place(p: &Path, bytes: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(p) {
        Ok(m) => m.is_file() && m.len() >= bytes && m.blocks() * 512 >= bytes,
        Err(_) => false,
    }
}

/// Create `dir/RESERVE_FILE` of `bytes` real blocks (fallocate, or zeros
/// where that is unsupported), owner-only, through a temporary name so a
/// crash never leaves a short reserve under the real name.
fn create_reserve(dir: &Path, bytes: u64) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!("{RESERVE_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let res = (|| {
        let f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(crate::guard::modes::FILE_MODE)
            .open(&tmp)?;
        let len = i64::try_from(bytes).unwrap_or(i64::MAX);
        match nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, len) {
            Ok(()) => {}
            Err(nix::errno::Errno::EOPNOTSUPP) => {
                let zeros = vec![0u8; 1 << 20];
                let mut left = bytes;
                let mut w = &f;
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    w.write_all(&zeros[..n])?;
                    left -= n as u64;
                }
            }
            Err(e) => return Err(std::io::Error::from(e)),
        }
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(RESERVE_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

impl LmdbStore {
    /// Open (creating if needed) the store in directory `path`.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        Self::open_with_map_size(path, MAP_SIZE)
    }

    /// [`LmdbStore::open`] with an initial map of `map_size` bytes (rounded
    /// up to a MiB). An existing data file larger than that is mapped
    /// whole, so a store whose map grew opens again.
    pub fn open_with_map_size(path: &Path, map_size: usize) -> Result<Self, MetaError> {
        let err = |e: &dyn std::fmt::Display| MetaError::Store {
            store: path.display().to_string(),
            msg: e.to_string(),
        };
        crate::guard::beneath::refuse_links(path, &STORE_FILES).map_err(|e| err(&e))?;
        crate::guard::modes::create_dir_all(path).map_err(|e| err(&e))?;
        let file_len = match std::fs::metadata(path.join("data.mdb")) {
            Ok(m) => usize::try_from(m.len()).unwrap_or(usize::MAX),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(err(&e)),
        };
        // LMDB itself only keeps the map above the last used page; map the
        // whole file, so pages the file holds past that stay usable
        let map_size = map_size
            .max(file_len)
            .max(MAP_ALIGN)
            .next_multiple_of(MAP_ALIGN);
        // SAFETY: each metadata directory is opened once per process (the
        // daemon owns its pool) and never truncated or mapped elsewhere.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(map_size)
                .max_dbs(1)
                .open(path)
        }
        .map_err(|e| err(&e))?;
        let db = Self::open_db(&env).map_err(|e| match e {
            Attempt::NoSpace(e) => MetaError::NoSpace(format!("{}: {e}", path.display())),
            Attempt::MapFull(_) => err(&"the map is full"),
            Attempt::Other(e) => err(&e),
        })?;
        let s = LmdbStore {
            env,
            db,
            path: path.to_path_buf(),
            txns: RwLock::new(()),
            reserve: Mutex::new(Reserve {
                bytes: 0,
                present: false,
                last_try: None,
            }),
        };
        s.open_reserve();
        Ok(s)
    }

    /// The unnamed database, created if the store is new.
    fn open_db(env: &Env) -> Result<Database<Bytes, Bytes>, Attempt> {
        let rtxn = env.read_txn()?;
        let db = env.open_database::<Bytes, Bytes>(&rtxn, None)?;
        drop(rtxn);
        if let Some(db) = db {
            return Ok(db);
        }
        let mut wtxn = env.write_txn()?;
        let db = env.create_database(&mut wtxn, None)?;
        wtxn.commit()?;
        Ok(db)
    }

    /// At open: keep the reserve file, or put it back (after a release, or
    /// for a store made before reserves) when there is room; a full host
    /// filesystem only costs a warning.
    fn open_reserve(&self) {
        let mut r = self.reserve.lock().unwrap_or_else(|p| p.into_inner());
        r.bytes = match fs_space(&self.path) {
            Ok((_, total)) => reserve_bytes_for(total),
            Err(e) => {
                log::warn!(
                    "metadata store {}: statvfs failed, no reserve file: {e}",
                    self.path.display()
                );
                return;
            }
        };
        let file = self.path.join(RESERVE_FILE);
        if r.bytes == 0 || reserve_in_place(&file, r.bytes) {
            r.present = r.bytes > 0;
            return;
        }
        r.last_try = Some(Instant::now());
        match create_reserve(&self.path, r.bytes) {
            Ok(()) => r.present = true,
            Err(e) => log::warn!(
                "metadata store {}: cannot create its {} byte reserve file ({e}); \
                 a full disk will stop metadata commits",
                self.path.display(),
                r.bytes
            ),
        }
    }

    /// Delete the reserve file to make room for a commit that met ENOSPC.
    /// True if it was there and is gone.
    fn release_reserve(&self) -> bool {
        let mut r = self.reserve.lock().unwrap_or_else(|p| p.into_inner());
        if !r.present {
            return false;
        }
        r.present = false;
        r.last_try = Some(Instant::now());
        match std::fs::remove_file(self.path.join(RESERVE_FILE)) {
            Ok(()) => {
                log::error!(
                    "METADATA DISK FULL: {} hit ENOSPC; its {} byte reserve file was deleted \
                     so the commit can go through. Free space on this disk now: the reserve \
                     is put back once there is room (or at the next mount)",
                    self.path.display(),
                    r.bytes
                );
                true
            }
            Err(e) => {
                log::error!(
                    "METADATA DISK FULL: {} hit ENOSPC and its reserve file could not be \
                     deleted: {e}",
                    self.path.display()
                );
                false
            }
        }
    }

    /// After a successful commit: put a released reserve back if there is
    /// room for four of them, at most every [`RESERVE_RETRY`].
    fn maybe_restore_reserve(&self) {
        let mut r = self.reserve.lock().unwrap_or_else(|p| p.into_inner());
        if r.present || r.bytes == 0 || r.last_try.is_some_and(|t| t.elapsed() < RESERVE_RETRY) {
            return;
        }
        r.last_try = Some(Instant::now());
        if !fs_space(&self.path).is_ok_and(|(free, _)| free >= 4 * r.bytes) {
            return;
        }
        match create_reserve(&self.path, r.bytes) {
            Ok(()) => {
                r.present = true;
                log::warn!(
                    "metadata store {}: reserve file put back",
                    self.path.display()
                );
            }
            Err(e) => log::warn!(
                "metadata store {}: reserve file not put back yet: {e}",
                self.path.display()
            ),
        }
    }

    /// True while the reserve file is in place.
    pub fn has_reserve(&self) -> bool {
        self.reserve
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .present
    }

    /// Current size of the map in bytes.
    pub fn map_size(&self) -> usize {
        let _g = self.shared();
        self.env.info().map_size
    }

    /// The shared guard every transaction runs under.
    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.txns.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Double the map, which was `seen` bytes when a write found it full
    /// (another writer may have grown it since: then nothing is done).
    fn grow(&self, seen: usize) -> Result<(), MetaError> {
        let _excl = self.txns.write().unwrap_or_else(|p| p.into_inner());
        let now = self.env.info().map_size;
        if now > seen {
            return Ok(());
        }
        if now >= MAX_MAP_SIZE {
            return Err(MetaError::NoSpace(format!(
                "{}: the map is full at its limit of {MAX_MAP_SIZE} bytes",
                self.path.display()
            )));
        }
        let new = now
            .saturating_mul(2)
            .clamp(MAP_ALIGN, MAX_MAP_SIZE)
            .next_multiple_of(MAP_ALIGN);
        // SAFETY: `mdb_env_set_mapsize` needs no transaction of this
        // process open on the environment. Every transaction of `self.env`
        // (reads, writes, the read of `copy_to_path`) is begun and ended
        // under a shared guard of `self.txns`, the environment never leaves
        // this struct, and each directory is opened once per process; we
        // hold the exclusive guard, so none is open.
        unsafe { self.env.resize(new) }.map_err(|e| self.err(e))?;
        log::warn!(
            "metadata store {}: map full at {now} bytes, grown to {new}",
            self.path.display()
        );
        Ok(())
    }

    fn err(&self, e: impl std::fmt::Display) -> MetaError {
        MetaError::Store {
            store: self.path.display().to_string(),
            msg: e.to_string(),
        }
    }

    /// Write a consistent copy of the store into directory `dest` (for
    /// bringing a lagging replica up to date).
    pub fn copy_to_dir(&self, dest: &Path) -> Result<(), MetaError> {
        crate::guard::beneath::refuse_links(dest, &STORE_FILES).map_err(|e| self.err(e))?;
        crate::guard::modes::create_dir_all(dest).map_err(|e| self.err(e))?;
        let tmp = dest.join("data.mdb.copy");
        let _ = std::fs::remove_file(&tmp);
        let f = {
            // copy_to_path reads through a transaction of its own
            let _g = self.shared();
            self.env
                .copy_to_path(&tmp, heed::CompactionOption::Disabled)
                .map_err(|e| self.err(e))?
        };
        {
            use std::os::unix::fs::PermissionsExt;
            let owner_only = std::fs::Permissions::from_mode(crate::guard::modes::FILE_MODE);
            f.set_permissions(owner_only).map_err(|e| self.err(e))?;
        }
        f.sync_all().map_err(|e| self.err(e))?;
        std::fs::rename(&tmp, dest.join("data.mdb")).map_err(|e| self.err(e))?;
        let _ = std::fs::remove_file(dest.join("lock.mdb"));
        std::fs::File::open(dest)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.err(e))
    }

    /// Close the environment and wait until LMDB has released it.
    pub fn close(self) {
        self.env.prepare_for_closing().wait();
    }
}

impl LmdbStore {
    /// Commit `ops` durably; the commit sequence becomes `seq` if given,
    /// else the old sequence plus one. A full map is grown and the commit
    /// run again; on ENOSPC the reserve file is released for one more try.
    pub fn commit_at(&self, ops: &[Op], seq: Option<u64>) -> Result<(), MetaError> {
        let mut released = false;
        loop {
            match self.try_commit(ops, seq) {
                Ok(()) => {
                    if !released {
                        self.maybe_restore_reserve();
                    }
                    return Ok(());
                }
                Err(Attempt::MapFull(seen)) => self.grow(seen)?,
                Err(Attempt::NoSpace(e)) => {
                    if !released && self.release_reserve() {
                        released = true;
                        continue;
                    }
                    return Err(MetaError::NoSpace(format!("{}: {e}", self.path.display())));
                }
                Err(Attempt::Other(e)) => return Err(self.err(e)),
            }
        }
    }

    /// One write transaction for [`LmdbStore::commit_at`]; on failure it is
    /// aborted (dropped) before this returns.
    fn try_commit(&self, ops: &[Op], seq: Option<u64>) -> Result<(), Attempt> {
        let _g = self.shared();
        let full = |e: heed::Error| match Attempt::from(e) {
            Attempt::MapFull(_) => Attempt::MapFull(self.env.info().map_size),
            a => a,
        };
        let mut wtxn = self.env.write_txn().map_err(full)?;
        for op in ops {
            match op {
                Op::Put(k, v) => self.db.put(&mut wtxn, k, v),
                Op::Del(k) => self.db.delete(&mut wtxn, k).map(|_| ()),
            }
            .map_err(full)?;
        }
        let seq = match seq {
            Some(s) => s,
            None => {
                self.db
                    .get(&wtxn, SEQ_KEY)
                    .map_err(full)?
                    .map(|v| {
                        u64::from_be_bytes(
                            v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]),
                        )
                    })
                    .unwrap_or(0)
                    + 1
            }
        };
        self.db
            .put(&mut wtxn, SEQ_KEY, &seq.to_be_bytes())
            .map_err(full)?;
        wtxn.commit().map_err(full)
    }
}

impl MetaStore for LmdbStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        let _g = self.shared();
        let rtxn = self.env.read_txn().map_err(|e| self.err(e))?;
        Ok(self
            .db
            .get(&rtxn, key)
            .map_err(|e| self.err(e))?
            .map(<[u8]>::to_vec))
    }

    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs, MetaError> {
        let _g = self.shared();
        let rtxn = self.env.read_txn().map_err(|e| self.err(e))?;
        let r = (Bound::Included(start), Bound::Excluded(end));
        let mut out = Vec::new();
        for item in self.db.range(&rtxn, &r).map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push((k.to_vec(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn range_sizes(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<super::KeySizes, MetaError> {
        // the value is a slice of the map: its length costs no copy
        let _g = self.shared();
        let rtxn = self.env.read_txn().map_err(|e| self.err(e))?;
        let r = (Bound::Included(start), Bound::Excluded(end));
        let mut out = Vec::new();
        for item in self.db.range(&rtxn, &r).map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push((k.to_vec(), v.len()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn commit(&self, ops: &[Op]) -> Result<(), MetaError> {
        self.commit_at(ops, None)
    }

    fn sequence(&self) -> Result<u64, MetaError> {
        Ok(self
            .get(SEQ_KEY)?
            .map(|v| {
                u64::from_be_bytes(v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]))
            })
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_get_range_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = LmdbStore::open(dir.path()).unwrap();
        s.commit(&[
            Op::Put(b"a1".to_vec(), b"x".to_vec()),
            Op::Put(b"a2".to_vec(), b"y".to_vec()),
            Op::Put(b"b1".to_vec(), b"z".to_vec()),
        ])
        .unwrap();
        s.commit(&[Op::Del(b"a2".to_vec())]).unwrap();
        assert_eq!(s.get(b"a1").unwrap(), Some(b"x".to_vec()));
        assert_eq!(s.get(b"a2").unwrap(), None);
        let r = s.range(b"a", b"b", 10).unwrap();
        assert_eq!(r, vec![(b"a1".to_vec(), b"x".to_vec())]);
        assert_eq!(s.sequence().unwrap(), 2);
        s.close();
        let s = LmdbStore::open(dir.path()).unwrap();
        assert_eq!(s.get(b"b1").unwrap(), Some(b"z".to_vec()));
        assert_eq!(s.sequence().unwrap(), 2);
        s.close();
    }
}

#[cfg(test)]
mod growth_tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::process::Command;

    fn key(b: usize, i: usize) -> Vec<u8> {
        format!("k{b:04}-{i:04}").into_bytes()
    }

    fn value(b: usize, i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (b * 31 + i * 7 + j) as u8).collect()
    }

    /// Issue 14: a store opened with a 1 MiB map takes 8 MiB of writes
    /// (the map doubles on MDB_MAP_FULL), reads them back, and opens again
    /// with the same 1 MiB configured with every key intact.
    #[test]
    fn a_tiny_map_grows_on_map_full_and_reopens_with_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let (batches, per, len) = (64, 16, 8 << 10);
        let s = LmdbStore::open_with_map_size(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.map_size(), 1 << 20);
        for b in 0..batches {
            let ops: Vec<Op> = (0..per)
                .map(|i| Op::Put(key(b, i), value(b, i, len)))
                .collect();
            s.commit(&ops).unwrap();
        }
        let grown = s.map_size();
        assert!(grown >= 8 << 20, "map still {grown} bytes");
        let check = |s: &LmdbStore| {
            for b in 0..batches {
                for i in 0..per {
                    assert_eq!(
                        s.get(&key(b, i)).unwrap(),
                        Some(value(b, i, len)),
                        "{b}/{i}"
                    );
                }
            }
            assert_eq!(s.sequence().unwrap(), batches as u64);
            assert_eq!(
                s.range(b"k", b"l", usize::MAX).unwrap().len(),
                batches * per
            );
        };
        check(&s);
        s.close();
        let file_len = std::fs::metadata(dir.path().join("data.mdb"))
            .unwrap()
            .len();
        assert!(file_len > 1 << 20, "data file only {file_len} bytes");
        let s = LmdbStore::open_with_map_size(dir.path(), 1 << 20).unwrap();
        assert!(s.map_size() as u64 >= file_len, "map smaller than the file");
        check(&s);
        // and it keeps growing after the reopen
        for b in batches..batches + 8 {
            let ops: Vec<Op> = (0..per)
                .map(|i| Op::Put(key(b, i), value(b, i, len)))
                .collect();
            s.commit(&ops).unwrap();
        }
        assert_eq!(
            s.get(&key(batches + 7, 3)).unwrap(),
            Some(value(batches + 7, 3, len))
        );
        s.close();
    }

    /// Readers on other threads while a writer keeps growing the map: the
    /// resize waits for them (they never see a torn or unmapped page).
    #[test]
    fn the_map_grows_under_concurrent_readers() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(LmdbStore::open_with_map_size(dir.path(), 1 << 20).unwrap());
        s.commit(&[Op::Put(b"fixed".to_vec(), vec![7; 4000])])
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (s, stop) = (s.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        assert_eq!(s.get(b"fixed").unwrap(), Some(vec![7; 4000]));
                        let r = s.range(b"k", b"l", 64).unwrap();
                        for (k, v) in r {
                            assert_eq!(v.len(), 16 << 10, "{k:?}");
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        for b in 0..32 {
            let ops: Vec<Op> = (0..8)
                .map(|i| Op::Put(key(b, i), value(b, i, 16 << 10)))
                .collect();
            s.commit(&ops).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(reads > 0);
        assert!(s.map_size() >= 4 << 20);
        assert_eq!(s.get(&key(31, 7)).unwrap(), Some(value(31, 7, 16 << 10)));
    }

    #[test]
    fn reserve_size_follows_the_host_filesystem() {
        assert_eq!(reserve_bytes_for(100 << 30), 16 << 20);
        assert_eq!(reserve_bytes_for(64 << 20), 1 << 20);
        assert_eq!(reserve_bytes_for(100 << 10), 0);
    }

    /// A tmpfs of `mib` MiB mounted for one test, unmounted on drop (also
    /// when the test fails).
    struct Tmpfs {
        dir: tempfile::TempDir,
    }

    impl Tmpfs {
        fn mount(mib: u64) -> Tmpfs {
            let dir = tempfile::tempdir().unwrap();
            let st = Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={mib}m,mode=0700"),
                    "tmpfs",
                ])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "mount tmpfs (tests run as root)");
            Tmpfs { dir }
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }

    /// Fill the filesystem of `dir` with `dir/filler` until ENOSPC.
    fn fill(dir: &Path) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("filler"))
            .unwrap();
        for chunk in [1 << 20, 4096] {
            let buf = vec![1u8; chunk];
            loop {
                match f.write_all(&buf) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("filling: {e}"),
                }
            }
        }
        assert_eq!(fs_space(dir).unwrap().0, 0, "the filesystem is not full");
    }

    /// Issue 14: the metadata directory keeps an owner-only reserve file
    /// with real blocks; a commit that hits ENOSPC on a full host
    /// filesystem deletes it and succeeds; with the reserve spent the next
    /// one fails with ENOSPC (not EIO); the reserve comes back at reopen.
    #[test]
    fn a_commit_on_a_full_disk_spends_the_reserve_then_reports_enospc() {
        let t = Tmpfs::mount(64);
        let dir = t.dir.path().join("meta");
        let s = LmdbStore::open(&dir).unwrap();
        let reserve = dir.join(RESERVE_FILE);
        let m = std::fs::metadata(&reserve).unwrap();
        assert_eq!(m.len(), 1 << 20, "1/64 of a 64 MiB filesystem");
        assert!(m.blocks() * 512 >= 1 << 20, "reserve is sparse");
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert!(s.has_reserve());
        s.commit(&[Op::Put(b"a".to_vec(), b"1".to_vec())]).unwrap();

        fill(t.dir.path());
        // 256 KiB of new values need new pages at the end of the file
        let big: Vec<Op> = (0..32)
            .map(|i| Op::Put(key(1, i), value(1, i, 8 << 10)))
            .collect();
        s.commit(&big).unwrap();
        assert!(!s.has_reserve());
        assert!(!reserve.exists());
        assert_eq!(s.get(&key(1, 31)).unwrap(), Some(value(1, 31, 8 << 10)));

        fill(t.dir.path());
        let more: Vec<Op> = (0..32)
            .map(|i| Op::Put(key(2, i), value(2, i, 8 << 10)))
            .collect();
        let e = s.commit(&more).unwrap_err();
        assert!(matches!(e, MetaError::NoSpace(_)), "{e}");
        assert_eq!(crate::fs::FsError::from(e).errno(), libc::ENOSPC);
        // nothing of the failed batch landed; the store still works
        assert_eq!(s.get(&key(2, 0)).unwrap(), None);
        assert_eq!(s.sequence().unwrap(), 2);

        std::fs::remove_file(t.dir.path().join("filler")).unwrap();
        s.commit(&more).unwrap();
        s.close();
        let s = LmdbStore::open(&dir).unwrap();
        assert!(s.has_reserve(), "reserve not put back at reopen");
        let m = std::fs::metadata(&reserve).unwrap();
        assert!(m.blocks() * 512 >= 1 << 20);
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(s.get(&key(2, 31)).unwrap(), Some(value(2, 31, 8 << 10)));
        assert_eq!(s.get(&key(1, 0)).unwrap(), Some(value(1, 0, 8 << 10)));
        s.close();
    }
}
