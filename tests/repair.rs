//! Repair, scrub, drain and member health below FUSE, over crash-simulating
//! members (faults injected under them): after repair every stripe has k+m
//! shards that verify; scrub finds every flipped bit; a drained member holds
//! nothing; a member that returns serves nothing stale.

mod harness;

use harness::{new_node, pattern, unlimited, Rig};
use shardfs::fs::{Fs, Kind, Task, ROOT_INO};
use shardfs::pool::{Health, NO_MEMBER};
use std::sync::atomic::Ordering;

/// A rig of 8 members with a bucket of files spanning several stripes.
fn rig_with_files(n: usize) -> (Rig, Vec<(u64, Vec<u8>)>) {
    let rig = Rig::with_members(8);
    let files = harness::bucket_of_files(rig.fs(), n, |i| {
        [3 * 8192 + 100, 8192, 20_000, 40_000][i % 4]
    });
    (rig, files)
}

/// Every stripe: k+m shards, none on `not_on`, each verifying.
fn assert_fully_redundant(fs: &Fs, files: &[(u64, Vec<u8>)], not_on: Option<u16>) {
    for (ino, data) in files {
        for (s, loc) in fs.stripes(*ino).unwrap() {
            assert!(
                !loc.members.contains(&NO_MEMBER),
                "inode {ino} stripe {s}: a shard is missing: {loc:?}"
            );
            if let Some(x) = not_on {
                assert!(
                    !loc.members.contains(&x),
                    "inode {ino} stripe {s} still on member {x}"
                );
            }
            let mut seen = loc.members.clone();
            seen.sort();
            seen.dedup();
            assert_eq!(
                seen.len(),
                loc.members.len(),
                "two shards on one member: {loc:?}"
            );
            for (i, r) in fs.pool.verify_stripe(*ino, s, &loc).into_iter().enumerate() {
                assert!(r.is_ok(), "inode {ino} stripe {s} shard {i}: {r:?}");
            }
        }
        assert_eq!(&fs.read(*ino, 0, data.len() as u32 + 1).unwrap(), data);
    }
}

#[test]
fn a_failed_member_is_rebuilt_onto_the_others() {
    let (rig, files) = rig_with_files(12);
    let fs = rig.fs();
    // the disk dies: every call fails
    rig.fail(3, true);
    fs.set_member_health(3, Health::Failed).unwrap();
    let plan = fs.repair_plan().unwrap();
    assert!(!plan.is_empty(), "member 3 held shards");
    // fewest surviving shards first
    let survivors: Vec<usize> = plan.iter().map(|it| 6 - it.slots.len()).collect();
    assert!(survivors.windows(2).all(|w| w[0] <= w[1]), "{survivors:?}");
    let task = unlimited();
    assert_eq!(fs.repair_pass(&task).unwrap(), 0, "nothing left to repair");
    let p = task.snapshot();
    assert_eq!(p.stripes_done, plan.len() as u64);
    assert!(p.shards >= plan.len() as u64);
    assert_fully_redundant(fs, &files, Some(3));
    assert_eq!(
        fs.pool.member(3).health(),
        Health::Failed,
        "an admin failure is sticky"
    );
}

#[test]
fn scrub_detects_and_repairs_every_flipped_bit() {
    let (rig, files) = rig_with_files(12);
    let fs = rig.fs();
    // flip one bit in one or two shards of every stripe (at most m, so
    // every stripe stays readable): headers, payloads, data and parity
    let mut flipped = 0;
    let mut n = 0usize;
    for (ino, _) in &files {
        for (s, loc) in fs.stripes(*ino).unwrap() {
            let count = 1 + n % 2;
            for j in 0..count {
                let i = (n * 3 + j * 2) % loc.members.len();
                let (rel, base, len) = fs.pool.shard_at(*ino, s, &loc, i);
                let d = &rig.disks[loc.members[i] as usize];
                let at = base as usize + (n * 7919 + j * 104_729) % len;
                assert!(d.corrupt(&rel, |v| v[at] ^= 1 << (n % 8)));
                flipped += 1;
            }
            n += 1;
        }
    }
    assert!(flipped > 10);
    let task = unlimited();
    fs.scrub_pass(&task).unwrap();
    let p = task.snapshot();
    assert_eq!(p.shards, flipped, "every flipped bit is found");
    assert_eq!(p.repaired, flipped, "and repaired");
    assert_fully_redundant(fs, &files, None);
    // a second pass finds nothing
    fs.scrub_pass(&task).unwrap();
    assert_eq!(task.snapshot().shards, 0);
    assert!(task.snapshot().last_pass_end.is_some());
}

#[test]
fn drain_moves_every_shard_off_then_removes_the_member() {
    let (rig, files) = rig_with_files(12);
    let fs = rig.fs();
    let before = harness::shard_records(rig.disks[5].as_ref()).len();
    assert!(before > 0);
    fs.set_member_health(5, Health::Draining).unwrap();
    let task = unlimited();
    assert_eq!(fs.repair_pass(&task).unwrap(), 0);
    assert_eq!(fs.pool.member(5).health(), Health::Removed);
    assert_fully_redundant(fs, &files, Some(5));
    fs.meta.sync().unwrap();
    let left = harness::shard_records(rig.disks[5].as_ref());
    assert!(left.is_empty(), "drained member still holds {left:?}");
}

/// A dead member that no read touches (heat-aware reads route around it)
/// is still failed out by the health probe's own failed reads, so repair
/// rebuilds its shards.
#[test]
fn the_probe_alone_fails_out_a_dead_member() {
    let (rig, _files) = rig_with_files(4);
    rig.fail(3, true);
    let fs = rig.fs();
    fs.probe_members().unwrap();
    fs.probe_members().unwrap();
    assert_eq!(fs.pool.member(3).health(), Health::Online, "two errors");
    for _ in 0..shardfs::pool::FAIL_AFTER {
        fs.probe_members().unwrap();
    }
    assert_eq!(fs.pool.member(3).health(), Health::Failed);
}

#[test]
fn a_member_that_returns_serves_nothing_stale() {
    let (mut rig, mut files) = rig_with_files(8);
    // member 2 goes away; reads fail over it until it is declared failed
    rig.fail(2, true);
    {
        let fs = rig.fs();
        for _ in 0..40 {
            for (ino, data) in &files {
                assert_eq!(&fs.read(*ino, 0, data.len() as u32).unwrap(), data);
            }
            // heat-aware reads may route around it: the probe (every 5 s in
            // the daemon) counts its failed superblock reads too
            fs.probe_members().unwrap();
            if fs.pool.member(2).health() == Health::Failed {
                break;
            }
        }
        assert_eq!(fs.pool.member(2).health(), Health::Failed);
        // its shards are rebuilt elsewhere, and files are overwritten
        assert_eq!(fs.repair_pass(&unlimited()).unwrap(), 0);
        for (i, (ino, data)) in files.iter_mut().enumerate() {
            if i % 2 == 0 {
                *data = pattern(100 + i as u8, 0, data.len());
                let fh = fs.open(*ino, true).unwrap();
                fs.write(*ino, 0, data).unwrap();
                fs.flush_handle(fh).unwrap();
                fs.release(fh).unwrap();
            }
        }
    }
    // it comes back: the probe brings it online, and nothing it holds is
    // used unless committed metadata names it
    rig.fail(2, false);
    let fs = rig.fs();
    assert_eq!(fs.probe_members().unwrap(), vec![2]);
    assert_eq!(fs.pool.member(2).health(), Health::Online);
    assert_fully_redundant(fs, &files, Some(2));
    // the next mount sweeps its stale copies
    rig.unmount().unwrap();
    rig.mount().unwrap();
    let fs = rig.fs();
    let mut referenced = std::collections::BTreeSet::new();
    for (ino, _) in &files {
        for (s, loc) in fs.stripes(*ino).unwrap() {
            for (i, &mi) in loc.members.iter().enumerate() {
                if mi == 2 {
                    let (rel, at, _) = fs.pool.shard_at(*ino, s, &loc, i);
                    referenced.insert((rel, at));
                }
            }
        }
    }
    for (rel, at) in harness::shard_records(rig.disks[2].as_ref()) {
        assert!(
            referenced.contains(&(rel.clone(), at)),
            "stale shard {rel} at {at} left on the returned member"
        );
    }
    assert_fully_redundant(rig.fs(), &files, None);
}

#[test]
fn a_concurrent_overwrite_during_repair_wins() {
    let (rig, files) = rig_with_files(4);
    let fs = rig.fs();
    rig.fail(1, true);
    fs.set_member_health(1, Health::Failed).unwrap();
    let plan = fs.repair_plan().unwrap();
    let it = plan.first().expect("a stripe on member 1").clone();
    // the stripe is rewritten after the plan was made
    let (ino, data) = files.iter().find(|(i, _)| *i == it.ino).unwrap();
    let newer = pattern(200, 0, data.len());
    let fh = fs.open(*ino, true).unwrap();
    fs.write(*ino, 0, &newer).unwrap();
    fs.flush_handle(fh).unwrap();
    fs.release(fh).unwrap();
    // repairing the old generation must not resurrect it
    assert_eq!(fs.repair_stripe(&it).unwrap(), 0);
    assert_eq!(fs.read(*ino, 0, newer.len() as u32).unwrap(), newer);
    // its rebuilt copies were removed, and the overwrite deleted the old
    // generation (except on the failed member, which cannot be reached)
    fs.meta.sync().unwrap();
    for (mi, d) in rig.disks.iter().enumerate() {
        for (rel, _) in d.list() {
            let name = rel.rsplit('/').next().unwrap();
            if let Some((o, s, g, _)) = shardfs::pool::parse_shard_name(name) {
                let old = (o, s, g) == (it.ino, it.stripe, it.loc.generation);
                assert!(!old || mi == 1, "{rel} on member {mi}");
            }
        }
    }
}

#[test]
fn errors_make_a_member_suspect_then_failed_and_writes_avoid_it() {
    let (rig, files) = rig_with_files(8);
    let fs = rig.fs();
    rig.fail(6, true);
    let mut saw_suspect = false;
    // reads route around the erring member once it looks slow or bad, so
    // how many rounds it takes to count FAIL_AFTER errors depends on
    // timing: allow many (the loop ends as soon as it is failed)
    'outer: for _ in 0..400 {
        for (ino, data) in &files {
            assert_eq!(&fs.read(*ino, 0, data.len() as u32).unwrap(), data);
            saw_suspect |= fs.pool.member(6).health() == Health::Suspect;
            if fs.pool.member(6).health() == Health::Failed {
                break 'outer;
            }
        }
    }
    // the state may pass through suspect between two looks (a read of
    // many stripes counts many errors): the member's history shows it
    let history = fs.pool.member(6).health_history();
    assert!(
        saw_suspect
            || history.starts_with(&[
                (Health::Online, Health::Suspect),
                (Health::Suspect, Health::Failed)
            ]),
        "suspect before failed: {history:?}"
    );
    assert_eq!(fs.pool.member(6).health(), Health::Failed);
    assert!(fs.pool.member(6).errors.load(Ordering::Relaxed) >= shardfs::pool::FAIL_AFTER);
    // new stripes avoid it and are written k+m wide on the others
    let (a, fh) = fs
        .create_open(
            fs.lookup(ROOT_INO, b"bkt").unwrap().ino,
            b"new",
            new_node(Kind::File, 0o644, b""),
            true,
        )
        .unwrap();
    let data = pattern(77, 0, 5 * 8192);
    fs.write(a.ino, 0, &data).unwrap();
    fs.flush_handle(fh).unwrap();
    fs.release(fh).unwrap();
    for (_, loc) in fs.stripes(a.ino).unwrap() {
        assert!(
            !loc.members.contains(&6) && !loc.members.contains(&NO_MEMBER),
            "{loc:?}"
        );
    }
}

#[test]
fn repair_keeps_to_its_rate_limit() {
    let (rig, _files) = rig_with_files(16);
    let fs = rig.fs();
    rig.fail(4, true);
    fs.set_member_health(4, Health::Failed).unwrap();
    let plan = fs.repair_plan().unwrap();
    let bytes: u64 = plan.iter().map(|it| it.loc.len as u64).sum();
    let task = Task::default();
    let rate = bytes / 2; // about two seconds of work
    task.rate_limit.store(rate, Ordering::Relaxed);
    let t = std::time::Instant::now();
    fs.repair_pass(&task).unwrap();
    let took = t.elapsed().as_secs_f64();
    // a limit is a floor on time: slower is fine on a busy machine
    assert!(
        took >= 0.8 * bytes as f64 / rate as f64,
        "{took} s for {bytes} bytes at {rate}/s"
    );
}

#[test]
fn repair_routes_around_a_full_member_and_a_slow_one() {
    let (rig, files) = rig_with_files(12);
    let fs = rig.fs();
    // member 7 is full, member 6 answers slowly; member 3 dies
    rig.disks[7].full.store(true, Ordering::Relaxed);
    rig.disks[6].slow_ms.store(2, Ordering::Relaxed);
    rig.fail(3, true);
    fs.set_member_health(3, Health::Failed).unwrap();
    fs.pool.refresh_capacity();
    let before: Vec<_> = files
        .iter()
        .map(|(ino, _)| fs.stripes(*ino).unwrap())
        .collect();
    assert!(
        fs.repair_pass(&unlimited()).unwrap() == 0,
        "everything repaired"
    );
    for ((ino, _), old) in files.iter().zip(before) {
        for ((s, loc), (_, was)) in fs.stripes(*ino).unwrap().into_iter().zip(old) {
            for (i, (&now, &then)) in loc.members.iter().zip(&was.members).enumerate() {
                if now != then {
                    // a moved shard never lands on the full member
                    assert_ne!(
                        now, 7,
                        "inode {ino} stripe {s} shard {i} went to the full member"
                    );
                }
            }
        }
    }
    rig.disks[6].slow_ms.store(0, Ordering::Relaxed);
    assert_fully_redundant(fs, &files, Some(3));
}

/// `disk add` then rebalance: the new member takes new stripes at once, a
/// rebalance pass gives it its share of the existing ones (the spread of
/// shard bytes ends within one stripe's worth of even), every stripe stays
/// fully redundant on distinct members, and after a remount the pool
/// includes the new member, whose superblock and the others' agree.
#[test]
fn an_added_member_takes_new_stripes_and_rebalance_fills_it() {
    let (mut rig, files) = rig_with_files(40);
    let before = rig.fs().shard_bytes_per_member().unwrap();
    assert_eq!(before.len(), 8);
    let new = rig.add_member().expect("disk add") as u16;
    assert_eq!(new, 8);
    let fs = rig.fs();
    assert_eq!(fs.pool.members().len(), 9);
    assert_eq!(fs.pool.member(new).health(), Health::Online);
    // the other members' superblocks list it
    for (i, d) in rig.disks.iter().enumerate() {
        let sb = shardfs::pool::Superblock::decode(
            &d.view().read_file(shardfs::pool::SUPERBLOCK_FILE).unwrap(),
        )
        .unwrap();
        assert_eq!(sb.members.len(), 9, "member {i}'s superblock");
        assert_eq!(sb.member_index as usize, i);
    }
    // a second add of the same disk is refused
    let again = fs
        .pool
        .add_member(rig.disks[8].view(), "sim8-again".into(), None, None)
        .unwrap_err()
        .to_string();
    assert!(again.contains("already a shardfs member"), "{again}");
    // before the rebalance, the new member holds nothing
    assert_eq!(fs.shard_bytes_per_member().unwrap()[8], 0);
    let spread = fs.imbalance().unwrap().unwrap();
    assert!(
        spread > 1.1,
        "an empty member should make the spread uneven: {spread}"
    );
    let task = unlimited();
    let moved = fs.rebalance_pass(&task).unwrap();
    assert!(moved > 0);
    let after = fs.shard_bytes_per_member().unwrap();
    let mean = after.iter().sum::<u64>() as f64 / 9.0;
    let shard = (8192 / 4) as f64; // one shard of a full stripe
    for (i, &b) in after.iter().enumerate() {
        assert!(
            (b as f64 - mean).abs() <= 2.0 * shard + 0.02 * mean,
            "member {i} holds {b} bytes, mean {mean:.0}: {after:?}"
        );
    }
    assert_fully_redundant(fs, &files, None);
    // a second pass finds nothing worth moving
    assert_eq!(fs.rebalance_pass(&task).unwrap(), 0);
    // new stripes use the new member
    let b = harness::resolve(fs, b"/bkt").unwrap();
    let mut hit = false;
    for i in 0..20 {
        let (a, fh) = fs
            .create_open(
                b,
                format!("new{i}").as_bytes(),
                new_node(Kind::File, 0o644, b""),
                true,
            )
            .unwrap();
        fs.write(a.ino, 0, &pattern(i, 0, 8192)).unwrap();
        fs.flush_handle(fh).unwrap();
        fs.release(fh).unwrap();
        hit |= fs
            .stripes(a.ino)
            .unwrap()
            .iter()
            .any(|(_, l)| l.members.contains(&new));
    }
    assert!(hit, "no new stripe went to the added member");
    // remount: the pool includes the new member and the data is intact
    rig.unmount().unwrap();
    rig.mount().unwrap();
    let fs = rig.fs();
    assert_eq!(fs.pool.members().len(), 9);
    assert_fully_redundant(fs, &files, None);
    // with the old members only (the added one left out), mount refuses
    // nothing and treats it as missing: assemble picks the longest list
    let found: Vec<_> = rig.disks[..8]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let v = d.view();
            let sb = shardfs::pool::Superblock::decode(
                &v.read_file(shardfs::pool::SUPERBLOCK_FILE).unwrap(),
            )
            .unwrap();
            (
                format!("sim{i}"),
                v as std::sync::Arc<dyn shardfs::pool::DiskBackend>,
                sb,
            )
        })
        .collect();
    let (sb, members) = shardfs::pool::assemble(found).unwrap();
    assert_eq!(sb.members.len(), 9);
    assert_eq!(members[8].health(), Health::Missing);
}

/// A member whose add stopped after its own superblock was written (a
/// crash in the middle of `disk add`): mounted with it, the pool includes
/// it and brings the others' superblocks up to date; mounted without it,
/// the pool is as before; once its slot went to another member, it is
/// refused with a message that says what to do.
#[test]
fn a_half_added_member_is_included_or_refused_never_confused() {
    use shardfs::pool::{assemble, DiskBackend, Superblock, SUPERBLOCK_FILE};
    let (mut rig, files) = rig_with_files(6);
    // simulate the crash: write only the new member's superblock, as step 1 does
    let d = shardfs::crash::CrashDisk::new(rig.clock.clone());
    let old_sb =
        Superblock::decode(&rig.disks[0].view().read_file(SUPERBLOCK_FILE).unwrap()).unwrap();
    let mut sb = old_sb.clone();
    sb.member_id = format!("{:032x}", 0xabc);
    sb.members.push(sb.member_id.clone());
    sb.member_index = 8;
    d.view()
        .write_atomic(SUPERBLOCK_FILE, &sb.encode())
        .unwrap();
    let read = |i: usize, d: &std::sync::Arc<shardfs::crash::CrashDisk>| {
        let v = d.view();
        let sb = Superblock::decode(&v.read_file(SUPERBLOCK_FILE).unwrap()).unwrap();
        (format!("sim{i}"), v as std::sync::Arc<dyn DiskBackend>, sb)
    };
    let mut found: Vec<_> = rig
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| read(i, d))
        .collect();
    found.push(read(8, &d));
    let (sb9, _) = assemble(found.clone()).unwrap();
    assert_eq!(sb9.members.len(), 9, "the half-added member is included");
    // without it: the pool as before
    let (sb8, _) = assemble(found[..8].to_vec()).unwrap();
    assert_eq!(sb8.members.len(), 8);
    // its slot goes to another member (a real add while it was away)
    rig.add_member().unwrap();
    found = rig
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| read(i, d))
        .collect();
    found.push(read(9, &d));
    let err = assemble(found).unwrap_err().to_string();
    assert!(
        err.contains("was being added") && err.contains("disk add"),
        "{err}"
    );
    assert_fully_redundant(rig.fs(), &files, None);
}

/// A member whose superblock disappears (the disk was unmounted under the
/// pool) or names another member (a disk swapped in) is taken out at the
/// next probe, and comes back once its own superblock is there again.
#[test]
fn a_missing_or_foreign_superblock_takes_a_member_out() {
    use shardfs::pool::{Superblock, SUPERBLOCK_FILE};
    let (rig, files) = rig_with_files(4);
    let fs = rig.fs();
    let v = rig.disks[3].view();
    let own = v.read_file(SUPERBLOCK_FILE).unwrap();
    v.remove_file(SUPERBLOCK_FILE).unwrap();
    fs.probe_members().unwrap();
    assert_eq!(fs.pool.member(3).health(), Health::Failed);
    assert_fully_redundant_reads(fs, &files);
    v.write_atomic(SUPERBLOCK_FILE, &own).unwrap();
    assert_eq!(fs.probe_members().unwrap(), vec![3]);
    assert_eq!(fs.pool.member(3).health(), Health::Online);
    // another member's superblock on it
    let mut other = Superblock::decode(&own).unwrap();
    other.member_id = format!("{:032x}", 0xdead);
    v.write_atomic(SUPERBLOCK_FILE, &other.encode()).unwrap();
    fs.probe_members().unwrap();
    assert_eq!(fs.pool.member(3).health(), Health::Failed);
    assert_fully_redundant_reads(fs, &files);
}

fn assert_fully_redundant_reads(fs: &Fs, files: &[(u64, Vec<u8>)]) {
    for (ino, data) in files {
        assert_eq!(&fs.read(*ino, 0, data.len() as u32 + 1).unwrap(), data);
    }
}
