//! `shardctl`: inspect and steer a running pool through its control socket.
#![deny(clippy::undocumented_unsafe_blocks)]

use clap::{Parser, Subcommand};
use shardfs::control::client::{call_typed, find_socket, CallError};
use shardfs::control::{Command, Locate, Status};
use shardfs::fs::Progress;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "shardctl",
    version,
    about = "Admin CLI for a mounted shardfs pool"
)]
struct Cli {
    /// Control socket (default: the only socket in /run/shardfs, or in
    /// $XDG_RUNTIME_DIR/shardfs for users other than root).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pool, members, objects and degraded stripes.
    Status,
    /// Where the shards of BUCKET/KEY live and whether each verifies.
    Locate {
        /// BUCKET/KEY
        path: String,
    },
    /// Repair: rebuild lost or bad shards onto healthy members.
    Repair {
        #[command(subcommand)]
        cmd: RepairCmd,
    },
    /// Scrub: read and verify every shard, repair what is wrong.
    Scrub {
        #[command(subcommand)]
        cmd: ScrubCmd,
    },
    /// Change members online.
    Disk {
        #[command(subcommand)]
        cmd: DiskCmd,
    },
    /// Rebalance: move shards onto members holding less than their share.
    Rebalance {
        #[command(subcommand)]
        cmd: RebalanceCmd,
    },
    /// Per-member load: in flight, latency, p95, IOPS, bandwidth and
    /// utilisation, with a bar per member; `--svg FILE` draws the load of
    /// the last 10 minutes; `heat policy heat|naive` sets the read policy.
    Heat {
        /// Write a picture (SVG) of per-member IOPS over time to FILE.
        #[arg(long)]
        svg: Option<PathBuf>,
        #[command(subcommand)]
        cmd: Option<HeatCmd>,
    },
    /// Tiering: hot objects on a fast member class, cold ones on a capacity class.
    Tier {
        #[command(subcommand)]
        cmd: TierCmd,
    },
    /// Estimated annual durability (nines) of the pool as it is now.
    Durability {
        /// Annual failure rate of one failure domain, e.g. 0.015.
        #[arg(long)]
        afr: Option<f64>,
    },
    /// Every metric in the Prometheus text format (members, pool, repair,
    /// scrub, rebalance, FUSE requests and latency).
    Metrics,
}

#[derive(Subcommand)]
enum RepairCmd {
    /// Progress, rate and ETA of the current or last pass.
    Status {
        /// Keep showing progress until the pass ends.
        #[arg(long)]
        wait: bool,
    },
    /// Start a pass now.
    Start,
    /// Set the repair and scrub rate limit (bytes/s; 0 = unlimited).
    Rate {
        /// bytes per second (suffixes K, M, G allowed)
        rate: String,
    },
}

#[derive(Subcommand)]
enum ScrubCmd {
    /// Start a pass now.
    Start,
    /// Coverage of the current or last pass, and when the last one ended.
    Status {
        /// Keep showing progress until the pass ends.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum TierCmd {
    /// Bytes per member class, policies, moves done and pending.
    Status {
        /// Keep showing progress until the pass ends.
        #[arg(long)]
        wait: bool,
    },
    /// Start a tier pass now.
    Start {
        /// Put every object of buckets with a policy on the hot tier.
        #[arg(long, conflicts_with = "all_cold")]
        all_hot: bool,
        /// Put every object of buckets with a policy on the cold tier.
        #[arg(long)]
        all_cold: bool,
    },
    /// Set the tier policy of BUCKET (or, without one, the pool default,
    /// which also sends new stripes to the hot class).
    Policy {
        /// bucket (omit for the pool default)
        bucket: Option<String>,
        /// member class for hot objects
        #[arg(long)]
        hot: Option<String>,
        /// member class for cold objects
        #[arg(long)]
        cold: Option<String>,
        /// decayed accesses (half-life 10 min) that make an object hot
        #[arg(long, default_value_t = 4.0)]
        promote_reads: f64,
        /// seconds without access that make an object cold
        #[arg(long, default_value_t = 3600)]
        demote_after: u64,
        /// give hot objects a whole-file replica on the hot class, read
        /// through FUSE passthrough (writers wait: ETXTBSY while such a
        /// read-only open is live)
        #[arg(long)]
        hot_replica: bool,
    },
}

#[derive(Subcommand)]
enum HeatCmd {
    /// How reads choose shards: heat (least-loaded k, hedged) or naive
    /// (data shards first).
    Policy {
        /// heat | naive
        policy: String,
    },
}

#[derive(Subcommand)]
enum RebalanceCmd {
    /// Start a pass now.
    Start,
    /// Progress of the current or last pass, and the spread of shard bytes.
    Status {
        /// Keep showing progress until the pass ends.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum DiskCmd {
    /// Format empty directory DIR and join it to the pool as a new member
    /// (new stripes use it at once; a rebalance then moves data onto it).
    Add {
        /// the new member's directory (created if missing, must be empty)
        dir: PathBuf,
        /// failure domain of the new member (required if the pool declares domains)
        #[arg(long)]
        domain: Option<String>,
        /// device class of the new member (ssd, hdd, ...): tiering puts hot
        /// and cold data on classes
        #[arg(long)]
        class: Option<String>,
    },
    /// Take member ID out now; repair rebuilds its shards from redundancy.
    Fail {
        /// member index (see `shardctl status`)
        id: u16,
    },
    /// Move every shard off member ID, then mark it removed.
    Drain {
        /// member index (see `shardctl status`)
        id: u16,
    },
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K') | Some('k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') | Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('G') | Some('g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("bad rate {s:?}: give bytes per second, e.g. 50M"))
}

/// `[#####.....]  45.0%`
fn bar(done: u64, total: u64) -> String {
    let frac = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let n = (frac * 30.0).round() as usize;
    format!(
        "[{}{}] {:5.1}%",
        "#".repeat(n),
        ".".repeat(30 - n),
        frac * 100.0
    )
}

fn print_progress(what: &str, p: &Progress) {
    let state = if p.running { "running" } else { "idle" };
    println!(
        "{:<11}{state}, {} passes finished since mount",
        what.trim(),
        p.passes
    );
    println!(
        "progress   {} {}/{} stripes",
        bar(p.stripes_done, p.stripes_total),
        p.stripes_done,
        p.stripes_total
    );
    let limit = if p.rate_limit == 0 {
        "unlimited".to_string()
    } else {
        format!("{}/s", human(p.rate_limit))
    };
    println!("rate       {}/s (limit {limit})", human(p.rate as u64));
    if let Some(eta) = p.eta_secs {
        println!("eta        {}", duration(eta));
    }
    if what == "scrub " {
        println!("bad shards {} found, {} repaired", p.shards, p.repaired);
    } else if what == "rebalance" {
        println!(
            "shards     {} moved; {} moves dropped (their stripe changed meanwhile)",
            p.shards, p.stripes_failed
        );
    } else {
        println!(
            "shards     {} rebuilt; {} stripes could not be finished",
            p.shards, p.stripes_failed
        );
        println!(
            "remaining  {} stripes need repair after the last pass",
            p.remaining
        );
    }
    match p.last_pass_end {
        Some(t) => println!("last pass  ended {}", when(t)),
        None => println!("last pass  none finished since mount"),
    }
}

fn show_progress(
    socket: &std::path::Path,
    cmd: Command,
    what: &str,
    json: bool,
    wait: bool,
) -> Result<(), Ctl> {
    loop {
        let v = call(socket, cmd.clone())?;
        let p: Progress = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        if json {
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        } else {
            print_progress(what, &p);
            if let Some(x) = v.get("imbalance").and_then(|x| x.as_f64()) {
                println!(
                    "spread     {x:.3} (max/mean of shard bytes over online members; 1 = even)"
                );
            }
        }
        if !wait || !p.running {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        if !json {
            println!();
        }
    }
}

fn print_value(v: &serde_json::Value, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).expect("json"));
    } else if let Some(m) = v.get("message").and_then(|m| m.as_str()) {
        println!("{m}");
    } else {
        println!("{}", serde_json::to_string_pretty(v).expect("json"));
    }
}

/// A duration for people: "45s", "3m12s", "2h05m", "3d04h".
fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "unknown".into();
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// A unix time as local date and time, with how long ago:
/// "2026-12-03 17:20:01 CET (3m12s ago)".
fn when(t: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(t);
    let ago = if now >= t {
        format!("{} ago", duration((now - t) as f64))
    } else {
        format!("in {}", duration((t - now) as f64))
    };
    format!("{} ({ago})", local_time(t))
}

/// "YYYY-MM-DD HH:MM:SS ZONE" in the local time zone (TZ, /etc/localtime).
fn local_time(t: u64) -> String {
    let tt = t as libc::time_t;
    // SAFETY: localtime_r and strftime write into the buffers we own; the
    // format is NUL-terminated and the output length is bounded.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&tt, &mut tm).is_null() {
            return format!("unix time {t}");
        }
        let mut buf = [0u8; 64];
        let n = libc::strftime(
            buf.as_mut_ptr().cast(),
            buf.len(),
            c"%Y-%m-%d %H:%M:%S %Z".as_ptr(),
            &tm,
        );
        if n == 0 {
            return format!("unix time {t}");
        }
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn print_status(s: &Status) {
    println!("pool       {}", s.pool_id);
    println!(
        "layout     {}+{} (survives {} lost members), shard {} KiB, inline up to {} KiB",
        s.k,
        s.m,
        s.m,
        s.shard_size / 1024,
        s.inline_max / 1024
    );
    println!(
        "capacity   {} usable, {} free (after parity)",
        human(s.usable_bytes),
        human(s.usable_free_bytes)
    );
    println!(
        "objects    {}   stripes {}   degraded stripes {}",
        s.objects, s.stripes, s.degraded_stripes
    );
    println!(
        "reads      {} stripes reconstructed because shards were missing or bad ({} bad shards seen)",
        s.reconstructions, s.bad_shards
    );
    println!(
        "           {} stripes served from parity by choice (busy or slow disks skipped, nothing missing)",
        s.parity_by_choice
    );
    if s.maintenance_restarts > 0 {
        println!(
            "WORKER     maintenance panicked and was restarted {} times; last: {}",
            s.maintenance_restarts,
            s.maintenance_last_panic.as_deref().unwrap_or("?")
        );
    }
    println!();
    println!(
        "{:>3}  {:<8} {:>10} {:>10} {:>6}  {:<10} PATH",
        "#", "STATE", "SIZE", "USED", "ERRORS", "METADATA"
    );
    for m in &s.members {
        let absent = matches!(m.state.as_str(), "missing" | "removed");
        let size = |b: u64| if absent { "-".to_string() } else { human(b) };
        println!(
            "{:>3}  {:<8} {:>10} {:>10} {:>6}  {:<10} {}",
            m.index,
            m.state,
            size(m.total_bytes),
            size(m.used_bytes),
            m.errors,
            m.meta_replica.as_deref().unwrap_or("-"),
            m.path
        );
    }
}

fn print_tier(v: &serde_json::Value) {
    let pol = |p: &serde_json::Value| {
        format!(
            "hot on {}{}, cold on {}, hot after {} accesses, cold after {} idle",
            p["hot_class"].as_str().unwrap_or("(none)"),
            if p["hot_replica"].as_bool() == Some(true) {
                " + replica"
            } else {
                ""
            },
            p["cold_class"].as_str().unwrap_or("(none)"),
            p["promote_reads"],
            duration(p["demote_after_secs"].as_f64().unwrap_or(f64::NAN))
        )
    };
    println!("pool default  {}", pol(&v["default_policy"]));
    for b in v["bucket_policies"].as_array().into_iter().flatten() {
        println!("bucket {:<8} {}", b[0].as_str().unwrap_or("?"), pol(&b[1]));
    }
    println!();
    println!("{:<10} {:>8} {:>12}", "CLASS", "MEMBERS", "SHARD BYTES");
    if let Some(m) = v["bytes_per_class"].as_object() {
        for (c, b) in m {
            println!(
                "{:<10} {:>8} {:>12}",
                if c.is_empty() { "(none)" } else { c },
                v["members_per_class"][c].as_u64().unwrap_or(0),
                human(b.as_u64().unwrap_or(0))
            );
        }
    }
    let p = &v["progress"];
    let l = &v["last_pass"];
    println!();
    println!(
        "last pass  {} objects hot, {} cold, {} shards moved, {} waiting for room on their class",
        l["hot_objects"], l["cold_objects"], l["moved_shards"], l["pending_shards"]
    );
    let r = &v["replicas"];
    println!(
        "replicas   {} ({}), passthrough {}: {} opens served; {} built, {} dropped, {} corrupt since mount",
        r["replicas"],
        human(r["bytes"].as_u64().unwrap_or(0)),
        if r["passthrough"].as_bool() == Some(true) {
            "on"
        } else {
            "off"
        },
        r["passthrough_opens"],
        r["built"],
        r["dropped"],
        r["corrupt"]
    );
    println!(
        "moves      {} shards since mount; {} {}/{} objects",
        v["moved_shards"],
        if p["running"].as_bool().unwrap_or(false) {
            "running"
        } else {
            "idle"
        },
        p["stripes_done"],
        p["stripes_total"]
    );
    println!(
        "progress   {}",
        bar(
            p["stripes_done"].as_u64().unwrap_or(0),
            p["stripes_total"].as_u64().unwrap_or(0)
        )
    );
}

fn print_heat(r: &shardfs::control::HeatReport) {
    println!(
        "read policy {}   hedged reads {}   parity reads: {} by choice, {} reconstructed (shards missing or bad)",
        r.read_policy, r.hedges, r.parity_by_choice, r.reconstructions
    );
    println!();
    println!(
        "{:>3}  {:<8} {:>4} {:>8} {:>8} {:>8} {:>9}  {:<22} {:>8}  EMULATED",
        "#", "STATE", "INFL", "LAT ms", "P95 ms", "IOPS", "MB/s", "UTILISATION (10 s)", "LOAD ms"
    );
    for m in &r.members {
        let h = &m.heat;
        let n = (h.util_10s * 15.0).round() as usize;
        println!(
            "{:>3}  {:<8} {:>4} {:>8.2} {:>8.2} {:>8.1} {:>9.2}  [{}{}] {:>3.0}% {:>8.2}  {}",
            m.index,
            m.state,
            h.inflight,
            h.latency_ms,
            h.p95_ms,
            h.iops_10s,
            h.bw_10s / 1e6,
            "#".repeat(n.min(15)),
            ".".repeat(15 - n.min(15)),
            h.util_10s * 100.0,
            h.load,
            m.emulated
                .map(|l| format!("{:.0} IOPS, {:.0} MB/s", l.iops, l.bytes_per_sec / 1e6))
                .unwrap_or_else(|| "-".into())
        );
    }
}

/// An SVG line chart of each member's IOPS per second.
fn heat_svg(hist: &[shardfs::control::MemberHistory]) -> String {
    use std::fmt::Write;
    let (w, h, left, bottom, top, right) = (960.0, 420.0, 60.0, 40.0, 30.0, 150.0);
    let t0 = hist
        .iter()
        .filter_map(|m| m.seconds.first().map(|s| s.t))
        .min()
        .unwrap_or(0);
    let t1 = hist
        .iter()
        .filter_map(|m| m.seconds.last().map(|s| s.t))
        .max()
        .unwrap_or(t0 + 1)
        .max(t0 + 1);
    let ymax = hist
        .iter()
        .flat_map(|m| m.seconds.iter().map(|s| s.ops))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |t: u64| left + (t - t0) as f64 / (t1 - t0) as f64 * (w - left - right);
    let y = |v: f64| h - bottom - v / ymax * (h - bottom - top);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="18" font-size="14">shardfs: operations per second per member ({} s)</text>"#,
        t1 - t0
    );
    // axes and a few ticks
    let _ = writeln!(
        out,
        r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=4 {
        let v = ymax * i as f64 / 4.0;
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end">{v:.0}</text><line x1="{left}" y1="{1}" x2="{}" y2="{1}" stroke="#ddd"/>"##,
            left - 6.0,
            y(v),
            w - right
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds (last {})</text>"#,
        (left + w - right) / 2.0,
        h - 8.0,
        t1 - t0
    );
    let colors = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf",
    ];
    for (i, m) in hist.iter().enumerate() {
        let c = colors[i % colors.len()];
        let pts: Vec<String> = m
            .seconds
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t), y(s.ops as f64)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{}"/>"#,
            pts.join(" ")
        );
        let _ = writeln!(
            out,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{c}"/><text x="{}" y="{}">member {}</text>"#,
            w - right + 15.0,
            top + i as f64 * 18.0,
            w - right + 32.0,
            top + i as f64 * 18.0 + 10.0,
            m.index
        );
    }
    out.push_str("</svg>\n");
    out
}

fn print_locate(l: &Locate, first_page: bool) {
    if first_page {
        println!(
            "{}: inode {}, {}, {} bytes, {}",
            l.path, l.ino, l.kind, l.size, l.layout
        );
    }
    if l.layout == "inline" {
        println!("data inline in the metadata, replicated on:");
        for r in &l.meta_replicas {
            println!("  {r}");
        }
        return;
    }
    for st in &l.stripes {
        println!(
            "stripe {} (generation {}, {} bytes):",
            st.stripe, st.generation, st.len
        );
        for sh in &st.shards {
            let what = if sh.index < l.k as usize {
                "data"
            } else {
                "parity"
            };
            let member = sh
                .member
                .map(|m| format!("member {m}"))
                .unwrap_or_else(|| "-".into());
            let verdict = if sh.ok {
                "ok".to_string()
            } else {
                format!("BAD: {}", sh.error.as_deref().unwrap_or("?"))
            };
            println!(
                "  shard {:>2} {:<6} {:<10} {:<40} {}",
                sh.index, what, member, sh.member_path, verdict
            );
        }
    }
}

/// An error and the exit status it gives (docs/OPERATIONS.md).
struct Ctl(u8, String);

/// The daemon refused or failed the command.
const EXIT_REFUSED: u8 = 1;
/// Bad arguments (as clap's own usage errors).
const EXIT_USAGE: u8 = 2;
/// No daemon to talk to.
const EXIT_UNREACHABLE: u8 = 3;

impl From<String> for Ctl {
    fn from(s: String) -> Ctl {
        Ctl(EXIT_REFUSED, s)
    }
}

impl From<&str> for Ctl {
    fn from(s: &str) -> Ctl {
        Ctl(EXIT_REFUSED, s.to_string())
    }
}

fn call(socket: &std::path::Path, cmd: Command) -> Result<serde_json::Value, Ctl> {
    call_typed(socket, cmd).map_err(|e| match e {
        CallError::Unreachable(m) => Ctl(EXIT_UNREACHABLE, m),
        CallError::Refused(m) => Ctl(EXIT_REFUSED, m),
    })
}

fn run(cli: Cli) -> Result<(), Ctl> {
    let socket = find_socket(cli.socket.as_deref()).map_err(|m| Ctl(EXIT_UNREACHABLE, m))?;
    match cli.cmd {
        Cmd::Status => {
            let v = call(&socket, Command::Status)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                let s: Status = serde_json::from_value(v).map_err(|e| e.to_string())?;
                print_status(&s);
            }
        }
        Cmd::Locate { path } => {
            // page by page: the daemon answers at most LOCATE_PAGE stripes
            // per request; tables are printed as the pages come, JSON is
            // one object with every stripe
            let mut from = 0;
            let mut all: Option<serde_json::Value> = None;
            loop {
                let v = call(
                    &socket,
                    Command::Locate {
                        path: path.clone(),
                        from,
                        limit: None,
                    },
                )?;
                let l: Locate = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
                if cli.json {
                    match &mut all {
                        None => all = Some(v),
                        Some(a) => {
                            if let (Some(dst), Some(src)) =
                                (a["stripes"].as_array_mut(), v["stripes"].as_array())
                            {
                                dst.extend(src.iter().cloned());
                            }
                        }
                    }
                } else {
                    print_locate(&l, from == 0);
                }
                match l.next {
                    Some(n) if n > from => from = n,
                    _ => break,
                }
            }
            if let Some(mut a) = all {
                a["next"] = serde_json::Value::Null;
                println!("{}", serde_json::to_string_pretty(&a).expect("json"));
            }
        }
        Cmd::Repair { cmd } => match cmd {
            RepairCmd::Status { wait } => {
                show_progress(&socket, Command::RepairStatus, "repair", cli.json, wait)?
            }
            RepairCmd::Start => {
                let v = call(&socket, Command::RepairStart)?;
                if cli.json {
                    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
                } else {
                    println!("repair pass requested; see `shardctl repair status`");
                }
            }
            RepairCmd::Rate { rate } => {
                let bytes_per_sec = parse_rate(&rate).map_err(|m| Ctl(EXIT_USAGE, m))?;
                let v = call(&socket, Command::RepairRate { bytes_per_sec })?;
                if cli.json {
                    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
                } else {
                    println!(
                        "repair and scrub rate limit: {}",
                        if bytes_per_sec == 0 {
                            "unlimited".to_string()
                        } else {
                            format!("{}/s", human(bytes_per_sec))
                        }
                    );
                }
            }
        },
        Cmd::Scrub { cmd } => match cmd {
            ScrubCmd::Start => {
                let v = call(&socket, Command::ScrubStart)?;
                if cli.json {
                    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
                } else {
                    println!("scrub pass requested; see `shardctl scrub status`");
                }
            }
            ScrubCmd::Status { wait } => {
                show_progress(&socket, Command::ScrubStatus, "scrub ", cli.json, wait)?
            }
        },
        Cmd::Heat { svg, cmd } => {
            let v = match cmd {
                Some(HeatCmd::Policy { policy }) => call(&socket, Command::ReadPolicy { policy })?,
                None => call(&socket, Command::Heat)?,
            };
            if let Some(path) = &svg {
                let h = call(&socket, Command::HeatHistory)?;
                let hist: Vec<shardfs::control::MemberHistory> =
                    serde_json::from_value(h).map_err(|e| e.to_string())?;
                std::fs::write(path, heat_svg(&hist))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                let r: shardfs::control::HeatReport =
                    serde_json::from_value(v).map_err(|e| e.to_string())?;
                print_heat(&r);
                if let Some(path) = &svg {
                    println!("load over time written to {}", path.display());
                }
            }
        }
        Cmd::Tier { cmd } => {
            let v = match cmd {
                TierCmd::Status { wait } => loop {
                    let v = call(&socket, Command::TierStatus)?;
                    let running = v["progress"]["running"].as_bool().unwrap_or(false);
                    if !wait || !running {
                        break v;
                    }
                    if !cli.json {
                        print_tier(&v);
                        println!();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(500));
                },
                TierCmd::Start { all_hot, all_cold } => {
                    let force = if all_hot {
                        Some("hot".to_string())
                    } else if all_cold {
                        Some("cold".to_string())
                    } else {
                        None
                    };
                    let v = call(&socket, Command::TierStart { force })?;
                    if !cli.json {
                        println!("tier pass requested; see `shardctl tier status [--wait]`");
                        return Ok(());
                    }
                    v
                }
                TierCmd::Policy {
                    bucket,
                    hot,
                    cold,
                    promote_reads,
                    demote_after,
                    hot_replica,
                } => call(
                    &socket,
                    Command::TierPolicy {
                        bucket,
                        policy: shardfs::fs::TierPolicy {
                            hot_class: hot,
                            cold_class: cold,
                            promote_reads,
                            demote_after_secs: demote_after,
                            hot_replica,
                        },
                    },
                )?,
            };
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                print_tier(&v);
            }
        }
        Cmd::Rebalance { cmd } => match cmd {
            RebalanceCmd::Start => {
                let v = call(&socket, Command::RebalanceStart)?;
                if cli.json {
                    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
                } else {
                    println!("rebalance pass requested; see `shardctl rebalance status`");
                }
            }
            RebalanceCmd::Status { wait } => show_progress(
                &socket,
                Command::RebalanceStatus,
                "rebalance",
                cli.json,
                wait,
            )?,
        },
        Cmd::Disk { cmd } => {
            let v = match cmd {
                DiskCmd::Add { dir, domain, class } => {
                    // the daemon resolves nothing relative to our directory
                    let abs =
                        std::path::absolute(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                    call(
                        &socket,
                        Command::DiskAdd {
                            path: abs.display().to_string(),
                            domain,
                            class,
                        },
                    )?
                }
                DiskCmd::Fail { id } => call(&socket, Command::DiskFail { member: id })?,
                DiskCmd::Drain { id } => call(&socket, Command::DiskDrain { member: id })?,
            };
            print_value(&v, cli.json);
        }
        Cmd::Durability { afr } => {
            if let Some(a) = afr {
                if !(a > 0.0 && a < 1.0) {
                    return Err(Ctl(
                        EXIT_USAGE,
                        format!("--afr {a}: give a rate between 0 and 1, e.g. 0.015"),
                    ));
                }
            }
            let v = call(&socket, Command::Durability { afr })?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                let i = &v["input"];
                let e = &v["estimate"];
                println!(
                    "layout      {}+{} over {} members in {} failure domains (tolerates {} domain failures)",
                    i["k"], i["m"], i["members"], i["domains"], e["tolerated_domain_failures"]
                );
                println!(
                    "assumed     AFR {:.2} % per domain; repair of one domain {:.2} h ({}/s, {})",
                    i["afr"].as_f64().unwrap_or(0.0) * 100.0,
                    i["repair_hours"].as_f64().unwrap_or(0.0),
                    human(i["repair_rate_bytes_per_sec"].as_f64().unwrap_or(0.0) as u64),
                    i["repair_rate_source"].as_str().unwrap_or("")
                );
                println!(
                    "durability  {:.2} nines a year (annual loss probability {:.3e}; MTTDL {:.3e} h)",
                    e["nines"].as_f64().unwrap_or(f64::INFINITY),
                    e["annual_loss_probability"].as_f64().unwrap_or(0.0),
                    e["mttdl_hours"].as_f64().unwrap_or(0.0)
                );
                if i["degraded_stripes"].as_u64().unwrap_or(0) > 0 {
                    println!(
                        "degraded    {} stripes lack a shard: probability {:.3e} of loss before repair ends",
                        i["degraded_stripes"],
                        e["degraded_loss_before_repair"].as_f64().unwrap_or(0.0)
                    );
                }
            }
        }
        Cmd::Metrics => {
            let v = call(&socket, Command::Metrics)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                let text = v
                    .get("text")
                    .and_then(|t| t.as_str())
                    .ok_or("the daemon's metrics reply has no text")?;
                print!("{text}");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Ctl(code, e)) => {
            eprintln!("shardctl: {e}");
            ExitCode::from(code)
        }
    }
}
