//! Member data is for the daemon's owner only: files 0600, directories
//! 0700. New files get that from the umask ([`super::restrict_umask`]) and
//! from explicit modes where shardfs chooses one; [`repair_member`] runs at
//! mount, before anything on the member is opened, and takes group and
//! other permission bits off anything that has them (a pool made by an
//! older version, a hand-made copy, an admin's chmod), with a warning
//! naming the path.
//!
//! The walk covers everything below the member root, whatever it is
//! called (shards/, replicas/, meta/, a patches/ directory of a later
//! version), without following symbolic links: each directory is opened
//! relative to its parent's descriptor with `O_NOFOLLOW`, each entry is
//! examined with `fstatat(AT_SYMLINK_NOFOLLOW)`, and modes are changed
//! through the opened directory (`fchmod`) or with
//! `fchmodat(AT_SYMLINK_NOFOLLOW)`, so a symlink planted in a member never
//! makes the daemon change a file elsewhere. Symlinks are left alone.

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmod, fchmodat, fstat, fstatat, FchmodatFlags, Mode, SFlag};
use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Mode of every file on a member.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory on a member (the member root included).
pub const DIR_MODE: u32 = 0o700;
/// Permission bits that give someone other than the owner access.
const GROUP_OTHER: u32 = 0o077;
/// Paths named one by one in the log per member; the rest are counted.
const MAX_NAMED: u64 = 32;
/// Deeper directories are not walked (and counted as failures).
const MAX_DEPTH: usize = 64;

/// Create (or truncate) the member file `path` with mode [`FILE_MODE`]
/// (`File::create` with the owner-only mode, whatever the umask).
pub fn create_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Create the member directory `path` and its missing parents with mode
/// [`DIR_MODE`] (`create_dir_all` with the owner-only mode).
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// What [`repair_member`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// entries examined (the root included)
    pub checked: u64,
    /// entries whose mode was tightened
    pub fixed: u64,
    /// entries that could not be examined or changed (logged)
    pub failed: u64,
    /// symbolic links seen and left alone
    pub symlinks: u64,
}

struct Walk {
    report: Report,
}

impl Walk {
    /// Tighten `path` (mode `mode`) to `target` with `chmod`, if it has
    /// group or other bits.
    fn fix(
        &mut self,
        path: &Path,
        mode: u32,
        target: u32,
        chmod: impl FnOnce(Mode) -> nix::Result<()>,
    ) {
        if mode & GROUP_OTHER == 0 {
            return;
        }
        let mode = mode & 0o7777;
        match chmod(Mode::from_bits_truncate(target as _)) {
            Ok(()) => {
                self.report.fixed += 1;
                if self.report.fixed <= MAX_NAMED {
                    log::warn!(
                        "{}: mode {mode:04o} lets other users in: set to {target:04o} \
                         (member data is for the daemon's owner only)",
                        path.display()
                    );
                }
            }
            Err(e) => self.failed(
                path,
                &format!(
                    "mode {mode:04o} lets other users in, and setting {target:04o} failed: {e}"
                ),
            ),
        }
    }

    fn failed(&mut self, path: &Path, what: &str) {
        self.report.failed += 1;
        if self.report.failed <= MAX_NAMED {
            log::warn!("{}: {what}", path.display());
        }
    }

    /// Walk the entries of the open directory `dir` (at `path`).
    fn dir(&mut self, mut dir: Dir, path: &Path, depth: usize) {
        let mut names: Vec<CString> = Vec::new();
        for e in dir.iter() {
            match e {
                Ok(e) => {
                    let n = e.file_name();
                    if n.to_bytes() != b"." && n.to_bytes() != b".." {
                        names.push(n.to_owned());
                    }
                }
                Err(e) => {
                    self.failed(path, &format!("listing the directory failed: {e}"));
                    break;
                }
            }
        }
        for name in names {
            let p = path.join(OsStr::from_bytes(name.to_bytes()));
            self.entry(&dir, &name, &p, depth);
        }
    }

    fn entry(&mut self, parent: &Dir, name: &CStr, p: &Path, depth: usize) {
        let st = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return, // removed meanwhile
            Err(e) => return self.failed(p, &format!("lstat failed: {e}")),
        };
        self.report.checked += 1;
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if kind == SFlag::S_IFLNK {
            self.report.symlinks += 1;
            log::debug!("{}: a symbolic link in a member: not followed", p.display());
        } else if kind == SFlag::S_IFDIR {
            if depth >= MAX_DEPTH {
                return self.failed(
                    p,
                    &format!("more than {MAX_DEPTH} directories deep: not checked"),
                );
            }
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let sub = match Dir::openat(parent, name, flags, Mode::empty()) {
                Ok(d) => d,
                Err(Errno::ENOENT) => return,
                Err(e) => return self.failed(p, &format!("opening the directory failed: {e}")),
            };
            // the mode of the directory that was opened (not of whatever
            // the name pointed to when it was examined)
            match fstat(&sub) {
                Ok(st) => self.fix(p, st.st_mode, DIR_MODE, |m| fchmod(&sub, m)),
                Err(e) => return self.failed(p, &format!("fstat failed: {e}")),
            }
            self.dir(sub, p, depth + 1);
        } else {
            // never follows a symlink: one swapped in since the fstatat
            // fails (EOPNOTSUPP) and is left alone
            self.fix(p, st.st_mode, FILE_MODE, |m| {
                fchmodat(parent, name, m, FchmodatFlags::NoFollowSymlink)
            });
        }
    }
}

/// Take group and other permission bits off the member at `root`, its
/// directories (to 0700) and everything else in it (to 0600), logging a
/// warning naming each path changed (the first few, then a count).
/// Symlinks are neither followed nor changed. Fails only if the root
/// cannot be opened.
pub fn repair_member(root: &Path) -> std::io::Result<Report> {
    let dir = Dir::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut w = Walk {
        report: Report::default(),
    };
    let st = fstat(&dir)?;
    w.report.checked += 1;
    w.fix(root, st.st_mode, DIR_MODE, |m| fchmod(&dir, m));
    w.dir(dir, root, 0);
    let r = w.report;
    if r.fixed > MAX_NAMED {
        log::warn!(
            "{}: {} more files and directories had group/other permission bits: set to {FILE_MODE:04o}/{DIR_MODE:04o}",
            root.display(),
            r.fixed - MAX_NAMED
        );
    }
    if r.failed > MAX_NAMED {
        log::warn!(
            "{}: {} more entries could not be checked or fixed",
            root.display(),
            r.failed - MAX_NAMED
        );
    }
    if r.fixed > 0 {
        log::info!(
            "member {}: {} of {} entries made owner-only",
            root.display(),
            r.fixed,
            r.checked
        );
    }
    Ok(r)
}

/// [`repair_member`] for every member directory; a member that cannot be
/// walked is logged, never fatal (it was readable enough to be opened).
pub fn repair_members(dirs: &[PathBuf]) {
    for d in dirs {
        if let Err(e) = repair_member(d) {
            log::warn!("{}: permission check failed: {e}", d.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn set(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn loose_entries_are_tightened_and_symlinks_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("member");
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/f"), b"x").unwrap();
        std::fs::write(root.join("top"), b"x").unwrap();
        std::fs::write(root.join("private"), b"x").unwrap();
        set(&root.join("private"), 0o400);
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("g"), b"y").unwrap();
        set(&outside, 0o755);
        set(&outside.join("g"), 0o644);
        std::os::unix::fs::symlink(&outside, root.join("a/link-dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("g"), root.join("link-file")).unwrap();
        for p in ["", "a", "a/b", "a/b/c"] {
            set(&root.join(p), 0o755);
        }
        set(&root.join("a/b/c/f"), 0o664);
        set(&root.join("top"), 0o604);
        let r = repair_member(&root).unwrap();
        assert_eq!(r.fixed, 6, "{r:?}");
        assert_eq!(r.symlinks, 2, "{r:?}");
        assert_eq!(r.failed, 0, "{r:?}");
        for p in ["", "a", "a/b", "a/b/c"] {
            assert_eq!(mode(&root.join(p)), 0o700, "{p}");
        }
        assert_eq!(mode(&root.join("a/b/c/f")), 0o600);
        assert_eq!(mode(&root.join("top")), 0o600);
        assert_eq!(
            mode(&root.join("private")),
            0o400,
            "no group/other bits: kept"
        );
        assert_eq!(mode(&outside), 0o755, "a symlinked directory was followed");
        assert_eq!(
            mode(&outside.join("g")),
            0o644,
            "a symlinked file was followed"
        );
        // a second pass has nothing to do
        assert_eq!(repair_member(&root).unwrap().fixed, 0);
    }
}
