//! Heat through a real mount: `shardctl heat` (table, JSON, SVG), the read
//! policy switch, HDD emulation of members, and reads that route around a
//! slow member.

mod common;
use common::*;

fn json(t: &TestMount, args: &[&str]) -> serde_json::Value {
    t.json(args)
}

#[test]
fn heat_shows_load_and_reads_route_around_a_slow_member() {
    let mut t = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let mut files = Vec::new();
    for i in 0..24u64 {
        let data = pattern(i, 16_384);
        std::fs::write(t.p(&format!("bkt/f{i}")), &data).unwrap();
        files.push((format!("bkt/f{i}"), data));
    }
    // member 2 becomes a slow disk: 25 IOPS
    t.unmount();
    t.mount_args = vec![
        "--emulate-hdd".into(),
        "2000:500".into(),
        "--emulate-member".into(),
        "2=25:50".into(),
    ];
    t.mount();
    let h = json(&t, &["heat"]);
    assert_eq!(h["read_policy"], "heat");
    assert_eq!(h["members"][2]["emulated"]["iops"], 25.0);
    assert_eq!(h["members"][0]["emulated"]["iops"], 2000.0);
    // read everything twice (page cache off: direct reads of fresh opens)
    let read_all = |t: &TestMount| {
        let start = std::time::Instant::now();
        for _ in 0..2 {
            for (p, d) in &files {
                assert!(std::fs::read(t.p(p)).unwrap() == *d, "{p}");
            }
            // drop the kernel's cache so the next round reaches the daemon
            std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
        }
        start.elapsed()
    };
    let heat_time = read_all(&t);
    let h = json(&t, &["heat"]);
    let ops =
        |h: &serde_json::Value, i: usize| h["members"][i]["heat"]["ops_total"].as_f64().unwrap();
    // the heat-aware policy kept reads off the slow member: it served far
    // fewer reads than the busiest fast member
    let busiest = (0..6)
        .filter(|&i| i != 2)
        .map(|i| ops(&h, i))
        .fold(0.0, f64::max);
    assert!(busiest > 0.0, "{h}");
    assert!(ops(&h, 2) < busiest / 2.0, "slow member still read: {h}");
    // naive: data shards first, so the slow member's share is read
    let (ok, out, err) = t.ctl(&["heat", "policy", "naive"]);
    assert!(ok && out.contains("read policy naive"), "{out}{err}");
    let naive_time = read_all(&t);
    assert!(
        naive_time > heat_time,
        "naive {naive_time:?} should be slower than heat-aware {heat_time:?} with a 25-IOPS member"
    );
    // bad input
    let (ok, _, err) = t.ctl(&["heat", "policy", "fastest"]);
    assert!(!ok && err.contains("heat or naive"), "{err}");
    // the table and the picture
    let svg = t.tmp.path().join("heat.svg");
    let (ok, out, err) = t.ctl(&["heat", "--svg", svg.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("UTILISATION") && out.contains("25 IOPS"),
        "{out}"
    );
    let pic = std::fs::read_to_string(&svg).unwrap();
    assert!(
        pic.starts_with("<svg") && pic.trim_end().ends_with("</svg>"),
        "{pic}"
    );
    assert_eq!(pic.matches("<polyline").count(), 6, "{pic}");
    // a bad emulation flag is refused before anything is mounted
    t.unmount();
    t.mount_args = vec!["--emulate-member".into(), "2=fast".into()];
    let out = std::process::Command::new(SHARDFS)
        .arg("mount")
        .args(&t.mount_args)
        .args(&t.members)
        .arg(&t.mnt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("IOPS:MB_PER_SEC"));
    assert!(!is_mounted(&t.mnt));
}
