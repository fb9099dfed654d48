//! Extended attributes: the `user.` namespace only.

use super::schema::*;
use super::{Fs, FsError, FsResult};
use crate::meta::Op;

/// Largest xattr value accepted.
pub const XATTR_VALUE_MAX: usize = 64 * 1024;

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > 255 {
        return Err(FsError::NameTooLong);
    }
    if !name.starts_with(b"user.") || name.len() == 5 {
        return Err(FsError::Unsupported(format!(
            "xattr {:?}: only user.* attributes are stored",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
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
        if !matches!(inode.kind, Kind::File | Kind::Dir) {
            // as Linux: user.* attributes belong to files and directories
            return Err(FsError::NotPermitted(
                "user.* xattrs only on regular files and directories".into(),
            ));
        }
        let exists = self.meta.get(&xattr_key(ino, name))?.is_some();
        if create && exists {
            return Err(FsError::Exists);
        }
        if replace && !exists {
            return Err(FsError::NoAttr);
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
        if !name.starts_with(b"user.") {
            return Err(FsError::NoAttr);
        }
        self.meta.get(&xattr_key(ino, name))?.ok_or(FsError::NoAttr)
    }

    /// listxattr: names, each NUL-terminated.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let g = self.lock();
        self.inode(&g, ino)?;
        let p = xattr_prefix(ino);
        let mut out = Vec::new();
        for (k, _) in self
            .meta
            .range(&p, &crate::meta::prefix_end(&p), usize::MAX)?
        {
            out.extend_from_slice(&k[9..]);
            out.push(0);
        }
        Ok(out)
    }

    /// removexattr.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        if !name.starts_with(b"user.") {
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
}
