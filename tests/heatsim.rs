//! The scale simulator's qualitative claims (docs/heat.md, "Scale
//! simulator"), at small scale: independent bursty workloads decorrelate
//! (the aggregate's peak-to-mean falls as their number grows), and
//! spreading every workload over the whole pool keeps per-disk load far
//! more even than packing each onto a few disks.

use shardfs::heatsim::{self, DemandParams, DiskParams, OnOff, Strategy};
use std::process::Command;

fn demand(workloads: usize, seed: u64) -> heatsim::DemandResult {
    heatsim::demand(
        &DemandParams {
            workloads,
            steps: 1800,
            rate: 200.0,
            size_alpha: None,
            onoff: OnOff::default(),
        },
        seed,
    )
}

#[test]
fn peak_to_mean_falls_as_workloads_grow() {
    for seed in [1, 2, 3] {
        let ptm: Vec<f64> = [1, 10, 100, 1000]
            .iter()
            .map(|&w| demand(w, seed).peak_over_mean)
            .collect();
        // one on/off workload peaks at about 1/duty = 5x its mean
        assert!(ptm[0] > 3.0, "seed {seed}: {ptm:?}");
        for w in ptm.windows(2) {
            assert!(w[1] < w[0], "seed {seed}: not falling {ptm:?}");
        }
        assert!(ptm[3] < 0.4 * ptm[0], "seed {seed}: {ptm:?}");
        assert!(ptm[3] < 1.5, "seed {seed}: {ptm:?}");
    }
}

#[test]
fn spread_wide_evens_out_per_disk_load() {
    let mut p = DiskParams::new(1200);
    p.steps = 30;
    for seed in [1, 2] {
        let spread = heatsim::run_disks(&p, Strategy::SPREAD, seed);
        let packed = heatsim::run_disks(&p, Strategy::PACKED, seed);
        // same demand for both
        assert!((spread.mean_iops - packed.mean_iops).abs() < 0.02 * packed.mean_iops);
        assert!(
            spread.max_over_mean < 0.5 * packed.max_over_mean,
            "seed {seed}: spread {spread:?} packed {packed:?}"
        );
        assert!(spread.p99_over_mean < packed.p99_over_mean);
        // spread stays near the pure-chance floor, below saturation
        assert!(spread.max_over_mean < 2.0, "{spread:?}");
        assert!(spread.overloaded < 0.001, "{spread:?}");
        // packed workloads overload their disks whenever two burst at once
        assert!(packed.overloaded > 0.05, "{packed:?}");
        // heat does part of it: without it (placement by free space, reads
        // of the data shards) spreading still beats packing, by less
        let blind = heatsim::run_disks(&p, Strategy::SPREAD_BLIND, seed);
        assert!(spread.max_over_mean < blind.max_over_mean, "{blind:?}");
        assert!(
            blind.max_over_mean < 0.5 * packed.max_over_mean,
            "{blind:?}"
        );
    }
}

#[test]
fn binary_quick_run_writes_table_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shardfs-heatsim"))
        .args(["--quick", "--seed", "7", "--disks", "1000", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("| 1000 | spread |"), "{text}");
    assert!(text.contains("| 1000 | packed |"), "{text}");
    for f in [
        "heat-decorrelation.svg",
        "heat-demand-series.svg",
        "heat-disk-balance.svg",
    ] {
        let svg = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{f}");
        assert!(svg.contains("<polyline"), "{f}");
    }
    // deterministic given the seed (timings aside)
    let again = Command::new(env!("CARGO_BIN_EXE_shardfs-heatsim"))
        .args(["--quick", "--seed", "7", "--disks", "1000"])
        .output()
        .unwrap();
    let strip = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("| 1"))
            .map(|l| l.rsplitn(3, '|').nth(2).unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        strip(&text),
        strip(&String::from_utf8(again.stdout).unwrap())
    );
}
