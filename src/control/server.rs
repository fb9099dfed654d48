//! The daemon side of the control socket.

use super::*;
use crate::fs::Fs;
use crate::guard::panic::lock_or_recover;
use crate::meta::ReplicatedStore;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections served at once. At the cap, the connection that has waited
/// longest for its request is closed to make room (a waiting connection
/// costs nothing to drop); only when every connection is running a command
/// is a new one refused.
const MAX_CONNECTIONS: usize = 64;
/// A whole request frame must arrive within this long of the connection
/// (or of the previous reply on it): a client that connects and sends
/// nothing, or half a frame, or a byte a second, is closed then.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// A whole reply must be taken by the client within this long.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(10);

/// What the server needs from the daemon.
pub struct Context {
    /// the filesystem
    pub fs: Arc<Fs>,
    /// the metadata replicas
    pub replicas: Arc<ReplicatedStore>,
    /// repair and scrub
    pub maintenance: Arc<crate::maintenance::Maintenance>,
    /// FUSE counters, cached counts and collectors for `metrics`
    pub metrics: Arc<crate::metrics::Metrics>,
    /// the daemon's member locks (`disk add` takes one more)
    pub locks: Arc<crate::guard::lock::PoolLocks>,
}

impl Context {
    /// Every metric in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.metrics.render(&self.fs, &self.maintenance)
    }
}

/// Connections waiting for a request, oldest first (by id), with a handle
/// to close them.
type Waiting = Arc<Mutex<BTreeMap<u64, UnixStream>>>;

/// Check the directory of the control socket: owned by us (or root, for
/// an explicit `--socket`), not a symlink, and not writable by group or
/// others (an explicit `--socket` in a sticky directory such as /tmp is
/// allowed). `strict` is for the default directory (`/run/shardfs`,
/// `$XDG_RUNTIME_DIR/shardfs`, `/tmp/shardfs-UID`), which another user
/// could have created first: it must be ours and 0700-like.
pub fn check_socket_dir(dir: &Path, strict: bool) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if md.file_type().is_symlink() || !md.is_dir() {
        return Err(format!(
            "socket directory {} is not a directory (a symlink or a file): refusing to put \
             the control socket there; remove it or give --socket in a directory of yours",
            dir.display()
        ));
    }
    let owner_ok = md.uid() == me || (!strict && md.uid() == 0);
    if !owner_ok {
        return Err(format!(
            "socket directory {} belongs to uid {}, not to uid {me}: another user may have \
             created it to take over the control socket; remove it (or give --socket in a \
             directory of yours)",
            dir.display(),
            md.uid()
        ));
    }
    let mode = md.mode() & 0o7777;
    let loose = mode & 0o022 != 0;
    if loose && (strict || mode & 0o1000 == 0) {
        return Err(format!(
            "socket directory {} has mode {mode:04o}: group or other users may write it and \
             replace the control socket; `chmod go-w {}` (or give --socket in a directory \
             only you can write)",
            dir.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// Make the socket's directory (0700 if created) and check it; check what
/// is at `path` already: a live daemon's socket is an error, a stale socket
/// is removed, anything that is not a socket is never touched.
pub fn prepare_socket_path(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
    let refuse = |m: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, m);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let strict = dir == default_dir();
        if !dir.exists() {
            if let Some(up) = dir.parent() {
                std::fs::create_dir_all(up)?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        check_socket_dir(dir, strict).map_err(refuse)?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(md) if md.file_type().is_socket() => {
            // a stale socket from a daemon that died; a live one would answer
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by another shardfs daemon", path.display()),
                ));
            }
            std::fs::remove_file(path)
        }
        Ok(md) => {
            let what = if md.file_type().is_symlink() {
                "a symlink"
            } else if md.is_dir() {
                "a directory"
            } else {
                "a file"
            };
            Err(refuse(format!(
                "{} exists and is {what}, not a socket: shardfs never deletes it; remove it \
                 yourself or give another --socket",
                path.display()
            )))
        }
    }
}

/// The socket this daemon bound: removed at exit only while the path
/// still names that very socket (same device and inode), so a file, link
/// or another daemon's socket put there meanwhile is never deleted.
#[derive(Debug)]
pub struct BoundSocket {
    path: PathBuf,
    id: (u64, u64),
}

impl BoundSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the socket if the path still names it.
    pub fn remove(&self) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        match std::fs::symlink_metadata(&self.path) {
            Ok(md) if md.file_type().is_socket() && (md.dev(), md.ino()) == self.id => {
                let _ = std::fs::remove_file(&self.path);
            }
            Ok(_) => log::warn!(
                "{} is no longer this daemon's socket: left in place",
                self.path.display()
            ),
            Err(_) => {}
        }
    }
}

/// Bind the socket (mode 0600) and serve it on a thread.
pub fn spawn(path: &Path, ctx: Arc<Context>) -> std::io::Result<BoundSocket> {
    use std::os::unix::fs::MetadataExt;
    prepare_socket_path(path)?;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let md = std::fs::symlink_metadata(path)?;
    let bound = BoundSocket {
        path: path.to_path_buf(),
        id: (md.dev(), md.ino()),
    };
    let active = Arc::new(AtomicUsize::new(0));
    let waiting: Waiting = Arc::default();
    let mut next_id = 0u64;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                next_id += 1;
                let id = next_id;
                if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    // close the connection that has waited longest for its
                    // request; its thread sees EOF and releases its slot
                    let oldest = {
                        let mut w = lock_or_recover(&waiting);
                        w.pop_first()
                    };
                    match oldest {
                        Some((_, s)) => {
                            let _ = s.shutdown(std::net::Shutdown::Both);
                        }
                        None => {
                            let mut s = stream;
                            let _ = s.set_nonblocking(true);
                            let _ = reply(&mut s, &Reply::err("too many control connections"));
                            continue;
                        }
                    }
                }
                if active.fetch_add(1, Ordering::SeqCst) >= 2 * MAX_CONNECTIONS {
                    // evicted threads have not exited yet
                    active.fetch_sub(1, Ordering::SeqCst);
                    let mut s = stream;
                    let _ = s.set_nonblocking(true);
                    let _ = reply(&mut s, &Reply::err("too many control connections"));
                    continue;
                }
                let ctx = ctx.clone();
                let slots = active.clone();
                let waiting = waiting.clone();
                let spawned = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        // a panicking handler must not leak the slot: the
                        // stream is dropped while unwinding, the count
                        // released after
                        let _ = crate::guard::panic::contain("control connection", || {
                            serve(stream, id, &ctx, &waiting)
                        });
                        lock_or_recover(&waiting).remove(&id);
                        slots.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
    Ok(bound)
}

fn reply(s: &mut UnixStream, r: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).expect("serialisable");
    line.push(b'\n');
    write_by(s, &line, Instant::now() + REPLY_DEADLINE)
}

/// Write all of `buf` before `deadline` (one deadline for the whole
/// reply, not one per write: a client reading a byte at a time is cut off).
fn write_by(s: &mut UnixStream, mut buf: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        s.set_write_timeout(Some(left))?;
        match s.write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Why no request frame came.
enum NoFrame {
    /// the client closed (or reset) the connection
    Closed,
    /// the frame did not end within [`MAX_FRAME`] bytes
    TooLarge,
    /// the frame was not complete by the deadline
    Late,
}

/// Read one request line (without its newline) before `deadline`;
/// `buf` keeps bytes of the next frame (pipelined requests).
fn read_frame(
    s: &mut UnixStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Vec<u8>, NoFrame> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(at) = buf.iter().position(|&b| b == b'\n') {
            if at > MAX_FRAME {
                return Err(NoFrame::TooLarge);
            }
            let mut line: Vec<u8> = buf.drain(..=at).collect();
            line.pop();
            return Ok(line);
        }
        if buf.len() > MAX_FRAME {
            return Err(NoFrame::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NoFrame::Late);
        }
        if s.set_read_timeout(Some(left)).is_err() {
            return Err(NoFrame::Closed);
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(NoFrame::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(NoFrame::Late)
            }
            Err(_) => return Err(NoFrame::Closed),
        }
    }
}

fn authorized(s: &UnixStream) -> Result<(), String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(s, PeerCredentials).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() == 0 || cred.uid() == me {
        Ok(())
    } else {
        Err(format!(
            "uid {} may not use the control socket (root or uid {me} only)",
            cred.uid()
        ))
    }
}

fn serve(mut stream: UnixStream, id: u64, ctx: &Context, waiting: &Waiting) {
    if let Err(why) = authorized(&stream) {
        log::warn!("control: refused a connection: {why}");
        let _ = reply(&mut stream, &Reply::err(why));
        return;
    }
    let mut buf = Vec::new();
    loop {
        // while it waits for a request the connection may be closed to
        // make room for another (see MAX_CONNECTIONS)
        if let Ok(c) = stream.try_clone() {
            lock_or_recover(waiting).insert(id, c);
        }
        let frame = read_frame(&mut stream, &mut buf, Instant::now() + REQUEST_DEADLINE);
        lock_or_recover(waiting).remove(&id);
        let line = match frame {
            Ok(line) => line,
            Err(NoFrame::Closed) => return,
            Err(NoFrame::TooLarge) => {
                let _ = reply(
                    &mut stream,
                    &Reply::err(format!("request larger than {MAX_FRAME} bytes")),
                );
                return;
            }
            Err(NoFrame::Late) => {
                let _ = reply(
                    &mut stream,
                    &Reply::err(format!(
                        "no complete request within {} s: connection closed",
                        REQUEST_DEADLINE.as_secs()
                    )),
                );
                return;
            }
        };
        let r = handle(&line, ctx);
        if reply(&mut stream, &r).is_err() {
            return;
        }
    }
}

/// Parse one request line (a control frame): JSON, this protocol
/// version, a known command. Never panics on any bytes (fuzzed in
/// `tests/fuzz_decode.rs`).
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))?;
    match v.get("v").and_then(|x| x.as_u64()) {
        Some(v) if v == PROTOCOL_VERSION as u64 => {}
        Some(v) => {
            return Err(format!(
                "protocol version {v} not supported (this daemon speaks {PROTOCOL_VERSION})"
            ))
        }
        None => return Err("request has no protocol version \"v\"".into()),
    }
    serde_json::from_value(v).map_err(|e| format!("unknown or malformed command: {e}"))
}

/// Answer one request line.
pub fn handle(line: &[u8], ctx: &Context) -> Reply {
    let req = match parse_request(line) {
        Ok(r) => r,
        Err(e) => return Reply::err(e),
    };
    let result = match req.cmd {
        Command::Status => status(ctx).map(|s| serde_json::to_value(s).expect("json")),
        Command::Locate { path, from, limit } => {
            locate(ctx, &path, from, limit).map(|l| serde_json::to_value(l).expect("json"))
        }
        Command::RepairStatus => Ok(json(ctx.maintenance.repair.snapshot())),
        Command::RepairStart => {
            ctx.maintenance.repair.request();
            Ok(json(ctx.maintenance.repair.snapshot()))
        }
        Command::RepairRate { bytes_per_sec } => {
            ctx.maintenance
                .repair
                .rate_limit
                .store(bytes_per_sec, Ordering::Relaxed);
            for t in [
                &ctx.maintenance.scrub,
                &ctx.maintenance.rebalance,
                &ctx.maintenance.tier,
            ] {
                t.rate_limit.store(bytes_per_sec, Ordering::Relaxed);
            }
            Ok(json(ctx.maintenance.repair.snapshot()))
        }
        Command::ScrubStart => {
            ctx.maintenance
                .scrub
                .requested
                .store(true, Ordering::SeqCst);
            ctx.maintenance.repair.request(); // wakes the thread
            Ok(json(ctx.maintenance.scrub.snapshot()))
        }
        Command::ScrubStatus => Ok(json(ctx.maintenance.scrub.snapshot())),
        Command::DiskFail { member } => set_health(ctx, member, crate::pool::Health::Failed),
        Command::DiskDrain { member } => set_health(ctx, member, crate::pool::Health::Draining),
        Command::DiskAdd {
            path,
            domain,
            class,
        } => disk_add(ctx, &path, domain, class),
        Command::RebalanceStart => {
            ctx.maintenance
                .rebalance
                .request_via(&ctx.maintenance.repair);
            rebalance_status(ctx)
        }
        Command::RebalanceStatus => rebalance_status(ctx),
        Command::Heat => Ok(json(heat_report(ctx))),
        Command::HeatHistory => Ok(json(
            ctx.fs
                .pool
                .members()
                .iter()
                .map(|m| super::MemberHistory {
                    index: m.index,
                    seconds: m.heat.history(),
                })
                .collect::<Vec<_>>(),
        )),
        Command::ReadPolicy { policy } => crate::pool::ReadPolicy::parse(&policy).map(|p| {
            ctx.fs.pool.set_read_policy(p);
            json(heat_report(ctx))
        }),
        Command::TierStatus => tier_status(ctx),
        Command::TierStart { force } => {
            let f = match force.as_deref() {
                None => Ok(None),
                Some("hot") => Ok(Some(crate::fs::Tier::Hot)),
                Some("cold") => Ok(Some(crate::fs::Tier::Cold)),
                Some(x) => Err(format!("force {x:?}: give hot or cold")),
            };
            f.and_then(|f| {
                *ctx.maintenance.tier_force.lock().unwrap() = f;
                ctx.maintenance.tier.request_via(&ctx.maintenance.repair);
                tier_status(ctx)
            })
        }
        Command::TierPolicy { bucket, policy } => ctx
            .fs
            .set_tier_policy(bucket.as_deref().map(str::as_bytes), policy)
            .map_err(|e| e.to_string())
            .and_then(|()| tier_status(ctx)),
        Command::Durability { afr } => durability(ctx, afr),
        Command::Metrics => Ok(serde_json::json!({ "text": ctx.metrics_text() })),
    };
    match result {
        Ok(v) => Reply::ok(v),
        Err(e) => Reply::err(e),
    }
}

fn json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).expect("json")
}

fn tier_status(ctx: &Context) -> Result<serde_json::Value, String> {
    let st = ctx.fs.tier_status().map_err(|e| e.to_string())?;
    let mut v = json(&st);
    v["progress"] = json(ctx.maintenance.tier.snapshot());
    Ok(v)
}

fn heat_report(ctx: &Context) -> super::HeatReport {
    let pool = &ctx.fs.pool;
    super::HeatReport {
        read_policy: pool.read_policy().name().into(),
        hedges: pool.stats.hedges.load(Ordering::Relaxed),
        reconstructions: pool.stats.reconstructions.load(Ordering::Relaxed),
        parity_by_choice: pool.stats.parity_by_choice.load(Ordering::Relaxed),
        members: pool
            .members()
            .iter()
            .map(|m| super::MemberHeat {
                index: m.index,
                state: m.health().name().into(),
                path: m.path().to_string(),
                heat: m.heat.snapshot(),
                emulated: m.emulated.get().copied(),
            })
            .collect(),
    }
}

fn disk_add(
    ctx: &Context,
    path: &str,
    domain: Option<String>,
    class: Option<String>,
) -> Result<serde_json::Value, String> {
    let dir = std::path::Path::new(path);
    if !dir.is_absolute() {
        return Err(format!(
            "{path}: give the new member's directory as an absolute path"
        ));
    }
    let index = ctx
        .fs
        .add_member_dir(dir, domain, class, &ctx.locks)
        .map_err(|e| e.to_string())?;
    ctx.maintenance
        .rebalance
        .request_via(&ctx.maintenance.repair);
    Ok(json(serde_json::json!({
        "member": index,
        "path": path,
        "message": format!(
            "member {index} ({path}) joined the pool; new stripes use it now and a rebalance \
             moves data onto it (see `shardctl rebalance status`)"
        ),
    })))
}

fn rebalance_status(ctx: &Context) -> Result<serde_json::Value, String> {
    let mut v = json(ctx.maintenance.rebalance.snapshot());
    let spread = ctx.fs.imbalance().map_err(|e| e.to_string())?;
    v["imbalance"] = json(spread);
    Ok(v)
}

fn set_health(
    ctx: &Context,
    member: u16,
    h: crate::pool::Health,
) -> Result<serde_json::Value, String> {
    let pool = &ctx.fs.pool;
    let m = pool
        .members()
        .get(member as usize)
        .ok_or_else(|| format!("no member {member}: the pool has {}", pool.members().len()))?;
    let cur = m.health();
    use crate::pool::Health;
    match (cur, h) {
        (Health::Missing, _) => return Err(format!("member {member} is missing from this mount")),
        (Health::Removed, _) => return Err(format!("member {member} was already removed")),
        (Health::Failed, Health::Draining) => {
            return Err(format!(
                "member {member} has failed: its shards are rebuilt from redundancy, not drained"
            ))
        }
        _ => {}
    }
    // one admin health change at a time: the checks below and the change
    // itself happen under this lock, so two `disk fail`s cannot both pass
    // a check that only one of them may pass
    let _one = lock_or_recover(&HEALTH_CHANGE);
    let cur = m.health();
    if matches!(cur, Health::Removed | Health::Missing) {
        return Err(format!("member {member} is already {}", cur.name()));
    }
    // refuse a change that would leave too few members for the code
    let left = pool
        .members()
        .iter()
        .filter(|x| x.index != member && x.writable_disk().is_some())
        .count();
    let need = pool.k() + 1;
    if left < need {
        return Err(format!(
            "only {left} other members are online; taking member {member} out would leave \
             fewer than k+1 = {need} for writes"
        ));
    }
    stripes_keep_redundancy(ctx, member, h)?;
    ctx.fs
        .set_member_health(member, h)
        .map_err(|e| e.to_string())?;
    ctx.maintenance.repair.request();
    Ok(json(serde_json::json!({
        "member": member,
        "state": h.name(),
        "message": format!(
            "member {member} is now {}; repair moves its shards (see `shardctl repair status`)",
            h.name()
        ),
    })))
}

/// Serialises admin member-health changes (`disk fail`, `disk drain`).
static HEALTH_CHANGE: Mutex<()> = Mutex::new(());

/// Stripe records read per step of the redundancy scan.
const SCAN_BATCH: usize = 4096;

/// Refuse to take `member` out (`h`: failed or draining) if any committed
/// stripe would be left with fewer than k+1 shards on readable members
/// other than it. Counts the stripe records (the `T` table) in batches.
fn stripes_keep_redundancy(
    ctx: &Context,
    member: u16,
    h: crate::pool::Health,
) -> Result<(), String> {
    let pool = &ctx.fs.pool;
    let k = pool.k();
    let need = k + 1;
    let readable: Vec<bool> = pool
        .members()
        .iter()
        .map(|m| m.index != member && m.live_disk().is_some())
        .collect();
    let mut cursor = b"T".to_vec();
    let end = b"U".to_vec();
    let mut short = 0u64;
    let mut first: Option<(u64, u64, usize)> = None;
    loop {
        let batch = ctx
            .fs
            .meta
            .range(&cursor, &end, SCAN_BATCH)
            .map_err(|e| format!("reading the stripe map: {e}"))?;
        let Some((last, _)) = batch.last() else { break };
        let mut next = last.clone();
        next.push(0);
        for (key, v) in &batch {
            let loc = crate::fs::schema::dec_loc(pool, v).map_err(|e| e.to_string())?;
            let have = loc
                .members
                .iter()
                .filter(|&&mi| {
                    mi != crate::pool::NO_MEMBER
                        && readable.get(mi as usize).copied().unwrap_or(false)
                })
                .count();
            if have < need {
                short += 1;
                if first.is_none() && key.len() >= 17 {
                    first = Some((
                        crate::fs::schema::key_u64_at(key, 1),
                        crate::fs::schema::key_u64_at(key, 9),
                        have,
                    ));
                }
            }
        }
        if batch.len() < SCAN_BATCH {
            break;
        }
        cursor = next;
    }
    match first {
        None if short == 0 => Ok(()),
        None => Err(format!(
            "refusing to mark member {member} {}: {short} stripe(s) would keep fewer than \
             k+1 = {need} readable shards; let repair finish first",
            h.name()
        )),
        Some((ino, stripe, have)) => Err(format!(
            "refusing to mark member {member} {}: {short} stripe(s) would keep fewer than \
             k+1 = {need} readable shards (object {ino} stripe {stripe} would have {have}); \
             let repair finish first (`shardctl repair status --wait`) or bring the missing \
             members back",
            h.name()
        )),
    }
}

fn durability(ctx: &Context, afr: Option<f64>) -> Result<serde_json::Value, String> {
    use crate::durability::{estimate, DurabilityInput, DEFAULT_AFR};
    let pool = &ctx.fs.pool;
    pool.refresh_capacity();
    let present: Vec<_> = pool
        .members()
        .iter()
        .filter(|m| !matches!(m.health(), crate::pool::Health::Removed))
        .collect();
    // members on one filesystem (device) are one failure domain; the data
    // to rebuild after one domain fails is the most used domain's bytes
    // (a domain declared at mkfs wins over the filesystem)
    let mut per_domain: std::collections::BTreeMap<String, u64> = Default::default();
    for m in &present {
        let key = match m.domain() {
            Some(d) if !d.is_empty() => format!("declared {d}"),
            _ => format!(
                "fs {}",
                m.disk()
                    .and_then(|d| d.fs_id())
                    .unwrap_or(1 << 40 | m.index as u64)
            ),
        };
        let (t, f) = m.capacity();
        *per_domain.entry(key).or_default() += t.saturating_sub(f);
    }
    let domains = per_domain.len();
    let used = per_domain.values().copied().max().unwrap_or(0);
    let repair = ctx.maintenance.repair.snapshot();
    let (rate, rate_source) = if repair.passes > 0 && repair.rate > 0.0 && repair.bytes_done > 0 {
        (repair.rate, "measured by the last repair pass")
    } else if repair.rate_limit > 0 {
        (
            repair.rate_limit as f64,
            "the repair rate limit (no repair measured yet)",
        )
    } else {
        (200e6, "200 MB/s assumed (no repair measured, no limit set)")
    };
    let repair_hours = (used as f64 / rate / 3600.0).max(1.0 / 60.0);
    let degraded = ctx.fs.counts().map(|c| c.2).unwrap_or(0);
    let input = DurabilityInput {
        k: pool.k(),
        m: pool.m(),
        members: present.len(),
        domains,
        afr: afr.unwrap_or(DEFAULT_AFR),
        repair_hours,
        degraded: usize::from(degraded > 0),
        parallel_repair: false,
    };
    let est = estimate(&input)?;
    Ok(serde_json::json!({
        "input": {
            "k": input.k, "m": input.m, "members": input.members, "domains": input.domains,
            "afr": input.afr, "repair_hours": input.repair_hours,
            "used_bytes_per_domain": used, "repair_rate_bytes_per_sec": rate,
            "repair_rate_source": rate_source, "degraded_stripes": degraded,
        },
        "estimate": est,
    }))
}

fn status(ctx: &Context) -> Result<Status, String> {
    let fs = &ctx.fs;
    let pool = &fs.pool;
    pool.refresh_capacity();
    let (objects, stripes, degraded) = fs.counts().map_err(|e| e.to_string())?;
    let replicas = ctx.replicas.replica_states();
    let members = pool
        .members()
        .iter()
        .map(|m| {
            let (total, free) = m.capacity();
            let state = m.health().name();
            let absent = matches!(
                m.health(),
                crate::pool::Health::Missing | crate::pool::Health::Removed
            );
            let meta_replica = if pool.meta_replicas().contains(&m.index) && absent {
                // not part of the mount (or emptied by a drain): whatever
                // the replica list says, no metadata is kept there now
                Some("absent".to_string())
            } else if pool.meta_replicas().contains(&m.index) {
                Some(
                    replicas
                        .iter()
                        .find(|(n, _)| n == m.path())
                        .map(|(_, ok)| if *ok { "healthy" } else { "failed" })
                        .unwrap_or("unavailable")
                        .to_string(),
                )
            } else {
                None
            };
            MemberStatus {
                index: m.index,
                id: m.id().to_string(),
                path: m.path().to_string(),
                state: state.into(),
                total_bytes: total,
                used_bytes: total.saturating_sub(free),
                errors: m.errors.load(Ordering::Relaxed),
                meta_replica,
                domain: m.domain().filter(|d| !d.is_empty()).map(str::to_string),
            }
        })
        .collect();
    let (usable, usable_free) = pool.usable_capacity();
    let sup = crate::guard::panic::lock_or_recover(&ctx.maintenance.supervision).clone();
    Ok(Status {
        pool_id: pool.sb.pool_id.clone(),
        k: pool.sb.k,
        m: pool.sb.m,
        shard_size: pool.sb.shard_size,
        inline_max: pool.sb.inline_max,
        members,
        objects,
        stripes,
        degraded_stripes: degraded,
        bad_shards: pool.stats.bad_shards.load(Ordering::Relaxed),
        reconstructions: pool.stats.reconstructions.load(Ordering::Relaxed),
        parity_by_choice: pool.stats.parity_by_choice.load(Ordering::Relaxed),
        usable_bytes: usable,
        usable_free_bytes: usable_free,
        maintenance_restarts: sup.restarts,
        maintenance_last_panic: sup.last_panic,
    })
}

fn locate(ctx: &Context, path: &str, from: u64, limit: Option<u64>) -> Result<Locate, String> {
    let fs = &ctx.fs;
    if path.len() > 4096 {
        return Err("path too long".into());
    }
    let inode = fs.resolve(path).map_err(|e| format!("{path}: {e}"))?;
    let pool = &fs.pool;
    let member_path = |mi: u16| {
        pool.members()
            .get(mi as usize)
            .map(|m| m.path().to_string())
            .unwrap_or_default()
    };
    let limit = limit.unwrap_or(LOCATE_PAGE).clamp(1, LOCATE_PAGE) as usize;
    let mut stripes = Vec::new();
    let mut next = None;
    if inode.striped {
        // one page of the stripe map, plus one record to tell if more follow
        use crate::fs::schema::{dec_loc, key_u64_at, stripe_key, stripe_prefix};
        let end = crate::meta::prefix_end(&stripe_prefix(inode.ino));
        let mut recs = fs
            .meta
            .range(&stripe_key(inode.ino, from), &end, limit + 1)
            .map_err(|e| e.to_string())?;
        if recs.len() > limit {
            next = recs.get(limit).map(|(k, _)| key_u64_at(k, 9));
            recs.truncate(limit);
        }
        for (key, v) in recs {
            let s = key_u64_at(&key, 9);
            let loc = dec_loc(pool, &v).map_err(|e| e.to_string())?;
            let checks = pool.verify_stripe(inode.ino, s, &loc);
            let shards = checks
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let mi = loc.members[i];
                    let member = (mi != crate::pool::NO_MEMBER).then_some(mi);
                    ShardStatus {
                        index: i,
                        member,
                        member_path: member.map(member_path).unwrap_or_default(),
                        ok: r.is_ok(),
                        error: r.err(),
                    }
                })
                .collect();
            stripes.push(StripeStatus {
                stripe: s,
                generation: loc.generation,
                len: loc.len,
                shards,
            });
        }
    }
    Ok(Locate {
        path: path.to_string(),
        ino: inode.ino,
        kind: format!("{:?}", inode.kind).to_lowercase(),
        size: inode.size,
        layout: if inode.striped { "striped" } else { "inline" }.into(),
        k: pool.sb.k,
        meta_replicas: ctx
            .replicas
            .replica_states()
            .into_iter()
            .map(|(n, ok)| format!("{n} ({})", if ok { "healthy" } else { "failed" }))
            .collect(),
        stripes,
        next,
    })
}
