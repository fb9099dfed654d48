//! Metadata disaster recovery: every metadata replica deleted, objects
//! rebuilt from the self-describing shards alone (`shardfs recover`).

mod common;
use common::*;
use std::collections::BTreeSet;
use std::process::Command;

/// The disaster: every metadata replica is deleted and member `lost` (if
/// any) is gone; `shardfs recover` runs over what is left and must succeed.
/// Returns (output directory, members left, recover's stdout and stderr).
fn disaster(
    t: &TestMount,
    lost: Option<usize>,
) -> (std::path::PathBuf, Vec<std::path::PathBuf>, String) {
    for m in &t.members {
        let _ = std::fs::remove_dir_all(m.join("meta"));
    }
    if let Some(lost) = lost {
        std::fs::remove_dir_all(&t.members[lost]).unwrap();
    }
    let out = t.tmp.path().join("recovered");
    let left: Vec<_> = t.members.iter().filter(|m| m.exists()).cloned().collect();
    let r = Command::new(SHARDFS)
        .arg("recover")
        .arg("--out")
        .arg(&out)
        .args(&left)
        .output()
        .unwrap();
    let stdout =
        String::from_utf8_lossy(&r.stdout).into_owned() + &String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{stdout}");
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
    let (out, left, stdout) = disaster(&t, Some(4));
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
    // streamed (version 2: the record count at the end), on every member,
    // and no temporary file left behind
    for m in &t.members {
        let b = std::fs::read(m.join("catalog")).unwrap();
        assert!(b.starts_with(b"SHARDFS-CATALOG2\n"), "{}", m.display());
        let (h, pairs) = shardfs::catalog::decode(&b).unwrap();
        assert_eq!(h.pairs as usize, pairs.len());
        assert!(
            pairs.iter().any(|(k, _)| k[0] == b'D'),
            "no directory entries"
        );
        assert!(!m.join("catalog.tmp").exists());
    }
    // a file created after the last catalog, then the daemon dies
    t.mount();
    let late = pattern(7, 30_000);
    std::fs::write(t.p("docs/late.bin"), &late).unwrap();
    std::process::Command::new("sync").status().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600)); // group commit
    t.kill9();
    let (out, _, stdout) = disaster(&t, Some(2));
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

/// Overwrite `(offset, length)` ranges of an existing file in place (small
/// writes into committed stripes: written as patches), mirror them in
/// `want`, fsync and close.
fn overwrite(t: &TestMount, rel: &str, want: &mut [u8], ranges: &[(usize, usize)]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(t.p(rel))
        .unwrap();
    for &(off, len) in ranges {
        let b = pattern(off as u64 + 1000, len);
        f.write_all_at(&b, off as u64).unwrap();
        want[off..off + len].copy_from_slice(&b);
    }
    f.sync_all().unwrap();
}

/// Bytes in the members' patch logs.
fn patch_log_bytes(t: &TestMount) -> u64 {
    t.members
        .iter()
        .filter_map(|m| std::fs::read_dir(m.join("patches")).ok())
        .flat_map(|d| d.flatten())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// The shard of `stripe`, index `index` (of the only striped object,
/// newest generation): (member, where it is).
fn shard_of(t: &TestMount, stripe: u64, index: u8) -> (usize, ShardRec) {
    t.shard_files()
        .into_iter()
        .filter(|r| r.stripe == stripe && r.index == index)
        .max_by_key(|r| r.generation)
        .map(|r| (r.member, r))
        .expect("shard")
}

/// The recovered file: at its name, or (no catalog) the only object.
fn recovered(out: &std::path::Path, rel: &str) -> Vec<u8> {
    if let Ok(b) = std::fs::read(out.join(rel)) {
        return b;
    }
    let objs: Vec<_> = std::fs::read_dir(out.join("lost+found"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(objs.len(), 1, "{objs:?}");
    std::fs::read(&objs[0]).unwrap()
}

/// A file of `len` bytes (16 KiB stripes; 60 000 bytes: 3 full stripes and
/// a short one).
fn striped_file(t: &TestMount, len: usize) -> Vec<u8> {
    std::fs::create_dir_all(t.p("bkt")).unwrap();
    let want = pattern(11, len);
    std::fs::write(t.p("bkt/f"), &want).unwrap();
    want
}

/// Small overwrites inside committed stripes: 100 bytes in the middle of
/// stripe 1 (in its data shard 1), 10 across the boundary of stripes 1 and
/// 2, 3 in the short last stripe.
const OVERWRITES: [(usize, usize); 3] = [(16_384 + 8_000, 100), (32_768 - 5, 10), (55_000, 3)];

/// A patch record for stripe generation `id` at `seq`, writing `fill`
/// over the stripe's first 64 bytes.
fn forge(id: shardfs::ec::ShardId, seq: u64, fill: u8) -> Vec<u8> {
    let pid = shardfs::ec::PatchId {
        shard: shardfs::ec::ShardId {
            index: shardfs::ec::patch::OVERLAY,
            ..id
        },
        seq,
    };
    shardfs::ec::patch::seal(pid, &[(0, &[fill; 64])])
}

/// A file overwritten in place and not folded yet (the daemon stops at
/// once, well before the 30 s fold) has its newest bytes only in base
/// shards + patches: recovery lays the patches over the decoded stripes.
/// Records that must not be applied are planted too: a record cut short
/// (its first 150 bytes), one whose bytes were damaged, a whole record of
/// another pool, one naming a generation that has no shards, one in a
/// file that is no patch log, holes, junk and a torn tail.
#[test]
fn overwrites_not_yet_folded_come_back_from_the_patches() {
    let mut t = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
    let mut want = striped_file(&t, 60_000);
    overwrite(&t, "bkt/f", &mut want, &OVERWRITES);
    t.unmount();
    assert!(
        patch_log_bytes(&t) > 0,
        "the overwrites were written as patches"
    );
    // the planted records, all naming stripe 1 (its newest generation,
    // unless said otherwise)
    let (_, rec) = shard_of(&t, 1, 1);
    let (h, _) = shardfs::ec::ShardHeader::open(&rec.read()).unwrap();
    let id = h.id;
    // any member's non-empty patch log (recovery scans them all)
    let log = t
        .members
        .iter()
        .filter_map(|m| std::fs::read_dir(m.join("patches")).ok())
        .flat_map(|d| d.map(|e| e.unwrap().path()))
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .expect("a patch log");
    let dir = log.parent().unwrap().to_path_buf();
    let mut bytes = std::fs::read(&log).unwrap();
    let cut = forge(id, 1 << 40, 0xEE);
    let mut damaged = forge(id, (1 << 40) + 1, 0xEF);
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let other_pool = forge(
        shardfs::ec::ShardId {
            pool: [0x55; 16],
            ..id
        },
        1 << 41,
        0xDD,
    );
    let no_such_generation = forge(
        shardfs::ec::ShardId {
            generation: id.generation + 1_000_000,
            ..id
        },
        1 << 41,
        0xDC,
    );
    let mut planted = vec![0u8; 333]; // a hole
    planted.extend(&cut[..150]);
    planted.extend(&damaged);
    planted.extend(b"SPAT junk");
    planted.extend(&other_pool);
    planted.extend(&no_such_generation);
    // whole blocks, so that the shard records behind stay at 4 KiB
    // boundaries
    planted.resize(planted.len().next_multiple_of(4096), 0);
    bytes.splice(0..0, planted);
    bytes.extend(&cut[..150]); // a torn tail
    std::fs::write(&log, &bytes).unwrap();
    std::fs::write(dir.join("notes"), forge(id, 1 << 42, 0xCC)).unwrap();
    let (out, _, output) = disaster(&t, None);
    assert!(output.contains("0 stripes unrecoverable"), "{output}");
    let got = recovered(&out, "bkt/f");
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "the patched bytes, and none of the planted ones"
    );
    assert!(output.contains(" applied, 0 left out ("), "{output}");
    // the cut, damaged and torn records and the junk; the other pool's
    let rejected: u64 = output
        .split(" rejected")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rejected count: {output}"));
    assert!(rejected >= 5, "{output}");
}

/// With a member gone, every patch still has a copy on another member:
/// a stripe whose lost shard is data is decoded from parity and patched,
/// and one whose lost shard is parity is patched too. The daemon is
/// killed right after the fsync.
#[test]
fn a_lost_member_leaves_a_copy_of_every_patch() {
    let mut t = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
    // 8 full stripes and a short one, each over all 6 members
    let mut want = striped_file(&t, 140_000);
    // a member holding a data shard of a full stripe and a parity shard of
    // another (placement varies by stripe), and both stripes patched there
    let (m, (sd, d), sp) = (0..6)
        .find_map(|m| {
            let held: Vec<(u64, u8)> = (0..9u64)
                .map(|s| (s, (0..6u8).find(|&i| shard_of(&t, s, i).0 == m).unwrap()))
                .collect();
            let data = *held.iter().find(|&&(s, i)| s < 8 && i < 4)?;
            let parity = held.iter().find(|h| h.1 >= 4)?.0;
            Some((m, data, parity))
        })
        .expect("a member with a data shard of one stripe and parity of another");
    let mut ranges = OVERWRITES.to_vec();
    ranges.push((sd as usize * 16_384 + d as usize * 4096 + 2_000, 100));
    ranges.push((sp as usize * 16_384 + 1_000, 20));
    overwrite(&t, "bkt/f", &mut want, &ranges);
    t.kill9();
    assert!(
        patch_log_bytes(&t) > 0,
        "the overwrites were written as patches"
    );
    let (out, _, output) = disaster(&t, Some(m));
    assert!(output.contains("0 stripes unrecoverable"), "{output}");
    let got = recovered(&out, "bkt/f");
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "the patched bytes, over stripes decoded without the member"
    );
    assert!(output.contains(" applied, 0 left out ("), "{output}");
}

/// The mount takes paths of any length (255-byte components); the
/// recovery's output tree takes PATH_MAX. A file deeper than that is not
/// recreated at its path: its object stays in lost+found, the count is
/// printed, and every other file is recovered as usual.
#[test]
fn a_path_longer_than_path_max_leaves_its_object_in_lost_and_found() {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::{mkdirat, Mode};
    let mut t = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
    std::fs::create_dir_all(t.p("bkt")).unwrap();
    let normal = pattern(3, 9_000);
    std::fs::write(t.p("bkt/normal"), &normal).unwrap();
    // 17 directories of 250 bytes: over 4,250 bytes below the bucket
    let deep = pattern(4, 10_000);
    let mut dir = std::fs::File::open(t.p("bkt")).unwrap();
    for i in 0..17u8 {
        let name = format!("{}{:0>249}", (b'a' + i) as char, "");
        mkdirat(&dir, name.as_str(), Mode::from_bits_truncate(0o755)).unwrap();
        let fd = openat(
            &dir,
            name.as_str(),
            OFlag::O_DIRECTORY | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .unwrap();
        dir = std::fs::File::from(fd);
    }
    let fd = openat(
        &dir,
        "deep-file",
        OFlag::O_CREAT | OFlag::O_WRONLY,
        Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let mut f = std::fs::File::from(fd);
    std::io::Write::write_all(&mut f, &deep).unwrap();
    f.sync_all().unwrap();
    drop((f, dir));
    t.unmount();
    let (out, _, output) = disaster(&t, None);
    assert!(
        output.contains("1 paths were longer than PATH_MAX"),
        "{output}"
    );
    assert_eq!(std::fs::read(out.join("bkt/normal")).unwrap(), normal);
    let lost: Vec<Vec<u8>> = std::fs::read_dir(out.join("lost+found"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        lost.contains(&deep),
        "the deep file's object is in lost+found"
    );
}

/// Fsynced small overwrites of one stripe: it takes a full set of
/// patches, then they are merged into one patch with the new bytes, and
/// patched again. Through the mount after a remount, and recovered from the
/// members alone (metadata gone: the scan finds the merged record beside
/// the old ones, which it stands for), the file holds every overwrite.
#[test]
fn merged_patches_read_back_and_come_back_from_the_members_alone() {
    let mut t = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
    let mut want = striped_file(&t, 60_000);
    for i in 0..shardfs::fs::MAX_PATCHES + 4 {
        // stripe 1 (bytes 16 384..32 768), offsets spread over it
        let off = 16_384 + (i * 1_733) % 16_000;
        overwrite(&t, "bkt/f", &mut want, &[(off, 100)]);
    }
    let (ok, metrics, err) = t.ctl(&["metrics"]);
    assert!(ok, "{err}");
    let count = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(count("shardfs_pool_merged_patches_total "), 1, "{metrics}");
    assert_eq!(count("shardfs_pool_full_patch_rewrites_total "), 0);
    assert_eq!(std::fs::read(t.p("bkt/f")).unwrap(), want);
    t.remount();
    assert_eq!(
        std::fs::read(t.p("bkt/f")).unwrap(),
        want,
        "after a remount"
    );
    t.unmount();
    let (out, _, output) = disaster(&t, None);
    assert!(output.contains("0 stripes unrecoverable"), "{output}");
    assert!(
        recovered(&out, "bkt/f") == want,
        "recovered from the members"
    );
}
