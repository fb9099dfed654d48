//! `shardctl`: inspect and steer a running pool through its control socket.

use clap::{Parser, Subcommand};
use shardfs::control::client::{call, find_socket};
use shardfs::control::{Command, Locate, Status};
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
        "reads      {} bad shards seen, {} stripes rebuilt from parity",
        s.bad_shards, s.reconstructions
    );
    println!();
    println!(
        "{:>3}  {:<8} {:>10} {:>10} {:>6}  {:<10} PATH",
        "#", "STATE", "SIZE", "USED", "ERRORS", "METADATA"
    );
    for m in &s.members {
        println!(
            "{:>3}  {:<8} {:>10} {:>10} {:>6}  {:<10} {}",
            m.index,
            m.state,
            human(m.total_bytes),
            human(m.used_bytes),
            m.errors,
            m.meta_replica.as_deref().unwrap_or("-"),
            m.path
        );
    }
}

fn print_locate(l: &Locate) {
    println!(
        "{}: inode {}, {}, {} bytes, {}",
        l.path, l.ino, l.kind, l.size, l.layout
    );
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

fn run(cli: Cli) -> Result<(), String> {
    let socket = find_socket(cli.socket.as_deref())?;
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
            let v = call(&socket, Command::Locate { path })?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                let l: Locate = serde_json::from_value(v).map_err(|e| e.to_string())?;
                print_locate(&l);
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardctl: {e}");
            ExitCode::FAILURE
        }
    }
}
