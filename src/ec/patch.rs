//! The self-describing patch record: new bytes for some byte ranges of one
//! stripe generation (a small overwrite that did not rewrite the stripe).
//! Pure format code: no I/O.
//!
//! ```text
//! offset len        field (little endian)
//!   0     4         magic "SPAT"
//!   4     2         format version (2)
//!   6     1         kind: 0xFF, an overlay of the stripe's data bytes
//!   7     1         reserved, zero
//!   8    16         pool id
//!  24     8         object id (inode number)
//!  32     8         stripe index
//!  40     8         generation of the stripe the patch applies to
//!  48     8         patch sequence (later patches of a stripe win)
//!  56     4         extent count n
//!  60     4         payload length (sum of the extent lengths)
//!  64    32         BLAKE3 of bytes 0..64, the extent table and the payload
//!  96     8*n       extent table: (stripe data offset u32, length u32)
//!  ...    -         payload: the extents' new bytes, in table order
//! ```
//!
//! A patch holds the new data bytes themselves, not a difference: it lies
//! over the stripe's decoded data and leaves the shards (and the parity)
//! as they were, so the shards stay one consistent codeword. The same
//! record is written to m+1 members, which gives it the stripe's own
//! tolerance of m lost members. Applying a record twice gives the same
//! bytes. Version 1 (per-shard records with parity deltas) was never
//! released and is refused.

use super::ShardId;

/// Length of the fixed part of a patch record.
pub const PATCH_HEADER_LEN: usize = 96;
const MAGIC: &[u8; 4] = b"SPAT";
const VERSION: u16 = 2;
/// Kind byte (and `ShardId::index` of a record's identity): a stripe overlay.
pub const OVERLAY: u8 = 0xFF;

/// What a patch record claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PatchId {
    /// The stripe (and generation) it applies to; `index` is [`OVERLAY`].
    pub shard: ShardId,
    /// Sequence of the patch (a number from the generation counter).
    pub seq: u64,
}

/// Encode a patch record of `extents` (stripe data offset, new bytes).
pub fn seal(id: PatchId, extents: &[(u32, &[u8])]) -> Vec<u8> {
    let payload: usize = extents.iter().map(|e| e.1.len()).sum();
    let mut out = Vec::with_capacity(PATCH_HEADER_LEN + 8 * extents.len() + payload);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    debug_assert_eq!(id.shard.index, OVERLAY, "a patch is a stripe overlay");
    out.push(OVERLAY);
    out.push(0);
    out.extend_from_slice(&id.shard.pool);
    out.extend_from_slice(&id.shard.object.to_le_bytes());
    out.extend_from_slice(&id.shard.stripe.to_le_bytes());
    out.extend_from_slice(&id.shard.generation.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
    out.extend_from_slice(&(extents.len() as u32).to_le_bytes());
    out.extend_from_slice(&(payload as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 32]);
    for (off, b) in extents {
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    }
    for (_, b) in extents {
        out.extend_from_slice(b);
    }
    let sum = checksum(&out);
    out[64..96].copy_from_slice(&sum);
    out
}

fn checksum(rec: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&rec[..64]);
    h.update(&rec[96..]);
    *h.finalize().as_bytes()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A verified patch record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// Identity.
    pub id: PatchId,
    /// (stripe data offset, length) of each extent.
    pub extents: Vec<(u32, u32)>,
    /// The extents' bytes, in order.
    pub payload: Vec<u8>,
}

impl Patch {
    /// Parse and verify a record (exactly its bytes), or say why not.
    pub fn open(bytes: &[u8]) -> Result<Patch, String> {
        if bytes.len() < PATCH_HEADER_LEN {
            return Err("patch record too short".into());
        }
        if &bytes[..4] != MAGIC {
            return Err("not a patch record (bad magic)".into());
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(format!("patch record version {version} is not supported"));
        }
        if bytes[6] != OVERLAY {
            return Err(format!(
                "patch record kind {:#x} is not supported",
                bytes[6]
            ));
        }
        let n = u32_at(bytes, 56) as usize;
        let payload_len = u32_at(bytes, 60) as usize;
        let table_end = n
            .checked_mul(8)
            .and_then(|t| t.checked_add(PATCH_HEADER_LEN))
            .filter(|&e| e <= bytes.len())
            .ok_or("patch record extent table past its end")?;
        if table_end + payload_len != bytes.len() {
            return Err("patch record length does not match its header".into());
        }
        if checksum(bytes) != bytes[64..96] {
            return Err("patch record checksum mismatch".into());
        }
        let mut pool = [0u8; 16];
        pool.copy_from_slice(&bytes[8..24]);
        let id = PatchId {
            shard: ShardId {
                pool,
                object: u64_at(bytes, 24),
                stripe: u64_at(bytes, 32),
                generation: u64_at(bytes, 40),
                index: bytes[6],
            },
            seq: u64_at(bytes, 48),
        };
        let mut extents = Vec::with_capacity(n);
        let mut total = 0usize;
        for i in 0..n {
            let at = PATCH_HEADER_LEN + 8 * i;
            let e = (u32_at(bytes, at), u32_at(bytes, at + 4));
            total += e.1 as usize;
            extents.push(e);
        }
        if total != payload_len {
            return Err("patch record extents do not add up to its payload".into());
        }
        Ok(Patch {
            id,
            extents,
            payload: bytes[table_end..].to_vec(),
        })
    }

    /// Copy the patch's bytes that fall in stripe data range
    /// `[from, from + buf.len())` into `buf`.
    pub fn overlay(&self, from: usize, buf: &mut [u8]) {
        let to = from + buf.len();
        let mut at = 0usize;
        for &(off, len) in &self.extents {
            let (a, b) = (off as usize, off as usize + len as usize);
            let (s, e) = (a.max(from), b.min(to));
            if s < e {
                buf[s - from..e - from].copy_from_slice(&self.payload[at + s - a..at + e - a]);
            }
            at += len as usize;
        }
    }

    /// Highest data offset the patch writes (its extents' end).
    pub fn end(&self) -> usize {
        self.extents
            .iter()
            .map(|&(o, l)| o as usize + l as usize)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> PatchId {
        PatchId {
            shard: ShardId {
                pool: [7; 16],
                object: 5,
                stripe: 2,
                generation: 99,
                index: OVERLAY,
            },
            seq: 1234,
        }
    }

    #[test]
    fn a_record_round_trips_and_overlays_its_extents() {
        let rec = seal(id(), &[(10, b"abc"), (100, b"xyz!")]);
        let p = Patch::open(&rec).unwrap();
        assert_eq!(p.id, id());
        assert_eq!(p.extents, vec![(10, 3), (100, 4)]);
        let mut buf = vec![b'.'; 20];
        p.overlay(95, &mut buf); // covers 95..115
        assert_eq!(&buf[..], b".....xyz!...........");
        let mut buf = vec![b'.'; 4];
        p.overlay(11, &mut buf);
        assert_eq!(&buf[..], b"bc..");
        assert_eq!(p.end(), 104);
    }

    #[test]
    fn any_flipped_bit_or_cut_is_rejected() {
        let rec = seal(id(), &[(0, &[9u8; 300])]);
        for i in 0..rec.len() {
            let mut r = rec.clone();
            r[i] ^= 0x10;
            assert!(Patch::open(&r).is_err(), "flip at {i} accepted");
        }
        for cut in 0..rec.len() {
            assert!(Patch::open(&rec[..cut]).is_err(), "cut at {cut} accepted");
        }
        let mut longer = rec.clone();
        longer.push(0);
        assert!(Patch::open(&longer).is_err());
    }

    #[test]
    fn a_record_of_another_kind_or_version_is_refused_by_name() {
        let rec = seal(id(), &[(0, b"new")]);
        let mut v1 = rec.clone();
        v1[4] = 1;
        assert!(Patch::open(&v1).unwrap_err().contains("version 1"));
        let mut shard = rec.clone();
        shard[6] = 2;
        assert!(Patch::open(&shard).unwrap_err().contains("kind"));
    }
}
