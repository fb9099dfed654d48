//! The self-describing shard file format.
//!
//! ```text
//! offset len field
//!   0     8  magic "SHRDFS01"
//!   8     2  format version (1), little endian
//!  10     1  shard index within the stripe
//!  11     1  k
//!  12     1  m
//!  13     3  reserved, zero
//!  16    16  pool id
//!  32     8  object id (inode number), LE
//!  40     8  stripe index, LE
//!  48     8  generation, LE
//!  56     4  payload length, LE
//!  60     4  stripe data length (file bytes the stripe holds), LE
//!  64    32  BLAKE3 of bytes 0..64 followed by the payload
//!  96     -  payload
//! ```
//! The checksum covers the header fields too, so a shard that was moved,
//! renamed or belongs to another stripe or generation is rejected.

/// Length of the shard header in bytes.
pub const HEADER_LEN: usize = 96;
const MAGIC: &[u8; 8] = b"SHRDFS01";
const VERSION: u16 = 1;

/// What a shard claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardId {
    /// Pool the shard belongs to.
    pub pool: [u8; 16],
    /// Object (inode) id.
    pub object: u64,
    /// Stripe index within the object.
    pub stripe: u64,
    /// Generation of the stripe (bumped on every rewrite).
    pub generation: u64,
    /// Index of the shard in the stripe (0..k are data, k..k+m parity).
    pub index: u8,
}

/// A decoded and verified shard header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHeader {
    /// Identity of the shard.
    pub id: ShardId,
    /// Data shards of the stripe's code.
    pub k: u8,
    /// Parity shards of the stripe's code.
    pub m: u8,
    /// Number of file bytes in the whole stripe.
    pub stripe_len: u32,
    /// The BLAKE3 checksum stored in the header.
    pub checksum: [u8; 32],
}

impl ShardHeader {
    /// Serialise `payload` with a header for `id` into a complete shard file.
    pub fn seal(id: ShardId, k: u8, m: u8, stripe_len: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Self::header(id, k, m, stripe_len, payload).to_vec();
        out.extend_from_slice(payload);
        out
    }

    /// The header of a shard file holding `payload` (the file is the
    /// header followed by the payload).
    pub fn header(id: ShardId, k: u8, m: u8, stripe_len: u32, payload: &[u8]) -> [u8; HEADER_LEN] {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(id.index);
        out.push(k);
        out.push(m);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&id.pool);
        out.extend_from_slice(&id.object.to_le_bytes());
        out.extend_from_slice(&id.stripe.to_le_bytes());
        out.extend_from_slice(&id.generation.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&stripe_len.to_le_bytes());
        debug_assert_eq!(out.len(), 64);
        let sum = checksum(&out[..64], payload);
        out.extend_from_slice(&sum);
        out.try_into().expect("header length")
    }

    /// Parse and verify a shard file. Returns the header and the payload
    /// slice, or a message saying why the bytes are not a valid shard.
    pub fn open(bytes: &[u8]) -> Result<(ShardHeader, &[u8]), String> {
        if bytes.len() < HEADER_LEN {
            return Err(format!("short shard: {} bytes", bytes.len()));
        }
        if &bytes[0..8] != MAGIC {
            return Err("bad magic".into());
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(format!("unknown shard version {version}"));
        }
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let payload_len = u32_at(56) as usize;
        if bytes.len() != HEADER_LEN + payload_len {
            return Err(format!(
                "length mismatch: header says {} payload bytes, file has {}",
                payload_len,
                bytes.len() - HEADER_LEN
            ));
        }
        let payload = &bytes[HEADER_LEN..];
        let stored: [u8; 32] = bytes[64..96].try_into().unwrap();
        if checksum(&bytes[..64], payload) != stored {
            return Err("checksum mismatch".into());
        }
        let header = ShardHeader {
            id: ShardId {
                pool: bytes[16..32].try_into().unwrap(),
                object: u64_at(32),
                stripe: u64_at(40),
                generation: u64_at(48),
                index: bytes[10],
            },
            k: bytes[11],
            m: bytes[12],
            stripe_len: u32_at(60),
            checksum: stored,
        };
        Ok((header, payload))
    }
}

fn checksum(header: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(header);
    h.update(payload);
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ShardId {
        ShardId {
            pool: [7; 16],
            object: 42,
            stripe: 3,
            generation: 9,
            index: 5,
        }
    }

    #[test]
    fn seal_then_open_round_trips() {
        let bytes = ShardHeader::seal(id(), 4, 2, 1000, b"payload");
        let (h, p) = ShardHeader::open(&bytes).unwrap();
        assert_eq!(h.id, id());
        assert_eq!((h.k, h.m, h.stripe_len), (4, 2, 1000));
        assert_eq!(p, b"payload");
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = ShardHeader::seal(id(), 4, 2, 1000, &[0xAB; 300]);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(ShardHeader::open(&b).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn truncated_shard_is_rejected() {
        let bytes = ShardHeader::seal(id(), 4, 2, 10, &[1; 64]);
        assert!(ShardHeader::open(&bytes[..bytes.len() - 1]).is_err());
        assert!(ShardHeader::open(&bytes[..10]).is_err());
    }
}
