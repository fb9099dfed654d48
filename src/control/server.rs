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
                        serve(stream, &ctx);
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

/// Answer one request line.
pub fn handle(line: &[u8], ctx: &Context) -> Reply {
    let v: serde_json::Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return Reply::err(format!("malformed request: {e}")),
    };
    match v.get("v").and_then(|x| x.as_u64()) {
        Some(v) if v == PROTOCOL_VERSION as u64 => {}
        Some(v) => {
            return Reply::err(format!(
                "protocol version {v} not supported (this daemon speaks {PROTOCOL_VERSION})"
            ))
        }
        None => return Reply::err("request has no protocol version \"v\""),
    }
    let req: Request = match serde_json::from_value(v) {
        Ok(r) => r,
        Err(e) => return Reply::err(format!("unknown or malformed command: {e}")),
    };
    let result = match req.cmd {
        Command::Status => status(ctx).map(|s| serde_json::to_value(s).expect("json")),
        Command::Locate { path } => {
            locate(ctx, &path).map(|l| serde_json::to_value(l).expect("json"))
        }
    };
    match result {
        Ok(v) => Reply::ok(v),
        Err(e) => Reply::err(e),
    }
}

fn status(ctx: &Context) -> Result<Status, String> {
    let fs = &ctx.fs;
    let pool = &fs.pool;
    pool.refresh_capacity();
    let (objects, stripes, degraded) = fs.counts().map_err(|e| e.to_string())?;
    let replicas = ctx.replicas.replica_states();
    let members = pool
        .members
        .iter()
        .map(|m| {
            let (total, free) = m.capacity();
            let state = if m.disk.is_none() {
                "missing"
            } else if m.live_disk().is_some() {
                "online"
            } else {
                "failed"
            };
            let meta_replica = if pool.sb.meta_replicas.contains(&m.index) {
                Some(
                    replicas
                        .iter()
                        .find(|(n, _)| n == &m.path)
                        .map(|(_, ok)| if *ok { "healthy" } else { "failed" })
                        .unwrap_or("unavailable")
                        .to_string(),
                )
            } else {
                None
            };
            MemberStatus {
                index: m.index,
                id: m.id.clone(),
                path: m.path.clone(),
                state: state.into(),
                total_bytes: total,
                used_bytes: total.saturating_sub(free),
                errors: m.errors.load(Ordering::Relaxed),
                meta_replica,
            }
        })
        .collect();
    let (usable, usable_free) = pool.usable_capacity();
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
        pool.members
            .get(mi as usize)
            .map(|m| m.path.clone())
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
