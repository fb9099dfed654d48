use crate::meta::MetaError;
use crate::pool::PoolError;

/// Errors of filesystem operations. Only the FUSE glue turns them into
/// errnos, through [`FsError::errno`].
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No such file or directory.
    #[error("no such entry")]
    NotFound,
    /// The name exists already.
    #[error("entry exists")]
    Exists,
    /// Directory not empty.
    #[error("directory not empty")]
    NotEmpty,
    /// A directory where a non-directory was needed.
    #[error("is a directory")]
    IsDir,
    /// A non-directory where a directory was needed.
    #[error("not a directory")]
    NotDir,
    /// Component over 255 bytes (or, for S3, a key over 1024 bytes).
    #[error("name too long")]
    NameTooLong,
    /// Bad argument; the message says which.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Operation not permitted here (e.g. a file at the bucket level).
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// No such extended attribute.
    #[error("no such attribute")]
    NoAttr,
    /// Caller's buffer too small.
    #[error("buffer too small")]
    Range,
    /// Attribute value too large.
    #[error("attribute value too large")]
    TooBig,
    /// A per-inode limit is reached (too many or too large xattrs).
    #[error("no space: {0}")]
    NoSpace(String),
    /// Not supported by shardfs.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Unknown file handle.
    #[error("bad file handle")]
    BadHandle,
    /// File would exceed the maximum size.
    #[error("file too large")]
    FileTooBig,
    /// The object is open for passthrough reads and so read-only.
    #[error("text file busy: the file is open for passthrough reads")]
    Busy,
    /// Pool-level failure (unreadable stripe, below write quorum).
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// Metadata store failure.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A metadata record could not be decoded.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
}

impl FsError {
    /// The errno for this error. Exhaustive on purpose: a new variant must
    /// choose its errno here.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::IsDir => libc::EISDIR,
            FsError::NotDir => libc::ENOTDIR,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::NoAttr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::TooBig => libc::E2BIG,
            FsError::NoSpace(_) => libc::ENOSPC,
            FsError::Unsupported(_) => libc::EOPNOTSUPP,
            FsError::BadHandle => libc::EBADF,
            FsError::FileTooBig => libc::EFBIG,
            FsError::Busy => libc::ETXTBSY,
            // fewer than k good shards: EIO, never wrong bytes
            FsError::Pool(PoolError::Unreadable { .. }) => libc::EIO,
            // too few healthy members to write with redundancy
            FsError::Pool(PoolError::BelowWriteQuorum { .. }) => libc::EROFS,
            FsError::Pool(PoolError::NoSpace) => libc::ENOSPC,
            FsError::Pool(PoolError::Setup(_)) => libc::EIO,
            // after a failed metadata commit we refuse writes
            FsError::Meta(MetaError::ReadOnly) => libc::EROFS,
            FsError::Meta(MetaError::Store { .. }) => libc::EIO,
            // a metadata disk is full (after its reserve was spent)
            FsError::Meta(MetaError::NoSpace(_)) => libc::ENOSPC,
            FsError::Corrupt(_) => libc::EIO,
        }
    }
}
