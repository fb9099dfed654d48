//! `mkfs` and opening the members of an existing pool.

use super::{DirDisk, DiskBackend, Member, PoolError, Superblock, FORMAT_VERSION, SUPERBLOCK_FILE};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Parameters of a new pool.
#[derive(Debug, Clone)]
pub struct MkfsOptions {
    /// Data shards.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
    /// Shard payload size in bytes (stripe = k * shard_size).
    pub shard_size: u32,
    /// Inline (small-file) threshold in bytes.
    pub inline_max: u32,
    /// Failure domain of each member, in the order of the directories
    /// (empty: none declared).
    pub domains: Vec<String>,
    /// Device class of each member ("ssd", "hdd", ...), in the order of
    /// the directories (empty: none declared).
    pub classes: Vec<String>,
}

impl Default for MkfsOptions {
    fn default() -> Self {
        MkfsOptions {
            k: 4,
            m: 2,
            shard_size: 1024 * 1024,
            inline_max: 64 * 1024,
            domains: Vec::new(),
            classes: Vec::new(),
        }
    }
}

/// A device class name: 1 to 32 of [A-Za-z0-9_-].
pub fn valid_class(c: &str) -> bool {
    (1..=32).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn setup(msg: String) -> PoolError {
    PoolError::Setup(msg)
}

/// Format `dirs` as the members of a new pool. Refuses directories that are
/// already members of a pool or not empty.
pub fn mkfs(dirs: &[PathBuf], opt: &MkfsOptions) -> Result<Superblock, PoolError> {
    let (k, m) = (opt.k as usize, opt.m as usize);
    if k == 0 || m == 0 || k + m > 64 {
        return Err(setup(format!(
            "--data {k} --parity {m}: need at least 1 data and 1 parity shard, at most 64 in all"
        )));
    }
    if !opt.domains.is_empty() && opt.domains.len() != dirs.len() {
        return Err(setup(format!(
            "--domains names {} failure domains for {} member directories: give one per directory, in order",
            opt.domains.len(),
            dirs.len()
        )));
    }
    if !opt.classes.is_empty() && opt.classes.len() != dirs.len() {
        return Err(setup(format!(
            "--classes names {} classes for {} member directories: give one per directory, in order",
            opt.classes.len(),
            dirs.len()
        )));
    }
    if opt.classes.iter().any(|c| !valid_class(c)) {
        return Err(setup(
            "--classes: each class is 1 to 32 letters, digits, '-' or '_' (e.g. ssd, hdd)".into(),
        ));
    }
    if opt.domains.iter().any(|d| d.is_empty() || d.len() > 64) {
        return Err(setup(
            "--domains: each name must be 1 to 64 characters".into(),
        ));
    }
    if dirs.len() > super::MAX_MEMBERS {
        return Err(setup(format!(
            "{} member directories: a pool has at most {}",
            dirs.len(),
            super::MAX_MEMBERS
        )));
    }
    if dirs.len() < k + m {
        return Err(setup(format!(
            "a {k}+{m} pool needs at least {} member directories, {} given",
            k + m,
            dirs.len()
        )));
    }
    if !(4096..=16 << 20).contains(&opt.shard_size) || !opt.shard_size.is_multiple_of(4096) {
        return Err(setup(format!(
            "--shard-size {}: must be a multiple of 4096 between 4 KiB and 16 MiB",
            opt.shard_size
        )));
    }
    if opt.inline_max as u64 > opt.shard_size as u64 * k as u64 || opt.inline_max > 1 << 20 {
        return Err(setup(format!(
            "--inline-max {}: must be at most one stripe and at most 1 MiB",
            opt.inline_max
        )));
    }
    let mut seen: HashMap<PathBuf, &Path> = HashMap::new();
    for d in dirs {
        let canon = create_canonical(d)?;
        if let Some(prev) = seen.insert(canon, d) {
            return Err(setup(format!(
                "{} is listed twice (same directory as {}): give each member once",
                d.display(),
                prev.display()
            )));
        }
        check_fresh(d)?;
    }
    let pool_id = super::new_id();
    let ids: Vec<String> = dirs.iter().map(|_| super::new_id()).collect();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let meta_replicas: Vec<u16> = (0..=m as u16).collect();
    let mut first = None;
    for (i, d) in dirs.iter().enumerate() {
        let sb = Superblock {
            magic: "shardfs".into(),
            format_version: FORMAT_VERSION,
            pool_id: pool_id.clone(),
            member_id: ids[i].clone(),
            member_index: i as u16,
            members: ids.clone(),
            k: opt.k,
            m: opt.m,
            shard_size: opt.shard_size,
            inline_max: opt.inline_max,
            meta_replicas: meta_replicas.clone(),
            created,
            domains: opt.domains.clone(),
            meta_epoch: 0,
            classes: opt.classes.clone(),
        };
        format_disk(&DirDisk::new(d), &sb)
            .map_err(|e| setup(format!("{}: formatting: {e}", d.display())))?;
        first.get_or_insert(sb);
    }
    Ok(first.expect("at least one member"))
}

/// Lay out an empty member: the root made owner-only (0700), the shard
/// directories, durable, then the superblock (written atomically and
/// synced: it makes the member).
pub(super) fn format_disk(disk: &dyn DiskBackend, sb: &Superblock) -> std::io::Result<()> {
    if let Some(root) = disk.local_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root,
            std::fs::Permissions::from_mode(crate::guard::modes::DIR_MODE),
        )?;
    }
    for dir in 0..256 {
        disk.create_dir_all(&format!("shards/{dir:02x}"))?;
    }
    disk.sync_dir("shards")?;
    // the logs: shard and patch records (format 3)
    disk.create_dir_all(super::patch::PATCH_DIR)?;
    disk.write_atomic(SUPERBLOCK_FILE, &sb.encode())
}

/// Split the member directories given to a mount into those to open and
/// those to leave out (with the warning to log): a directory that exists
/// but holds no superblock (a blank drive swapped in for a dead one, an
/// unformatted directory an fstab glob matched) and a member of another
/// pool than the one most of the given directories belong to. Left-out
/// directories are never locked, walked or written: the pool mounts
/// degraded without them, as ZFS and mdadm do. Anything else (a missing
/// path, a damaged superblock, a tie between pools) is kept, so that
/// opening it fails with its own message.
pub fn sort_member_dirs(dirs: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    enum Seen {
        Keep,
        Blank(usize),
        Pool(String),
    }
    let seen: Vec<Seen> = dirs
        .iter()
        .map(|d| {
            if !d.is_dir() {
                return Seen::Keep;
            }
            match std::fs::read(d.join(SUPERBLOCK_FILE)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let n = std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
                    Seen::Blank(n)
                }
                Ok(b) => match Superblock::decode(&b) {
                    Ok(sb) => Seen::Pool(sb.pool_id),
                    Err(_) => Seen::Keep,
                },
                Err(_) => Seen::Keep,
            }
        })
        .collect();
    let mut votes: HashMap<&str, usize> = HashMap::new();
    for s in &seen {
        if let Seen::Pool(p) = s {
            *votes.entry(p.as_str()).or_default() += 1;
        }
    }
    let best = votes.values().copied().max().unwrap_or(0);
    let leaders: Vec<&str> = votes
        .iter()
        .filter(|(_, &n)| n == best)
        .map(|(p, _)| *p)
        .collect();
    if best == 0 {
        // no member of any pool: let the open say so for every directory
        return (dirs.to_vec(), Vec::new());
    }
    let pool = (leaders.len() == 1).then(|| leaders[0].to_string());
    let mut keep = Vec::new();
    let mut warnings = Vec::new();
    for (d, s) in dirs.iter().zip(&seen) {
        match s {
            Seen::Blank(n) => warnings.push(format!(
                "{} holds no shardfs superblock ({}): it is left out and never written;                  the pool mounts degraded without the member that was there. If it is a                  replacement drive, add it with `shardctl disk add {}` once mounted",
                d.display(),
                if *n == 0 {
                    "an empty directory".to_string()
                } else {
                    format!("{n} unknown entries")
                },
                d.display()
            )),
            Seen::Pool(p) if pool.as_deref().is_some_and(|best| best != p) => {
                warnings.push(format!(
                    "{} is a member of another pool ({p}, not {}): it is left out and never                      modified; the pool mounts degraded without the member that was there",
                    d.display(),
                    pool.as_deref().unwrap_or("")
                ))
            }
            _ => keep.push(d.clone()),
        }
    }
    (keep, warnings)
}

/// Read the superblocks of `dirs` and check they form one pool. Members of
/// the pool that were not given are present as offline.
pub fn open_members(dirs: &[PathBuf]) -> Result<(Superblock, Vec<Member>), PoolError> {
    open_members_with(dirs, &|_, d| d)
}

/// A wrapper put around a member's disk when it is opened (HDD emulation).
pub type DiskWrap<'a> = &'a dyn Fn(u16, Arc<dyn DiskBackend>) -> Arc<dyn DiskBackend>;

/// [`open_members`], with `wrap` put around each member's disk.
pub fn open_members_with(
    dirs: &[PathBuf],
    wrap: DiskWrap,
) -> Result<(Superblock, Vec<Member>), PoolError> {
    if dirs.is_empty() {
        return Err(setup("no member directories given".into()));
    }
    let mut found: Vec<(String, Arc<dyn DiskBackend>, Superblock)> = Vec::new();
    let mut canon_seen: HashMap<PathBuf, PathBuf> = HashMap::new();
    for d in dirs {
        let canon = d.canonicalize().map_err(|e| {
            setup(format!(
                "{}: {e}: check the path, or leave a lost member out of the list",
                d.display()
            ))
        })?;
        if let Some(prev) = canon_seen.insert(canon, d.clone()) {
            return Err(setup(format!(
                "{} is listed twice (same directory as {}): give each member once",
                d.display(),
                prev.display()
            )));
        }
        let bytes = std::fs::read(d.join(SUPERBLOCK_FILE)).map_err(|e| {
            setup(format!(
                "{} is not a formatted shardfs member ({SUPERBLOCK_FILE}: {e}): \
                 run `shardfs mkfs` to create a pool, or check the path",
                d.display()
            ))
        })?;
        let sb = Superblock::decode(&bytes).map_err(|e| {
            setup(format!(
                "{}: {e}: the member's superblock is damaged or from another version",
                d.display()
            ))
        })?;
        found.push((
            d.display().to_string(),
            Arc::new(DirDisk::new(d)) as Arc<dyn DiskBackend>,
            sb,
        ));
    }
    assemble_with(found, wrap)
}

/// Check that opened members (path, disk, superblock) form one pool and
/// build its member list: the longest member list any of them carries
/// (lists only grow, by `disk add`, and every shorter list must be a
/// prefix of it). Members of the pool that were not given are present as
/// missing.
pub fn assemble(
    found: Vec<(String, Arc<dyn DiskBackend>, Superblock)>,
) -> Result<(Superblock, Vec<Member>), PoolError> {
    assemble_with(found, &|_, d| d)
}

/// [`assemble`], with `wrap` put around each member's disk.
pub fn assemble_with(
    found: Vec<(String, Arc<dyn DiskBackend>, Superblock)>,
    wrap: DiskWrap,
) -> Result<(Superblock, Vec<Member>), PoolError> {
    if found.is_empty() {
        return Err(setup("no member directories given".into()));
    }
    for (i, (d, _, sb)) in found.iter().enumerate() {
        let (p0, _, sb0) = &found[0];
        if sb.pool_id != sb0.pool_id {
            return Err(setup(format!(
                "{d} belongs to pool {}, but {p0} belongs to pool {}: list members of one pool only",
                sb.pool_id, sb0.pool_id
            )));
        }
        if sb.members.get(sb.member_index as usize) != Some(&sb.member_id) {
            return Err(setup(format!(
                "{d}: superblock member index {} does not match its member list",
                sb.member_index
            )));
        }
        if let Some((p, _, _)) = found[..i]
            .iter()
            .find(|(_, _, o)| o.member_id == sb.member_id)
        {
            return Err(setup(format!(
                "{p} and {d} are the same member {} (a copied directory?): give each member once",
                sb.member_id
            )));
        }
    }
    // the newest member list: the longest (lists only grow); of equally
    // long ones, the one most members carry (a half-added member carries
    // a list of its own)
    let count = |l: &Vec<String>| found.iter().filter(|(_, _, o)| &o.members == l).count();
    let newest = found
        .iter()
        .map(|(_, _, sb)| sb)
        .max_by_key(|sb| (sb.members.len(), count(&sb.members)))
        .expect("not empty")
        .clone();
    for (d, _, sb) in &found {
        if newest.members.get(sb.member_index as usize) != Some(&sb.member_id) {
            return Err(setup(format!(
                "{d} was being added to the pool when the add stopped, and its slot {} has \
                 since gone to another member: leave it out, empty it and `shardctl disk add` it again",
                sb.member_index
            )));
        }
        if newest.members[..sb.members.len()] != sb.members[..] {
            return Err(setup(format!(
                "{d}: its member list disagrees with the pool's newest one: \
                 the member lists were edited by hand, or the pool was copied"
            )));
        }
    }
    let mut sb0 = found[0].2.clone();
    sb0.members = newest.members.clone();
    sb0.domains = newest.domains.clone();
    sb0.classes = newest.classes.clone();
    // the metadata replica set: the one written last
    let meta = found
        .iter()
        .map(|(_, _, sb)| sb)
        .max_by_key(|sb| sb.meta_epoch)
        .expect("not empty");
    sb0.meta_replicas = meta.meta_replicas.clone();
    sb0.meta_epoch = meta.meta_epoch;
    let k = sb0.k as usize;
    if found.len() < k {
        return Err(setup(format!(
            "only {} of the pool's {} members were given; at least {} (k) are needed to read any data",
            found.len(),
            sb0.members.len(),
            k
        )));
    }
    let members = sb0
        .members
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let present = found
                .iter()
                .find(|(_, _, sb)| sb.member_index as usize == i);
            if present.is_none() {
                log::warn!("member {i} ({id}) was not given: the pool runs degraded without it");
            }
            Member::new(
                i as u16,
                id.clone(),
                present
                    .map(|(p, _, _)| p.clone())
                    .unwrap_or_else(|| "(missing)".into()),
                present.map(|(_, d, _)| wrap(i as u16, d.clone())),
            )
        })
        .collect();
    Ok((sb0, members))
}

/// Check that `dir` can become a new member (exists or can be created,
/// empty, not already a member, not the directory of a current member).
pub fn check_new_member_dir(dir: &Path, current_roots: &[PathBuf]) -> Result<(), PoolError> {
    let canon = create_canonical(dir)?;
    if current_roots
        .iter()
        .any(|r| r.canonicalize().ok().as_ref() == Some(&canon))
    {
        return Err(setup(format!(
            "{} is already a member of this pool",
            dir.display()
        )));
    }
    check_fresh(dir)
}

/// Create `dir` if missing; its canonical path.
fn create_canonical(dir: &Path) -> Result<PathBuf, PoolError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        setup(format!(
            "{}: cannot create member directory: {e}",
            dir.display()
        ))
    })?;
    dir.canonicalize()
        .map_err(|e| setup(format!("{}: {e}", dir.display())))
}

/// A member directory must start empty and unformatted (a lone, unlocked
/// lock file left by a `disk add` that stopped before formatting does not
/// count).
fn check_fresh(dir: &Path) -> Result<(), PoolError> {
    if dir.join(SUPERBLOCK_FILE).exists() {
        return Err(setup(format!(
            "{} is already a shardfs member: remove its contents first if you mean to reuse it",
            dir.display()
        )));
    }
    if std::fs::read_dir(dir)
        .map_err(|e| setup(format!("{}: {e}", dir.display())))?
        .any(|e| {
            e.map_or(true, |e| {
                e.file_name() != crate::guard::lock::LOCK_FILE || !crate::guard::lock::is_stale(dir)
            })
        })
    {
        return Err(setup(format!(
            "{} is not empty: a member directory must start empty",
            dir.display()
        )));
    }
    Ok(())
}
