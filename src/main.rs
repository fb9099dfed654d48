//! `shardfs`: create and mount erasure-coded pools.
#![deny(clippy::undocumented_unsafe_blocks)]

use clap::{Parser, Subcommand};
use shardfs::daemon::{run_mount, MountConfig};
use shardfs::pool::{mkfs, MkfsOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "shardfs",
    version,
    about = "An erasure-coded filesystem over a pool of disks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// parsed once at start: the size of its largest variant costs nothing
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Create a pool over member directories (each on its own drive in production).
    Mkfs {
        /// Data shards per stripe (k).
        #[arg(long, short = 'k', default_value_t = 4)]
        data: u8,
        /// Parity shards per stripe (m): the pool survives m lost members.
        #[arg(long, short = 'm', default_value_t = 2)]
        parity: u8,
        /// Shard size in bytes (a stripe holds k shards); multiple of 4096.
        #[arg(long, default_value_t = 1024 * 1024)]
        shard_size: u32,
        /// Files up to this size live inline in the replicated metadata
        /// (default: 64 KiB, or one stripe if that is smaller).
        #[arg(long)]
        inline_max: Option<u32>,
        /// Failure domain of each member, comma-separated in the order of the
        /// directories (e.g. "rack1,rack1,rack2,..."); members without a
        /// declared domain that share a filesystem count as one domain.
        #[arg(long)]
        domains: Option<String>,
        /// Device class of each member, comma-separated in the order of the
        /// directories (e.g. "ssd,ssd,ssd,ssd,ssd,ssd,hdd,hdd,..."): tiering
        /// keeps hot data on one class and cold data on another.
        #[arg(long)]
        classes: Option<String>,
        /// Member directories (at least k+m; created if missing, must be empty).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Rebuild the namespace and every object when every metadata replica
    /// is lost: objects from the shards, names from the newest namespace
    /// catalog on the members; objects newer than it land in
    /// OUT/lost+found/object-<inode> (docs/OPERATIONS.md says what is lost).
    Recover {
        /// Empty directory for the recovered objects.
        #[arg(long)]
        out: PathBuf,
        /// Member directories (all that are left).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Mount a pool: shardfs mount DIR... MOUNTPOINT. Runs in the foreground;
    /// SIGINT/SIGTERM or `fusermount3 -u MOUNTPOINT` unmount cleanly.
    Mount {
        /// Control socket path (default /run/shardfs/<pool>.sock; for other
        /// users than root $XDG_RUNTIME_DIR/shardfs/<pool>.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// FUSE worker threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Metadata group-commit interval in milliseconds (close and fsync commit at once).
        #[arg(long, default_value_t = 200)]
        flush_ms: u64,
        /// Kernel readahead for the mount in KiB (sequential reads then reach
        /// the daemon as 1 MiB requests).
        #[arg(long, default_value_t = 4096)]
        readahead_kb: u32,
        /// Repair and scrub rate limit in bytes/s (0: none); change it at
        /// runtime with `shardctl repair rate`.
        #[arg(long, default_value_t = shardfs::fs::DEFAULT_RATE)]
        repair_rate: u64,
        /// Hours between scrub passes.
        #[arg(long, default_value_t = 168)]
        scrub_interval_hours: u64,
        /// Minutes between writes of the namespace catalog to every member
        /// (when the metadata changed; also written at unmount): what
        /// `shardfs recover` rebuilds names from. 0 disables periodic writes.
        #[arg(long, default_value_t = 10)]
        catalog_interval_mins: u64,
        /// Seconds between tier passes while some bucket (or the pool) has
        /// a tier policy. 0: passes run only on `shardctl tier start`.
        #[arg(long, default_value_t = 60)]
        tier_interval_secs: u64,
        /// How reads choose shards: heat (the k on the least-loaded members,
        /// hedged at each member's p95) or naive (data shards first);
        /// changeable at runtime with `shardctl heat policy`.
        #[arg(long, default_value = "heat", value_parser = shardfs::pool::ReadPolicy::parse)]
        read_policy: shardfs::pool::ReadPolicy,
        /// Shard reads still out after this many ms count as I/O errors of
        /// their member (and the read goes on without them).
        #[arg(long, default_value_t = 10_000)]
        io_timeout_ms: u64,
        /// MiB that all open files together may buffer (stripes being
        /// written, small overwrites, inline contents); a writer that
        /// passes it writes out the biggest files first.
        #[arg(long, default_value_t = 256)]
        dirty_budget_mb: u64,
        /// Emulate hard disks: cap every member at IOPS:MB_PER_SEC (e.g.
        /// 120:200), with real queueing (benchmarks, demos).
        #[arg(long, value_parser = shardfs::pool::heat::Limits::parse)]
        emulate_hdd: Option<shardfs::pool::heat::Limits>,
        /// Emulate one member: INDEX=IOPS:MB_PER_SEC (repeatable; overrides
        /// --emulate-hdd for that member).
        #[arg(long, value_parser = parse_member_limits)]
        emulate_member: Vec<(u16, shardfs::pool::heat::Limits)>,
        /// Serve Prometheus metrics over HTTP at http://ADDR/metrics
        /// (IP:PORT, a loopback address only, e.g. 127.0.0.1:9108).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// The mount's source as mount(8) and /proc/self/mountinfo show it
        /// (default shardfs:POOL). The mount helper sets it to the fstab
        /// SPEC, so that `mount -a` sees the line is mounted.
        #[arg(long, value_parser = parse_fsname)]
        fsname: Option<String>,
        /// Serve hot replicas (tier policies with --hot-replica) to
        /// read-only opens through FUSE passthrough: on or off.
        #[arg(long, default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
        passthrough: bool,
        /// Write large shard files around the page cache (O_DIRECT), on or
        /// off. On saves ~1 CPU-s per GiB written but measured slower in
        /// wall time on the bench machine (docs/PERFORMANCE.md); members
        /// whose filesystem refuses O_DIRECT fall back by themselves.
        #[arg(long, default_value = "off", value_parser = parse_on_off, action = clap::ArgAction::Set)]
        direct_writes: bool,
        /// How reads update access times: relatime (when the atime is not
        /// after the mtime or ctime, or a day old), strictatime (every
        /// read) or noatime (never).
        #[arg(long, default_value = "relatime", value_parser = shardfs::fs::AtimeMode::parse)]
        atime: shardfs::fs::AtimeMode,
        /// Seconds a replica whose BLAKE3 was checked may serve passthrough
        /// opens before it is checked again (0: at every open; tier passes
        /// check after half of it).
        #[arg(long, default_value_t = shardfs::fs::DEFAULT_VERIFY_SECS)]
        replica_verify_secs: u64,
        /// Serve the buckets over the S3 API at ADDR (IP:PORT; a loopback
        /// address unless --s3-allow-remote), signed with the keys of
        /// --s3-keys (docs/S3.md).
        #[arg(long, value_name = "ADDR", requires = "s3_keys")]
        s3_listen: Option<std::net::SocketAddr>,
        /// The S3 keys file: `ACCESS_KEY SECRET [ro|rw] [BUCKET,...]` a
        /// line; owned by the daemon's user, mode 0600.
        #[arg(long, value_name = "FILE", requires = "s3_listen")]
        s3_keys: Option<PathBuf>,
        /// Let --s3-listen take a non-loopback address (plain HTTP).
        #[arg(long, requires = "s3_listen")]
        s3_allow_remote: bool,
        /// Seconds after which an unfinished S3 multipart upload is removed
        /// with its parts (checked at start and hourly).
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        s3_upload_expiry_secs: u64,
        /// Member directories, then the mount point.
        #[arg(required = true, num_args = 2..)]
        paths: Vec<PathBuf>,
    },
}

fn parse_fsname(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 1024 || s.chars().any(|c| c.is_control()) {
        return Err("a name of 1 to 1024 characters without control characters".into());
    }
    Ok(s.to_string())
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, got {s:?}")),
    }
}

fn parse_member_limits(s: &str) -> Result<(u16, shardfs::pool::heat::Limits), String> {
    let (i, l) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: give INDEX=IOPS:MB_PER_SEC, e.g. 3=12:20"))?;
    let i: u16 = i
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: bad member index"))?;
    Ok((i, shardfs::pool::heat::Limits::parse(l)?))
}

fn main() -> ExitCode {
    // Many short-lived I/O threads would each get a malloc arena holding
    // freed stripe buffers; two arenas keep the daemon's memory bounded.
    // SAFETY: mallopt only tunes the allocator, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    shardfs::guard::panic::install_hook();
    let cli = Cli::parse();
    // every subcommand (mkfs, mount and the daemon's `disk add`, recover)
    // creates member files, or recovered data: the owner's alone
    shardfs::guard::restrict_umask();
    let res = match cli.cmd {
        Cmd::Mkfs {
            data,
            parity,
            shard_size,
            inline_max,
            domains,
            classes,
            dirs,
        } => mkfs(
            &dirs,
            &MkfsOptions {
                k: data,
                m: parity,
                shard_size,
                inline_max: inline_max.unwrap_or_else(|| (64 * 1024).min(data as u32 * shard_size)),
                domains: domains
                    .map(|d| d.split(',').map(|x| x.trim().to_string()).collect())
                    .unwrap_or_default(),
                classes: classes
                    .map(|d| d.split(',').map(|x| x.trim().to_string()).collect())
                    .unwrap_or_default(),
            },
        )
        .map(|sb| {
            println!(
                "created pool {} ({}+{}, {} members, shard {} KiB, metadata on members {:?})",
                sb.pool_id,
                sb.k,
                sb.m,
                sb.members.len(),
                sb.shard_size / 1024,
                sb.meta_replicas
            );
        })
        .map_err(|e| e.to_string()),
        Cmd::Recover { out, dirs } => shardfs::recover::recover(&dirs, &out).map(|r| {
            println!(
                "recovered {} objects ({} stripes, {} bytes) into {}; {} stripes unrecoverable, {} bad shard files skipped",
                r.objects,
                r.stripes,
                r.bytes,
                out.display(),
                r.unrecoverable_stripes,
                r.bad_shards
            );
            println!(
                "{} patch records found, {} patches applied, {} left out (no copy readable), \
                 {} rejected",
                r.patch_records,
                r.patches_applied,
                r.patches_lost,
                r.patch_records_rejected
            );
            match r.catalog_sequence {
                Some(seq) => println!(
                    "{} paths named from the catalog (metadata commit {seq}, written at unix time {}); \
                     {} objects newer than it left in lost+found; {} files in it had no surviving stripe",
                    r.named,
                    r.catalog_created.unwrap_or(0),
                    r.unnamed_objects,
                    r.files_without_data
                ),
                None => println!(
                    "no namespace catalog found: all {} objects are unnamed in {}/lost+found",
                    r.unnamed_objects,
                    out.display()
                ),
            }
            if r.paths_too_long > 0 {
                println!(
                    "{} paths were longer than PATH_MAX and not recreated (their objects are in lost+found)",
                    r.paths_too_long
                );
            }
        }),
        Cmd::Mount {
            socket,
            threads,
            flush_ms,
            readahead_kb,
            repair_rate,
            scrub_interval_hours,
            catalog_interval_mins,
            tier_interval_secs,
            read_policy,
            io_timeout_ms,
            dirty_budget_mb,
            emulate_hdd,
            emulate_member,
            metrics_listen,
            passthrough,
            direct_writes,
            atime,
            replica_verify_secs,
            fsname,
            s3_listen,
            s3_keys,
            s3_allow_remote,
            s3_upload_expiry_secs,
            mut paths,
        } => {
            shardfs::pool::direct::set_enabled(direct_writes);
            let mountpoint = paths.pop().expect("clap requires 2 paths");
            run_mount(MountConfig {
                members: paths,
                mountpoint,
                socket,
                threads,
                flush_interval: Duration::from_millis(flush_ms.max(1)),
                readahead_kb,
                repair_rate,
                scrub_interval_hours,
                catalog_interval_mins,
                tier_interval_secs,
                read_policy,
                io_timeout: Duration::from_millis(io_timeout_ms.max(1)),
                dirty_budget: (dirty_budget_mb as usize).saturating_mul(1 << 20),
                emulation: shardfs::daemon::Emulation {
                    all: emulate_hdd,
                    members: emulate_member,
                },
                metrics_listen,
                passthrough,
                atime,
                replica_verify_secs,
                fsname,
                s3: s3_listen.zip(s3_keys).map(|(listen, keys)| shardfs::s3::S3Options {
                    listen,
                    keys,
                    allow_remote: s3_allow_remote,
                    upload_expiry: Duration::from_secs(s3_upload_expiry_secs),
                }),
            })
            .inspect_err(|e| {
                shardfs::daemon::sd_notify::notify(&[("STATUS", &format!("failed: {e}"))])
            })
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardfs: {e}");
            ExitCode::FAILURE
        }
    }
}
