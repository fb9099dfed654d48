//! shardfs-heatsim: scale simulator for heat (issue 5).
//!
//! Part 1 shows that the aggregate demand of many independent bursty
//! workloads gets smoother (peak-to-mean falls) as their number grows.
//! Part 2 places the workloads' erasure-coded objects on 10^3..10^6 disks
//! of 120 IOPS with shardfs's own `place`, spread over the whole pool or
//! packed onto a few disks per workload, and compares per-disk load.
//! Model and results: docs/heat.md.
#![deny(clippy::undocumented_unsafe_blocks)]

use clap::Parser;
use shardfs::heatsim::svg::{Chart, Series};
use shardfs::heatsim::{self, DemandParams, DemandResult, DiskParams, DiskResult, Strategy};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "shardfs-heatsim",
    about = "Heat at scale: workload decorrelation and per-disk load, spread-wide vs packed placement"
)]
struct Args {
    /// Seed (every figure is a function of it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write SVG plots into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Small run (seconds): fewer workloads, disks up to 10^4, fewer steps.
    #[arg(long)]
    quick: bool,
    /// Which parts to run.
    #[arg(long, value_enum, default_value_t = Part::Both)]
    part: Part,
    /// Workload counts of part 1 (comma-separated).
    #[arg(long, value_delimiter = ',')]
    workloads: Option<Vec<usize>>,
    /// Simulated seconds of part 1.
    #[arg(long)]
    demand_steps: Option<usize>,
    /// Disk counts of part 2 (comma-separated).
    #[arg(long, value_delimiter = ',')]
    disks: Option<Vec<usize>>,
    /// Measured seconds of part 2 (default: by disk count, fewer for
    /// bigger pools).
    #[arg(long)]
    steps: Option<usize>,
    /// Data shards.
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// Parity shards.
    #[arg(long, default_value_t = 2)]
    m: usize,
    /// Random IOPS of one disk.
    #[arg(long, default_value_t = 120.0)]
    iops: f64,
    /// Mean offered load over pool capacity (sets the workload count).
    #[arg(long, default_value_t = 0.5)]
    util: f64,
    /// Requests per second of a workload while on.
    #[arg(long, default_value_t = 200.0)]
    on_rate: f64,
    /// Fraction of requests that overwrite an object.
    #[arg(long, default_value_t = 0.1)]
    write_frac: f64,
    /// Objects per workload.
    #[arg(long, default_value_t = 32)]
    objects: usize,
    /// Candidates sampled per spread-wide placement (default 2(k+m)).
    #[arg(long)]
    sample: Option<usize>,
    /// Disks per workload when packed (default 2(k+m)).
    #[arg(long)]
    group: Option<usize>,
    /// Also run heat-blind variants (placement by free space only, reads
    /// of the data shards).
    #[arg(long)]
    blind: bool,
    /// Only these strategies (spread, packed, spread-blind, packed-blind).
    #[arg(long, value_delimiter = ',')]
    strategies: Option<Vec<String>>,
    /// Heat signal of the heat-aware strategies: window (fresh, sliding
    /// 1 s) or lagged (last whole second).
    #[arg(long, value_enum, default_value_t = Signal::Window)]
    heat: Signal,
    /// Simulations run at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Window,
    Lagged,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Demand,
    Disks,
    Both,
}

/// Run `tasks` on up to `jobs` threads; results in task order.
fn parallel<T: Send, R: Send>(jobs: usize, tasks: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = tasks.len();
    let queue = Mutex::new(tasks.into_iter().enumerate());
    let done = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, n.max(1)) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap().next();
                let Some((i, t)) = next else { break };
                let r = f(t);
                done.lock().unwrap().push((i, r));
            });
        }
    });
    let mut done = done.into_inner().unwrap();
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

fn default_steps(disks: usize, quick: bool) -> usize {
    // about 2 * 10^6 disk-seconds per run (5 * 10^5 quick), 3 to 300
    // seconds: one simulated second of 10^6 disks is 1.4 * 10^7 requests
    let budget = if quick { 5e5 } else { 2e6 } as usize;
    (budget / disks).clamp(3, if quick { 60 } else { 300 })
}

fn main() {
    let a = Args::parse();
    let n = a.k + a.m;
    let t0 = Instant::now();
    let onoff = heatsim::OnOff::default();
    println!(
        "# shardfs-heatsim seed={} {}{}",
        a.seed,
        if a.quick { "quick " } else { "" },
        if a.blind { "blind " } else { "" }
    );
    println!(
        "# workloads: on/off, Pareto on (min {} s, shape {}) and off (min {} s, shape {}): mean on {:.1} s, off {:.1} s, duty {:.2}",
        onoff.on_min,
        onoff.on_alpha,
        onoff.off_min,
        onoff.off_alpha,
        onoff.mean_on(),
        onoff.mean_off(),
        onoff.duty()
    );

    let mut demand_equal: Vec<DemandResult> = Vec::new();
    let mut demand_sized: Vec<DemandResult> = Vec::new();
    if a.part != Part::Disks {
        let ws = a.workloads.clone().unwrap_or_else(|| {
            if a.quick {
                vec![1, 10, 100, 1000]
            } else {
                vec![1, 10, 100, 1000, 10_000, 100_000]
            }
        });
        let steps = a.demand_steps.unwrap_or(if a.quick { 1800 } else { 3600 });
        let mut tasks = Vec::new();
        for &w in &ws {
            for sized in [false, true] {
                tasks.push(DemandParams {
                    workloads: w,
                    steps,
                    rate: a.on_rate,
                    size_alpha: if sized { Some(1.5) } else { None },
                    onoff,
                });
            }
        }
        let seed = a.seed;
        let res = parallel(a.jobs, tasks, |p| heatsim::demand(&p, seed));
        for (i, r) in res.into_iter().enumerate() {
            if i % 2 == 0 {
                demand_equal.push(r);
            } else {
                demand_sized.push(r);
            }
        }
        println!();
        println!(
            "## Part 1: aggregate demand of W independent workloads ({steps} s, {} req/s each while on; sized: on-rates Pareto shape 1.5, same mean)",
            a.on_rate
        );
        println!();
        println!("| workloads | mean req/s | peak/mean | p99.9/mean | std/mean | sized: peak/mean | sized: std/mean |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for (e, s) in demand_equal.iter().zip(&demand_sized) {
            println!(
                "| {} | {:.0} | {:.2} | {:.2} | {:.3} | {:.2} | {:.3} |",
                e.workloads,
                e.mean,
                e.peak_over_mean,
                e.p999_over_mean,
                e.cv,
                s.peak_over_mean,
                s.cv
            );
        }
    }

    let mut disk_results: Vec<DiskResult> = Vec::new();
    if a.part != Part::Demand {
        let ds = a.disks.clone().unwrap_or_else(|| {
            if a.quick {
                vec![1000, 10_000]
            } else {
                vec![1000, 10_000, 100_000, 1_000_000]
            }
        });
        let mut strategies = vec![Strategy::SPREAD, Strategy::PACKED];
        if a.blind {
            strategies.push(Strategy::SPREAD_BLIND);
            strategies.push(Strategy::PACKED_BLIND);
        }
        if let Some(only) = &a.strategies {
            strategies = [
                Strategy::SPREAD,
                Strategy::PACKED,
                Strategy::SPREAD_BLIND,
                Strategy::PACKED_BLIND,
            ]
            .into_iter()
            .filter(|s| only.iter().any(|o| o == s.name()))
            .collect();
        }
        let mut tasks = Vec::new();
        for &d in &ds {
            let mut p = DiskParams::new(d);
            p.k = a.k;
            p.m = a.m;
            p.iops = a.iops;
            p.util = a.util;
            p.on_rate = a.on_rate;
            p.write_frac = a.write_frac;
            p.objects = a.objects;
            p.sample = a.sample.unwrap_or(2 * n);
            p.group = a.group.unwrap_or(2 * n);
            p.steps = a.steps.unwrap_or_else(|| default_steps(d, a.quick));
            p.onoff = onoff;
            p.signal = match a.heat {
                Signal::Window => heatsim::HeatSignal::Window,
                Signal::Lagged => heatsim::HeatSignal::Lagged,
            };
            for &s in &strategies {
                tasks.push((p.clone(), s));
            }
        }
        let seed = a.seed;
        let first = &tasks[0].0;
        println!();
        println!(
            "## Part 2: per-disk load, {}+{} stripes, {} IOPS/disk, {:.0}% mean utilisation, {} req/s per workload while on, {:.0}% overwrites, {} objects per workload; spread: place() over {} sampled disks; packed: {} disks per workload; heat signal: {:?}",
            a.k,
            a.m,
            a.iops,
            a.util * 100.0,
            a.on_rate,
            a.write_frac * 100.0,
            a.objects,
            first.sample,
            first.group,
            a.heat
        );
        let res = parallel(a.jobs, tasks, |(p, s)| heatsim::run_disks(&p, s, seed));
        println!();
        println!("| disks | strategy | workloads | seconds | mean IOPS/disk | max/mean | p99/mean | worst max/mean | disk-s over {0:.0} IOPS | disk-s queued | I/Os waiting > 1 s | longest queue | shards/disk max/mean | shards/disk std/mean | fill + run |", a.iops);
        println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut last_disks = 0;
        for r in res {
            if r.disks != last_disks {
                last_disks = r.disks;
                let (mx, p99) = heatsim::random_reference(r.mean_iops, r.disks);
                println!(
                    "| {} | (pure chance) | | | {:.1} | {mx:.2} | {p99:.2} | | | | | | | | |",
                    r.disks, r.mean_iops
                );
            }
            println!(
                "| {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2}% | {:.2}% | {:.3}% | {:.1} s | {:.2} | {:.3} | {:.0} + {:.0} s |",
                r.disks,
                r.strategy.name(),
                r.workloads,
                r.steps,
                r.mean_iops,
                r.max_over_mean,
                r.p99_over_mean,
                r.worst_max_over_mean,
                r.overloaded * 100.0,
                r.queued * 100.0,
                r.delayed * 100.0,
                r.max_backlog_s,
                r.stored_max_over_mean,
                r.stored_cv,
                r.fill_secs,
                r.run_secs
            );
            disk_results.push(r);
        }
    }

    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).expect("create --out directory");
        let mut written = Vec::new();
        if !demand_equal.is_empty() {
            let c = decorrelation_chart(&demand_equal, &demand_sized);
            let f = dir.join("heat-decorrelation.svg");
            std::fs::write(&f, c.render()).expect("write svg");
            written.push(f);
            let c = series_chart(&demand_equal);
            let f = dir.join("heat-demand-series.svg");
            std::fs::write(&f, c.render()).expect("write svg");
            written.push(f);
        }
        if !disk_results.is_empty() {
            let c = disk_chart(&disk_results, a.iops);
            let f = dir.join("heat-disk-balance.svg");
            std::fs::write(&f, c.render()).expect("write svg");
            written.push(f);
        }
        println!();
        for f in written {
            println!("# wrote {}", f.display());
        }
    }
    println!("# total {:.1} s", t0.elapsed().as_secs_f64());
}

fn decorrelation_chart(equal: &[DemandResult], sized: &[DemandResult]) -> Chart {
    let line = |rs: &[DemandResult], f: fn(&DemandResult) -> f64| -> Vec<(f64, f64)> {
        rs.iter().map(|r| (r.workloads as f64, f(r))).collect()
    };
    Chart {
        title: "Aggregate demand: peak-to-mean vs number of workloads".into(),
        x_label: "independent on/off workloads (log)".into(),
        y_label: "peak / mean of per-second demand".into(),
        log_x: true,
        reference: Some((1.0, "perfectly smooth".into())),
        series: vec![
            Series {
                name: "peak/mean, equal sizes".into(),
                color: "#1f5fbf".into(),
                dashed: false,
                markers: true,
                points: line(equal, |r| r.peak_over_mean),
            },
            Series {
                name: "p99.9/mean, equal sizes".into(),
                color: "#1f5fbf".into(),
                dashed: true,
                markers: false,
                points: line(equal, |r| r.p999_over_mean),
            },
            Series {
                name: "peak/mean, Pareto sizes".into(),
                color: "#d2691e".into(),
                dashed: false,
                markers: true,
                points: line(sized, |r| r.peak_over_mean),
            },
        ],
        ..Default::default()
    }
}

fn series_chart(equal: &[DemandResult]) -> Chart {
    let colors = [
        "#d62728", "#2ca02c", "#1f5fbf", "#9467bd", "#8c564b", "#555",
    ];
    // three workload counts: smallest, a middle one, largest
    let mut pick: Vec<&DemandResult> = Vec::new();
    if let Some(f) = equal.first() {
        pick.push(f);
    }
    if equal.len() > 2 {
        pick.push(&equal[equal.len() / 2]);
    }
    if equal.len() > 1 {
        pick.push(equal.last().unwrap());
    }
    let len = 600.min(pick.first().map(|r| r.series.len()).unwrap_or(0));
    let series = pick
        .iter()
        .enumerate()
        .map(|(i, r)| Series {
            name: format!(
                "{} workload{}",
                r.workloads,
                if r.workloads == 1 { "" } else { "s" }
            ),
            color: colors[i % colors.len()].into(),
            dashed: false,
            markers: false,
            points: r.series[..len]
                .iter()
                .enumerate()
                .map(|(t, &v)| (t as f64, if r.mean > 0.0 { v / r.mean } else { 0.0 }))
                .collect(),
        })
        .collect();
    Chart {
        title: "Aggregate demand over time, relative to its mean".into(),
        x_label: "time (s)".into(),
        y_label: "demand / mean".into(),
        log_x: false,
        reference: Some((1.0, "mean".into())),
        series,
        ..Default::default()
    }
}

fn disk_chart(rs: &[DiskResult], iops: f64) -> Chart {
    let colors = [
        ("spread", "#1f5fbf"),
        ("packed", "#d62728"),
        ("spread-blind", "#7fa7e0"),
        ("packed-blind", "#f08080"),
    ];
    let mut series = Vec::new();
    let mean = rs.iter().map(|r| r.mean_iops).sum::<f64>() / rs.len().max(1) as f64;
    for (name, color) in colors {
        let mine: Vec<&DiskResult> = rs.iter().filter(|r| r.strategy.name() == name).collect();
        if mine.is_empty() {
            continue;
        }
        series.push(Series {
            name: format!("{name}: max/mean"),
            color: color.into(),
            dashed: false,
            markers: true,
            points: mine
                .iter()
                .map(|r| (r.disks as f64, r.max_over_mean))
                .collect(),
        });
        series.push(Series {
            name: format!("{name}: p99/mean"),
            color: color.into(),
            dashed: true,
            markers: true,
            points: mine
                .iter()
                .map(|r| (r.disks as f64, r.p99_over_mean))
                .collect(),
        });
    }
    // pure chance: each shard I/O to a uniformly random disk
    let mut ds: Vec<(usize, f64)> = rs.iter().map(|r| (r.disks, r.mean_iops)).collect();
    ds.dedup_by_key(|d| d.0);
    let refs: Vec<(f64, (f64, f64))> = ds
        .iter()
        .map(|&(d, m)| (d as f64, heatsim::random_reference(m, d)))
        .collect();
    series.push(Series {
        name: "pure chance: max/mean".into(),
        color: "#777".into(),
        dashed: false,
        markers: false,
        points: refs.iter().map(|&(d, (mx, _))| (d, mx)).collect(),
    });
    series.push(Series {
        name: "pure chance: p99/mean".into(),
        color: "#777".into(),
        dashed: true,
        markers: false,
        points: refs.iter().map(|&(d, (_, p))| (d, p)).collect(),
    });
    Chart {
        title: "Per-disk load: hottest and p99 disk over the mean disk".into(),
        log_y: true,
        y_range: Some((1.0, 30.0)),
        x_label: "disks in the pool (log)".into(),
        y_label: "per-disk IOPS / mean per-disk IOPS (log)".into(),
        log_x: true,
        reference: if mean > 0.0 {
            Some((iops / mean, format!("{iops:.0} IOPS (disk saturated)")))
        } else {
            None
        },
        series,
        ..Default::default()
    }
}
