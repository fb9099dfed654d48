//! Repair, scrub, disk fail and drain, and the durability estimate through
//! a real mount and `shardctl`.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn json(t: &TestMount, args: &[&str]) -> serde_json::Value {
    t.json(args)
}

/// Wait until a pass has finished with the given predicate on its progress.
fn wait_for(t: &TestMount, cmd: &[&str], what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
    let start = Instant::now();
    loop {
        let p = json(t, cmd);
        if ok(&p) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{what}: {p}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn members_of(t: &TestMount, path: &str) -> Vec<Vec<Option<u64>>> {
    let l = json(t, &["locate", path]);
    l["stripes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["shards"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["member"].as_u64())
                .collect()
        })
        .collect()
}

#[test]
fn disk_fail_repairs_and_drain_empties_a_member_through_shardctl() {
    let t = TestMount::new(8, &["--shard-size", "4096", "--inline-max", "2048"]);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let mut files = Vec::new();
    for i in 0..6u64 {
        let data = pattern(i, 30_000 + i as usize * 7000);
        std::fs::write(t.p(&format!("bkt/f{i}")), &data).unwrap();
        files.push((format!("bkt/f{i}"), data));
    }
    // bad input gets a clear message and changes nothing; exit codes:
    // 1 refused by the daemon, 2 bad arguments, 3 no daemon
    let code = |args: &[&str], socket: &std::path::Path| {
        std::process::Command::new(SHARDCTL)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(code(&["disk", "fail", "99"], &t.socket), Some(1));
    assert_eq!(code(&["repair", "rate", "fast"], &t.socket), Some(2));
    assert_eq!(code(&["no-such-command"], &t.socket), Some(2));
    assert_eq!(
        code(&["status"], &t.tmp.path().join("nothing.sock")),
        Some(3)
    );
    let (ok, _, err) = t.ctl(&["disk", "fail", "99"]);
    assert!(!ok && err.contains("no member 99"), "{err}");
    let (ok, _, err) = t.ctl(&["repair", "rate", "fast"]);
    assert!(!ok && err.contains("bad rate"), "{err}");
    // fail member 2: repair rebuilds its shards elsewhere
    let (ok, out, err) = t.ctl(&["disk", "fail", "2"]);
    assert!(ok && out.contains("failed"), "{out}{err}");
    wait_for(&t, &["repair", "status"], "repair after disk fail", |p| {
        p["passes"].as_u64().unwrap() >= 1
            && !p["running"].as_bool().unwrap()
            && p["remaining"] == 0
    });
    for (path, data) in &files {
        for stripe in members_of(&t, path) {
            assert!(
                stripe.iter().all(|m| m.is_some() && *m != Some(2)),
                "{path}: {stripe:?}"
            );
        }
        assert!(std::fs::read(t.p(path)).unwrap() == *data);
    }
    let st = json(&t, &["status"]);
    assert_eq!(st["members"][2]["state"], "failed");
    assert_eq!(st["degraded_stripes"], 0);
    // the human form shows a progress bar
    let (ok, out, _) = t.ctl(&["repair", "status"]);
    assert!(ok && out.contains("[##") && out.contains("100.0%"), "{out}");
    // drain member 5
    let (ok, _, err) = t.ctl(&["disk", "drain", "5"]);
    assert!(ok, "{err}");
    wait_for(&t, &["status"], "drain", |s| {
        s["members"][5]["state"] == "removed"
    });
    for (path, data) in &files {
        for stripe in members_of(&t, path) {
            assert!(
                stripe.iter().all(|m| *m != Some(5) && *m != Some(2)),
                "{stripe:?}"
            );
        }
        assert!(std::fs::read(t.p(path)).unwrap() == *data);
    }
    let left = t
        .shard_files()
        .into_iter()
        .filter(|r| r.member == 5)
        .count();
    assert_eq!(left, 0, "the drained member holds no shard");
    // states survive a remount
    let mut t = t;
    t.remount();
    let st = json(&t, &["status"]);
    assert_eq!(st["members"][2]["state"], "failed");
    assert_eq!(st["members"][5]["state"], "removed");
    for (path, data) in &files {
        assert!(std::fs::read(t.p(path)).unwrap() == *data);
    }
}

#[test]
fn scrub_finds_flipped_bits_and_durability_is_estimated() {
    let t = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let data = pattern(9, 100_000);
    std::fs::write(t.p("bkt/f"), &data).unwrap();
    // flip a bit in three shard files of different stripes
    let shards = t.shard_files();
    let mut flipped = std::collections::BTreeSet::new();
    for f in &shards {
        let stripe = f.stripe;
        if flipped.len() < 3 && !flipped.contains(&stripe) {
            f.flip(f.len as usize / 2, 0x10);
            flipped.insert(stripe);
        }
    }
    assert_eq!(flipped.len(), 3);
    let (ok, _, err) = t.ctl(&["scrub", "start"]);
    assert!(ok, "{err}");
    wait_for(&t, &["scrub", "status"], "scrub", |p| {
        p["passes"].as_u64().unwrap() >= 1 && !p["running"].as_bool().unwrap()
    });
    let p = json(&t, &["scrub", "status"]);
    assert_eq!(p["shards"], 3, "{p}");
    assert_eq!(p["repaired"], 3, "{p}");
    assert!(p["last_pass_end"].as_u64().is_some());
    assert!(std::fs::read(t.p("bkt/f")).unwrap() == data);
    for stripe in json(&t, &["locate", "bkt/f"])["stripes"]
        .as_array()
        .unwrap()
    {
        assert!(stripe["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["ok"] == true));
    }
    // durability: 6 members in one directory tree are one failure domain
    let d = json(&t, &["durability"]);
    assert_eq!(d["input"]["members"], 6);
    assert_eq!(d["input"]["domains"], 1, "{d}");
    assert_eq!(d["estimate"]["tolerated_domain_failures"], 0);
    let (ok, out, _) = t.ctl(&["durability", "--afr", "0.02"]);
    assert!(ok && out.contains("nines"), "{out}");
    let (ok, _, err) = t.ctl(&["durability", "--afr", "3"]);
    assert!(!ok && err.contains("between 0 and 1"), "{err}");
}

#[test]
fn declared_failure_domains_count_in_the_estimate_and_bad_ones_are_refused() {
    // six members in three declared domains: 4+2 puts two shards per
    // domain, so one domain may fail
    let t = TestMount::new(
        6,
        &["--shard-size", "4096", "--domains", "r1,r1,r2,r2,r3,r3"],
    );
    let d = json(&t, &["durability"]);
    assert_eq!(d["input"]["domains"], 3, "{d}");
    assert_eq!(d["estimate"]["tolerated_domain_failures"], 1, "{d}");
    let st = json(&t, &["status"]);
    assert_eq!(st["members"][2]["domain"], "r2");
    // a list that does not match the directories is refused at mkfs
    let dir = t.tmp.path().join("other");
    let dirs: Vec<_> = (0..6).map(|i| dir.join(format!("d{i}"))).collect();
    let out = std::process::Command::new(SHARDFS)
        .args(["mkfs", "--domains", "a,b"])
        .args(&dirs)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("one per directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `shardctl disk add` joins a new member online; the rebalance it starts
/// moves shards onto it until the spread is even; replacing a disk is add
/// plus drain. Bad input (a relative path, a directory that is not empty,
/// a current member) gets a clear message and changes nothing. After a
/// remount with the new member listed, everything reads back.
#[test]
fn disk_add_rebalances_and_replaces_a_member_through_shardctl() {
    let mut t = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let mut files = Vec::new();
    for i in 0..12u64 {
        let data = pattern(i, 40_000 + i as usize * 3000);
        std::fs::write(t.p(&format!("bkt/f{i}")), &data).unwrap();
        files.push((format!("bkt/f{i}"), data));
    }
    // bad input
    let (ok, _, err) = t.ctl(&["disk", "add", t.members[1].to_str().unwrap()]);
    assert!(!ok && err.contains("already"), "{err}");
    let busy = t.tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("x"), b"x").unwrap();
    let (ok, _, err) = t.ctl(&["disk", "add", busy.to_str().unwrap()]);
    assert!(!ok && err.contains("not empty"), "{err}");
    let (ok, _, err) = t.ctl(&[
        "disk",
        "add",
        "--domain",
        "rack9",
        t.tmp.path().join("d6").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("declares no failure domains"), "{err}");
    assert_eq!(
        json(&t, &["status"])["members"].as_array().unwrap().len(),
        6
    );
    // add a member: it is online and the rebalance moves shards onto it
    let new = t.tmp.path().join("disk6");
    let (ok, out, err) = t.ctl(&["disk", "add", new.to_str().unwrap()]);
    assert!(ok && out.contains("member 6"), "{out}{err}");
    t.members.push(new.clone());
    wait_for(
        &t,
        &["rebalance", "status"],
        "rebalance after disk add",
        |p| p["passes"].as_u64().unwrap() >= 1 && !p["running"].as_bool().unwrap(),
    );
    let p = json(&t, &["rebalance", "status"]);
    assert!(p["shards"].as_u64().unwrap() > 0, "nothing moved: {p}");
    let spread = p["imbalance"].as_f64().unwrap();
    assert!(spread < 1.15, "spread after rebalance {spread}: {p}");
    let st = json(&t, &["status"]);
    assert_eq!(st["members"][6]["state"], "online");
    let on_new = t.shard_files().iter().filter(|r| r.member == 6).count();
    assert!(on_new > 0, "no shard file on the new member");
    for (path, data) in &files {
        assert!(std::fs::read(t.p(path)).unwrap() == *data, "{path}");
    }
    // the table shows the progress bar and the spread
    let (ok, out, _) = t.ctl(&["rebalance", "status"]);
    assert!(ok && out.contains('[') && out.contains("spread"), "{out}");
    // replace member 0: add a new one, drain the old
    let repl = t.tmp.path().join("disk7");
    let (ok, out, err) = t.ctl(&["disk", "add", repl.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    t.members.push(repl);
    let (ok, out, err) = t.ctl(&["disk", "drain", "0"]);
    assert!(ok, "{out}{err}");
    wait_for(&t, &["status"], "drain of member 0", |s| {
        s["members"][0]["state"] == "removed"
    });
    for (path, data) in &files {
        for stripe in members_of(&t, path) {
            assert!(stripe.iter().all(|m| *m != Some(0)), "{path}: {stripe:?}");
        }
        assert!(std::fs::read(t.p(path)).unwrap() == *data, "{path}");
    }
    // remount with every member: the pool has 8, data intact
    t.remount();
    let st = json(&t, &["status"]);
    assert_eq!(st["members"].as_array().unwrap().len(), 8, "{st}");
    assert_eq!(st["members"][0]["state"], "removed");
    for (path, data) in &files {
        assert!(std::fs::read(t.p(path)).unwrap() == *data, "{path}");
    }
}

/// A metadata replica on a member taken out of service is copied to
/// another member at once: the pool is back to m+1 replicas on members in
/// service, every superblock records the new set, and after the old
/// member's directory is gone for good the pool mounts with all its
/// replicas and every file intact.
#[test]
fn metadata_replicas_move_off_a_failed_member() {
    let mut t = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let mut files = Vec::new();
    for i in 0..8u64 {
        let data = pattern(i, 100 + i as usize * 5000);
        std::fs::write(t.p(&format!("bkt/f{i}")), &data).unwrap();
        files.push((format!("bkt/f{i}"), data));
    }
    let replicas = |t: &TestMount| -> Vec<(u64, String)> {
        json(t, &["status"])["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| {
                m["meta_replica"]
                    .as_str()
                    .map(|s| (m["index"].as_u64().unwrap(), s.to_string()))
            })
            .collect()
    };
    assert_eq!(
        replicas(&t),
        vec![
            (0, "healthy".into()),
            (1, "healthy".into()),
            (2, "healthy".into())
        ]
    );
    let (ok, out, err) = t.ctl(&["disk", "fail", "1"]);
    assert!(ok, "{out}{err}");
    let start = Instant::now();
    while replicas(&t).iter().any(|(i, _)| *i == 1) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{:?}",
            replicas(&t)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let now = replicas(&t);
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(now.iter().all(|(_, s)| s == "healthy"), "{now:?}");
    // every member in service records the new set
    for i in [0usize, 2, 3, 4, 5] {
        let raw = std::fs::read(t.members[i].join("shardfs.superblock")).unwrap();
        let sb = shardfs::pool::Superblock::decode(&raw).unwrap();
        assert_eq!(sb.meta_epoch, 1, "member {i}");
        assert!(
            !sb.meta_replicas.contains(&1),
            "member {i}: {:?}",
            sb.meta_replicas
        );
    }
    // a change made now reaches the new replica
    std::fs::write(t.p("bkt/after"), b"written after the move").unwrap();
    // the failed member's disk is thrown away; the pool mounts without it
    t.unmount();
    std::fs::remove_dir_all(&t.members[1]).unwrap();
    t.mount();
    assert!(
        !t.log_text()
            .contains("metadata replicas are on missing members"),
        "{}",
        t.log_text()
    );
    assert_eq!(replicas(&t).len(), 3);
    assert_eq!(
        std::fs::read(t.p("bkt/after")).unwrap(),
        b"written after the move"
    );
    for (path, data) in &files {
        assert!(std::fs::read(t.p(path)).unwrap() == *data, "{path}");
    }
}

/// Shards written around the page cache (`--direct-writes on`: an O_DIRECT
/// aligned prefix and a buffered tail) hold exactly the bytes a buffered
/// write gives: files of every length read back, after a remount with the
/// page-cache path, and a scrub finds every shard sound.
#[test]
fn direct_shard_writes_read_back_and_scrub_clean() {
    let mut t = TestMount::new(6, &[]);
    t.unmount();
    t.mount_args = vec!["--direct-writes".into(), "on".into()];
    t.mount();
    std::fs::create_dir(t.p("bkt")).unwrap();
    // whole stripes, a stripe plus a little, a shard just past one 4 KiB
    // block, and sizes whose shards end mid-block
    let sizes = [4 << 20, (5 << 20) + 123, 4 * 70_001, 300_001, 9_999_999];
    let files: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("bkt/f{i}"), pattern(100 + i as u64, n)))
        .collect();
    for (p, d) in &files {
        std::fs::write(t.p(p), d).unwrap();
    }
    for (p, d) in &files {
        assert!(std::fs::read(t.p(p)).unwrap() == *d, "{p}");
    }
    let shards = t.shard_files();
    assert!(shards.len() >= 6 * 5, "{} shard files", shards.len());
    // where the members' filesystem takes O_DIRECT, the direct path ran
    let probe = t.tmp.path().join("direct-probe");
    let direct_ok = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .is_ok()
    };
    t.unmount();
    if direct_ok {
        assert!(
            !t.log_text().contains("refuses O_DIRECT"),
            "{}",
            t.log_text()
        );
    }
    t.mount_args.clear();
    t.mount();
    for (p, d) in &files {
        assert!(std::fs::read(t.p(p)).unwrap() == *d, "{p} after remount");
    }
    let (ok, _, err) = t.ctl(&["scrub", "start"]);
    assert!(ok, "{err}");
    wait_for(&t, &["scrub", "status"], "scrub", |p| {
        p["passes"].as_u64().unwrap() >= 1 && !p["running"].as_bool().unwrap()
    });
    let p = json(&t, &["scrub", "status"]);
    assert_eq!(p["shards"], 0, "scrub found bad shards: {p}");
}

#[test]
fn a_pipelined_repair_of_many_stripes_reads_back_every_byte_and_an_overwrite_during_it_wins() {
    // 16 KiB stripes: 12 files of 40 stripes are 480 stripes, about 360
    // of them with a shard on the member that fails: many batches of the
    // pipelined repair, with its workers and window full
    let t = TestMount::new(8, &["--shard-size", "4096", "--inline-max", "2048"]);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let mut files = Vec::new();
    for i in 0..12u64 {
        let data = pattern(100 + i, 40 * 16384 - i as usize * 1000);
        std::fs::write(t.p(&format!("bkt/f{i}")), &data).unwrap();
        files.push((format!("bkt/f{i}"), data));
    }
    // slow enough that the pass is still running after the writes below
    let (ok, _, err) = t.ctl(&["repair", "rate", "1M"]);
    assert!(ok, "{err}");
    let (ok, out, err) = t.ctl(&["disk", "fail", "2"]);
    assert!(ok && out.contains("failed"), "{out}{err}");
    wait_for(&t, &["repair", "status"], "repair pass started", |p| {
        p["running"].as_bool().unwrap() && p["stripes_total"].as_u64().unwrap() > 300
    });
    // during the pass: f0 is overwritten whole (new generations: the
    // planned copies of its stripes must lose the compare-and-swap), and
    // f1 gets a small overwrite in each of a few stripes (patches: those
    // stripes are folded instead of rebuilt)
    let newer = pattern(999, files[0].1.len());
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(t.p(&files[0].0))
            .unwrap();
        f.write_all(&newer).unwrap();
        f.sync_all().unwrap();
    }
    files[0].1 = newer;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(t.p(&files[1].0))
            .unwrap();
        for s in [3usize, 17, 31] {
            let at = s * 16384 + 5000;
            let bytes = pattern(7000 + s as u64, 300);
            f.write_all_at(&bytes, at as u64).unwrap();
            files[1].1[at..at + 300].copy_from_slice(&bytes);
        }
        f.sync_all().unwrap();
    }
    let p = json(&t, &["repair", "status"]);
    assert!(
        p["running"].as_bool().unwrap(),
        "the overwrites landed during the pass: {p}"
    );
    // the rest at full speed
    let (ok, _, err) = t.ctl(&["repair", "rate", "0"]);
    assert!(ok, "{err}");
    wait_for(&t, &["repair", "status"], "repair done", |p| {
        !p["running"].as_bool().unwrap() && p["remaining"] == 0
    });
    let check = |t: &TestMount| {
        let mut named = 0;
        for (path, data) in &files {
            let got = std::fs::read(t.p(path)).unwrap();
            assert!(got == *data, "{path}: bytes differ after the repair");
            for stripe in members_of(t, path) {
                assert!(
                    stripe.iter().all(|m| m.is_some() && *m != Some(2)),
                    "{path}: {stripe:?}"
                );
                let mut ms: Vec<_> = stripe.iter().flatten().collect();
                named += ms.len();
                ms.sort();
                ms.dedup();
                assert_eq!(
                    ms.len(),
                    stripe.len(),
                    "two shards on one member: {stripe:?}"
                );
            }
        }
        named
    };
    check(&t);
    let st = json(&t, &["status"]);
    assert_eq!(st["degraded_stripes"], 0, "{st}");
    // after a clean unmount the members in service hold exactly the shards
    // the metadata names: no rebuilt copy of an overwritten stripe and no
    // replaced copy is left behind
    let mut t = t;
    t.remount();
    let named = check(&t);
    t.unmount();
    let on_disk = t
        .shard_files()
        .into_iter()
        .filter(|r| r.member != 2)
        .count();
    assert_eq!(on_disk, named, "shard files on the members in service");
}
