//! Test harness: a pool in a temporary directory, mounted through the real
//! `shardfs` binary, unmounted on drop even when the test fails.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SHARDFS: &str = env!("CARGO_BIN_EXE_shardfs");
pub const SHARDCTL: &str = env!("CARGO_BIN_EXE_shardctl");

pub struct TestMount {
    pub tmp: tempfile::TempDir,
    pub members: Vec<PathBuf>,
    pub mnt: PathBuf,
    pub socket: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    /// Extra mounts (e.g. small tmpfs members) to undo after the FUSE mount.
    pub extra_mounts: Vec<PathBuf>,
    /// Extra `shardfs mount` flags.
    pub mount_args: Vec<String>,
    /// Extra environment of the daemon (e.g. `SHARDFS_TEST_PANIC=1`).
    pub mount_env: Vec<(String, String)>,
}

pub fn is_mounted(p: &Path) -> bool {
    let s = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = p.to_string_lossy();
    // a FUSE mount at `p` (its source is shardfs:POOL, or the SPEC when
    // the mount helper started it)
    s.lines().any(|l| {
        let fstype = l.split(" - ").nth(1).and_then(|t| t.split(' ').next());
        l.split(' ').nth(4) == Some(p.as_ref()) && matches!(fstype, Some("fuse" | "fuse.shardfs"))
    })
}

/// SIGTERM a daemon we started, wait up to 10 s for it to exit, then kill it.
pub fn stop_daemon(c: &mut std::process::Child) {
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(c.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    while c.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Detach a mount (when a daemon died with it mounted).
pub fn lazy_unmount(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: plain syscall on a valid NUL-terminated path.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
}

impl TestMount {
    /// mkfs a pool of `n` members with extra mkfs args, and mount it.
    pub fn new(n: usize, mkfs_args: &[&str]) -> TestMount {
        Self::new_with(n, mkfs_args, None)
    }

    /// Like `new`, but every member is a tmpfs of `tmpfs_mib` MiB (a small
    /// disk that fills up).
    pub fn new_with(n: usize, mkfs_args: &[&str], tmpfs_mib: Option<u64>) -> TestMount {
        let tmp = tempfile::Builder::new()
            .prefix("shardfs-test")
            .tempdir()
            .unwrap();
        let members: Vec<PathBuf> = (0..n)
            .map(|i| tmp.path().join(format!("disk{i}")))
            .collect();
        let mut extra_mounts = Vec::new();
        if let Some(mib) = tmpfs_mib {
            for m in &members {
                std::fs::create_dir(m).unwrap();
                let st = Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                    .arg(m)
                    .status()
                    .unwrap();
                assert!(st.success(), "mount tmpfs (tests run as root)");
                extra_mounts.push(m.clone());
            }
        }
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let out = Command::new(SHARDFS)
            .arg("mkfs")
            .args(mkfs_args)
            .args(&members)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mkfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let socket = tmp.path().join("ctl.sock");
        let log = tmp.path().join("daemon.log");
        let mut t = TestMount {
            tmp,
            members,
            mnt,
            socket,
            child: None,
            log,
            extra_mounts,
            mount_args: Vec::new(),
            mount_env: Vec::new(),
        };
        t.mount();
        t
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Start the daemon over the members that still exist and wait for the mount.
    pub fn mount(&mut self) {
        let present: Vec<&PathBuf> = self.members.iter().filter(|m| m.is_dir()).collect();
        self.mount_with(&present.into_iter().cloned().collect::<Vec<_>>());
    }

    pub fn mount_with(&mut self, members: &[PathBuf]) {
        assert!(self.child.is_none(), "already mounted");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(SHARDFS)
            .arg("mount")
            .arg("--socket")
            .arg(&self.socket)
            .args(&self.mount_args)
            .args(members)
            .arg(&self.mnt)
            .env("RUST_LOG", "info")
            .envs(self.mount_env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        while !is_mounted(&self.mnt) {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "daemon exited with {st} before mounting:\n{}",
                    self.log_text()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "mount did not appear:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Clean unmount: SIGTERM and wait for the daemon to exit.
    pub fn unmount(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let start = Instant::now();
            loop {
                if let Some(st) = c.try_wait().unwrap() {
                    assert!(st.success(), "daemon exit {st}:\n{}", self.log_text());
                    break;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = c.kill();
                    let _ = c.wait();
                    lazy_unmount(&self.mnt);
                    panic!("daemon did not exit after SIGTERM:\n{}", self.log_text());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert!(!is_mounted(&self.mnt), "still mounted after clean stop");
    }

    /// kill -9 the daemon and detach the dead mount.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        lazy_unmount(&self.mnt);
        let start = Instant::now();
        while is_mounted(&self.mnt) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// Run shardctl with args and `--json`; the parsed reply (panics on failure).
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let (ok, out, err) = self.ctl(&a);
        assert!(ok, "shardctl {args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Run shardctl with args; returns (success, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(SHARDCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Every shard on the members, read off the disks: the records in the
    /// members' logs (`patches/<8 hex>`, format 3) and shard files of
    /// their own (`shards/`, older pools), each verified; sorted.
    pub fn shard_files(&self) -> Vec<ShardRec> {
        shard_records(&self.members)
    }
}

/// A verified shard found on a member: a shard file (`offset` 0) or a
/// record in a log; its bytes are `len` bytes at `offset` of `path`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShardRec {
    pub member: usize,
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
    pub object: u64,
    pub stripe: u64,
    pub generation: u64,
    pub index: u8,
}

impl ShardRec {
    /// The shard's bytes (header, block table, payload).
    pub fn read(&self) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&self.path).unwrap();
        let mut b = vec![0u8; self.len as usize];
        f.read_exact_at(&mut b, self.offset).unwrap();
        b
    }

    /// Overwrite the shard's bytes in place (same length), durably.
    pub fn write(&self, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        assert_eq!(bytes.len() as u64, self.len);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap();
        f.write_all_at(bytes, self.offset).unwrap();
        f.sync_all().unwrap();
    }

    /// XOR `mask` into byte `pos` of the shard.
    pub fn flip(&self, pos: usize, mask: u8) {
        let mut b = self.read();
        b[pos] ^= mask;
        self.write(&b);
    }

    /// (object, stripe, generation): the stripe the shard belongs to.
    pub fn stripe_key(&self) -> (u64, u64, u64) {
        (self.object, self.stripe, self.generation)
    }
}

/// Every verified shard on `members` (see [`TestMount::shard_files`]).
pub fn shard_records(members: &[PathBuf]) -> Vec<ShardRec> {
    let mut out = Vec::new();
    for (i, m) in members.iter().enumerate() {
        // shard files of their own
        for d in std::fs::read_dir(m.join("shards"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let Ok(bytes) = std::fs::read(f.path()) else {
                    continue;
                };
                if let Some(r) = verified(&bytes, 0) {
                    out.push(ShardRec {
                        member: i,
                        path: f.path(),
                        ..r
                    });
                }
            }
        }
        // records in the logs, at 4 KiB boundaries
        for f in std::fs::read_dir(m.join("patches"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(bytes) = std::fs::read(f.path()) else {
                continue;
            };
            let mut at = 0usize;
            while at + shardfs::ec::HEADER_LEN <= bytes.len() {
                match verified(&bytes, at) {
                    Some(r) => {
                        let len = r.len as usize;
                        out.push(ShardRec {
                            member: i,
                            path: f.path(),
                            ..r
                        });
                        at += len.next_multiple_of(4096);
                    }
                    None => at += 4096,
                }
            }
        }
    }
    out.sort();
    out
}

/// The shard starting at `at` of `bytes`, if one is there and verifies.
fn verified(bytes: &[u8], at: usize) -> Option<ShardRec> {
    let b = bytes.get(at..)?;
    if b.len() < shardfs::ec::HEADER_LEN || &b[..8] != b"SHRDFS01" {
        return None;
    }
    let payload = u32::from_le_bytes(b[56..60].try_into().unwrap()) as usize;
    let len = shardfs::ec::header_len(payload) + payload;
    let (h, _) = shardfs::ec::ShardHeader::open(b.get(..len)?).ok()?;
    Some(ShardRec {
        member: 0,
        path: PathBuf::new(),
        offset: at as u64,
        len: len as u64,
        object: h.id.object,
        stripe: h.id.stripe,
        generation: h.id.generation,
        index: h.id.index,
    })
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_daemon(&mut c);
        }
        if is_mounted(&self.mnt) {
            lazy_unmount(&self.mnt);
        }
        for m in &self.extra_mounts {
            lazy_unmount(m);
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log_text());
        }
    }
}

/// Deterministic bytes for a file: no zero bytes, so holes are detectable.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 255) as u8 + 1
        })
        .collect()
}

pub fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("no errno in {e}")),
    }
}

/// Run a shell command in `dir`, asserting success; returns stdout.
pub fn sh(dir: &Path, cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
