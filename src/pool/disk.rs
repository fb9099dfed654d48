//! The member-disk seam. Everything shardfs stores on a member goes through
//! [`DiskBackend`]; a remote disk or a fault-injecting disk plugs in here.

use crate::guard::beneath;
use crate::guard::modes::FILE_MODE;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One member disk: a flat namespace of small files addressed by relative
/// path (`a/b/c`).
pub trait DiskBackend: Send + Sync + std::fmt::Debug {
    /// Human description (the directory path for a local member).
    fn describe(&self) -> String;
    /// Local directory of the member, if it has one (LMDB needs a path).
    fn local_root(&self) -> Option<&Path>;
    /// Create or replace `rel` with the concatenation of `parts`. Durable
    /// only after [`DiskBackend::sync_file`] and [`DiskBackend::sync_dir`]
    /// of its directory (or [`DiskBackend::sync_fs`]).
    fn write_file(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()>;
    /// Write the concatenation of `parts` at byte `offset` of `rel`,
    /// creating the file if it is missing and keeping every other byte (an
    /// append when `offset` is the file's length). Durable only after
    /// [`DiskBackend::sync_file`] (and, for a new file, `sync_dir`).
    fn write_at(&self, rel: &str, offset: u64, parts: &[&[u8]]) -> io::Result<()>;
    /// Create or replace `rel` with the concatenation of `parts`, its data
    /// durable on return (its directory entry still needs `sync_dir`). A
    /// backend may do this more cheaply than `write_file` + `sync_file`
    /// (one open; a local disk writes large files around the page cache).
    fn write_file_durable(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        self.write_file(rel, parts)?;
        self.sync_file(rel)
    }
    /// [`DiskBackend::write_file_durable`] of a file that is unlikely to
    /// be read soon (a shard rebuilt by repair): a local disk writes it
    /// around the page cache (O_DIRECT, see [`super::direct`]) whatever
    /// `--direct-writes` says, so a rebuild neither pays the copy into
    /// the cache nor evicts what readers use. Same bytes, same durability.
    fn write_file_durable_uncached(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        self.write_file_durable(rel, parts)
    }
    /// [`DiskBackend::write_at`] then [`DiskBackend::sync_file`] (through
    /// one open on a local disk). `allocate` > 0 first asks for the file's
    /// blocks out to that many bytes, never touching bytes already there
    /// (the gap reads as zeros), so that later appends into them change
    /// neither the file's size nor its block map and sync cheaply. A
    /// backend may ignore it: it changes no byte a caller reads.
    fn write_at_durable(
        &self,
        rel: &str,
        offset: u64,
        parts: &[&[u8]],
        allocate: u64,
    ) -> io::Result<()> {
        let _ = allocate;
        self.write_at(rel, offset, parts)?;
        self.sync_file(rel)
    }
    /// Write `rel` atomically and durably (temporary file, fsync, rename, fsync dir).
    fn write_atomic(&self, rel: &str, data: &[u8]) -> io::Result<()>;
    /// [`DiskBackend::write_atomic`] for contents written in pieces: the
    /// returned file takes the bytes, and its `commit` makes them `rel`
    /// atomically and durably; dropped without a commit, nothing changes
    /// at `rel`. `None`: this backend does not stream (the caller gathers
    /// the bytes and calls `write_atomic`). A local disk streams them to a
    /// temporary file, so a large file costs no memory.
    fn create_atomic<'a>(&'a self, rel: &str) -> io::Result<Option<Box<dyn AtomicFile + 'a>>> {
        let _ = rel;
        Ok(None)
    }
    /// Read all of `rel`.
    fn read_file(&self, rel: &str) -> io::Result<Vec<u8>>;
    /// Read up to `len` bytes of `rel` at `offset` (fewer at end of file).
    fn read_range(&self, rel: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// `len` bytes of `rel` at `offset` if the backend has them at hand
    /// without waiting for the device (a local disk: a file its workers
    /// opened, bytes in the page cache); `None` otherwise. Safe to call off
    /// the member's workers: it never blocks on the disk.
    fn read_cached(&self, _rel: &str, _offset: u64, _len: usize) -> Option<Vec<u8>> {
        None
    }
    /// Remove `rel`; a missing file is not an error.
    fn remove_file(&self, rel: &str) -> io::Result<()>;
    /// Give back the space of bytes `[offset, offset + len)` of `rel`
    /// (dead records in a log): they read as zeros from now on and the
    /// file keeps its size. Durable after [`DiskBackend::sync_file`]; a
    /// punch lost in a crash only leaves dead bytes. A missing file, or a
    /// backend that cannot punch, is not an error (only space is lost).
    fn punch_hole(&self, rel: &str, offset: u64, len: u64) -> io::Result<()> {
        let _ = (rel, offset, len);
        Ok(())
    }
    /// Names in directory `rel` (files only matter to callers).
    fn list_dir(&self, rel: &str) -> io::Result<Vec<String>>;
    /// Create directory `rel` and its parents.
    fn create_dir_all(&self, rel: &str) -> io::Result<()>;
    /// Make the contents of `rel` durable.
    fn sync_file(&self, rel: &str) -> io::Result<()>;
    /// Make the entries of directory `rel` durable.
    fn sync_dir(&self, rel: &str) -> io::Result<()>;
    /// (total bytes, available bytes).
    fn capacity(&self) -> io::Result<(u64, u64)>;
    /// Make everything written to the member's filesystem durable at once
    /// (syncfs). Cheaper than many file fsyncs after a burst of writes.
    fn sync_fs(&self) -> io::Result<()>;
    /// Identity of the filesystem holding the member (members sharing one
    /// need one `sync_fs`), if known.
    fn fs_id(&self) -> Option<u64>;
}

/// A file being written for [`DiskBackend::create_atomic`].
pub trait AtomicFile: Write {
    /// Make the bytes written the contents of the file, atomically and
    /// durably.
    fn commit(self: Box<Self>) -> io::Result<()>;
}

/// The local disk's [`AtomicFile`]: a temporary file beside `rel`,
/// written through a buffer, then fsync, rename and directory fsync.
struct StreamedAtomic<'a> {
    disk: &'a DirDisk,
    root: OwnedFd,
    tmp: String,
    rel: String,
    out: Option<io::BufWriter<File>>,
}

impl Write for StreamedAtomic<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.out.as_mut().expect("open until commit").write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("open until commit").flush()
    }
}

impl AtomicFile for StreamedAtomic<'_> {
    fn commit(mut self: Box<Self>) -> io::Result<()> {
        let f = self
            .out
            .take()
            .expect("committed once")
            .into_inner()
            .map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        beneath::rename(&self.root, &self.tmp, &self.rel)?;
        match self.rel.rsplit_once('/') {
            Some((dir, _)) => self.disk.sync_dir(dir),
            None => File::from(beneath::open_root_dir(&self.disk.root)?).sync_all(),
        }
    }
}

impl Drop for StreamedAtomic<'_> {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            // not committed: the temporary file goes
            let _ = beneath::unlink(&self.root, &self.tmp);
        }
    }
}

/// A member that is a local directory (in production the mount point of one drive).
#[derive(Debug)]
pub struct DirDisk {
    root: PathBuf,
    /// Large shard files are written with O_DIRECT (see
    /// [`super::direct`]); cleared when the filesystem refuses it.
    direct: std::sync::atomic::AtomicBool,
    /// Files the workers opened for reading, for [`DiskBackend::read_cached`].
    fds: super::fdcache::FdCache,
}

impl DirDisk {
    /// A member rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirDisk {
            root: root.into(),
            direct: std::sync::atomic::AtomicBool::new(true),
            fds: Default::default(),
        }
    }

    /// The member root, opened now (so a directory swapped in at the
    /// configured path is what the next operation sees, as with paths).
    fn root(&self) -> io::Result<OwnedFd> {
        beneath::open_root(&self.root)
    }

    /// Open `rel` beneath the root, never through a symlink.
    fn open(&self, rel: &str, flags: i32) -> io::Result<File> {
        beneath::open_file(&self.root()?, rel, flags, FILE_MODE)
    }
}

/// Turn off readahead on a shard file opened for reading. Shard reads
/// always ask for exactly the bytes they need (a whole shard, or the
/// header and the blocks a small read covers), so readahead only adds
/// I/O: with the device's window (8 MiB on the machines we measure), a
/// 16 KiB random read pulled in most of a 1 MiB shard, and 4 KiB random
/// reads through the mount cost 6.7× their bytes at the disk.
fn no_readahead(f: &File) {
    // SAFETY: advice on an open descriptor we own; no memory is passed.
    // Failure only leaves readahead on, which is harmless.
    let _ = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
}

const CREATE: i32 = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;

impl DirDisk {
    fn write_synced(&self, rel: &str, parts: &[&[u8]], uncached: bool) -> io::Result<()> {
        self.fds.forget(rel);
        let root = self.root()?;
        super::direct::write_synced(
            &|flags| beneath::open_file(&root, rel, flags, FILE_MODE),
            &|| beneath::unlink(&root, rel),
            &self.root.join(rel),
            parts,
            &self.direct,
            uncached,
        )
    }
}

impl DiskBackend for DirDisk {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn write_file(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        self.fds.forget(rel);
        let mut f = self.open(rel, CREATE)?;
        for p in parts {
            f.write_all(p)?;
        }
        Ok(())
    }

    fn write_at(&self, rel: &str, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        // (a cached read descriptor stays good: same file, new bytes,
        // which the page cache shows to it)
        let f = self.open(rel, libc::O_WRONLY | libc::O_CREAT)?;
        let mut at = offset;
        for p in parts {
            f.write_all_at(p, at)?;
            at += p.len() as u64;
        }
        Ok(())
    }

    fn write_at_durable(
        &self,
        rel: &str,
        offset: u64,
        parts: &[&[u8]],
        allocate: u64,
    ) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let f = self.open(rel, libc::O_WRONLY | libc::O_CREAT)?;
        if allocate > 0 {
            // mode 0 allocates holes only and may grow the size: written
            // bytes stay as they are. Filesystems without it just append.
            // SAFETY: `f` is an open descriptor owned by this frame.
            let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, allocate as libc::off_t) };
            if r != 0 {
                let e = io::Error::last_os_error();
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
                ) {
                    return Err(e);
                }
            }
        }
        let mut at = offset;
        for p in parts {
            f.write_all_at(p, at)?;
            at += p.len() as u64;
        }
        f.sync_data()
    }

    fn write_file_durable(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        self.write_synced(rel, parts, false)
    }

    fn write_file_durable_uncached(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        self.write_synced(rel, parts, true)
    }

    fn create_atomic<'a>(&'a self, rel: &str) -> io::Result<Option<Box<dyn AtomicFile + 'a>>> {
        self.fds.forget(rel);
        let root = self.root()?;
        let tmp = format!("{rel}.tmp");
        let f = beneath::open_file(&root, &tmp, CREATE, FILE_MODE)?;
        Ok(Some(Box::new(StreamedAtomic {
            disk: self,
            root,
            tmp,
            rel: rel.to_string(),
            out: Some(io::BufWriter::with_capacity(1 << 20, f)),
        })))
    }

    fn write_atomic(&self, rel: &str, data: &[u8]) -> io::Result<()> {
        self.fds.forget(rel);
        let root = self.root()?;
        let tmp = format!("{rel}.tmp");
        {
            let mut f = beneath::open_file(&root, &tmp, CREATE, FILE_MODE)?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        beneath::rename(&root, &tmp, rel)?;
        match rel.rsplit_once('/') {
            Some((dir, _)) => self.sync_dir(dir),
            None => File::from(beneath::open_root_dir(&self.root)?).sync_all(),
        }
    }

    fn read_file(&self, rel: &str) -> io::Result<Vec<u8>> {
        let mut f = self.open(rel, libc::O_RDONLY)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)?;
        no_readahead(&f);
        self.fds.keep(rel, std::sync::Arc::new(f));
        Ok(v)
    }

    fn read_range(&self, rel: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        // always a fresh open (scrub and repair see what is on disk now);
        // kept afterwards for read_cached
        let f = self.open(rel, libc::O_RDONLY)?;
        no_readahead(&f);
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = f.read_at(&mut buf[got..], offset + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        self.fds.keep(rel, std::sync::Arc::new(f));
        Ok(buf)
    }

    fn read_cached(&self, rel: &str, offset: u64, len: usize) -> Option<Vec<u8>> {
        self.fds.read_cached(rel, offset, len)
    }

    fn remove_file(&self, rel: &str) -> io::Result<()> {
        self.fds.forget(rel);
        match beneath::unlink(&self.root()?, rel) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn punch_hole(&self, rel: &str, offset: u64, len: u64) -> io::Result<()> {
        let f = match self.open(rel, libc::O_WRONLY) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        // SAFETY: `f` is an open descriptor owned by this frame; no memory
        // is passed.
        let r = unsafe {
            libc::fallocate(
                f.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            if !matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
            ) {
                return Err(e);
            }
        }
        Ok(())
    }

    fn list_dir(&self, rel: &str) -> io::Result<Vec<String>> {
        beneath::list_dir(&self.root()?, rel)
    }

    fn create_dir_all(&self, rel: &str) -> io::Result<()> {
        beneath::create_dir_all(&self.root()?, rel, crate::guard::modes::DIR_MODE)
    }

    fn sync_file(&self, rel: &str) -> io::Result<()> {
        self.open(rel, libc::O_RDONLY)?.sync_data()
    }

    fn sync_dir(&self, rel: &str) -> io::Result<()> {
        self.open(rel, libc::O_RDONLY | libc::O_DIRECTORY)?
            .sync_all()
    }

    fn sync_fs(&self) -> io::Result<()> {
        let f = File::from(beneath::open_root_dir(&self.root)?);
        nix::unistd::syncfs(&f).map_err(io::Error::from)
    }

    fn fs_id(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&self.root).ok().map(|m| m.dev())
    }

    fn capacity(&self) -> io::Result<(u64, u64)> {
        let st = nix::sys::statvfs::statvfs(&self.root).map_err(io::Error::from)?;
        let frag = st.fragment_size() as u64;
        Ok((
            st.blocks() as u64 * frag,
            st.blocks_available() as u64 * frag,
        ))
    }
}

/// An in-memory member for fast tests below FUSE. `fail` makes every call
/// return EIO, as a dead drive would.
#[derive(Debug, Default)]
pub struct MemDisk {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
    /// When set, every operation fails with EIO.
    pub fail: std::sync::atomic::AtomicBool,
}

impl MemDisk {
    fn check(&self) -> io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            Ok(())
        }
    }

    /// Apply `f` to the stored bytes of `rel` (fault injection).
    pub fn corrupt(&self, rel: &str, f: impl FnOnce(&mut Vec<u8>)) -> bool {
        match self.files.lock().unwrap().get_mut(rel) {
            Some(v) => {
                f(v);
                true
            }
            None => false,
        }
    }
}

impl DiskBackend for MemDisk {
    fn describe(&self) -> String {
        "mem".into()
    }
    fn local_root(&self) -> Option<&Path> {
        None
    }
    fn write_file(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        self.check()?;
        self.files
            .lock()
            .unwrap()
            .insert(rel.to_string(), parts.concat());
        Ok(())
    }
    fn write_at(&self, rel: &str, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        self.check()?;
        let mut files = self.files.lock().unwrap();
        let f = files.entry(rel.to_string()).or_default();
        splice_at(f, offset, parts);
        Ok(())
    }
    fn write_atomic(&self, rel: &str, data: &[u8]) -> io::Result<()> {
        self.write_file(rel, &[data])
    }
    fn read_file(&self, rel: &str) -> io::Result<Vec<u8>> {
        self.check()?;
        self.files
            .lock()
            .unwrap()
            .get(rel)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
    fn read_range(&self, rel: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let all = self.read_file(rel)?;
        let start = (offset as usize).min(all.len());
        let end = start.saturating_add(len).min(all.len());
        Ok(all[start..end].to_vec())
    }
    fn remove_file(&self, rel: &str) -> io::Result<()> {
        self.check()?;
        self.files.lock().unwrap().remove(rel);
        Ok(())
    }
    fn punch_hole(&self, rel: &str, offset: u64, len: u64) -> io::Result<()> {
        self.check()?;
        if let Some(f) = self.files.lock().unwrap().get_mut(rel) {
            zero_range(f, offset, len);
        }
        Ok(())
    }
    fn list_dir(&self, rel: &str) -> io::Result<Vec<String>> {
        self.check()?;
        let prefix = format!("{rel}/");
        Ok(self
            .files
            .lock()
            .unwrap()
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string)
            .collect())
    }
    fn create_dir_all(&self, _rel: &str) -> io::Result<()> {
        self.check()
    }
    fn sync_file(&self, _rel: &str) -> io::Result<()> {
        self.check()
    }
    fn sync_dir(&self, _rel: &str) -> io::Result<()> {
        self.check()
    }
    fn capacity(&self) -> io::Result<(u64, u64)> {
        self.check()?;
        Ok((1 << 40, 1 << 40))
    }
    fn sync_fs(&self) -> io::Result<()> {
        self.check()
    }
    fn fs_id(&self) -> Option<u64> {
        None
    }
}

/// Zero bytes `[offset, offset + len)` of `buf` that exist (a punched
/// hole: the length does not change).
pub(crate) fn zero_range(buf: &mut [u8], offset: u64, len: u64) {
    let start = (offset.min(buf.len() as u64)) as usize;
    let end = (offset.saturating_add(len).min(buf.len() as u64)) as usize;
    buf[start..end].fill(0);
}

/// Write `parts` at `offset` of `buf`, zero-filling any gap (what a sparse
/// file reads as).
pub(crate) fn splice_at(buf: &mut Vec<u8>, offset: u64, parts: &[&[u8]]) {
    let mut at = offset as usize;
    for p in parts {
        if buf.len() < at + p.len() {
            buf.resize(at + p.len(), 0);
        }
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
}
