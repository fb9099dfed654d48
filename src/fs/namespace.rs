//! Directory and inode operations.

use super::names::{check_bucket, check_component, S3_STAGING};
use super::schema::*;
use super::{Attr, DirEntry, Fs, FsError, FsResult, Handle, Inner, OpenFile};
use crate::meta::Op;
use std::collections::BTreeMap;

/// What to create.
#[derive(Debug, Clone)]
pub struct NewNode {
    /// kind
    pub kind: Kind,
    /// permission bits (after umask)
    pub perm: u16,
    /// owner
    pub uid: u32,
    /// group
    pub gid: u32,
    /// device number
    pub rdev: u32,
    /// symlink target
    pub target: Vec<u8>,
}

/// Changes requested by setattr.
#[derive(Debug, Default, Clone)]
pub struct SetAttr {
    /// new permission bits
    pub mode: Option<u32>,
    /// new owner
    pub uid: Option<u32>,
    /// new group
    pub gid: Option<u32>,
    /// new size (truncate)
    pub size: Option<u64>,
    /// new atime (None inside = now)
    pub atime: Option<Option<Ts>>,
    /// new mtime (None inside = now)
    pub mtime: Option<Option<Ts>>,
}

/// How reads update access times (`shardfs mount --atime`, the mount
/// helper's `relatime`, `strictatime` and `noatime`). The kernel leaves
/// atime to a FUSE filesystem (its inodes are `S_NOATIME`), so the daemon
/// applies the rule on each read and readdir that reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtimeMode {
    /// Linux's default: update when the atime is not after the mtime or
    /// the ctime, or is a day old ([`relatime_due`]).
    #[default]
    Relatime,
    /// Update on every read.
    Strict,
    /// Never update on reads (utimensat still sets it).
    NoAtime,
}

impl AtimeMode {
    /// Parse `relatime`, `strictatime` or `noatime`.
    pub fn parse(s: &str) -> Result<AtimeMode, String> {
        match s {
            "relatime" => Ok(AtimeMode::Relatime),
            "strictatime" => Ok(AtimeMode::Strict),
            "noatime" => Ok(AtimeMode::NoAtime),
            _ => Err(format!(
                "atime is relatime, strictatime or noatime, not {s:?}"
            )),
        }
    }
}

/// relatime's rule (as Linux's `relatime_need_update`): a read updates the
/// atime if it is not after the mtime or the ctime, or is at least 24 hours
/// older than `now`.
pub fn relatime_due(atime: Ts, mtime: Ts, ctime: Ts, now: Ts) -> bool {
    atime <= mtime || atime <= ctime || now.0 - atime.0 >= 24 * 3600
}

impl Fs {
    /// A read or readdir of `ino` reached the daemon: update its atime as
    /// `mode` says. The change joins the next group commit like any other
    /// namespace change (no sync of its own), and does not touch the
    /// ctime.
    pub fn note_access(&self, ino: u64, mode: AtimeMode) -> FsResult<()> {
        if mode == AtimeMode::NoAtime {
            return Ok(());
        }
        let mut g = self.lock();
        let mut inode = self.inode(&g, ino)?;
        let t = now();
        if mode == AtimeMode::Relatime && !relatime_due(inode.atime, inode.mtime, inode.ctime, t) {
            return Ok(());
        }
        inode.atime = t;
        let mut ops = Vec::new();
        Self::put_inode(&mut g, &inode, &mut ops);
        self.meta.apply(ops, vec![])?;
        Ok(())
    }

    fn dirent(&self, parent: u64, name: &[u8]) -> FsResult<Option<Dirent>> {
        match self.meta.get(&dirent_key(parent, name))? {
            Some(b) => Ok(Some(dec("dirent", &b)?)),
            None => Ok(None),
        }
    }

    fn dir(&self, g: &Inner, ino: u64) -> FsResult<Inode> {
        let d = self.inode(g, ino)?;
        if d.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(d)
    }

    /// Rules for a new name: the component's length and bytes, and the
    /// bucket rules at the root. A key has no length limit of its own (only
    /// its components, as on Linux); S3's 1024 bytes is
    /// [`super::names::check_s3_key`], for an S3 interface only.
    fn check_new_name(&self, parent: u64, name: &[u8], kind: Kind) -> FsResult<()> {
        if name.len() > super::names::NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if name == b"." || name == b".." {
            return Err(FsError::Exists);
        }
        check_component(name)?;
        if parent == ROOT_INO {
            if kind != Kind::Dir {
                return Err(FsError::NotPermitted(
                    "only buckets (directories) may be created at the root".into(),
                ));
            }
            if let Err(why) = check_bucket(name) {
                log::warn!("mkdir at the root refused: {why}");
                return Err(FsError::Invalid(why));
            }
        }
        Ok(())
    }

    /// True if directory `dir` is `top` or lies below it.
    fn is_below(&self, g: &Inner, mut dir: u64, top: u64) -> FsResult<bool> {
        loop {
            if dir == top {
                return Ok(true);
            }
            if dir == ROOT_INO {
                return Ok(false);
            }
            dir = self.inode(g, dir)?.parent;
        }
    }

    /// Look up `name` in `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name.len() > super::names::NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if parent == ROOT_INO && name == S3_STAGING {
            // the S3 staging directory is no name of the namespace
            return Err(FsError::NotFound);
        }
        let g = self.lock();
        self.dir(&g, parent)?;
        let d = self.dirent(parent, name)?.ok_or(FsError::NotFound)?;
        self.inode(&g, d.ino)
    }

    /// The S3 endpoint's staging directory ([`S3_STAGING`]), made on first
    /// use: its inode.
    pub fn s3_staging_dir(&self) -> FsResult<u64> {
        let mut g = self.lock();
        if let Some(d) = self.dirent(ROOT_INO, S3_STAGING)? {
            return Ok(d.ino);
        }
        let n = NewNode {
            kind: Kind::Dir,
            perm: 0o700,
            uid: 0,
            gid: 0,
            rdev: 0,
            target: Vec::new(),
        };
        // not a bucket name on purpose: skip the name rules of the root
        Ok(self.create_unchecked(&mut g, ROOT_INO, S3_STAGING, n)?.ino)
    }

    /// Create a node (file, directory, symlink, device, fifo) in `parent`.
    pub fn create_node(&self, parent: u64, name: &[u8], n: NewNode) -> FsResult<Attr> {
        let mut g = self.lock();
        self.create_locked(&mut g, parent, name, n)
    }

    fn create_locked(&self, g: &mut Inner, parent: u64, name: &[u8], n: NewNode) -> FsResult<Attr> {
        self.dir(g, parent)?;
        self.check_new_name(parent, name, n.kind)?;
        self.create_unchecked(g, parent, name, n)
    }

    /// [`Self::create_locked`] without the name rules (the caller checked).
    fn create_unchecked(
        &self,
        g: &mut Inner,
        parent: u64,
        name: &[u8],
        n: NewNode,
    ) -> FsResult<Attr> {
        let mut p = self.dir(g, parent)?;
        if self.dirent(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        let t = now();
        let ino = g.next_ino;
        g.next_ino += 1;
        let mut perm = n.perm & 0o7777;
        let mut gid = n.gid;
        if p.perm & 0o2000 != 0 {
            // setgid directory: children inherit its group, subdirectories the bit
            gid = p.gid;
            if n.kind == Kind::Dir {
                perm |= 0o2000;
            }
        }
        let inode = Inode {
            ino,
            kind: n.kind,
            perm,
            uid: n.uid,
            gid,
            nlink: if n.kind == Kind::Dir { 2 } else { 1 },
            size: if n.kind == Kind::Symlink {
                n.target.len() as u64
            } else {
                0
            },
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            rdev: n.rdev,
            parent,
            next_cookie: FIRST_COOKIE,
            striped: false,
            target: n.target,
        };
        let cookie = p.next_cookie;
        p.next_cookie += 1;
        p.mtime = t;
        p.ctime = t;
        if n.kind == Kind::Dir {
            p.nlink += 1;
        }
        let mut ops = vec![
            Op::Put(inode_key(ino), enc(&inode)),
            Op::Put(
                dirent_key(parent, name),
                enc(&Dirent {
                    ino,
                    kind: n.kind,
                    cookie,
                }),
            ),
            Op::Put(cookie_key(parent, cookie), name.to_vec()),
            Op::Put(counter_key("ino"), g.next_ino.to_be_bytes().to_vec()),
        ];
        Self::put_inode(g, &p, &mut ops);
        self.meta.apply(ops, vec![])?;
        Ok(inode)
    }

    /// Create and open a regular file.
    pub fn create_open(
        &self,
        parent: u64,
        name: &[u8],
        n: NewNode,
        writable: bool,
    ) -> FsResult<(Attr, u64)> {
        let mut g = self.lock();
        let attr = self.create_locked(&mut g, parent, name, n)?;
        let fh = self.open_locked(&mut g, attr.ino, writable)?;
        Ok((attr, fh))
    }

    /// Open an inode; returns the handle.
    pub fn open(&self, ino: u64, writable: bool) -> FsResult<u64> {
        let mut g = self.lock();
        self.open_locked(&mut g, ino, writable)
    }

    pub(crate) fn open_locked(&self, g: &mut Inner, ino: u64, writable: bool) -> FsResult<u64> {
        let of = self.ensure_open(g, ino)?;
        if writable && of.pt_refs > 0 {
            // passthrough readers read the replica directly (fs::replica)
            return Err(FsError::Busy);
        }
        of.refs += 1;
        of.writers += writable as u32;
        let fh = g.next_fh;
        g.next_fh += 1;
        g.handles.insert(
            fh,
            Handle {
                ino,
                writable,
                passthrough: false,
            },
        );
        Ok(fh)
    }

    /// Open-file state of `ino`, created (with no references) if needed.
    pub(super) fn ensure_open<'a>(&self, g: &'a mut Inner, ino: u64) -> FsResult<&'a mut OpenFile> {
        if let std::collections::hash_map::Entry::Vacant(slot) = g.open.entry(ino) {
            let inode = self.load_inode(ino)?;
            slot.insert(OpenFile {
                refs: 0,
                persisted_size: inode.size,
                inode,
                inline: None,
                inline_dirty: false,
                dirty: BTreeMap::new(),
                pages: BTreeMap::new(),
                page_count: 0,
                attr_dirty: false,
                cache: None,
                inflight: BTreeMap::new(),
                eof_checked: false,
                writers: 0,
                pt_refs: 0,
                pt_file: None,
                pt_bad: false,
            });
        }
        Ok(g.open.get_mut(&ino).expect("just inserted"))
    }

    /// Close a handle (FUSE release). The last close of an unlinked file
    /// deletes it.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        let mut g = self.lock();
        let h = g.handles.remove(&fh).ok_or(FsError::BadHandle)?;
        let of = g.open.get_mut(&h.ino).ok_or(FsError::BadHandle)?;
        of.refs -= 1;
        of.writers -= h.writable as u32;
        of.pt_refs -= h.passthrough as u32;
        if of.pt_refs == 0 {
            of.pt_file = None;
            of.pt_bad = false;
        }
        if of.refs > 0 {
            return Ok(());
        }
        // Buffered data that cannot be written now (below write quorum) was
        // already reported to the writer by write/flush; drop it with the handle.
        let flushed = self.flush_file_locked(&mut g, h.ino);
        if let Err(e) = &flushed {
            log::error!("inode {}: buffered data lost at last close: {e}", h.ino);
            if let Some(of) = g.open.get_mut(&h.ino) {
                of.dirty.clear();
                of.pages.clear();
                of.page_count = 0;
                of.inline_dirty = false;
            }
        }
        self.close_if_unused(&mut g, h.ino)?;
        flushed
    }

    /// Drop the open state of an inode with no handles; delete it if unlinked.
    pub(super) fn close_if_unused(&self, g: &mut Inner, ino: u64) -> FsResult<()> {
        let Some(of) = g.open.get(&ino) else {
            return Ok(());
        };
        if of.refs > 0 {
            return Ok(());
        }
        // data that arrived without a handle (mmap writeback) is written out
        // before the state goes
        self.flush_file_locked(g, ino)?;
        let Some(of) = g.open.get(&ino) else {
            return Ok(());
        };
        let unlinked = of.inode.nlink == 0;
        g.open.remove(&ino);
        if unlinked {
            let mut ops = Vec::new();
            let mut after = Vec::new();
            self.destroy_ops(ino, &mut ops, &mut after)?;
            self.meta.apply(ops, after)?;
        }
        Ok(())
    }

    /// Inode and writability of a handle.
    pub fn handle(&self, fh: u64) -> FsResult<(u64, bool)> {
        let g = self.lock();
        let h = g.handles.get(&fh).ok_or(FsError::BadHandle)?;
        Ok((h.ino, h.writable))
    }

    /// Remove a non-directory name.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        check_component(name)?;
        let mut g = self.lock();
        let mut p = self.dir(&g, parent)?;
        let d = self.dirent(parent, name)?.ok_or(FsError::NotFound)?;
        if d.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let mut ops = Vec::new();
        let mut after = Vec::new();
        let t = now();
        p.mtime = t;
        p.ctime = t;
        ops.push(Op::Del(dirent_key(parent, name)));
        ops.push(Op::Del(cookie_key(parent, d.cookie)));
        Self::put_inode(&mut g, &p, &mut ops);
        self.drop_link(&mut g, d.ino, &mut ops, &mut after)?;
        self.meta.apply(ops, after)?;
        Ok(())
    }

    /// Decrement the link count of a non-directory; delete it when the last
    /// link goes and no handle has it open.
    fn drop_link(
        &self,
        g: &mut Inner,
        ino: u64,
        ops: &mut Vec<Op>,
        after: &mut Vec<crate::meta::AfterCommit>,
    ) -> FsResult<()> {
        let mut inode = self.inode(g, ino)?;
        inode.nlink = inode.nlink.saturating_sub(1);
        inode.ctime = now();
        if inode.nlink > 0 {
            Self::put_inode(g, &inode, ops);
        } else if let Some(of) = g.open.get_mut(&ino) {
            // unlinked while open: data stays until the last close
            of.inode = inode.clone();
            ops.push(Op::Put(inode_key(ino), Self::persist_record(g, &inode)));
            ops.push(Op::Put(orphan_key(ino), Vec::new()));
        } else {
            self.destroy_ops(ino, ops, after)?;
        }
        Ok(())
    }

    /// Remove an empty directory.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if name == b"." {
            return Err(FsError::Invalid("rmdir of '.'".into()));
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        check_component(name)?;
        let mut g = self.lock();
        let mut p = self.dir(&g, parent)?;
        let d = self.dirent(parent, name)?.ok_or(FsError::NotFound)?;
        if d.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        self.check_empty(d.ino)?;
        let t = now();
        p.mtime = t;
        p.ctime = t;
        p.nlink = p.nlink.saturating_sub(1);
        let mut ops = vec![
            Op::Del(dirent_key(parent, name)),
            Op::Del(cookie_key(parent, d.cookie)),
        ];
        let mut after = Vec::new();
        self.destroy_ops(d.ino, &mut ops, &mut after)?;
        Self::put_inode(&mut g, &p, &mut ops);
        self.meta.apply(ops, after)?;
        Ok(())
    }

    fn check_empty(&self, dir: u64) -> FsResult<()> {
        let p = dirent_prefix(dir);
        if !self
            .meta
            .range(&p, &crate::meta::prefix_end(&p), 1)?
            .is_empty()
        {
            return Err(FsError::NotEmpty);
        }
        Ok(())
    }

    /// Rename `parent/name` to `newparent/newname`, atomically replacing
    /// the target. `noreplace` is RENAME_NOREPLACE.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        noreplace: bool,
    ) -> FsResult<()> {
        self.rename_with(parent, name, newparent, newname, noreplace, None)
    }

    /// [`Self::rename`] with RENAME_WHITEOUT: in the same transaction the
    /// old name becomes a whiteout (a character device 0:0, mode 0, owned
    /// by `owner`, a (uid, gid)), as overlayfs expects of its upper layer. The
    /// kernel has checked CAP_MKNOD.
    pub fn rename_whiteout(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        noreplace: bool,
        owner: (u32, u32),
    ) -> FsResult<()> {
        self.rename_with(parent, name, newparent, newname, noreplace, Some(owner))
    }

    fn rename_with(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        noreplace: bool,
        whiteout: Option<(u32, u32)>,
    ) -> FsResult<()> {
        check_component(name)?;
        let mut g = self.lock();
        let mut p = self.dir(&g, parent)?;
        self.dir(&g, newparent)?;
        let src = self.dirent(parent, name)?.ok_or(FsError::NotFound)?;
        if newname.len() > super::names::NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        // the kernel's order: existence, RENAME_NOREPLACE, ancestry, same
        // inode, kinds, emptiness; shardfs's own name rules come last
        let dst = self.dirent(newparent, newname)?;
        if dst.is_some() && noreplace {
            return Err(FsError::Exists);
        }
        if src.kind == Kind::Dir && self.is_below(&g, newparent, src.ino)? {
            return Err(FsError::Invalid(
                "cannot move a directory into itself".into(),
            ));
        }
        if let Some(dst) = &dst {
            if dst.kind == Kind::Dir && self.is_below(&g, parent, dst.ino)? {
                // the target is an ancestor of the source
                return Err(FsError::NotEmpty);
            }
            if dst.ino == src.ino {
                return Ok(()); // two links to one inode: nothing to do
            }
            match (src.kind == Kind::Dir, dst.kind == Kind::Dir) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) => self.check_empty(dst.ino)?,
                (false, false) => {}
            }
        }
        self.check_new_name(newparent, newname, src.kind)?;
        if whiteout.is_some() && parent == ROOT_INO {
            return Err(FsError::NotPermitted(
                "a whiteout cannot take a bucket's place at the root".into(),
            ));
        }
        let t = now();
        let mut ops = Vec::new();
        let mut after = Vec::new();
        // replace the target
        if let Some(dst) = &dst {
            ops.push(Op::Del(cookie_key(newparent, dst.cookie)));
            if dst.kind == Kind::Dir {
                self.destroy_ops(dst.ino, &mut ops, &mut after)?;
            } else {
                self.drop_link(&mut g, dst.ino, &mut ops, &mut after)?;
            }
        }
        ops.push(Op::Del(dirent_key(parent, name)));
        ops.push(Op::Del(cookie_key(parent, src.cookie)));
        p.mtime = t;
        p.ctime = t;
        if let Some((uid, gid)) = whiteout {
            // the whiteout takes the old name (its Put follows the Del
            // above in the same batch, so it is what the batch leaves)
            let ino = g.next_ino;
            g.next_ino += 1;
            let cookie = p.next_cookie;
            p.next_cookie += 1;
            let w = Inode {
                ino,
                kind: Kind::CharDev,
                perm: 0,
                uid,
                gid,
                nlink: 1,
                size: 0,
                atime: t,
                mtime: t,
                ctime: t,
                crtime: t,
                rdev: 0,
                parent,
                next_cookie: FIRST_COOKIE,
                striped: false,
                target: Vec::new(),
            };
            ops.push(Op::Put(inode_key(ino), enc(&w)));
            ops.push(Op::Put(
                dirent_key(parent, name),
                enc(&Dirent {
                    ino,
                    kind: Kind::CharDev,
                    cookie,
                }),
            ));
            ops.push(Op::Put(cookie_key(parent, cookie), name.to_vec()));
            ops.push(Op::Put(
                counter_key("ino"),
                g.next_ino.to_be_bytes().to_vec(),
            ));
        }
        let same_dir = parent == newparent;
        let is_dir = src.kind == Kind::Dir;
        let replaced_dir = dst.as_ref().is_some_and(|d| d.kind == Kind::Dir);
        let mut np = if same_dir {
            // one subdirectory fewer when a directory replaced another
            if is_dir && replaced_dir {
                p.nlink = p.nlink.saturating_sub(1);
            }
            p
        } else {
            if is_dir {
                p.nlink = p.nlink.saturating_sub(1);
            }
            Self::put_inode(&mut g, &p, &mut ops);
            let mut np = self.inode(&g, newparent)?;
            if is_dir && !replaced_dir {
                np.nlink += 1;
            }
            np
        };
        let cookie = np.next_cookie;
        np.next_cookie += 1;
        np.mtime = t;
        np.ctime = t;
        ops.push(Op::Put(
            dirent_key(newparent, newname),
            enc(&Dirent {
                ino: src.ino,
                kind: src.kind,
                cookie,
            }),
        ));
        ops.push(Op::Put(cookie_key(newparent, cookie), newname.to_vec()));
        let mut moved = self.inode(&g, src.ino)?;
        moved.ctime = t;
        if is_dir {
            moved.parent = newparent;
        }
        Self::put_inode(&mut g, &moved, &mut ops);
        Self::put_inode(&mut g, &np, &mut ops);
        self.meta.apply(ops, after)?;
        Ok(())
    }

    /// Swap `parent/name` and `newparent/newname` (RENAME_EXCHANGE): both
    /// must exist, of any kinds; each name then points at the other's
    /// inode, in one metadata batch. Directories take their new parent,
    /// link counts of the parents follow the subdirectories that moved,
    /// and both inodes and both parents get a new ctime (the parents a
    /// new mtime too).
    pub fn rename_exchange(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
    ) -> FsResult<()> {
        check_component(name)?;
        check_component(newname)?;
        let mut g = self.lock();
        let mut p = self.dir(&g, parent)?;
        self.dir(&g, newparent)?;
        let src = self.dirent(parent, name)?.ok_or(FsError::NotFound)?;
        let dst = self.dirent(newparent, newname)?.ok_or(FsError::NotFound)?;
        // the kernel's order: neither may be an ancestor of the other's
        // new place (EINVAL both ways for an exchange)
        if src.kind == Kind::Dir && self.is_below(&g, newparent, src.ino)? {
            return Err(FsError::Invalid(
                "cannot move a directory into itself".into(),
            ));
        }
        if dst.kind == Kind::Dir && self.is_below(&g, parent, dst.ino)? {
            return Err(FsError::Invalid(
                "cannot move a directory into itself".into(),
            ));
        }
        if src.ino == dst.ino {
            return Ok(()); // two links to one inode: nothing to do
        }
        // the root holds only buckets; the names exist, so they are
        // valid bucket names already
        if (parent == ROOT_INO && dst.kind != Kind::Dir)
            || (newparent == ROOT_INO && src.kind != Kind::Dir)
        {
            return Err(FsError::NotPermitted(
                "only directories may be buckets at the root".into(),
            ));
        }
        let t = now();
        let mut ops = vec![
            // each name keeps its readdir cookie (the cookie maps to the name)
            Op::Put(
                dirent_key(parent, name),
                enc(&Dirent {
                    ino: dst.ino,
                    kind: dst.kind,
                    cookie: src.cookie,
                }),
            ),
            Op::Put(
                dirent_key(newparent, newname),
                enc(&Dirent {
                    ino: src.ino,
                    kind: src.kind,
                    cookie: dst.cookie,
                }),
            ),
        ];
        let mut a = self.inode(&g, src.ino)?;
        let mut b = self.inode(&g, dst.ino)?;
        a.ctime = t;
        b.ctime = t;
        if a.kind == Kind::Dir {
            a.parent = newparent;
        }
        if b.kind == Kind::Dir {
            b.parent = parent;
        }
        Self::put_inode(&mut g, &a, &mut ops);
        Self::put_inode(&mut g, &b, &mut ops);
        p.mtime = t;
        p.ctime = t;
        if parent != newparent {
            let (a_dir, b_dir) = ((a.kind == Kind::Dir) as u32, (b.kind == Kind::Dir) as u32);
            // a subdirectory left `parent` and another may have come in
            p.nlink = p.nlink + b_dir - a_dir;
            let mut np = self.inode(&g, newparent)?;
            np.nlink = np.nlink + a_dir - b_dir;
            np.mtime = t;
            np.ctime = t;
            Self::put_inode(&mut g, &np, &mut ops);
        }
        Self::put_inode(&mut g, &p, &mut ops);
        self.meta.apply(ops, vec![])?;
        Ok(())
    }

    /// Add a hard link to `ino` as `newparent/newname`.
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        let mut g = self.lock();
        let mut inode = self.inode(&g, ino)?;
        if inode.kind == Kind::Dir {
            return Err(FsError::NotPermitted(
                "hard links to directories are not allowed".into(),
            ));
        }
        let mut np = self.dir(&g, newparent)?;
        self.check_new_name(newparent, newname, inode.kind)?;
        if self.dirent(newparent, newname)?.is_some() {
            return Err(FsError::Exists);
        }
        if inode.nlink == 0 {
            return Err(FsError::NotFound);
        }
        let t = now();
        inode.nlink += 1;
        inode.ctime = t;
        let cookie = np.next_cookie;
        np.next_cookie += 1;
        np.mtime = t;
        np.ctime = t;
        let mut ops = vec![
            Op::Put(
                dirent_key(newparent, newname),
                enc(&Dirent {
                    ino,
                    kind: inode.kind,
                    cookie,
                }),
            ),
            Op::Put(cookie_key(newparent, cookie), newname.to_vec()),
        ];
        Self::put_inode(&mut g, &inode, &mut ops);
        Self::put_inode(&mut g, &np, &mut ops);
        self.meta.apply(ops, vec![])?;
        Ok(inode)
    }

    /// Entries of directory `ino` after readdir offset `offset`. Offsets are
    /// stable cookies: 1 is ".", 2 is "..", then one cookie per entry, so
    /// a reader resumes correctly while the directory changes.
    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> FsResult<Vec<DirEntry>> {
        let g = self.lock();
        let d = self.dir(&g, ino)?;
        drop(g);
        let mut out = Vec::new();
        if offset < 1 {
            out.push((ino, 1, Kind::Dir, b".".to_vec()));
        }
        if offset < 2 {
            out.push((d.parent, 2, Kind::Dir, b"..".to_vec()));
        }
        let start = cookie_key(ino, offset.max(2) + 1);
        let end = crate::meta::prefix_end(&cookie_key(ino, 0)[..9]);
        // one more at the root: the hidden staging directory may be among them
        let fetch = if ino == ROOT_INO {
            max.saturating_add(1)
        } else {
            max
        };
        let mut listed = 0;
        for (k, name) in self.meta.range(&start, &end, fetch)? {
            let cookie = key_u64_at(&k, 9);
            if ino == ROOT_INO && name == S3_STAGING {
                continue;
            }
            if listed == max {
                break;
            }
            listed += 1;
            if let Some(de) = self.dirent(ino, &name)? {
                out.push((de.ino, cookie, de.kind, name));
            }
        }
        Ok(out)
    }

    /// Target of a symlink.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let g = self.lock();
        let i = self.inode(&g, ino)?;
        if i.kind != Kind::Symlink {
            return Err(FsError::Invalid("not a symlink".into()));
        }
        Ok(i.target)
    }

    /// chmod, chown, truncate, utimens.
    pub fn setattr(&self, ino: u64, s: SetAttr) -> FsResult<Attr> {
        let mut g = self.lock();
        let mut inode = self.inode(&g, ino)?;
        let t = now();
        let mut ops = Vec::new();
        let mut after = Vec::new();
        if let Some(size) = s.size {
            match inode.kind {
                Kind::Dir => return Err(FsError::IsDir),
                Kind::File => {}
                _ => return Err(FsError::Invalid("truncate of a special file".into())),
            }
            if size > super::MAX_FILE_SIZE {
                return Err(FsError::FileTooBig);
            }
            if g.open.get(&ino).is_some_and(|of| of.pt_refs > 0) {
                return Err(FsError::Busy);
            }
            self.truncate_locked(&mut g, ino, size, &mut ops, &mut after)?;
            inode = self.inode(&g, ino)?;
            inode.mtime = t;
        }
        if let Some(mode) = s.mode {
            inode.perm = (mode & 0o7777) as u16;
        }
        if s.uid.is_some() || s.gid.is_some() {
            if let Some(u) = s.uid {
                inode.uid = u;
            }
            if let Some(gid) = s.gid {
                inode.gid = gid;
            }
            if inode.kind != Kind::Dir && s.mode.is_none() {
                // a change of owner clears set-user-id and set-group-id (as Linux does)
                inode.perm &= !0o4000;
                if inode.perm & 0o010 != 0 {
                    inode.perm &= !0o2000;
                }
            }
        }
        if let Some(a) = s.atime {
            inode.atime = a.unwrap_or(t);
        }
        if let Some(m) = s.mtime {
            inode.mtime = m.unwrap_or(t);
        }
        inode.ctime = t;
        Self::put_inode(&mut g, &inode, &mut ops);
        self.meta.apply(ops, after)?;
        Ok(inode)
    }

    /// fallocate(2) with the modes FUSE passes on (`mode` is the Linux
    /// flag set). 0: the size grows to `offset + len` if smaller (space is
    /// checked, not reserved: stripes are placed when written).
    /// `FALLOC_FL_KEEP_SIZE` alone: nothing to do. `FALLOC_FL_PUNCH_HOLE
    /// | FALLOC_FL_KEEP_SIZE`: the range inside the file reads as zeros
    /// afterwards. `FALLOC_FL_ZERO_RANGE` (with or without KEEP_SIZE): the
    /// same, and without KEEP_SIZE the size grows to cover the range.
    /// Zeros are written through the ordinary write path (as a pwrite of
    /// zeros would be), so a punched range costs shard space like any
    /// data; growth past the end is a truncate-style extension, which
    /// costs nothing. Other modes: `EOPNOTSUPP`.
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        let zero_range = match mode {
            0 | KEEP => false,
            m if m == PUNCH | KEEP || m == ZERO || m == ZERO | KEEP => true,
            // PUNCH_HOLE without KEEP_SIZE is refused by the kernel too
            m => return Err(FsError::Unsupported(format!("fallocate mode {m:#x}"))),
        };
        let end = offset
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or_else(|| FsError::Invalid("fallocate of an empty range".into()))?;
        if end > super::MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let size = {
            let g = self.lock();
            let inode = self.inode(&g, ino)?;
            match inode.kind {
                Kind::File => inode.size,
                Kind::Dir => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid("fallocate of a special file".into())),
            }
        };
        let keep = mode & KEEP != 0;
        if zero_range && offset < size {
            // zeros over the part of the range inside the file
            let stop = end.min(size);
            let zeros = vec![0u8; ((stop - offset) as usize).min(1 << 20)];
            let mut pos = offset;
            while pos < stop {
                let n = ((stop - pos) as usize).min(zeros.len());
                self.write(ino, pos, &zeros[..n])?;
                pos += n as u64;
            }
        }
        if !keep && end > size {
            if mode == 0 && end - size > self.pool.usable_capacity().1 {
                return Err(crate::pool::PoolError::NoSpace.into());
            }
            self.setattr(
                ino,
                SetAttr {
                    size: Some(end),
                    ..SetAttr::default()
                },
            )?;
        }
        Ok(())
    }

    /// Clear the set-user-id bit, and the set-group-id bit of a
    /// group-executable file, as a write or truncate by an unprivileged
    /// process does on Linux (FUSE_HANDLE_KILLPRIV_V2 leaves it to us).
    pub fn kill_suidgid(&self, ino: u64) -> FsResult<()> {
        let mut g = self.lock();
        let mut inode = self.inode(&g, ino)?;
        let mut perm = inode.perm & !0o4000;
        if perm & 0o010 != 0 {
            perm &= !0o2000;
        }
        if perm == inode.perm || inode.kind != Kind::File {
            return Ok(());
        }
        inode.perm = perm;
        inode.ctime = now();
        let mut ops = Vec::new();
        Self::put_inode(&mut g, &inode, &mut ops);
        self.meta.apply(ops, Vec::new())?;
        Ok(())
    }

    /// Flush a file's buffered data and make metadata durable (fsync, close).
    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        let t0 = std::time::Instant::now();
        {
            let mut g = self.lock();
            if g.open.contains_key(&ino) {
                self.flush_file_locked(&mut g, ino)?;
            }
        }
        let t1 = std::time::Instant::now();
        self.meta.sync()?;
        log::trace!(
            "fsync of inode {ino}: flush {} us, metadata commit {} us",
            (t1 - t0).as_micros(),
            t1.elapsed().as_micros()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relatime_updates_when_not_after_mtime_or_ctime_or_a_day_old() {
        let day = 24 * 3600;
        let now = (10 * day, 5);
        // after both, recent: no update
        assert!(!relatime_due(
            (now.0 - 10, 0),
            (now.0 - 20, 0),
            (now.0 - 20, 0),
            now
        ));
        // not after the mtime (equal counts), or the ctime
        assert!(relatime_due(
            (now.0 - 20, 0),
            (now.0 - 20, 0),
            (now.0 - 30, 0),
            now
        ));
        assert!(relatime_due(
            (now.0 - 20, 0),
            (now.0 - 30, 0),
            (now.0 - 10, 1),
            now
        ));
        // a day old, though after both
        assert!(relatime_due((now.0 - day, 0), (1, 0), (1, 0), now));
        assert!(!relatime_due((now.0 - day + 1, 0), (1, 0), (1, 0), now));
        // nanoseconds count
        assert!(!relatime_due(
            (now.0 - 5, 2),
            (now.0 - 5, 1),
            (now.0 - 5, 1),
            now
        ));
        assert_eq!(AtimeMode::parse("strictatime"), Ok(AtimeMode::Strict));
        assert_eq!(AtimeMode::parse("noatime"), Ok(AtimeMode::NoAtime));
        assert_eq!(AtimeMode::parse("relatime"), Ok(AtimeMode::Relatime));
        assert!(AtimeMode::parse("lazytime").is_err());
    }
}
