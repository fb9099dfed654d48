//! Property-based conformance: random operation sequences run on the real
//! filesystem (below FUSE, over crash-simulating members) and on the
//! reference model, compared after every step (see `harness`).
//!
//! Scale: `SHARDFS_CASES` sequences per test (default below); each of the
//! tests runs on its own thread. `SHARDFS_CASES=500000 cargo test --release
//! --test conformance` runs a million sequences (two tests) overnight.

mod harness;

use harness::{op, run_sequence, Op};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

/// Each element is `Some` when generated; shrinking turns the irrelevant
/// ones into `None`, so a shrunk case is short although sequences are at
/// least 50 long.
///
/// Sequences per test when `SHARDFS_CASES` is unset: 2 tests x 1000 = 2000.
const DEFAULT_CASES: u32 = 1000;

fn config() -> Config {
    let cases = std::env::var("SHARDFS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        max_shrink_iters: 20_000,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Namespace and data operations only.
    #[test]
    fn model_agrees_on_operations(ops in prop::collection::vec(prop::option::weighted(0.999, op(false)), 50..120)) {
        run_sequence(&ops.into_iter().flatten().collect::<Vec<_>>());
    }

    /// With lost members, flipped bits, degraded reads, remounts and crashes.
    #[test]
    fn model_agrees_with_faults_and_crashes(ops in prop::collection::vec(prop::option::weighted(0.999, op(true)), 50..120)) {
        run_sequence(&ops.into_iter().flatten().collect::<Vec<_>>());
    }
}

/// A fixed sequence touching every operation once, so a broken harness
/// cannot pass by skipping everything.
#[test]
fn every_operation_runs() {
    use harness::{Num, Pick::*};
    let ops = vec![
        Op::Mkdir(New(0, 0)),                  // /bkt
        Op::Mkdir(New(1, 5)),                  // /bkt/dir1
        Op::Create(New(1, 2), true),           // /bkt/a
        Op::Write(0, Num(3, 5), Num(3, 7), 9), // across a stripe
        Op::Read(0, Num(0, 0), Num(5, 0)),
        Op::Fsync(0),
        Op::Link(Existing(1), New(1, 3)), // /bkt/a -> /bkt/b
        Op::SetXattr(Existing(1), 0, 40, 0),
        Op::GetXattr(Existing(1), 0),
        Op::RemoveXattr(Existing(1), 0),
        Op::Truncate(Existing(1), Num(1, 1)),
        Op::Symlink(New(1, 4)),
        Op::Chmod(Existing(0), 0o700),
        Op::Rename(Existing(2), New(2, 4), false),
        Op::Open(Existing(1), true, false),
        Op::Lose(3),
        Op::Write(1, Num(5, 0), Num(3, 0), 4),
        Op::Return,
        Op::Flip(7, 100),
        Op::DegradedRead(1),
        Op::Close(0),
        Op::Crash(42),
        Op::Unlink(Existing(1)),
        Op::Rmdir(Existing(3)),
        Op::SyncAll,
        Op::Remount,
    ];
    let mut pair = harness::Pair::new();
    for op in &ops {
        pair.step(op);
    }
    let skipped = pair.log.iter().filter(|l| l.contains("Skipped")).count();
    assert_eq!(skipped, 0, "every step ran: {:#?}", pair.log);
    pair.remount();
}

/// The generator reaches every operation, with successes and failures,
/// so the property tests cannot pass by doing nothing.
#[test]
fn generator_reaches_every_operation() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(op(true), 50..120);
    let mut total: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    for _ in 0..100 {
        let ops = strategy.new_tree(&mut runner).expect("generate").current();
        for (k, (a, b, c)) in run_sequence(&ops) {
            let t = total.entry(k).or_default();
            t.0 += a;
            t.1 += b;
            t.2 += c;
        }
    }
    eprintln!("operation: ok / error / skipped over 100 sequences");
    for (k, (a, b, c)) in &total {
        eprintln!("  {k:14} {a:6} {b:6} {c:6}");
    }
    for kind in [
        "Mkdir",
        "Create",
        "Open",
        "Write",
        "Read",
        "Close",
        "Fsync",
        "Truncate",
        "Rename",
        "Link",
        "Unlink",
        "Rmdir",
        "Symlink",
        "Chmod",
        "SetXattr",
        "GetXattr",
        "RemoveXattr",
        "SyncAll",
        "Lose",
        "Return",
        "Flip",
        "DegradedRead",
        "Remount",
        "Crash",
    ] {
        let (ok, _, _) = total.get(kind).copied().unwrap_or_default();
        assert!(ok > 0, "{kind} never succeeded: {total:?}");
    }
    for kind in [
        "Mkdir", "Create", "Open", "Rename", "Link", "Unlink", "Rmdir", "SetXattr",
    ] {
        let (_, err, _) = total.get(kind).copied().unwrap_or_default();
        assert!(err > 0, "{kind} never failed: {total:?}");
    }
}

// ---- regressions: every bug the conformance tests found, shrunk ----

fn regression(ops: Vec<Op>) {
    let mut pair = harness::Pair::new();
    for op in &ops {
        pair.step(op);
    }
    pair.remount();
}

/// Renaming a file over a bucket gave EPERM (the bucket rule was checked
/// before the target's kind); the kernel's order gives EISDIR.
#[test]
fn regression_rename_file_over_bucket_is_eisdir() {
    use harness::Pick::Path;
    regression(vec![
        Op::Create(Path("/bkt/f"), true),
        Op::Rename(Path("/bkt/f"), Path("/bucket-two"), false),
        Op::Rename(Path("/bkt/f"), Path("/bucket-two"), true),
    ]);
}

/// A directory renamed over a file inside itself gave ENOTDIR; the
/// kernel checks ancestry first (EINVAL). A file renamed over its own
/// parent directory gives ENOTEMPTY.
#[test]
fn regression_rename_ancestry_before_kinds() {
    use harness::Pick::Path;
    regression(vec![
        Op::Create(Path("/bkt/dir1/f"), true),
        Op::Rename(Path("/bkt"), Path("/bkt/dir1/f"), false),
        Op::Rename(Path("/bkt/dir1"), Path("/bkt/dir1/f"), false),
        Op::Rename(Path("/bkt/dir1/f"), Path("/bkt/dir1"), false),
        Op::Rename(Path("/bkt/dir1/f"), Path("/bkt"), false),
    ]);
}

/// The model lacked set-group-id inheritance, which SEMANTICS.md promises
/// (found as a model bug).
#[test]
fn regression_setgid_directory_inheritance() {
    use harness::Pick::Path;
    regression(vec![
        Op::Chmod(Path("/bkt"), 0o2755),
        Op::Mkdir(Path("/bkt/sub")),
        Op::Create(Path("/bkt/sub/f"), true),
    ]);
}

/// user.* xattrs were stored on symlinks; Linux refuses them (EPERM).
#[test]
fn regression_no_user_xattr_on_symlink() {
    use harness::Pick::Path;
    regression(vec![
        Op::Symlink(Path("/bkt/l")),
        Op::SetXattr(Path("/bkt/l"), 0, 5, 0),
        Op::GetXattr(Path("/bkt/l"), 0),
    ]);
}

/// After a crash, a stripe could be committed with bytes past the file's
/// durable size (the size only advances over data with nothing older
/// pending before it). Growing the file then showed those bytes where
/// zeros belong. Fixed by `Fs::clear_past_eof`.
#[test]
fn regression_crash_leaves_stripe_past_eof() {
    use harness::Num;
    use harness::Op::*;
    use harness::Pick::*;
    regression(vec![
        Create(New(58874, 254), false),
        Mkdir(New(60581, 0)),
        Write(233, Num(91, -17), Num(0, 222), 148),
        Create(New(65423, 214), false),
        Write(194, Num(194, 3013), Num(108, 6341), 157),
        Rename(Existing(8420), New(65309, 241), false),
        SyncAll,
        Crash(16654829272003815330),
        Unlink(Existing(59903)),
        Symlink(New(29300, 81)),
        Rename(Existing(34669), New(44142, 164), false),
        Truncate(Existing(40491), Num(86, -1)),
    ]);
}
