//! Concurrency against the model: client threads share one filesystem
//! (below FUSE, as the FUSE worker threads do) while background stripe
//! writers run and a chaos thread walks and reads the whole tree, syncs
//! the metadata and waits out writes in flight. Each client works in its
//! own two directories (in different buckets, so renames cross buckets)
//! and checks every result against its own model at once; at the end
//! every client's subtree must equal its model, and again after a remount.
//!
//! `SHARDFS_THREAD_OPS` sets the operations per client (default 2000),
//! `SHARDFS_THREAD_SEED` varies the clients' random streams.

mod harness;

use harness::{op, view_model, view_real, Pair, Session};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use shardfs::fs::{Fs, Kind, ROOT_INO};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const CLIENTS: usize = 6;

/// Walk the tree and read every file; entries may vanish under us
/// (ENOENT), but nothing may fail otherwise.
fn walk(fs: &Fs) -> u64 {
    let mut seen = 0;
    let mut dirs = std::collections::BTreeSet::new();
    let mut stack = vec![ROOT_INO];
    while let Some(dir) = stack.pop() {
        // a directory reached twice in one walk is a cycle (or a
        // directory moved while we walk: counted, bounded below)
        if !dirs.insert(dir) {
            continue;
        }
        assert!(dirs.len() < 100_000, "runaway directory walk");
        let entries = match fs.readdir(dir, 0, 4096) {
            Ok(e) => e,
            Err(e) if e.errno() == libc::ENOENT || e.errno() == libc::ENOTDIR => continue,
            Err(e) => panic!("readdir {dir}: {e}"),
        };
        for (ino, _, kind, name) in entries {
            if name == b"." || name == b".." {
                continue;
            }
            seen += 1;
            match kind {
                Kind::Dir => stack.push(ino),
                Kind::File => match fs.getattr(ino) {
                    Ok(a) => match fs.read(ino, 0, a.size as u32 + 4096) {
                        Ok(_) => {}
                        Err(e) if e.errno() == libc::ENOENT => {}
                        Err(e) => panic!("read of inode {ino}: {e}"),
                    },
                    Err(e) if e.errno() == libc::ENOENT => {}
                    Err(e) => panic!("getattr {ino}: {e}"),
                },
                _ => {}
            }
        }
    }
    seen
}

fn prefixes(i: usize) -> Vec<Vec<u8>> {
    vec![
        format!("/bkt/t{i}").into_bytes(),
        format!("/bucket-two/t{i}").into_bytes(),
    ]
}

/// Paths with what is seen of them, and file contents by path.
type Part = (Vec<(Vec<u8>, harness::Seen)>, Vec<(Vec<u8>, Vec<u8>)>);

/// The part of a view below the given directories (the directories too).
fn restrict(v: &harness::View, keep: &[Vec<u8>]) -> Part {
    let inside = |p: &Vec<u8>| keep.iter().any(|k| p.starts_with(k));
    (
        v.0.iter()
            .filter(|(p, _)| inside(p))
            .map(|(p, s)| (p.clone(), s.clone()))
            .collect(),
        v.1.iter()
            .filter(|(p, _)| inside(p))
            .map(|(p, d)| (p.clone(), d.clone()))
            .collect(),
    )
}

#[test]
fn clients_sharing_a_filesystem_agree_with_their_models() {
    harness::quiet_panics();
    let ops_per_client: usize = std::env::var("SHARDFS_THREAD_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u8 = std::env::var("SHARDFS_THREAD_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // the pair provides /bkt, /bucket-two and /bkt/dir1
    let mut pair = Pair::new();
    let mut sessions = Vec::new();
    for i in 0..CLIENTS {
        let mut model = pair.s.model.clone();
        for dir in prefixes(i) {
            model.mkdir(&dir, 0o755).expect("model mkdir");
            pair.s.model.mkdir(&dir, 0o755).expect("model mkdir");
            let fs = pair.rig.fs();
            let (p, n) = harness::parent_of(fs, &dir).expect("parent");
            fs.create_node(p, n, harness::new_node(Kind::Dir, 0o755, b""))
                .expect("mkdir");
        }
        let mut s = Session::new(model);
        s.confine = prefixes(i);
        sessions.push(s);
    }
    pair.compare();
    let fs = pair.rig.fs();
    let stop = AtomicBool::new(false);
    let walks = AtomicU64::new(0);
    /// Stops the chaos thread however the scope ends (a failing client
    /// must not leave the scope waiting for it forever).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let done: Vec<Session> = std::thread::scope(|sc| {
        let _stop = StopOnDrop(&stop);
        let chaos = sc.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                walk(fs);
                fs.meta.sync().expect("metadata sync");
                fs.quiesce().expect("background writes");
                walks.fetch_add(1, Ordering::Relaxed);
            }
        });
        let clients: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                sc.spawn(move || {
                    let strategy = op(false);
                    let seed = [(i as u8 + 1).wrapping_add(seed.wrapping_mul(16)); 32];
                    let mut runner = TestRunner::new_with_rng(
                        Config::default(),
                        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
                    );
                    let mut ran = 0;
                    for step in 0..ops_per_client {
                        let op = strategy.new_tree(&mut runner).expect("op").current();
                        let (want, got) = s.exec(fs, &op);
                        assert_eq!(want, got, "client {i} step {step}: {op:?}");
                        if want != Ok(harness::Out::Skipped) {
                            ran += 1;
                        }
                    }
                    assert!(
                        ran > ops_per_client / 4,
                        "client {i} ran only {ran} operations"
                    );
                    s
                })
            })
            .collect();
        let done = clients
            .into_iter()
            .map(|c| c.join().expect("client thread"))
            .collect();
        stop.store(true, Ordering::Relaxed);
        chaos.join().expect("chaos thread");
        done
    });
    assert!(
        walks.load(Ordering::Relaxed) > 0,
        "the chaos thread never walked"
    );
    let check = |fs: &Fs, sessions: &[Session], when: &str| {
        let real = view_real(fs).unwrap_or_else(|(p, e)| panic!("{when}: {p:?}: errno {e}"));
        for (i, s) in sessions.iter().enumerate() {
            let (want, _) = view_model(&s.model);
            let keep = prefixes(i);
            assert!(
                restrict(&want, &keep) == restrict(&real, &keep),
                "{when}: client {i}'s subtree differs from its model"
            );
        }
    };
    check(pair.rig.fs(), &done, "after the run");
    // close everything, unmount cleanly, mount, compare again
    let mut done = done;
    for s in &mut done {
        for (m, r) in std::mem::take(&mut s.handles) {
            s.model.close(m).expect("model close");
            let fs = pair.rig.fs();
            fs.flush_handle(r).expect("flush");
            fs.release(r).expect("release");
        }
    }
    pair.rig.unmount().expect("unmount");
    pair.rig.mount().expect("mount");
    check(pair.rig.fs(), &done, "after a remount");
    eprintln!(
        "{CLIENTS} clients x {ops_per_client} operations, {} chaos walks",
        walks.load(Ordering::Relaxed)
    );
}
