//! Metadata disaster recovery: every metadata replica deleted, objects
//! rebuilt from the self-describing shards alone (`shardfs recover`).

mod common;
use common::*;
use std::collections::BTreeSet;
use std::process::Command;

#[test]
fn objects_come_back_from_the_shards_alone() {
    // 2 KiB inline limit: files above it are striped and recoverable
    let mut t = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
    std::fs::create_dir_all(t.p("bkt/dir")).unwrap();
    let mut striped = BTreeSet::new();
    for (i, n) in [3000usize, 16_384, 16_385, 50_000, 200_000]
        .iter()
        .enumerate()
    {
        let d = pattern(i as u64 + 1, *n);
        std::fs::write(t.p(&format!("bkt/dir/f{i}")), &d).unwrap();
        striped.insert(d);
    }
    // overwritten: only the newest bytes may come back
    let newer = pattern(99, 40_000);
    std::fs::write(t.p("bkt/over"), pattern(98, 40_000)).unwrap();
    std::fs::write(t.p("bkt/over"), &newer).unwrap();
    striped.insert(newer);
    std::fs::write(t.p("bkt/small"), b"inline, lives in the metadata only").unwrap();
    t.unmount();
    // the disaster: every metadata replica is gone, and one member too
    for m in &t.members {
        let _ = std::fs::remove_dir_all(m.join("meta"));
    }
    std::fs::remove_dir_all(&t.members[4]).unwrap();
    let out = t.tmp.path().join("recovered");
    let left: Vec<_> = t.members.iter().filter(|m| m.exists()).cloned().collect();
    let r = Command::new(SHARDFS)
        .arg("recover")
        .arg("--out")
        .arg(&out)
        .args(&left)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        stdout.contains("recovered 6 objects") && stdout.contains("0 stripes unrecoverable"),
        "{stdout}"
    );
    let got: BTreeSet<Vec<u8>> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(got.len(), striped.len());
    assert!(
        got == striped,
        "every striped file, byte-exact, and only the newest version"
    );
    // refusals: a non-empty output directory, a directory that is no member
    let r = Command::new(SHARDFS)
        .arg("recover")
        .arg("--out")
        .arg(&out)
        .args(&left)
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("not empty"));
    let r = Command::new(SHARDFS)
        .arg("recover")
        .arg("--out")
        .arg(t.tmp.path().join("elsewhere"))
        .arg(t.tmp.path())
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("no shardfs superblock"));
}
