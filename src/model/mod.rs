//! The executable specification of shardfs: what `docs/SEMANTICS.md` says,
//! as code. An in-memory namespace of buckets, directories, files, hard
//! links, symlinks, modes, xattrs and open handles, with no stripes, no
//! disks and no caches. The conformance tests (`tests/conformance.rs`)
//! drive it and the real filesystem with the same operations and compare
//! every result and the whole tree after every step.
//!
//! Paths are byte strings of `/`-separated components from the mount root;
//! the first component is the bucket. Symlinks are never followed: an
//! operation on a symlink path acts on the link (or fails with `ELOOP`
//! where it would need to follow it, like `O_NOFOLLOW`).
//!
//! Crash semantics are modelled as the set of states a crash may leave:
//! the state at the last durability point and after each later change
//! (a crash loses a suffix of namespace changes, never a mix). A file
//! changed since it was last made durable is uncertain: after a crash each
//! of its bytes is zero or a byte some version since then held at that
//! offset, and its size is at most the largest of those versions.

use std::collections::BTreeMap;
use std::sync::Arc;

/// An errno.
pub type Errno = i32;
/// Result of a model operation.
pub type MResult<T> = Result<T, Errno>;

/// Inode number of the root.
pub const ROOT: u64 = 1;
/// Longest path component.
const NAME_MAX: usize = 255;
/// Longest xattr value.
const XATTR_MAX: usize = 64 * 1024;
/// Most xattrs on one inode, and most bytes of their names plus values.
const XATTR_COUNT_MAX: usize = 256;
const XATTR_TOTAL_MAX: usize = 128 * 1024;

/// What an inode is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A directory: name -> inode.
    Dir(BTreeMap<Vec<u8>, u64>),
    /// A regular file and its bytes.
    File(Vec<u8>),
    /// A symlink and its target.
    Symlink(Vec<u8>),
}

/// One inode of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Contents.
    pub body: Body,
    /// Permission bits.
    pub perm: u32,
    /// Names pointing at it (directories: 2 + subdirectories).
    pub nlink: u32,
    /// `user.*` extended attributes.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// For files changed since they were last made durable: the earlier
    /// versions since then (the current bytes are the newest).
    pub unsynced: Option<Vec<Arc<Vec<u8>>>>,
}

/// Inodes by number.
pub type Tree = BTreeMap<u64, Node>;

/// The reference model.
#[derive(Debug, Clone)]
pub struct Model {
    /// The namespace.
    pub tree: Tree,
    next_ino: u64,
    /// Open handles: fh -> (inode, writable).
    handles: BTreeMap<u64, (u64, bool)>,
    next_fh: u64,
    /// States a crash may leave, oldest (the last durability point) first.
    crash_states: Vec<Tree>,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

/// S3's bucket naming rules (SEMANTICS.md, "Namespace").
pub fn valid_bucket(name: &[u8]) -> bool {
    let ok_char = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.';
    let ok_edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let is_ip = std::str::from_utf8(name)
        .map(|s| s.parse::<std::net::Ipv4Addr>().is_ok())
        .unwrap_or(false);
    (3..=63).contains(&name.len())
        && name.iter().all(ok_char)
        && ok_edge(&name[0])
        && ok_edge(&name[name.len() - 1])
        && !name.windows(2).any(|w| w == b"..")
        && !is_ip
}

fn split(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .collect()
}

impl Model {
    /// An empty, freshly made filesystem.
    pub fn new() -> Self {
        let mut tree = Tree::new();
        tree.insert(ROOT, Node::new(Body::Dir(BTreeMap::new()), 0o755));
        let mut m = Model {
            tree,
            next_ino: ROOT + 1,
            handles: BTreeMap::new(),
            next_fh: 1,
            crash_states: Vec::new(),
        };
        m.durability_point();
        m
    }

    fn node(&self, ino: u64) -> &Node {
        &self.tree[&ino]
    }

    fn node_mut(&mut self, ino: u64) -> &mut Node {
        self.tree.get_mut(&ino).expect("live inode")
    }

    fn entries(&self, dir: u64) -> &BTreeMap<Vec<u8>, u64> {
        match &self.node(dir).body {
            Body::Dir(e) => e,
            _ => unreachable!("not a directory"),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> &mut BTreeMap<Vec<u8>, u64> {
        match &mut self.node_mut(dir).body {
            Body::Dir(e) => e,
            _ => unreachable!("not a directory"),
        }
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(self.node(ino).body, Body::Dir(_))
    }

    /// Inode of `path` (no symlink is followed).
    pub fn resolve(&self, path: &[u8]) -> MResult<u64> {
        let mut ino = ROOT;
        for c in split(path) {
            if c.len() > NAME_MAX {
                return Err(libc::ENAMETOOLONG);
            }
            if !self.is_dir(ino) {
                return Err(libc::ENOTDIR);
            }
            ino = *self.entries(ino).get(c).ok_or(libc::ENOENT)?;
        }
        Ok(ino)
    }

    /// (parent inode, last name) of `path`; the parent must be a directory.
    fn parent_of<'a>(&self, path: &'a [u8]) -> MResult<(u64, &'a [u8])> {
        let comps = split(path);
        let (last, dirs) = comps.split_last().ok_or(libc::EBUSY)?;
        let mut ino = ROOT;
        for c in dirs {
            if c.len() > NAME_MAX {
                return Err(libc::ENAMETOOLONG);
            }
            if !self.is_dir(ino) {
                return Err(libc::ENOTDIR);
            }
            ino = *self.entries(ino).get(*c).ok_or(libc::ENOENT)?;
        }
        if !self.is_dir(ino) {
            return Err(libc::ENOTDIR);
        }
        if last.len() > NAME_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        Ok((ino, last))
    }

    /// Checks for a new name `name` of a node (`dir` or not) in `parent`.
    /// Keys have no length limit of their own (only components do, as on
    /// Linux).
    fn check_new(&self, parent: u64, name: &[u8], dir: bool) -> MResult<()> {
        if parent == ROOT {
            if !dir {
                return Err(libc::EPERM);
            }
            if !valid_bucket(name) {
                return Err(libc::EINVAL);
            }
        }
        Ok(())
    }

    fn add(&mut self, parent: u64, name: &[u8], node: Node) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        if matches!(node.body, Body::Dir(_)) {
            self.node_mut(parent).nlink += 1;
        }
        self.tree.insert(ino, node);
        self.entries_mut(parent).insert(name.to_vec(), ino);
        ino
    }

    /// mkdir.
    pub fn mkdir(&mut self, path: &[u8], perm: u32) -> MResult<()> {
        let (parent, name) = self.parent_of(path)?;
        if self.entries(parent).contains_key(name) {
            return Err(libc::EEXIST);
        }
        self.check_new(parent, name, true)?;
        // a set-group-id directory passes the bit on to new subdirectories
        let inherit = self.node(parent).perm & 0o2000;
        self.add(
            parent,
            name,
            Node::new(Body::Dir(BTreeMap::new()), perm | inherit),
        );
        self.changed();
        Ok(())
    }

    /// symlink.
    pub fn symlink(&mut self, path: &[u8], target: &[u8]) -> MResult<()> {
        let (parent, name) = self.parent_of(path)?;
        if self.entries(parent).contains_key(name) {
            return Err(libc::EEXIST);
        }
        self.check_new(parent, name, false)?;
        self.add(
            parent,
            name,
            Node::new(Body::Symlink(target.to_vec()), 0o777),
        );
        self.changed();
        Ok(())
    }

    /// open(O_CREAT [| O_EXCL], O_RDWR): a writable handle.
    pub fn create(&mut self, path: &[u8], excl: bool, perm: u32) -> MResult<u64> {
        let (parent, name) = self.parent_of(path)?;
        if self.entries(parent).contains_key(name) {
            if excl {
                return Err(libc::EEXIST);
            }
            return self.open(path, true, false);
        }
        self.check_new(parent, name, false)?;
        let ino = self.add(parent, name, Node::new(Body::File(Vec::new()), perm));
        self.node_mut(ino).unsynced = Some(Vec::new());
        self.changed();
        Ok(self.new_handle(ino, true))
    }

    fn new_handle(&mut self, ino: u64, writable: bool) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, (ino, writable));
        fh
    }

    /// open of an existing file, read-only or read-write, with O_TRUNC.
    pub fn open(&mut self, path: &[u8], writable: bool, trunc: bool) -> MResult<u64> {
        let ino = self.resolve(path)?;
        match self.node(ino).body {
            Body::Dir(_) => return Err(libc::EISDIR),
            Body::Symlink(_) => return Err(libc::ELOOP),
            Body::File(_) => {}
        }
        if writable && trunc {
            self.set_len(ino, 0);
            self.changed();
        }
        Ok(self.new_handle(ino, writable))
    }

    fn handle(&self, fh: u64) -> MResult<(u64, bool)> {
        self.handles.get(&fh).copied().ok_or(libc::EBADF)
    }

    fn data_mut(&mut self, ino: u64) -> &mut Vec<u8> {
        let node = self.node_mut(ino);
        // remember the version being replaced
        let old = match &node.body {
            Body::File(d) => d.clone(),
            _ => unreachable!("not a file"),
        };
        node.unsynced
            .get_or_insert_with(Vec::new)
            .push(Arc::new(old));
        match &mut node.body {
            Body::File(d) => d,
            _ => unreachable!(),
        }
    }

    fn set_len(&mut self, ino: u64, len: usize) {
        self.data_mut(ino).resize(len, 0);
    }

    /// pwrite through a handle.
    pub fn write(&mut self, fh: u64, off: u64, data: &[u8]) -> MResult<usize> {
        let (ino, writable) = self.handle(fh)?;
        if !writable {
            return Err(libc::EBADF);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let (off, end) = (off as usize, off as usize + data.len());
        let d = self.data_mut(ino);
        if d.len() < end {
            d.resize(end, 0);
        }
        d[off..end].copy_from_slice(data);
        self.changed();
        Ok(data.len())
    }

    /// pread through a handle.
    pub fn read(&self, fh: u64, off: u64, len: usize) -> MResult<Vec<u8>> {
        let (ino, _) = self.handle(fh)?;
        Ok(slice(self.content(ino), off, len))
    }

    /// Bytes of file `ino`.
    pub fn content(&self, ino: u64) -> &[u8] {
        match &self.node(ino).body {
            Body::File(d) => d,
            _ => &[],
        }
    }

    /// truncate(path, size).
    pub fn truncate(&mut self, path: &[u8], size: u64) -> MResult<()> {
        let ino = self.resolve(path)?;
        match self.node(ino).body {
            Body::Dir(_) => return Err(libc::EISDIR),
            Body::Symlink(_) => return Err(libc::ELOOP),
            Body::File(_) => {}
        }
        self.set_len(ino, size as usize);
        self.changed();
        Ok(())
    }

    /// chmod.
    pub fn chmod(&mut self, path: &[u8], perm: u32) -> MResult<()> {
        let ino = self.resolve(path)?;
        self.node_mut(ino).perm = perm & 0o7777;
        self.changed();
        Ok(())
    }

    /// fsync through a handle: this file's data and every metadata change
    /// before it become durable.
    pub fn fsync(&mut self, fh: u64) -> MResult<()> {
        let (ino, _) = self.handle(fh)?;
        self.node_mut(ino).unsynced = None;
        self.durability_point();
        Ok(())
    }

    /// close: a handle opened for writing is a durability point for its
    /// file (FUSE flush); a read-only one promises nothing.
    pub fn close(&mut self, fh: u64) -> MResult<()> {
        let (ino, writable) = self.handle(fh)?;
        self.handles.remove(&fh);
        if writable {
            self.node_mut(ino).unsynced = None;
            self.durability_point();
        }
        self.forget_if_unused(ino);
        Ok(())
    }

    /// fsyncdir / syncfs: every metadata change so far becomes durable
    /// (file data only for files already flushed).
    pub fn sync_metadata(&mut self) {
        self.crash_states = vec![self.crash_state()];
    }

    /// Drop an inode with no names and no handles.
    fn forget_if_unused(&mut self, ino: u64) {
        let open = self.handles.values().any(|&(i, _)| i == ino);
        if !open && self.node(ino).nlink == 0 {
            self.tree.remove(&ino);
        }
    }

    fn drop_name(&mut self, parent: u64, name: &[u8]) {
        let ino = self.entries_mut(parent).remove(name).expect("entry");
        if self.is_dir(ino) {
            self.node_mut(parent).nlink -= 1;
            self.tree.remove(&ino);
        } else {
            self.node_mut(ino).nlink -= 1;
            self.forget_if_unused(ino);
        }
    }

    /// unlink.
    pub fn unlink(&mut self, path: &[u8]) -> MResult<()> {
        let (parent, name) = self.parent_of(path)?;
        let ino = *self.entries(parent).get(name).ok_or(libc::ENOENT)?;
        if self.is_dir(ino) {
            return Err(libc::EISDIR);
        }
        self.drop_name(parent, name);
        self.changed();
        Ok(())
    }

    /// rmdir.
    pub fn rmdir(&mut self, path: &[u8]) -> MResult<()> {
        let (parent, name) = self.parent_of(path)?;
        let ino = *self.entries(parent).get(name).ok_or(libc::ENOENT)?;
        if !self.is_dir(ino) {
            return Err(libc::ENOTDIR);
        }
        if !self.entries(ino).is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        self.drop_name(parent, name);
        self.changed();
        Ok(())
    }

    /// link(from, to): a new name for a non-directory.
    pub fn link(&mut self, from: &[u8], to: &[u8]) -> MResult<()> {
        let ino = self.resolve(from)?;
        let (parent, name) = self.parent_of(to)?;
        if self.entries(parent).contains_key(name) {
            return Err(libc::EEXIST);
        }
        if self.is_dir(ino) {
            return Err(libc::EPERM);
        }
        self.check_new(parent, name, false)?;
        self.entries_mut(parent).insert(name.to_vec(), ino);
        self.node_mut(ino).nlink += 1;
        self.changed();
        Ok(())
    }

    /// rename(from, to), or renameat2 with RENAME_NOREPLACE.
    pub fn rename(&mut self, from: &[u8], to: &[u8], noreplace: bool) -> MResult<()> {
        let (sp, sname) = self.parent_of(from)?;
        let (dp, dname) = self.parent_of(to)?;
        let src = *self.entries(sp).get(sname).ok_or(libc::ENOENT)?;
        let dst = self.entries(dp).get(dname).copied();
        let src_dir = self.is_dir(src);
        if dst.is_some() && noreplace {
            return Err(libc::EEXIST);
        }
        // a directory may not move below itself
        if src_dir && self.is_below(dp, src) {
            return Err(libc::EINVAL);
        }
        if let Some(dst) = dst {
            // the target may not be an ancestor of the source
            if self.is_dir(dst) && self.is_below(sp, dst) {
                return Err(libc::ENOTEMPTY);
            }
            if dst == src {
                return Ok(()); // the same inode: nothing happens
            }
            match (src_dir, self.is_dir(dst)) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                (true, true) if !self.entries(dst).is_empty() => return Err(libc::ENOTEMPTY),
                _ => {}
            }
        }
        self.check_new(dp, dname, src_dir)?;
        if dst.is_some() {
            self.drop_name(dp, dname);
        }
        self.entries_mut(sp).remove(sname);
        self.entries_mut(dp).insert(dname.to_vec(), src);
        if src_dir {
            self.node_mut(sp).nlink -= 1;
            self.node_mut(dp).nlink += 1;
        }
        self.changed();
        Ok(())
    }

    /// renameat2 with RENAME_EXCHANGE: two existing names swap their
    /// inodes; the parents' link counts follow the directories that moved.
    pub fn exchange(&mut self, a: &[u8], b: &[u8]) -> MResult<()> {
        let (sp, sname) = self.parent_of(a)?;
        let (dp, dname) = self.parent_of(b)?;
        let src = *self.entries(sp).get(sname).ok_or(libc::ENOENT)?;
        let dst = *self.entries(dp).get(dname).ok_or(libc::ENOENT)?;
        let (src_dir, dst_dir) = (self.is_dir(src), self.is_dir(dst));
        // neither may move below itself
        if (src_dir && self.is_below(dp, src)) || (dst_dir && self.is_below(sp, dst)) {
            return Err(libc::EINVAL);
        }
        if src == dst {
            return Ok(()); // the same inode: nothing happens
        }
        // the root holds only buckets
        if (sp == ROOT && !dst_dir) || (dp == ROOT && !src_dir) {
            return Err(libc::EPERM);
        }
        self.entries_mut(sp).insert(sname.to_vec(), dst);
        self.entries_mut(dp).insert(dname.to_vec(), src);
        if sp != dp {
            let (s, d) = (src_dir as u32, dst_dir as u32);
            let n = &mut self.node_mut(sp).nlink;
            *n = *n + d - s;
            let n = &mut self.node_mut(dp).nlink;
            *n = *n + s - d;
        }
        self.changed();
        Ok(())
    }

    /// True if directory `ino` is `top` or lies below it.
    fn is_below(&self, ino: u64, top: u64) -> bool {
        if ino == top {
            return true;
        }
        self.tree.iter().any(|(&parent, node)| match &node.body {
            Body::Dir(e) => e.values().any(|&c| c == ino) && self.is_below(parent, top),
            _ => false,
        })
    }

    /// readlink.
    pub fn readlink(&self, path: &[u8]) -> MResult<Vec<u8>> {
        match &self.node(self.resolve(path)?).body {
            Body::Symlink(t) => Ok(t.clone()),
            _ => Err(libc::EINVAL),
        }
    }

    /// setxattr with XATTR_CREATE / XATTR_REPLACE.
    pub fn setxattr(
        &mut self,
        path: &[u8],
        name: &[u8],
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> MResult<()> {
        let ino = self.resolve(path)?;
        let user = name.starts_with(b"user.");
        let trusted = name.starts_with(b"trusted.");
        if !(user || trusted) || name == b"user." || name == b"trusted." {
            return Err(libc::EOPNOTSUPP);
        }
        // user.* belongs to files and directories; trusted.* (the
        // administrator's, overlayfs's) to any kind, as on Linux
        if user && !matches!(self.node(ino).body, Body::File(..) | Body::Dir(..)) {
            return Err(libc::EPERM); // user.* is for files and directories
        }
        if value.len() > XATTR_MAX {
            return Err(libc::E2BIG);
        }
        let exists = self.node(ino).xattrs.contains_key(name);
        if create && exists {
            return Err(libc::EEXIST);
        }
        if replace && !exists {
            return Err(libc::ENODATA);
        }
        let others = self
            .node(ino)
            .xattrs
            .iter()
            .filter(|(n, _)| n.as_slice() != name);
        let count = others.clone().count() + 1;
        let total: usize =
            others.map(|(n, v)| n.len() + v.len()).sum::<usize>() + name.len() + value.len();
        if count > XATTR_COUNT_MAX || total > XATTR_TOTAL_MAX {
            return Err(libc::ENOSPC);
        }
        self.node_mut(ino)
            .xattrs
            .insert(name.to_vec(), value.to_vec());
        self.changed();
        Ok(())
    }

    /// getxattr.
    pub fn getxattr(&self, path: &[u8], name: &[u8]) -> MResult<Vec<u8>> {
        let ino = self.resolve(path)?;
        self.node(ino)
            .xattrs
            .get(name)
            .cloned()
            .ok_or(libc::ENODATA)
    }

    /// removexattr.
    pub fn removexattr(&mut self, path: &[u8], name: &[u8]) -> MResult<()> {
        let ino = self.resolve(path)?;
        self.node_mut(ino)
            .xattrs
            .remove(name)
            .map(|_| ())
            .ok_or(libc::ENODATA)?;
        self.changed();
        Ok(())
    }

    /// Every name below the root, with its inode, parents before children.
    pub fn paths(&self) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![(Vec::new(), ROOT)];
        while let Some((path, dir)) = stack.pop() {
            for (name, &ino) in self.entries(dir) {
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(name);
                out.push((p.clone(), ino));
                if self.is_dir(ino) {
                    stack.push((p, ino));
                }
            }
        }
        out.sort();
        out
    }

    /// Open handles: (fh, writable).
    pub fn open_handles(&self) -> Vec<(u64, bool)> {
        self.handles.iter().map(|(&fh, &(_, w))| (fh, w)).collect()
    }

    /// Clean unmount: every handle is closed first.
    pub fn unmount(&mut self) {
        for (fh, _) in self.open_handles() {
            self.close(fh).expect("open handle");
        }
        self.sync_metadata();
    }

    // ---- crash semantics ----

    /// The tree as a crash could leave it now: reachable inodes only.
    fn crash_state(&self) -> Tree {
        let mut t = Tree::new();
        t.insert(ROOT, self.tree[&ROOT].clone());
        for (_, ino) in self.paths() {
            t.insert(ino, self.tree[&ino].clone());
        }
        t
    }

    fn durability_point(&mut self) {
        self.crash_states = vec![self.crash_state()];
    }

    /// Record a change: a crash may or may not keep it.
    fn changed(&mut self) {
        let s = self.crash_state();
        self.crash_states.push(s);
    }

    /// The states a crash may leave, newest first.
    pub fn crash_candidates(&self) -> impl Iterator<Item = Model> + '_ {
        self.crash_states.iter().rev().map(|t| Model {
            tree: t.clone(),
            next_ino: self.next_ino,
            handles: BTreeMap::new(),
            next_fh: self.next_fh,
            crash_states: vec![t.clone()],
        })
    }

    /// After a crash the model becomes `state`, with the uncertain files'
    /// bytes replaced by what the filesystem recovered (already checked
    /// against [`content_allowed`]).
    pub fn adopt_after_crash(&mut self, mut state: Model, recovered: &BTreeMap<u64, Vec<u8>>) {
        for (ino, data) in recovered {
            let n = state.node_mut(*ino);
            n.body = Body::File(data.clone());
            n.unsynced = None;
        }
        state.durability_point();
        *self = state;
    }
}

impl Node {
    fn new(body: Body, perm: u32) -> Self {
        let nlink = if matches!(body, Body::Dir(_)) { 2 } else { 1 };
        Node {
            body,
            perm: perm & 0o7777,
            nlink,
            xattrs: BTreeMap::new(),
            unsynced: None,
        }
    }
}

/// `len` bytes of `data` from `off` (fewer at the end).
pub fn slice(data: &[u8], off: u64, len: usize) -> Vec<u8> {
    let s = (off as usize).min(data.len());
    let e = s.saturating_add(len).min(data.len());
    data[s..e].to_vec()
}

/// May a crash leave `got` as the bytes of file `node`? Exact for a file
/// made durable; otherwise every byte is zero or held at that offset by some
/// version since the last durability point, within the largest size.
pub fn content_allowed(node: &Node, got: &[u8]) -> Result<(), String> {
    let Body::File(cur) = &node.body else {
        return Err("not a file".into());
    };
    let Some(old) = &node.unsynced else {
        return if got == &cur[..] {
            Ok(())
        } else {
            Err(format!(
                "durable file has {} bytes, expected {} (first difference at {:?})",
                got.len(),
                cur.len(),
                got.iter().zip(cur).position(|(a, b)| a != b)
            ))
        };
    };
    let versions: Vec<&[u8]> = old
        .iter()
        .map(|v| v.as_slice())
        .chain(std::iter::once(cur.as_slice()))
        .collect();
    let max = versions.iter().map(|v| v.len()).max().unwrap_or(0);
    if got.len() > max {
        return Err(format!(
            "{} bytes, more than any version ({max})",
            got.len()
        ));
    }
    for (i, &b) in got.iter().enumerate() {
        if b != 0 && !versions.iter().any(|v| v.get(i) == Some(&b)) {
            return Err(format!("byte {i} = {b} was never written there"));
        }
    }
    Ok(())
}
