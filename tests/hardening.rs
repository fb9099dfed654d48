//! Hardening (issue 14) through real mounts: member data is for the
//! daemon's owner only (0600 files, 0700 directories, looser modes repaired
//! at mount), and an exclusive lock on every member keeps a second daemon
//! (or `shardfs recover`) off a pool that is in use.

mod common;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOCK_FILE: &str = "shardfs.lock";

/// Small shards, so a file of a few hundred KiB spans many stripes.
const SMALL: &[&str] = &["--shard-size", "4096", "--inline-max", "2048"];

/// A second `shardfs` process that must not stay up: killed and its mount
/// detached on drop, even when the test fails.
struct Second {
    child: Option<Child>,
    mnt: PathBuf,
}

impl Drop for Second {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_daemon(&mut c);
        }
        if is_mounted(&self.mnt) {
            lazy_unmount(&self.mnt);
        }
    }
}

/// Run `shardfs ARGS...` and wait at most `limit` for it to exit: (exit
/// status, stderr), or None if it was still running (then it is stopped).
fn run_bounded(args: &[&std::ffi::OsStr], mnt: &Path, limit: Duration) -> Option<(bool, String)> {
    let err = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(SHARDFS)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut second = Second {
        child: Some(child),
        mnt: mnt.to_path_buf(),
    };
    let start = Instant::now();
    loop {
        let c = second.child.as_mut().unwrap();
        if let Some(st) = c.try_wait().unwrap() {
            second.child = None;
            let text = std::fs::read_to_string(err.path()).unwrap_or_default();
            return Some((st.success(), text));
        }
        if start.elapsed() > limit {
            return None; // `second` stops it
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every entry under `root` (the root included), not following symlinks:
/// (path, lstat metadata).
fn walk(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = vec![(root.to_path_buf(), std::fs::symlink_metadata(root).unwrap())];
    let mut i = 0;
    while i < out.len() {
        if out[i].1.is_dir() {
            let dir = out[i].0.clone();
            // (the daemon may remove files meanwhile: a rebalance, a sweep)
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = e.path();
                if let Ok(md) = std::fs::symlink_metadata(&p) {
                    out.push((p, md));
                }
            }
        }
        i += 1;
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every directory under every member is 0700 and every file 0600; the
/// lock file is among them.
fn assert_owner_only(members: &[PathBuf], when: &str) {
    for m in members {
        let all = walk(m);
        assert!(
            all.iter().any(|(p, _)| p == &m.join(LOCK_FILE)),
            "{when}: no {LOCK_FILE} in {}",
            m.display()
        );
        for (p, md) in all {
            let got = md.mode() & 0o7777;
            if md.is_dir() {
                assert_eq!(got, 0o700, "{when}: directory {} is {got:04o}", p.display());
            } else {
                assert!(md.is_file(), "{when}: {} is not a file", p.display());
                assert_eq!(got, 0o600, "{when}: file {} is {got:04o}", p.display());
            }
        }
    }
}

/// Try to take the member's lock from this process: true if it is free.
fn lock_is_free(member: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(member.join(LOCK_FILE)).unwrap();
    // SAFETY: flock on a descriptor we own; released when `f` is closed.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// A second `shardfs mount` of the members of a mounted pool (with its own
/// socket and mount point) fails at once, before mounting anything, with a
/// message naming a member, the first daemon's pid and its mount point; the
/// first mount goes on serving reads and writes, its data intact.
#[test]
fn second_mount_of_a_mounted_pool_fails_at_once_naming_the_holder_and_the_first_keeps_working() {
    let mut t = TestMount::new(6, SMALL);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let before = pattern(1, 300_000);
    std::fs::write(t.p("bkt/before"), &before).unwrap();
    std::fs::write(t.p("bkt/small"), b"inline bytes").unwrap();
    let pid = t.child.as_ref().unwrap().id();
    let mnt1 = t.tmp.path().canonicalize().unwrap().join("mnt");
    let mnt2 = t.tmp.path().join("mnt2");
    std::fs::create_dir(&mnt2).unwrap();
    let sock2 = t.tmp.path().join("ctl2.sock");
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["mount".as_ref(), "--socket".as_ref(), sock2.as_ref()];
    args.extend(t.members.iter().map(|m| m.as_os_str()));
    args.push(mnt2.as_os_str());
    let start = Instant::now();
    let got = run_bounded(&args, &mnt2, Duration::from_secs(20));
    let (ok, err) =
        got.expect("the second mount did not exit: it is serving the pool a second time");
    assert!(!ok, "the second mount succeeded: {err}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the refusal took {:?}",
        start.elapsed()
    );
    assert!(!is_mounted(&mnt2), "the second daemon mounted something");
    assert!(!sock2.exists(), "the second daemon opened a control socket");
    assert!(
        t.members
            .iter()
            .any(|m| err.contains(&m.display().to_string())),
        "no member named: {err}"
    );
    assert!(
        err.contains(&format!("pid {pid}")),
        "holder pid not named: {err}"
    );
    assert!(
        err.contains(&mnt1.display().to_string()),
        "holder mount point not named: {err}"
    );
    assert!(err.contains("unmount it first"), "{err}");
    // the first mount is untouched and keeps working
    assert!(std::fs::read(t.p("bkt/before")).unwrap() == before);
    assert_eq!(std::fs::read(t.p("bkt/small")).unwrap(), b"inline bytes");
    let after = pattern(2, 200_000);
    std::fs::write(t.p("bkt/after"), &after).unwrap();
    std::fs::File::open(t.p("bkt/after"))
        .unwrap()
        .sync_all()
        .unwrap();
    assert!(std::fs::read(t.p("bkt/after")).unwrap() == after);
    let (ok, out, e) = t.ctl(&["status"]);
    assert!(ok, "{out}{e}");
    // and everything is there after a clean remount
    t.remount();
    assert!(std::fs::read(t.p("bkt/before")).unwrap() == before);
    assert!(std::fs::read(t.p("bkt/after")).unwrap() == after);
    assert_eq!(std::fs::read(t.p("bkt/small")).unwrap(), b"inline bytes");
}

/// `shardfs recover` refuses members that a running daemon holds, naming
/// the member, the daemon's pid and its mount point, and writes nothing.
#[test]
fn recover_refuses_the_members_of_a_mounted_pool() {
    let t = TestMount::new(6, SMALL);
    std::fs::create_dir(t.p("bkt")).unwrap();
    std::fs::write(t.p("bkt/f"), pattern(3, 50_000)).unwrap();
    let pid = t.child.as_ref().unwrap().id();
    let mnt1 = t.tmp.path().canonicalize().unwrap().join("mnt");
    let out = t.tmp.path().join("recovered");
    let mut args: Vec<&std::ffi::OsStr> = vec!["recover".as_ref(), "--out".as_ref(), out.as_ref()];
    args.extend(t.members.iter().map(|m| m.as_os_str()));
    let (ok, err) = run_bounded(&args, &out, Duration::from_secs(30)).expect("recover hung");
    assert!(!ok, "recover ran over a mounted pool: {err}");
    assert!(
        t.members
            .iter()
            .any(|m| err.contains(&m.display().to_string()))
            && err.contains(&format!("pid {pid}"))
            && err.contains(&mnt1.display().to_string()),
        "{err}"
    );
    assert!(!out.exists(), "recover wrote its output anyway");
    assert!(std::fs::read(t.p("bkt/f")).unwrap() == pattern(3, 50_000));
}

/// After mkfs, a mount, a small (inline) file, a file of many stripes, a
/// hot replica, an fsync and a clean unmount (which writes the catalog),
/// every directory under every member is 0700 and every file 0600: the
/// superblock, shards, replicas, the WAL and LMDB files, the catalog and
/// the lock file. A member added with `shardctl disk add` is the same, and
/// the daemon holds its lock.
#[test]
fn member_files_are_owner_only_after_mkfs_mount_writes_and_disk_add() {
    let mut t = TestMount::new(6, SMALL);
    for m in &t.members {
        let md = std::fs::symlink_metadata(m.join("shardfs.superblock")).unwrap();
        assert_eq!(
            md.mode() & 0o077,
            0,
            "superblock after mkfs: {:o}",
            md.mode()
        );
    }
    std::fs::create_dir(t.p("bkt")).unwrap();
    let (ok, _, err) = t.ctl(&["tier", "policy", "--hot-replica"]);
    assert!(ok, "{err}");
    std::fs::write(t.p("bkt/small"), b"a small file lives inline").unwrap();
    let big = pattern(4, 400_000);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(t.p("bkt/big")).unwrap();
        f.write_all(&big).unwrap();
        f.sync_all().unwrap();
    }
    let (ok, _, err) = t.ctl(&["tier", "start", "--all-hot"]);
    assert!(ok, "{err}");
    let start = Instant::now();
    while t.json(&["tier", "status"])["replicas"]["replicas"] != 1 {
        assert!(start.elapsed() < Duration::from_secs(60), "no hot replica");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        t.members
            .iter()
            .any(|m| std::fs::read_dir(m.join("replicas")).is_ok_and(|mut d| d.next().is_some())),
        "no replica file"
    );
    // a new member, formatted by the daemon
    let new = t.tmp.path().join("disk6");
    let (ok, out, err) = t.ctl(&["disk", "add", new.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    t.members.push(new.clone());
    assert!(
        !lock_is_free(&new),
        "the daemon does not hold the new member's lock"
    );
    let lock = std::fs::read_to_string(new.join(LOCK_FILE)).unwrap();
    let pid = t.child.as_ref().unwrap().id();
    assert!(lock.contains(&format!("pid={pid}")), "{lock}");
    assert!(!t.shard_files().is_empty());
    assert_owner_only(&t.members, "mounted");
    t.unmount();
    for m in &t.members {
        assert!(m.join("catalog").exists(), "no catalog on {}", m.display());
        assert!(lock_is_free(m), "lock of {} still held", m.display());
    }
    assert_owner_only(&t.members, "after a clean unmount");
}

/// A member whose modes were loosened while unmounted (a shard file 0644,
/// its shard folder 0755, the WAL 0644, the member root 0755) is repaired
/// at the next mount, with a warning in the daemon log naming each path;
/// the data still reads back.
#[test]
fn loosened_member_modes_are_repaired_at_the_next_mount_with_a_warning() {
    let mut t = TestMount::new(6, SMALL);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let data = pattern(5, 300_000);
    std::fs::write(t.p("bkt/f"), &data).unwrap();
    t.unmount();
    let shard = t.shard_files().into_iter().next().expect("a shard").path;
    let folder = shard.parent().unwrap().to_path_buf();
    let wal = t.members[0].join("meta/wal");
    let root = t.members[1].clone();
    let set =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    set(&shard, 0o644);
    set(&folder, 0o755);
    set(&wal, 0o644);
    set(&root, 0o755);
    // a symlink inside a member is neither followed nor changed
    let outside = t.tmp.path().join("outside");
    std::fs::write(&outside, b"not the pool's").unwrap();
    set(&outside, 0o644);
    let link = t.members[2].join("stray-link");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    t.mount();
    let log = t.log_text();
    for p in [&shard, &folder, &wal, &root] {
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(&format!("{}:", p.display()))),
            "no warning naming {}:\n{log}",
            p.display()
        );
    }
    assert_eq!(mode(&shard), 0o600);
    assert_eq!(mode(&folder), 0o700);
    assert_eq!(mode(&wal), 0o600);
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&outside), 0o644, "the symlink was followed");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read(t.p("bkt/f")).unwrap() == data);
    std::fs::remove_file(&link).unwrap();
}

/// A daemon killed with kill -9 leaves its lock file behind (naming it);
/// the kernel released the lock, so the next mount goes ahead, takes the
/// lock and writes its own pid over the stale one.
#[test]
fn stale_lock_file_of_a_killed_daemon_does_not_block_the_next_mount() {
    let mut t = TestMount::new(6, SMALL);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let data = pattern(6, 100_000);
    std::fs::write(t.p("bkt/f"), &data).unwrap();
    std::fs::File::open(t.p("bkt/f"))
        .unwrap()
        .sync_all()
        .unwrap();
    let old = t.child.as_ref().unwrap().id();
    t.kill9();
    for m in &t.members {
        let text = std::fs::read_to_string(m.join(LOCK_FILE))
            .unwrap_or_else(|e| panic!("{}: no lock file: {e}", m.display()));
        assert!(text.contains(&format!("pid={old}")), "{text}");
        assert!(
            lock_is_free(m),
            "{} still locked after kill -9",
            m.display()
        );
    }
    t.mount();
    let new = t.child.as_ref().unwrap().id();
    for m in &t.members {
        let text = std::fs::read_to_string(m.join(LOCK_FILE)).unwrap();
        assert!(
            text.contains(&format!("pid={new}")) && !text.contains(&format!("pid={old}")),
            "{text}"
        );
        assert!(
            !lock_is_free(m),
            "{} is not locked by the new daemon",
            m.display()
        );
    }
    assert!(std::fs::read(t.p("bkt/f")).unwrap() == data);
}

/// A stop signal while a file of the mount is still open: the unmount is
/// busy, the daemon says so and retries, and once the file is closed it
/// unmounts and exits 0 with every write on the members.
#[test]
fn a_stop_while_a_file_is_open_waits_for_the_close_then_unmounts_cleanly() {
    let mut t = TestMount::new(6, SMALL);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let data = pattern(6, 200_000);
    let held = {
        use std::io::Write;
        let mut f = std::fs::File::create(t.p("bkt/held")).unwrap();
        f.write_all(&data).unwrap();
        f
    };
    let pid = t.child.as_ref().unwrap().id() as i32;
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let start = Instant::now();
    while !t.log_text().contains("busy; retrying the unmount") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no busy retry logged:\n{}",
            t.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(is_mounted(&t.mnt), "unmounted under an open file");
    drop(held);
    t.unmount();
    assert!(
        t.log_text().contains("unmounted cleanly"),
        "{}",
        t.log_text()
    );
    t.mount();
    assert_eq!(std::fs::read(t.p("bkt/held")).unwrap(), data);
}

/// VmHWM (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// One memory budget over every open file: 64 files open at once, each
/// written 4.5 MiB in 64 KiB writes taken in turn, make the daemon peak
/// at 544 MiB with per-file limits alone (measured with the budget set
/// out of reach). With `--dirty-budget-mb 32` the writers that pass the
/// budget write out the biggest files, the daemon's peak RSS stays under
/// 256 MiB, the
/// metrics count the flushes and show the buffers within the budget, and
/// every byte reads back after a remount.
#[test]
fn open_files_together_stay_within_the_buffer_budget() {
    use std::io::Write;
    let mut t = TestMount::new(6, &[]);
    t.mount_args = vec!["--dirty-budget-mb".into(), "32".into()];
    t.remount();
    std::fs::create_dir(t.p("bkt")).unwrap();
    const FILES: usize = 64;
    const LEN: usize = 9 << 19;
    const CHUNK: usize = 64 << 10;
    let data: Vec<Vec<u8>> = (0..FILES).map(|i| pattern(100 + i as u64, LEN)).collect();
    let mut files: Vec<std::fs::File> = (0..FILES)
        .map(|i| std::fs::File::create(t.p(&format!("bkt/f{i}"))).unwrap())
        .collect();
    for off in (0..LEN).step_by(CHUNK) {
        for (f, d) in files.iter_mut().zip(&data) {
            f.write_all(&d[off..off + CHUNK]).unwrap();
        }
    }
    let pid = t.child.as_ref().unwrap().id();
    let peak = peak_rss_kib(pid);
    assert!(
        peak < 256 << 10,
        "daemon peak RSS {peak} KiB with a 32 MiB budget"
    );
    let (ok, metrics, err) = t.ctl(&["metrics"]);
    assert!(ok, "{err}");
    let get = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert!(get("shardfs_fs_budget_flushes_total") >= 1.0, "{metrics}");
    assert_eq!(get("shardfs_fs_buffer_budget_bytes"), (32u64 << 20) as f64);
    assert!(
        get("shardfs_fs_buffered_bytes") <= (32u64 << 20) as f64,
        "{metrics}"
    );
    drop(files);
    t.remount();
    for (i, d) in data.iter().enumerate() {
        let got = std::fs::read(t.p(&format!("bkt/f{i}"))).unwrap();
        assert!(got == *d, "bkt/f{i} differs after the remount");
    }
}

fn cstr(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// setxattr through the mount: 0 or the errno.
fn set_xattr(p: &Path, name: &str, val: &[u8]) -> i32 {
    let (p, n) = (cstr(p), std::ffi::CString::new(name).unwrap());
    // SAFETY: valid NUL-terminated strings and a buffer of `val.len()` bytes.
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), val.as_ptr().cast(), val.len(), 0) };
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

/// listxattr through the mount: the names.
fn list_xattrs(p: &Path) -> Vec<String> {
    let p = cstr(p);
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: valid path and a buffer of `buf.len()` bytes.
    let n = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr: {}", std::io::Error::last_os_error());
    buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

#[test]
fn xattrs_per_inode_are_capped_in_number_and_total_size() {
    let mut t = TestMount::new(6, SMALL);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let f = t.p("bkt/f");
    std::fs::write(&f, b"x").unwrap();
    // a value over 64 KiB: E2BIG
    assert_eq!(set_xattr(&f, "user.big", &vec![1u8; 65537]), libc::E2BIG);
    // 256 small xattrs fit, the 257th does not
    for i in 0..256 {
        assert_eq!(
            set_xattr(&f, &format!("user.n{i:03}"), b"v"),
            0,
            "xattr {i}"
        );
    }
    assert_eq!(set_xattr(&f, "user.one-more", b"v"), libc::ENOSPC);
    // replacing one that exists is no new xattr
    assert_eq!(set_xattr(&f, "user.n000", b"changed"), 0);
    let names = list_xattrs(&f);
    assert_eq!(names.len(), 256);
    assert!(names.iter().all(|n| n.starts_with("user.n")), "{names:?}");
    // total size: 128 KiB of names and values per inode
    let g = t.p("bkt/g");
    std::fs::write(&g, b"y").unwrap();
    let v = vec![7u8; 60_000];
    assert_eq!(set_xattr(&g, "user.a", &v), 0);
    assert_eq!(set_xattr(&g, "user.b", &v), 0);
    assert_eq!(set_xattr(&g, "user.c", &v), libc::ENOSPC);
    // a value replaced by one of the same size still fits
    assert_eq!(set_xattr(&g, "user.b", &vec![8u8; 60_000]), 0);
    // after a removal there is room again
    let (gp, nb) = (cstr(&g), std::ffi::CString::new("user.b").unwrap());
    // SAFETY: valid NUL-terminated strings.
    assert_eq!(unsafe { libc::removexattr(gp.as_ptr(), nb.as_ptr()) }, 0);
    assert_eq!(set_xattr(&g, "user.c", &v), 0);
    // the caps hold after a remount, and the values are intact
    t.remount();
    assert_eq!(set_xattr(&f, "user.one-more", b"v"), libc::ENOSPC);
    assert_eq!(set_xattr(&g, "user.d", &v), libc::ENOSPC);
    assert_eq!(std::fs::read(&g).unwrap(), b"y");
    let mut names = list_xattrs(&g);
    names.sort();
    assert_eq!(names, ["user.a", "user.c"]);
}

fn used_bytes(p: &Path) -> u64 {
    let p = cstr(p);
    // SAFETY: an all-zero statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    assert_eq!(unsafe { libc::statvfs(p.as_ptr(), &mut st) }, 0);
    (st.f_blocks - st.f_bfree) * st.f_frsize
}

#[test]
fn statfs_counts_inline_files_as_used_and_remembers_them_across_a_remount() {
    // small tmpfs members: nothing else changes their free space
    let mut t = TestMount::new_with(6, SMALL, Some(64));
    std::fs::create_dir(t.p("bkt")).unwrap();
    let before = used_bytes(&t.mnt);
    let (n, len) = (400usize, 2000usize);
    for i in 0..n {
        std::fs::write(t.p(&format!("bkt/f{i}")), pattern(i as u64, len)).unwrap();
    }
    let data = (n * len) as u64;
    // the files are inline: no shard files on the members
    assert!(t.shard_files().is_empty(), "{:?}", t.shard_files());
    let after = used_bytes(&t.mnt);
    assert!(
        after >= before + data,
        "used {before} -> {after} after {data} bytes of inline files"
    );
    t.remount();
    assert!(
        used_bytes(&t.mnt) >= before + data,
        "inline bytes forgotten at the remount"
    );
}

/// Bytes in use on the members' own filesystems (each a tmpfs here).
fn members_used(t: &TestMount) -> u64 {
    t.members.iter().map(|m| used_bytes(m)).sum()
}

/// Dead space in the logs is given back: deleting files punches their
/// shard records out of the logs they share with live files, so the
/// members' filesystems and the pool's statfs get the blocks back at once
/// while the other files read on; a log nothing refers to any more is gone
/// after the next mount.
#[test]
fn deleted_files_give_their_log_space_back_to_the_members_and_to_statfs() {
    let mut t = TestMount::new_with(6, SMALL, Some(64));
    std::fs::create_dir(t.p("bkt")).unwrap();
    let len = 1 << 20;
    for i in 0..6u64 {
        std::fs::write(t.p(&format!("bkt/f{i}")), pattern(i, len)).unwrap();
    }
    let all = t.shard_files();
    let inos: Vec<u64> = (0..3)
        .map(|i| std::fs::metadata(t.p(&format!("bkt/f{i}"))).unwrap().ino())
        .collect();
    let (dead, live): (Vec<ShardRec>, Vec<ShardRec>) =
        all.iter().cloned().partition(|r| inos.contains(&r.object));
    assert_eq!(dead.len(), 3 * 64 * 6, "3 files of 64 stripes of 4+2");
    assert!(
        dead.iter().all(|d| live.iter().any(|r| r.path == d.path)),
        "the dead records share their logs with live ones"
    );
    let dead_bytes: u64 = dead.iter().map(|r| r.len.next_multiple_of(4096)).sum();
    let (members_before, mount_before) = (members_used(&t), used_bytes(&t.mnt));
    for i in 0..3 {
        std::fs::remove_file(t.p(&format!("bkt/f{i}"))).unwrap();
    }
    // deletion is committed with the next metadata flush, then punched
    let start = Instant::now();
    while t.shard_files() != live && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(t.shard_files(), live, "the dead records are punched out");
    let freed = members_before.saturating_sub(members_used(&t));
    assert!(
        freed >= dead_bytes * 9 / 10,
        "{freed} bytes given back to the members for {dead_bytes} bytes of dead records"
    );
    // the pool measures its members again at most once a second
    std::thread::sleep(Duration::from_millis(1100));
    let mount_after = used_bytes(&t.mnt);
    assert!(
        mount_after + dead_bytes / 2 <= mount_before,
        "statfs of the pool: used {mount_before} -> {mount_after} after freeing {dead_bytes}"
    );
    for i in 3..6u64 {
        assert!(
            std::fs::read(t.p(&format!("bkt/f{i}"))).unwrap() == pattern(i, len),
            "f{i} after its neighbours' records were punched"
        );
    }
    // the logs the rest shares go once nothing refers to them
    for i in 3..6 {
        std::fs::remove_file(t.p(&format!("bkt/f{i}"))).unwrap();
    }
    t.remount();
    let logs: Vec<PathBuf> = t
        .members
        .iter()
        .flat_map(|m| std::fs::read_dir(m.join("patches")).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    assert!(logs.is_empty(), "logs left with nothing in them: {logs:?}");
    assert!(members_used(&t) < members_before - dead_bytes);
}

/// Every file under `dir` (following nothing): relative path → content.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    walk(dir)
        .into_iter()
        .filter(|(_, md)| md.is_file())
        .map(|(p, _)| {
            (
                p.strip_prefix(dir).unwrap().to_path_buf(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// Symbolic links planted inside members (the log folder of one member
/// pointing outside it, a member's `replicas` folder pointing
/// outside, a replica-named link to an outside file) are never followed:
/// the files they point at are neither read, written, nor removed, across
/// a mount, reads, new writes, a delete and the mount's replica sweep; the
/// pool reads around the member whose folders are links; entries that are
/// not the daemon's stay.
#[test]
fn symlinks_planted_in_members_never_make_the_daemon_touch_outside_files() {
    let mut t = TestMount::new(6, SMALL);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let data = pattern(7, 300_000);
    std::fs::write(t.p("bkt/f"), &data).unwrap();
    t.unmount();
    let outside = t.tmp.path().join("outside");
    // member 0: its log folder (every shard record of the member) moved
    // outside and replaced by a link to it
    let moved = outside.join("patches0");
    std::fs::create_dir_all(&outside).unwrap();
    let logs0 = t.members[0].join("patches");
    std::fs::rename(&logs0, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &logs0).unwrap();
    // member 1: the replica folder is a link to a folder holding a file
    // named like an unreferenced replica (the sweep would delete it)
    let rep1 = outside.join("rep1");
    std::fs::create_dir_all(&rep1).unwrap();
    std::fs::write(rep1.join("1-abc"), b"victim one").unwrap();
    let _ = std::fs::remove_dir(t.members[1].join("replicas"));
    std::os::unix::fs::symlink(&rep1, t.members[1].join("replicas")).unwrap();
    // member 2: a replica-named link to an outside file, and an admin's note
    let victim2 = outside.join("victim2");
    std::fs::write(&victim2, b"victim two").unwrap();
    let rep2 = t.members[2].join("replicas");
    std::fs::create_dir_all(&rep2).unwrap();
    std::os::unix::fs::symlink(&victim2, rep2.join("2-def")).unwrap();
    std::fs::write(rep2.join("notes.txt"), b"an admin's file").unwrap();
    let before = snapshot(&outside);
    assert!(
        before.keys().any(|p| p.starts_with("patches0")),
        "no log was moved outside"
    );

    t.mount();
    assert!(
        std::fs::read(t.p("bkt/f")).unwrap() == data,
        "read around member 0"
    );
    let data2 = pattern(8, 200_000);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(t.p("bkt/g")).unwrap();
        f.write_all(&data2).unwrap();
        f.sync_all().unwrap();
    }
    // an overwrite inside a committed stripe, and a delete
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(t.p("bkt/g"))
            .unwrap();
        f.write_all_at(b"patched", 5000).unwrap();
        f.sync_all().unwrap();
    }
    std::fs::remove_file(t.p("bkt/f")).unwrap();
    let mut want2 = data2.clone();
    want2[5000..5007].copy_from_slice(b"patched");
    assert!(std::fs::read(t.p("bkt/g")).unwrap() == want2);
    t.unmount();
    t.mount();
    assert!(
        std::fs::read(t.p("bkt/g")).unwrap() == want2,
        "after a remount"
    );
    t.unmount();

    assert_eq!(
        snapshot(&outside),
        before,
        "a file outside the members changed"
    );
    assert!(
        std::fs::symlink_metadata(rep2.join("2-def")).is_err(),
        "the sweep left an unreferenced replica-named entry"
    );
    assert_eq!(std::fs::read(&victim2).unwrap(), b"victim two");
    assert_eq!(
        std::fs::read(rep2.join("notes.txt")).unwrap(),
        b"an admin's file"
    );
    assert!(std::fs::symlink_metadata(t.members[1].join("replicas"))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// A metadata replica whose WAL was replaced by a symlink to an outside
/// file is refused (named in the log), not opened through the link: the
/// outside file keeps its bytes, the pool mounts on its other replicas
/// and every file reads back.
#[test]
fn a_symlinked_metadata_file_is_refused_and_the_pool_mounts_on_the_other_replicas() {
    let mut t = TestMount::new(6, SMALL);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let data = pattern(9, 100_000);
    std::fs::write(t.p("bkt/f"), &data).unwrap();
    std::fs::write(t.p("bkt/small"), b"inline").unwrap();
    t.unmount();
    let meta = t
        .members
        .iter()
        .map(|m| m.join("meta"))
        .find(|d| d.join("wal").exists())
        .expect("a metadata replica");
    let outside = t.tmp.path().join("outside-wal");
    std::fs::rename(meta.join("wal"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, meta.join("wal")).unwrap();
    let before = std::fs::read(&outside).unwrap();
    t.mount();
    assert!(std::fs::read(t.p("bkt/f")).unwrap() == data);
    assert_eq!(std::fs::read(t.p("bkt/small")).unwrap(), b"inline");
    std::fs::write(t.p("bkt/new"), b"after").unwrap();
    t.unmount();
    let log = t.log_text();
    assert!(
        log.contains(&format!(
            "{} is a symbolic link",
            meta.join("wal").display()
        )),
        "the refusal is not named in the log:\n{log}"
    );
    assert!(
        std::fs::read(&outside).unwrap() == before,
        "the outside file was written"
    );
    t.mount();
    assert_eq!(std::fs::read(t.p("bkt/new")).unwrap(), b"after");
}

/// A blank directory at a member's path (a dead drive swapped for a new,
/// empty one) and a member of another pool at another's: the mount goes
/// ahead degraded, warns naming each path, never writes to either (no
/// lock file, no mode change, no shard), and serves and takes data.
#[test]
fn blank_and_foreign_member_dirs_mount_degraded_and_are_never_written() {
    let mut t = TestMount::new(6, SMALL);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let data = pattern(11, 200_000);
    std::fs::write(t.p("bkt/f"), &data).unwrap();
    t.unmount();
    // member 1: the drive was replaced by a blank one
    std::fs::remove_dir_all(&t.members[1]).unwrap();
    std::fs::create_dir(&t.members[1]).unwrap();
    std::fs::set_permissions(&t.members[1], std::fs::Permissions::from_mode(0o755)).unwrap();
    // member 4: a member of another pool sits at its path
    let other: Vec<PathBuf> = (0..6)
        .map(|i| t.tmp.path().join(format!("other{i}")))
        .collect();
    let out = Command::new(SHARDFS)
        .arg("mkfs")
        .args(&other)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&t.members[4]).unwrap();
    std::fs::rename(&other[0], &t.members[4]).unwrap();
    let foreign_before = snapshot(&t.members[4]);
    let foreign_modes: Vec<u32> = walk(&t.members[4]).iter().map(|(_, m)| m.mode()).collect();

    t.mount();
    assert!(
        std::fs::read(t.p("bkt/f")).unwrap() == data,
        "degraded read"
    );
    std::fs::write(t.p("bkt/g"), b"written degraded").unwrap();
    let (ok, out, err) = t.ctl(&["status"]);
    assert!(ok, "{err}");
    assert!(out.contains("missing") || out.contains("MISSING"), "{out}");
    t.unmount();
    let log = t.log_text();
    for (p, what) in [
        (&t.members[1], "holds no shardfs superblock"),
        (&t.members[4], "member of another pool"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("WARN")
                && l.contains(&p.display().to_string())
                && l.contains(what)),
            "no warning naming {}:\n{log}",
            p.display()
        );
    }
    assert_eq!(
        std::fs::read_dir(&t.members[1]).unwrap().count(),
        0,
        "the blank directory was written"
    );
    assert_eq!(
        mode(&t.members[1]),
        0o755,
        "the blank directory was chmodded"
    );
    assert_eq!(
        snapshot(&t.members[4]),
        foreign_before,
        "the foreign member changed"
    );
    let modes_after: Vec<u32> = walk(&t.members[4]).iter().map(|(_, m)| m.mode()).collect();
    assert_eq!(modes_after, foreign_modes);
    // the pool still has everything on a remount
    t.mount();
    assert!(std::fs::read(t.p("bkt/f")).unwrap() == data);
    assert_eq!(std::fs::read(t.p("bkt/g")).unwrap(), b"written degraded");
}
