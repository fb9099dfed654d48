//! The daemon side of the control socket.

use super::*;
use crate::fs::Fs;
use crate::meta::ReplicatedStore;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once; more are refused with an error reply.
const MAX_CONNECTIONS: usize = 16;

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

/// Bind the socket (mode 0600) and serve it on a thread.
pub fn spawn(path: &Path, ctx: Arc<Context>) -> std::io::Result<PathBuf> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        // a stale socket from a daemon that died; a live one would answer
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another shardfs daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    let mut s = stream;
                    let _ = reply(&mut s, &Reply::err("too many control connections"));
                    continue;
                }
                let ctx = ctx.clone();
                let active = active.clone();
                let _ = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        // a panicking handler must not leak the slot: the
                        // stream is dropped while unwinding, the count
                        // released after
                        let _ = crate::guard::panic::contain("control connection", || {
                            serve(stream, &ctx)
                        });
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
            }
        })?;
    Ok(path.to_path_buf())
}

fn reply(s: &mut UnixStream, r: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).expect("serialisable");
    line.push(b'\n');
    s.write_all(&line)
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

fn serve(mut stream: UnixStream, ctx: &Context) {
    if let Err(why) = authorized(&stream) {
        log::warn!("control: refused a connection: {why}");
        let _ = reply(&mut stream, &Reply::err(why));
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half.take(u64::MAX));
    loop {
        let mut line = Vec::new();
        // read at most MAX_FRAME + 1 bytes of one line
        let n = match (&mut reader)
            .take(MAX_FRAME as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return,
            Ok(n) => n,
            Err(_) => return, // timeout or reset
        };
        if n > MAX_FRAME || (line.last() != Some(&b'\n') && n == MAX_FRAME + 1) {
            let _ = reply(
                &mut stream,
                &Reply::err(format!("request larger than {MAX_FRAME} bytes")),
            );
            return;
        }
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
        Command::Locate { path } => {
            locate(ctx, &path).map(|l| serde_json::to_value(l).expect("json"))
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
            let meta_replica = if pool.meta_replicas().contains(&m.index) {
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
        usable_bytes: usable,
        usable_free_bytes: usable_free,
        maintenance_restarts: sup.restarts,
        maintenance_last_panic: sup.last_panic,
    })
}

fn locate(ctx: &Context, path: &str) -> Result<Locate, String> {
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
    let mut stripes = Vec::new();
    if inode.striped {
        for (s, loc) in fs.stripes(inode.ino).map_err(|e| e.to_string())? {
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
    })
}
