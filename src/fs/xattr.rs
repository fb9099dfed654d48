//! Extended attributes: the `user.` and `trusted.` namespaces.
//!
//! `trusted.*` is for the administrator (overlayfs keeps its upper-layer
//! state there): the kernel lets only CAP_SYS_ADMIN set or read it, and
//! listxattr shows those names to root only, as ext4 does.

use super::schema::*;
use super::{Fs, FsError, FsResult};
use crate::meta::Op;

/// Largest xattr value accepted (Linux's XATTR_SIZE_MAX: E2BIG above).
pub const XATTR_VALUE_MAX: usize = 64 * 1024;
/// Most xattrs one inode may carry (ENOSPC past it). ext4 has no count of
/// its own but its one xattr block bounds it to a few hundred short names.
pub const XATTR_COUNT_MAX: usize = 256;
/// Most bytes (names plus values) of all xattrs of one inode (ENOSPC past
/// it, as ext4 when its xattr space is full): two largest values.
pub const XATTR_TOTAL_MAX: usize = 128 * 1024;

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > 255 {
        return Err(FsError::NameTooLong);
    }
    let bare = name == b"user." || name == b"trusted.";
    if !stored_namespace(name) || bare {
        return Err(FsError::Unsupported(format!(
            "xattr {:?}: only user.* and trusted.* attributes are stored",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// Prefix of the daemon's own per-inode records kept beside the xattrs
/// (the S3 endpoint's ETag and implicit-directory marks): outside every
/// namespace FUSE can name, so getxattr, setxattr, removexattr and
/// listxattr through the mount neither see nor change them; they go with
/// the inode when it is deleted, like its xattrs.
const INTERNAL: &[u8] = b"shardfs.";

/// True for names in a namespace shardfs stores.
fn stored_namespace(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name.starts_with(b"trusted.")
}

impl Fs {
    /// setxattr; `create` is XATTR_CREATE, `replace` XATTR_REPLACE.
    pub fn setxattr(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> FsResult<()> {
        check_name(name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(FsError::TooBig);
        }
        let mut g = self.lock();
        let mut inode = self.inode(&g, ino)?;
        if name.starts_with(b"user.") && !matches!(inode.kind, Kind::File | Kind::Dir) {
            // as Linux: user.* attributes belong to files and directories
            return Err(FsError::NotPermitted(
                "user.* xattrs only on regular files and directories".into(),
            ));
        }
        // the inode's xattrs by name and size, values left in the store
        let p = xattr_prefix(ino);
        let present = self
            .meta
            .range_sizes(&p, &crate::meta::prefix_end(&p), usize::MAX)?;
        let exists = present.iter().any(|(k, _)| &k[p.len()..] == name);
        if create && exists {
            return Err(FsError::Exists);
        }
        if replace && !exists {
            return Err(FsError::NoAttr);
        }
        let count = present.len() + usize::from(!exists);
        let total: usize = present
            .iter()
            .filter(|(k, _)| &k[p.len()..] != name)
            .map(|(k, len)| k.len() - p.len() + len)
            .sum::<usize>()
            + name.len()
            + value.len();
        if count > XATTR_COUNT_MAX || total > XATTR_TOTAL_MAX {
            return Err(FsError::NoSpace(format!(
                "inode {ino}: xattrs would be {count} ({total} bytes); at most \
                 {XATTR_COUNT_MAX} ({XATTR_TOTAL_MAX} bytes) per inode"
            )));
        }
        inode.ctime = now();
        let mut ops = vec![Op::Put(xattr_key(ino, name), value.to_vec())];
        Self::put_inode(&mut g, &inode, &mut ops);
        self.meta.apply(ops, vec![])?;
        Ok(())
    }

    /// getxattr.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        let g = self.lock();
        self.inode(&g, ino)?;
        if !stored_namespace(name) {
            return Err(FsError::NoAttr);
        }
        self.meta.get(&xattr_key(ino, name))?.ok_or(FsError::NoAttr)
    }

    /// listxattr: names, each NUL-terminated (all of them: the view of
    /// root).
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.listxattr_as(ino, true)
    }

    /// listxattr for a caller; `trusted.*` names only when `privileged`.
    pub fn listxattr_as(&self, ino: u64, privileged: bool) -> FsResult<Vec<u8>> {
        let g = self.lock();
        self.inode(&g, ino)?;
        let p = xattr_prefix(ino);
        let mut out = Vec::new();
        // names only: the values stay in the store
        for (k, _) in self
            .meta
            .range_sizes(&p, &crate::meta::prefix_end(&p), usize::MAX)?
        {
            let name = &k[p.len()..];
            if !privileged && name.starts_with(b"trusted.") {
                continue;
            }
            if name.starts_with(INTERNAL) {
                // the daemon's own records (S3 ETags): no xattr of the file
                continue;
            }
            out.extend_from_slice(name);
            out.push(0);
        }
        Ok(out)
    }

    /// removexattr.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        if !stored_namespace(name) {
            return Err(FsError::NoAttr);
        }
        let mut g = self.lock();
        let mut inode = self.inode(&g, ino)?;
        if self.meta.get(&xattr_key(ino, name))?.is_none() {
            return Err(FsError::NoAttr);
        }
        inode.ctime = now();
        let mut ops = vec![Op::Del(xattr_key(ino, name))];
        Self::put_inode(&mut g, &inode, &mut ops);
        self.meta.apply(ops, vec![])?;
        Ok(())
    }

    /// An internal record of `ino` (`name` below `shardfs.`), with the
    /// inode as it is at the same moment.
    pub fn internal_attr(&self, ino: u64, name: &str) -> FsResult<(Inode, Option<Vec<u8>>)> {
        let g = self.lock();
        let inode = self.inode(&g, ino)?;
        let key = xattr_key(ino, format!("shardfs.{name}").as_bytes());
        Ok((inode, self.meta.get(&key)?))
    }

    /// Set (or with `None` remove) an internal record of `ino` if `decide`,
    /// shown the inode under the lock, returns `Some`; the inode itself
    /// (its ctime too) is unchanged. Returns whether it was written.
    pub fn set_internal_attr_if(
        &self,
        ino: u64,
        name: &str,
        decide: impl FnOnce(&Inode) -> Option<Option<Vec<u8>>>,
    ) -> FsResult<bool> {
        let g = self.lock();
        let inode = self.inode(&g, ino)?;
        let Some(value) = decide(&inode) else {
            return Ok(false);
        };
        let key = xattr_key(ino, format!("shardfs.{name}").as_bytes());
        let op = match value {
            Some(v) => Op::Put(key, v),
            None => Op::Del(key),
        };
        self.meta.apply(vec![op], vec![])?;
        Ok(true)
    }
}
