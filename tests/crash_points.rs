//! Crash consistency by enumeration: small workloads run on a simulated
//! machine that stops at every event in turn (each shard write, fsync,
//! directory sync, removal and metadata commit), then loses power with
//! several policies for what was not synced. After each, the pool is
//! mounted again and must hold a state the model allows: everything
//! acknowledged (fsync, close) is there, nothing is garbage, and the
//! namespace is the one at some commit point.

mod harness;

use harness::Pick::Path;
use harness::{Num, Op, Out, Pair};
use shardfs::crash::Unsynced;
use std::sync::atomic::Ordering;

/// Stop after `stop` events of the workload, crash with `policy`, mount
/// and check. Returns the number of workload events (when it ran to the end).
fn crash_at(ops: &[Op], stop: u64, policy: Unsynced) -> u64 {
    let mut pair = Pair::new();
    let clock = pair.rig.clock.clone();
    let base = clock.events();
    clock.stop_at(stop);
    let mut candidates = Vec::new();
    for op in ops {
        let before = pair.s.model.clone();
        let (want, got) = pair.run(op);
        match (&want, &got) {
            (a, b) if a == b => {}
            (_, Err(_)) if clock.stopped() => {
                // cut short: it may or may not have taken effect
                candidates.push(before);
                break;
            }
            _ => panic!(
                "stop {stop}, {op:?}: model {want:?}, filesystem {got:?} before the machine stopped"
            ),
        }
        if matches!(got, Ok(Out::Skipped)) {
            panic!("{op:?} was skipped: the workload is wrong");
        }
    }
    let events = clock.events() - base;
    candidates.push(pair.s.model.clone());
    pair.rig.crash(policy);
    if let Err(e) = pair.rig.mount() {
        panic!("stop {stop}, {policy:?}: mount after the crash failed: {e}");
    }
    pair.log
        .push(format!("crash at event {stop} with {policy:?}"));
    pair.check_recovered_any(&candidates);
    // and the recovered pool keeps working
    pair.remount();
    events
}

fn enumerate(name: &str, ops: &[Op]) {
    harness::quiet_panics();
    let total = crash_at(ops, u64::MAX / 2, Unsynced::Lose);
    assert!(total > 10, "{name}: only {total} events");
    let policies = [
        Unsynced::Lose,
        Unsynced::Keep,
        Unsynced::Mixed(1),
        Unsynced::Mixed(2),
    ];
    let mut runs = 0;
    for stop in 0..=total {
        for p in policies {
            let r = std::panic::catch_unwind(|| crash_at(ops, stop, p));
            if let Err(e) = r {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "panic".into());
                panic!("{name}: crash at event {stop}/{total} with {p:?}:\n{msg}");
            }
            runs += 1;
        }
    }
    eprintln!("{name}: {total} events, {runs} crashes checked");
}

/// Write a multi-stripe file, fsync, rename it, create a small file in its
/// place, overwrite a stripe boundary of the first, replace it by rename.
#[test]
fn crash_points_write_fsync_rename_overwrite() {
    enumerate(
        "write-fsync-rename-overwrite",
        &[
            Op::Create(Path("/bkt/f"), true),
            Op::Write(0, Num(0, 0), Num(6, 500), 1),
            Op::Fsync(0),
            Op::Close(0),
            Op::Rename(Path("/bkt/f"), Path("/bkt/g"), false),
            Op::Create(Path("/bkt/f"), true),
            Op::Write(0, Num(0, 0), Num(0, 700), 2),
            Op::Close(0),
            Op::Open(Path("/bkt/g"), true, false),
            Op::Write(0, Num(3, -10), Num(0, 40), 3),
            Op::Fsync(0),
            Op::Rename(Path("/bkt/f"), Path("/bkt/g"), false),
            Op::Close(0),
            Op::SyncAll,
        ],
    );
}

/// Shrink and grow by truncate, unlink while open, fsync of an unlinked file.
#[test]
fn crash_points_truncate_unlink_open() {
    enumerate(
        "truncate-unlink-open",
        &[
            Op::Create(Path("/bkt/a"), true),
            Op::Write(0, Num(0, 0), Num(5, 300), 4),
            Op::Close(0),
            Op::Truncate(Path("/bkt/a"), Num(1, 5)),
            Op::Open(Path("/bkt/a"), true, false),
            Op::Write(0, Num(5, 7), Num(0, 90), 5),
            Op::Fsync(0),
            Op::Unlink(Path("/bkt/a")),
            Op::Write(0, Num(0, 3), Num(0, 10), 6),
            Op::Fsync(0),
            Op::Close(0),
            Op::Mkdir(Path("/bkt/d")),
            Op::SyncAll,
        ],
    );
}

/// Hard links, xattrs, a directory moved across buckets, unlink.
#[test]
fn crash_points_links_xattrs_directories() {
    enumerate(
        "links-xattrs-directories",
        &[
            Op::Mkdir(Path("/bkt/d")),
            Op::Create(Path("/bkt/d/x"), true),
            Op::Write(0, Num(3, 0), Num(0, 100), 7),
            Op::Link(Path("/bkt/d/x"), Path("/bkt/y")),
            Op::SetXattr(Path("/bkt/y"), 0, 20, 0),
            Op::Close(0),
            Op::Rename(Path("/bkt/d"), Path("/bucket-two/d"), false),
            Op::SyncAll,
            Op::Unlink(Path("/bkt/y")),
            Op::Create(Path("/bucket-two/d/z"), true),
            Op::Write(0, Num(0, 0), Num(3, 0), 8),
            Op::Fsync(0),
            Op::Close(0),
        ],
    );
}

/// A member joins (`disk add`), a rebalance moves shards onto it while a
/// file is overwritten and another deleted, then more writes. A crash at
/// any point leaves every acknowledged byte readable, and the rebalance's
/// half-moved shards are garbage, never data.
#[test]
fn crash_points_disk_add_and_rebalance() {
    enumerate(
        "disk-add-rebalance",
        &[
            Op::Create(Path("/bkt/a"), true),
            Op::Write(0, Num(0, 0), Num(6, 100), 1),
            Op::Close(0),
            Op::Create(Path("/bkt/b"), true),
            Op::Write(0, Num(0, 0), Num(5, 0), 2),
            Op::Close(0),
            Op::SyncAll,
            Op::AddMember,
            Op::Rebalance,
            Op::Open(Path("/bkt/a"), true, false),
            Op::Write(0, Num(3, 5), Num(0, 200), 3),
            Op::Fsync(0),
            Op::Close(0),
            Op::Unlink(Path("/bkt/b")),
            Op::Rebalance,
            Op::SyncAll,
        ],
    );
}

/// Tiering moves a file's shards to the cold class and back while it is
/// overwritten: a crash at any point leaves every acknowledged byte, and
/// half-made moves are garbage, never data.
#[test]
fn crash_points_tier_moves() {
    enumerate(
        "tier-moves",
        &[
            Op::Create(Path("/bkt/t"), true),
            Op::Write(0, Num(0, 0), Num(5, 100), 4),
            Op::Close(0),
            Op::SyncAll,
            Op::Retier(false),
            Op::Open(Path("/bkt/t"), true, false),
            Op::Write(0, Num(3, 7), Num(0, 300), 5),
            Op::Fsync(0),
            Op::Close(0),
            Op::Retier(true),
            Op::SyncAll,
        ],
    );
}

/// Small overwrites of committed stripes are written as patches: two
/// stripes patched in one flush, a patch over a patch, a write across a
/// stripe boundary, a fold, then a write covering a whole patched stripe
/// (superseding it). A crash at any point leaves every stripe wholly old
/// or wholly new and every acknowledged byte readable.
#[test]
fn crash_points_small_overwrites_patches_and_fold() {
    enumerate(
        "small-overwrites-patches-fold",
        &[
            Op::Create(Path("/bkt/p"), true),
            Op::Write(0, Num(0, 0), Num(6, 500), 1),
            Op::Close(0),
            Op::Open(Path("/bkt/p"), true, false),
            Op::Write(0, Num(2, 100), Num(0, 300), 2),
            Op::Write(0, Num(4, 7), Num(0, 3000), 3),
            Op::Fsync(0),
            Op::Write(0, Num(2, 200), Num(0, 100), 4),
            Op::Write(0, Num(5, -20), Num(0, 40), 5),
            Op::Close(0),
            Op::Fold,
            Op::Open(Path("/bkt/p"), true, false),
            Op::Write(0, Num(1, 0), Num(0, 64), 6),
            Op::Fsync(0),
            Op::Write(0, Num(3, 0), Num(3, 0), 7),
            Op::Close(0),
            Op::SyncAll,
        ],
    );
}

/// Format 3: the shard records of several files share each member's log.
/// Deleting one file, and rewriting another whole, gives back only the
/// dead records (punched out after the commit that drops them is
/// durable); a crash at any point leaves every acknowledged file whole,
/// and after the recovery's sweep no record is left that nothing names
/// (the leak check of every remount).
#[test]
fn crash_points_records_freed_beside_live_ones_in_shared_logs() {
    enumerate(
        "records-freed-in-shared-logs",
        &[
            Op::Create(Path("/bkt/a"), true),
            Op::Write(0, Num(0, 0), Num(4, 100), 1),
            Op::Close(0),
            Op::Create(Path("/bkt/b"), true),
            Op::Write(0, Num(0, 0), Num(3, 0), 2),
            Op::Close(0),
            Op::Unlink(Path("/bkt/a")),
            Op::SyncAll,
            Op::Open(Path("/bkt/b"), true, false),
            Op::Write(0, Num(0, 0), Num(3, 0), 3),
            Op::Close(0),
            Op::Create(Path("/bkt/c"), true),
            Op::Write(0, Num(0, 0), Num(2, 50), 4),
            Op::Fsync(0),
            Op::Close(0),
            Op::SyncAll,
        ],
    );
}

/// A stripe takes patches until it holds the most it carries; the
/// next flush merges them and the new bytes into one patch that replaces
/// them all (the old records are released only once that commit is
/// durable), and a patch after the merge lays over it. A crash at any
/// point leaves the stripe wholly at one of the fsynced states.
#[test]
fn crash_points_patches_merged_when_a_stripe_is_full() {
    let mut ops = vec![
        Op::Create(Path("/bkt/m"), true),
        Op::Write(0, Num(0, 0), Num(6, 0), 1),
        Op::Close(0),
        Op::Open(Path("/bkt/m"), true, false),
    ];
    // fsynced small writes into stripe 1, at spread offsets: a full set
    // of patches, then a merge, then a patch over the merged one
    let n = shardfs::fs::MAX_PATCHES as i16 + 2;
    for i in 0..n {
        ops.push(Op::Write(
            0,
            Num(3, (i * 431) % 8000),
            Num(0, 60),
            2 + i as u8,
        ));
        ops.push(Op::Fsync(0));
    }
    ops.push(Op::Close(0));
    ops.push(Op::SyncAll);
    // the workload does reach the merge (and then patches again)
    let mut pair = Pair::new();
    for op in &ops {
        let (want, got) = pair.run(op);
        assert_eq!(want, got, "{op:?}");
    }
    let st = &pair.rig.fs().pool.stats;
    assert_eq!(st.merged_patches.load(Ordering::Relaxed), 1, "one merge");
    assert_eq!(
        st.patches.load(Ordering::Relaxed),
        n as u64,
        "a patch a write"
    );
    drop(pair);
    enumerate("patches-merged-when-full", &ops);
}
