//! The namespace catalog: a periodic copy of the namespace on every member,
//! so that `shardfs recover` can rebuild names, directories, small files,
//! symlinks, modes, owners, times and xattrs when every metadata replica
//! is lost (the shards themselves carry only object, stripe, generation and
//! index).
//!
//! It holds the metadata tables `I` (inodes), `D` (directory entries), `X`
//! (xattrs) and `B` (inline file data), not the stripe table (recovery
//! finds stripes on the members themselves). Layout of the file
//! `catalog` at a member's root, version 2 (written since 2026-12-04):
//!
//! ```text
//! "SHARDFS-CATALOG2\n" u32 LE header length  header (JSON: CatalogHeader, pairs 0)
//! pairs: u32 LE key length, key, u32 LE value length, value
//! end: u32 LE 0xFFFF_FFFF, u64 LE number of pairs
//! BLAKE3 of everything before (32 bytes)
//! ```
//!
//! Version 2 is written as a stream ([`CatalogWriter`]): the count comes
//! at the end, so the writer holds one batch of records at a time, not
//! the namespace. Version 1 (`"SHARDFS-CATALOG\n"`, the count in the
//! header, no end record) is still read.
//!
//! It is written atomically (temporary file, fsync, rename, directory
//! fsync) and never read by mount, only by `recover`: a damaged or stale
//! catalog cannot hurt a running pool.

use serde::{Deserialize, Serialize};

/// File name at a member's root.
pub const CATALOG_FILE: &str = "catalog";
const MAGIC: &[u8] = b"SHARDFS-CATALOG\n";
const MAGIC_V2: &[u8] = b"SHARDFS-CATALOG2\n";
/// Key length of the end record of a version 2 catalog.
const END: u32 = u32::MAX;
/// Metadata tables the catalog holds.
pub const TABLES: [u8; 4] = [b'B', b'D', b'I', b'X'];

/// What a catalog says about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CatalogHeader {
    /// Pool id.
    pub pool_id: String,
    /// Metadata commit sequence when it was taken (higher is newer).
    pub sequence: u64,
    /// Unix time it was taken.
    pub created: u64,
    /// Key-value pairs that follow.
    pub pairs: u64,
}

/// Writes a version 2 catalog to `W` record by record, hashing as it
/// goes.
pub struct CatalogWriter<W: std::io::Write> {
    out: W,
    hash: blake3::Hasher,
    pairs: u64,
    bytes: u64,
}

impl<W: std::io::Write> CatalogWriter<W> {
    /// Start a catalog with header `h` (its `pairs` is not used: the count
    /// is written at the end).
    pub fn new(out: W, h: &CatalogHeader) -> std::io::Result<Self> {
        let mut h = h.clone();
        h.pairs = 0;
        let header = serde_json::to_vec(&h).expect("serialisable");
        let mut w = CatalogWriter {
            out,
            hash: blake3::Hasher::new(),
            pairs: 0,
            bytes: 0,
        };
        w.put(MAGIC_V2)?;
        w.put(&(header.len() as u32).to_le_bytes())?;
        w.put(&header)?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hash.update(b);
        self.bytes += b.len() as u64;
        self.out.write_all(b)
    }

    /// Append one record.
    pub fn add(&mut self, k: &[u8], v: &[u8]) -> std::io::Result<()> {
        if k.len() >= END as usize || v.len() > u32::MAX as usize {
            return Err(std::io::Error::other("catalog record too large"));
        }
        self.put(&(k.len() as u32).to_le_bytes())?;
        self.put(k)?;
        self.put(&(v.len() as u32).to_le_bytes())?;
        self.put(v)?;
        self.pairs += 1;
        Ok(())
    }

    /// Write the end record and the checksum; returns the output, the
    /// number of records and the catalog's length in bytes.
    pub fn finish(mut self) -> std::io::Result<(W, u64, u64)> {
        self.put(&END.to_le_bytes())?;
        let n = self.pairs;
        self.put(&n.to_le_bytes())?;
        let sum = *self.hash.finalize().as_bytes();
        self.out.write_all(&sum)?;
        self.out.flush()?;
        Ok((self.out, n, self.bytes + 32))
    }
}

/// Encode a catalog (version 1; kept for tests of old pools).
pub fn encode(h: &CatalogHeader, pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let header = serde_json::to_vec(h).expect("serialisable");
    let mut out = Vec::with_capacity(
        64 + header.len()
            + pairs
                .iter()
                .map(|(k, v)| 8 + k.len() + v.len())
                .sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// A parsed catalog: header and pairs.
pub type Catalog = (CatalogHeader, Vec<(Vec<u8>, Vec<u8>)>);

/// Decode and verify a catalog (version 1 or 2); the error says what is
/// wrong.
pub fn decode(bytes: &[u8]) -> Result<Catalog, String> {
    let v2 = bytes.starts_with(MAGIC_V2);
    let magic = if v2 { MAGIC_V2 } else { MAGIC };
    if bytes.len() < magic.len() + 4 + 32 || !bytes.starts_with(magic) {
        return Err("not a shardfs catalog".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return Err("catalog checksum mismatch".into());
    }
    let mut at = magic.len();
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = body
            .get(*at..at.checked_add(n).ok_or("catalog truncated")?)
            .ok_or("catalog truncated")?;
        *at += n;
        Ok(s)
    };
    let u32_at = |at: &mut usize| -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            take(at, 4)?.try_into().expect("4 bytes"),
        ))
    };
    let hl = u32_at(&mut at)? as usize;
    let mut h: CatalogHeader =
        serde_json::from_slice(take(&mut at, hl)?).map_err(|e| format!("catalog header: {e}"))?;
    let mut pairs = Vec::with_capacity(if v2 { 0 } else { h.pairs.min(1 << 20) as usize });
    loop {
        if !v2 && pairs.len() as u64 == h.pairs {
            break;
        }
        let kl = u32_at(&mut at)?;
        if v2 && kl == END {
            let n = u64::from_le_bytes(take(&mut at, 8)?.try_into().expect("8 bytes"));
            if n != pairs.len() as u64 {
                return Err(format!("catalog says {n} records, holds {}", pairs.len()));
            }
            h.pairs = n;
            break;
        }
        let k = take(&mut at, kl as usize)?.to_vec();
        let vl = u32_at(&mut at)? as usize;
        let v = take(&mut at, vl)?.to_vec();
        pairs.push((k, v));
    }
    if at != body.len() {
        return Err("catalog has trailing bytes".into());
    }
    Ok((h, pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let h = CatalogHeader {
            pool_id: "p".into(),
            sequence: 7,
            created: 1,
            pairs: 2,
        };
        let pairs = vec![
            (b"I1".to_vec(), b"inode".to_vec()),
            (b"Dx".to_vec(), Vec::new()),
        ];
        let b = encode(&h, &pairs);
        assert_eq!(decode(&b).unwrap(), (h, pairs));
        for at in [0, 20, b.len() / 2, b.len() - 1] {
            let mut bad = b.clone();
            bad[at] ^= 1;
            assert!(decode(&bad).is_err(), "flip at {at} not detected");
        }
        assert!(decode(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn streamed_catalogs_round_trip_and_detect_damage() {
        let h = CatalogHeader {
            pool_id: "p".into(),
            sequence: 9,
            created: 2,
            pairs: 0,
        };
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..1000u32)
            .map(|i| {
                (
                    format!("I{i}").into_bytes(),
                    vec![i as u8; (i % 7) as usize],
                )
            })
            .collect();
        let mut w = CatalogWriter::new(Vec::new(), &h).unwrap();
        for (k, v) in &pairs {
            w.add(k, v).unwrap();
        }
        let (b, n, len) = w.finish().unwrap();
        assert_eq!((n, len), (1000, b.len() as u64));
        let (h2, p2) = decode(&b).unwrap();
        assert_eq!(h2.pairs, 1000);
        assert_eq!((h2.pool_id.as_str(), h2.sequence), ("p", 9));
        assert_eq!(p2, pairs);
        for at in [0, 17, b.len() / 2, b.len() - 40, b.len() - 1] {
            let mut bad = b.clone();
            bad[at] ^= 1;
            assert!(decode(&bad).is_err(), "flip at {at} not detected");
        }
        assert!(decode(&b[..b.len() - 1]).is_err());
        // an empty namespace
        let (b, n, _) = CatalogWriter::new(Vec::new(), &h)
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(n, 0);
        assert!(decode(&b).unwrap().1.is_empty());
    }
}
