//! Checks on decoded records (issue 14): a record that decodes but does
//! not fit the pool (a stripe location naming a member the pool does not
//! have, a superblock with limits mkfs never writes) is refused here with
//! an error that says what is wrong, instead of reaching an index panic
//! further in. Callers turn the error into their `Corrupt`.

use super::{StripeLoc, Superblock, MAX_MEMBERS, NO_MEMBER};

/// Largest shard size mkfs accepts.
pub const MAX_SHARD_SIZE: u32 = 16 << 20;
/// Smallest shard size a decoded superblock may name, and the alignment
/// it must have. mkfs asks for 4 KiB multiples; the code itself needs
/// only 512-byte ones, and the test pools of the model check use 2 KiB
/// shards (many stripes for few bytes), so decode refuses only what the
/// code cannot handle.
pub const MIN_SHARD_SIZE: u32 = 512;
/// Largest inline threshold mkfs accepts.
pub const MAX_INLINE: u32 = 1 << 20;

/// A decoded superblock holds the limits the code needs (mkfs checks
/// stricter ones): 1 ≤ k, 1 ≤ m,
/// k+m ≤ 64, a shard size of 512 bytes to 16 MiB in 512-byte steps, an inline
/// threshold of at most 1 MiB and at most one stripe, at most
/// [`MAX_MEMBERS`] members with this member's index among them, and a
/// 32-digit hex pool id.
pub fn superblock(sb: &Superblock) -> Result<(), String> {
    let (k, m) = (sb.k as usize, sb.m as usize);
    if k == 0 || m == 0 || k + m > 64 {
        return Err(format!("superblock layout {k}+{m} is out of range"));
    }
    if !(MIN_SHARD_SIZE..=MAX_SHARD_SIZE).contains(&sb.shard_size)
        || !sb.shard_size.is_multiple_of(MIN_SHARD_SIZE)
    {
        return Err(format!(
            "superblock shard size {} is out of range",
            sb.shard_size
        ));
    }
    if sb.inline_max > MAX_INLINE || sb.inline_max as u64 > sb.shard_size as u64 * k as u64 {
        return Err(format!(
            "superblock inline size {} is out of range",
            sb.inline_max
        ));
    }
    if sb.members.len() > MAX_MEMBERS || sb.member_index as usize >= sb.members.len() {
        return Err(format!(
            "superblock member index {} of {} members is out of range",
            sb.member_index,
            sb.members.len()
        ));
    }
    if sb.pool_id.len() != 32 || !sb.pool_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("superblock pool id is not 32 hex digits".into());
    }
    Ok(())
}

/// A decoded stripe location fits a pool of `width` (k+m) shards per
/// stripe, `members` member slots and stripes of `stripe_bytes`: one member
/// per shard, each an existing slot or [`NO_MEMBER`], and no more bytes
/// than a stripe holds.
pub fn stripe_loc(
    loc: &StripeLoc,
    width: usize,
    members: usize,
    stripe_bytes: u64,
) -> Result<(), String> {
    if loc.members.len() != width {
        return Err(format!(
            "stripe location has {} shards, the pool's stripes have {width}",
            loc.members.len()
        ));
    }
    if let Some(bad) = loc
        .members
        .iter()
        .find(|&&mi| mi != NO_MEMBER && mi as usize >= members)
    {
        return Err(format!(
            "stripe location names member {bad}, the pool has {members}"
        ));
    }
    if !loc.places.is_empty() && loc.places.len() != width {
        return Err(format!(
            "stripe location has {} shard places for {width} shards",
            loc.places.len()
        ));
    }
    if let Some(p) = loc
        .places
        .iter()
        .find(|p| !p.is_file() && p.offset() >= super::patch::LOG_MAX)
    {
        return Err(format!(
            "stripe location places a shard at {} of log {}, past the longest log",
            p.offset(),
            p.log
        ));
    }
    if loc.len as u64 > stripe_bytes {
        return Err(format!(
            "stripe location holds {} bytes, a stripe {stripe_bytes}",
            loc.len
        ));
    }
    if let Some(p) = loc
        .patches
        .iter()
        .find(|p| p.member as usize >= members || p.from >= p.to || p.to > loc.len)
    {
        return Err(format!(
            "stripe location has a patch on member {} over {}..{} (pool of {members} members, stripe of {} bytes)",
            p.member, p.from, p.to, loc.len
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(members: Vec<u16>, len: u32) -> StripeLoc {
        StripeLoc {
            generation: 1,
            len,
            members,
            patches: Vec::new(),
            places: Vec::new(),
        }
    }

    #[test]
    fn superblocks_outside_the_mkfs_limits_are_refused_by_decode() {
        let good = Superblock {
            magic: "shardfs".into(),
            format_version: super::super::FORMAT_VERSION,
            pool_id: super::super::new_id(),
            member_id: super::super::new_id(),
            member_index: 2,
            members: vec![super::super::new_id(); 3],
            k: 2,
            m: 1,
            shard_size: 4096,
            inline_max: 2048,
            meta_replicas: vec![0, 1, 2],
            created: 0,
            domains: Vec::new(),
            meta_epoch: 0,
            classes: Vec::new(),
        };
        assert!(Superblock::decode(&good.encode()).is_ok());
        let bad: [fn(&mut Superblock); 7] = [
            |s| s.k = 0,
            |s| s.m = 0,
            |s| s.shard_size = 0,
            |s| s.shard_size = 4097,
            |s| s.inline_max = 3 << 20,
            |s| s.member_index = 3,
            |s| s.pool_id = "ab".into(),
        ];
        for (i, f) in bad.iter().enumerate() {
            let mut sb = good.clone();
            f(&mut sb);
            // checksummed correctly: only the limits can refuse it
            assert!(Superblock::decode(&sb.encode()).is_err(), "case {i}");
        }
    }

    #[test]
    fn stripe_locations_that_do_not_fit_the_pool_are_refused() {
        assert!(stripe_loc(&loc(vec![0, 1, 2], 100), 3, 3, 8192).is_ok());
        assert!(stripe_loc(&loc(vec![0, NO_MEMBER, 2], 100), 3, 3, 8192).is_ok());
        assert!(stripe_loc(&loc(vec![0, 1], 100), 3, 3, 8192).is_err());
        assert!(stripe_loc(&loc(vec![0, 1, 3], 100), 3, 3, 8192).is_err());
        assert!(stripe_loc(&loc(vec![0, 1, 2], 8193), 3, 3, 8192).is_err());
        let patch = |member: u16, from: u32, to: u32| {
            let mut l = loc(vec![0, 1, 2], 100);
            l.patches.push(crate::pool::PatchRef {
                copy: 0,
                member,
                seq: 7,
                log: 0,
                offset: 0,
                len: 200,
                from,
                to,
            });
            l
        };
        assert!(stripe_loc(&patch(2, 10, 20), 3, 3, 8192).is_ok());
        assert!(stripe_loc(&patch(3, 10, 20), 3, 3, 8192).is_err());
        assert!(stripe_loc(&patch(2, 20, 20), 3, 3, 8192).is_err());
        assert!(stripe_loc(&patch(2, 10, 101), 3, 3, 8192).is_err());
    }
}
