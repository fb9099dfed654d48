//! Metadata disaster recovery: with every metadata replica lost, rebuild
//! every striped object from the self-describing shards alone.
//!
//! Each shard file names its object, stripe, generation and index, and its
//! header (under a checksum) repeats them with the pool id, the code and the
//! stripe's byte count. So for every (object, stripe) the newest generation
//! with at least k verifying shards is decoded, and each object is written
//! out as one file, `OUT/object-<inode>`, stripes at their offsets.
//!
//! What cannot be recovered, because it lives only in the metadata: names,
//! directories and buckets, small files stored inline (up to the pool's
//! inline limit), symlinks, modes, owners, times and xattrs. A file's exact
//! size is recovered when its last stripe survives; holes before it read as
//! zeros. A generation written but never committed (the last seconds before
//! the loss) is newer than the committed one and wins; so does a stripe a
//! truncate dropped if its deletion had not happened yet.

use crate::ec::{Codec, ShardHeader};
use crate::pool::{parse_shard_name, Superblock, SUPERBLOCK_FILE};
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
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
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(|e| e.to_string())?
            .next()
            .is_some()
    {
        return Err(format!("{} is not empty", out.display()));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let codec = Codec::new(sb.k as usize, sb.m as usize).map_err(|e| e.to_string())?;
    let pool = sb.pool_bytes();
    let n = sb.k as usize + sb.m as usize;
    let stripe_size = sb.k as u64 * sb.shard_size as u64;

    // (object, stripe) -> generation -> [(index, file)]
    type Found = BTreeMap<(u64, u64), BTreeMap<u64, Vec<(u8, PathBuf)>>>;
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
                        .push((i, f.path()));
                }
            }
        }
    }

    let mut report = RecoverReport::default();
    let mut open: Option<(u64, std::fs::File)> = None;
    for ((object, stripe), gens) in found {
        let mut decoded = None;
        for (generation, files) in gens.iter().rev() {
            let mut shards: Vec<Option<Vec<u8>>> = vec![None; n];
            let mut len = None;
            for (i, path) in files {
                let Ok(bytes) = std::fs::read(path) else {
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
                if let Ok(data) = codec.decode(shards, len as usize) {
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
            let path = out.join(format!("object-{object}"));
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
    Ok(report)
}
