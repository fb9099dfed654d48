//! Panic containment (issue 14) through a real mount: a FUSE request that
//! panics answers EIO, is logged, and the mount keeps serving; corrupt
//! metadata answers EIO rather than crashing the daemon.

mod common;
use common::*;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `getxattr(path, name)` with a 256-byte buffer: the length or the errno.
fn getxattr(path: &Path, name: &str) -> Result<usize, i32> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: both strings are NUL-terminated and live across the call; the
    // buffer is writable for its whole length.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(r as usize)
    }
}

#[test]
fn a_panicking_fuse_request_answers_eio_and_the_mount_keeps_working() {
    let mut t = TestMount::new(3, &["--data", "2", "--parity", "1"]);
    // the trigger is test-only: without the variable it is an absent xattr
    std::fs::create_dir(t.p("bkt")).unwrap();
    std::fs::write(t.p("bkt/f"), b"before").unwrap();
    assert_eq!(
        getxattr(&t.p("bkt/f"), "user.shardfs.test-panic"),
        Err(libc::ENODATA)
    );
    t.unmount();
    t.mount_env = vec![("SHARDFS_TEST_PANIC".into(), "1".into())];
    t.mount_args = vec!["--threads".into(), "2".into()];
    t.mount();
    // more panics than FUSE workers: were a worker to die with its request,
    // the mount would stop answering (or unmount, for worker 0)
    for i in 0..8 {
        assert_eq!(
            getxattr(&t.p("bkt/f"), "user.shardfs.test-panic"),
            Err(libc::EIO),
            "panic {i}"
        );
        assert_eq!(std::fs::read(t.p("bkt/f")).unwrap(), b"before");
    }
    std::fs::write(t.p("bkt/g"), b"after").unwrap();
    assert_eq!(std::fs::read(t.p("bkt/g")).unwrap(), b"after");
    assert!(is_mounted(&t.mnt));
    assert!(
        t.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "daemon alive"
    );
    let log = t.log_text();
    assert!(
        log.contains("panic in thread") && log.contains("test-only panic trigger"),
        "the hook logs thread, location and message:\n{log}"
    );
    assert!(
        log.contains("fuse request getxattr (answered EIO) panicked and was contained"),
        "{log}"
    );
    let st = t.json(&["status"]);
    assert_eq!(st["maintenance_restarts"], 0);
    t.unmount();
}
