//! Linux paths through a real mount (issue 14, "every Linux path works"):
//! paths as long as the kernel passes, renameat2, fallocate, atime. Each
//! case is one that ext4 passes; raw libc calls stand in where std has no
//! wrapper.

mod common;
use common::*;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;

fn cs(p: &[u8]) -> CString {
    CString::new(p).unwrap()
}

/// Panic with the errno if a libc call failed.
fn ok(r: libc::c_int, what: &str) -> libc::c_int {
    assert!(r >= 0, "{what}: {}", std::io::Error::last_os_error());
    r
}

/// The errno of a libc call that must fail.
fn fails(r: libc::c_int, what: &str) -> i32 {
    assert_eq!(r, -1, "{what} succeeded");
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

/// fstatat without following a symlink.
fn lstat_at(dfd: i32, p: &[u8]) -> libc::stat {
    let c = cs(p);
    // SAFETY: zeroed stat is a valid out buffer; c is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    ok(
        unsafe { libc::fstatat(dfd, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) },
        "fstatat",
    );
    st
}

/// `dir` joined with a name made of `n` bytes `c`.
fn child(dir: &[u8], c: u8, n: usize) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend(std::iter::repeat_n(c, n));
    p
}

/// pjdfstest's PATH_MAX cases (chmod, chown, link, mkdir, mkfifo, mknod,
/// open, rename, rmdir, symlink, truncate, unlink) on a path of 4095 bytes
/// (PATH_MAX less its NUL) made of 255-byte components, relative to the
/// bucket as pjdfstest's are to its working directory; and a key deeper
/// than PATH_MAX through relative opens, which ext4 allows too. Keys were
/// capped at S3's 1024 bytes before.
#[test]
fn path_max_paths_of_255_byte_components_work_like_ext4() {
    let mut t = TestMount::new(6, &[]);
    fs::create_dir(t.p("bkt")).unwrap();
    let bkt = File::open(t.p("bkt")).unwrap();
    let dfd = bkt.as_raw_fd();
    // 15 directories of 255 bytes: 15 × 256 - 1 = 3839 bytes
    let mut dir = Vec::new();
    for i in 0..15u8 {
        dir = child(&dir, b'a' + i, 255);
        let c = cs(&dir);
        // SAFETY: NUL-terminated path, valid directory fd.
        ok(unsafe { libc::mkdirat(dfd, c.as_ptr(), 0o755) }, "mkdirat");
    }
    let leaf = |c: u8| child(&dir, c, 255);
    let (f, g, h) = (leaf(b'f'), leaf(b'g'), leaf(b'h'));
    assert_eq!(f.len(), 4095);
    let (cf, cg, ch) = (cs(&f), cs(&g), cs(&h));

    // SAFETY (this block): every path is a NUL-terminated CString that
    // outlives the call, every fd is open.
    unsafe {
        // open (O_CREAT), then write and read through it
        let fd = ok(
            libc::openat(dfd, cf.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o644),
            "open",
        );
        let mut file = File::from_raw_fd_checked(fd);
        file.write_all(b"deep").unwrap();
        drop(file);
        assert_eq!(lstat_at(dfd, &f).st_size, 4);
        // chmod, chown
        ok(libc::fchmodat(dfd, cf.as_ptr(), 0o642, 0), "chmod");
        assert_eq!(lstat_at(dfd, &f).st_mode & 0o7777, 0o642);
        ok(libc::fchownat(dfd, cf.as_ptr(), 65534, 65533, 0), "chown");
        let st = lstat_at(dfd, &f);
        assert_eq!((st.st_uid, st.st_gid), (65534, 65533));
        // truncate: there is no truncateat, and the daemon sees the same
        // setattr from ftruncate
        let fd = ok(libc::openat(dfd, cf.as_ptr(), libc::O_WRONLY), "open");
        ok(libc::ftruncate(fd, 123), "truncate");
        libc::close(fd);
        assert_eq!(lstat_at(dfd, &f).st_size, 123);
        // link, rename, unlink
        ok(libc::linkat(dfd, cf.as_ptr(), dfd, cg.as_ptr(), 0), "link");
        assert_eq!(lstat_at(dfd, &f).st_nlink, 2);
        ok(libc::renameat(dfd, cg.as_ptr(), dfd, ch.as_ptr()), "rename");
        assert_eq!(
            fails(
                libc::unlinkat(dfd, cg.as_ptr(), 0),
                "unlink of the old name"
            ),
            libc::ENOENT
        );
        ok(libc::unlinkat(dfd, ch.as_ptr(), 0), "unlink");
        ok(libc::unlinkat(dfd, cf.as_ptr(), 0), "unlink");
        // mkdir, rmdir
        ok(libc::mkdirat(dfd, cf.as_ptr(), 0o755), "mkdir");
        assert_eq!(lstat_at(dfd, &f).st_mode & libc::S_IFMT, libc::S_IFDIR);
        ok(
            libc::unlinkat(dfd, cf.as_ptr(), libc::AT_REMOVEDIR),
            "rmdir",
        );
        // mkfifo, mknod (a character device: tests run as root)
        ok(libc::mkfifoat(dfd, cf.as_ptr(), 0o644), "mkfifo");
        assert_eq!(lstat_at(dfd, &f).st_mode & libc::S_IFMT, libc::S_IFIFO);
        ok(libc::unlinkat(dfd, cf.as_ptr(), 0), "unlink fifo");
        let dev = libc::makedev(1, 3);
        ok(
            libc::mknodat(dfd, cf.as_ptr(), libc::S_IFCHR | 0o600, dev),
            "mknod",
        );
        let st = lstat_at(dfd, &f);
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFCHR);
        assert_eq!(st.st_rdev, dev);
        ok(libc::unlinkat(dfd, cf.as_ptr(), 0), "unlink device");
        // symlink (its target a path of the same length), readlink
        let target = cs(&f);
        ok(
            libc::symlinkat(target.as_ptr(), dfd, cg.as_ptr()),
            "symlink",
        );
        let mut buf = vec![0u8; 8192];
        let n = libc::readlinkat(dfd, cg.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        assert_eq!(&buf[..n as usize], &f[..]);
        ok(libc::unlinkat(dfd, cg.as_ptr(), 0), "unlink symlink");

        // one byte more than the kernel passes: ENAMETOOLONG (from the
        // kernel, as on ext4)
        let mut over = f.clone();
        over.push(b'x');
        let co = cs(&over);
        assert_eq!(
            fails(
                libc::mkdirat(dfd, co.as_ptr(), 0o755),
                "mkdir of 4096 bytes"
            ),
            libc::ENAMETOOLONG
        );
        // a 256-byte component stays ENAMETOOLONG (from shardfs)
        let long = cs(&child(b"", b'n', 256));
        assert_eq!(
            fails(
                libc::openat(dfd, long.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o644),
                "create of a 256-byte name"
            ),
            libc::ENAMETOOLONG
        );

        // below the deepest directory, through its fd: a key of 4.6 KB
        let cd = cs(&dir);
        let deep = ok(
            libc::openat(dfd, cd.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY),
            "open deepest directory",
        );
        let deep = File::from_raw_fd_checked(deep);
        let more = child(&child(b"", b'y', 255), b'z', 255);
        let cy = cs(&child(b"", b'y', 255));
        ok(libc::mkdirat(deep.as_raw_fd(), cy.as_ptr(), 0o755), "mkdir");
        let cz = cs(&more);
        ok(libc::mkdirat(deep.as_raw_fd(), cz.as_ptr(), 0o755), "mkdir");
        let file = child(&more, b'w', 255);
        let cw = cs(&file);
        let fd = ok(
            libc::openat(
                deep.as_raw_fd(),
                cw.as_ptr(),
                libc::O_CREAT | libc::O_RDWR,
                0o644,
            ),
            "create below PATH_MAX",
        );
        let mut w = File::from_raw_fd_checked(fd);
        w.write_all(&pattern(7, 100_000)).unwrap();
        drop(w);
        drop(deep);
    }
    drop(bkt);

    // everything is still there after a remount
    t.remount();
    let bkt = File::open(t.p("bkt")).unwrap();
    assert_eq!(lstat_at(bkt.as_raw_fd(), &dir).st_nlink, 3);
    // the key below the bucket: 3839 + 1 + 511 + 1 + 255 bytes, more than
    // one path may hold: two hops
    let (c1, c2) = (cs(&dir), cs(&child(&child(b"", b'y', 255), b'z', 255)));
    let hop = |dfd: i32, c: &CString| {
        // SAFETY: valid fd and NUL-terminated path.
        let fd = unsafe { libc::openat(dfd, c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        File::from_raw_fd_checked(ok(fd, "open a deep directory"))
    };
    let d = hop(bkt.as_raw_fd(), &c1);
    let d = hop(d.as_raw_fd(), &c2);
    let cw = cs(&child(b"", b'w', 255));
    // SAFETY: valid fd and NUL-terminated path.
    let fd = unsafe {
        ok(
            libc::openat(d.as_raw_fd(), cw.as_ptr(), libc::O_RDONLY),
            "open",
        )
    };
    let mut back = Vec::new();
    File::from_raw_fd_checked(fd)
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, pattern(7, 100_000));
}

/// `File::from_raw_fd` for an fd a libc call just returned (checked >= 0).
trait FromFd {
    fn from_raw_fd_checked(fd: i32) -> File;
}

impl FromFd for File {
    fn from_raw_fd_checked(fd: i32) -> File {
        assert!(fd >= 0);
        // SAFETY: `fd` was just opened by us and is owned by nothing else.
        unsafe { std::os::unix::io::FromRawFd::from_raw_fd(fd) }
    }
}

fn cpath(p: &std::path::Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    cs(p.as_os_str().as_bytes())
}

/// renameat2(from, to, flags): Ok or the errno.
fn rename2(from: &std::path::Path, to: &std::path::Path, flags: libc::c_uint) -> Result<(), i32> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    }
}

/// The inode readdir gives for ".." in `dir` (the daemon's parent pointer).
fn dotdot(dir: &std::path::Path) -> u64 {
    let c = cpath(dir);
    // SAFETY: opendir/readdir/closedir on a NUL-terminated path; each
    // entry is read before the next readdir.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null(), "opendir {}", dir.display());
        let mut found = None;
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr());
            if name.to_bytes() == b".." {
                found = Some((*e).d_ino);
            }
        }
        libc::closedir(d);
        found.expect("no '..' entry")
    }
}

/// RENAME_EXCHANGE swaps two names of any kinds in one step: contents
/// follow the names, both inodes get a new ctime, directories a new parent
/// (readdir's ".."), and the parents' link counts follow the
/// subdirectories that moved; it survives a remount. Bad flag combinations
/// (RENAME_EXCHANGE with RENAME_NOREPLACE or RENAME_WHITEOUT) are EINVAL,
/// as on Linux.
#[test]
fn rename_exchange_swaps_files_and_directories_atomically() {
    use std::os::unix::fs::MetadataExt;
    let mut t = TestMount::new(6, &[]);
    for d in ["bkt", "bkt/sub", "bkt/d1", "two", "two/db"] {
        fs::create_dir(t.p(d)).unwrap();
    }
    fs::write(t.p("bkt/a"), b"A").unwrap();
    fs::write(t.p("bkt/b"), b"BB").unwrap();
    fs::write(t.p("bkt/d1/x"), b"X").unwrap();
    fs::write(t.p("bkt/sub/f"), b"F").unwrap();
    let mnt = t.mnt.clone();
    let ino = |p: &str| fs::symlink_metadata(mnt.join(p)).unwrap().ino();
    let ctime = |p: &str| {
        let m = fs::symlink_metadata(mnt.join(p)).unwrap();
        (m.ctime(), m.ctime_nsec())
    };

    // two files in one directory
    let (ia, ib, ca) = (ino("bkt/a"), ino("bkt/b"), ctime("bkt/a"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    rename2(&t.p("bkt/a"), &t.p("bkt/b"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(t.p("bkt/a")).unwrap(), b"BB");
    assert_eq!(fs::read(t.p("bkt/b")).unwrap(), b"A");
    assert_eq!((ino("bkt/a"), ino("bkt/b")), (ib, ia));
    assert!(ctime("bkt/b") > ca, "ctime of the exchanged inode");

    // a directory and a file in different directories
    let (id1, isub) = (ino("bkt/d1"), ino("bkt/sub"));
    assert_eq!(fs::metadata(t.p("bkt")).unwrap().nlink(), 4);
    rename2(&t.p("bkt/d1"), &t.p("bkt/sub/f"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(t.p("bkt/d1")).unwrap(), b"F");
    assert_eq!(fs::read(t.p("bkt/sub/f/x")).unwrap(), b"X");
    assert_eq!(ino("bkt/sub/f"), id1);
    assert_eq!(fs::metadata(t.p("bkt")).unwrap().nlink(), 3);
    assert_eq!(fs::metadata(t.p("bkt/sub")).unwrap().nlink(), 3);
    assert_eq!(dotdot(&t.p("bkt/sub/f")), isub);

    // two directories in different buckets: link counts unchanged
    rename2(&t.p("bkt/sub/f"), &t.p("two/db"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(t.p("two/db/x")).unwrap(), b"X");
    assert!(fs::read_dir(t.p("bkt/sub/f")).unwrap().next().is_none());
    assert_eq!(fs::metadata(t.p("bkt/sub")).unwrap().nlink(), 3);
    assert_eq!(fs::metadata(t.p("two")).unwrap().nlink(), 3);
    assert_eq!(dotdot(&t.p("two/db")), ino("two"));
    assert_eq!(dotdot(&t.p("bkt/sub/f")), isub);

    // errors
    let ex = libc::RENAME_EXCHANGE;
    assert_eq!(
        rename2(&t.p("bkt/a"), &t.p("bkt/missing"), ex),
        Err(libc::ENOENT)
    );
    assert_eq!(
        rename2(&t.p("bkt/a"), &t.p("bkt/b"), ex | libc::RENAME_NOREPLACE),
        Err(libc::EINVAL)
    );
    assert_eq!(
        rename2(&t.p("bkt/a"), &t.p("bkt/b"), ex | libc::RENAME_WHITEOUT),
        Err(libc::EINVAL)
    );
    assert_eq!(
        rename2(&t.p("bkt/sub"), &t.p("bkt/sub/f"), ex),
        Err(libc::EINVAL)
    );
    // a file may not become a bucket
    assert_eq!(rename2(&t.p("two"), &t.p("bkt/a"), ex), Err(libc::EPERM));
    // RENAME_NOREPLACE still works
    assert_eq!(
        rename2(&t.p("bkt/a"), &t.p("bkt/b"), libc::RENAME_NOREPLACE),
        Err(libc::EEXIST)
    );
    rename2(&t.p("bkt/a"), &t.p("bkt/c"), libc::RENAME_NOREPLACE).unwrap();

    t.remount();
    assert_eq!(fs::read(t.p("bkt/c")).unwrap(), b"BB");
    assert_eq!(fs::read(t.p("bkt/b")).unwrap(), b"A");
    assert_eq!(fs::read(t.p("bkt/d1")).unwrap(), b"F");
    assert_eq!(fs::read(t.p("two/db/x")).unwrap(), b"X");
    assert_eq!(fs::metadata(t.p("bkt")).unwrap().nlink(), 3);
    assert_eq!(dotdot(&t.p("two/db")), ino("two"));
}

/// fallocate(fd, mode, offset, len): Ok or the errno.
fn falloc(f: &File, mode: i32, offset: i64, len: i64) -> Result<(), i32> {
    // SAFETY: plain syscall on an open descriptor.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset, len) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    }
}

/// The modes ext4 supports and FUSE passes on, checked against a model
/// of the bytes: mode 0 grows the file (zeros), KEEP_SIZE alone changes
/// nothing, PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE read back as zeros
/// (across whole and partial stripes, and in an inline file), ZERO_RANGE
/// without KEEP_SIZE grows the file; PUNCH_HOLE without KEEP_SIZE and
/// COLLAPSE_RANGE are EOPNOTSUPP. Everything holds after a remount.
#[test]
fn fallocate_modes_allocate_keep_size_punch_and_zero_like_ext4() {
    // 16 KiB stripes, 2 KiB inline: ranges cross many stripes
    let mut t = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
    fs::create_dir(t.p("bkt")).unwrap();
    let mut model = pattern(1, 100_000);
    fs::write(t.p("bkt/f"), &model).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(t.p("bkt/f"))
        .unwrap();
    let len = || f.metadata().unwrap().len();
    let check = |model: &[u8], what: &str| {
        let back = fs::read(t.p("bkt/f")).unwrap();
        assert_eq!(back.len(), model.len(), "{what}: size");
        assert!(back == model, "{what}: bytes differ");
    };

    // mode 0: allocate past the end
    falloc(&f, 0, 50_000, 150_000).unwrap();
    model.resize(200_000, 0);
    assert_eq!(len(), 200_000);
    check(&model, "mode 0");
    // mode 0 inside the file: nothing changes
    falloc(&f, 0, 10, 1000).unwrap();
    check(&model, "mode 0 inside");
    // KEEP_SIZE alone: the size stays
    falloc(&f, libc::FALLOC_FL_KEEP_SIZE, 0, 500_000).unwrap();
    assert_eq!(len(), 200_000);
    check(&model, "keep size");
    // punch a hole over partial and whole stripes
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    falloc(&f, punch, 5_000, 50_000).unwrap();
    model[5_000..55_000].fill(0);
    check(&model, "punch");
    // a punch past the end keeps the size
    falloc(&f, punch, 190_000, 100_000).unwrap();
    model[190_000..].fill(0);
    check(&model, "punch past the end");
    // zero a range inside, then one past the end that grows the file
    let mut w = &f;
    use std::io::{Seek, SeekFrom};
    w.seek(SeekFrom::Start(100_000)).unwrap();
    w.write_all(&pattern(2, 50_000)).unwrap();
    model[100_000..150_000].copy_from_slice(&pattern(2, 50_000));
    falloc(&f, libc::FALLOC_FL_ZERO_RANGE, 120_000, 10_000).unwrap();
    model[120_000..130_000].fill(0);
    check(&model, "zero range");
    falloc(&f, libc::FALLOC_FL_ZERO_RANGE, 140_000, 80_000).unwrap();
    model[140_000..].fill(0);
    model.resize(220_000, 0);
    check(&model, "zero range past the end");
    falloc(
        &f,
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        210_000,
        50_000,
    )
    .unwrap();
    assert_eq!(len(), 220_000);
    // modes ext4 has and shardfs not, or that Linux refuses
    assert_eq!(
        falloc(&f, libc::FALLOC_FL_PUNCH_HOLE, 0, 10),
        Err(libc::EOPNOTSUPP)
    );
    assert_eq!(
        falloc(&f, libc::FALLOC_FL_COLLAPSE_RANGE, 0, 16384),
        Err(libc::EOPNOTSUPP)
    );
    assert_eq!(falloc(&f, 0, 0, 0), Err(libc::EINVAL));
    drop(f);

    // an inline file
    fs::write(t.p("bkt/small"), pattern(3, 1000)).unwrap();
    let mut small = pattern(3, 1000);
    let s = fs::OpenOptions::new()
        .write(true)
        .open(t.p("bkt/small"))
        .unwrap();
    falloc(&s, punch, 100, 200).unwrap();
    small[100..300].fill(0);
    falloc(&s, 0, 0, 1500).unwrap();
    small.resize(1500, 0);
    drop(s);
    assert_eq!(fs::read(t.p("bkt/small")).unwrap(), small);

    // posix_fallocate (glibc calls fallocate mode 0)
    let p = File::create(t.p("bkt/p")).unwrap();
    // SAFETY: plain call on an open descriptor.
    assert_eq!(
        unsafe { libc::posix_fallocate(p.as_raw_fd(), 0, 70_000) },
        0
    );
    assert_eq!(p.metadata().unwrap().len(), 70_000);
    drop(p);

    t.remount();
    assert!(fs::read(t.p("bkt/f")).unwrap() == model, "after remount");
    assert_eq!(fs::read(t.p("bkt/small")).unwrap(), small);
    assert_eq!(fs::read(t.p("bkt/p")).unwrap(), vec![0u8; 70_000]);
}

/// Set atime and mtime of `p` (None: leave it, UTIME_OMIT); the ctime
/// becomes now.
fn set_times(p: &std::path::Path, atime: Option<i64>, mtime: Option<i64>) {
    let ts = |t: Option<i64>| libc::timespec {
        tv_sec: t.unwrap_or(0),
        tv_nsec: if t.is_some() { 0 } else { libc::UTIME_OMIT },
    };
    let times = [ts(atime), ts(mtime)];
    let c = cpath(p);
    // SAFETY: NUL-terminated path and a two-element timespec array.
    ok(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        "utimensat",
    );
}

fn atime_of(p: &std::path::Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(p).unwrap();
    (m.atime(), m.atime_nsec())
}

/// A read through a fresh open (no FOPEN_KEEP_CACHE: the open drops the
/// kernel's cached pages, so the read reaches the daemon).
fn read_fresh(p: &std::path::Path) {
    let mut v = Vec::new();
    File::open(p).unwrap().read_to_end(&mut v).unwrap();
    assert!(!v.is_empty());
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// atime as Linux keeps it: relatime by default (a read updates an atime
/// that is not after the mtime or ctime; one after both is left alone, so
/// repeated reads cost nothing), readdir too; `--atime strictatime`
/// updates on every read, `--atime noatime` never; the updated atime
/// survives a remount. (The 24-hour rule is checked below FUSE:
/// `fs::namespace::tests`.)
#[test]
fn atime_follows_relatime_by_default_and_the_strictatime_and_noatime_options() {
    let mut t = TestMount::new(6, &[]);
    fs::create_dir(t.p("bkt")).unwrap();
    fs::create_dir(t.p("bkt/dir")).unwrap();
    let f = t.p("bkt/f");
    fs::write(&f, pattern(5, 100_000)).unwrap();
    let start = unix_now();

    // relatime: an atime before the mtime is updated by a read
    set_times(&f, Some(1000), Some(2000));
    read_fresh(&f);
    let a1 = atime_of(&f);
    assert!(a1.0 >= start, "relatime: atime {a1:?} not updated");
    // now after the mtime and ctime: a second read leaves it
    std::thread::sleep(std::time::Duration::from_millis(20));
    read_fresh(&f);
    assert_eq!(atime_of(&f), a1, "relatime: a second read changed atime");
    // readdir updates a directory's atime the same way
    set_times(&t.p("bkt/dir"), Some(1000), None);
    let _ = fs::read_dir(t.p("bkt/dir")).unwrap().count();
    assert!(atime_of(&t.p("bkt/dir")).0 >= start, "readdir atime");
    // an atime after the ctime (set in the future) is left by relatime
    let future = unix_now() + 3600;
    set_times(&f, Some(future), None);
    read_fresh(&f);
    assert_eq!(atime_of(&f), (future, 0));

    // the atime of a read survives a remount
    set_times(&f, Some(1000), None);
    read_fresh(&f);
    let a2 = atime_of(&f);
    assert!(a2.0 >= start);
    t.remount();
    assert_eq!(atime_of(&f), a2, "atime lost at remount");

    // strictatime: every read, even over an atime in the future
    t.unmount();
    t.mount_args = vec!["--atime".into(), "strictatime".into()];
    t.mount();
    set_times(&f, Some(future), None);
    read_fresh(&f);
    let a3 = atime_of(&f);
    assert!(a3.0 >= start && a3.0 < future, "strictatime: {a3:?}");

    // noatime: never, even over an atime before the mtime
    t.unmount();
    t.mount_args = vec!["--atime".into(), "noatime".into()];
    t.mount();
    set_times(&f, Some(1000), None);
    read_fresh(&f);
    let _ = fs::read_dir(t.p("bkt")).unwrap().count();
    assert_eq!(atime_of(&f), (1000, 0), "noatime: atime changed");
}

/// A demo daemon that must not outlive the test: SIGTERMed and its mount
/// detached on drop, even when the test fails.
struct DemoGuard {
    mnt: std::path::PathBuf,
    pid: Option<i32>,
}

impl Drop for DemoGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SAFETY: signals to the one daemon this test started.
            unsafe {
                if libc::kill(pid, 0) == 0 {
                    libc::kill(pid, libc::SIGTERM);
                    for _ in 0..200 {
                        if libc::kill(pid, 0) != 0 {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if is_mounted(&self.mnt) {
            lazy_unmount(&self.mnt);
        }
    }
}

/// The pid of the `shardfs mount` serving `mnt`, found in /proc (read
/// only; nothing is signalled but this one process).
fn daemon_serving(mnt: &std::path::Path) -> Option<i32> {
    let want = mnt.as_os_str().as_encoded_bytes();
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"shardfs"))
            && args.get(1) == Some(&&b"mount"[..])
            && args.contains(&want)
        {
            return Some(pid);
        }
    }
    None
}

/// `scripts/demo.sh stop` returns only once the daemon has exited (its
/// final sync and catalog write done), so `rm -rf demo` right after
/// succeeds and nothing is left running or mounted.
#[test]
fn demo_stop_waits_for_the_daemon_so_the_demo_can_be_removed() {
    let tmp = tempfile::Builder::new()
        .prefix("shardfs-demo")
        .tempdir()
        .unwrap();
    let demo = tmp.path().join("demo");
    let mnt = demo.join("mnt");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh");
    let bin_dir = std::path::Path::new(SHARDFS).parent().unwrap();
    let run = |arg: Option<&str>| {
        let mut c = std::process::Command::new("bash");
        c.arg(&script)
            .args(arg)
            .env("DEMO", &demo)
            .env("SHARDFS_BIN_DIR", bin_dir)
            .stdin(std::process::Stdio::null());
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "demo.sh {arg:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut guard = DemoGuard {
        mnt: mnt.clone(),
        pid: None,
    };
    run(None);
    assert!(is_mounted(&mnt));
    guard.pid = daemon_serving(&mnt);
    let pid = guard.pid.expect("no daemon serving the demo mount");
    // work for the final sync: files on every member
    fs::create_dir(mnt.join("photos")).unwrap();
    for i in 0..8 {
        fs::write(mnt.join(format!("photos/f{i}")), pattern(i, 3 << 20)).unwrap();
    }
    run(Some("stop"));
    // gone, or a zombie waiting for its reaper with no thread left
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    let alive = stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| !rest.starts_with('Z') || tasks > 1);
    assert!(
        !alive,
        "demo.sh stop returned while shardfs (pid {pid}) runs: {stat} ({tasks} threads)"
    );
    assert!(!is_mounted(&mnt));
    fs::remove_dir_all(&demo).expect("rm -rf demo right after stop");
    guard.pid = None;
}

/// RENAME_WHITEOUT (what overlayfs does to its upper layer): the source
/// moves and its old name becomes a whiteout, a character device 0:0 with
/// mode 0, in one step; over an existing target too; it survives a
/// remount and lists as a character device. A bucket cannot leave a
/// whiteout at the root (EPERM), and RENAME_NOREPLACE still holds.
#[test]
fn rename_whiteout_leaves_a_whiteout_device_at_the_old_name() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut t = TestMount::new(6, &[]);
    fs::create_dir(t.p("bkt")).unwrap();
    fs::create_dir(t.p("bkt/d")).unwrap();
    fs::write(t.p("bkt/a"), b"A").unwrap();
    fs::write(t.p("bkt/b"), b"B").unwrap();
    fs::write(t.p("bkt/d/x"), b"X").unwrap();
    let wo = libc::RENAME_WHITEOUT;
    let is_whiteout = |p: &std::path::Path| {
        let m = fs::symlink_metadata(p).unwrap();
        m.file_type().is_char_device() && m.rdev() == 0 && m.mode() & 0o7777 == 0
    };
    rename2(&t.p("bkt/a"), &t.p("bkt/moved"), wo).unwrap();
    assert_eq!(fs::read(t.p("bkt/moved")).unwrap(), b"A");
    assert!(is_whiteout(&t.p("bkt/a")), "no whiteout at the old name");
    // over an existing target, and a directory across directories
    rename2(&t.p("bkt/b"), &t.p("bkt/moved"), wo).unwrap();
    assert_eq!(fs::read(t.p("bkt/moved")).unwrap(), b"B");
    assert!(is_whiteout(&t.p("bkt/b")));
    fs::create_dir(t.p("bkt/e")).unwrap();
    rename2(&t.p("bkt/d"), &t.p("bkt/e/d"), wo).unwrap();
    assert_eq!(fs::read(t.p("bkt/e/d/x")).unwrap(), b"X");
    assert!(is_whiteout(&t.p("bkt/d")));
    assert_eq!(
        fs::metadata(t.p("bkt")).unwrap().nlink(),
        3,
        "bkt holds e only"
    );
    // errors
    assert_eq!(
        rename2(
            &t.p("bkt/moved"),
            &t.p("bkt/e"),
            wo | libc::RENAME_NOREPLACE
        ),
        Err(libc::EEXIST)
    );
    assert_eq!(rename2(&t.p("bkt"), &t.p("bkt2"), wo), Err(libc::EPERM));
    assert!(t.p("bkt/moved").exists());
    // listed as a character device, and durable
    let names: Vec<(String, bool)> = fs::read_dir(t.p("bkt"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let chr = e.file_type().unwrap().is_char_device();
            (e.file_name().into_string().unwrap(), chr)
        })
        .collect();
    for w in ["a", "b", "d"] {
        assert!(names.contains(&(w.to_string(), true)), "{w} in {names:?}");
    }
    t.remount();
    for w in ["bkt/a", "bkt/b", "bkt/d"] {
        assert!(is_whiteout(&t.p(w)), "{w} after a remount");
    }
    assert_eq!(fs::read(t.p("bkt/moved")).unwrap(), b"B");
    assert_eq!(fs::read(t.p("bkt/e/d/x")).unwrap(), b"X");
    // a whiteout is removed like any name
    fs::remove_file(t.p("bkt/a")).unwrap();
    assert!(fs::symlink_metadata(t.p("bkt/a")).is_err());
}

/// An overlayfs mounted over the test's overlay dir: detached on drop,
/// even when the test fails.
struct Overlay(std::path::PathBuf);

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// overlayfs takes a shardfs directory as its upper layer (it needs
/// RENAME_WHITEOUT, trusted.* xattrs and d_type): changes through the
/// merged view land in the upper layer as copies, whiteouts (character
/// devices 0:0) and overlay xattrs, the lower layer is untouched, and the
/// merged view is the same after both are mounted again.
#[test]
fn overlayfs_runs_with_its_upper_layer_on_shardfs() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut t = TestMount::new(6, &[]);
    let lower = t.tmp.path().join("lower");
    let merged = t.tmp.path().join("merged");
    fs::create_dir_all(lower.join("dir")).unwrap();
    fs::create_dir(&merged).unwrap();
    fs::write(lower.join("f"), b"lower f").unwrap();
    fs::write(lower.join("gone"), b"to be deleted").unwrap();
    fs::write(lower.join("dir/x"), b"lower x").unwrap();
    for d in ["bkt", "bkt/upper", "bkt/work"] {
        fs::create_dir(t.p(d)).unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        t.p("bkt/upper").display(),
        t.p("bkt/work").display()
    );
    let mount = |opts: &str| {
        let out = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", opts])
            .arg(&merged)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "overlay mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Overlay(merged.clone())
    };
    let ov = mount(&opts);
    fs::write(merged.join("f"), b"changed f").unwrap();
    fs::remove_file(merged.join("gone")).unwrap();
    fs::write(merged.join("dir/y"), b"new y").unwrap();
    fs::remove_file(merged.join("dir/x")).unwrap();
    fs::write(merged.join("new"), b"new file").unwrap();
    let view = |m: &std::path::Path| {
        let mut names: Vec<String> = fs::read_dir(m)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(view(&merged), ["dir", "f", "new"]);
    assert_eq!(view(&merged.join("dir")), ["y"]);
    assert_eq!(fs::read(merged.join("f")).unwrap(), b"changed f");
    // the upper layer on shardfs holds the copy-up, the new files and
    // whiteouts for the deletions
    assert_eq!(fs::read(t.p("bkt/upper/f")).unwrap(), b"changed f");
    for w in ["bkt/upper/gone", "bkt/upper/dir/x"] {
        let m = fs::symlink_metadata(t.p(w)).unwrap();
        assert!(
            m.file_type().is_char_device() && m.rdev() == 0,
            "{w} is no whiteout"
        );
    }
    // the lower layer is untouched
    assert_eq!(fs::read(lower.join("gone")).unwrap(), b"to be deleted");
    assert_eq!(fs::read(lower.join("dir/x")).unwrap(), b"lower x");
    drop(ov);
    t.remount();
    let _ov = mount(&opts);
    assert_eq!(view(&merged), ["dir", "f", "new"]);
    assert_eq!(view(&merged.join("dir")), ["y"]);
    assert_eq!(fs::read(merged.join("f")).unwrap(), b"changed f");
    assert_eq!(fs::read(merged.join("new")).unwrap(), b"new file");
}

/// Issue 15 asked for a cached key length that a rename of a parent
/// directory must update; the mount has no key limit (SEMANTICS.md,
/// "Namespace": only a component is limited), so this pins what a rename
/// that makes every key below it longer than S3's 1024 bytes does: new
/// files may still be created below, and a longer component still fails.
#[test]
fn renaming_a_parent_past_1024_byte_keys_leaves_creates_below_it_working() {
    let t = TestMount::new(6, &[]);
    fs::create_dir_all(t.p("bkt/a/b/c/d")).unwrap();
    fs::write(t.p("bkt/a/b/c/d/old"), b"x").unwrap();
    let long = |c: char| c.to_string().repeat(255);
    // rename each level to 255 bytes, top first: the key of d/new is then
    // 4 × 256 + 3 = 1027 bytes
    let mut dir = t.p("bkt");
    for (short, c) in [("a", 'A'), ("b", 'B'), ("c", 'C'), ("d", 'D')] {
        fs::rename(dir.join(short), dir.join(long(c))).unwrap();
        dir = dir.join(long(c));
    }
    let key_len = dir.strip_prefix(t.p("bkt")).unwrap().as_os_str().len() + "/new".len();
    assert!(key_len > 1024, "{key_len}");
    fs::write(dir.join("new"), b"below").unwrap();
    assert_eq!(fs::read(dir.join("new")).unwrap(), b"below");
    assert_eq!(fs::read(dir.join("old")).unwrap(), b"x");
    assert_eq!(
        errno(fs::write(dir.join("n".repeat(256)), b"")),
        libc::ENAMETOOLONG
    );
    // and back to short names
    fs::rename(t.p("bkt").join(long('A')), t.p("bkt/a")).unwrap();
    assert_eq!(
        fs::read(
            t.p("bkt/a")
                .join(long('B'))
                .join(long('C'))
                .join(long('D'))
                .join("new")
        )
        .unwrap(),
        b"below"
    );
}
