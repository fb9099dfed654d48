//! Wiring a pool together and running it mounted: members, metadata
//! replicas, the filesystem, the flusher, the control socket, FUSE and
//! signal handling.

use crate::control;
use crate::fs::Fs;
use crate::guard::lock::{Holder, PoolLocks};
use crate::meta::{MetaCache, MetaStore, ReplicatedStore};
use crate::pool::{open_members_with, Pool};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Directory (inside a member) of its metadata replica.
pub const META_DIR: &str = "meta";

/// An opened pool with its filesystem.
pub struct Opened {
    /// the filesystem
    pub fs: Arc<Fs>,
    /// the metadata replicas behind it
    pub replicas: Arc<ReplicatedStore>,
    /// the exclusive lock on every member, held as long as this lives
    pub locks: Arc<PoolLocks>,
}

struct SharedStore(Arc<ReplicatedStore>);

impl MetaStore for SharedStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, crate::meta::MetaError> {
        self.0.get(key)
    }
    fn range(
        &self,
        a: &[u8],
        b: &[u8],
        l: usize,
    ) -> Result<crate::meta::KvPairs, crate::meta::MetaError> {
        self.0.range(a, b, l)
    }
    fn range_sizes(
        &self,
        a: &[u8],
        b: &[u8],
        l: usize,
    ) -> Result<crate::meta::KeySizes, crate::meta::MetaError> {
        self.0.range_sizes(a, b, l)
    }
    fn commit(&self, ops: &[crate::meta::Op]) -> Result<(), crate::meta::MetaError> {
        self.0.commit(ops)
    }
    fn sequence(&self) -> Result<u64, crate::meta::MetaError> {
        self.0.sequence()
    }
}

/// Open the pool over `dirs`: check the members, open and reconcile the
/// metadata replicas, and open the filesystem (which reclaims orphans).
pub fn open_pool(dirs: &[PathBuf]) -> Result<Opened, String> {
    open_pool_emulated(dirs, &Emulation::default())
}

/// HDD emulation of members: limits for all of them, and per member.
#[derive(Debug, Clone, Default)]
pub struct Emulation {
    /// limits for every member without its own
    pub all: Option<crate::pool::heat::Limits>,
    /// (member index, limits)
    pub members: Vec<(u16, crate::pool::heat::Limits)>,
}

impl Emulation {
    /// Limits of member `i`, if emulated.
    pub fn of(&self, i: u16) -> Option<crate::pool::heat::Limits> {
        self.members
            .iter()
            .find(|(m, _)| *m == i)
            .map(|(_, l)| *l)
            .or(self.all)
    }
}

/// [`open_pool`] with members emulating hard disks.
pub fn open_pool_emulated(dirs: &[PathBuf], emu: &Emulation) -> Result<Opened, String> {
    open_pool_emulated_as(dirs, emu, Holder::this_program())
}

/// [`open_pool_emulated`], locking the members for `holder`.
pub fn open_pool_emulated_as(
    dirs: &[PathBuf],
    emu: &Emulation,
    holder: Holder,
) -> Result<Opened, String> {
    let wrap =
        |i: u16, d: Arc<dyn crate::pool::DiskBackend>| -> Arc<dyn crate::pool::DiskBackend> {
            match emu.of(i) {
                Some(l) => Arc::new(crate::pool::heat::Throttled::new(d, l)),
                None => d,
            }
        };
    let opened = open_pool_wrapped_as(dirs, &wrap, holder)?;
    for m in opened.fs.pool.members() {
        if let Some(l) = emu.of(m.index) {
            let _ = m.emulated.set(l);
        }
    }
    Ok(opened)
}

/// [`open_pool`] with `wrap` put around every member's disk.
pub fn open_pool_wrapped(dirs: &[PathBuf], wrap: crate::pool::DiskWrap) -> Result<Opened, String> {
    open_pool_wrapped_as(dirs, wrap, Holder::this_program())
}

/// [`open_pool_wrapped`], locking the members for `holder`.
///
/// Order: the superblocks are read (nothing is written to a directory that
/// is not a member of this pool); then every member is locked, so a second
/// daemon stops here, before it replays, sweeps or writes anything; then
/// group/other permission bits are taken off everything on the members;
/// only then are the metadata replicas opened and the filesystem swept.
pub fn open_pool_wrapped_as(
    dirs: &[PathBuf],
    wrap: crate::pool::DiskWrap,
    holder: Holder,
) -> Result<Opened, String> {
    let (kept, left_out) = crate::pool::sort_member_dirs(dirs);
    for w in &left_out {
        log::warn!("DEGRADED: {w}");
    }
    let dirs = &kept[..];
    let (sb, members) = open_members_with(dirs, wrap).map_err(|e| e.to_string())?;
    let locks = Arc::new(PoolLocks::lock_all(dirs, holder)?);
    crate::guard::modes::repair_members(dirs);
    let pool = Arc::new(Pool::new(sb, members).map_err(|e| e.to_string())?);
    let listed = pool.meta_replicas();
    let meta_dirs: Vec<(String, Option<u16>, PathBuf)> = listed
        .iter()
        .filter_map(|&i| pool.members().get(i as usize))
        .filter_map(|m| {
            m.live_disk().and_then(|d| {
                d.local_root()
                    .map(|r| (m.path().to_string(), Some(m.index), r.join(META_DIR)))
            })
        })
        .collect();
    if meta_dirs.len() < listed.len() {
        log::warn!(
            "{} of {} metadata replicas are on missing members: new copies are made on others",
            listed.len() - meta_dirs.len(),
            listed.len()
        );
    }
    let replicas = Arc::new(ReplicatedStore::open_lmdb(meta_dirs).map_err(|e| e.to_string())?);
    let p2 = pool.clone();
    let meta = MetaCache::new(
        Arc::new(SharedStore(replicas.clone())),
        Box::new(move || p2.sync_pending()),
    );
    let fs = Fs::mount(pool, meta).map_err(|e| format!("opening the filesystem: {e}"))?;
    Ok(Opened {
        fs: Arc::new(fs),
        replicas,
        locks,
    })
}

/// Options of `shardfs mount`.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// member directories
    pub members: Vec<PathBuf>,
    /// where to mount
    pub mountpoint: PathBuf,
    /// control socket path (default /run/shardfs/POOL.sock)
    pub socket: Option<PathBuf>,
    /// FUSE worker threads
    pub threads: usize,
    /// metadata group-commit interval
    pub flush_interval: Duration,
    /// kernel readahead for the mount, KiB
    pub readahead_kb: u32,
    /// repair and scrub rate limit, bytes/s (0: none)
    pub repair_rate: u64,
    /// hours between scrub passes
    pub scrub_interval_hours: u64,
    /// minutes between namespace catalog writes (0: only at unmount)
    pub catalog_interval_mins: u64,
    /// seconds between tier passes (0: only on request)
    pub tier_interval_secs: u64,
    /// how reads choose shards
    pub read_policy: crate::pool::ReadPolicy,
    /// shard reads out longer than this count as member errors
    pub io_timeout: Duration,
    /// bytes all open files together may buffer
    pub dirty_budget: usize,
    /// members emulating hard disks
    pub emulation: Emulation,
    /// serve Prometheus metrics over HTTP here (loopback addresses only)
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// serve hot replicas through FUSE passthrough
    pub passthrough: bool,
    /// how reads update access times
    pub atime: crate::fs::AtimeMode,
    /// the mount's source (default shardfs:POOL)
    pub fsname: Option<String>,
    /// seconds a checked replica serves opens before it is checked again
    pub replica_verify_secs: u64,
    /// serve the buckets over S3 too
    pub s3: Option<crate::s3::S3Options>,
}

fn block_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    set
}

/// Mount and serve until unmounted (fusermount3 -u, umount) or signalled
/// (SIGINT, SIGTERM, SIGHUP unmount cleanly).
pub fn run_mount(cfg: MountConfig) -> Result<(), String> {
    // Block the signals before any thread starts so that only the signal
    // thread receives them.
    let sigset = block_signals();
    let mp = &cfg.mountpoint;
    let md = std::fs::metadata(mp).map_err(|e| format!("mount point {}: {e}", mp.display()))?;
    if !md.is_dir() {
        return Err(format!("mount point {} is not a directory", mp.display()));
    }
    // a metrics address that may not or cannot be served fails the mount
    // before anything starts
    let metrics_listener = match cfg.metrics_listen {
        Some(a) => Some(crate::metrics::bind_http(a)?),
        None => None,
    };
    // so does a bad S3 address or keys file
    let s3_prepared = match &cfg.s3 {
        Some(o) => Some(crate::s3::prepare(o)?),
        None => None,
    };
    sd_notify::notify(&[("STATUS", "opening the pool")]);
    let opened = open_pool_emulated_as(&cfg.members, &cfg.emulation, Holder::mount(mp))?;
    opened.fs.pool.set_read_policy(cfg.read_policy);
    opened.fs.pool.set_io_timeout(cfg.io_timeout);
    opened.replicas.set_commit_deadline(cfg.io_timeout);
    opened.fs.set_dirty_budget(cfg.dirty_budget);
    let fs = opened.fs.clone();
    let flusher = fs.meta.clone().run_flusher(cfg.flush_interval);
    let socket = cfg.socket.clone().unwrap_or_else(|| {
        control::default_dir().join(format!(
            "{}.sock",
            fs.pool.sb.pool_id.get(..12).unwrap_or("pool")
        ))
    });
    let maintenance = Arc::new(crate::maintenance::Maintenance::default());
    let _ = maintenance.replicas.set(opened.replicas.clone());
    maintenance.catalog_interval_secs.store(
        cfg.catalog_interval_mins * 60,
        std::sync::atomic::Ordering::Relaxed,
    );
    fs.replicas.verify_secs.store(
        cfg.replica_verify_secs,
        std::sync::atomic::Ordering::Relaxed,
    );
    maintenance
        .tier_interval_secs
        .store(cfg.tier_interval_secs, std::sync::atomic::Ordering::Relaxed);
    maintenance
        .repair
        .rate_limit
        .store(cfg.repair_rate, std::sync::atomic::Ordering::Relaxed);
    for t in [
        &maintenance.scrub,
        &maintenance.rebalance,
        &maintenance.tier,
    ] {
        t.rate_limit
            .store(cfg.repair_rate, std::sync::atomic::Ordering::Relaxed);
    }
    let maint_thread = crate::maintenance::spawn(
        fs.clone(),
        maintenance.clone(),
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(cfg.scrub_interval_hours.max(1) * 3600),
    );
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let ctx = Arc::new(control::server::Context {
        fs: fs.clone(),
        replicas: opened.replicas.clone(),
        maintenance: maintenance.clone(),
        metrics: metrics.clone(),
        locks: opened.locks.clone(),
    });
    let socket = control::server::spawn(&socket, ctx.clone())
        .map_err(|e| format!("control socket {}: {e}", socket.display()))?;
    if let Some(l) = metrics_listener {
        let addr = l
            .local_addr()
            .map_err(|e| format!("metrics listener: {e}"))?;
        let c = ctx.clone();
        crate::metrics::spawn_http(l, move || c.metrics_text())
            .map_err(|e| format!("metrics listener: {e}"))?;
        log::info!("metrics at http://{addr}/metrics");
    }

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(cfg.fsname.clone().unwrap_or_else(|| {
            format!("shardfs:{}", fs.pool.sb.pool_id.get(..12).unwrap_or("pool"))
        })),
        fuser::MountOption::Subtype("shardfs".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    let root = nix::unistd::geteuid().is_root();
    config.acl = if root {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(cfg.threads.max(1));
    config.clone_fd = true;
    let fuse_fs = crate::fuse::FuseFs::with_stats(fs.clone(), metrics.fuse.clone())
        .passthrough(cfg.passthrough)
        .atime(cfg.atime);
    let mut session = fuser::Session::new(fuse_fs, mp, &config).map_err(|e| {
        socket.remove();
        mount_error(&e, root, mp)
    })?;
    let mut unmounter = session.unmount_callable();
    set_readahead(mp, cfg.readahead_kb);
    let s3_server = match s3_prepared {
        Some(p) => {
            let cache = crate::fuse::KernelCache::new(session.notifier());
            match crate::s3::start(p, fs.clone(), Some(Box::new(cache))) {
                Ok(s) => Some(s),
                Err(e) => {
                    let _ = unmounter.unmount();
                    socket.remove();
                    return Err(e);
                }
            }
        }
        None => None,
    };
    log::info!(
        "pool {} ({}+{}, {} members) mounted at {}; control socket {}",
        fs.pool.sb.pool_id,
        fs.pool.sb.k,
        fs.pool.sb.m,
        fs.pool.members().len(),
        mp.display(),
        socket.path().display()
    );
    sd_notify::ready_when_serving(
        mp,
        format!(
            "serving pool {} at {}",
            fs.pool.sb.pool_id.get(..12).unwrap_or("pool"),
            mp.display()
        ),
    );
    let mp2 = mp.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = sigset.wait() {
                log::info!("{sig:?}: unmounting {}", mp2.display());
                sd_notify::notify(&[("STOPPING", "1"), ("STATUS", "unmounting")]);
                if let Err(e) = unmount_patiently(&mp2, &mut unmounter) {
                    log::error!(
                        "unmount failed: {e}; try `fusermount3 -u {}`",
                        mp2.display()
                    );
                }
            }
        })
        .map_err(|e| e.to_string())?;
    let run = session.run();
    sd_notify::notify(&[("STOPPING", "1"), ("STATUS", "unmounted; final sync")]);
    // S3 changes stop before the final sync
    if let Some(s) = s3_server {
        s.stop();
    }
    maintenance.stop();
    let _ = maint_thread.join();
    let res = fs.unmount_sync();
    if res.is_ok() {
        // the namespace as it is at unmount, for `shardfs recover`
        match fs.write_catalog() {
            Ok((n, bytes)) => {
                log::info!("namespace catalog written to {n} members ({bytes} bytes)")
            }
            Err(e) => log::warn!("namespace catalog not written: {e}"),
        }
    }
    fs.meta.shutdown();
    let _ = flusher.join();
    socket.remove();
    run.map_err(|e| format!("FUSE session: {e}"))?;
    res.map_err(|e| format!("final sync: {e}"))?;
    log::info!("unmounted cleanly");
    Ok(())
}

/// Unmount on a stop signal. The kernel answers EBUSY while a file of the
/// mount is still held, and for a moment after a close, until the daemon
/// has answered the last RELEASE; so EBUSY is retried for up to 10 s before
/// the daemon gives up and says how to unmount by hand. Without the right
/// to unmount (not root) fuser's own path, fusermount3, does it.
fn unmount_patiently(mp: &Path, unmounter: &mut fuser::SessionUnmounter) -> std::io::Result<()> {
    use nix::errno::Errno;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut said = false;
    loop {
        match nix::mount::umount(mp) {
            // fuser sees the device unmounted and does nothing more
            Ok(()) => return unmounter.unmount(),
            Err(Errno::EBUSY) if std::time::Instant::now() < deadline => {
                if !said {
                    log::warn!("{} is busy; retrying the unmount for 10 s", mp.display());
                    said = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(Errno::EPERM) => return unmounter.unmount(),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Raise the kernel readahead of the mount (the FUSE default is 128 KiB,
/// so reads reach the daemon in 128 KiB requests; with more, sequential
/// reads arrive as requests of up to 1 MiB, a whole stripe). Needs root;
/// without it the default stays.
fn set_readahead(mp: &Path, kb: u32) {
    let Ok(canon) = mp.canonicalize() else { return };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let canon = canon.to_string_lossy();
    let dev = info
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(&canon))
        .and_then(|l| l.split(' ').nth(2).map(str::to_string));
    let Some(dev) = dev else { return };
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&path, kb.to_string()) {
        Ok(()) => log::debug!("readahead {kb} KiB ({path})"),
        Err(e) => log::info!(
            "could not raise readahead ({path}: {e}); sequential reads stay at 128 KiB requests"
        ),
    }
}

fn mount_error(e: &std::io::Error, root: bool, mp: &Path) -> String {
    let missing_helper = !root
        && [
            "/bin/fusermount3",
            "/usr/bin/fusermount3",
            "/bin/fusermount",
        ]
        .iter()
        .all(|p| !Path::new(p).exists());
    if missing_helper {
        format!(
            "mounting {} failed: {e}. Mounting as a non-root user needs fusermount3: \
             install fuse3 (apt-get install fuse3), or mount as root",
            mp.display()
        )
    } else {
        format!("mounting {} failed: {e}", mp.display())
    }
}

/// systemd's service notification protocol (sd_notify(3)) without
/// libsystemd: one datagram of `KEY=VALUE` lines to the socket named by
/// `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`). Nothing
/// is sent when the variable is unset, so outside a `Type=notify` unit this
/// is a no-op.
pub mod sd_notify {
    use std::ffi::{OsStr, OsString};
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    use std::path::{Path, PathBuf};

    /// The environment variable systemd sets for `Type=notify` services.
    pub const ENV: &str = "NOTIFY_SOCKET";

    /// The datagram for `fields`: one `KEY=VALUE` line each (a newline in a
    /// value would start a new assignment, so it becomes a space).
    pub fn message(fields: &[(&str, &str)]) -> String {
        let mut m = String::new();
        for (k, v) in fields {
            m.push_str(k);
            m.push('=');
            m.push_str(&v.replace(['\n', '\r'], " "));
            m.push('\n');
        }
        m
    }

    /// Send `msg` to the notification socket `addr` (a path, or `@name`
    /// for an abstract socket).
    pub fn send_to(addr: &OsStr, msg: &str) -> io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = addr.as_bytes();
        match bytes.first() {
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                let a = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?;
                sock.send_to_addr(msg.as_bytes(), &a)?;
            }
            Some(b'/') => {
                sock.send_to(msg.as_bytes(), Path::new(addr))?;
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("unsupported {ENV} address {addr:?}"),
                ))
            }
        }
        Ok(())
    }

    /// The notification socket, if the service manager gave one.
    pub fn socket() -> Option<OsString> {
        std::env::var_os(ENV).filter(|a| !a.is_empty())
    }

    /// Tell the service manager `fields`; a no-op without `$NOTIFY_SOCKET`.
    /// A failure is logged, never fatal.
    pub fn notify(fields: &[(&str, &str)]) {
        if let Some(addr) = socket() {
            if let Err(e) = send_to(&addr, &message(fields)) {
                log::warn!("sd_notify to {addr:?} failed: {e}");
            }
        }
    }

    /// Send `READY=1` once the mount at `mp` answers: a stat of it waits
    /// for the kernel's FUSE handshake and a getattr served by this daemon.
    pub fn ready_when_serving(mp: &Path, status: String) {
        if socket().is_none() {
            return;
        }
        let mp: PathBuf = mp.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("sd-notify".into())
            .spawn(move || match std::fs::metadata(&mp) {
                Ok(_) => notify(&[("READY", "1"), ("STATUS", &status)]),
                Err(e) => log::warn!("mount {} does not answer: {e}", mp.display()),
            });
        if let Err(e) = spawned {
            log::warn!("sd_notify thread: {e}; READY=1 not sent");
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::time::Duration;

        #[test]
        fn message_is_key_value_lines() {
            assert_eq!(message(&[("READY", "1")]), "READY=1\n");
            assert_eq!(
                message(&[("STOPPING", "1"), ("STATUS", "final\nsync\r")]),
                "STOPPING=1\nSTATUS=final sync \n"
            );
            assert_eq!(message(&[]), "");
        }

        #[test]
        fn sends_to_a_path_socket() {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("notify");
            let rx = UnixDatagram::bind(&p).unwrap();
            rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            send_to(p.as_os_str(), &message(&[("READY", "1")])).unwrap();
            let mut buf = [0u8; 256];
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"READY=1\n");
        }

        #[test]
        fn sends_to_an_abstract_socket() {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("shardfs-notify-test-{}", std::process::id());
            let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let rx = UnixDatagram::bind_addr(&a).unwrap();
            rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            send_to(OsStr::new(&format!("@{name}")), "STOPPING=1\n").unwrap();
            let mut buf = [0u8; 256];
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"STOPPING=1\n");
        }

        #[test]
        fn rejects_other_addresses() {
            assert!(send_to(OsStr::new("relative/path"), "READY=1\n").is_err());
            assert!(send_to(OsStr::new(""), "READY=1\n").is_err());
        }
    }
}
