//! One shardfs process at a time per member: an exclusive, non-blocking
//! `flock` on `MEMBER/shardfs.lock` (mode 0600), taken on every member
//! before anything on it is replayed, swept or written, and held for the
//! life of the daemon (or of `shardfs recover`). A second mount of the
//! same members fails at once with a message naming the holder's pid and
//! mount point, which the holder wrote into the lock file.
//!
//! The kernel drops a flock when its holder dies, however it dies: a lock
//! file left by a killed daemon is not locked and its contents are simply
//! overwritten by the next holder. The sweeps never see the file (they
//! list `shards/NN/` and `replicas/`, never the member root).

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// File name of the lock at the root of every member.
pub const LOCK_FILE: &str = "shardfs.lock";

/// What the holder of a lock is doing, as written into the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// a daemon serving the pool at this mount point
    Mount(PathBuf),
    /// `shardfs recover` writing into this directory
    Recover(PathBuf),
    /// a program that opened the pool without mounting it (a benchmark, a
    /// test); the text says which
    Program(String),
}

impl Holder {
    /// A daemon mounting at `mountpoint` (made absolute if it can be).
    pub fn mount(mountpoint: &Path) -> Holder {
        Holder::Mount(
            mountpoint
                .canonicalize()
                .unwrap_or_else(|_| mountpoint.to_path_buf()),
        )
    }

    /// This program, opening the pool in-process.
    pub fn this_program() -> Holder {
        Holder::Program(
            std::env::args()
                .next()
                .unwrap_or_else(|| "a shardfs library user".into()),
        )
    }

    /// The lock file's contents for holder `pid`.
    fn contents(&self, pid: u32) -> String {
        let (key, value) = match self {
            Holder::Mount(p) => ("mount", p.display().to_string()),
            Holder::Recover(p) => ("recover", p.display().to_string()),
            Holder::Program(s) => ("program", s.clone()),
        };
        // the value is last and runs to the final newline, so a path with
        // a newline in it still reads back
        format!("pid={pid}\n{key}={value}\n")
    }

    /// Parse [`Holder::contents`]: (pid, holder).
    fn parse(text: &str) -> Option<(u32, Holder)> {
        let (first, rest) = text.split_once('\n')?;
        let pid = first.strip_prefix("pid=")?.parse().ok()?;
        let (key, value) = rest.split_once('=')?;
        let value = value.strip_suffix('\n').unwrap_or(value).to_string();
        let h = match key {
            "mount" => Holder::Mount(value.into()),
            "recover" => Holder::Recover(value.into()),
            "program" => Holder::Program(value),
            _ => return None,
        };
        Some((pid, h))
    }
}

/// Why a member is busy: "in use by shardfs pid N mounted at M: unmount it first".
fn busy_message(dir: &Path, text: &str) -> String {
    let d = dir.display();
    match Holder::parse(text) {
        Some((pid, Holder::Mount(mp))) => format!(
            "member {d} is in use by shardfs pid {pid} mounted at {}: unmount it first",
            mp.display()
        ),
        Some((pid, Holder::Recover(out))) => format!(
            "member {d} is in use by shardfs pid {pid} (`shardfs recover` into {}): wait for it to finish",
            out.display()
        ),
        Some((pid, Holder::Program(p))) => format!(
            "member {d} is in use by pid {pid} ({p}, which opened the pool): stop it first"
        ),
        None => format!(
            "member {d} is in use by another shardfs process (its {LOCK_FILE} names no holder yet): \
             unmount it first"
        ),
    }
}

/// The held lock of one member; dropping it releases the lock (the file
/// stays).
#[derive(Debug)]
pub struct MemberLock {
    dir: PathBuf,
    _file: Flock<File>,
}

impl MemberLock {
    /// The member directory, as it was given.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Longest a mount waits for a holder that has already unmounted (it is
/// finishing its shutdown: the last metadata commit, the catalog).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// True when `mp` is not a mount point now (its device is its parent's).
/// Unknown (an error) counts as mounted.
fn unmounted(mp: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Some(Ok(b))) = (
        std::fs::symlink_metadata(mp),
        mp.parent().map(std::fs::symlink_metadata),
    ) else {
        return false;
    };
    a.dev() == b.dev()
}

/// Lock `file` (the lock file of member `dir`) or say who holds it. A
/// holder that was a mount and whose mount point is no longer mounted is
/// shutting down: its lock is waited for, up to [`SHUTDOWN_WAIT`] (a
/// remount right after `umount` must not fail on the old daemon's last
/// writes). Any other holder fails the call at once.
fn take(dir: &Path, file: File) -> Result<Flock<File>, String> {
    let mut file = file;
    let until = std::time::Instant::now() + SHUTDOWN_WAIT;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((mut f, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = std::io::Seek::rewind(&mut f);
                let _ = f.read_to_string(&mut text);
                let leaving =
                    matches!(Holder::parse(&text), Some((_, Holder::Mount(mp))) if unmounted(&mp));
                if !leaving || std::time::Instant::now() >= until {
                    return Err(holder_of(dir, f, leaving));
                }
                std::thread::sleep(Duration::from_millis(50));
                file = f;
            }
            Err((_, e)) => {
                return Err(format!(
                    "member {}: locking {LOCK_FILE} failed: {e}",
                    dir.display()
                ))
            }
        }
    }
}

/// The message for a member whose lock `file` another process holds.
fn holder_of(dir: &Path, mut file: File, leaving: bool) -> String {
    // the holder writes its name just after it locks: give it a moment
    let mut text = String::new();
    for _ in 0..25 {
        text.clear();
        let _ = std::io::Seek::rewind(&mut file);
        let _ = file.read_to_string(&mut text);
        if Holder::parse(&text).is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = busy_message(dir, &text);
    if leaving {
        format!(
            "{m} (its mount point is not mounted: it is starting or shutting down; \
             waited {} s for it)",
            SHUTDOWN_WAIT.as_secs()
        )
    } else {
        m
    }
}

/// Take the lock of the member at `dir` for `holder` and write the
/// holder's pid and mount point into it. Fails at once if another process
/// holds it, with a message naming that process and its mount point.
pub fn lock_member(dir: &Path, holder: &Holder) -> Result<MemberLock, String> {
    let path = dir.join(LOCK_FILE);
    let file = open_rw(&path).map_err(|e| open_error(dir, &path, e))?;
    lock_and_name(dir, &path, file, holder)
}

fn open_error(dir: &Path, path: &Path, e: std::io::Error) -> String {
    format!(
        "member {}: cannot open its lock file {}: {e}",
        dir.display(),
        path.display()
    )
}

/// Lock the opened lock file `file` of `dir` and write `holder` into it.
fn lock_and_name(
    dir: &Path,
    path: &Path,
    file: File,
    holder: &Holder,
) -> Result<MemberLock, String> {
    let file = take(dir, file)?;
    let text = holder.contents(std::process::id());
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|_| file.set_len(0))
        .and_then(|_| file.write_all_at(text.as_bytes(), 0));
    if let Err(e) = written {
        log::warn!(
            "{}: could not write the holder into the lock file: {e}",
            path.display()
        );
    }
    Ok(MemberLock {
        dir: dir.to_path_buf(),
        _file: file,
    })
}

/// [`lock_member`] for a process that only reads the member (`shardfs
/// recover`): on a read-only filesystem an existing lock file is locked as
/// it is (a daemon cannot be using a member it cannot write; without a
/// lock file there is nothing to lock: None).
pub fn lock_member_for_reading(dir: &Path, holder: &Holder) -> Result<Option<MemberLock>, String> {
    let path = dir.join(LOCK_FILE);
    match open_rw(&path) {
        Ok(f) => lock_and_name(dir, &path, f, holder).map(Some),
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
            match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(f) => Ok(Some(MemberLock {
                    dir: dir.to_path_buf(),
                    _file: take(dir, f)?,
                })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    log::info!(
                        "member {} is read-only and has no {LOCK_FILE}: no daemon can be using it",
                        dir.display()
                    );
                    Ok(None)
                }
                Err(e) => Err(format!("member {}: {}: {e}", dir.display(), path.display())),
            }
        }
        Err(e) => Err(open_error(dir, &path, e)),
    }
}

/// Whether `dir` holds a lock file (a regular file, not a symlink) that no
/// process has locked: one left by a daemon that died, or by a `disk add`
/// that stopped before formatting.
pub fn is_stale(dir: &Path) -> bool {
    let Ok(f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join(LOCK_FILE))
    else {
        return false;
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok()
}

/// The locks a daemon holds: one per member, more as members are added.
#[derive(Debug)]
pub struct PoolLocks {
    holder: Holder,
    held: Mutex<Vec<MemberLock>>,
}

impl PoolLocks {
    /// Lock every member in `dirs` for `holder`; on the first that is busy
    /// the ones already taken are released and the error names it.
    pub fn lock_all(dirs: &[PathBuf], holder: Holder) -> Result<PoolLocks, String> {
        let locks = PoolLocks {
            holder,
            held: Mutex::new(Vec::new()),
        };
        for d in dirs {
            locks.lock(d)?;
        }
        Ok(locks)
    }

    /// Lock one more member (`disk add`) and hold it with the others.
    pub fn lock(&self, dir: &Path) -> Result<(), String> {
        let l = lock_member(dir, &self.holder)?;
        self.held.lock().unwrap_or_else(|p| p.into_inner()).push(l);
        Ok(())
    }

    /// Let go of the lock on `dir` (a `disk add` that failed before the
    /// directory became a member) and remove its lock file, which would
    /// otherwise make the directory look used.
    pub fn release_unformatted(&self, dir: &Path) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = held.iter().position(|l| l.dir == dir) {
            held.remove(i);
            if !dir.join(crate::pool::SUPERBLOCK_FILE).exists() {
                let _ = std::fs::remove_file(dir.join(LOCK_FILE));
            }
        }
    }

    /// The member directories locked.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|l| l.dir.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_round_trips_and_names_itself() {
        for h in [
            Holder::Mount("/mnt/p".into()),
            Holder::Recover("/srv/out\nx".into()),
            Holder::Program("bench".into()),
        ] {
            assert_eq!(Holder::parse(&h.contents(42)), Some((42, h)));
        }
        assert_eq!(Holder::parse(""), None);
        assert_eq!(
            busy_message(
                Path::new("/x/d1"),
                &Holder::Mount("/mnt/p".into()).contents(1234)
            ),
            "member /x/d1 is in use by shardfs pid 1234 mounted at /mnt/p: unmount it first"
        );
        assert!(busy_message(Path::new("/x/d1"), "").contains("unmount it first"));
    }

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m");
        std::fs::create_dir(&m).unwrap();
        let first =
            PoolLocks::lock_all(std::slice::from_ref(&m), Holder::Mount("/proc".into())).unwrap();
        assert_eq!(first.dirs(), vec![m.clone()]);
        let md = std::fs::metadata(m.join(LOCK_FILE)).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o600);
        let err = lock_member(&m, &Holder::Mount("/mnt/b".into())).unwrap_err();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("/proc"),
            "{err}"
        );
        let err = lock_member_for_reading(&m, &Holder::Recover("/o".into())).unwrap_err();
        assert!(err.contains("/proc"), "{err}");
        drop(first);
        let second = lock_member(&m, &Holder::Mount("/mnt/b".into())).unwrap();
        let text = std::fs::read_to_string(m.join(LOCK_FILE)).unwrap();
        assert!(
            text.ends_with("mount=/mnt/b\n") && !text.contains("/proc"),
            "{text}"
        );
        drop(second);
    }

    #[test]
    fn a_holder_whose_mount_point_is_gone_is_waited_for() {
        // a daemon that has unmounted (its mount point is a plain
        // directory now) and is finishing its last writes: a new mount
        // waits for it instead of failing
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m");
        let gone = d.path().join("mnt");
        std::fs::create_dir(&m).unwrap();
        std::fs::create_dir(&gone).unwrap();
        let first = lock_member(&m, &Holder::mount(&gone)).unwrap();
        let t = std::time::Instant::now();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let second = lock_member(&m, &Holder::Mount("/mnt/b".into())).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        releaser.join().unwrap();
        drop(second);
    }

    #[test]
    fn a_symlinked_lock_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join(LOCK_FILE)).unwrap();
        assert!(lock_member(d.path(), &Holder::Mount("/m".into())).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn a_failed_add_releases_and_removes_the_lock_file() {
        let d = tempfile::tempdir().unwrap();
        let locks = PoolLocks::lock_all(&[], Holder::Mount("/m".into())).unwrap();
        locks.lock(d.path()).unwrap();
        locks.release_unformatted(d.path());
        assert!(locks.dirs().is_empty());
        assert!(!d.path().join(LOCK_FILE).exists());
    }

    #[test]
    fn a_lock_file_is_stale_only_when_unlocked() {
        let d = tempfile::tempdir().unwrap();
        assert!(!is_stale(d.path()), "no lock file");
        let l = lock_member(d.path(), &Holder::Mount("/m".into())).unwrap();
        assert!(!is_stale(d.path()), "held");
        drop(l);
        assert!(is_stale(d.path()));
    }
}
