//! Member files opened beneath the member's root, never through a link.
//!
//! The daemon runs as root and a member directory may be a removable or
//! foreign disk, or be touched by another admin: a symbolic link planted
//! at `shards/3f` or `replicas/…` must not make a shard write overwrite,
//! or the mount's sweep unlink, a file elsewhere on the host, nor make a
//! reader get bytes from outside the member. So every member path is
//! resolved relative to a descriptor of the member root with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`
//! (Linux 5.6+): a symlink anywhere in the path, `..` or an absolute path
//! fails with ELOOP/EXDEV instead of being followed. Kernels without
//! openat2 get the same rule by walking the path one component at a time
//! with `O_NOFOLLOW` (`O_PATH` for the directories).
//!
//! Removals and renames work on the opened parent directory
//! (`unlinkat`/`renameat` with the last name), so they act on the entry
//! in the member, even when that entry is itself a symlink (the link is
//! removed, never its target). The member root itself is the path the
//! admin configured and is followed as given.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once openat2 answered ENOSYS (or was refused by a seccomp filter):
/// from then on paths are walked component by component.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Open the member root `path` as a directory descriptor (followed as
/// configured).
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // open returns a new descriptor or -1.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    owned(fd)
}

/// Open the member root `path` for reading (fsync of the root, syncfs).
pub fn open_root_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: as in `open_root`.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    owned(fd)
}

/// Check a member-relative path: non-empty components, no `.`/`..`, not
/// absolute. (openat2 would refuse most of these too; the walk relies on it.)
fn components(rel: &str) -> io::Result<Vec<&str>> {
    if rel.is_empty() || rel.starts_with('/') {
        return Err(invalid(rel));
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
    {
        return Err(invalid(rel));
    }
    Ok(parts)
}

fn invalid(rel: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("member path {rel:?} is not a plain relative path"),
    )
}

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor the kernel just returned to us and
    // nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open `rel` beneath the directory `root` with open(2) `flags` and, when
/// creating, `mode`. No symlink is followed at any step.
pub fn open(root: &OwnedFd, rel: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let parts = components(rel)?;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match openat2(root.as_raw_fd(), rel, flags, mode) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
                log::info!("openat2 unavailable ({e}): member paths are walked with O_NOFOLLOW");
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            r => return r,
        }
    }
    walk(root, &parts, flags, mode)
}

fn openat2(dir: RawFd, rel: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(rel.as_bytes())?;
    // SAFETY: open_how is plain integers (flags, mode, resolve, and any
    // later extension fields), for which all-zero is valid and means "no
    // extension": exactly what the kernel expects of unused fields.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    // O_TMPFILE includes O_DIRECTORY, so it is tested as a whole; the kernel
    // refuses a mode with neither O_CREAT nor O_TMPFILE (EINVAL).
    if flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE {
        how.mode = mode as u64;
    }
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads `how` (a properly initialised open_how whose
    // size we pass) and the NUL-terminated `c`, both alive for the call;
    // it returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    owned(fd as RawFd)
}

/// The fallback: each directory opened `O_PATH | O_DIRECTORY | O_NOFOLLOW`
/// relative to the previous one, the last name with `O_NOFOLLOW`.
fn walk(root: &OwnedFd, parts: &[&str], flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let (last, dirs) = parts.split_last().expect("components() is non-empty");
    let mut cur: Option<OwnedFd> = None;
    for d in dirs {
        let at = cur.as_ref().unwrap_or(root).as_raw_fd();
        let c = cstr(d.as_bytes())?;
        // SAFETY: `at` is a live descriptor we own, `c` a valid C string.
        let fd = unsafe {
            libc::openat(
                at,
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        cur = Some(owned(fd)?);
    }
    let at = cur.as_ref().unwrap_or(root).as_raw_fd();
    let c = cstr(last.as_bytes())?;
    // SAFETY: as above; `mode` is a plain integer argument.
    let fd = unsafe {
        libc::openat(
            at,
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    owned(fd)
}

/// Open `rel` beneath `root` as a [`File`].
pub fn open_file(root: &OwnedFd, rel: &str, flags: i32, mode: u32) -> io::Result<File> {
    open(root, rel, flags, mode).map(File::from)
}

/// The parent directory of `rel` (opened beneath `root`; the root itself
/// for a one-component path) and `rel`'s last name.
fn parent(root: &OwnedFd, rel: &str) -> io::Result<(Option<OwnedFd>, CString)> {
    let parts = components(rel)?;
    let name = cstr(parts[parts.len() - 1].as_bytes())?;
    if parts.len() == 1 {
        return Ok((None, name));
    }
    let dir = &rel[..rel.len() - parts[parts.len() - 1].len() - 1];
    let fd = open(root, dir, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    Ok((Some(fd), name))
}

/// Remove the entry `rel` (a file, or the symlink itself if it is one).
pub fn unlink(root: &OwnedFd, rel: &str) -> io::Result<()> {
    let (dir, name) = parent(root, rel)?;
    let at = dir.as_ref().unwrap_or(root).as_raw_fd();
    // SAFETY: `at` is a live directory descriptor, `name` a valid C string.
    if unsafe { libc::unlinkat(at, name.as_ptr(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Rename `from` to `to`, both beneath `root` (replacing `to`).
pub fn rename(root: &OwnedFd, from: &str, to: &str) -> io::Result<()> {
    let (fdir, fname) = parent(root, from)?;
    let (tdir, tname) = parent(root, to)?;
    let fa = fdir.as_ref().unwrap_or(root).as_raw_fd();
    let ta = tdir.as_ref().unwrap_or(root).as_raw_fd();
    // SAFETY: live directory descriptors and valid C strings.
    if unsafe { libc::renameat(fa, fname.as_ptr(), ta, tname.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Create directory `rel` and its missing parents (mode `mode`), each
/// made relative to its verified parent.
pub fn create_dir_all(root: &OwnedFd, rel: &str, mode: u32) -> io::Result<()> {
    let parts = components(rel)?;
    let mut cur: Option<OwnedFd> = None;
    for p in parts {
        let at = cur.as_ref().unwrap_or(root).as_raw_fd();
        let c = cstr(p.as_bytes())?;
        // SAFETY: live descriptor, valid C string, integer mode.
        let r = unsafe { libc::mkdirat(at, c.as_ptr(), mode as libc::mode_t) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        // SAFETY: as above; O_NOFOLLOW refuses a symlink in the chain.
        let fd = unsafe {
            libc::openat(
                at,
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        cur = Some(owned(fd)?);
    }
    Ok(())
}

/// Names in directory `rel` beneath `root` (`.` and `..` left out).
pub fn list_dir(root: &OwnedFd, rel: &str) -> io::Result<Vec<String>> {
    let fd = open(root, rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let dir = nix::dir::Dir::from_fd(fd).map_err(io::Error::from)?;
    let mut out = Vec::new();
    for e in dir {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(String::from_utf8_lossy(n).into_owned());
        }
    }
    Ok(out)
}

/// Refuse a member directory `dir` (below the root) that is a symlink, or
/// holds one under any of `names`: for stores that open their files by
/// path (LMDB, the WAL). Checked once, when the store is opened; the
/// member is 0700 root-only while mounted, so a link planted later needs
/// root.
pub fn refuse_links(dir: &Path, names: &[&str]) -> io::Result<()> {
    let link = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    let bad = std::iter::once(dir.to_path_buf())
        .chain(names.iter().map(|n| dir.join(n)))
        .find(|p| link(p));
    match bad {
        Some(p) => Err(io::Error::other(format!(
            "{} is a symbolic link: shardfs never follows links inside a member; replace it with the real file or directory",
            p.display()
        ))),
        None => Ok(()),
    }
}

/// A file inside a member, named by the member root and a path beneath
/// it: every use resolves it with the rules above, so a link planted at
/// any step refuses the operation instead of following it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFile {
    /// The member root (followed as configured).
    pub root: std::path::PathBuf,
    /// Relative path beneath the root (no `.`, `..`, or leading `/`).
    pub rel: String,
}

impl MemberFile {
    /// `rel` beneath `root`.
    pub fn new(root: &Path, rel: impl Into<String>) -> Self {
        Self {
            root: root.to_path_buf(),
            rel: rel.into(),
        }
    }

    /// Open with open(2) `flags` (and `mode` when creating).
    pub fn open(&self, flags: i32, mode: u32) -> io::Result<File> {
        open_file(&open_root(&self.root)?, &self.rel, flags, mode)
    }

    /// Open for reading.
    pub fn open_read(&self) -> io::Result<File> {
        self.open(libc::O_RDONLY, 0)
    }

    /// Create (or truncate) for writing with the owner-only file mode.
    pub fn create(&self) -> io::Result<File> {
        self.open(
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            crate::guard::modes::FILE_MODE,
        )
    }

    /// Remove the entry (a planted link is removed, not its target).
    pub fn remove(&self) -> io::Result<()> {
        unlink(&open_root(&self.root)?, &self.rel)
    }

    /// The host path, for messages (and tests); never opened by the daemon.
    pub fn host_path(&self) -> std::path::PathBuf {
        self.root.join(&self.rel)
    }
}

impl std::fmt::Display for MemberFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.host_path().display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, OwnedFd) {
        let member = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(member.path().join("shards")).unwrap();
        std::fs::write(outside.path().join("victim"), b"precious").unwrap();
        std::os::unix::fs::symlink(outside.path(), member.path().join("shards/3f")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("victim"),
            member.path().join("shards/link"),
        )
        .unwrap();
        let root = open_root(member.path()).unwrap();
        (member, outside, root)
    }

    fn both_ways(f: impl Fn()) {
        NO_OPENAT2.store(false, Ordering::Relaxed);
        f();
        NO_OPENAT2.store(true, Ordering::Relaxed);
        f();
        NO_OPENAT2.store(false, Ordering::Relaxed);
    }

    #[test]
    fn symlinks_in_a_member_are_never_followed() {
        both_ways(|| {
            let (_m, outside, root) = setup();
            let w = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
            // a directory link and a file link both refuse
            assert!(open(&root, "shards/3f/victim", w, 0o600).is_err());
            assert!(open(&root, "shards/link", w, 0o600).is_err());
            assert!(open(&root, "shards/link", libc::O_RDONLY, 0).is_err());
            assert!(open(&root, "shards/3f/new", w, 0o600).is_err());
            assert!(list_dir(&root, "shards/3f").is_err());
            assert!(create_dir_all(&root, "shards/3f/sub", 0o700).is_err());
            assert!(unlink(&root, "shards/3f/victim").is_err());
            assert!(open(&root, "../x", w, 0o600).is_err());
            assert!(open(&root, "/etc/passwd", libc::O_RDONLY, 0).is_err());
            // unlinking the link removes the link, never its target
            unlink(&root, "shards/link").unwrap();
            assert_eq!(
                std::fs::read(outside.path().join("victim")).unwrap(),
                b"precious"
            );
            assert!(!outside.path().join("new").exists());
        });
    }

    #[test]
    fn plain_paths_work() {
        both_ways(|| {
            let (m, _o, root) = setup();
            create_dir_all(&root, "shards/00", 0o700).unwrap();
            let w = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
            let mut f = open_file(&root, "shards/00/a", w, 0o600).unwrap();
            f.write_all(b"hello").unwrap();
            rename(&root, "shards/00/a", "shards/00/b").unwrap();
            let mut s = String::new();
            open_file(&root, "shards/00/b", libc::O_RDONLY, 0)
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
            assert_eq!(s, "hello");
            assert_eq!(list_dir(&root, "shards/00").unwrap(), vec!["b".to_string()]);
            unlink(&root, "shards/00/b").unwrap();
            // a directory opened with a (stray) mode is still a plain open
            open(&root, "shards", libc::O_RDONLY | libc::O_DIRECTORY, 0o600).unwrap();
            assert!(!m.path().join("shards/00/b").exists());
            // stores opened by path refuse a link for their directory or files
            refuse_links(&m.path().join("shards"), &["00"]).unwrap();
            let e = refuse_links(&m.path().join("shards"), &["3f"]).unwrap_err();
            assert!(
                e.to_string().contains("shards/3f is a symbolic link"),
                "{e}"
            );
            assert!(refuse_links(&m.path().join("shards/3f"), &[]).is_err());
        });
    }
}
