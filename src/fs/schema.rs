//! The metadata schema: key layout and record types. Keys are
//! `table byte ++ big-endian ids ++ name`, so a directory or an object's
//! stripes are one contiguous key range.
//!
//! | table | key                         | value            |
//! |-------|-----------------------------|------------------|
//! | `S`   | `S` ++ name                 | counters         |
//! | `I`   | `I` ++ ino                  | [`Inode`]        |
//! | `D`   | `D` ++ parent ++ name       | [`Dirent`]       |
//! | `C`   | `C` ++ parent ++ cookie     | name (readdir)   |
//! | `X`   | `X` ++ ino ++ name          | xattr value      |
//! | `T`   | `T` ++ ino ++ stripe        | `StripeLoc`      |
//! | `B`   | `B` ++ ino                  | inline file data |
//! | `O`   | `O` ++ ino                  | orphan (unlinked while open) |
//! | `H`   | `H` ++ member index (u16)   | member [`crate::pool::Health`] set by an admin |
//! | `P`   | `P` ++ bucket ino (0: pool) | tier policy      |
//! | `R`   | `R` ++ ino                  | whole-file replica of a hot object |

use serde::{Deserialize, Serialize};

/// Inode number of the root (the bucket list).
pub const ROOT_INO: u64 = 1;
/// First cookie handed to a directory entry (1 and 2 are "." and "..").
pub const FIRST_COOKIE: u64 = 3;

/// Kind of inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// directory
    Dir,
    /// regular file
    File,
    /// symbolic link
    Symlink,
    /// named pipe
    Fifo,
    /// unix socket
    Socket,
    /// character device
    CharDev,
    /// block device
    BlockDev,
}

/// Seconds and nanoseconds since the epoch.
pub type Ts = (i64, u32);

/// Now as a [`Ts`].
pub fn now() -> Ts {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos())
}

/// An inode record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    /// inode number
    pub ino: u64,
    /// kind
    pub kind: Kind,
    /// permission bits incl. suid/sgid/sticky (07777)
    pub perm: u16,
    /// owner
    pub uid: u32,
    /// group
    pub gid: u32,
    /// link count
    pub nlink: u32,
    /// size in bytes (for an open file: size of the durable data)
    pub size: u64,
    /// access time
    pub atime: Ts,
    /// modification time
    pub mtime: Ts,
    /// change time
    pub ctime: Ts,
    /// creation time
    pub crtime: Ts,
    /// device number
    pub rdev: u32,
    /// parent directory (directories only)
    pub parent: u64,
    /// next readdir cookie (directories only)
    pub next_cookie: u64,
    /// data lives in stripes (true) or inline in metadata (false)
    pub striped: bool,
    /// symlink target
    pub target: Vec<u8>,
}

/// A directory entry record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dirent {
    /// child inode
    pub ino: u64,
    /// child kind
    pub kind: Kind,
    /// stable readdir cookie
    pub cookie: u64,
}

fn k1(t: u8, a: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(t);
    k.extend_from_slice(&a.to_be_bytes());
    k
}

/// `S` counter key.
pub fn counter_key(name: &str) -> Vec<u8> {
    let mut k = b"S".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}
/// `I` key.
pub fn inode_key(ino: u64) -> Vec<u8> {
    k1(b'I', ino)
}
/// `D` key.
pub fn dirent_key(parent: u64, name: &[u8]) -> Vec<u8> {
    let mut k = k1(b'D', parent);
    k.extend_from_slice(name);
    k
}
/// `D` prefix of a directory.
pub fn dirent_prefix(parent: u64) -> Vec<u8> {
    k1(b'D', parent)
}
/// `C` key.
pub fn cookie_key(parent: u64, cookie: u64) -> Vec<u8> {
    let mut k = k1(b'C', parent);
    k.extend_from_slice(&cookie.to_be_bytes());
    k
}
/// `X` key.
pub fn xattr_key(ino: u64, name: &[u8]) -> Vec<u8> {
    let mut k = k1(b'X', ino);
    k.extend_from_slice(name);
    k
}
/// `X` prefix of an inode.
pub fn xattr_prefix(ino: u64) -> Vec<u8> {
    k1(b'X', ino)
}
/// `T` key.
pub fn stripe_key(ino: u64, stripe: u64) -> Vec<u8> {
    let mut k = k1(b'T', ino);
    k.extend_from_slice(&stripe.to_be_bytes());
    k
}
/// `T` prefix of an inode.
pub fn stripe_prefix(ino: u64) -> Vec<u8> {
    k1(b'T', ino)
}
/// `B` key.
pub fn inline_key(ino: u64) -> Vec<u8> {
    k1(b'B', ino)
}
/// `O` key.
pub fn orphan_key(ino: u64) -> Vec<u8> {
    k1(b'O', ino)
}

/// `R` key: the whole-file replica of a hot object (see `fs::replica`).
pub fn replica_key(ino: u64) -> Vec<u8> {
    k1(b'R', ino)
}

/// `H` key: the persisted health of a member.
pub fn health_key(member: u16) -> Vec<u8> {
    let mut k = b"H".to_vec();
    k.extend_from_slice(&member.to_be_bytes());
    k
}

/// Encode a record.
pub fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("records serialise")
}

/// Decode a record; the error names what failed.
pub fn dec<T: for<'a> Deserialize<'a>>(what: &str, b: &[u8]) -> Result<T, super::FsError> {
    bincode::deserialize(b).map_err(|e| super::FsError::Corrupt(format!("{what}: {e}")))
}

/// Decode a stripe location (this format or format version 1's) and check
/// it fits `pool` (`pool::validate::stripe_loc`): a location naming a
/// member the pool lacks, or the wrong number of shards, is `Corrupt`.
pub fn dec_loc(
    pool: &crate::pool::Pool,
    b: &[u8],
) -> Result<crate::pool::StripeLoc, super::FsError> {
    let loc = crate::pool::StripeLoc::decode(b).map_err(super::FsError::Corrupt)?;
    let sb = &pool.sb;
    crate::pool::validate::stripe_loc(
        &loc,
        sb.k as usize + sb.m as usize,
        pool.members().len(),
        sb.shard_size as u64 * sb.k as u64,
    )
    .map_err(super::FsError::Corrupt)?;
    Ok(loc)
}

/// Trailing u64 of a key.
pub fn key_u64_at(k: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(k[at..at + 8].try_into().expect("key layout"))
}
