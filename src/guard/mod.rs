//! Who may touch a member's files: nobody but the daemon's owner may read
//! them ([`modes`]: 0600 files, 0700 directories, repaired at mount), and
//! only one shardfs process at a time may use a member ([`lock`]: an
//! exclusive flock on `MEMBER/shardfs.lock`). See docs/security.md.

pub mod beneath;
pub mod lock;
pub mod modes;
pub mod panic;

/// The process umask of every `shardfs` subcommand (mkfs, mount, recover):
/// whatever they create on a member (and the daemon's `disk add`) is the
/// owner's alone.
pub const UMASK: u32 = 0o077;

/// Set the process umask to [`UMASK`]. Call before any thread starts.
pub fn restrict_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(UMASK as _));
}
