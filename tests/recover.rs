//! Metadata disaster recovery: every metadata replica deleted, objects
//! rebuilt from the self-describing shards alone (`shardfs recover`).

mod common;
use common::*;
use std::collections::BTreeSet;
use std::process::Command;

/// The disaster: every metadata replica is deleted and member `lost` is
/// gone; `shardfs recover` runs over what is left and must succeed.
/// Returns (output directory, members left, recover's stdout).
fn disaster(t: &TestMount, lost: usize) -> (std::path::PathBuf, Vec<std::path::PathBuf>, String) {
    for m in &t.members {
        let _ = std::fs::remove_dir_all(m.join("meta"));
    }
    std::fs::remove_dir_all(&t.members[lost]).unwrap();
    let out = t.tmp.path().join("recovered");
    let left: Vec<_> = t.members.iter().filter(|m| m.exists()).cloned().collect();
    let r = Command::new(SHARDFS)
        .arg("recover")
        .arg("--out")
        .arg(&out)
        .args(&left)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout).into_owned();
    assert!(
        r.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    (out, left, stdout)
}

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
    // (and the namespace catalogs: the objects alone, unnamed)
    for m in &t.members {
        let _ = std::fs::remove_file(m.join("catalog"));
    }
    let (out, left, stdout) = disaster(&t, 4);
    assert!(
        stdout.contains("recovered 6 objects") && stdout.contains("0 stripes unrecoverable"),
        "{stdout}"
    );
    let got: BTreeSet<Vec<u8>> = std::fs::read_dir(out.join("lost+found"))
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

/// With the namespace catalog every member carries, recovery rebuilds the
/// tree: buckets, directories, names, striped and small files byte-exact,
/// hard links, symlinks, user xattrs, modes and times. A file created after
/// the newest catalog comes back unnamed in lost+found.
#[test]
fn the_namespace_comes_back_from_the_catalog() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut t = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
    std::fs::create_dir_all(t.p("photos/2026/nov")).unwrap();
    std::fs::create_dir_all(t.p("docs")).unwrap();
    let big = pattern(1, 70_000);
    let small = b"a small file, inline in the metadata".to_vec();
    std::fs::write(t.p("photos/2026/nov/a.jpg"), &big).unwrap();
    std::fs::write(t.p("docs/notes.txt"), &small).unwrap();
    std::fs::hard_link(t.p("photos/2026/nov/a.jpg"), t.p("docs/a-link.jpg")).unwrap();
    std::os::unix::fs::symlink("../photos/2026/nov/a.jpg", t.p("docs/latest")).unwrap();
    std::fs::set_permissions(
        t.p("docs/notes.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let f = std::fs::File::create(t.p("docs/sparse")).unwrap();
    f.set_len(50_000).unwrap();
    drop(f);
    let c = std::ffi::CString::new(t.p("docs/notes.txt").to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated strings and buffer.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.tag".as_ptr(),
            b"blue".as_ptr().cast(),
            4,
            0,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let mtime = std::fs::metadata(t.p("photos/2026/nov/a.jpg"))
        .unwrap()
        .mtime();
    // the catalog is written at unmount
    t.unmount();
    assert!(
        t.log_text().contains("namespace catalog written"),
        "{}",
        t.log_text()
    );
    // a file created after the last catalog, then the daemon dies
    t.mount();
    let late = pattern(7, 30_000);
    std::fs::write(t.p("docs/late.bin"), &late).unwrap();
    std::process::Command::new("sync").status().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600)); // group commit
    t.kill9();
    let (out, _, stdout) = disaster(&t, 2);
    assert!(stdout.contains("named from the catalog"), "{stdout}");
    assert_eq!(
        std::fs::read(out.join("photos/2026/nov/a.jpg")).unwrap(),
        big
    );
    assert_eq!(std::fs::read(out.join("docs/notes.txt")).unwrap(), small);
    let a = std::fs::metadata(out.join("photos/2026/nov/a.jpg")).unwrap();
    let l = std::fs::metadata(out.join("docs/a-link.jpg")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (l.ino(), 2), "hard link kept");
    assert_eq!(a.mtime(), mtime, "times kept");
    assert_eq!(
        std::fs::read_link(out.join("docs/latest")).unwrap(),
        std::path::PathBuf::from("../photos/2026/nov/a.jpg")
    );
    assert_eq!(std::fs::read(out.join("docs/latest")).unwrap(), big);
    let n = std::fs::metadata(out.join("docs/notes.txt")).unwrap();
    assert_eq!(n.mode() & 0o7777, 0o640);
    let sparse = std::fs::read(out.join("docs/sparse")).unwrap();
    assert!(sparse.len() == 50_000 && sparse.iter().all(|&b| b == 0));
    let mut buf = [0u8; 16];
    let c = std::ffi::CString::new(out.join("docs/notes.txt").to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated strings and buffer.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"user.tag".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(&buf[..n.max(0) as usize], b"blue");
    // the late file: not in the catalog, so unnamed, but its bytes are back
    assert!(!out.join("docs/late.bin").exists());
    let unnamed: Vec<Vec<u8>> = std::fs::read_dir(out.join("lost+found"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(unnamed, vec![late]);
}
