//! The namespace catalog: a periodic copy of the namespace on every member,
//! so that `shardfs recover` can rebuild names, directories, small files,
//! symlinks, modes, owners, times and xattrs when every metadata replica
//! is lost (the shards themselves carry only object, stripe, generation and
//! index).
//!
//! It holds the metadata tables `I` (inodes), `D` (directory entries), `X`
//! (xattrs) and `B` (inline file data), not the stripe table (recovery
//! finds stripes on the members themselves). Layout of the file
//! `catalog` at a member's root:
//!
//! ```text
//! "SHARDFS-CATALOG\n"  u32 LE header length  header (JSON: CatalogHeader)
//! pairs: u32 LE key length, key, u32 LE value length, value   (header.pairs times)
//! BLAKE3 of everything before (32 bytes)
//! ```
//!
//! It is written atomically (temporary file, fsync, rename, directory
//! fsync) and never read by mount, only by `recover`: a damaged or stale
//! catalog cannot hurt a running pool.

use serde::{Deserialize, Serialize};

/// File name at a member's root.
pub const CATALOG_FILE: &str = "catalog";
const MAGIC: &[u8] = b"SHARDFS-CATALOG\n";
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

/// Encode a catalog.
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

/// Decode and verify a catalog; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Catalog, String> {
    if bytes.len() < MAGIC.len() + 4 + 32 || !bytes.starts_with(MAGIC) {
        return Err("not a shardfs catalog".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return Err("catalog checksum mismatch".into());
    }
    let mut at = MAGIC.len();
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = body.get(*at..*at + n).ok_or("catalog truncated")?;
        *at += n;
        Ok(s)
    };
    let u32_at = |at: &mut usize| -> Result<usize, String> {
        Ok(u32::from_le_bytes(take(at, 4)?.try_into().expect("4 bytes")) as usize)
    };
    let hl = u32_at(&mut at)?;
    let h: CatalogHeader =
        serde_json::from_slice(take(&mut at, hl)?).map_err(|e| format!("catalog header: {e}"))?;
    let mut pairs = Vec::with_capacity(h.pairs.min(1 << 20) as usize);
    for _ in 0..h.pairs {
        let kl = u32_at(&mut at)?;
        let k = take(&mut at, kl)?.to_vec();
        let vl = u32_at(&mut at)?;
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
}
