//! Metadata disaster recovery: with every metadata replica lost, rebuild
//! the namespace and every object from what the members hold on their own.
//!
//! Phase 1, objects. Each shard (a file of its own, or since format 3 a
//! record at a 4 KiB boundary of a log, found by its magic) names its object, stripe, generation
//! and index, and its header (under a checksum) repeats them with the pool
//! id, the code and the stripe's byte count. So for every (object, stripe)
//! the newest generation with at least k verifying shards is decoded, and
//! each object is written as `OUT/lost+found/object-<inode>`.
//!
//! Small overwrites not folded yet live in patch records
//! ([`crate::ec::patch`]) in the members' patch logs, m+1 copies each, not
//! in the shard files. Every log is scanned for records that verify (holes
//! and torn appends are skipped byte by byte to the next record), and each
//! decoded generation gets the records naming exactly it (object, stripe,
//! generation) laid over its data in sequence order, as a read does. A
//! record either verifies whole or is skipped, so a patch is applied whole
//! or not at all. Without the metadata there is no telling whether a
//! verified record's commit happened before a crash: it is applied (a
//! write of the last moments before the crash may come back; every
//! stripe still holds either its old bytes or its new ones).
//!
//! Phase 2, names. Every member holds the namespace catalog
//! ([`crate::catalog`]): inodes, directory entries, xattrs and small
//! (inline) files, written every few minutes while the metadata changes and
//! at unmount. The newest catalog that verifies rebuilds the tree under
//! `OUT`: buckets and directories, each striped object moved to its path
//! (hard links linked again), small files written from the catalog,
//! symlinks, user xattrs, modes, owners (as root) and times.
//!
//! What cannot be recovered (documented in docs/OPERATIONS.md):
//! - changes to the namespace after the newest catalog: files created since
//!   stay in `lost+found` as `object-<inode>`, renames since show the old
//!   name, small files written since have their catalog content, files
//!   deleted since come back (from their shards, unless the deletion
//!   reached them);
//! - with no catalog at all (a pool older than the catalog, or every member
//!   lost it): everything but the striped objects, which stay unnamed;
//! - a file's bytes beyond the last stripe that survives read as zeros; a
//!   generation written but never committed (the last seconds) is newer and
//!   wins; so does a stripe a truncate dropped if its deletion had not
//!   happened yet, and a patch written but never committed if its records
//!   reached every parity shard that is left.

use crate::ec::patch::PATCH_HEADER_LEN;
use crate::ec::{Codec, Patch, ShardHeader};
use crate::pool::patch::PATCH_DIR;
use crate::pool::{parse_shard_name, Superblock, SUPERBLOCK_FILE};
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What a recovery found and wrote.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RecoverReport {
    /// Objects written.
    pub objects: u64,
    /// Stripes decoded.
    pub stripes: u64,
    /// Stripes with fewer than k good shards in every generation.
    pub unrecoverable_stripes: u64,
    /// Shard files that failed verification (skipped).
    pub bad_shards: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Commit sequence of the catalog used (None: no catalog found).
    pub catalog_sequence: Option<u64>,
    /// Unix time the catalog used was written.
    pub catalog_created: Option<u64>,
    /// Paths created from the catalog (directories, files, links, symlinks).
    pub named: u64,
    /// Objects left unnamed in lost+found (created after the catalog).
    pub unnamed_objects: u64,
    /// Striped files in the catalog with no stripe found (created empty).
    pub files_without_data: u64,
    /// Catalog paths too long for the recovery's output tree (PATH_MAX),
    /// with everything under them: not recreated (striped objects stay in
    /// lost+found).
    pub paths_too_long: u64,
    /// Verified patch records (copies) of this pool found in the patch logs.
    pub patch_records: u64,
    /// Patches laid over a decoded generation.
    pub patches_applied: u64,
    /// Patches of a decoded generation left out: no copy could be read
    /// again.
    pub patches_lost: u64,
    /// Places in the patch logs that start like a record but do not verify
    /// (torn or damaged), and records of another pool.
    pub patch_records_rejected: u64,
    /// Patch log bytes in no verified record (holes, torn or damaged
    /// records, other pools' records).
    pub patch_bytes_skipped: u64,
}

/// Recover every striped object found on the member directories `dirs`
/// into `out` (created; must be empty).
pub fn recover(dirs: &[PathBuf], out: &Path) -> Result<RecoverReport, String> {
    let mut sb: Option<Superblock> = None;
    for d in dirs {
        let bytes = std::fs::read(d.join(SUPERBLOCK_FILE)).map_err(|e| {
            format!(
                "{}: no shardfs superblock ({e}); give member directories",
                d.display()
            )
        })?;
        let s = Superblock::decode(&bytes).map_err(|e| format!("{}: {e}", d.display()))?;
        match &sb {
            Some(first) if first.pool_id != s.pool_id => {
                return Err(format!(
                    "{} belongs to pool {}, not {}",
                    d.display(),
                    s.pool_id,
                    first.pool_id
                ))
            }
            Some(_) => {}
            None => sb = Some(s),
        }
    }
    let sb = sb.ok_or("no member directories given")?;
    // no daemon may be using the members while they are read (nor start
    // while they are): held until the recovery returns
    let holder = crate::guard::lock::Holder::Recover(
        std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf()),
    );
    let mut locks = Vec::new();
    for d in dirs {
        locks.extend(crate::guard::lock::lock_member_for_reading(d, &holder)?);
    }
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(|e| e.to_string())?
            .next()
            .is_some()
    {
        return Err(format!("{} is not empty", out.display()));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let lost = out.join("lost+found");
    std::fs::create_dir_all(&lost).map_err(|e| format!("{}: {e}", lost.display()))?;
    let codec = Codec::new(sb.k as usize, sb.m as usize).map_err(|e| e.to_string())?;
    let pool = sb.pool_bytes();
    let n = sb.k as usize + sb.m as usize;
    let stripe_size = sb.k as u64 * sb.shard_size as u64;

    let mut found: Found = BTreeMap::new();
    for d in dirs {
        let Ok(subdirs) = std::fs::read_dir(d.join("shards")) else {
            continue;
        };
        for sd in subdirs.flatten() {
            let Ok(files) = std::fs::read_dir(sd.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some((o, s, g, i)) = parse_shard_name(&name) {
                    found
                        .entry((o, s))
                        .or_default()
                        .entry(g)
                        .or_default()
                        .push((i, Src::File(f.path())));
                }
            }
        }
    }

    let mut report = RecoverReport::default();
    let patches = find_patches(dirs, &pool, &mut report, &mut found);
    let mut open: Option<(u64, std::fs::File)> = None;
    for ((object, stripe), gens) in found {
        let mut decoded = None;
        for (generation, files) in gens.iter().rev() {
            let mut shards: Vec<Option<Vec<u8>>> = vec![None; n];
            let mut len = None;
            for (i, src) in files {
                let Ok(bytes) = src.read() else {
                    report.bad_shards += 1;
                    continue;
                };
                match ShardHeader::open(&bytes) {
                    Ok((h, payload))
                        if h.id.pool == pool
                            && h.id.object == object
                            && h.id.stripe == stripe
                            && h.id.generation == *generation
                            && h.id.index == *i
                            && (*i as usize) < n =>
                    {
                        len = Some(h.stripe_len);
                        shards[*i as usize] = Some(payload.to_vec());
                    }
                    _ => report.bad_shards += 1,
                }
            }
            if let Some(len) = len {
                if let Ok(mut data) = codec.decode(shards, len as usize) {
                    if let Some(recs) = patches.index.get(&(object, stripe, *generation)) {
                        let what =
                            format!("object {object} stripe {stripe} generation {generation}");
                        let (applied, lost) = patches.apply(&what, recs, &mut data);
                        report.patches_applied += applied;
                        report.patches_lost += lost;
                    }
                    decoded = Some(data);
                    break;
                }
            }
            log::warn!(
                "object {object} stripe {stripe} generation {generation}: too few good shards"
            );
        }
        let Some(data) = decoded else {
            report.unrecoverable_stripes += 1;
            continue;
        };
        if open.as_ref().map(|(o, _)| *o) != Some(object) {
            let path = lost.join(format!("object-{object}"));
            let f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            open = Some((object, f));
            report.objects += 1;
        }
        let (_, f) = open.as_mut().expect("just opened");
        f.seek(SeekFrom::Start(stripe * stripe_size))
            .and_then(|_| f.write_all(&data))
            .map_err(|e| format!("object-{object}: {e}"))?;
        report.stripes += 1;
        report.bytes += data.len() as u64;
    }
    if let Some((_, f)) = open {
        f.sync_all().map_err(|e| e.to_string())?;
    }
    if report.patch_records + report.patch_records_rejected > 0 {
        log::info!(
            "patch logs: {} records found, {} patches applied, {} left out (unreadable), \
             {} rejected, {} bytes skipped",
            report.patch_records,
            report.patches_applied,
            report.patches_lost,
            report.patch_records_rejected,
            report.patch_bytes_skipped
        );
    }
    match newest_catalog(dirs, &sb.pool_id) {
        Some((h, pairs)) => {
            report.catalog_sequence = Some(h.sequence);
            report.catalog_created = Some(h.created);
            names::rebuild(&pairs, out, &lost, &mut report)?;
        }
        None => {
            log::warn!("no namespace catalog on any member: objects stay unnamed in lost+found")
        }
    }
    report.unnamed_objects = std::fs::read_dir(&lost)
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Ok(report)
}

/// Magic of a patch record ([`crate::ec::patch`]).
const PATCH_MAGIC: &[u8; 4] = b"SPAT";

/// A verified patch record (one copy), by where it lies in a log.
#[derive(Debug, Clone)]
struct PatchAt {
    /// Patch sequence.
    seq: u64,
    /// Log file (an index into [`Patches::logs`]).
    log: usize,
    /// Offset of the record in the log.
    offset: u64,
    /// Length of the record.
    len: usize,
}

/// Every verified patch record of the pool in the members' logs. Only
/// where they are is kept (records are read again when applied), so the
/// memory used does not grow with the bytes patched.
#[derive(Debug, Default)]
struct Patches {
    logs: Vec<PathBuf>,
    /// (object, stripe, generation) -> its records.
    index: BTreeMap<(u64, u64, u64), Vec<PatchAt>>,
}

/// Length of the record starting `rec` as its header says, if the header
/// is there and the record fits.
fn record_len(rec: &[u8]) -> Option<usize> {
    if rec.len() < PATCH_HEADER_LEN || &rec[..4] != PATCH_MAGIC {
        return None;
    }
    let at = |i: usize| u32::from_le_bytes(rec[i..i + 4].try_into().expect("4 bytes")) as usize;
    let len = at(56)
        .checked_mul(8)?
        .checked_add(PATCH_HEADER_LEN)?
        .checked_add(at(60))?;
    (len <= rec.len()).then_some(len)
}

/// The verified records of one log, by offset, and the places that start
/// with the magic but hold no verified record. A failed append can leave
/// a hole or a torn record between records, so after a bad place the scan
/// moves one byte on and looks for the next magic.
fn scan_log(bytes: &[u8]) -> (Vec<(usize, Patch)>, u64) {
    let mut found = Vec::new();
    let mut rejected = 0;
    let mut at = 0;
    while at < bytes.len() {
        let Some(i) = bytes[at..].windows(4).position(|w| w == PATCH_MAGIC) else {
            break;
        };
        at += i;
        match record_len(&bytes[at..]).map(|len| (len, Patch::open(&bytes[at..at + len]))) {
            Some((len, Ok(p))) => {
                found.push((at, p));
                at += len;
            }
            _ => {
                rejected += 1;
                at += 1;
            }
        }
    }
    (found, rejected)
}

/// Where a shard's bytes were found: a shard file of its own (format 2
/// and before), or a record in a log (file, offset, length).
enum Src {
    File(PathBuf),
    Record(PathBuf, u64, usize),
}

impl Src {
    /// The shard's bytes (header, block table, payload).
    fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            Src::File(p) => std::fs::read(p),
            Src::Record(p, at, len) => {
                let mut buf = vec![0u8; *len];
                std::fs::File::open(p)?.read_exact_at(&mut buf, *at)?;
                Ok(buf)
            }
        }
    }
}

/// Shards found: (object, stripe) -> generation -> [(index, where)].
type Found = BTreeMap<(u64, u64), BTreeMap<u64, Vec<(u8, Src)>>>;

/// Magic of a shard header ([`crate::ec::ShardHeader`]).
const SHARD_MAGIC: &[u8; 8] = b"SHRDFS01";

/// The shard records of this pool in one log's bytes: (offset, length,
/// index, object, stripe, generation). Records start on
/// [`crate::pool::LOG_ALIGN`] boundaries; a place that starts with the
/// magic but does not verify (torn, or punched in part) is skipped.
fn scan_shard_records(bytes: &[u8], pool: &[u8; 16]) -> Vec<(u64, usize, u8, u64, u64, u64)> {
    let mut out = Vec::new();
    let step = crate::pool::LOG_ALIGN as usize;
    let mut at = 0;
    while at + crate::ec::HEADER_LEN <= bytes.len() {
        if &bytes[at..at + 8] != SHARD_MAGIC {
            at += step;
            continue;
        }
        let payload = u32::from_le_bytes(bytes[at + 56..at + 60].try_into().unwrap()) as usize;
        let len = crate::ec::header_len(payload) + payload;
        if at + len <= bytes.len() {
            if let Ok((h, _)) = ShardHeader::open(&bytes[at..at + len]) {
                if h.id.pool == *pool {
                    out.push((
                        at as u64,
                        len,
                        h.id.index,
                        h.id.object,
                        h.id.stripe,
                        h.id.generation,
                    ));
                    at += len.next_multiple_of(step);
                    continue;
                }
            }
        }
        at += step;
    }
    out
}

/// Scan the logs (`patches/<8 hex digits>`) of every member: their patch
/// records (returned) and their shard records (added to `found`).
fn find_patches(
    dirs: &[PathBuf],
    pool: &[u8; 16],
    report: &mut RecoverReport,
    found: &mut Found,
) -> Patches {
    let mut out = Patches::default();
    for d in dirs {
        let dir = d.join(PATCH_DIR);
        let names = match std::fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                log::warn!("{}: {e}: its patches are not applied", dir.display());
                continue;
            }
        };
        let mut names: Vec<String> = names
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 8 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let mut bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    log::warn!("{}: {e}: its patches are not applied", path.display());
                    continue;
                }
            };
            let mut taken = 0u64;
            for (at, len, i, o, st, g) in scan_shard_records(&bytes, pool) {
                taken += len as u64;
                found
                    .entry((o, st))
                    .or_default()
                    .entry(g)
                    .or_default()
                    .push((i, Src::Record(path.clone(), at, len)));
                // what a shard holds is file data, never a patch record
                // (a file may hold a copy of a log)
                bytes[at as usize..at as usize + len].fill(0);
            }
            let (recs, mut rejected) = scan_log(&bytes);
            let log = out.logs.len();
            for (offset, p) in recs {
                let s = p.id.shard;
                let len = PATCH_HEADER_LEN + 8 * p.extents.len() + p.payload.len();
                if s.pool != *pool || s.index != crate::ec::patch::OVERLAY {
                    rejected += 1;
                    continue;
                }
                taken += len as u64;
                report.patch_records += 1;
                out.index
                    .entry((s.object, s.stripe, s.generation))
                    .or_default()
                    .push(PatchAt {
                        seq: p.id.seq,
                        log,
                        offset: offset as u64,
                        len,
                    });
            }
            if rejected > 0 {
                log::warn!(
                    "{}: {rejected} damaged or foreign patch records skipped",
                    path.display()
                );
            }
            report.patch_records_rejected += rejected;
            report.patch_bytes_skipped += bytes.len() as u64 - taken;
            out.logs.push(path);
        }
    }
    out
}

impl Patches {
    /// Read one record again and check it is still the one indexed.
    fn read(&self, r: &PatchAt) -> Result<Patch, String> {
        let path = &self.logs[r.log];
        let mut buf = vec![0u8; r.len];
        std::fs::File::open(path)
            .and_then(|f| f.read_exact_at(&mut buf, r.offset))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let p = Patch::open(&buf).map_err(|e| format!("{}@{}: {e}", path.display(), r.offset))?;
        if p.id.seq != r.seq {
            return Err(format!("{}@{}: record changed", path.display(), r.offset));
        }
        Ok(p)
    }

    /// Lay the records `recs` of one generation over its decoded data, in
    /// sequence order, as a read does (one copy of each patch; another
    /// copy when one no longer reads back). Every record found is whole
    /// (the scan verified it), so a patch is applied or, if no copy reads
    /// again, left out whole. Returns (patches applied, patches left out).
    fn apply(&self, what: &str, recs: &[PatchAt], data: &mut [u8]) -> (u64, u64) {
        let mut by_seq: BTreeMap<u64, Vec<&PatchAt>> = BTreeMap::new();
        for r in recs {
            by_seq.entry(r.seq).or_default().push(r);
        }
        let (mut applied, mut lost) = (0, 0);
        for (seq, copies) in by_seq {
            let mut last = String::new();
            let got = copies.iter().find_map(|r| match self.read(r) {
                Ok(p) => Some(p),
                Err(e) => {
                    last = e;
                    None
                }
            });
            match got {
                Some(p) => {
                    p.overlay(0, data);
                    applied += 1;
                }
                None => {
                    log::warn!("{what}: patch {seq} left out: {last}");
                    lost += 1;
                }
            }
        }
        (applied, lost)
    }
}

/// The verifying catalog of this pool with the highest sequence.
fn newest_catalog(dirs: &[PathBuf], pool_id: &str) -> Option<crate::catalog::Catalog> {
    dirs.iter()
        .filter_map(|d| {
            let b = std::fs::read(d.join(crate::catalog::CATALOG_FILE)).ok()?;
            match crate::catalog::decode(&b) {
                Ok(c) if c.0.pool_id == pool_id => Some(c),
                Ok(_) => None,
                Err(e) => {
                    log::warn!("{}: catalog skipped: {e}", d.display());
                    None
                }
            }
        })
        .max_by_key(|c| c.0.sequence)
}

/// Phase 2: the tree from the catalog.
mod names {
    use super::RecoverReport;
    use crate::fs::schema::{dec, key_u64_at, Dirent, Inode, Kind, ROOT_INO};
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    /// (name, value) pairs of one inode's xattrs.
    type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

    struct Tables {
        inodes: HashMap<u64, Inode>,
        children: BTreeMap<u64, Vec<(Vec<u8>, u64)>>,
        xattrs: HashMap<u64, Xattrs>,
        inline: HashMap<u64, Vec<u8>>,
    }

    fn tables(pairs: &[(Vec<u8>, Vec<u8>)]) -> Tables {
        let mut t = Tables {
            inodes: HashMap::new(),
            children: BTreeMap::new(),
            xattrs: HashMap::new(),
            inline: HashMap::new(),
        };
        for (k, v) in pairs {
            if k.len() < 9 {
                continue;
            }
            let id = key_u64_at(k, 1);
            match k[0] {
                b'I' => {
                    if let Ok(i) = dec::<Inode>("inode", v) {
                        t.inodes.insert(id, i);
                    }
                }
                b'D' => {
                    if let Ok(d) = dec::<Dirent>("dirent", v) {
                        t.children
                            .entry(id)
                            .or_default()
                            .push((k[9..].to_vec(), d.ino));
                    }
                }
                b'X' => t
                    .xattrs
                    .entry(id)
                    .or_default()
                    .push((k[9..].to_vec(), v.clone())),
                b'B' => {
                    t.inline.insert(id, v.clone());
                }
                _ => {}
            }
        }
        t
    }

    /// Build the tree under `out`; striped objects are moved out of `lost`.
    pub(super) fn rebuild(
        pairs: &[(Vec<u8>, Vec<u8>)],
        out: &Path,
        lost: &Path,
        report: &mut RecoverReport,
    ) -> Result<(), String> {
        let t = tables(pairs);
        let mut first_path: HashMap<u64, PathBuf> = HashMap::new();
        let mut visited = HashSet::new();
        // (path, inode) in creation order; attributes are applied after,
        // deepest first, so a directory's times and mode come last
        let mut made: Vec<(PathBuf, u64)> = Vec::new();
        let mut stack = vec![(ROOT_INO, out.to_path_buf())];
        visited.insert(ROOT_INO);
        while let Some((dir, path)) = stack.pop() {
            for (name, ino) in t.children.get(&dir).map(Vec::as_slice).unwrap_or(&[]) {
                if name.contains(&b'/') || name == b"." || name == b".." || name.is_empty() {
                    continue;
                }
                let p = path.join(std::ffi::OsStr::from_bytes(name));
                if dir == ROOT_INO && name == b"lost+found" {
                    continue; // not a valid bucket name anyway
                }
                let Some(inode) = t.inodes.get(ino) else {
                    log::warn!("{}: no inode {ino} in the catalog", p.display());
                    continue;
                };
                // Linux takes paths up to PATH_MAX; a deeper or longer one
                // (the mount accepts any, with 255-byte components) is left
                // out: its object stays in lost+found, and the recovery of
                // everything else goes on
                if p.as_os_str().len() >= libc::PATH_MAX as usize {
                    log::warn!(
                        "{}...: path longer than {} bytes not recreated; inode {ino} stays in lost+found",
                        String::from_utf8_lossy(&p.as_os_str().as_bytes()[..200]),
                        libc::PATH_MAX - 1
                    );
                    report.paths_too_long += 1;
                    continue;
                }
                if let Some(prev) = first_path.get(ino) {
                    if inode.kind != Kind::Dir {
                        std::fs::hard_link(prev, &p)
                            .map_err(|e| format!("{}: {e}", p.display()))?;
                        report.named += 1;
                    }
                    continue;
                }
                match inode.kind {
                    Kind::Dir => {
                        if !visited.insert(*ino) {
                            continue;
                        }
                        std::fs::create_dir(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                        stack.push((*ino, p.clone()));
                    }
                    Kind::File => write_file(&t, inode, &p, lost, report)?,
                    Kind::Symlink => {
                        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&inode.target), &p)
                            .map_err(|e| format!("{}: {e}", p.display()))?
                    }
                    Kind::Fifo => {
                        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                            .map_err(|e| format!("{}: {e}", p.display()))?
                    }
                    _ => {
                        log::warn!("{}: device or socket not recreated", p.display());
                        continue;
                    }
                }
                report.named += 1;
                first_path.insert(*ino, p.clone());
                made.push((p, *ino));
            }
        }
        for (p, ino) in made.iter().rev() {
            apply_attrs(&t, &t.inodes[ino], p);
        }
        Ok(())
    }

    fn write_file(
        t: &Tables,
        inode: &Inode,
        p: &Path,
        lost: &Path,
        report: &mut RecoverReport,
    ) -> Result<(), String> {
        let err = |e: std::io::Error| format!("{}: {e}", p.display());
        if inode.striped {
            let obj = lost.join(format!("object-{}", inode.ino));
            if obj.exists() {
                std::fs::rename(&obj, p).map_err(err)?;
            } else {
                std::fs::File::create(p).map_err(err)?;
                if inode.size > 0 {
                    report.files_without_data += 1;
                    log::warn!("{}: no stripe of inode {} survives", p.display(), inode.ino);
                }
            }
            // a hole at the end (truncate up) is not in any stripe
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(err)?;
            let len = f.metadata().map_err(err)?.len();
            if inode.size > len {
                f.set_len(inode.size).map_err(err)?;
            }
        } else {
            let data = t.inline.get(&inode.ino).map(Vec::as_slice).unwrap_or(&[]);
            let mut data = data.to_vec();
            data.resize(inode.size as usize, 0);
            std::fs::write(p, &data).map_err(err)?;
        }
        Ok(())
    }

    /// xattrs, owner, mode, times: best effort (logged, not fatal).
    fn apply_attrs(t: &Tables, inode: &Inode, p: &Path) {
        let c = match std::ffi::CString::new(p.as_os_str().as_bytes()) {
            Ok(c) => c,
            Err(_) => return,
        };
        for (name, value) in t.xattrs.get(&inode.ino).map(Vec::as_slice).unwrap_or(&[]) {
            let Ok(n) = std::ffi::CString::new(name.clone()) else {
                continue;
            };
            // SAFETY: valid NUL-terminated strings and a live buffer.
            let r = unsafe {
                libc::lsetxattr(
                    c.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if r != 0 {
                log::warn!(
                    "{}: xattr {}: {}",
                    p.display(),
                    String::from_utf8_lossy(name),
                    std::io::Error::last_os_error()
                );
            }
        }
        if nix::unistd::geteuid().is_root() {
            let _ = std::os::unix::fs::lchown(p, Some(inode.uid), Some(inode.gid));
        }
        if inode.kind != Kind::Symlink {
            let _ = std::fs::set_permissions(
                p,
                std::os::unix::fs::PermissionsExt::from_mode(inode.perm as u32 & 0o7777),
            );
        }
        let ts = |t: (i64, u32)| libc::timespec {
            tv_sec: t.0,
            tv_nsec: t.1 as i64,
        };
        let times = [ts(inode.atime), ts(inode.mtime)];
        // SAFETY: valid NUL-terminated path and a two-element array.
        unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ec::{PatchId, ShardId};

    fn rec(seq: u64) -> Vec<u8> {
        let id = PatchId {
            shard: ShardId {
                pool: [1; 16],
                object: 9,
                stripe: 2,
                generation: 7,
                index: crate::ec::patch::OVERLAY,
            },
            seq,
        };
        crate::ec::patch::seal(id, &[(5, b"new bytes"), (4000, b"more")])
    }

    #[test]
    fn the_log_scan_skips_holes_junk_and_torn_records() {
        let (a, b, c) = (rec(1), rec(2), rec(3));
        let mut log = a.clone();
        log.extend(vec![0u8; 77]); // a hole
        log.extend(b"SPASPAT"); // junk that looks like a start
        log.extend(&a[..a.len() - 3]); // torn: its header claims bytes of the next
        let at_b = log.len();
        log.extend(&b);
        log.extend(&c);
        log.extend(&c[..120]); // a torn tail
        let (found, rejected) = scan_log(&log);
        let got: Vec<(usize, u64)> = found.iter().map(|(at, p)| (*at, p.id.seq)).collect();
        assert_eq!(got, vec![(0, 1), (at_b, 2), (at_b + b.len(), 3)]);
        assert_eq!(rejected, 3);
        assert_eq!(scan_log(&[]).0.len(), 0);
        assert_eq!(scan_log(&a[..95]), (Vec::new(), 1));
    }
}
