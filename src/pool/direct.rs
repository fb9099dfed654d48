//! Shard files written around the page cache (O_DIRECT).
//!
//! Why: a new shard is written once and read back rarely (degraded reads,
//! scrub, repair); copying it into the page cache costs more CPU than the
//! erasure code and the checksums together (measured on the 2-core bench
//! machine: `dd bs=1M` of 1.5 GiB spends 3.0 CPU-s buffered, 0.25 s with
//! `oflag=direct`), and the cached copy evicts pages readers want.
//!
//! How: the block-aligned prefix of the file (header and payload copied
//! into one aligned, per-thread buffer) goes out with O_DIRECT; the
//! unaligned tail (< one block) is written through the page cache after
//! O_DIRECT is switched off on the same descriptor, then one fdatasync
//! covers both. The file's bytes are exactly those of a buffered write: no
//! format change, and old and new shards read the same way.
//!
//! A filesystem that refuses O_DIRECT (tmpfs, some FUSE or network
//! filesystems: EINVAL at open or at the write) gets the buffered path from
//! then on; nothing else changes.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Alignment of buffer address, file offset and length for O_DIRECT. 4 KiB
/// covers 512-byte and 4Kn drives alike.
pub const ALIGN: usize = 4096;
/// Files smaller than this go through the page cache (the aligned prefix
/// would be a small part of them, and small files are read back soon).
pub const MIN_DIRECT: usize = 64 * 1024;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turn direct shard writes on or off for the whole process (`shardfs
/// mount --direct-writes`).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether direct shard writes are on for this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A heap buffer whose start is `ALIGN`-aligned, reused by one thread.
struct Aligned {
    ptr: *mut u8,
    cap: usize,
}

impl Aligned {
    const fn empty() -> Aligned {
        Aligned {
            ptr: std::ptr::null_mut(),
            cap: 0,
        }
    }

    /// At least `len` bytes (contents unspecified), growing if needed.
    fn get(&mut self, len: usize) -> &mut [u8] {
        if self.cap < len {
            self.free();
            let cap = len.next_multiple_of(ALIGN);
            let layout = std::alloc::Layout::from_size_align(cap, ALIGN).expect("layout");
            // SAFETY: `layout` has a non-zero size (len > 0 when we grow
            // from an empty buffer: callers ask for at least MIN_DIRECT).
            let p = unsafe { std::alloc::alloc(layout) };
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            self.ptr = p;
            self.cap = cap;
        }
        // SAFETY: `ptr` points to `cap >= len` bytes owned by this buffer
        // and only this thread touches it; bytes are plain u8 (any value
        // is valid; callers overwrite what they write out).
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len) }
    }

    fn free(&mut self) {
        if !self.ptr.is_null() {
            let layout = std::alloc::Layout::from_size_align(self.cap, ALIGN).expect("layout");
            // SAFETY: `ptr` was allocated by `alloc` with this very layout
            // and is freed once (then reset to null).
            unsafe { std::alloc::dealloc(self.ptr, layout) };
            self.ptr = std::ptr::null_mut();
            self.cap = 0;
        }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        self.free();
    }
}

thread_local! {
    static BUF: RefCell<Aligned> = const { RefCell::new(Aligned::empty()) };
}

/// True for the errors a filesystem gives when it does not do O_DIRECT.
fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Create or replace a file with the concatenation of `parts` and
/// fdatasync it. `open(flags)` opens the file (with `O_CREAT | O_TRUNC` in
/// `flags`, beneath the member root), `unlink` removes it after a failed
/// direct write, `path` names it in logs. Uses O_DIRECT for the aligned
/// prefix when `direct` is set and the file is large enough; clears
/// `direct` when the filesystem refuses it. Direct writes are used when
/// they are on for the process ([`set_enabled`]) or the caller asks for
/// them (`uncached`: a rebuilt shard, see [`super::DiskBackend::write_file_durable_uncached`]).
/// Returns with the file's data durable.
pub fn write_synced(
    open: &dyn Fn(i32) -> io::Result<File>,
    unlink: &dyn Fn() -> io::Result<()>,
    path: &Path,
    parts: &[&[u8]],
    direct: &AtomicBool,
    uncached: bool,
) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let prefix = total / ALIGN * ALIGN;
    if (uncached || enabled()) && direct.load(Ordering::Relaxed) && total >= MIN_DIRECT {
        match write_direct(open, unlink, parts, total, prefix) {
            Ok(f) => return f.sync_data(),
            Err(e) if unsupported(&e) => {
                log::info!(
                    "{}: the filesystem refuses O_DIRECT ({e}); shard writes go through the page cache",
                    path.display()
                );
                direct.store(false, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    let f = open(CREATE)?;
    let mut at = 0u64;
    for p in parts {
        f.write_all_at(p, at)?;
        at += p.len() as u64;
    }
    f.sync_data()
}

const CREATE: i32 = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;

/// The O_DIRECT prefix and buffered tail of [`write_synced`]; the open
/// file is returned for the caller's sync.
fn write_direct(
    open: &dyn Fn(i32) -> io::Result<File>,
    unlink: &dyn Fn() -> io::Result<()>,
    parts: &[&[u8]],
    total: usize,
    prefix: usize,
) -> io::Result<File> {
    let f = open(CREATE | libc::O_DIRECT)?;
    BUF.with(|b| -> io::Result<()> {
        let mut b = b.borrow_mut();
        let buf = b.get(total.next_multiple_of(ALIGN));
        let mut at = 0;
        for p in parts {
            buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        f.write_all_at(&buf[..prefix], 0)?;
        if prefix < total {
            // the tail is shorter than a block: through the page cache,
            // on the same descriptor with O_DIRECT cleared
            clear_direct(&f)?;
            f.write_all_at(&buf[prefix..total], prefix as u64)?;
        }
        Ok(())
    })
    .inspect_err(|_| {
        let _ = unlink();
    })?;
    Ok(f)
}

fn clear_direct(f: &File) -> io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with plain integer arguments;
    // no memory is passed to the kernel.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn direct_and_buffered_writes_give_the_same_bytes() {
        let dir = std::env::temp_dir().join(format!("shardfs-direct-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let head: Vec<u8> = (0..2144u32).map(|i| (i * 7) as u8).collect();
        for len in [0usize, 1, 4095, 4096, 70_000, 1 << 20, (1 << 20) + 3] {
            let body: Vec<u8> = (0..len as u32).map(|i| (i * 13 + 1) as u8).collect();
            let want = [head.clone(), body.clone()].concat();
            for direct in [true, false] {
                let flag = AtomicBool::new(direct);
                let p = dir.join(format!("f{len}-{direct}"));
                // an older, longer file is replaced, never left at its tail
                std::fs::write(&p, vec![9u8; want.len() + 10_000]).unwrap();
                let open = |flags: i32| {
                    OpenOptions::new()
                        .write(true)
                        .custom_flags(flags & !(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC))
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&p)
                };
                let unlink = || std::fs::remove_file(&p);
                write_synced(&open, &unlink, &p, &[&head, &body], &flag, false).unwrap();
                assert_eq!(
                    std::fs::read(&p).unwrap(),
                    want,
                    "len {len} direct {direct}"
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
