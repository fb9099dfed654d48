//! POSIX behaviour through a real FUSE mount.

mod common;
use common::*;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Small stripes (4 KiB shards, 16 KiB stripes, 2 KiB inline) so tests
/// cross many stripe boundaries quickly.
const SMALL: &[&str] = &["--shard-size", "4096", "--inline-max", "2048"];

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

#[test]
fn buckets_follow_s3_naming_and_root_holds_only_buckets() {
    let t = TestMount::new(6, &[]);
    fs::create_dir(t.p("good-bucket.1")).unwrap();
    for bad in [
        "ab",
        "Upper",
        "-lead",
        "trail-",
        "192.168.0.1",
        "under_score",
        "a..b",
    ] {
        assert_eq!(errno(fs::create_dir(t.p(bad))), libc::EINVAL, "{bad}");
    }
    assert_eq!(errno(fs::create_dir(t.p(&"a".repeat(64)))), libc::EINVAL);
    assert_eq!(errno(File::create(t.p("rootfile"))), libc::EPERM);
    assert_eq!(
        errno(std::os::unix::fs::symlink("x", t.p("rootlink"))),
        libc::EPERM
    );
    let fifo = cpath(&t.p("rootfifo"));
    // SAFETY: valid path; mkfifo only creates a node.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );
    fs::write(t.p("good-bucket.1/k"), b"v").unwrap();
    assert_eq!(
        errno(fs::rename(t.p("good-bucket.1/k"), t.p("k"))),
        libc::EPERM
    );
    assert_eq!(errno(fs::remove_dir(t.p("good-bucket.1"))), libc::ENOTEMPTY);
    fs::remove_file(t.p("good-bucket.1/k")).unwrap();
    fs::remove_dir(t.p("good-bucket.1")).unwrap();
    let names: Vec<_> = fs::read_dir(&t.mnt).unwrap().collect();
    assert!(names.is_empty());
}

#[test]
fn errors_have_the_right_errno() {
    let t = TestMount::new(6, &[]);
    fs::create_dir(t.p("bkt")).unwrap();
    fs::write(t.p("bkt/file"), b"x").unwrap();
    fs::create_dir(t.p("bkt/dir")).unwrap();
    fs::write(t.p("bkt/dir/inner"), b"x").unwrap();
    assert_eq!(errno(File::open(t.p("bkt/missing"))), libc::ENOENT);
    assert_eq!(errno(fs::create_dir(t.p("bkt/dir"))), libc::EEXIST);
    assert_eq!(
        errno(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(t.p("bkt/file"))
        ),
        libc::EEXIST
    );
    assert_eq!(errno(fs::remove_dir(t.p("bkt/dir"))), libc::ENOTEMPTY);
    assert_eq!(errno(fs::remove_file(t.p("bkt/dir"))), libc::EISDIR);
    assert_eq!(
        errno(OpenOptions::new().write(true).open(t.p("bkt/dir"))),
        libc::EISDIR
    );
    assert_eq!(errno(fs::remove_dir(t.p("bkt/file"))), libc::ENOTDIR);
    assert_eq!(errno(File::open(t.p("bkt/file/x"))), libc::ENOTDIR);
    assert_eq!(
        errno(fs::rename(t.p("bkt/dir"), t.p("bkt/file"))),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(fs::rename(t.p("bkt/file"), t.p("bkt/dir"))),
        libc::EISDIR
    );
    fs::create_dir(t.p("bkt/empty")).unwrap();
    assert_eq!(
        errno(fs::rename(t.p("bkt/empty"), t.p("bkt/dir"))),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno(fs::rename(t.p("bkt/dir"), t.p("bkt/dir/sub"))),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs::hard_link(t.p("bkt/dir"), t.p("bkt/dirlink"))),
        libc::EPERM
    );
}

#[test]
fn components_over_255_bytes_get_enametoolong_and_long_keys_work() {
    let t = TestMount::new(6, &[]);
    fs::create_dir(t.p("bkt")).unwrap();
    let long = "n".repeat(256);
    assert_eq!(
        errno(File::create(t.p(&format!("bkt/{long}")))),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno(fs::metadata(t.p(&format!("bkt/{long}")))),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno(fs::create_dir(t.p(&format!("bkt/{long}")))),
        libc::ENAMETOOLONG
    );
    let ok = "n".repeat(255);
    fs::write(t.p(&format!("bkt/{ok}")), b"x").unwrap();
    // keys have no limit of their own (S3's 1024 bytes is not enforced
    // through the mount): 5 levels of 250 bytes and a file below them
    let c = "d".repeat(250);
    let mut p = String::from("bkt");
    for _ in 0..5 {
        p = format!("{p}/{c}");
        fs::create_dir(t.p(&p)).unwrap();
    }
    fs::write(t.p(&format!("{p}/{}", "f".repeat(255))), b"x").unwrap();
    assert_eq!(
        errno(File::create(t.p(&format!("{p}/{}", "f".repeat(256))))),
        libc::ENAMETOOLONG
    );
}

#[test]
fn files_of_every_size_round_trip_and_survive_remount() {
    let mut t = TestMount::new(6, SMALL);
    fs::create_dir(t.p("bkt")).unwrap();
    let ss = 16384usize;
    let sizes = [
        0,
        1,
        2047,
        2048,
        2049,
        ss - 1,
        ss,
        ss + 1,
        3 * ss + 5000,
        40 * ss,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        fs::write(t.p(&format!("bkt/f{i}")), pattern(i as u64, n)).unwrap();
    }
    for (i, &n) in sizes.iter().enumerate() {
        assert_eq!(
            fs::read(t.p(&format!("bkt/f{i}"))).unwrap(),
            pattern(i as u64, n),
            "size {n}"
        );
        assert_eq!(
            fs::metadata(t.p(&format!("bkt/f{i}"))).unwrap().len(),
            n as u64
        );
    }
    t.remount();
    for (i, &n) in sizes.iter().enumerate() {
        assert_eq!(
            fs::read(t.p(&format!("bkt/f{i}"))).unwrap(),
            pattern(i as u64, n),
            "size {n} after remount"
        );
    }
}

/// Random writes, overwrites, appends and truncates compared with a Vec.
#[test]
fn random_writes_truncates_and_sparse_files_match_a_model() {
    let mut t = TestMount::new(6, SMALL);
    fs::create_dir(t.p("bkt")).unwrap();
    let path = t.p("bkt/model");
    let mut model: Vec<u8> = Vec::new();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let mut rng = 12345u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for step in 0..300 {
        match next(10) {
            0..=5 => {
                // write at an offset clustered at stripe boundaries
                let base = [0u64, 2048, 4096, 16384, 32768, 100_000][next(6) as usize];
                let off = (base + next(3000)).saturating_sub(1500);
                let len = [1u64, 100, 4096, 16384, 20000][next(5) as usize];
                let data = pattern(step, len as usize);
                f.seek(SeekFrom::Start(off)).unwrap();
                f.write_all(&data).unwrap();
                let end = (off + len) as usize;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
            6 | 7 => {
                let len = next(120_000);
                f.set_len(len).unwrap();
                model.resize(len as usize, 0);
            }
            8 => {
                f.sync_all().unwrap();
            }
            _ => {
                let off = next(model.len() as u64 + 1);
                let len = next(40_000) as usize;
                let mut buf = vec![0u8; len];
                f.seek(SeekFrom::Start(off)).unwrap();
                let mut got = 0;
                while got < len {
                    let n = f.read(&mut buf[got..]).unwrap();
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                let want_end = (off as usize + len).min(model.len());
                let want = &model[(off as usize).min(want_end)..want_end];
                assert_eq!(&buf[..got], want, "step {step} read at {off}");
            }
        }
    }
    drop(f);
    assert_eq!(fs::read(&path).unwrap(), model);
    t.remount();
    assert_eq!(fs::read(&path).unwrap(), model, "after remount");
}

#[test]
fn sparse_files_read_holes_as_zeros_and_append_works() {
    let t = TestMount::new(6, SMALL);
    fs::create_dir(t.p("bkt")).unwrap();
    let p = t.p("bkt/sparse");
    let mut f = File::create(&p).unwrap();
    f.seek(SeekFrom::Start(1_000_000)).unwrap();
    f.write_all(b"end").unwrap();
    drop(f);
    let data = fs::read(&p).unwrap();
    assert_eq!(data.len(), 1_000_003);
    assert!(data[..1_000_000].iter().all(|&b| b == 0));
    assert_eq!(&data[1_000_000..], b"end");
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"+more").unwrap();
    drop(a);
    assert_eq!(&fs::read(&p).unwrap()[1_000_000..], b"end+more");
    // grow with truncate: new bytes are zeros, even past a shrink
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(10).unwrap();
    f.set_len(50_000).unwrap();
    drop(f);
    let d = fs::read(&p).unwrap();
    assert_eq!(d.len(), 50_000);
    assert!(d.iter().all(|&b| b == 0));
}

#[test]
fn unlink_while_open_keeps_data_until_last_close_then_reclaims() {
    let t = TestMount::new(6, SMALL);
    fs::create_dir(t.p("bkt")).unwrap();
    let data = pattern(7, 200_000);
    fs::write(t.p("bkt/f"), &data).unwrap();
    let before = t.shard_files().len();
    assert!(before > 0);
    let mut f = File::open(t.p("bkt/f")).unwrap();
    fs::remove_file(t.p("bkt/f")).unwrap();
    assert_eq!(errno(fs::metadata(t.p("bkt/f"))), libc::ENOENT);
    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert_eq!(got, data);
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    drop(f);
    // deletion is committed with the next metadata flush
    let start = std::time::Instant::now();
    while !t.shard_files().is_empty() && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        t.shard_files(),
        vec![],
        "shards of the deleted file reclaimed"
    );
}

#[test]
fn overwrite_reclaims_old_shards() {
    let t = TestMount::new(6, SMALL);
    fs::create_dir(t.p("bkt")).unwrap();
    fs::write(t.p("bkt/f"), pattern(1, 160_000)).unwrap();
    for i in 0..3 {
        fs::write(t.p("bkt/f"), pattern(i + 2, 160_000)).unwrap();
    }
    let f = File::open(t.p("bkt/f")).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let stripes = 160_000usize.div_ceil(16384);
    let start = std::time::Instant::now();
    while t.shard_files().len() != stripes * 6 && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(t.shard_files().len(), stripes * 6);
    assert_eq!(fs::read(t.p("bkt/f")).unwrap(), pattern(4, 160_000));
}

#[test]
fn rename_replaces_atomically_across_dirs_and_buckets() {
    let t = TestMount::new(6, &[]);
    fs::create_dir(t.p("one")).unwrap();
    fs::create_dir(t.p("two")).unwrap();
    fs::create_dir(t.p("one/d")).unwrap();
    fs::write(t.p("one/a"), b"A").unwrap();
    fs::write(t.p("one/b"), b"B").unwrap();
    fs::rename(t.p("one/a"), t.p("one/b")).unwrap();
    assert_eq!(fs::read(t.p("one/b")).unwrap(), b"A");
    assert_eq!(errno(fs::metadata(t.p("one/a"))), libc::ENOENT);
    fs::rename(t.p("one/b"), t.p("one/d/c")).unwrap();
    assert_eq!(fs::read(t.p("one/d/c")).unwrap(), b"A");
    fs::rename(t.p("one/d"), t.p("two/d2")).unwrap();
    assert_eq!(fs::read(t.p("two/d2/c")).unwrap(), b"A");
    assert_eq!(fs::metadata(t.p("one")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(t.p("two")).unwrap().nlink(), 3);
    // a directory may become a bucket only with a valid bucket name
    assert_eq!(
        errno(fs::rename(t.p("two/d2"), t.p("Bad_Name"))),
        libc::EINVAL
    );
    fs::rename(t.p("two/d2"), t.p("three")).unwrap();
    assert_eq!(fs::read(t.p("three/c")).unwrap(), b"A");
    // replacing an empty directory
    fs::create_dir(t.p("one/x")).unwrap();
    fs::create_dir(t.p("one/y")).unwrap();
    fs::rename(t.p("one/x"), t.p("one/y")).unwrap();
    assert_eq!(fs::metadata(t.p("one")).unwrap().nlink(), 3);
}

#[test]
fn hard_links_and_symlinks() {
    let t = TestMount::new(6, &[]);
    fs::create_dir(t.p("bkt")).unwrap();
    fs::write(t.p("bkt/a"), b"data").unwrap();
    fs::hard_link(t.p("bkt/a"), t.p("bkt/b")).unwrap();
    // no stale link count right after ln
    assert_eq!(fs::metadata(t.p("bkt/a")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(t.p("bkt/b")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(t.p("bkt/a")).unwrap().ino(),
        fs::metadata(t.p("bkt/b")).unwrap().ino()
    );
    fs::remove_file(t.p("bkt/a")).unwrap();
    assert_eq!(fs::metadata(t.p("bkt/b")).unwrap().nlink(), 1);
    assert_eq!(fs::read(t.p("bkt/b")).unwrap(), b"data");
    std::os::unix::fs::symlink("b", t.p("bkt/s")).unwrap();
    assert_eq!(fs::read_link(t.p("bkt/s")).unwrap(), Path::new("b"));
    assert_eq!(fs::read(t.p("bkt/s")).unwrap(), b"data");
    assert!(fs::symlink_metadata(t.p("bkt/s"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn chmod_chown_utimens_show_at_once_and_permissions_are_enforced() {
    let t = TestMount::new(6, &[]);
    fs::create_dir(t.p("bkt")).unwrap();
    fs::set_permissions(t.p("bkt"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(t.p("bkt/f"), b"secret").unwrap();
    fs::set_permissions(t.p("bkt/f"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(t.p("bkt/f")).unwrap().mode() & 0o7777, 0o600);
    std::os::unix::fs::chown(t.p("bkt/f"), Some(1234), Some(5678)).unwrap();
    let m = fs::metadata(t.p("bkt/f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    std::os::unix::fs::chown(t.p("bkt/f"), Some(0), Some(0)).unwrap();
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    File::options()
        .write(true)
        .open(t.p("bkt/f"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(fs::metadata(t.p("bkt/f")).unwrap().mtime(), 1_000_000_000);
    // a non-root user can neither read the 0600 file nor write it
    let st = std::process::Command::new("cat")
        .arg(t.p("bkt/f"))
        .uid(65534)
        .gid(65534)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!st.status.success());
    assert!(String::from_utf8_lossy(&st.stderr).contains("Permission denied"));
    fs::set_permissions(t.p("bkt/f"), fs::Permissions::from_mode(0o644)).unwrap();
    let st = std::process::Command::new("cat")
        .arg(t.p("bkt/f"))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(st.status.success());
    assert_eq!(st.stdout, b"secret");
    // cp -p keeps mode and times
    sh(&t.p("bkt"), "cp -p f g");
    let (a, b) = (
        fs::metadata(t.p("bkt/f")).unwrap(),
        fs::metadata(t.p("bkt/g")).unwrap(),
    );
    assert_eq!((a.mtime(), a.mode()), (b.mtime(), b.mode()));
}

use std::os::unix::process::CommandExt;

#[test]
fn user_xattrs() {
    let t = TestMount::new(6, &[]);
    fs::create_dir(t.p("bkt")).unwrap();
    fs::write(t.p("bkt/f"), b"x").unwrap();
    let p = cpath(&t.p("bkt/f"));
    let set = |name: &str, val: &[u8], flags: i32| -> i32 {
        let n = CString::new(name).unwrap();
        // SAFETY: valid pointers and lengths.
        let r = unsafe {
            libc::setxattr(
                p.as_ptr(),
                n.as_ptr(),
                val.as_ptr() as *const _,
                val.len(),
                flags,
            )
        };
        if r == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        }
    };
    let get = |name: &str| -> Result<Vec<u8>, i32> {
        let n = CString::new(name).unwrap();
        let mut buf = vec![0u8; 1024];
        // SAFETY: valid pointers and lengths.
        let r = unsafe {
            libc::getxattr(
                p.as_ptr(),
                n.as_ptr(),
                buf.as_mut_ptr() as *mut _,
                buf.len(),
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap())
        } else {
            buf.truncate(r as usize);
            Ok(buf)
        }
    };
    assert_eq!(set("user.color", b"blue", 0), 0);
    assert_eq!(get("user.color"), Ok(b"blue".to_vec()));
    assert_eq!(set("user.color", b"red", libc::XATTR_CREATE), libc::EEXIST);
    assert_eq!(set("user.size", b"1", libc::XATTR_REPLACE), libc::ENODATA);
    assert_eq!(set("user.color", b"red", libc::XATTR_REPLACE), 0);
    assert_eq!(get("user.color"), Ok(b"red".to_vec()));
    assert_eq!(get("user.none"), Err(libc::ENODATA));
    // trusted.* is stored for root (overlayfs keeps its state there)
    assert_eq!(set("trusted.overlay.opaque", b"y", 0), 0);
    assert_eq!(get("trusted.overlay.opaque"), Ok(b"y".to_vec()));
    assert_eq!(set("trusted.", b"1", 0), libc::EOPNOTSUPP);
    assert_eq!(set("system.shardfs_test", b"1", 0), libc::EOPNOTSUPP);
    let mut list = vec![0u8; 256];
    // SAFETY: valid pointers and lengths.
    let n = unsafe { libc::listxattr(p.as_ptr(), list.as_mut_ptr() as *mut _, list.len()) };
    assert_eq!(&list[..n as usize], b"trusted.overlay.opaque\0user.color\0");
    // an unprivileged user sees user.* only, and may neither read nor set
    // trusted.* (the kernel refuses; shardfs hides the names)
    let top = t.p("").parent().unwrap().to_path_buf();
    fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(t.p("bkt/f"), fs::Permissions::from_mode(0o666)).unwrap();
    let script = format!(
        "import os, errno\n\
         p = {:?}\n\
         print(sorted(os.listxattr(p)))\n\
         for f in (lambda: os.getxattr(p, 'trusted.overlay.opaque'), \
                   lambda: os.setxattr(p, 'trusted.mine', b'1')):\n\
         \x20   try:\n\
         \x20       f(); print('allowed')\n\
         \x20   except OSError as e:\n\
         \x20       print(errno.errorcode[e.errno])\n",
        t.p("bkt/f").to_str().unwrap()
    );
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .output()
        .expect("setpriv and python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "['user.color']\nENODATA\nEPERM\n"
    );
    let name = CString::new("user.color").unwrap();
    // SAFETY: valid pointers.
    assert_eq!(unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) }, 0);
    assert_eq!(get("user.color"), Err(libc::ENODATA));
    let name = CString::new("trusted.overlay.opaque").unwrap();
    // SAFETY: valid pointers.
    assert_eq!(unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) }, 0);
    assert_eq!(get("trusted.overlay.opaque"), Err(libc::ENODATA));
}

#[test]
fn statfs_reports_capacity_after_parity() {
    let t = TestMount::new(6, &[]);
    let mut ours: libc::statvfs = unsafe { std::mem::zeroed() };
    let mut raw: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid paths and out-pointers.
    unsafe {
        assert_eq!(libc::statvfs(cpath(&t.mnt).as_ptr(), &mut ours), 0);
        assert_eq!(libc::statvfs(cpath(&t.members[0]).as_ptr(), &mut raw), 0);
    }
    let ours_total = ours.f_blocks as f64 * ours.f_frsize as f64;
    let raw_total = raw.f_blocks as f64 * raw.f_frsize as f64;
    // six members on one filesystem: that filesystem counted once, 4/6
    // of it usable after parity (not 6 x raw x 4/6)
    let ratio = ours_total / raw_total;
    assert!((0.65..0.68).contains(&ratio), "ratio {ratio}");
    assert_eq!(ours.f_namemax, 255);
}

#[test]
fn shared_writable_mmap_persists() {
    let mut t = TestMount::new(6, SMALL);
    fs::create_dir(t.p("bkt")).unwrap();
    let p = t.p("bkt/m");
    let len = 100_000usize;
    fs::write(&p, vec![b'a'; len]).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    // SAFETY: mapping a file we hold open, of the length it has.
    unsafe {
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(ptr, libc::MAP_FAILED);
        let s = std::slice::from_raw_parts_mut(ptr as *mut u8, len);
        s[5] = b'X';
        s[50_000] = b'Y';
        s[len - 1] = b'Z';
        assert_eq!(libc::msync(ptr, len, libc::MS_SYNC), 0);
        assert_eq!(libc::munmap(ptr, len), 0);
    }
    drop(f);
    let d = fs::read(&p).unwrap();
    assert_eq!(
        (d[5], d[50_000], d[len - 1], d[6]),
        (b'X', b'Y', b'Z', b'a')
    );
    t.remount();
    let d = fs::read(&p).unwrap();
    assert_eq!((d[5], d[50_000], d[len - 1]), (b'X', b'Y', b'Z'));
}

#[test]
fn flock_and_fcntl_locks_exclude_other_processes() {
    let t = TestMount::new(6, &[]);
    fs::create_dir(t.p("bkt")).unwrap();
    fs::write(t.p("bkt/lock"), b"").unwrap();
    let f = File::open(t.p("bkt/lock")).unwrap();
    // SAFETY: valid fd.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    let other = std::process::Command::new("python3")
        .arg("-c")
        .arg("import fcntl,sys\nf=open(sys.argv[1])\ntry:\n  fcntl.flock(f, fcntl.LOCK_EX|fcntl.LOCK_NB); print('got')\nexcept BlockingIOError: print('busy')")
        .arg(t.p("bkt/lock"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&other.stdout).trim(), "busy");
    // SAFETY: valid fd.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) }, 0);
    let fw = OpenOptions::new()
        .write(true)
        .open(t.p("bkt/lock"))
        .unwrap();
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    // SAFETY: valid fd and struct.
    assert_eq!(
        unsafe { libc::fcntl(fw.as_raw_fd(), libc::F_SETLK, &fl) },
        0
    );
    let other = std::process::Command::new("python3")
        .arg("-c")
        .arg("import fcntl,sys\nf=open(sys.argv[1],'w')\ntry:\n  fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB); print('got')\nexcept OSError: print('busy')")
        .arg(t.p("bkt/lock"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&other.stdout).trim(), "busy");
}

#[test]
fn readdir_offsets_stay_valid_while_the_directory_changes() {
    let t = TestMount::new(6, &[]);
    fs::create_dir(t.p("bkt")).unwrap();
    for i in 0..300 {
        fs::write(t.p(&format!("bkt/f{i:03}")), b"").unwrap();
    }
    let dir = cpath(&t.p("bkt"));
    let mut seen = std::collections::HashMap::new();
    // SAFETY: libc directory stream used on one thread and closed at the end.
    unsafe {
        let d = libc::opendir(dir.as_ptr());
        assert!(!d.is_null());
        let mut count = 0;
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                .to_string_lossy()
                .into_owned();
            *seen.entry(name).or_insert(0) += 1;
            count += 1;
            if count == 50 {
                // change the directory mid-listing: delete files not yet
                // listed (any of them) and add new ones
                for i in (200..300).step_by(2) {
                    let _ = fs::remove_file(t.p(&format!("bkt/f{i:03}")));
                }
                for i in 0..100 {
                    fs::write(t.p(&format!("bkt/new{i:03}")), b"").unwrap();
                }
            }
        }
        libc::closedir(d);
    }
    // every entry that existed throughout was returned exactly once
    for i in (0..300).filter(|i| *i < 200 || i % 2 == 1) {
        assert_eq!(seen.get(&format!("f{i:03}")), Some(&1), "f{i:03}");
    }
    assert!(seen.values().all(|&c| c == 1), "no duplicates");
}

#[test]
fn fsync_fdatasync_and_empty_directories_persist() {
    let mut t = TestMount::new(6, &[]);
    fs::create_dir_all(t.p("bkt/a/b/c")).unwrap();
    let mut f = File::create(t.p("bkt/a/x")).unwrap();
    f.write_all(b"hello").unwrap();
    f.sync_data().unwrap();
    f.sync_all().unwrap();
    drop(f);
    t.remount();
    assert!(fs::metadata(t.p("bkt/a/b/c")).unwrap().is_dir());
    assert_eq!(fs::read(t.p("bkt/a/x")).unwrap(), b"hello");
}

#[test]
fn a_full_pool_returns_enospc_and_recovers_after_delete() {
    // six 24 MiB members (8 MiB of each go to the metadata log)
    let t = TestMount::new_with(6, &[], Some(24));
    fs::create_dir(t.p("bkt")).unwrap();
    let chunk = pattern(1, 1 << 20);
    let mut f = File::create(t.p("bkt/big")).unwrap();
    let mut err = None;
    for _ in 0..200 {
        if let Err(e) = f.write_all(&chunk) {
            err = Some(e);
            break;
        }
    }
    let e = err
        .or_else(|| f.sync_all().err())
        .expect("the pool fills up");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    drop(f);
    assert!(t.log_text().contains("ENOSPC"));
    fs::remove_file(t.p("bkt/big")).unwrap();
    // space comes back once the deletion is committed
    let start = std::time::Instant::now();
    loop {
        let r = fs::write(t.p("bkt/after"), pattern(2, 5 << 20));
        if r.is_ok() {
            break;
        }
        assert!(start.elapsed().as_secs() < 10, "space not reclaimed: {r:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(fs::read(t.p("bkt/after")).unwrap(), pattern(2, 5 << 20));
}

/// Run `sh -c script` as user nobody (65534): no CAP_FSETID.
fn as_nobody(script: &str) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv (util-linux)")
}

/// With FUSE_HANDLE_KILLPRIV_V2 the kernel no longer asks for
/// security.capability before every write; shardfs clears set-user-id and
/// set-group-id itself when an unprivileged process writes or truncates,
/// as ext4 does, and a privileged writer keeps them.
#[test]
fn unprivileged_write_and_truncate_clear_setuid_and_setgid() {
    let t = TestMount::new(6, SMALL);
    // nobody must reach the mount: open the test directory's mode
    let top = t.p("").parent().unwrap().to_path_buf();
    fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(t.p("bkt")).unwrap();
    for (name, how) in [("w", "printf x >> {}"), ("t", "truncate -s 1 {}")] {
        let f = t.p(&format!("bkt/{name}"));
        fs::write(&f, b"hello").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o6777)).unwrap();
        // root (CAP_FSETID) writing keeps the bits
        OpenOptions::new()
            .append(true)
            .open(&f)
            .unwrap()
            .write_all(b"!")
            .unwrap();
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o6777, "{name}");
        let out = as_nobody(&how.replace("{}", f.to_str().unwrap()));
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            fs::metadata(&f).unwrap().mode() & 0o7777,
            0o0777,
            "{name}: set-user-id and set-group-id cleared"
        );
    }
}

/// A counter of the daemon's metrics (`shardctl metrics`), by its full
/// sample name, e.g. `shardfs_fuse_requests_total{op="getxattr"}`.
fn metric(t: &TestMount, sample: &str) -> f64 {
    let (ok, text, err) = t.ctl(&["metrics"]);
    assert!(ok, "shardctl metrics: {err}");
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Issue 15: a small file's create+write+close is LOOKUP, CREATE, WRITE,
/// FLUSH (and RELEASE): the kernel asks no getxattr(security.capability)
/// before the first write of the new inode (the handle of a write-only
/// create is direct I/O), and the close is one metadata commit.
#[test]
fn small_file_create_asks_no_getxattr_and_commits_once() {
    let t = TestMount::new(6, &[]);
    fs::create_dir_all(t.p("bkt/d")).unwrap();
    let n = 40;
    let xattrs = metric(&t, "shardfs_fuse_requests_total{op=\"getxattr\"}");
    let commits = metric(&t, "shardfs_meta_commits_total");
    let started = std::time::Instant::now();
    for i in 0..n {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(t.p(&format!("bkt/d/f{i}")))
            .unwrap();
        f.write_all(&pattern(i, 4096)).unwrap();
    }
    let elapsed = started.elapsed();
    let xattrs = metric(&t, "shardfs_fuse_requests_total{op=\"getxattr\"}") - xattrs;
    let commits = metric(&t, "shardfs_meta_commits_total") - commits;
    assert_eq!(xattrs, 0.0, "getxattr requests for {n} creates");
    // each close is durable: one commit each, and the 200 ms group
    // commit may have taken a create's batch on its own now and then
    let ticks = (elapsed.as_millis() / 200) as f64 + 1.0;
    assert!(
        commits >= n as f64 && commits <= n as f64 + ticks,
        "{commits} metadata commits for {n} creates in {elapsed:?}"
    );
    for i in 0..n {
        assert_eq!(
            fs::read(t.p(&format!("bkt/d/f{i}"))).unwrap(),
            pattern(i, 4096)
        );
    }
}

/// The direct-I/O handle of a write-only create stays coherent with a
/// cached reader of the same file: a read after the write sees it.
#[test]
fn write_through_a_created_handle_is_seen_by_a_cached_reader() {
    let t = TestMount::new(6, SMALL);
    fs::create_dir(t.p("bkt")).unwrap();
    let p = t.p("bkt/f");
    let w = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap();
    use std::os::unix::fs::FileExt;
    w.write_all_at(&[b'a'; 8192], 0).unwrap();
    let r = File::open(&p).unwrap();
    let mut buf = vec![0u8; 8192];
    r.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, vec![b'a'; 8192]);
    // the reader has the pages cached now; overwrite part of them
    w.write_all_at(&[b'b'; 100], 4000).unwrap();
    r.read_exact_at(&mut buf, 0).unwrap();
    let mut want = vec![b'a'; 8192];
    want[4000..4100].fill(b'b');
    assert_eq!(buf, want, "the cached reader sees the write");
    // growth too
    w.write_all_at(b"tail", 8192).unwrap();
    let mut all = Vec::new();
    File::open(&p).unwrap().read_to_end(&mut all).unwrap();
    assert_eq!(all.len(), 8196);
    assert_eq!(fs::metadata(&p).unwrap().len(), 8196);
}

/// A write by an unprivileged process through the handle of its own
/// write-only create (direct I/O) clears set-user-id and set-group-id as
/// a cached write does; root's keeps them.
#[test]
fn unprivileged_write_through_a_created_handle_clears_setuid_and_setgid() {
    let t = TestMount::new(6, SMALL);
    let top = t.p("").parent().unwrap().to_path_buf();
    fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(t.p("bkt")).unwrap();
    fs::set_permissions(t.p("bkt"), fs::Permissions::from_mode(0o777)).unwrap();
    // root: the bits stay
    let f = t.p("bkt/root");
    {
        let mut h = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&f)
            .unwrap();
        h.set_permissions(fs::Permissions::from_mode(0o6777))
            .unwrap();
        h.write_all(b"x").unwrap();
    }
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o6777);
    // nobody: its own file, made set-user/group-id, then written
    let f = t.p("bkt/nobody");
    let script = format!(
        "import os\n\
         fd = os.open({p:?}, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)\n\
         os.fchmod(fd, 0o6777)\n\
         assert os.fstat(fd).st_mode & 0o7777 == 0o6777, oct(os.fstat(fd).st_mode)\n\
         os.write(fd, b'x')\n\
         print(oct(os.fstat(fd).st_mode & 0o7777))\n\
         os.close(fd)\n\
         print(oct(os.stat({p:?}).st_mode & 0o7777))\n",
        p = f.to_str().unwrap()
    );
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .output()
        .expect("setpriv (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "0o777\n0o777\n", "as nobody sees it");
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o0777);
}
