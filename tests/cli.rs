//! mkfs and mount refuse bad input with a message naming the directory
//! and the fix; the mount stops cleanly on signals and fusermount3 -u.

mod common;
use common::*;
use std::process::Command;

fn shardfs(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(SHARDFS).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn mkfs_refuses_too_few_members_bad_layouts_and_used_dirs() {
    let d = tempfile::tempdir().unwrap();
    let dirs: Vec<std::path::PathBuf> = (0..6).map(|i| d.path().join(format!("m{i}"))).collect();
    let os = |v: &[std::path::PathBuf]| {
        v.iter()
            .map(|p| p.as_os_str().to_owned())
            .collect::<Vec<_>>()
    };
    let mut args = vec![std::ffi::OsString::from("mkfs")];
    args.extend(os(&dirs[..5]));
    let (ok, err) = shardfs(&args.iter().map(|s| s.as_os_str()).collect::<Vec<_>>());
    assert!(!ok);
    assert!(
        err.contains("needs at least 6 member directories, 5 given"),
        "{err}"
    );
    let mut args = vec!["mkfs".into(), "--data".into(), "0".into()];
    args.extend(os(&dirs));
    let (ok, err) = shardfs(
        &args
            .iter()
            .map(|s: &std::ffi::OsString| s.as_os_str())
            .collect::<Vec<_>>(),
    );
    assert!(!ok && err.contains("at least 1 data"), "{err}");
    let mut args = vec![std::ffi::OsString::from("mkfs")];
    args.extend(os(&dirs));
    let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
    assert!(shardfs(&a).0);
    let (ok, err) = shardfs(&a);
    assert!(!ok && err.contains("already a shardfs member"), "{err}");
    let (ok, err) = shardfs(&[
        "mkfs".as_ref(),
        d.path().join("y0").as_os_str(),
        d.path().join("y0").as_os_str(),
        d.path().join("x1").as_os_str(),
        d.path().join("x2").as_os_str(),
        d.path().join("x3").as_os_str(),
        d.path().join("x4").as_os_str(),
    ]);
    assert!(!ok && err.contains("listed twice"), "{err}");
}

#[test]
fn mount_refuses_split_pools_duplicate_damaged_and_too_few_members() {
    let d = tempfile::tempdir().unwrap();
    let mk = |name: &str| -> Vec<std::path::PathBuf> {
        let v: Vec<_> = (0..6)
            .map(|i| d.path().join(format!("{name}{i}")))
            .collect();
        let mut c = Command::new(SHARDFS);
        c.arg("mkfs").args(&v);
        assert!(c.output().unwrap().status.success());
        v
    };
    let a = mk("a");
    let b = mk("b");
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let run = |members: &[&std::path::Path]| -> String {
        let out = Command::new(SHARDFS)
            .arg("mount")
            .arg("--socket")
            .arg(d.path().join("s.sock"))
            .args(members)
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(!out.status.success(), "mount should fail");
        assert!(!is_mounted(&mnt));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // as many members of one pool as of another: which pool is meant is
    // not clear (one stray member of another pool is left out, see
    // hardening::blank_and_foreign_member_dirs_mount_degraded_and_are_never_written)
    let mut foreign: Vec<&std::path::Path> = a[..3].iter().map(|p| p.as_path()).collect();
    foreign.extend(b[..3].iter().map(|p| p.as_path()));
    let err = run(&foreign);
    assert!(
        err.contains(&b[0].display().to_string()) && err.contains("belongs to pool"),
        "{err}"
    );
    let mut dup: Vec<&std::path::Path> = a.iter().map(|p| p.as_path()).collect();
    dup.push(&a[2]);
    let err = run(&dup);
    assert!(err.contains("listed twice"), "{err}");
    let copy = d.path().join("copy");
    let out = Command::new("cp")
        .arg("-a")
        .arg(&a[3])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut cp: Vec<&std::path::Path> = a[..5].iter().map(|p| p.as_path()).collect();
    cp.push(&copy);
    let err = run(&cp);
    assert!(err.contains("same member"), "{err}");
    // a damaged superblock is refused, never taken for a blank drive
    let damaged = d.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    std::fs::write(damaged.join("shardfs.superblock"), b"not a superblock").unwrap();
    let mut unf: Vec<&std::path::Path> = a[..5].iter().map(|p| p.as_path()).collect();
    unf.push(&damaged);
    let err = run(&unf);
    assert!(
        err.contains(&damaged.display().to_string()) && err.contains("superblock is damaged"),
        "{err}"
    );
    // only unformatted directories: nothing to mount
    let empties: Vec<std::path::PathBuf> = (0..6)
        .map(|i| {
            let e = d.path().join(format!("empty{i}"));
            std::fs::create_dir(&e).unwrap();
            e
        })
        .collect();
    let unf: Vec<&std::path::Path> = empties.iter().map(|p| p.as_path()).collect();
    let err = run(&unf);
    assert!(
        err.contains("not a formatted shardfs member") && err.contains("shardfs mkfs"),
        "{err}"
    );
    let few: Vec<&std::path::Path> = a[..3].iter().map(|p| p.as_path()).collect();
    let err = run(&few);
    assert!(err.contains("only 3 of the pool's 6 members"), "{err}");
    let missing = d.path().join("nope");
    let mut mm: Vec<&std::path::Path> = a[..5].iter().map(|p| p.as_path()).collect();
    mm.push(&missing);
    let err = run(&mm);
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

#[test]
fn sigint_and_fusermount_unmount_cleanly_and_data_stays() {
    let mut t = TestMount::new(6, &[]);
    std::fs::create_dir(t.p("bkt")).unwrap();
    std::fs::write(t.p("bkt/f"), b"kept").unwrap();
    // SIGINT
    let mut c = t.child.take().unwrap();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(c.id() as i32, libc::SIGINT);
    }
    let st = c.wait().unwrap();
    assert!(st.success(), "{}", t.log_text());
    assert!(!is_mounted(&t.mnt));
    t.mount();
    assert_eq!(std::fs::read(t.p("bkt/f")).unwrap(), b"kept");
    // fusermount3 -u (from the fuse3 package)
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(&t.mnt)
        .output()
        .expect("fusermount3 installed (apt-get install fuse3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = t.child.take().unwrap().wait().unwrap();
    assert!(st.success(), "{}", t.log_text());
    assert!(t.log_text().contains("unmounted cleanly"));
    t.mount();
    assert_eq!(std::fs::read(t.p("bkt/f")).unwrap(), b"kept");
}
