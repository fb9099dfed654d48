//! Losing members, flipped bytes, crashes: data comes back byte-exact or
//! the read fails with EIO, never with wrong bytes.

mod common;
use common::*;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const SMALL: &[&str] = &["--shard-size", "4096", "--inline-max", "2048"];

/// Files that cover the layouts: empty, inline, one partial stripe, many
/// stripes with a partial tail, sparse.
fn write_corpus(t: &TestMount) -> Vec<(PathBuf, Vec<u8>)> {
    fs::create_dir_all(t.p("bkt/dir")).unwrap();
    let mut out = Vec::new();
    for (i, n) in [0usize, 100, 2048, 5000, 16384, 70_000, 300_001]
        .iter()
        .enumerate()
    {
        let p = t.p(&format!("bkt/dir/f{i}"));
        let d = pattern(i as u64 + 100, *n);
        fs::write(&p, &d).unwrap();
        out.push((p, d));
    }
    let p = t.p("bkt/sparse");
    let mut f = File::create(&p).unwrap();
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(100_000)).unwrap();
    f.write_all(&pattern(9, 20_000)).unwrap();
    drop(f);
    let mut d = vec![0u8; 100_000];
    d.extend(pattern(9, 20_000));
    out.push((p, d));
    out
}

fn read_all(p: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(p)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// Take a member away while mounted: `removed` renames the directory
/// away; otherwise it is made unreadable by putting a plain file in its
/// place (every access below it fails with ENOTDIR).
fn lose(member: &Path, removed: bool) -> PathBuf {
    let away = member.with_extension("lost");
    fs::rename(member, &away).unwrap();
    if !removed {
        fs::write(member, b"not a directory").unwrap();
    }
    away
}

fn restore(member: &Path, away: &Path) {
    if member.is_file() {
        fs::remove_file(member).unwrap();
    }
    fs::rename(away, member).unwrap();
}

fn lose_every_pair(mkfs_args: &[&str], extra: &[usize]) {
    let t = TestMount::new(6, mkfs_args);
    let mut corpus = write_corpus(&t);
    for (i, &n) in extra.iter().enumerate() {
        let p = t.p(&format!("bkt/extra{i}"));
        let d = pattern(500 + i as u64, n);
        fs::write(&p, &d).unwrap();
        corpus.push((p, d));
    }
    let mut ways = 0;
    for a in 0..6 {
        for b in a + 1..6 {
            // alternate: member a removed, member b unreadable, and the reverse
            let ra = (a + b) % 2 == 0;
            let away_a = lose(&t.members[a], ra);
            let away_b = lose(&t.members[b], !ra);
            for (p, want) in &corpus {
                let got =
                    read_all(p).unwrap_or_else(|e| panic!("lost {a},{b}: {}: {e}", p.display()));
                assert!(got == *want, "lost {a},{b}: {} differs", p.display());
            }
            restore(&t.members[a], &away_a);
            restore(&t.members[b], &away_b);
            ways += 1;
        }
    }
    assert_eq!(ways, 15);
    let (ok, out, _) = t.ctl(&["status", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["reconstructions"].as_u64().unwrap() > 0,
        "parity was used"
    );
}

#[test]
fn every_way_to_lose_two_of_six_members_reads_back_byte_exact() {
    // small stripes: many stripes and shard boundaries per file
    lose_every_pair(SMALL, &[]);
}

#[test]
fn every_way_to_lose_two_members_of_a_default_pool_reads_back_byte_exact() {
    // default layout (1 MiB shards, 4 MiB stripes, 64 KiB inline), with
    // files of several stripes and a partial tail
    lose_every_pair(&[], &[9 << 20, (4 << 20) + 12_345, 100_000]);
}

#[test]
fn losing_three_members_gives_eio_never_wrong_bytes() {
    let t = TestMount::new(6, SMALL);
    let corpus = write_corpus(&t);
    let mut eio = 0;
    for lost in [[0, 1, 2], [3, 4, 5], [0, 2, 4], [1, 3, 5]] {
        let aways: Vec<PathBuf> = lost.iter().map(|&i| lose(&t.members[i], true)).collect();
        for (p, want) in &corpus {
            match read_all(p) {
                Ok(got) => assert!(
                    got == *want,
                    "{lost:?}: {} returned wrong bytes",
                    p.display()
                ),
                Err(e) => {
                    assert_eq!(
                        e.raw_os_error(),
                        Some(libc::EIO),
                        "{lost:?}: {}: {e}",
                        p.display()
                    );
                    eio += 1;
                }
            }
        }
        for (&i, away) in lost.iter().zip(&aways) {
            restore(&t.members[i], away);
        }
    }
    assert!(eio > 0, "striped files must fail with 3 members lost");
    // with the members back, everything reads again
    for (p, want) in &corpus {
        assert!(read_all(p).unwrap() == *want);
    }
}

#[test]
fn remount_with_two_members_deleted_reads_everything() {
    for lost in [[0usize, 1], [1, 2], [4, 5]] {
        let mut t = TestMount::new(6, SMALL);
        let corpus = write_corpus(&t);
        t.unmount();
        for &i in &lost {
            fs::remove_dir_all(&t.members[i]).unwrap();
        }
        t.mount();
        for (p, want) in &corpus {
            assert!(
                read_all(p).unwrap() == *want,
                "lost {lost:?}: {}",
                p.display()
            );
        }
        // with only k members left no stripe could keep any redundancy:
        // data writes are refused with EROFS, reads go on
        let e = fs::write(t.p("bkt/after"), pattern(5, 50_000)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        assert!(
            t.log_text().contains("below the write quorum"),
            "{}",
            t.log_text()
        );
        let (ok, out, _) = t.ctl(&["status"]);
        assert!(ok);
        assert!(out.contains("missing"), "{out}");
    }
}

#[test]
fn with_one_member_lost_writes_go_on_degraded() {
    let mut t = TestMount::new(6, SMALL);
    let corpus = write_corpus(&t);
    t.unmount();
    fs::remove_dir_all(&t.members[3]).unwrap();
    t.mount();
    fs::write(t.p("bkt/after"), pattern(5, 50_000)).unwrap();
    t.remount();
    assert_eq!(read_all(&t.p("bkt/after")).unwrap(), pattern(5, 50_000));
    for (p, want) in &corpus {
        assert!(read_all(p).unwrap() == *want);
    }
    let (ok, out, _) = t.ctl(&["status", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["degraded_stripes"].as_u64().unwrap() > 0);
    assert_eq!(v["members"][3]["state"], "missing");
}

#[test]
fn a_flipped_byte_in_any_shard_file_is_detected_and_read_around() {
    let t = TestMount::new(6, SMALL);
    fs::create_dir(t.p("bkt")).unwrap();
    let want = pattern(3, 100_000);
    fs::write(t.p("bkt/f"), &want).unwrap();
    let shards = t.shard_files();
    assert_eq!(shards.len(), 100_000usize.div_ceil(16384) * 6);
    for (n, shard) in shards.iter().enumerate() {
        let orig = shard.read();
        let pos = (n * 7919) % orig.len(); // header or payload
        shard.flip(pos, 0x40);
        assert!(
            read_all(&t.p("bkt/f")).unwrap() == want,
            "flip in {shard:?}"
        );
        shard.write(&orig);
    }
    // two flipped shards in every stripe at once (m = 2)
    let mut by_stripe: std::collections::BTreeMap<_, Vec<ShardRec>> = Default::default();
    for s in &shards {
        by_stripe.entry(s.stripe_key()).or_default().push(s.clone());
    }
    for recs in by_stripe.values() {
        for f in recs.iter().take(2) {
            f.flip(f.len as usize - 1, 1);
        }
    }
    assert!(read_all(&t.p("bkt/f")).unwrap() == want);
    // locate reports the bad shards
    let (ok, out, _) = t.ctl(&["locate", "bkt/f"]);
    assert!(ok);
    assert_eq!(out.matches("BAD").count(), by_stripe.len() * 2, "{out}");
}

#[test]
fn kill9_keeps_every_closed_or_fsynced_file_and_writes_no_garbage() {
    let mut t = TestMount::new(6, SMALL);
    fs::create_dir(t.p("bkt")).unwrap();
    let mnt = t.mnt.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    // writer: files of varied sizes; records each one once close returned
    let writer = std::thread::spawn(move || {
        let mut done: Vec<(String, usize)> = Vec::new();
        let mut partial: Vec<(String, usize)> = Vec::new();
        let mut i = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let name = format!("bkt/w{i}");
            let n = [10usize, 3000, 20_000, 100_000, 250_000][(i % 5) as usize];
            let data = pattern(i, n);
            let res = (|| -> std::io::Result<()> {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(mnt.join(&name))?;
                partial.push((name.clone(), n));
                for chunk in data.chunks(7000) {
                    f.write_all(chunk)?;
                }
                if i.is_multiple_of(3) {
                    f.sync_all()?;
                }
                // close: acknowledged only if it succeeds (dropping a File
                // ignores the error, which the kill can cause)
                let fd = std::os::unix::io::IntoRawFd::into_raw_fd(f);
                // SAFETY: we own fd and close it once.
                if unsafe { libc::close(fd) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })();
            if res.is_err() {
                break;
            }
            partial.pop();
            done.push((name, n));
            i += 1;
        }
        (done, partial)
    });
    std::thread::sleep(std::time::Duration::from_millis(2500));
    t.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (done, partial) = writer.join().unwrap();
    assert!(done.len() > 5, "writer made progress: {}", done.len());
    t.mount();
    for (name, n) in &done {
        let i: u64 = name[5..].parse().unwrap();
        let got = read_all(&t.p(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == pattern(i, *n), "{name}: closed file not byte-exact");
    }
    // a file being written at the kill: absent, or a prefix of what was
    // written (never a zero byte, since the pattern has none)
    for (name, n) in &partial {
        let i: u64 = name[5..].parse().unwrap();
        if let Ok(got) = read_all(&t.p(name)) {
            let want = pattern(i, *n);
            assert!(got.len() <= *n);
            assert!(
                got == want[..got.len()],
                "{name}: holds bytes never written"
            );
        }
    }
    // everything deleted: no shard leaks (orphans from the crash reclaimed)
    fs::remove_dir_all(t.p("bkt")).unwrap();
    t.remount();
    assert_eq!(t.shard_files(), vec![], "no leaked shards");
}

#[test]
fn metadata_survives_losing_two_metadata_members() {
    // members 0..=2 hold the metadata replicas; lose 0 and 1 while mounted,
    // keep working, then remount without them
    let mut t = TestMount::new(6, SMALL);
    let corpus = write_corpus(&t);
    let a0 = lose(&t.members[0], true);
    let a1 = lose(&t.members[1], true);
    fs::write(t.p("bkt/new"), b"written while degraded").unwrap();
    fs::create_dir(t.p("bkt/newdir")).unwrap();
    t.unmount();
    // members 0 and 1 come back with stale metadata: the newest replica wins
    restore(&t.members[0], &a0);
    restore(&t.members[1], &a1);
    t.mount();
    assert_eq!(fs::read(t.p("bkt/new")).unwrap(), b"written while degraded");
    assert!(t.p("bkt/newdir").is_dir());
    for (p, want) in &corpus {
        assert!(read_all(p).unwrap() == *want);
    }
    // now lose 0 and 1 for good: replica 2 (refreshed) carries on
    t.unmount();
    fs::remove_dir_all(&t.members[0]).unwrap();
    fs::remove_dir_all(&t.members[1]).unwrap();
    t.mount();
    assert_eq!(fs::read(t.p("bkt/new")).unwrap(), b"written while degraded");
}

#[test]
fn clean_unmount_skips_the_sweep_and_a_crash_runs_it() {
    let mut t = TestMount::new(6, SMALL);
    fs::create_dir(t.p("bkt")).unwrap();
    fs::write(t.p("bkt/f"), pattern(1, 50_000)).unwrap();
    // a stray shard file no metadata points to
    let stray = t.members[2].join("shards/00/ffff.0.1.0");
    fs::write(&stray, b"stray").unwrap();
    t.remount();
    assert!(t.log_text().contains("no sweep needed"));
    assert!(stray.exists(), "clean mount does not scan the members");
    t.kill9();
    t.mount();
    assert!(
        !stray.exists(),
        "mount after a crash sweeps unreferenced shards"
    );
    assert_eq!(read_all(&t.p("bkt/f")).unwrap(), pattern(1, 50_000));
}

/// A counter from `shardctl metrics`.
fn counter(t: &TestMount, name: &str) -> f64 {
    let (ok, text, err) = t.ctl(&["metrics"]);
    assert!(ok, "{err}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Small reads wait for their bytes in the page cache (the probe starts
/// the disk read; the reader polls instead of handing the read to a
/// worker), and what they get is verified like any read: a flipped bit
/// under a polled read is caught and the bytes come from parity.
#[test]
fn small_reads_polled_from_the_page_cache_are_verified() {
    use std::os::unix::fs::FileExt;
    let shard = 65_536usize;
    let mut t = TestMount::new(6, &["--shard-size", &shard.to_string()]);
    fs::create_dir(t.p("bkt")).unwrap();
    let data = pattern(41, 8 * 4 * shard);
    fs::write(t.p("bkt/f"), &data).unwrap();
    t.unmount();
    t.mount();
    // one whole read: every shard's header is known and its file kept open
    assert!(read_all(&t.p("bkt/f")).unwrap() == data);
    let drop_caches = || fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    let before = counter(&t, "shardfs_pool_polled_shard_reads_total");
    let f = File::open(t.p("bkt/f")).unwrap();
    let mut polled = 0.0;
    for round in 0..10 {
        drop_caches();
        for i in 0..50u64 {
            let off = ((i * 7919 + round * 104_729) * 4096) % data.len() as u64;
            let mut buf = vec![0u8; 4096];
            f.read_exact_at(&mut buf, off).unwrap();
            assert!(
                buf[..] == data[off as usize..off as usize + 4096],
                "at {off}"
            );
        }
        polled = counter(&t, "shardfs_pool_polled_shard_reads_total") - before;
        if polled > 0.0 {
            break;
        }
    }
    assert!(polled > 0.0, "no small read was polled from the page cache");
    // flip a bit inside data shard 1 of stripe 2: file bytes
    // 2 * 4 * shard + shard + 10_000 on
    let stripe = 2u64;
    let at = (2 * 4 * shard + shard + 10_000) as u64;
    let shard_rec = t
        .shard_files()
        .into_iter()
        .find(|r| r.stripe == stripe && r.index == 1)
        .expect("data shard 1 of stripe 2");
    let hlen = shardfs::ec::header_len(shard);
    shard_rec.flip(hlen + 10_000, 0x10);
    let rec = counter(&t, "shardfs_pool_reconstructions_total");
    drop_caches();
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, at).unwrap();
    assert!(
        buf[..] == data[at as usize..at as usize + 4096],
        "flipped bit read back"
    );
    assert!(
        counter(&t, "shardfs_pool_reconstructions_total") > rec,
        "the bad block was not caught"
    );
}
