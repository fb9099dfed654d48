//! Differential test through the real mount: the same random operations on
//! a bucket of a shardfs mount and on a plain directory of the local disk
//! (ext4), comparing every result and errno, and both trees after every
//! sequence and again after a remount.
//!
//! `SHARDFS_DIFF_SEQS` sets the number of sequences (default 100, each
//! of 150 operations).

mod common;

use common::TestMount;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};

/// Deterministic random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Offsets and lengths near the shard, stripe and inline boundaries of
    /// the test pool (4 KiB shards, 16 KiB stripes, 2 KiB inline).
    fn size(&mut self) -> u64 {
        let anchors = [0u64, 2048, 4096, 16384, 32768, 49152];
        let a = anchors[self.below(anchors.len() as u64) as usize];
        let d = self.below(129) as i64 - 64;
        (a as i64 + d).max(0) as u64
    }
}

/// Result of one operation: a value or an errno.
type Res = Result<String, i32>;

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// One side: a root directory and the files it has open.
struct Side {
    root: PathBuf,
    files: Vec<Option<File>>,
}

const NAMES: [&str; 6] = ["a", "b", "c", "d1", "d2", "e.txt"];
/// `trusted.*` and other namespaces are refused by shardfs on purpose
/// (SEMANTICS.md); tests/posix.rs covers that.
const XATTRS: [&str; 3] = ["user.a", "user.b", "user.c"];

/// One operation, with every choice already made.
#[derive(Debug, Clone)]
enum Op {
    Mkdir(String),
    Open(String, bool, bool, bool, bool),
    Write(usize, u64, usize, u8),
    Read(usize, u64, usize),
    Ftruncate(usize, u64),
    Truncate(String, u64),
    Fsync(usize),
    Close(usize),
    Rename(String, String, bool),
    Link(String, String),
    Unlink(String),
    Rmdir(String),
    Symlink(String),
    Chmod(String, u32),
    SetXattr(String, usize, usize, i32),
    GetXattr(String, usize),
    RemoveXattr(String, usize),
    Stat(String),
    List(String),
}

fn data(seed: u8, off: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| 1 + ((seed as u64 * 31 + (off + i) * 7 + (off + i) / 251) % 255) as u8)
        .collect()
}

impl Side {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn run(&mut self, op: &Op) -> Res {
        let ok = |_| String::new();
        match op {
            Op::Mkdir(p) => fs::create_dir(self.p(p)).map(ok).map_err(errno),
            Op::Open(p, create, excl, trunc, write) => {
                let mut o = OpenOptions::new();
                o.read(true).write(*write || *create);
                if *create {
                    if *excl {
                        o.create_new(true);
                    } else {
                        o.create(true);
                    }
                }
                if *trunc && (*write || *create) {
                    o.truncate(true);
                }
                o.custom_flags(libc::O_NOFOLLOW);
                match o.open(self.p(p)) {
                    Ok(f) => {
                        self.files.push(Some(f));
                        Ok(format!("fd{}", self.files.len() - 1))
                    }
                    Err(e) => Err(errno(e)),
                }
            }
            Op::Write(h, off, len, seed) => match self.file(*h) {
                Some(f) => f
                    .write_at(&data(*seed, *off, *len), *off)
                    .map(|n| n.to_string())
                    .map_err(errno),
                None => Ok("no file".into()),
            },
            Op::Read(h, off, len) => match self.file(*h) {
                Some(f) => {
                    let mut buf = vec![0; *len];
                    let mut got = 0;
                    loop {
                        match f.read_at(&mut buf[got..], off + got as u64) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) => return Err(errno(e)),
                        }
                        if got == *len {
                            break;
                        }
                    }
                    buf.truncate(got);
                    Ok(format!("{} bytes, hash {}", got, blake3::hash(&buf)))
                }
                None => Ok("no file".into()),
            },
            Op::Ftruncate(h, size) => match self.file(*h) {
                Some(f) => f.set_len(*size).map(ok).map_err(errno),
                None => Ok("no file".into()),
            },
            Op::Truncate(p, size) => {
                let c = cstr(&self.p(p));
                // SAFETY: valid path; truncate(2) follows symlinks, so only
                // files the test made are touched.
                let r = unsafe { libc::truncate(c.as_ptr(), *size as i64) };
                if r == 0 {
                    Ok(String::new())
                } else {
                    Err(last_errno())
                }
            }
            Op::Fsync(h) => match self.file(*h) {
                Some(f) => f.sync_all().map(ok).map_err(errno),
                None => Ok("no file".into()),
            },
            Op::Close(h) => {
                let open: Vec<usize> = (0..self.files.len())
                    .filter(|&i| self.files[i].is_some())
                    .collect();
                if open.is_empty() {
                    return Ok("no file".into());
                }
                match self.files[open[h % open.len()]].take() {
                    Some(f) => {
                        let fd = f.into_raw_fd();
                        // SAFETY: we own fd; close reports flush errors.
                        if unsafe { libc::close(fd) } == 0 {
                            Ok(String::new())
                        } else {
                            Err(last_errno())
                        }
                    }
                    None => Ok("closed".into()),
                }
            }
            Op::Rename(a, b, noreplace) => {
                let (ca, cb) = (cstr(&self.p(a)), cstr(&self.p(b)));
                let flags = if *noreplace {
                    libc::RENAME_NOREPLACE
                } else {
                    0
                };
                // SAFETY: valid paths.
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        ca.as_ptr(),
                        libc::AT_FDCWD,
                        cb.as_ptr(),
                        flags,
                    )
                };
                if r == 0 {
                    Ok(String::new())
                } else {
                    Err(last_errno())
                }
            }
            Op::Link(a, b) => fs::hard_link(self.p(a), self.p(b)).map(ok).map_err(errno),
            Op::Unlink(p) => fs::remove_file(self.p(p)).map(ok).map_err(errno),
            Op::Rmdir(p) => fs::remove_dir(self.p(p)).map(ok).map_err(errno),
            Op::Symlink(p) => std::os::unix::fs::symlink("target/x", self.p(p))
                .map(ok)
                .map_err(errno),
            Op::Chmod(p, mode) => fs::set_permissions(self.p(p), fs::Permissions::from_mode(*mode))
                .map(ok)
                .map_err(errno),
            Op::SetXattr(p, x, len, flags) => {
                let (c, n) = (cstr(&self.p(p)), CString::new(XATTRS[*x]).unwrap());
                let v = data(*x as u8, 0, *len);
                // SAFETY: valid path, name and buffer.
                let r = unsafe {
                    libc::lsetxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), *flags)
                };
                if r == 0 {
                    Ok(String::new())
                } else {
                    Err(last_errno())
                }
            }
            Op::GetXattr(p, x) => {
                let (c, n) = (cstr(&self.p(p)), CString::new(XATTRS[*x]).unwrap());
                let mut buf = vec![0u8; 70000];
                // SAFETY: valid path, name and buffer.
                let r = unsafe {
                    libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                };
                if r >= 0 {
                    buf.truncate(r as usize);
                    Ok(format!("{} bytes, hash {}", r, blake3::hash(&buf)))
                } else {
                    Err(last_errno())
                }
            }
            Op::RemoveXattr(p, x) => {
                let (c, n) = (cstr(&self.p(p)), CString::new(XATTRS[*x]).unwrap());
                // SAFETY: valid path and name.
                if unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) } == 0 {
                    Ok(String::new())
                } else {
                    Err(last_errno())
                }
            }
            Op::Stat(p) => fs::symlink_metadata(self.p(p))
                .map(|m| describe(&m))
                .map_err(errno),
            Op::List(p) => fs::read_dir(self.p(p)).map_err(errno).and_then(|rd| {
                let mut v: Vec<String> = rd
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<Result<_, _>>()
                    .map_err(errno)?;
                v.sort();
                Ok(v.join(","))
            }),
        }
    }

    /// The h-th open file (modulo their number).
    fn file(&self, h: usize) -> Option<&File> {
        let open: Vec<&File> = self.files.iter().flatten().collect();
        if open.is_empty() {
            return None;
        }
        Some(open[h % open.len()])
    }
}

/// What a program sees in a stat: kind, permissions, size (files and
/// symlinks), link count.
fn describe(m: &fs::Metadata) -> String {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else {
        'f'
    };
    let size = if ft.is_dir() { 0 } else { m.size() };
    format!(
        "{kind} {:o} size {size} nlink {}",
        m.mode() & 0o7777,
        m.nlink()
    )
}

/// Every path below `root`: its stat, contents (files), target (symlinks)
/// and user xattrs.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let mut s = describe(&m);
            if m.is_dir() {
                stack.push(p.clone());
            } else if m.file_type().is_symlink() {
                s += &format!(" -> {:?}", fs::read_link(&p).unwrap());
            } else {
                s += &format!(" {}", blake3::hash(&fs::read(&p).unwrap()));
            }
            if !m.file_type().is_symlink() {
                for x in &XATTRS {
                    if let Ok(Some(v)) = xattr_get(&p, x) {
                        s += &format!(" {x}={}", blake3::hash(&v));
                    }
                }
            }
            out.insert(rel, s);
        }
    }
    out
}

fn xattr_get(p: &Path, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    let (c, n) = (cstr(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 70000];
    // SAFETY: valid path, name and buffer.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r >= 0 {
        buf.truncate(r as usize);
        Ok(Some(buf))
    } else if last_errno() == libc::ENODATA {
        Ok(None)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A random path: an existing directory of the plain side (or the root)
/// and a name, sometimes one level deeper.
fn path(rng: &mut Rng, plain: &Path) -> String {
    let mut dirs = vec![String::new()];
    let mut stack = vec![plain.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if fs::symlink_metadata(&p)
                    .map(|m| m.is_dir())
                    .unwrap_or(false)
                {
                    dirs.push(
                        p.strip_prefix(plain)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                    stack.push(p);
                }
            }
        }
    }
    dirs.sort();
    let d = &dirs[rng.below(dirs.len() as u64) as usize];
    let n = NAMES[rng.below(NAMES.len() as u64) as usize];
    if d.is_empty() {
        n.to_string()
    } else {
        format!("{d}/{n}")
    }
}

fn random_op(rng: &mut Rng, plain: &Path) -> Op {
    let h = rng.below(16) as usize;
    match rng.below(100) {
        0..=7 => Op::Mkdir(path(rng, plain)),
        8..=21 => Op::Open(
            path(rng, plain),
            rng.below(3) > 0,
            rng.below(4) == 0,
            rng.below(5) == 0,
            rng.below(2) == 0,
        ),
        22..=41 => Op::Write(h, rng.size(), rng.size().max(1) as usize, rng.next() as u8),
        42..=49 => Op::Read(h, rng.size(), rng.size() as usize + 1),
        50..=52 => Op::Ftruncate(h, rng.size()),
        53..=54 => Op::Truncate(path(rng, plain), rng.size()),
        55..=57 => Op::Fsync(h),
        58..=63 => Op::Close(h),
        64..=68 => Op::Rename(path(rng, plain), path(rng, plain), rng.below(4) == 0),
        69..=71 => Op::Link(path(rng, plain), path(rng, plain)),
        72..=75 => Op::Unlink(path(rng, plain)),
        76..=78 => Op::Rmdir(path(rng, plain)),
        79..=80 => Op::Symlink(path(rng, plain)),
        81..=82 => Op::Chmod(path(rng, plain), 0o600 + rng.below(0o200) as u32),
        83..=86 => Op::SetXattr(
            path(rng, plain),
            rng.below(3) as usize,
            rng.below(200) as usize,
            [0, libc::XATTR_CREATE, libc::XATTR_REPLACE][rng.below(3) as usize],
        ),
        87..=88 => Op::GetXattr(path(rng, plain), rng.below(3) as usize),
        89..=90 => Op::RemoveXattr(path(rng, plain), rng.below(3) as usize),
        91..=95 => Op::Stat(path(rng, plain)),
        _ => Op::List(path(rng, plain)),
    }
}

fn compare_trees(what: &str, shard: &Path, plain: &Path) {
    let (a, b) = (tree(shard), tree(plain));
    if a != b {
        for k in a.keys().chain(b.keys()) {
            if a.get(k) != b.get(k) {
                panic!("{what}: {k}: shardfs {:?}, plain {:?}", a.get(k), b.get(k));
            }
        }
    }
}

#[test]
fn shardfs_mount_matches_a_plain_directory() {
    let seqs: u64 = std::env::var("SHARDFS_DIFF_SEQS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut m = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
    let plain_root = m.tmp.path().join("plain");
    fs::create_dir(&plain_root).unwrap();
    let mut ran = 0;
    let mut tally: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for seq in 0..seqs {
        let bucket = format!("diff-{seq}");
        let mut a = Side {
            root: m.mnt.join(&bucket),
            files: Vec::new(),
        };
        let mut b = Side {
            root: plain_root.join(&bucket),
            files: Vec::new(),
        };
        fs::create_dir(&a.root).unwrap();
        fs::create_dir(&b.root).unwrap();
        let mut rng = Rng(0x5eed_0000 + seq);
        let mut log = Vec::new();
        for step in 0..150 {
            let op = random_op(&mut rng, &b.root);
            let (ra, rb) = (a.run(&op), b.run(&op));
            log.push(format!("{op:?} -> {rb:?}"));
            let kind = format!("{op:?}")
                .split('(')
                .next()
                .unwrap_or("")
                .to_string();
            let t = tally.entry(kind).or_default();
            match &rb {
                Ok(v) if v == "no file" => {}
                Ok(_) => t.0 += 1,
                Err(_) => t.1 += 1,
            }
            if ra != rb {
                let tail = log.iter().rev().take(10).cloned().collect::<Vec<_>>();
                panic!(
                    "sequence {seq} step {step}: {op:?}: shardfs {ra:?}, plain {rb:?}\nlast steps (newest first):\n  {}",
                    tail.join("\n  ")
                );
            }
            ran += 1;
        }
        // close what is open (flush errors would show here)
        while a.files.iter().any(Option::is_some) {
            assert_eq!(a.run(&Op::Close(0)), b.run(&Op::Close(0)));
        }
        compare_trees(&format!("sequence {seq}"), &a.root, &b.root);
    }
    m.remount();
    for seq in 0..seqs {
        let bucket = format!("diff-{seq}");
        compare_trees(
            &format!("after remount, sequence {seq}"),
            &m.mnt.join(&bucket),
            &plain_root.join(&bucket),
        );
    }
    eprintln!("{seqs} sequences, {ran} operations compared; ok / errno per kind:");
    for (k, (ok, err)) in &tally {
        eprintln!("  {k:12} {ok:6} {err:6}");
        assert!(*ok > 0, "{k} never succeeded");
    }
}
