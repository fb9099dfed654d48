//! Whole-file replicas of hot objects and FUSE passthrough: below FUSE
//! (an `Fs` over member directories) and through a real mount.

mod common;
mod harness;

use harness::{new_node, pattern, unlimited};
use shardfs::fs::{Fs, Kind, SetAttr, Tier, TierPolicy, REPLICA_DIR, ROOT_INO};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A pool of 6 member directories (4+2, 4 KiB shards) opened below FUSE,
/// with a pool policy that gives hot objects replicas, and passthrough on
/// (as the FUSE glue turns it on when the kernel agrees).
struct Pool {
    _tmp: tempfile::TempDir,
    dirs: Vec<PathBuf>,
    fs: Arc<Fs>,
}

impl Pool {
    fn new() -> Pool {
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..6).map(|i| tmp.path().join(format!("d{i}"))).collect();
        shardfs::pool::mkfs(
            &dirs,
            &shardfs::pool::MkfsOptions {
                k: 4,
                m: 2,
                shard_size: 4096,
                inline_max: 2048,
                ..Default::default()
            },
        )
        .unwrap();
        let fs = Self::open(&dirs);
        fs.set_tier_policy(
            None,
            TierPolicy {
                hot_replica: true,
                ..TierPolicy::default()
            },
        )
        .unwrap();
        Pool {
            _tmp: tmp,
            dirs,
            fs,
        }
    }

    fn open(dirs: &[PathBuf]) -> Arc<Fs> {
        let fs = shardfs::daemon::open_pool_emulated(dirs, &Default::default())
            .unwrap()
            .fs;
        fs.replicas.passthrough.store(true, Ordering::Relaxed);
        fs
    }

    /// Unmount and mount again (a clean stop).
    fn remount(self) -> Pool {
        self.fs.unmount_sync().unwrap();
        let Pool { _tmp, dirs, fs } = self;
        drop(fs);
        // the metadata replicas' commit threads let go of their stores
        // just after the drop: retry the open briefly
        let start = std::time::Instant::now();
        let fs = loop {
            match shardfs::daemon::open_pool_emulated(&dirs, &Default::default()) {
                Ok(o) => break o.fs,
                Err(e) if start.elapsed().as_secs() < 10 => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("remount: {e}"),
            }
        };
        fs.replicas.passthrough.store(true, Ordering::Relaxed);
        Pool { _tmp, dirs, fs }
    }

    fn tier(&self, force: Tier) {
        self.fs.tier_pass(&unlimited(), Some(force)).unwrap();
    }

    /// Every file under the members' replica directories.
    /// (after a metadata sync: a dropped replica's file is deleted once
    /// the record's removal is durable)
    fn replica_files(&self) -> Vec<PathBuf> {
        self.fs.sync_all().unwrap();
        let mut out = Vec::new();
        for d in &self.dirs {
            for e in std::fs::read_dir(d.join(REPLICA_DIR)).into_iter().flatten() {
                out.push(e.unwrap().path());
            }
        }
        out.sort();
        out
    }
}

fn create(fs: &Fs, name: &str, data: &[u8]) -> u64 {
    let b = match fs.lookup(ROOT_INO, b"bkt") {
        Ok(a) => a.ino,
        Err(_) => {
            fs.create_node(ROOT_INO, b"bkt", new_node(Kind::Dir, 0o755, b""))
                .unwrap()
                .ino
        }
    };
    let (a, fh) = fs
        .create_open(b, name.as_bytes(), new_node(Kind::File, 0o644, b""), true)
        .unwrap();
    fs.write(a.ino, 0, data).unwrap();
    fs.release(fh).unwrap();
    a.ino
}

fn read_all(mut f: &std::fs::File) -> Vec<u8> {
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

/// A hot object gets a replica with its exact bytes; a read-only open is
/// served from it; a write makes it stale, so opens go back to the
/// stripes until a pass copies the new data; a cold object loses it.
#[test]
fn replicas_follow_the_data_and_the_tier() {
    let p = Pool::new();
    let fs = &p.fs;
    let data = pattern(7, 0, 300_000);
    let ino = create(fs, "f", &data);
    let (fh, f) = fs.open_ex(ino, false).unwrap();
    assert!(f.is_none(), "no replica yet");
    fs.release(fh).unwrap();

    p.tier(Tier::Hot);
    let rec = fs
        .replica(ino)
        .unwrap()
        .expect("a hot object has a replica");
    assert_eq!(rec.size, data.len() as u64);
    assert_eq!(p.replica_files().len(), 1);
    let (fh, f) = fs.open_ex(ino, false).unwrap();
    assert_eq!(read_all(&f.expect("served by passthrough")), data);
    fs.release(fh).unwrap();
    assert_eq!(fs.replicas.passthrough_opens.load(Ordering::Relaxed), 1);

    // a write changes a stripe generation: the replica is stale at once
    let (wfh, none) = fs.open_ex(ino, true).unwrap();
    assert!(none.is_none(), "writers never get the replica");
    fs.write(ino, 1000, b"new bytes").unwrap();
    fs.release(wfh).unwrap();
    let mut want = data.clone();
    want[1000..1009].copy_from_slice(b"new bytes");
    let (fh, f) = fs.open_ex(ino, false).unwrap();
    assert!(f.is_none(), "a stale replica is never served");
    assert_eq!(fs.read(ino, 0, want.len() as u32).unwrap(), want);
    fs.release(fh).unwrap();

    // the next pass replaces it; the old file goes
    p.tier(Tier::Hot);
    let rec2 = fs.replica(ino).unwrap().expect("rebuilt");
    assert_ne!(rec2.name, rec.name);
    let files = p.replica_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let (fh, f) = fs.open_ex(ino, false).unwrap();
    assert_eq!(read_all(&f.expect("served")), want);
    fs.release(fh).unwrap();

    // a truncate through setattr is a data change too
    fs.setattr(
        ino,
        SetAttr {
            size: Some(5000),
            ..Default::default()
        },
    )
    .unwrap();
    let (fh, f) = fs.open_ex(ino, false).unwrap();
    assert!(f.is_none());
    fs.release(fh).unwrap();

    // cold: dropped, file deleted
    p.tier(Tier::Hot);
    assert!(fs.replica(ino).unwrap().is_some());
    p.tier(Tier::Cold);
    assert!(fs.replica(ino).unwrap().is_none());
    assert!(p.replica_files().is_empty());
}

/// While a passthrough open is live the object is read-only: writable
/// opens, writes and truncates fail with ETXTBSY, and the data never
/// changes under the kernel's direct reads. Other read-only opens share
/// the same file. Once the readers close, writers proceed.
#[test]
fn passthrough_readers_make_the_object_read_only() {
    let p = Pool::new();
    let fs = &p.fs;
    let data = pattern(3, 0, 100_000);
    let ino = create(fs, "f", &data);
    p.tier(Tier::Hot);
    let (r1, f1) = fs.open_ex(ino, false).unwrap();
    let f1 = f1.expect("passthrough");
    let busy = fs.open_ex(ino, true).unwrap_err();
    assert_eq!(busy.errno(), libc::ETXTBSY);
    let e = fs
        .setattr(
            ino,
            SetAttr {
                size: Some(0),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.errno(), libc::ETXTBSY);
    assert_eq!(fs.write(ino, 0, b"x").unwrap_err().errno(), libc::ETXTBSY);
    // metadata changes are fine
    fs.setattr(
        ino,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .unwrap();
    // a second reader gets the very same file (the kernel requires it),
    // even once the replica has been dropped
    fs.drop_replica(ino).unwrap();
    let (r2, f2) = fs.open_ex(ino, false).unwrap();
    let f2 = f2.expect("the inode is in passthrough mode");
    assert!(Arc::ptr_eq(&f1, &f2));
    assert_eq!(read_all(&f2), data);
    fs.release(r1).unwrap();
    assert_eq!(fs.open_ex(ino, true).unwrap_err().errno(), libc::ETXTBSY);
    fs.release(r2).unwrap();
    let (w, _) = fs.open_ex(ino, true).unwrap();
    fs.write(ino, 0, b"now writable").unwrap();
    fs.release(w).unwrap();
    assert_eq!(fs.read(ino, 0, 12).unwrap(), b"now writable");
}

/// A replica whose bytes rot is caught by its checksum before it serves
/// an open (with a verify interval of 0, at every open; by default by the
/// tier pass or an open once 600 s passed), dropped, and the read comes
/// from the stripes with the right bytes.
#[test]
fn a_rotten_replica_is_dropped_not_served() {
    let p = Pool::new();
    let fs = &p.fs;
    let data = pattern(9, 0, 200_000);
    let ino = create(fs, "f", &data);
    p.tier(Tier::Hot);
    let file = p.replica_files().pop().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[12345] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();

    fs.replicas.verify_secs.store(0, Ordering::Relaxed);
    let (fh, f) = fs.open_ex(ino, false).unwrap();
    assert!(
        f.is_none(),
        "a replica that fails its checksum is not served"
    );
    assert_eq!(fs.read(ino, 0, data.len() as u32).unwrap(), data);
    fs.release(fh).unwrap();
    assert_eq!(fs.replicas.corrupt.load(Ordering::Relaxed), 1);
    assert!(fs.replica(ino).unwrap().is_none());
    assert!(p.replica_files().is_empty());

    // the tier pass checks too: rot a replica that is being read, and the
    // pass finds it (one never opened waits for its next open)
    p.tier(Tier::Hot);
    let (fh, f) = fs.open_ex(ino, false).unwrap();
    assert!(f.is_some());
    fs.release(fh).unwrap();
    let file = p.replica_files().pop().unwrap();
    std::fs::write(&file, b"truncated").unwrap();
    p.tier(Tier::Hot); // verify interval 0: the pass re-checks, drops, rebuilds
    assert_eq!(fs.replicas.corrupt.load(Ordering::Relaxed), 2);
    let (fh, f) = fs.open_ex(ino, false).unwrap();
    assert_eq!(read_all(&f.expect("a rebuilt replica")), data);
    fs.release(fh).unwrap();
}

/// Rot found in the very file that live passthrough readers use: the
/// kernel allows no other file and no ordinary open beside them, so new
/// opens fail with EIO (never the rotten bytes through a new open) until
/// those readers close; then the new copy the pass made is served.
#[test]
fn rot_under_live_passthrough_readers_fails_new_opens_until_they_close() {
    let p = Pool::new();
    let fs = &p.fs;
    let data = pattern(13, 0, 80_000);
    let ino = create(fs, "f", &data);
    p.tier(Tier::Hot);
    let (r1, f1) = fs.open_ex(ino, false).unwrap();
    assert!(f1.is_some());
    let file = p.replica_files().pop().unwrap();
    let mut b = std::fs::read(&file).unwrap();
    b[100] ^= 1;
    std::fs::write(&file, &b).unwrap();
    fs.replicas.verify_secs.store(0, Ordering::Relaxed);
    // the pass checks the replica in use: rotten; dropped and copied anew
    p.tier(Tier::Hot);
    assert_eq!(fs.replicas.corrupt.load(Ordering::Relaxed), 1);
    let e = fs.open_ex(ino, false).unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    fs.release(r1).unwrap();
    let (r2, f2) = fs.open_ex(ino, false).unwrap();
    assert_eq!(read_all(&f2.expect("the new copy")), data);
    fs.release(r2).unwrap();
}

/// A crash between a replica's copy and its record (or between a record's
/// removal and its file's) leaves files no record names: the next mount
/// deletes them and keeps the named one. Unlinking an object deletes its
/// replica; a policy without replicas drops them.
#[test]
fn unnamed_replica_files_are_swept_and_unlink_drops_the_replica() {
    let p = Pool::new();
    let a = create(&p.fs, "a", &pattern(1, 0, 50_000));
    let b = create(&p.fs, "b", &pattern(2, 0, 50_000));
    p.tier(Tier::Hot);
    assert_eq!(p.replica_files().len(), 2);
    let dir = p.dirs[0].join(REPLICA_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("99-1234.tmp"), b"half a copy").unwrap();
    std::fs::write(dir.join(format!("{a:x}-dead")), b"an unnamed copy").unwrap();
    assert_eq!(p.replica_files().len(), 4);
    let p = p.remount();
    assert_eq!(p.replica_files().len(), 2, "{:?}", p.replica_files());
    let fs = &p.fs;
    for ino in [a, b] {
        let (fh, f) = fs.open_ex(ino, false).unwrap();
        assert!(f.is_some(), "named replicas survive a remount");
        fs.release(fh).unwrap();
    }
    let bkt = fs.lookup(ROOT_INO, b"bkt").unwrap().ino;
    fs.unlink(bkt, b"a").unwrap();
    fs.sync_all().unwrap();
    assert!(fs.replica(a).unwrap().is_none());
    assert_eq!(p.replica_files().len(), 1);
    // replicas off in the policy: the next pass drops the rest
    fs.set_tier_policy(None, TierPolicy::default()).unwrap();
    fs.set_tier_policy(
        Some(b"bkt"),
        TierPolicy {
            demote_after_secs: 1_000_000,
            promote_reads: 1e9,
            ..TierPolicy::default()
        },
    )
    .unwrap();
    p.tier(Tier::Hot);
    assert!(fs.replica(b).unwrap().is_none());
    assert!(p.replica_files().is_empty());
}

/// Temperatures survive a clean remount: an object read often is still
/// hot afterwards (and keeps its replica), one never read has no entry.
#[test]
fn temperatures_survive_a_remount() {
    let p = Pool::new();
    let hot = create(&p.fs, "hot", &pattern(4, 0, 40_000));
    let quiet = create(&p.fs, "quiet", &pattern(5, 0, 40_000));
    for _ in 0..6 {
        p.fs.read(hot, 0, 100).unwrap();
    }
    p.fs.tier_pass(&unlimited(), None).unwrap();
    assert!(
        p.fs.replica(hot).unwrap().is_some(),
        "6 reads make it hot (4 needed)"
    );
    p.fs.tier.forget(quiet);
    let p = p.remount();
    let (score, idle) = p.fs.tier.temperature(hot).expect("saved and restored");
    assert!(
        score > 6.9 && score <= 7.0,
        "one write and six reads: {score}"
    );
    assert!(idle < 30.0, "{idle}");
    assert!(p.fs.tier.temperature(quiet).is_none());
    let c = p.fs.tier_pass(&unlimited(), None).unwrap();
    assert_eq!(c.hot_objects, 1, "{c:?}");
    assert!(p.fs.replica(hot).unwrap().is_some());
}

/// A policy stored before `hot_replica` existed still decodes.
#[test]
fn policies_stored_by_the_previous_version_decode() {
    let p = Pool::new();
    #[derive(serde::Serialize)]
    struct V1 {
        hot_class: Option<String>,
        cold_class: Option<String>,
        promote_reads: f64,
        demote_after_secs: u64,
    }
    let old = bincode::serialize(&V1 {
        hot_class: None,
        cold_class: None,
        promote_reads: 7.0,
        demote_after_secs: 99,
    })
    .unwrap();
    let mut key = b"P".to_vec();
    key.extend_from_slice(&0u64.to_be_bytes());
    p.fs.meta
        .apply(vec![shardfs::meta::Op::Put(key, old)], vec![])
        .unwrap();
    let pol = p.fs.tier_policy(0).unwrap();
    assert_eq!(pol.promote_reads, 7.0);
    assert_eq!(pol.demote_after_secs, 99);
    assert!(!pol.hot_replica);
}

mod through_fuse {
    use super::common::*;

    fn fuse_reads(t: &TestMount) -> u64 {
        let (ok, out, err) = t.ctl(&["metrics"]);
        assert!(ok, "{err}");
        out.lines()
            .find(|l| l.starts_with("shardfs_fuse_requests_total{op=\"read\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .expect("read counter") as u64
    }

    fn wait_replicas(t: &TestMount, n: u64) -> serde_json::Value {
        let start = std::time::Instant::now();
        loop {
            let v = t.json(&["tier", "status"]);
            if v["replicas"]["replicas"] == n {
                return v;
            }
            assert!(start.elapsed().as_secs() < 60, "{v}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn drop_caches() {
        std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    }

    /// A pool of 6 mounted with `mount_args`, a bucket `bkt`, and
    /// `shardctl tier policy POLICY...` set (after `bkt` exists).
    fn pool_with_policy(mount_args: &[&str], policy: &[&str]) -> TestMount {
        let mut t = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
        if !mount_args.is_empty() {
            t.unmount();
            t.mount_args = mount_args.iter().map(|a| a.to_string()).collect();
            t.mount();
        }
        std::fs::create_dir(t.p("bkt")).unwrap();
        let mut args = vec!["tier", "policy"];
        args.extend_from_slice(policy);
        let (ok, _, err) = t.ctl(&args);
        assert!(ok, "{err}");
        t
    }

    /// `tier start --all-hot`, then wait for `n` replicas.
    fn all_hot(t: &TestMount, n: u64) -> serde_json::Value {
        let (ok, _, err) = t.ctl(&["tier", "start", "--all-hot"]);
        assert!(ok, "{err}");
        wait_replicas(t, n)
    }

    /// Through a real mount: hot files get replicas, and reading them
    /// sends no read request to the daemon (the kernel reads the replica);
    /// a writer gets ETXTBSY while a reader holds the file open; after
    /// the write the file is read from the stripes with the new bytes;
    /// `tier status` and its JSON show the replicas.
    #[test]
    fn hot_files_are_read_by_the_kernel() {
        let t = pool_with_policy(&[], &["--hot-replica"]);
        let (ok, out, err) = t.ctl(&["tier", "status"]);
        assert!(ok && out.contains("+ replica"), "{out}{err}");
        let mut files = Vec::new();
        for i in 0..4u64 {
            let d = pattern(i, 100_000 + 10_000 * i as usize);
            std::fs::write(t.p(&format!("bkt/f{i}")), &d).unwrap();
            files.push((format!("bkt/f{i}"), d));
        }
        let v = all_hot(&t, 4);
        assert_eq!(v["replicas"]["passthrough"], true, "{v}");
        drop_caches();
        let before = fuse_reads(&t);
        for (p, d) in &files {
            assert!(std::fs::read(t.p(p)).unwrap() == *d, "{p}");
        }
        assert_eq!(
            fuse_reads(&t),
            before,
            "passthrough reads must not reach the daemon"
        );
        let v = t.json(&["tier", "status"]);
        assert!(
            v["replicas"]["passthrough_opens"].as_u64().unwrap() >= 4,
            "{v}"
        );

        // a reader holds f0 open: writers wait
        let reader = std::fs::File::open(t.p("bkt/f0")).unwrap();
        let w = std::fs::OpenOptions::new().append(true).open(t.p("bkt/f0"));
        assert_eq!(errno(w), libc::ETXTBSY);
        let tr = std::fs::OpenOptions::new()
            .write(true)
            .open(t.p("bkt/f1"))
            .map(|_| ());
        assert!(tr.is_ok(), "other files are not affected");
        drop(reader);
        let mut f0 = files[0].1.clone();
        {
            use std::io::Write;
            let mut w = std::fs::OpenOptions::new()
                .append(true)
                .open(t.p("bkt/f0"))
                .unwrap();
            w.write_all(b"appended").unwrap();
        }
        f0.extend_from_slice(b"appended");
        drop_caches();
        let before = fuse_reads(&t);
        assert!(std::fs::read(t.p("bkt/f0")).unwrap() == f0);
        assert!(
            fuse_reads(&t) > before,
            "a stale replica is not served: the daemon reads the stripes"
        );
        let (ok, out, _) = t.ctl(&["tier", "status"]);
        assert!(ok && out.contains("passthrough on"), "{out}");
    }

    /// Without `tier start`: reads make a file hot, the periodic tier pass
    /// (`--tier-interval-secs 1`) gives it a replica, and the next open is
    /// served by passthrough.
    #[test]
    fn reads_alone_make_a_file_hot_and_passthrough_follows() {
        let t = pool_with_policy(
            &["--tier-interval-secs", "1"],
            &["bkt", "--hot-replica", "--promote-reads", "6"],
        );
        let d = pattern(11, 150_000);
        std::fs::write(t.p("bkt/hot"), &d).unwrap();
        std::fs::write(t.p("bkt/cold"), &d).unwrap();
        for _ in 0..8 {
            drop_caches();
            assert!(std::fs::read(t.p("bkt/hot")).unwrap() == d);
        }
        let v = wait_replicas(&t, 1);
        // (the last reads above may already have been served by it)
        let opens = v["replicas"]["passthrough_opens"].as_u64().unwrap();
        drop_caches();
        let before = fuse_reads(&t);
        assert!(std::fs::read(t.p("bkt/hot")).unwrap() == d);
        assert!(std::fs::read(t.p("bkt/cold")).unwrap() == d);
        let v = t.json(&["tier", "status"]);
        assert_eq!(
            v["replicas"]["passthrough_opens"].as_u64().unwrap(),
            opens + 1,
            "only the hot file: {v}"
        );
        assert!(
            fuse_reads(&t) > before,
            "the cold file is read by the daemon"
        );
    }

    /// With `--replica-verify-secs 0` every passthrough open checks the
    /// replica first: a replica rotted on its disk is caught, dropped, and
    /// the file is read from the stripes with the right bytes.
    #[test]
    fn a_rotten_replica_is_caught_at_open_through_fuse() {
        let t = pool_with_policy(&["--replica-verify-secs", "0"], &["--hot-replica"]);
        let d = pattern(21, 120_000);
        std::fs::write(t.p("bkt/f"), &d).unwrap();
        all_hot(&t, 1);
        // a good replica is checked and served
        drop_caches();
        assert!(std::fs::read(t.p("bkt/f")).unwrap() == d);
        let v = t.json(&["tier", "status"]);
        assert_eq!(v["replicas"]["passthrough_opens"], 1, "{v}");
        // rot it on the member
        let file = t
            .members
            .iter()
            .flat_map(|m| std::fs::read_dir(m.join("replicas")).into_iter().flatten())
            .map(|e| e.unwrap().path())
            .next()
            .expect("a replica file");
        let mut b = std::fs::read(&file).unwrap();
        b[70_000] ^= 0x10;
        std::fs::write(&file, &b).unwrap();
        drop_caches();
        assert!(
            std::fs::read(t.p("bkt/f")).unwrap() == d,
            "rot is never served"
        );
        let v = t.json(&["tier", "status"]);
        assert_eq!(v["replicas"]["corrupt"], 1, "{v}");
        assert_eq!(v["replicas"]["passthrough_opens"], 1, "{v}");
        assert_eq!(v["replicas"]["replicas"], 0, "{v}");
        let (ok, out, _) = t.ctl(&["metrics"]);
        assert!(
            ok && out.contains("shardfs_replica_events_total{event=\"corrupt\"} 1"),
            "{out}"
        );
    }

    /// Through the kernel, concurrently: four readers open, read and close
    /// a hot file in a loop while a writer appends to it whenever no reader
    /// holds it (retrying while the daemon still counts a closing reader:
    /// ETXTBSY) and the tier pass rebuilds its replica every second. The
    /// file thus keeps switching between passthrough and ordinary opens,
    /// with readers overlapping across the switch. Every open and read
    /// must succeed with the current bytes: the kernel fails an open with
    /// EIO if an inode's opens mix the two modes.
    #[test]
    fn readers_and_a_writer_across_mode_switches() {
        use std::sync::{Arc, RwLock};
        use std::time::{Duration, Instant};
        let t = pool_with_policy(
            &["--tier-interval-secs", "1"],
            &["--hot-replica", "--promote-reads", "1"],
        );
        let first = pattern(31, 200_000);
        std::fs::write(t.p("bkt/f"), &first).unwrap();
        all_hot(&t, 1);
        let path = t.p("bkt/f");
        let want = Arc::new(RwLock::new(first));
        let stop = Instant::now() + Duration::from_secs(8);
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (want, path) = (want.clone(), path.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < stop {
                        let w = want.read().unwrap();
                        let got =
                            std::fs::read(&path).unwrap_or_else(|e| panic!("read failed: {e}"));
                        assert!(got == *w, "read {} bytes, want {}", got.len(), w.len());
                        drop(w);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut appends = 0;
        let mut busy = 0;
        while Instant::now() < stop {
            std::thread::sleep(Duration::from_millis(150));
            let mut w = want.write().unwrap();
            let chunk = pattern(100 + appends, 3000);
            let give_up = Instant::now() + Duration::from_secs(5);
            loop {
                match std::fs::OpenOptions::new().append(true).open(&path) {
                    Ok(mut f) => {
                        use std::io::Write;
                        f.write_all(&chunk).unwrap();
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                        busy += 1;
                        assert!(Instant::now() < give_up, "writer waited 5 s");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("append open: {e}"),
                }
            }
            w.extend_from_slice(&chunk);
            appends += 1;
        }
        let reads: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
        let v = t.json(&["tier", "status"]);
        let pt = v["replicas"]["passthrough_opens"].as_u64().unwrap();
        assert!(
            appends >= 10 && reads > 100,
            "{appends} appends, {reads} reads"
        );
        assert!(pt > 0, "some opens were passthrough: {v}");
        assert!(pt < reads, "some were ordinary: {pt} of {reads}");
        assert!(std::fs::read(&path).unwrap() == *want.read().unwrap());
        eprintln!("{reads} reads ({pt} passthrough), {appends} appends, {busy} ETXTBSY retries");
    }

    /// A hot file mapped with mmap is read through the replica. The kernel
    /// maps the backing file itself, so once the descriptor is closed the
    /// daemon sees the release and writers may go ahead: the mapping is
    /// then a snapshot (the replica is never changed in place, and no page
    /// of it goes away), while reads see the new bytes. Documented in
    /// OPERATIONS.md and review 0006.
    #[test]
    fn mmap_of_a_hot_file_reads_the_replica_and_is_a_snapshot_after_close() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let t = pool_with_policy(&[], &["--hot-replica"]);
        let d = pattern(41, 300_000);
        std::fs::write(t.p("bkt/f"), &d).unwrap();
        all_hot(&t, 1);
        let f = std::fs::File::open(t.p("bkt/f")).unwrap();
        // SAFETY: a read-only shared mapping of a file we opened, used only
        // within its length and unmapped below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                d.len(),
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        // SAFETY: the mapping is d.len() bytes long and readable until the
        // munmap below.
        let mapped = || unsafe { std::slice::from_raw_parts(map as *const u8, d.len()) }.to_vec();
        assert!(mapped() == d, "mapped bytes differ");
        let v = t.json(&["tier", "status"]);
        assert_eq!(v["replicas"]["passthrough_opens"], 1, "{v}");
        // while the descriptor is open, writers wait
        let w = std::fs::OpenOptions::new().append(true).open(t.p("bkt/f"));
        assert_eq!(errno(w), libc::ETXTBSY);
        drop(f);
        let start = std::time::Instant::now();
        let mut w = loop {
            match std::fs::OpenOptions::new().write(true).open(t.p("bkt/f")) {
                Ok(w) => break w,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    assert!(start.elapsed().as_secs() < 5, "still busy after close");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        };
        w.write_all(b"overwritten").unwrap();
        drop(w);
        let mut now = d.clone();
        now[..11].copy_from_slice(b"overwritten");
        assert!(
            std::fs::read(t.p("bkt/f")).unwrap() == now,
            "reads see the write"
        );
        assert!(mapped() == d, "the mapping is a snapshot of the replica");
        // SAFETY: unmapping the mapping made above, not used afterwards.
        assert_eq!(unsafe { libc::munmap(map, d.len()) }, 0);
    }

    /// With `--passthrough off` replicas are kept but every read goes
    /// through the daemon.
    #[test]
    fn passthrough_off_reads_through_the_daemon() {
        let t = pool_with_policy(&["--passthrough", "off"], &["--hot-replica"]);
        let d = pattern(5, 200_000);
        std::fs::write(t.p("bkt/f"), &d).unwrap();
        let v = all_hot(&t, 1);
        assert_eq!(v["replicas"]["passthrough"], false, "{v}");
        drop_caches();
        let before = fuse_reads(&t);
        assert!(std::fs::read(t.p("bkt/f")).unwrap() == d);
        assert!(fuse_reads(&t) > before);
        let (ok, _, err) = t.ctl(&["tier", "policy", "--hot-replica", "--promote-reads", "0"]);
        assert!(!ok && err.contains("promote-reads"), "{err}");
    }
}

/// The replica model check: random writes, truncates, tier passes, held
/// passthrough opens, rotten replicas, unlinks and remounts over a pool of
/// member directories, against a model that is just the bytes of each
/// file. After every step, every file reads as the model says, and every
/// open the filesystem serves by passthrough hands out a file with exactly
/// the model's bytes; while a passthrough open is held, writes and
/// truncates fail with ETXTBSY and change nothing.
mod model {
    use super::*;
    use proptest::prelude::*;

    const FILES: usize = 3;

    #[derive(Debug, Clone)]
    enum Step {
        Write(usize, u32, u16, u8),
        Truncate(usize, u32),
        Tier(bool),
        /// open read-only and keep the handle (passthrough if served)
        Hold(usize),
        /// close the oldest held handle
        Close,
        /// flip a byte in a replica file (if any) and check at every open
        Rot(usize),
        Unlink(usize),
        Remount,
    }

    fn step() -> impl Strategy<Value = Step> {
        let f = 0..FILES;
        prop_oneof![
            4 => (f.clone(), 0u32..60_000, 1u16..20_000, any::<u8>())
                .prop_map(|(f, o, l, s)| Step::Write(f, o, l, s)),
            1 => (f.clone(), 0u32..70_000).prop_map(|(f, n)| Step::Truncate(f, n)),
            3 => any::<bool>().prop_map(Step::Tier),
            3 => f.clone().prop_map(Step::Hold),
            2 => Just(Step::Close),
            1 => f.clone().prop_map(Step::Rot),
            1 => f.clone().prop_map(Step::Unlink),
            1 => Just(Step::Remount),
        ]
    }

    struct Run {
        p: Option<Pool>,
        model: Vec<Option<Vec<u8>>>,
        inos: Vec<u64>,
        held: Vec<(u64, usize, Option<Arc<std::fs::File>>)>,
        served: u64,
    }

    impl Run {
        fn fs(&self) -> &Fs {
            &self.p.as_ref().unwrap().fs
        }

        fn bucket(&self) -> u64 {
            self.fs().lookup(ROOT_INO, b"bkt").unwrap().ino
        }

        fn is_held(&self, f: usize) -> bool {
            self.held.iter().any(|(_, h, pt)| *h == f && pt.is_some())
        }

        fn check(&mut self) {
            for f in 0..FILES {
                let Some(want) = self.model[f].clone() else {
                    continue;
                };
                let ino = self.inos[f];
                let got = self.fs().read(ino, 0, want.len() as u32 + 10).unwrap();
                assert!(got == want, "file {f}: read differs from the model");
                let (fh, pt) = self.fs().open_ex(ino, false).unwrap();
                // the kernel's rule: an inode's opens are all passthrough
                // (one file) or all ordinary
                let held_pt = self.held.iter().any(|(_, h, p)| *h == f && p.is_some());
                let held_plain = self.held.iter().any(|(_, h, p)| *h == f && p.is_none());
                assert!(!(held_pt && held_plain), "file {f}: mixed open modes");
                if held_pt {
                    assert!(
                        pt.is_some(),
                        "file {f}: an ordinary open beside passthrough ones"
                    );
                }
                if held_plain {
                    assert!(
                        pt.is_none(),
                        "file {f}: a passthrough open beside ordinary ones"
                    );
                }
                if let Some(file) = pt {
                    self.served += 1;
                    assert!(read_all(&file) == want, "file {f}: the replica differs");
                }
                self.fs().release(fh).unwrap();
            }
            for (_, f, pt) in &self.held {
                if let (Some(file), Some(want)) = (pt, &self.model[*f]) {
                    assert!(read_all(file) == *want, "held passthrough file {f} changed");
                }
            }
        }

        fn apply(&mut self, s: &Step) {
            match *s {
                Step::Write(f, off, len, seed) => {
                    let Some(m) = self.model[f].as_mut() else {
                        return;
                    };
                    let data = pattern(seed, off as u64, len as usize);
                    let ino = self.inos[f];
                    let fs = &self.p.as_ref().unwrap().fs;
                    match fs.open_ex(ino, true) {
                        Ok((fh, _)) => {
                            fs.write(ino, off as u64, &data).unwrap();
                            fs.release(fh).unwrap();
                            let end = off as usize + data.len();
                            if m.len() < end {
                                m.resize(end, 0);
                            }
                            m[off as usize..end].copy_from_slice(&data);
                        }
                        Err(e) => {
                            assert_eq!(e.errno(), libc::ETXTBSY);
                            assert!(self.is_held(f), "ETXTBSY without a passthrough reader");
                        }
                    }
                }
                Step::Truncate(f, n) => {
                    if self.model[f].is_none() {
                        return;
                    }
                    let r = self.fs().setattr(
                        self.inos[f],
                        SetAttr {
                            size: Some(n as u64),
                            ..Default::default()
                        },
                    );
                    match r {
                        Ok(_) => self.model[f].as_mut().unwrap().resize(n as usize, 0),
                        Err(e) => {
                            assert_eq!(e.errno(), libc::ETXTBSY);
                            assert!(self.is_held(f));
                        }
                    }
                }
                Step::Tier(hot) => {
                    self.p
                        .as_ref()
                        .unwrap()
                        .tier(if hot { Tier::Hot } else { Tier::Cold })
                }
                Step::Hold(f) => {
                    if self.model[f].is_some() {
                        let ino = self.inos[f];
                        let (fh, pt) = self.fs().open_ex(ino, false).unwrap();
                        self.held.push((fh, f, pt));
                    }
                }
                Step::Close => {
                    if !self.held.is_empty() {
                        let (fh, _, _) = self.held.remove(0);
                        self.fs().release(fh).unwrap();
                    }
                }
                Step::Rot(f) => {
                    if let Some(rec) = self.fs().replica(self.inos[f]).unwrap() {
                        if let Some(path) = self.fs().replica_path(&rec).map(|p| p.host_path()) {
                            if self.is_held(f) {
                                return; // the kernel has it open: not a rot we can model
                            }
                            let mut b = std::fs::read(&path).unwrap();
                            if !b.is_empty() {
                                let i = b.len() / 2;
                                b[i] ^= 1;
                                std::fs::write(&path, &b).unwrap();
                                self.fs().replicas.verify_secs.store(0, Ordering::Relaxed);
                            }
                        }
                    }
                }
                Step::Unlink(f) => {
                    if self.model[f].is_none() || self.held.iter().any(|(_, h, _)| *h == f) {
                        return;
                    }
                    let b = self.bucket();
                    self.fs().unlink(b, format!("f{f}").as_bytes()).unwrap();
                    // recreate it empty-ish so later steps have a file
                    let data = pattern(f as u8, 0, 9000);
                    self.inos[f] = create(self.fs(), &format!("f{f}"), &data);
                    self.model[f] = Some(data);
                }
                Step::Remount => {
                    for (fh, _, _) in self.held.drain(..) {
                        self.p.as_ref().unwrap().fs.release(fh).unwrap();
                    }
                    let p = self.p.take().unwrap();
                    self.p = Some(p.remount());
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("SHARDFS_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn replicas_and_passthrough_agree_with_the_model(steps in prop::collection::vec(step(), 10..40)) {
            let p = Pool::new();
            let mut inos = Vec::new();
            let mut model = Vec::new();
            for f in 0..FILES {
                let data = pattern(f as u8 + 1, 0, 20_000 + 15_000 * f);
                inos.push(create(&p.fs, &format!("f{f}"), &data));
                model.push(Some(data));
            }
            let mut run = Run { p: Some(p), model, inos, held: Vec::new(), served: 0 };
            for s in &steps {
                run.apply(s);
                run.check();
            }
            for (fh, _, _) in run.held.drain(..) {
                run.p.as_ref().unwrap().fs.release(fh).unwrap();
            }
        }
    }

    /// The generator reaches passthrough: a fixed sequence serves opens
    /// from replicas, refuses a writer, and catches a rotten replica.
    #[test]
    fn the_model_check_exercises_passthrough() {
        let p = Pool::new();
        let data = pattern(1, 0, 30_000);
        let ino = create(&p.fs, "f0", &data);
        let mut run = Run {
            p: Some(p),
            model: vec![Some(data), None, None],
            inos: vec![ino, 0, 0],
            held: Vec::new(),
            served: 0,
        };
        for s in [
            Step::Tier(true),
            Step::Hold(0),
            Step::Write(0, 10, 100, 3),
            Step::Truncate(0, 5),
            Step::Close,
            Step::Write(0, 10, 100, 3),
            Step::Tier(true),
            Step::Rot(0),
            Step::Tier(true),
        ] {
            run.apply(&s);
            run.check();
        }
        assert_eq!(run.fs().replicas.corrupt.load(Ordering::Relaxed), 1);
        for s in [
            Step::Remount,
            Step::Tier(true),
            Step::Hold(0),
            Step::Hold(0),
        ] {
            run.apply(&s);
            run.check();
        }
        assert!(run.held.iter().all(|(_, _, pt)| pt.is_some()));
        assert!(run.served >= 3, "served {}", run.served);
    }
}
