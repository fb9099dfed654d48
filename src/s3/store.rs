//! Objects over the filesystem: the blocking half of the S3 endpoint.
//!
//! Every change goes through the same [`Fs`] calls the FUSE glue makes
//! (lookup, create, write, fsync, release, rename, unlink, rmdir,
//! setxattr), so S3 objects are striped and erasure-coded exactly as files
//! written through the mount. A PUT writes a file in the hidden staging
//! directory ([`crate::fs::names::S3_STAGING`]), makes it durable, and
//! renames it over its key: readers through either door see the old
//! object or the new one, never a part.

use crate::fs::{Attr, Fs, FsError, Inode, Kind, NewNode, ROOT_INO};
use md5::{Digest, Md5};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Internal record of an object's ETag (see [`Store::etag`]).
pub(super) const ETAG_ATTR: &str = "s3.etag";
/// Internal mark of a directory an S3 write made (it goes when emptied by
/// S3 deletes); directories made by mkdir carry none.
const IMPLICIT_ATTR: &str = "s3.implicit";
/// Where object metadata lives as xattrs that FUSE programs see.
pub const XATTR_PREFIX: &str = "user.s3.";
/// User metadata (`x-amz-meta-NAME`) is `user.s3.meta.NAME`.
pub const META_PREFIX: &str = "user.s3.meta.";
/// Largest user metadata of one object (names and values), as S3.
pub const MAX_USER_META: usize = 2048;
/// MD5 of nothing: the ETag of directory markers.
pub const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
/// Bytes read or written per call into `Fs`.
pub const CHUNK: usize = 1 << 20;

/// The kernel's caches of the mount, told about S3 changes.
pub trait Invalidate: Send + Sync {
    /// The name `name` in directory `parent` changed or went away.
    fn entry(&self, parent: u64, name: &[u8]);
    /// The attributes or data of `ino` changed.
    fn inode(&self, ino: u64);
}

/// Why an object operation failed, in S3's terms.
#[derive(Debug)]
pub enum ObjError {
    /// the bucket does not exist
    NoSuchBucket,
    /// the key does not exist
    NoSuchKey,
    /// the bucket name breaks the rules
    InvalidBucketName(String),
    /// the bucket exists already
    BucketExists,
    /// the bucket still holds objects
    BucketNotEmpty,
    /// a key that cannot be a path (empty component, "." or "..")
    InvalidKey(String),
    /// a key or one of its components is too long
    KeyTooLong(String),
    /// the key collides with an object or directory (`a` vs `a/b`)
    Conflict(String),
    /// a precondition (If-None-Match: * on PUT) failed
    PreconditionFailed,
    /// user metadata over 2 KiB
    MetadataTooLarge,
    /// the body's MD5 is not the Content-MD5 sent
    BadDigest,
    /// no such multipart upload
    NoSuchUpload,
    /// a part named in Complete is missing or has another ETag
    InvalidPart(String),
    /// the parts of Complete are not in ascending order
    InvalidPartOrder,
    /// a part other than the last is under 5 MiB
    EntityTooSmall,
    /// a malformed request
    Invalid(String),
    /// anything else from the filesystem
    Fs(FsError),
}

impl From<FsError> for ObjError {
    fn from(e: FsError) -> Self {
        ObjError::Fs(e)
    }
}

/// Result of object operations.
pub type ObjResult<T> = Result<T, ObjError>;

/// A key as a path: its components, and whether it ends with '/' (a
/// directory marker).
#[derive(Debug, Clone)]
pub struct KeyPath {
    /// components, none empty
    pub comps: Vec<Vec<u8>>,
    /// the key ends with '/'
    pub dir_marker: bool,
}

/// Parse `key` into a path below its bucket.
pub fn parse_key(key: &str) -> ObjResult<KeyPath> {
    if key.is_empty() {
        return Err(ObjError::InvalidKey("an empty key".into()));
    }
    let dir_marker = key.ends_with('/');
    let body = if dir_marker {
        &key[..key.len() - 1]
    } else {
        key
    };
    let mut comps = Vec::new();
    for c in body.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(ObjError::InvalidKey(format!(
                "key {key:?}: shardfs stores keys as paths, and a path has no empty, \".\" or \"..\" component"
            )));
        }
        if c.len() > crate::fs::names::NAME_MAX {
            return Err(ObjError::KeyTooLong(format!(
                "key {key:?}: each '/'-separated part of a key is at most {} bytes on shardfs",
                crate::fs::names::NAME_MAX
            )));
        }
        if c.contains('\0') {
            return Err(ObjError::InvalidKey(format!(
                "key {key:?} holds a NUL byte"
            )));
        }
        comps.push(c.as_bytes().to_vec());
    }
    Ok(KeyPath { comps, dir_marker })
}

/// Content headers and user metadata stored with an object.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObjMeta {
    /// (header name as in `user.s3.NAME`, value): content-type,
    /// content-encoding, content-disposition, content-language,
    /// cache-control
    pub headers: BTreeMap<String, String>,
    /// x-amz-meta-* without the prefix
    pub user: BTreeMap<String, String>,
}

/// The stored content headers.
pub const HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
];

impl ObjMeta {
    pub(super) fn user_size(&self) -> usize {
        self.user.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// One object as listings and HEAD show it.
#[derive(Debug, Clone)]
pub struct ObjInfo {
    /// its inode (a directory for a marker)
    pub ino: u64,
    /// bytes
    pub size: u64,
    /// modification time
    pub mtime: (i64, u32),
    /// MD5 in hex
    pub etag: String,
}

/// One listing entry.
#[derive(Debug, Clone)]
pub enum Item {
    /// an object
    Obj(String, ObjInfo),
    /// a common prefix (delimiter roll-up)
    Prefix(String),
}

impl Item {
    /// The key or prefix.
    pub fn name(&self) -> &str {
        match self {
            Item::Obj(k, _) | Item::Prefix(k) => k,
        }
    }
}

/// A listing request.
#[derive(Debug, Clone, Default)]
pub struct ListReq {
    /// only keys starting with this
    pub prefix: String,
    /// roll keys up at the first delimiter after the prefix
    pub delimiter: Option<String>,
    /// only keys (and prefixes) after this
    pub after: Option<String>,
    /// at most this many keys and prefixes
    pub max: usize,
}

/// A file being written in the staging directory. Dropped before
/// [`Store::commit`], it is closed and removed.
#[derive(Debug)]
pub struct Staged {
    pub(super) fs: Arc<Fs>,
    /// its inode
    pub ino: u64,
    pub(super) fh: Option<u64>,
    pub(super) dir: u64,
    pub(super) name: Vec<u8>,
    /// where the key goes
    pub(super) bucket: u64,
    pub(super) key: KeyPath,
    /// bytes written so far
    pub written: u64,
    pub(super) md5: Md5,
    pub(super) done: bool,
}

impl Staged {
    /// Append `data` (the next bytes of the body).
    pub fn append(&mut self, data: &[u8]) -> ObjResult<()> {
        let mut off = 0;
        while off < data.len() {
            let end = (off + CHUNK).min(data.len());
            let n = self.fs.write(self.ino, self.written, &data[off..end])? as usize;
            if n == 0 {
                return Err(ObjError::Fs(FsError::Invalid("short write".into())));
            }
            self.md5.update(&data[off..off + n]);
            self.written += n as u64;
            off += n;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(fh) = self.fh.take() {
            let _ = self.fs.release(fh);
        }
        if !self.done {
            if let Err(e) = self.fs.unlink(self.dir, &self.name) {
                log::warn!(
                    "S3 staging file {} not removed: {e}",
                    String::from_utf8_lossy(&self.name)
                );
            }
        }
    }
}

/// The object layer over a filesystem.
pub struct Store {
    /// the filesystem both doors use
    pub fs: Arc<Fs>,
    inval: Option<Box<dyn Invalidate>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({:?})", self.fs)
    }
}

fn owner() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

pub(super) fn node(kind: Kind, perm: u16) -> NewNode {
    let (uid, gid) = owner();
    NewNode {
        kind,
        perm,
        uid,
        gid,
        rdev: 0,
        target: Vec::new(),
    }
}

pub(super) fn etag_record(md5: &str, i: &Inode) -> Vec<u8> {
    format!(
        "{md5} {} {} {} {} {}",
        i.size, i.mtime.0, i.mtime.1, i.ctime.0, i.ctime.1
    )
    .into_bytes()
}

/// The MD5 of a record if it still describes `i`.
fn etag_valid(rec: &[u8], i: &Inode) -> Option<String> {
    let s = std::str::from_utf8(rec).ok()?;
    let mut w = s.split(' ');
    let md5 = w.next()?.to_string();
    let nums: Vec<i64> = w.map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let want = [
        i.size as i64,
        i.mtime.0,
        i.mtime.1 as i64,
        i.ctime.0,
        i.ctime.1 as i64,
    ];
    let plain = md5
        .get(..32)
        .is_some_and(|h| h.bytes().all(|c| c.is_ascii_hexdigit()));
    let suffix = md5.get(32..).is_some_and(|r| {
        r.is_empty()
            || r.strip_prefix('-')
                .is_some_and(|n| n.parse::<u32>().is_ok())
    });
    (nums == want && plain && suffix).then_some(md5)
}

/// Lowercase hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Store {
    /// The object layer over `fs`; `inval` tells the kernel of changes.
    pub fn new(fs: Arc<Fs>, inval: Option<Box<dyn Invalidate>>) -> Store {
        Store { fs, inval }
    }

    fn tell_entry(&self, parent: u64, name: &[u8]) {
        if let Some(i) = &self.inval {
            i.entry(parent, name);
            i.inode(parent);
        }
    }

    /// Remove whatever a crash or an aborted request left in the staging
    /// directory (at start, before any request). Returns how many.
    pub fn sweep_staging(&self) -> ObjResult<usize> {
        let dir = self.fs.s3_staging_dir()?;
        let mut n = 0;
        for (name, kind, ino) in self.entries(dir)? {
            if kind == Kind::Dir && name.starts_with(super::multipart::UPLOAD_PREFIX.as_bytes()) {
                // a multipart upload outlives restarts; its unfinished parts do not
                n += self.sweep_upload_temps(ino)?;
                continue;
            }
            if self.remove_entry(dir, &name, kind) {
                n += 1;
            }
        }
        self.fs.meta.sync().map_err(FsError::from)?;
        Ok(n)
    }

    /// Remove `name` (a file, or a directory with its files) from `dir`.
    pub(super) fn remove_entry(&self, dir: u64, name: &[u8], kind: Kind) -> bool {
        let r = if kind == Kind::Dir {
            match self.fs.lookup(dir, name) {
                Ok(a) => {
                    for (n, k, _) in self.entries(a.ino).unwrap_or_default() {
                        self.remove_entry(a.ino, &n, k);
                    }
                    self.fs.rmdir(dir, name)
                }
                Err(e) => Err(e),
            }
        } else {
            self.fs.unlink(dir, name)
        };
        match r {
            Ok(()) => true,
            Err(e) => {
                log::warn!(
                    "S3 staging entry {} not removed: {e}",
                    String::from_utf8_lossy(name)
                );
                false
            }
        }
    }

    /// Every entry of a directory (name, kind, inode), in no order.
    pub(super) fn entries(&self, dir: u64) -> ObjResult<Vec<(Vec<u8>, Kind, u64)>> {
        let mut out = Vec::new();
        let mut off = 0;
        loop {
            let batch = self.fs.readdir(dir, off, 1024)?;
            let Some(last) = batch.last() else { break };
            off = last.1;
            for (ino, _, kind, name) in batch {
                if name != b"." && name != b".." {
                    out.push((name, kind, ino));
                }
            }
        }
        Ok(out)
    }

    /// The inode of bucket `name`.
    pub fn bucket(&self, name: &str) -> ObjResult<u64> {
        match self.fs.lookup(ROOT_INO, name.as_bytes()) {
            Ok(a) if a.kind == Kind::Dir => Ok(a.ino),
            Ok(_) | Err(FsError::NotFound) | Err(FsError::NameTooLong) => {
                Err(ObjError::NoSuchBucket)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Buckets: (name, creation time).
    pub fn buckets(&self) -> ObjResult<Vec<(String, (i64, u32))>> {
        let mut out = Vec::new();
        for (name, kind, ino) in self.entries(ROOT_INO)? {
            if kind != Kind::Dir {
                continue;
            }
            let Ok(name) = String::from_utf8(name) else {
                continue;
            };
            let a = self.fs.getattr(ino)?;
            out.push((name, a.crtime));
        }
        out.sort();
        Ok(out)
    }

    /// Create bucket `name`.
    pub fn create_bucket(&self, name: &str) -> ObjResult<()> {
        crate::fs::names::check_bucket(name.as_bytes()).map_err(ObjError::InvalidBucketName)?;
        match self
            .fs
            .create_node(ROOT_INO, name.as_bytes(), node(Kind::Dir, 0o755))
        {
            Ok(_) => {}
            Err(FsError::Exists) => return Err(ObjError::BucketExists),
            Err(e) => return Err(e.into()),
        }
        self.fs.meta.sync().map_err(FsError::from)?;
        Ok(())
    }

    /// Delete bucket `name` (it must be empty).
    pub fn delete_bucket(&self, name: &str) -> ObjResult<()> {
        self.bucket(name)?;
        match self.fs.rmdir(ROOT_INO, name.as_bytes()) {
            Ok(()) => {}
            Err(FsError::NotEmpty) => return Err(ObjError::BucketNotEmpty),
            Err(FsError::NotFound) => return Err(ObjError::NoSuchBucket),
            Err(e) => return Err(e.into()),
        }
        self.fs.meta.sync().map_err(FsError::from)?;
        self.tell_entry(ROOT_INO, name.as_bytes());
        Ok(())
    }

    fn is_implicit(&self, ino: u64) -> ObjResult<bool> {
        Ok(self.fs.internal_attr(ino, IMPLICIT_ATTR)?.1.is_some())
    }

    /// Walk `comps` below `dir`: the attributes of each component found.
    pub(super) fn walk(&self, dir: u64, comps: &[Vec<u8>]) -> ObjResult<Vec<Attr>> {
        let mut out = Vec::new();
        let mut cur = dir;
        for c in comps {
            match self.fs.lookup(cur, c) {
                Ok(a) => {
                    cur = a.ino;
                    let dir = a.kind == Kind::Dir;
                    out.push(a);
                    if !dir {
                        break;
                    }
                }
                Err(FsError::NotFound) | Err(FsError::NotDir) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// The object at `bucket`/`key`: a regular file, or for a key ending
    /// in '/' a directory made by mkdir (or a marker PUT).
    pub fn object(&self, bucket: &str, key: &str) -> ObjResult<ObjInfo> {
        let b = self.bucket(bucket)?;
        let Ok(kp) = parse_key(key) else {
            return Err(ObjError::NoSuchKey);
        };
        let found = self.walk(b, &kp.comps)?;
        if found.len() != kp.comps.len() {
            return Err(ObjError::NoSuchKey);
        }
        let a = found.last().expect("a key has a component");
        match (a.kind, kp.dir_marker) {
            (Kind::File, false) => Ok(ObjInfo {
                ino: a.ino,
                size: a.size,
                mtime: a.mtime,
                etag: self.etag(a.ino)?,
            }),
            (Kind::Dir, true) if !self.is_implicit(a.ino)? => Ok(ObjInfo {
                ino: a.ino,
                size: 0,
                mtime: a.mtime,
                etag: EMPTY_MD5.into(),
            }),
            _ => Err(ObjError::NoSuchKey),
        }
    }

    /// The ETag (MD5 hex) of file `ino`: the one recorded at its S3 commit
    /// while size, mtime and ctime are still those it was recorded for;
    /// else (a FUSE write, truncate or attribute change since, or a file
    /// made through the mount) computed again from the data and recorded.
    pub fn etag(&self, ino: u64) -> ObjResult<String> {
        let (inode, rec) = self.fs.internal_attr(ino, ETAG_ATTR)?;
        if inode.kind == Kind::Dir {
            return Ok(EMPTY_MD5.into());
        }
        if let Some(md5) = rec.as_deref().and_then(|r| etag_valid(r, &inode)) {
            return Ok(md5);
        }
        let fh = self.fs.open(ino, false)?;
        let mut h = Md5::new();
        let mut off = 0u64;
        let r = (|| -> ObjResult<()> {
            while off < inode.size {
                let want = (inode.size - off).min(CHUNK as u64) as u32;
                let d = self.fs.read_quiet(ino, off, want)?;
                if d.is_empty() {
                    break;
                }
                h.update(&d);
                off += d.len() as u64;
            }
            Ok(())
        })();
        let _ = self.fs.release(fh);
        r?;
        let md5 = hex(&h.finalize());
        let rec = etag_record(&md5, &inode);
        self.fs.set_internal_attr_if(ino, ETAG_ATTR, |now| {
            (now.size == inode.size && now.mtime == inode.mtime && now.ctime == inode.ctime)
                .then_some(Some(rec))
        })?;
        Ok(md5)
    }

    /// Stored content headers and user metadata of `ino`.
    pub fn meta_of(&self, ino: u64) -> ObjResult<ObjMeta> {
        let mut m = ObjMeta::default();
        let names = self.fs.listxattr(ino)?;
        for name in names.split(|&c| c == 0).filter(|n| !n.is_empty()) {
            let Ok(n) = std::str::from_utf8(name) else {
                continue;
            };
            let Some(rest) = n.strip_prefix(XATTR_PREFIX) else {
                continue;
            };
            let v = match self.fs.getxattr(ino, name) {
                Ok(v) => String::from_utf8_lossy(&v).into_owned(),
                Err(FsError::NoAttr) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Some(u) = rest.strip_prefix("meta.") {
                m.user.insert(u.to_string(), v);
            } else if HEADERS.contains(&rest) {
                m.headers.insert(rest.to_string(), v);
            }
        }
        Ok(m)
    }

    /// Replace the stored metadata of `ino` by `m`.
    pub(super) fn set_meta(&self, ino: u64, m: &ObjMeta) -> ObjResult<()> {
        let old = self.meta_of(ino)?;
        for k in old.headers.keys() {
            if !m.headers.contains_key(k) {
                let _ = self
                    .fs
                    .removexattr(ino, format!("{XATTR_PREFIX}{k}").as_bytes());
            }
        }
        for k in old.user.keys() {
            if !m.user.contains_key(k) {
                let _ = self
                    .fs
                    .removexattr(ino, format!("{META_PREFIX}{k}").as_bytes());
            }
        }
        for (k, v) in &m.headers {
            self.fs.setxattr(
                ino,
                format!("{XATTR_PREFIX}{k}").as_bytes(),
                v.as_bytes(),
                false,
                false,
            )?;
        }
        for (k, v) in &m.user {
            self.fs.setxattr(
                ino,
                format!("{META_PREFIX}{k}").as_bytes(),
                v.as_bytes(),
                false,
                false,
            )?;
        }
        Ok(())
    }

    /// Check that `key` may name a new object with data in `bucket`: not
    /// too long, no directory marker, and no object or directory in the
    /// way (see `check_target`).
    /// Returns the bucket's inode and the parsed key.
    pub(super) fn data_target(&self, bucket: &str, key: &str) -> ObjResult<(u64, KeyPath)> {
        if key.len() > crate::fs::names::S3_KEY_MAX {
            return Err(ObjError::KeyTooLong(format!(
                "a key is at most {} bytes",
                crate::fs::names::S3_KEY_MAX
            )));
        }
        let b = self.bucket(bucket)?;
        let kp = parse_key(key)?;
        if kp.dir_marker {
            return Err(ObjError::InvalidKey(
                "a key ending in '/' is a directory marker and takes no data".into(),
            ));
        }
        self.check_target(b, key, &kp)?;
        Ok((b, kp))
    }

    /// Check that `key` can go into `bucket` as an object now: the bucket
    /// exists, and no component of the key is an object and the key itself
    /// no directory.
    pub(super) fn check_target(&self, bucket: u64, key: &str, kp: &KeyPath) -> ObjResult<()> {
        let found = self.walk(bucket, &kp.comps)?;
        for (i, a) in found.iter().enumerate() {
            let last = i + 1 == kp.comps.len();
            if !last && a.kind != Kind::Dir {
                let prefix: Vec<&[u8]> = kp.comps[..=i].iter().map(|c| &c[..]).collect();
                return Err(ObjError::Conflict(format!(
                    "key {key:?} cannot be stored: {:?} is an object, and shardfs keeps keys as paths, \
                     so no key may continue below an object's key",
                    String::from_utf8_lossy(&prefix.join(&b'/'))
                )));
            }
            if last && !kp.dir_marker && a.kind == Kind::Dir {
                return Err(ObjError::Conflict(format!(
                    "key {key:?} cannot be stored: keys below {key:?}/ exist, and shardfs keeps keys \
                     as paths, so a key cannot be both an object and a prefix of others"
                )));
            }
            if last && !kp.dir_marker && a.kind != Kind::File {
                return Err(ObjError::Conflict(format!(
                    "key {key:?} names a special file made through the mount"
                )));
            }
        }
        Ok(())
    }

    /// Start writing an object at `bucket`/`key`.
    pub fn begin_put(&self, bucket: &str, key: &str) -> ObjResult<Staged> {
        let (b, kp) = self.data_target(bucket, key)?;
        let dir = self.fs.s3_staging_dir()?;
        let name = format!("put-{:016x}", rand::random::<u64>()).into_bytes();
        let (a, fh) = self
            .fs
            .create_open(dir, &name, node(Kind::File, 0o644), true)?;
        Ok(Staged {
            fs: self.fs.clone(),
            ino: a.ino,
            fh: Some(fh),
            dir,
            name,
            bucket: b,
            key: kp,
            written: 0,
            md5: Md5::new(),
            done: false,
        })
    }

    /// Directories `comps` below `dir`, made where missing (and marked as
    /// made by S3): the innermost one's inode, and (parent, name, inode)
    /// of each on the way.
    fn make_dirs(&self, dir: u64, comps: &[Vec<u8>]) -> ObjResult<Vec<(u64, Vec<u8>, u64)>> {
        let mut cur = dir;
        let mut chain = Vec::new();
        for c in comps {
            let a = match self.fs.lookup(cur, c) {
                Ok(a) => a,
                Err(FsError::NotFound) => match self.fs.create_node(cur, c, node(Kind::Dir, 0o755))
                {
                    Ok(a) => {
                        self.fs.set_internal_attr_if(a.ino, IMPLICIT_ATTR, |_| {
                            Some(Some(Vec::new()))
                        })?;
                        a
                    }
                    Err(FsError::Exists) => self.fs.lookup(cur, c)?,
                    Err(e) => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            };
            if a.kind != Kind::Dir {
                return Err(ObjError::Conflict(format!(
                    "{:?} is an object, so no key may continue below it",
                    String::from_utf8_lossy(c)
                )));
            }
            chain.push((cur, c.clone(), a.ino));
            cur = a.ino;
        }
        Ok(chain)
    }

    /// Commit a staged object under its key with metadata `m`: make its
    /// data durable, rename it over the key, record its ETag, make the
    /// rename durable, and tell the kernel. `content_md5` (raw) is checked
    /// first; `noreplace` is If-None-Match: *. Returns (ETag, size).
    pub fn commit(
        &self,
        st: Staged,
        m: &ObjMeta,
        content_md5: Option<&[u8]>,
        noreplace: bool,
    ) -> ObjResult<(String, u64)> {
        self.commit_as(st, m, content_md5, noreplace, None)
    }

    /// [`Self::commit`], recording `etag` (the multipart form) instead of
    /// the body's MD5.
    pub fn commit_as(
        &self,
        mut st: Staged,
        m: &ObjMeta,
        content_md5: Option<&[u8]>,
        noreplace: bool,
        etag: Option<String>,
    ) -> ObjResult<(String, u64)> {
        let md5 = std::mem::take(&mut st.md5).finalize();
        if let Some(want) = content_md5 {
            if want != md5.as_slice() {
                return Err(ObjError::BadDigest);
            }
        }
        if m.user_size() > MAX_USER_META {
            return Err(ObjError::MetadataTooLarge);
        }
        let md5 = etag.unwrap_or_else(|| hex(&md5));
        self.set_meta(st.ino, m)?;
        self.fs.fsync(st.ino)?;
        if let Some(fh) = st.fh.take() {
            self.fs.release(fh)?;
        }
        let before = self.fs.getattr(st.ino)?;
        let (parents, last) = st.key.comps.split_at(st.key.comps.len() - 1);
        let last = &last[0];
        let mut tries = 0;
        let parent = loop {
            tries += 1;
            let chain = self.make_dirs(st.bucket, parents)?;
            let parent = chain.last().map(|c| c.2).unwrap_or(st.bucket);
            match self.fs.rename(st.dir, &st.name, parent, last, noreplace) {
                Ok(()) => break parent,
                // an S3 delete pruned an empty directory on the way: again
                Err(FsError::NotFound) if tries < 5 => continue,
                Err(FsError::Exists) if noreplace => return Err(ObjError::PreconditionFailed),
                Err(FsError::IsDir) | Err(FsError::NotEmpty) => {
                    return Err(ObjError::Conflict(format!(
                        "keys below {:?}/ exist, so it cannot be an object too",
                        String::from_utf8_lossy(last)
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        };
        st.done = true;
        let rec_md5 = md5.clone();
        self.fs.set_internal_attr_if(st.ino, ETAG_ATTR, |now| {
            (now.size == before.size && now.mtime == before.mtime)
                .then(|| Some(etag_record(&rec_md5, now)))
        })?;
        self.fs.meta.sync().map_err(FsError::from)?;
        self.tell_entry(parent, last);
        Ok((md5, before.size))
    }

    /// PUT of a key ending in '/': the directory, as if made by mkdir (it
    /// stays when emptied).
    pub fn put_marker(&self, bucket: &str, key: &str) -> ObjResult<()> {
        let b = self.bucket(bucket)?;
        let kp = parse_key(key)?;
        self.check_target(b, key, &kp)?;
        let chain = self.make_dirs(b, &kp.comps)?;
        let ino = chain.last().expect("a key has a component").2;
        self.fs
            .set_internal_attr_if(ino, IMPLICIT_ATTR, |_| Some(None))?;
        self.fs.meta.sync().map_err(FsError::from)?;
        Ok(())
    }

    /// Delete `bucket`/`key`: an unlink (or for a marker the directory, if
    /// empty; if not, it becomes implicit), then directories S3 writes made
    /// that it left empty. A key that does not exist is no error, as S3.
    pub fn delete(&self, bucket: &str, key: &str) -> ObjResult<()> {
        let b = self.bucket(bucket)?;
        let Ok(kp) = parse_key(key) else {
            return Ok(());
        };
        let found = self.walk(b, &kp.comps)?;
        if found.len() != kp.comps.len() {
            return Ok(());
        }
        let a = found.last().expect("a key has a component");
        let parent = if found.len() >= 2 {
            found[found.len() - 2].ino
        } else {
            b
        };
        let last = kp.comps.last().expect("a key has a component");
        let mut removed = false;
        let marker = a.kind == Kind::Dir && kp.dir_marker && !self.is_implicit(a.ino)?;
        match (a.kind, kp.dir_marker) {
            (Kind::Dir, true) if marker => match self.fs.rmdir(parent, last) {
                Ok(()) => removed = true,
                Err(FsError::NotEmpty) => {
                    // the marker goes; the directory stays while it holds keys
                    self.fs
                        .set_internal_attr_if(a.ino, IMPLICIT_ATTR, |_| Some(Some(Vec::new())))?;
                }
                Err(FsError::NotFound) => {}
                Err(e) => return Err(e.into()),
            },
            (Kind::File, false) => match self.fs.unlink(parent, last) {
                Ok(()) => removed = true,
                Err(FsError::NotFound) => {}
                Err(e) => return Err(e.into()),
            },
            _ => {}
        }
        if removed {
            self.tell_entry(parent, last);
        }
        // prune implicit directories left empty, innermost first
        let dirs = &found[..found.len() - 1];
        for i in (0..dirs.len()).rev() {
            let d = &dirs[i];
            if !self.is_implicit(d.ino)? {
                break;
            }
            let up = if i == 0 { b } else { dirs[i - 1].ino };
            match self.fs.rmdir(up, &kp.comps[i]) {
                Ok(()) => self.tell_entry(up, &kp.comps[i]),
                Err(FsError::NotEmpty) | Err(FsError::NotFound) => break,
                Err(e) => return Err(e.into()),
            }
        }
        self.fs.meta.sync().map_err(FsError::from)?;
        Ok(())
    }

    /// List `bucket` as S3 does: keys in byte order.
    pub fn list(&self, bucket: &str, req: &ListReq) -> ObjResult<(Vec<Item>, bool)> {
        let b = self.bucket(bucket)?;
        // start in the deepest directory the prefix names whole
        let (dir_part, _) = match req.prefix.rfind('/') {
            Some(i) => req.prefix.split_at(i + 1),
            None => ("", req.prefix.as_str()),
        };
        let mut dir = b;
        for c in dir_part.split('/').filter(|c| !c.is_empty()) {
            match self.fs.lookup(dir, c.as_bytes()) {
                Ok(a) if a.kind == Kind::Dir => dir = a.ino,
                Ok(_) | Err(FsError::NotFound) | Err(FsError::NameTooLong) => {
                    return Ok((Vec::new(), false))
                }
                Err(e) => return Err(e.into()),
            }
        }
        if dir_part.split('/').any(|c| c == "." || c == "..")
            || dir_part.contains("//")
            || dir_part.starts_with('/')
        {
            return Ok((Vec::new(), false));
        }
        let mut w = Walker {
            store: self,
            req,
            out: Vec::new(),
            truncated: false,
        };
        // the marker of the directory the prefix names, itself a key
        if !dir_part.is_empty()
            && dir_part == req.prefix
            && w.after(dir_part)
            && !self.is_implicit(dir)?
        {
            let a = self.fs.getattr(dir)?;
            let info = ObjInfo {
                ino: dir,
                size: 0,
                mtime: a.mtime,
                etag: EMPTY_MD5.into(),
            };
            if !w.emit(Item::Obj(dir_part.to_string(), info)) {
                return Ok((w.out, w.truncated));
            }
        }
        w.visit(dir, dir_part)?;
        Ok((w.out, w.truncated))
    }
}

struct Walker<'a> {
    store: &'a Store,
    req: &'a ListReq,
    out: Vec<Item>,
    truncated: bool,
}

impl Walker<'_> {
    fn after(&self, k: &str) -> bool {
        self.req.after.as_deref().is_none_or(|a| k > a)
    }

    /// Add an item; false once the page is full (and more exist).
    fn emit(&mut self, item: Item) -> bool {
        if let (Item::Prefix(p), Some(Item::Prefix(q))) = (&item, self.out.last()) {
            if p == q {
                return true;
            }
        }
        if self.out.len() >= self.req.max {
            self.truncated = true;
            return false;
        }
        self.out.push(item);
        true
    }

    /// The common prefix `key` rolls up into, if any.
    fn rollup(&self, key: &str) -> Option<String> {
        let d = self.req.delimiter.as_deref().filter(|d| !d.is_empty())?;
        let rest = key.get(self.req.prefix.len()..)?;
        rest.find(d)
            .map(|i| key[..self.req.prefix.len() + i + d.len()].to_string())
    }

    /// Visit directory `dir` whose keys start with `path`; false to stop.
    fn visit(&mut self, dir: u64, path: &str) -> ObjResult<bool> {
        let mut ents: Vec<(String, Kind, u64)> = Vec::new();
        for (name, kind, ino) in self.store.entries(dir)? {
            let Ok(name) = String::from_utf8(name) else {
                log::debug!("S3 listing skips a name that is not UTF-8");
                continue;
            };
            let full = match kind {
                Kind::Dir => format!("{path}{name}/"),
                Kind::File => format!("{path}{name}"),
                _ => continue,
            };
            ents.push((full, kind, ino));
        }
        ents.sort_by(|a, b| a.0.cmp(&b.0));
        let prefix = self.req.prefix.as_str();
        for (full, kind, ino) in ents {
            let inside = full.starts_with(prefix);
            if !(inside || kind == Kind::Dir && prefix.starts_with(&full)) {
                continue;
            }
            if kind == Kind::File {
                if !self.after(&full) {
                    continue;
                }
                let item = match self.rollup(&full) {
                    Some(p) => Item::Prefix(p),
                    None => {
                        let a = self.store.fs.getattr(ino)?;
                        if a.kind != Kind::File {
                            continue;
                        }
                        Item::Obj(
                            full,
                            ObjInfo {
                                ino,
                                size: a.size,
                                mtime: a.mtime,
                                etag: self.store.etag(ino)?,
                            },
                        )
                    }
                };
                if let Item::Prefix(p) = &item {
                    if !self.after(p) {
                        continue;
                    }
                }
                if !self.emit(item) {
                    return Ok(false);
                }
                continue;
            }
            // a directory: rolled up whole, or its marker and then its keys
            if inside {
                if let Some(p) = self.rollup(&full) {
                    if self.after(&p) && !self.empty_implicit(ino)? && !self.emit(Item::Prefix(p)) {
                        return Ok(false);
                    }
                    continue;
                }
                if self.after(&full) && !self.store.is_implicit(ino)? {
                    let a = self.store.fs.getattr(ino)?;
                    let info = ObjInfo {
                        ino,
                        size: 0,
                        mtime: a.mtime,
                        etag: EMPTY_MD5.into(),
                    };
                    if !self.emit(Item::Obj(full.clone(), info)) {
                        return Ok(false);
                    }
                }
            }
            let descend = match self.req.after.as_deref() {
                None => true,
                Some(a) => a.starts_with(&full) || full.as_str() > a,
            };
            if descend && !self.visit(ino, &full)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// An implicit directory with nothing in it (left so by FUSE unlinks):
    /// no common prefix.
    fn empty_implicit(&self, ino: u64) -> ObjResult<bool> {
        if !self.store.is_implicit(ino)? {
            return Ok(false);
        }
        let e = self.store.fs.readdir(ino, 2, 1)?;
        Ok(e.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_paths() {
        let k = parse_key("a/b/c").unwrap();
        assert_eq!(k.comps, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert!(!k.dir_marker);
        let k = parse_key("dir/").unwrap();
        assert!(k.dir_marker && k.comps == vec![b"dir".to_vec()]);
        for bad in ["", "/a", "a//b", "a/./b", "a/../b", "..", "//"] {
            assert!(parse_key(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_key(&"x".repeat(256)),
            Err(ObjError::KeyTooLong(_))
        ));
    }

    #[test]
    fn etag_records_check_the_inode() {
        let mut i: Inode = crate::fs::schema::Inode {
            ino: 5,
            kind: Kind::File,
            perm: 0o644,
            uid: 0,
            gid: 0,
            nlink: 1,
            size: 3,
            atime: (1, 0),
            mtime: (2, 5),
            ctime: (3, 7),
            crtime: (1, 0),
            rdev: 0,
            parent: 1,
            next_cookie: 3,
            striped: false,
            target: Vec::new(),
        };
        let r = etag_record(EMPTY_MD5, &i);
        assert_eq!(etag_valid(&r, &i).as_deref(), Some(EMPTY_MD5));
        i.mtime.1 += 1;
        assert_eq!(etag_valid(&r, &i), None);
    }
}
