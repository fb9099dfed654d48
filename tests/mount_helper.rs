//! The mount(8) helper (mount-helpers/mount.shardfs): straight, through
//! `mount -t fuse.shardfs` / `mount -t shardfs`, through an fstab line
//! (`mount -T FILE`), bad options; the daemon's sd_notify readiness; the
//! systemd unit files. Real FUSE mounts, run as root (as the rest of the
//! suite); every mount is undone in Drop, also when a test fails.

mod common;
use common::{is_mounted, pattern, SHARDCTL, SHARDFS};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const HELPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mount-helpers/mount.shardfs");
const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mount-helpers");

/// A 2+1 pool of three members in a temporary directory, not mounted.
struct Pool {
    tmp: tempfile::TempDir,
    members: Vec<PathBuf>,
    mnt: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Pool {
    fn new() -> Pool {
        let tmp = tempfile::Builder::new()
            .prefix("shardfs-helper")
            .tempdir()
            .unwrap();
        let members: Vec<PathBuf> = (0..3)
            .map(|i| tmp.path().join(format!("disk{i}")))
            .collect();
        let out = Command::new(SHARDFS)
            .args(["mkfs", "-k", "2", "-m", "1"])
            .args(&members)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mkfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        Pool {
            socket: tmp.path().join("ctl.sock"),
            log: tmp.path().join("logs").join("daemon.log"),
            members,
            mnt,
            tmp,
        }
    }

    /// SPEC: the members separated by ':'.
    fn spec(&self) -> String {
        self.members
            .iter()
            .map(|m| m.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Options every test mount uses: its own socket and log file.
    fn base_opts(&self) -> String {
        format!(
            "socket={},log={}",
            self.socket.display(),
            self.log.display()
        )
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon the helper started last (its log says `shardfs pid N`).
    fn daemon_pid(&self) -> Option<i32> {
        self.log_text()
            .lines()
            .filter_map(|l| l.strip_prefix("=== mount.shardfs: shardfs pid "))
            .next_back()
            .map(|p| p.trim().parse().unwrap())
    }

    /// Whether `pid` is still our daemon (not exited, not a zombie, not
    /// reused by another program).
    fn daemon_alive(&self, pid: i32) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
        if state == Some(Some('Z')) {
            return false;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let mnt = self.mnt.as_os_str().as_encoded_bytes();
        cmdline.split(|&b| b == 0).any(|a| a == mnt)
    }

    fn wait_daemon_exit(&self, pid: i32, limit: Duration) -> bool {
        let start = Instant::now();
        while self.daemon_alive(pid) {
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// `umount MNT`; the daemon then commits and exits by itself.
    fn umount(&self) {
        let pid = self.daemon_pid().expect("no daemon pid in the log");
        let out = Command::new("umount").arg(&self.mnt).output().unwrap();
        assert!(
            out.status.success(),
            "umount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!is_mounted(&self.mnt), "still mounted after umount");
        assert!(
            self.wait_daemon_exit(pid, Duration::from_secs(30)),
            "daemon {pid} still running after umount:\n{}",
            self.log_text()
        );
        assert!(
            self.log_text().trim_end().ends_with("unmounted cleanly"),
            "no clean unmount in the log:\n{}",
            self.log_text()
        );
    }

    /// Write a striped file (larger than the inline limit) and read it back.
    fn write_and_read(&self, seed: u64) -> Vec<u8> {
        let bucket = self.mnt.join("bkt");
        if !bucket.exists() {
            std::fs::create_dir(&bucket).unwrap();
        }
        let data = pattern(seed, 300 * 1024 + 17);
        let f = bucket.join(format!("f{seed}"));
        std::fs::write(&f, &data).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), data);
        data
    }

    /// The mountinfo line of the mount.
    fn mountinfo(&self) -> String {
        let mnt = self.mnt.to_str().unwrap();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(mnt))
            .unwrap_or_default()
            .to_string()
    }
}

fn lazy_unmount(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: plain syscall on a valid NUL-terminated path.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let pid = self.daemon_pid();
        if is_mounted(&self.mnt) {
            lazy_unmount(&self.mnt);
        }
        if let Some(pid) = pid {
            if self.daemon_alive(pid) {
                // SAFETY: signalling the daemon this test started (checked
                // by its command line).
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
                if !self.wait_daemon_exit(pid, Duration::from_secs(10)) {
                    // SAFETY: as above.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log_text());
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The helper and the `shardfs` binary side by side in a directory, as an
/// install would put them: the helper finds the binary beside itself.
fn helper_beside_binary(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("mount.shardfs");
    std::fs::copy(HELPER, &helper).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(SHARDFS, bin.join("shardfs")).unwrap();
    helper
}

// ---- the helpers installed where mount(8) looks -------------------------

/// mount(8) runs helpers only from /sbin (/sbin/fs.d, /sbin/fs): tests that
/// go through mount(8) install mount.fuse.shardfs and mount.shardfs there,
/// one test at a time (a mutex here, flock across processes), and put back
/// whatever was installed before when done.
struct Installed {
    paths: Vec<(PathBuf, PathBuf)>,
    _lock: File,
    _guard: MutexGuard<'static, ()>,
}

static INSTALL: Mutex<()> = Mutex::new(());

fn install_helpers() -> Installed {
    let guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let lock = File::create("/tmp/shardfs-mount-helper-test.lock").unwrap();
    // SAFETY: flock on an open descriptor we own.
    let r = unsafe {
        use std::os::fd::AsRawFd;
        libc::flock(lock.as_raw_fd(), libc::LOCK_EX)
    };
    assert_eq!(r, 0, "flock");
    let mut paths = Vec::new();
    for name in ["mount.fuse.shardfs", "mount.shardfs"] {
        let path = Path::new("/sbin").join(name);
        let backup = Path::new("/sbin").join(format!("{name}.shardfs-test-backup"));
        // a backup left by a run that died is the original: keep it
        if path.exists() && !backup.exists() {
            std::fs::rename(&path, &backup).unwrap();
        }
        let tmp = Path::new("/sbin").join(format!(".{name}.new"));
        std::fs::copy(HELPER, &tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        paths.push((path, backup));
    }
    Installed {
        paths,
        _lock: lock,
        _guard: guard,
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        for (path, backup) in &self.paths {
            let _ = std::fs::remove_file(path);
            if backup.exists() {
                let _ = std::fs::rename(backup, path);
            }
        }
    }
}

/// mount(8) with the test's shardfs binary (the installed helper sits in
/// /sbin, where no shardfs is: SHARDFS_BIN names it).
fn mount_cmd() -> Command {
    let mut c = Command::new("mount");
    c.env("SHARDFS_BIN", SHARDFS);
    c
}

// ---- the tests -----------------------------------------------------------

#[test]
fn helper_mounts_with_options_umount_stops_it_and_data_persists() {
    let p = Pool::new();
    let helper = helper_beside_binary(p.tmp.path());
    let opts = format!(
        "rw,threads=2,flush_ms=50,readahead_kb=1024,repair_rate=0,scrub_interval_hours=24,\
         passthrough=off,tier_interval_secs=30,replica_verify_secs=5,defaults,nofail,_netdev,nosuid,nodev,{}",
        p.base_opts()
    );
    let out = Command::new(&helper)
        .env_remove("SHARDFS_BIN")
        .arg(p.spec())
        .arg(&p.mnt)
        .args(["-v", "-o", &opts])
        .output()
        .unwrap();
    assert!(out.status.success(), "helper: {}", text(&out));
    // exit 0 means mounted, at once: no waiting here
    assert!(is_mounted(&p.mnt), "helper returned before the mount");
    // found the binary beside itself, and passed every option on
    let log = p.log_text();
    let cmd = log
        .lines()
        .find(|l| l.contains("mount.shardfs: ") && l.contains(" mount "))
        .unwrap_or_else(|| panic!("no command line in the log:\n{log}"));
    for flag in [
        "--threads 2",
        "--flush-ms 50",
        "--readahead-kb 1024",
        "--repair-rate 0",
        "--scrub-interval-hours 24",
        "--passthrough off",
        "--tier-interval-secs 30",
        "--replica-verify-secs 5",
    ] {
        assert!(cmd.contains(flag), "{flag} missing from {cmd}");
    }
    assert!(
        cmd.contains(&format!("{}/bin/shardfs mount", p.tmp.path().display())),
        "{cmd}"
    );
    assert!(stderr(&out).contains("mounted"), "{}", text(&out));
    // the daemon is detached: a session of its own
    let pid = p.daemon_pid().unwrap();
    // SAFETY: getsid on a pid only reads.
    assert_eq!(
        unsafe { libc::getsid(pid) },
        pid,
        "daemon not in its own session"
    );
    // socket= reached the daemon: shardctl answers there
    let st = Command::new(SHARDCTL)
        .arg("--socket")
        .arg(&p.socket)
        .arg("status")
        .output()
        .unwrap();
    assert!(st.status.success(), "shardctl status: {}", text(&st));

    let data = p.write_and_read(1);
    p.umount();
    assert!(!p.socket.exists(), "control socket left behind");

    // again from a glob, read-only: the data is there, writes are refused
    let glob = format!("{}/disk*", p.tmp.path().display());
    let out = Command::new(&helper)
        .arg(&glob)
        .arg(&p.mnt)
        .args(["-o", &format!("ro,{}", p.base_opts())])
        .output()
        .unwrap();
    assert!(out.status.success(), "helper ro: {}", text(&out));
    let info = p.mountinfo();
    assert!(
        info.split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|f| f == "ro"),
        "{info}"
    );
    assert_eq!(std::fs::read(p.mnt.join("bkt/f1")).unwrap(), data);
    let err = std::fs::write(p.mnt.join("bkt/new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    // mounting twice on the same point is refused, nothing stacks
    let out = Command::new(&helper)
        .arg(&glob)
        .arg(&p.mnt)
        .args(["-o", &p.base_opts()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(32), "{}", text(&out));
    assert!(
        stderr(&out).contains("already a shardfs mount"),
        "{}",
        text(&out)
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = p.mnt.to_str().unwrap();
    assert_eq!(
        mounts
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(mnt))
            .count(),
        1
    );
    p.umount();
}

#[test]
fn mount_t_fuse_shardfs_and_mount_t_shardfs_run_the_installed_helper() {
    let p = Pool::new();
    let _installed = install_helpers();
    let out = mount_cmd()
        .args(["-t", "fuse.shardfs", "-o"])
        .arg(format!("threads=2,{}", p.base_opts()))
        .arg(p.spec())
        .arg(&p.mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount -t fuse.shardfs: {}",
        text(&out)
    );
    assert!(is_mounted(&p.mnt));
    assert!(
        p.log_text().contains("--threads 2"),
        "options not passed:\n{}",
        p.log_text()
    );
    let data = p.write_and_read(2);
    p.umount();

    let out = mount_cmd()
        .args(["-t", "shardfs", "-o", &p.base_opts()])
        .arg(p.spec())
        .arg(&p.mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "mount -t shardfs: {}", text(&out));
    assert!(is_mounted(&p.mnt));
    assert_eq!(std::fs::read(p.mnt.join("bkt/f2")).unwrap(), data);
    p.write_and_read(3);
    p.umount();
}

#[test]
fn fstab_line_mounts_with_mount_t_fstab() {
    let p = Pool::new();
    let _installed = install_helpers();
    // what a real /etc/fstab line carries; `user` implies noexec (and
    // nosuid,nodev), which the helper applies
    let fstab = p.tmp.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# test fstab\n{} {} fuse.shardfs defaults,noauto,nofail,_netdev,\
             x-systemd.requires-mounts-for=/srv,x-systemd.mount-timeout=30,user,\
             threads=2,scrub_interval_hours=12,{} 0 0\n",
            p.spec(),
            p.mnt.display(),
            p.base_opts()
        ),
    )
    .unwrap();
    let out = mount_cmd()
        .arg("-T")
        .arg(&fstab)
        .arg(&p.mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "mount -T: {}", text(&out));
    assert!(is_mounted(&p.mnt));
    let log = p.log_text();
    assert!(
        log.contains("--threads 2") && log.contains("--scrub-interval-hours 12"),
        "{log}"
    );
    let info = p.mountinfo();
    let flags: Vec<&str> = info.split(' ').nth(5).unwrap().split(',').collect();
    for f in ["rw", "noexec", "nosuid", "nodev"] {
        assert!(flags.contains(&f), "{f} missing: {info}");
    }
    p.write_and_read(4);
    // a second mount of the same line is refused, the first stays
    let out = mount_cmd()
        .arg("-T")
        .arg(&fstab)
        .arg(&p.mnt)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("already a shardfs mount"),
        "{}",
        text(&out)
    );
    assert!(is_mounted(&p.mnt));
    assert_eq!(
        std::fs::read(p.mnt.join("bkt/f4")).unwrap(),
        pattern(4, 300 * 1024 + 17)
    );
    // the mount's source is the SPEC, so `mount -a` knows the line is
    // mounted and leaves it alone: exit 0, still one mount
    assert!(
        p.mountinfo().contains(&format!(" {} ", p.spec())),
        "{}",
        p.mountinfo()
    );
    let auto = p.tmp.path().join("fstab-auto");
    std::fs::write(
        &auto,
        format!(
            "{} {} fuse.shardfs {} 0 0\n",
            p.spec(),
            p.mnt.display(),
            p.base_opts()
        ),
    )
    .unwrap();
    let out = mount_cmd()
        .args(["-a", "-v", "-T"])
        .arg(&auto)
        .output()
        .unwrap();
    assert!(out.status.success(), "mount -a: {}", text(&out));
    assert!(text(&out).contains("already mounted"), "{}", text(&out));
    let mp = format!(" {} ", p.mnt.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&mp))
        .count();
    assert_eq!(mounts, 1);
    p.umount();
}

#[test]
fn bad_options_and_failing_daemons_give_clear_errors_and_mount_nothing() {
    let p = Pool::new();
    let helper = |opts: &str| {
        Command::new(HELPER)
            .env("SHARDFS_BIN", SHARDFS)
            .arg(p.spec())
            .arg(&p.mnt)
            .args(["-o", opts])
            .output()
            .unwrap()
    };
    let base = p.base_opts();
    for (opts, msg) in [
        (
            format!("threads=2,bogus=1,{base}"),
            "unknown option 'bogus=1'",
        ),
        (
            format!("threads=two,{base}"),
            "threads= needs a whole number",
        ),
        (format!("threads=0,{base}"), "threads= must be at least 1"),
        (format!("socket=,{base}"), "socket= needs a path"),
        (
            format!("passthrough=yes,{base}"),
            "passthrough= is on or off",
        ),
    ] {
        let out = helper(&opts);
        assert_eq!(out.status.code(), Some(1), "{opts}: {}", text(&out));
        assert!(stderr(&out).contains(msg), "{opts}: {}", text(&out));
        assert!(!is_mounted(&p.mnt), "{opts}: mounted anyway");
        assert!(!p.log.exists(), "{opts}: a daemon was started");
    }
    // unknown flags and types
    let out = Command::new(HELPER)
        .arg(p.spec())
        .arg(&p.mnt)
        .args(["-t", "fuse.sshfs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("not shardfs"), "{}", text(&out));
    // the same options less the bad one mount
    let out = helper(&format!("threads=2,{base}"));
    assert!(out.status.success(), "{}", text(&out));
    p.umount();
    // -f (fake) checks and mounts nothing
    let out = Command::new(HELPER)
        .env("SHARDFS_BIN", SHARDFS)
        .arg(p.spec())
        .arg(&p.mnt)
        .args(["-f", "-o", &base])
        .output()
        .unwrap();
    assert!(out.status.success(), "-f: {}", text(&out));
    assert!(!is_mounted(&p.mnt));

    // a member that does not exist, a glob that matches nothing
    let missing = format!("{}:{}/nothere", p.spec(), p.tmp.path().display());
    let out = Command::new(HELPER)
        .env("SHARDFS_BIN", SHARDFS)
        .arg(&missing)
        .arg(&p.mnt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(32), "{}", text(&out));
    assert!(
        stderr(&out).contains("nothere does not exist"),
        "{}",
        text(&out)
    );
    let out = Command::new(HELPER)
        .env("SHARDFS_BIN", SHARDFS)
        .arg(format!("{}/none*", p.tmp.path().display()))
        .arg(&p.mnt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(32), "{}", text(&out));
    assert!(stderr(&out).contains("matches nothing"), "{}", text(&out));

    // the daemon refuses (a member with a damaged superblock): its own
    // error is shown
    let empty = p.tmp.path().join("damaged");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("shardfs.superblock"), b"garbage").unwrap();
    let out = Command::new(HELPER)
        .env("SHARDFS_BIN", SHARDFS)
        .arg(format!("{}:{}", p.spec(), empty.display()))
        .arg(&p.mnt)
        .args(["-o", &base])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(32), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("exited (status 1) before mounting") && err.contains("superblock is damaged"),
        "{}",
        text(&out)
    );
    assert!(!is_mounted(&p.mnt));
    let pid = p.daemon_pid().unwrap();
    assert!(!p.daemon_alive(pid));

    // the same through mount(8): its exit status and message come through
    let _installed = install_helpers();
    let out = mount_cmd()
        .args(["-t", "fuse.shardfs", "-o"])
        .arg(format!("threads=2,nonsense,{base}"))
        .arg(p.spec())
        .arg(&p.mnt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("unknown option 'nonsense'"),
        "{}",
        text(&out)
    );
    assert!(!is_mounted(&p.mnt));
    // -s (sloppy, mount -s) warns about unknown options and mounts
    let out = mount_cmd()
        .args(["-s", "-t", "fuse.shardfs", "-o"])
        .arg(format!("nonsense,{base}"))
        .arg(p.spec())
        .arg(&p.mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "mount -s: {}", text(&out));
    assert!(
        stderr(&out).contains("ignoring unknown option 'nonsense'"),
        "{}",
        text(&out)
    );
    assert!(is_mounted(&p.mnt));
    p.umount();
}

/// `recv`, retried when a signal to this test process interrupts it.
fn recv_eintr(rx: &UnixDatagram, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match rx.recv(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Run the daemon as systemd would for a Type=notify unit, with
/// NOTIFY_SOCKET at `addr`, and receive from `rx`: STATUS while opening,
/// READY=1 once the mount serves, STOPPING=1 on SIGTERM.
fn notify_protocol(p: &Pool, rx: &UnixDatagram, addr: &str) {
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::fs::create_dir_all(p.log.parent().unwrap()).unwrap();
    let logf = File::create(&p.log).unwrap();
    let mut child = Command::new(SHARDFS)
        .arg("mount")
        .arg("--socket")
        .arg(&p.socket)
        .args(&p.members)
        .arg(&p.mnt)
        .env("NOTIFY_SOCKET", addr)
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut seen = Vec::new();
    let recv = |seen: &mut Vec<String>| -> String {
        let mut buf = [0u8; 4096];
        // a signal to this test process may interrupt the wait: retry
        let n = loop {
            match rx.recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r.unwrap_or_else(|e| panic!("no notification ({e}) after {seen:?}")),
            }
        };
        let m = String::from_utf8(buf[..n].to_vec()).unwrap();
        seen.push(m.clone());
        m
    };
    let ready = loop {
        let m = recv(&mut seen);
        if m.lines().any(|l| l == "READY=1") {
            break m;
        }
        assert!(!m.contains("STOPPING=1"), "stopping before ready: {seen:?}");
    };
    // ready means serving: the mount is there and answers
    assert!(is_mounted(&p.mnt), "READY=1 before the mount");
    assert!(ready.ends_with('\n'), "{ready:?}");
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=serving pool ")),
        "{ready:?}"
    );
    assert!(
        seen[0].lines().any(|l| l == "STATUS=opening the pool"),
        "{seen:?}"
    );
    std::fs::create_dir(p.mnt.join("bkt")).unwrap();
    std::fs::write(p.mnt.join("bkt/x"), b"ready").unwrap();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    loop {
        let m = recv(&mut seen);
        if m.lines().any(|l| l == "STOPPING=1") {
            break;
        }
    }
    let st = child.wait().unwrap();
    assert!(st.success(), "daemon exit {st}:\n{}", p.log_text());
    assert!(!is_mounted(&p.mnt));
    // what the daemon sent after STOPPING=1, before it exited
    rx.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = recv_eintr(rx, &mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    rx.set_nonblocking(false).unwrap();
    assert!(
        seen.last()
            .unwrap()
            .contains("STATUS=unmounted; final sync"),
        "{seen:?}"
    );
}

#[test]
fn daemon_notifies_ready_and_stopping_on_a_path_socket() {
    let p = Pool::new();
    let sock = p.tmp.path().join("notify.sock");
    let rx = UnixDatagram::bind(&sock).unwrap();
    notify_protocol(&p, &rx, sock.to_str().unwrap());
    // without NOTIFY_SOCKET (a plain `shardfs mount`) nothing is sent
    let logf = File::create(p.tmp.path().join("plain.log")).unwrap();
    let mut child = Command::new(SHARDFS)
        .arg("mount")
        .arg("--socket")
        .arg(&p.socket)
        .args(&p.members)
        .arg(&p.mnt)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !is_mounted(&p.mnt) {
        assert!(child.try_wait().unwrap().is_none(), "daemon exited");
        assert!(start.elapsed() < Duration::from_secs(30), "no mount");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read(p.mnt.join("bkt/x")).unwrap(), b"ready");
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    rx.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert!(rx.recv(&mut buf).is_err(), "notified without NOTIFY_SOCKET");
}

#[test]
fn daemon_notifies_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let p = Pool::new();
    let name = format!("shardfs-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let rx = UnixDatagram::bind_addr(&addr).unwrap();
    notify_protocol(&p, &rx, &format!("@{name}"));
}

#[test]
fn systemd_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    // the template as an instance, with this build's binary
    let unit = std::fs::read_to_string(Path::new(UNITS).join("shardfs@.service")).unwrap();
    assert!(unit.contains("Type=notify"), "{unit}");
    assert!(unit.contains("ExecStart=/usr/local/bin/shardfs mount "));
    let inst = dir.path().join("shardfs@mnt-pool.service");
    std::fs::write(&inst, unit.replace("/usr/local/bin/shardfs", SHARDFS)).unwrap();
    std::fs::copy(
        Path::new(UNITS).join("mnt-pool.mount"),
        dir.path().join("mnt-pool.mount"),
    )
    .unwrap();
    for u in ["shardfs@mnt-pool.service", "mnt-pool.mount"] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(u))
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .output()
            .unwrap();
        assert!(out.status.success(), "{u}: {}", text(&out));
        // unknown keys and bad values are only warnings: there must be none
        assert!(stderr(&out).trim().is_empty(), "{u}: {}", text(&out));
    }
}

#[test]
fn daemon_reports_a_failed_start_in_status() {
    let p = Pool::new();
    let sock = p.tmp.path().join("notify.sock");
    let rx = UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let empty = p.tmp.path().join("damaged");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("shardfs.superblock"), b"garbage").unwrap();
    let out = Command::new(SHARDFS)
        .arg("mount")
        .args(&p.members)
        .arg(&empty)
        .arg(&p.mnt)
        .env("NOTIFY_SOCKET", &sock)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    rx.set_nonblocking(true).unwrap();
    while let Ok(n) = recv_eintr(&rx, &mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], "STATUS=opening the pool\n");
    assert!(
        seen[1].starts_with("STATUS=failed: ") && seen[1].contains("superblock is damaged"),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|m| m.contains("READY=1")), "{seen:?}");
    assert!(!is_mounted(&p.mnt));
}
