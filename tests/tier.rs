//! Tiering below FUSE (over crash-simulating members with device classes)
//! and through a real mount with `shardctl tier`.

mod common;
mod harness;

use harness::{resolve, unlimited, Rig};
use shardfs::fs::{Tier, TierPolicy};

/// 6 "ssd" members (0..6) and 6 "hdd" members (6..12): each class holds a
/// whole 4+2 stripe.
fn rig() -> Rig {
    let classes = (0..12)
        .map(|i| if i < 6 { "ssd" } else { "hdd" }.to_string())
        .collect();
    Rig::with_classes(12, classes)
}

fn write_files(rig: &Rig, n: usize) -> Vec<(u64, Vec<u8>)> {
    harness::bucket_of_files(rig.fs(), n, |i| 3 * 8192 + 77 * i)
}

/// Every shard of every stripe of `files` on members of `class`.
fn all_on(rig: &Rig, files: &[(u64, Vec<u8>)], range: std::ops::Range<u16>) {
    let fs = rig.fs();
    for (ino, data) in files {
        for (s, loc) in fs.stripes(*ino).unwrap() {
            assert!(
                loc.members.iter().all(|m| range.contains(m)),
                "inode {ino} stripe {s} not on {range:?}: {loc:?}"
            );
            let mut d = loc.members.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), loc.members.len(), "distinct members: {loc:?}");
        }
        assert_eq!(&fs.read(*ino, 0, data.len() as u32 + 1).unwrap(), data);
    }
}

#[test]
fn new_stripes_go_hot_and_a_pass_moves_them_between_classes() {
    let rig = rig();
    let fs = rig.fs();
    // bad policies are refused
    let bad = TierPolicy {
        hot_class: Some("nvme".into()),
        ..TierPolicy::default()
    };
    assert!(fs
        .set_tier_policy(None, bad)
        .unwrap_err()
        .to_string()
        .contains("no member has class"));
    let same = TierPolicy {
        hot_class: Some("ssd".into()),
        cold_class: Some("ssd".into()),
        ..TierPolicy::default()
    };
    assert!(fs.set_tier_policy(None, same).is_err());
    fs.set_tier_policy(
        None,
        TierPolicy {
            hot_class: Some("ssd".into()),
            cold_class: Some("hdd".into()),
            ..TierPolicy::default()
        },
    )
    .unwrap();
    let files = write_files(&rig, 10);
    // new stripes prefer the hot class
    all_on(&rig, &files, 0..6);
    let task = unlimited();
    let c = fs.tier_pass(&task, Some(Tier::Cold)).unwrap();
    assert_eq!(c.cold_objects, 10);
    assert_eq!(c.pending_shards, 0);
    assert!(c.moved_shards >= 60, "{c:?}");
    all_on(&rig, &files, 6..12);
    let st = fs.tier_status().unwrap();
    assert_eq!(st.bytes_per_class["ssd"], 0, "{st:?}");
    assert!(st.bytes_per_class["hdd"] > 0);
    // and back
    fs.tier_pass(&task, Some(Tier::Hot)).unwrap();
    all_on(&rig, &files, 0..6);
    // nothing left behind: a clean remount finds no stray shard
    assert!(!fs.pool.garbage_left());
}

#[test]
fn temperature_promotes_read_objects_and_demotes_idle_ones() {
    let rig = rig();
    let fs = rig.fs();
    let files = write_files(&rig, 6);
    // a bucket policy (not the pool default: new stripes went anywhere)
    fs.set_tier_policy(
        Some(b"bkt"),
        TierPolicy {
            hot_class: Some("ssd".into()),
            cold_class: Some("hdd".into()),
            promote_reads: 4.0,
            demote_after_secs: 1,
            hot_replica: false,
        },
    )
    .unwrap();
    // file 0 is read often; the others rest past demote-after
    std::thread::sleep(std::time::Duration::from_millis(1200));
    for _ in 0..6 {
        fs.read(files[0].0, 0, 100).unwrap();
    }
    let c = fs.tier_pass(&unlimited(), None).unwrap();
    assert_eq!((c.hot_objects, c.cold_objects), (1, 5), "{c:?}");
    all_on(&rig, &files[..1], 0..6);
    all_on(&rig, &files[1..], 6..12);
    let _ = resolve(fs, b"/bkt").unwrap();
}

/// Through a mount: `shardctl tier policy`, `tier start --all-cold`,
/// `tier status`, and bad input.
#[test]
fn tier_through_shardctl() {
    use common::*;
    let classes = "ssd,ssd,ssd,ssd,ssd,ssd,hdd,hdd,hdd,hdd,hdd,hdd";
    let t = TestMount::new(
        12,
        &[
            "--shard-size",
            "4096",
            "--inline-max",
            "2048",
            "--classes",
            classes,
        ],
    );
    let (ok, out, err) = t.ctl(&["tier", "policy", "--hot", "ssd", "--cold", "hdd"]);
    assert!(ok && out.contains("hot on ssd"), "{out}{err}");
    let (ok, _, err) = t.ctl(&["tier", "policy", "--hot", "nvme"]);
    assert!(!ok && err.contains("no member has class"), "{err}");
    let (ok, _, err) = t.ctl(&["tier", "policy", "nobucket", "--hot", "ssd"]);
    assert!(!ok, "{err}");
    std::fs::create_dir(t.p("bkt")).unwrap();
    let mut files = Vec::new();
    for i in 0..8u64 {
        let d = common::pattern(i, 30_000);
        std::fs::write(t.p(&format!("bkt/f{i}")), &d).unwrap();
        files.push((format!("bkt/f{i}"), d));
    }
    let (ok, _, err) = t.ctl(&["tier", "start", "--all-cold"]);
    assert!(ok, "{err}");
    let start = std::time::Instant::now();
    loop {
        let (ok, out, _) = t.ctl(&["tier", "status", "--json"]);
        assert!(ok);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        if v["bytes_per_class"]["ssd"] == 0 && v["bytes_per_class"]["hdd"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(start.elapsed().as_secs() < 60, "{v}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for (p, d) in &files {
        assert!(std::fs::read(t.p(p)).unwrap() == *d, "{p}");
    }
    let (ok, out, _) = t.ctl(&["tier", "status"]);
    assert!(
        ok && out.contains("hdd") && out.contains("last pass"),
        "{out}"
    );
}

/// The heat rebalance moves shards of hot stripes off the members that
/// serve the most accesses, keeps every stripe on distinct members, and
/// changes no byte.
#[test]
fn heat_rebalance_spreads_hot_stripes() {
    let rig = Rig::with_members(12);
    let files = write_files(&rig, 12);
    let fs = rig.fs();
    // three hot files
    for _ in 0..20 {
        for (ino, _) in &files[..3] {
            fs.read(*ino, 0, 100).unwrap();
        }
    }
    let heat = |fs: &shardfs::fs::Fs| {
        let mut h = [0.0f64; 12];
        for (ino, _) in &files {
            let w = fs.tier.temperature(*ino).map(|t| t.0).unwrap_or(0.0);
            for (_, loc) in fs.stripes(*ino).unwrap() {
                for m in loc.members {
                    h[m as usize] += w;
                }
            }
        }
        let mean = h.iter().sum::<f64>() / 12.0;
        h.iter().copied().fold(0.0, f64::max) / mean
    };
    let before = heat(fs);
    let moved = fs.heat_rebalance_pass(&unlimited(), 100).unwrap();
    let after = heat(fs);
    assert!(
        moved > 0 && after < before,
        "moved {moved}: {before:.2} -> {after:.2}"
    );
    all_on(&rig, &files, 0..12);
}
