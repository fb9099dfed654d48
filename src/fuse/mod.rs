//! The FUSE glue: the only module that names fuser. Each callback decodes
//! the request, calls one `Fs` method and turns the result into a reply or
//! an errno.

use crate::fs::names::NAME_MAX;
use crate::fs::{AtimeMode, Attr, Fs, FsError, Kind};
use crate::metrics::{FuseStats, Op};
use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may cache entries and attributes. Every change goes
/// through this daemon and its reply carries the new attributes, so the
/// kernel's cache is updated on each change.
const TTL: Duration = Duration::from_secs(1);
/// Largest request the kernel sends (this kernel caps FUSE requests at 1 MiB).
const MAX_IO: u32 = 1 << 20;

/// The fuser adapter around [`Fs`].
#[derive(Debug)]
pub struct FuseFs {
    fs: Arc<Fs>,
    /// requests, errors and latency per operation
    stats: Arc<FuseStats>,
    /// ask the kernel for passthrough at init
    want_passthrough: bool,
    /// passthrough backing files registered with the kernel
    backing: Mutex<Backing>,
    /// how reads update access times
    atime: AtimeMode,
    /// the test-only panic trigger is armed ([`TEST_PANIC_XATTR`])
    test_panic: bool,
}

/// Backing ids of passthrough opens. The kernel wants one backing file per
/// inode while it is open in passthrough mode, so an id is shared by the
/// open handles of an inode (`Fs` hands them all the same file) and closed
/// with the last of them.
#[derive(Debug, Default)]
struct Backing {
    by_inode: HashMap<u64, Weak<BackingId>>,
    by_handle: HashMap<u64, Arc<BackingId>>,
}

impl FuseFs {
    /// Wrap a filesystem.
    pub fn new(fs: Arc<Fs>) -> Self {
        Self::with_stats(fs, Arc::default())
    }

    /// Wrap a filesystem, counting requests into `stats` (the metrics).
    pub fn with_stats(fs: Arc<Fs>, stats: Arc<FuseStats>) -> Self {
        FuseFs {
            fs,
            stats,
            want_passthrough: true,
            backing: Mutex::default(),
            atime: AtimeMode::default(),
            test_panic: test_panic_armed(),
        }
    }

    /// How reads update access times (default relatime).
    pub fn atime(mut self, mode: AtimeMode) -> Self {
        self.atime = mode;
        self
    }

    /// A read or readdir of `ino` reached us: its atime, as the mount
    /// says. A failure (a read-only pool) fails nothing: the read worked.
    fn accessed(&self, ino: u64) {
        if let Err(e) = self.fs.note_access(ino, self.atime) {
            log::debug!("atime of inode {ino} not updated: {e}");
        }
    }

    /// Whether to serve hot replicas through FUSE passthrough (default on;
    /// it also needs the kernel's consent at init).
    pub fn passthrough(mut self, on: bool) -> Self {
        self.want_passthrough = on;
        self
    }

    /// Reply to an open that `Fs` granted passthrough on `file`.
    fn open_passthrough(&self, ino: u64, fh: u64, file: &std::fs::File, reply: ReplyOpen) {
        let mut b = self.backing.lock().unwrap_or_else(|p| p.into_inner());
        let id = match b.by_inode.get(&ino).and_then(Weak::upgrade) {
            Some(id) => Ok(id),
            None => reply.open_backing(file).map(Arc::new),
        };
        match id {
            Ok(id) => {
                b.by_inode.insert(ino, Arc::downgrade(&id));
                b.by_handle.insert(fh, id.clone());
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id)
            }
            Err(e) => {
                drop(b);
                if e.raw_os_error() == Some(libc::EPERM) {
                    // registering backing files needs CAP_SYS_ADMIN: no
                    // open of this mount will get it, so stop asking
                    self.fs
                        .replicas
                        .passthrough
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    log::warn!(
                        "FUSE passthrough needs CAP_SYS_ADMIN (run the daemon as root): \
                         off for this mount, replicas are read through the daemon"
                    );
                } else {
                    log::warn!(
                        "passthrough for inode {ino} refused by the kernel ({e}): served by the daemon"
                    );
                }
                self.fs.passthrough_refused(fh);
                reply.opened(FileHandle(fh), FopenFlags::empty())
            }
        }
    }
}

fn errno(e: &FsError) -> Errno {
    match e {
        FsError::Pool(_) | FsError::Meta(_) | FsError::Corrupt(_) => {
            log::error!("I/O error: {e}");
        }
        _ => log::debug!("error: {e}"),
    }
    Errno::from_i32(e.errno())
}

/// Run one request handler under [`crate::guard::panic::contain`]: a panic
/// is logged with the operation's name, and the reply, which the handler
/// owns, is dropped while unwinding, so fuser answers the kernel EIO; the
/// worker thread lives on to serve the next request.
fn contain_request(op: &str, f: impl FnOnce()) {
    let _ = crate::guard::panic::contain(&format!("fuse request {op} (answered EIO)"), f);
}

/// The test-only panic trigger: `getxattr` of this name panics when the
/// daemon was started with `SHARDFS_TEST_PANIC=1` (see docs/security.md;
/// tests use it to show a panicking request answers EIO). Without the
/// variable the name is an ordinary, absent xattr.
const TEST_PANIC_XATTR: &[u8] = b"user.shardfs.test-panic";

/// Whether the test-only panic trigger is armed (read once per mount).
fn test_panic_armed() -> bool {
    std::env::var_os("SHARDFS_TEST_PANIC").is_some_and(|v| v == "1")
}

/// Reply to an empty-reply request with success or the error's errno.
fn reply_empty(r: Result<(), FsError>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

/// Reply to getxattr/listxattr: the size when asked with 0, ERANGE when
/// the value does not fit `size`, else the bytes.
fn reply_xattr(
    t: &mut crate::metrics::Timer<'_>,
    r: Result<Vec<u8>, FsError>,
    size: u32,
    reply: ReplyXattr,
) {
    match t.check(r) {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => {
            t.fail();
            reply.error(Errno::ERANGE)
        }
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(&e)),
    }
}

/// Reply with a new or found entry, or the error's errno.
fn reply_entry(r: Result<Attr, FsError>, reply: ReplyEntry) {
    match r {
        Ok(a) => reply.entry(&TTL, &attr(&a), Generation(0)),
        Err(e) => reply.error(errno(&e)),
    }
}

fn ts(t: (i64, u32)) -> SystemTime {
    if t.0 >= 0 {
        UNIX_EPOCH + Duration::new(t.0 as u64, t.1)
    } else {
        UNIX_EPOCH - Duration::new((-t.0) as u64, 0) + Duration::new(0, t.1)
    }
}

fn from_systime(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
            }
        }
    }
}

fn kind(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

fn attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: ts(a.atime),
        mtime: ts(a.mtime),
        ctime: ts(a.ctime),
        crtime: ts(a.crtime),
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 128 * 1024,
        flags: 0,
    }
}

fn time_or_now(t: Option<TimeOrNow>) -> Option<Option<(i64, u32)>> {
    t.map(|t| match t {
        TimeOrNow::Now => None,
        TimeOrNow::SpecificTime(s) => Some(from_systime(s)),
    })
}

fn node_kind(mode: u32) -> Option<Kind> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => Some(Kind::File),
        libc::S_IFIFO => Some(Kind::Fifo),
        libc::S_IFSOCK => Some(Kind::Socket),
        libc::S_IFCHR => Some(Kind::CharDev),
        libc::S_IFBLK => Some(Kind::BlockDev),
        _ => None,
    }
}

/// Open flags of the handle a create hands back. A write-only handle of
/// a new file is direct I/O: its writes reach us as they are, as through
/// the page cache without writeback caching, but the kernel does not ask
/// for `security.capability` before the first write of the new inode (a
/// cached write does, once per inode, even with HANDLE_KILLPRIV_V2: one
/// more round trip per small file). The kernel still tells us to clear
/// set-user/group-id (`FUSE_WRITE_KILL_SUIDGID`, see `write`), and drops
/// other handles' cached pages of each written range; with
/// `FUSE_DIRECT_IO_ALLOW_MMAP` it writes their dirty pages (a shared
/// mapping through another handle) back first, so they cannot land over
/// the direct write later. Such a handle cannot read or map the file, so
/// nothing else changes for it; read-write creates (databases that map
/// their files) stay cached.
fn create_open_flags(flags: i32) -> FopenFlags {
    if flags & libc::O_ACCMODE == libc::O_WRONLY {
        FopenFlags::FOPEN_DIRECT_IO
    } else {
        FopenFlags::empty()
    }
}

fn new_node(req: &Request, kind: Kind, mode: u32, umask: u32) -> crate::fs::NewNode {
    crate::fs::NewNode {
        kind,
        perm: (mode & !umask & 0o7777) as u16,
        uid: req.uid(),
        gid: req.gid(),
        rdev: 0,
        target: Vec::new(),
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        let _ = config.set_max_background(64);
        // the kernel then skips its getxattr(security.capability) before
        // every write and asks us to clear set-user/group-id instead
        if config
            .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            .is_ok()
        {
            log::debug!("FUSE_HANDLE_KILLPRIV_V2 on");
        }
        // direct writes (write-only creates, see `create_open_flags`)
        // then write other handles' dirty pages of the range back first
        if config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_ok()
        {
            log::debug!("FUSE_DIRECT_IO_ALLOW_MMAP on");
        }
        if self.want_passthrough {
            // backing files are on ordinary filesystems: depth 1
            match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
                Ok(()) => {
                    let _ = config.set_max_stack_depth(1);
                    self.fs
                        .replicas
                        .passthrough
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    log::info!("FUSE passthrough on: hot replicas are read by the kernel");
                }
                Err(_) => {
                    log::info!("this kernel offers no FUSE passthrough: replicas are not served")
                }
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.sync_all() {
            log::error!("final sync at unmount failed: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        contain_request("lookup", move || {
            let mut t = self.stats.start(Op::Lookup);
            reply_entry(t.check(self.fs.lookup(parent.0, name.as_bytes())), reply)
        })
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        contain_request("getattr", move || {
            let mut t = self.stats.start(Op::Getattr);
            match t.check(self.fs.getattr(ino.0)) {
                Ok(a) => reply.attr(&TTL, &attr(&a)),
                Err(e) => reply.error(errno(&e)),
            }
        })
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        contain_request("setattr", move || {
            let mut t = self.stats.start(Op::Setattr);
            let s = crate::fs::SetAttr {
                mode,
                uid,
                gid,
                size,
                atime: time_or_now(atime),
                mtime: time_or_now(mtime),
            };
            // (HANDLE_KILLPRIV_V2) a truncate by an unprivileged caller clears
            // set-user/group-id; the kernel's flag for it does not reach us,
            // so the caller's uid stands in for the missing CAP_FSETID
            let kill = size.is_some() && mode.is_none() && req.uid() != 0;
            let r = self.fs.setattr(ino.0, s).and_then(|a| {
                if kill {
                    self.fs.kill_suidgid(ino.0)?;
                    return self.fs.getattr(ino.0);
                }
                Ok(a)
            });
            match t.check(r) {
                Ok(a) => reply.attr(&TTL, &attr(&a)),
                Err(e) => reply.error(errno(&e)),
            }
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        contain_request("readlink", move || {
            let mut t = self.stats.start(Op::Readlink);
            match t.check(self.fs.readlink(ino.0)) {
                Ok(t) => reply.data(&t),
                Err(e) => reply.error(errno(&e)),
            }
        })
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        contain_request("mknod", move || {
            let mut t = self.stats.start(Op::Mknod);
            let Some(k) = node_kind(mode) else {
                t.fail();
                return reply.error(Errno::EINVAL);
            };
            let mut n = new_node(req, k, mode, umask);
            n.rdev = rdev;
            reply_entry(
                t.check(self.fs.create_node(parent.0, name.as_bytes(), n)),
                reply,
            )
        })
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        contain_request("mkdir", move || {
            let mut t = self.stats.start(Op::Mkdir);
            let n = new_node(req, Kind::Dir, mode, umask);
            reply_entry(
                t.check(self.fs.create_node(parent.0, name.as_bytes(), n)),
                reply,
            )
        })
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        contain_request("unlink", move || {
            let mut t = self.stats.start(Op::Unlink);
            reply_empty(t.check(self.fs.unlink(parent.0, name.as_bytes())), reply)
        })
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        contain_request("rmdir", move || {
            let mut t = self.stats.start(Op::Rmdir);
            reply_empty(t.check(self.fs.rmdir(parent.0, name.as_bytes())), reply)
        })
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        contain_request("symlink", move || {
            let mut timer = self.stats.start(Op::Symlink);
            let t = target.as_os_str().as_bytes();
            if t.len() > 4096 {
                timer.fail();
                return reply.error(Errno::ENAMETOOLONG);
            }
            let mut n = new_node(req, Kind::Symlink, 0o777, 0);
            n.target = t.to_vec();
            reply_entry(
                timer.check(self.fs.create_node(parent.0, link_name.as_bytes(), n)),
                reply,
            )
        })
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        contain_request("rename", move || {
            let mut t = self.stats.start(Op::Rename);
            // as Linux: unknown flags, and RENAME_EXCHANGE with
            // RENAME_NOREPLACE or RENAME_WHITEOUT, are EINVAL (the kernel
            // checks CAP_MKNOD for RENAME_WHITEOUT before asking us)
            let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
            let whiteout = flags.contains(RenameFlags::RENAME_WHITEOUT);
            if !RenameFlags::all().contains(flags)
                || (exchange && (whiteout || flags.contains(RenameFlags::RENAME_NOREPLACE)))
            {
                t.fail();
                return reply.error(Errno::EINVAL);
            }
            if exchange {
                return reply_empty(
                    t.check(self.fs.rename_exchange(
                        parent.0,
                        name.as_bytes(),
                        newparent.0,
                        newname.as_bytes(),
                    )),
                    reply,
                );
            }
            let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
            if whiteout {
                return reply_empty(
                    t.check(self.fs.rename_whiteout(
                        parent.0,
                        name.as_bytes(),
                        newparent.0,
                        newname.as_bytes(),
                        noreplace,
                        (req.uid(), req.gid()),
                    )),
                    reply,
                );
            }
            reply_empty(
                t.check(self.fs.rename(
                    parent.0,
                    name.as_bytes(),
                    newparent.0,
                    newname.as_bytes(),
                    noreplace,
                )),
                reply,
            )
        })
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        contain_request("link", move || {
            let mut t = self.stats.start(Op::Link);
            reply_entry(
                t.check(self.fs.link(ino.0, newparent.0, newname.as_bytes())),
                reply,
            )
        })
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        contain_request("open", move || {
            let mut t = self.stats.start(Op::Open);
            let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
            match t.check(self.fs.open_ex(ino.0, writable)) {
                Ok((fh, None)) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Ok((fh, Some(file))) => self.open_passthrough(ino.0, fh, &file, reply),
                Err(e) => reply.error(errno(&e)),
            }
        })
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        contain_request("read", move || {
            let mut t = self.stats.start(Op::Read);
            match t.check(self.fs.read(ino.0, offset, size.min(MAX_IO))) {
                Ok(d) => {
                    t.bytes(d.len() as u64);
                    // before the reply: the kernel drops its cached atime when
                    // the read completes, and a stat right after must see it
                    self.accessed(ino.0);
                    reply.data(&d)
                }
                Err(e) => reply.error(errno(&e)),
            }
        })
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        contain_request("write", move || {
            let mut t = self.stats.start(Op::Write);
            // (HANDLE_KILLPRIV_V2) a writer without CAP_FSETID clears the
            // set-user-id and set-group-id bits, as a local filesystem does
            if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                if let Err(e) = self.fs.kill_suidgid(ino.0) {
                    return reply.error(errno(&e));
                }
            }
            match t.check(self.fs.write(ino.0, offset, data)) {
                Ok(n) => {
                    t.bytes(n as u64);
                    reply.written(n)
                }
                Err(e) => reply.error(errno(&e)),
            }
        })
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        contain_request("flush", move || {
            // flush is close(2): data written through this handle becomes durable
            let mut t = self.stats.start(Op::Flush);
            reply_empty(t.check(self.fs.flush_handle(fh.0)), reply)
        })
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        contain_request("release", move || {
            let mut t = self.stats.start(Op::Release);
            let r = self.fs.release(fh.0);
            // after `Fs` has released the handle: a concurrent open that `Fs`
            // still counts this handle for finds the id alive
            let id = {
                let mut b = self.backing.lock().unwrap_or_else(|p| p.into_inner());
                let id = b.by_handle.remove(&fh.0);
                if id.as_ref().is_some_and(|id| Arc::strong_count(id) == 1) {
                    b.by_inode.remove(&ino.0);
                }
                id
            };
            drop(id);
            reply_empty(t.check(r), reply)
        })
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        contain_request("fsync", move || {
            let mut t = self.stats.start(Op::Fsync);
            reply_empty(t.check(self.fs.fsync(ino.0)), reply)
        })
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        contain_request("opendir", move || {
            let mut t = self.stats.start(Op::Opendir);
            match t.check(self.fs.getattr(ino.0)) {
                Ok(a) if a.kind == Kind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
                Ok(_) => {
                    t.fail();
                    reply.error(Errno::ENOTDIR)
                }
                Err(e) => reply.error(errno(&e)),
            }
        })
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        contain_request("readdir", move || {
            let mut t = self.stats.start(Op::Readdir);
            match t.check(self.fs.readdir(ino.0, offset, 512)) {
                Ok(entries) => {
                    if offset == 0 {
                        self.accessed(ino.0);
                    }
                    for (child, next, k, name) in entries {
                        if reply.add(INodeNo(child), next, kind(k), OsStr::from_bytes(&name)) {
                            break;
                        }
                    }
                    reply.ok()
                }
                Err(e) => reply.error(errno(&e)),
            }
        })
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        contain_request("fsyncdir", move || {
            let mut t = self.stats.start(Op::Fsyncdir);
            match t.check(self.fs.meta.sync()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e.into())),
            }
        })
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        contain_request("statfs", move || {
            let _t = self.stats.start(Op::Statfs);
            let (total, free, files) = self.fs.statfs();
            let bs = 4096u64;
            reply.statfs(
                total / bs,
                free / bs,
                free / bs,
                files,
                u32::MAX as u64,
                bs as u32,
                NAME_MAX as u32,
                bs as u32,
            );
        })
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        contain_request("setxattr", move || {
            let mut t = self.stats.start(Op::Setxattr);
            let create = flags & libc::XATTR_CREATE != 0;
            let replace = flags & libc::XATTR_REPLACE != 0;
            match t.check(
                self.fs
                    .setxattr(ino.0, name.as_bytes(), value, create, replace),
            ) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        })
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        contain_request("getxattr", move || {
            if self.test_panic && name.as_bytes() == TEST_PANIC_XATTR {
                panic!(
                    "test-only panic trigger (SHARDFS_TEST_PANIC=1) on inode {}",
                    ino.0
                );
            }
            let mut t = self.stats.start(Op::Getxattr);
            reply_xattr(
                &mut t,
                self.fs.getxattr(ino.0, name.as_bytes()),
                size,
                reply,
            )
        })
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        contain_request("listxattr", move || {
            let mut t = self.stats.start(Op::Listxattr);
            let privileged = req.uid() == 0;
            reply_xattr(&mut t, self.fs.listxattr_as(ino.0, privileged), size, reply)
        })
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        contain_request("removexattr", move || {
            let mut t = self.stats.start(Op::Removexattr);
            reply_empty(t.check(self.fs.removexattr(ino.0, name.as_bytes())), reply)
        })
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        contain_request("access", move || {
            // permissions are enforced by the kernel (default_permissions)
            let mut t = self.stats.start(Op::Access);
            match t.check(self.fs.getattr(ino.0)) {
                Ok(_) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        })
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        contain_request("fallocate", move || {
            let mut t = self.stats.start(Op::Fallocate);
            reply_empty(
                t.check(self.fs.fallocate(ino.0, offset, length, mode)),
                reply,
            )
        })
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        contain_request("create", move || {
            let mut t = self.stats.start(Op::Create);
            let Some(k) = node_kind(mode) else {
                t.fail();
                return reply.error(Errno::EINVAL);
            };
            let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
            let n = new_node(req, k, mode, umask);
            match t.check(self.fs.create_open(parent.0, name.as_bytes(), n, writable)) {
                Ok((a, fh)) => reply.created(
                    &TTL,
                    &attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    create_open_flags(flags),
                ),
                Err(e) => reply.error(errno(&e)),
            }
        })
    }
}

/// The kernel's caches of a mounted session, invalidated on changes the
/// S3 endpoint makes (so a FUSE program sees a new object at its next
/// open, not a cached entry of the old one for up to the TTL).
#[derive(Debug)]
pub struct KernelCache(fuser::Notifier);

impl KernelCache {
    /// Invalidations through the session's notifier.
    pub fn new(n: fuser::Notifier) -> Self {
        KernelCache(n)
    }
}

impl crate::s3::Invalidate for KernelCache {
    fn entry(&self, parent: u64, name: &[u8]) {
        // ENOENT (nothing cached) is no error; others are only logged
        if let Err(e) = self.0.inval_entry(INodeNo(parent), OsStr::from_bytes(name)) {
            log::debug!("inval_entry({parent}): {e}");
        }
    }

    fn inode(&self, ino: u64) {
        // a negative offset: the attributes only
        if let Err(e) = self.0.inval_inode(INodeNo(ino), -1, 0) {
            log::debug!("inval_inode({ino}): {e}");
        }
    }
}
