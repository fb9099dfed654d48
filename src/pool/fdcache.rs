//! Open shard files kept for reads that never block.
//!
//! A 4 KiB read whose shard blocks are already in the host's page cache
//! costs a few microseconds of copying, but handing it to the member's
//! worker thread and back costs two thread wake-ups (~100 µs on a busy
//! two-core VM: profiled, most of a random read's time). So a member keeps
//! the files its workers opened, and a read first tries them on the
//! caller's thread with `preadv2(RWF_NOWAIT)`: the kernel answers from the
//! page cache or says EAGAIN, it never waits for the device. Anything else
//! (a miss, a short read, an error) goes to the worker with its deadline as
//! before, so a hung member still cannot hold a reader.
//!
//! Invariants:
//! - Only the workers open files (fresh, beneath the member root); this
//!   cache only keeps them. Scrub and repair read fresh opens, so a shard
//!   removed or replaced behind our back is seen by them.
//! - Every write, replace or removal of a name through the member drops
//!   its entry first, so a cached file is never a stale inode of a name we
//!   changed (and space of removed shards is freed, not held open).
//! - A cached file whose inode lost its last link (removed or renamed over
//!   from outside) is dropped on use, never read.
//! - Bytes read here are verified by the caller exactly as worker reads
//!   are; a checksum failure falls back to the worker, which reports it.
//! - The cache holds a bounded number of descriptors across all members
//!   (a quarter of the process's file limit), so it never causes EMFILE
//!   for the opens that matter.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Most files one member keeps open.
const PER_MEMBER: usize = 1024;

/// Descriptors cached by all members together.
static CACHED: AtomicUsize = AtomicUsize::new(0);

/// The limit on [`CACHED`]: a quarter of RLIMIT_NOFILE's soft limit.
fn global_limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit struct we own.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
        if ok {
            (r.rlim_cur as usize / 4).min(1 << 16)
        } else {
            64
        }
    })
}

/// The open files of one member, by relative path.
#[derive(Debug, Default)]
pub struct FdCache {
    files: Mutex<HashMap<String, Arc<File>>>,
}

impl FdCache {
    /// Keep `f`, opened by a worker for `rel`.
    pub fn keep(&self, rel: &str, f: Arc<File>) {
        let mut m = self.files.lock().unwrap();
        if let Some(old) = m.insert(rel.to_string(), f) {
            drop(old); // replaced: the count stays
            return;
        }
        let total = CACHED.fetch_add(1, Ordering::Relaxed) + 1;
        if m.len() > PER_MEMBER || total > global_limit() {
            // evict one other entry (HashMap order is arbitrary enough)
            let victim = m.keys().find(|k| k.as_str() != rel).cloned();
            match victim {
                Some(v) => {
                    m.remove(&v);
                }
                None => {
                    m.remove(rel);
                }
            }
            CACHED.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drop the entry of `rel` (before it is written, replaced or removed).
    pub fn forget(&self, rel: &str) {
        if self.files.lock().unwrap().remove(rel).is_some() {
            CACHED.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drop every entry.
    pub fn clear(&self) {
        let mut m = self.files.lock().unwrap();
        CACHED.fetch_sub(m.len(), Ordering::Relaxed);
        m.clear();
    }

    /// `len` bytes of `rel` at `offset`, if a kept file has them all in the
    /// page cache now; `None` for anything else (the caller then asks the
    /// worker). Never waits for the device.
    pub fn read_cached(&self, rel: &str, offset: u64, len: usize) -> Option<Vec<u8>> {
        let f = self.files.lock().unwrap().get(rel).cloned()?;
        // SAFETY: stat is plain integers, for which all-zero is valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes one stat struct we own; the fd is open
        // (the Arc keeps it so).
        if unsafe { libc::fstat(f.as_raw_fd(), &mut st) } != 0 || st.st_nlink == 0 {
            self.forget(rel); // removed or replaced behind our back
            return None;
        }
        let mut buf = vec![0u8; len];
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        // SAFETY: one iovec over `buf`, which outlives the call; the fd
        // is open.
        let n = unsafe {
            libc::preadv2(
                f.as_raw_fd(),
                &iov,
                1,
                offset as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        // a short read (part cached, or end of file) or EAGAIN: the worker
        // reads it, and reports what is wrong if anything is
        (n >= 0 && n as usize == len).then_some(buf)
    }
}

impl Drop for FdCache {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn kept_files_answer_from_the_page_cache_and_forgotten_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::File::create(&p)
            .unwrap()
            .write_all(&[7u8; 8192])
            .unwrap();
        let c = FdCache::default();
        assert_eq!(c.read_cached("a", 0, 16), None, "nothing kept yet");
        c.keep("a", Arc::new(File::open(&p).unwrap()));
        // just written: in the page cache
        assert_eq!(c.read_cached("a", 4096, 16), Some(vec![7u8; 16]));
        assert_eq!(c.read_cached("a", 8190, 16), None, "short read at the end");
        c.forget("a");
        assert_eq!(c.read_cached("a", 0, 16), None);
    }

    #[test]
    fn a_file_removed_behind_the_cache_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b");
        std::fs::write(&p, [1u8; 4096]).unwrap();
        let c = FdCache::default();
        c.keep("b", Arc::new(File::open(&p).unwrap()));
        std::fs::remove_file(&p).unwrap();
        assert_eq!(c.read_cached("b", 0, 16), None);
        assert!(c.files.lock().unwrap().is_empty(), "dropped on use");
    }
}
