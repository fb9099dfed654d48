//! The self-describing shard file format.
//!
//! ```text
//! offset len        field
//!   0     8         magic "SHRDFS01"
//!   8     2         format version (1), little endian
//!  10     1         shard index within the stripe
//!  11     1         k
//!  12     1         m
//!  13     1         log2 of the checksum block size (14: 16 KiB)
//!  14     2         reserved, zero
//!  16    16         pool id
//!  32     8         object id (inode number), LE
//!  40     8         stripe index, LE
//!  48     8         generation, LE
//!  56     4         payload length, LE
//!  60     4         stripe data length (file bytes the stripe holds), LE
//!  64    32         BLAKE3 of bytes 0..64 followed by the block table
//!  96    32*blocks  block table: BLAKE3 of each block of the payload
//!                   (blocks = ceil(payload length / block size))
//!  ...   -          payload
//! ```
//! The header checksum covers the identity fields and the block table, and
//! the table covers every payload byte, so a shard that was moved, renamed,
//! truncated, belongs to another stripe or generation, or has a flipped bit
//! anywhere is rejected. A small read verifies only the header and the
//! blocks it touches.

/// Length of the fixed part of the header in bytes.
pub const HEADER_LEN: usize = 96;
/// Payload bytes covered by one entry of the block table.
pub const BLOCK: usize = 1 << BLOCK_LOG2;
const BLOCK_LOG2: u8 = 14;
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
    /// Payload length.
    pub payload_len: u32,
    /// BLAKE3 of each payload block.
    pub blocks: Vec<[u8; 32]>,
}

/// Header length (fixed part and block table) of a shard with `payload_len` bytes.
pub fn header_len(payload_len: usize) -> usize {
    HEADER_LEN + 32 * payload_len.div_ceil(BLOCK)
}

impl ShardHeader {
    /// Serialise `payload` with a header for `id` into a complete shard file.
    pub fn seal(id: ShardId, k: u8, m: u8, stripe_len: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Self::header(id, k, m, stripe_len, payload);
        out.extend_from_slice(payload);
        out
    }

    /// The header (with block table) of a shard file holding `payload`; the
    /// file is the header followed by the payload.
    pub fn header(id: ShardId, k: u8, m: u8, stripe_len: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(header_len(payload.len()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(id.index);
        out.push(k);
        out.push(m);
        out.push(BLOCK_LOG2);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&id.pool);
        out.extend_from_slice(&id.object.to_le_bytes());
        out.extend_from_slice(&id.stripe.to_le_bytes());
        out.extend_from_slice(&id.generation.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&stripe_len.to_le_bytes());
        debug_assert_eq!(out.len(), 64);
        let table: Vec<u8> = payload
            .chunks(BLOCK)
            .flat_map(|b| *blake3::hash(b).as_bytes())
            .collect();
        let sum = checksum(&out[..64], &table);
        out.extend_from_slice(&sum);
        out.extend_from_slice(&table);
        out
    }

    /// Parse and verify a header with its block table from the start of a
    /// shard file (`bytes` may hold more). Returns the header and its length.
    pub fn open_header(bytes: &[u8]) -> Result<(ShardHeader, usize), String> {
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
        if bytes[13] != BLOCK_LOG2 {
            return Err(format!("unknown block size 2^{}", bytes[13]));
        }
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let payload_len = u32_at(56) as usize;
        let hlen = header_len(payload_len);
        let Some(table) = bytes.get(HEADER_LEN..hlen) else {
            return Err("short shard: block table cut off".into());
        };
        if checksum(&bytes[..64], table) != bytes[64..96] {
            return Err("header checksum mismatch".into());
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
            payload_len: payload_len as u32,
            blocks: table
                .chunks(32)
                .map(|c| c.try_into().expect("32 bytes"))
                .collect(),
        };
        Ok((header, hlen))
    }

    /// Verify `data`, the payload bytes from block `first` on (whole blocks,
    /// the last one may be the payload's short tail).
    pub fn verify_blocks(&self, first: usize, data: &[u8]) -> Result<(), String> {
        for (i, b) in data.chunks(BLOCK).enumerate() {
            let want = self
                .blocks
                .get(first + i)
                .ok_or_else(|| format!("block {} past the table", first + i))?;
            if blake3::hash(b).as_bytes() != want {
                return Err(format!("block {} checksum mismatch", first + i));
            }
        }
        Ok(())
    }

    /// Parse and verify a whole shard file. Returns the header and the
    /// payload slice, or a message saying why the bytes are not a valid shard.
    pub fn open(bytes: &[u8]) -> Result<(ShardHeader, &[u8]), String> {
        let (h, hlen) = Self::open_header(bytes)?;
        let payload = &bytes[hlen..];
        if payload.len() != h.payload_len as usize {
            return Err(format!(
                "length mismatch: header says {} payload bytes, file has {}",
                h.payload_len,
                payload.len()
            ));
        }
        h.verify_blocks(0, payload)?;
        Ok((h, payload))
    }
}

fn checksum(header: &[u8], table: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(header);
    h.update(table);
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
        let payload: Vec<u8> = (0..BLOCK * 2 + 300).map(|i| (i % 251) as u8).collect();
        let bytes = ShardHeader::seal(id(), 4, 2, 1000, &payload);
        // every header byte, and a sample of payload bytes in each block
        let positions = (0..header_len(payload.len()))
            .chain((header_len(payload.len())..bytes.len()).step_by(97));
        for i in positions {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(ShardHeader::open(&b).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn partial_reads_verify_only_their_blocks() {
        let payload: Vec<u8> = (0..BLOCK * 3 + 10).map(|i| (i % 241) as u8).collect();
        let mut bytes = ShardHeader::seal(id(), 4, 2, 9999, &payload);
        let (h, hlen) = ShardHeader::open_header(&bytes).unwrap();
        assert_eq!(h.blocks.len(), 4);
        // block 1 verifies on its own; the short tail block too
        h.verify_blocks(1, &bytes[hlen + BLOCK..hlen + 2 * BLOCK])
            .unwrap();
        h.verify_blocks(3, &bytes[hlen + 3 * BLOCK..]).unwrap();
        // a flip in block 2 fails block 2 only
        bytes[hlen + 2 * BLOCK + 5] ^= 0x80;
        assert!(h
            .verify_blocks(2, &bytes[hlen + 2 * BLOCK..hlen + 3 * BLOCK])
            .is_err());
        h.verify_blocks(1, &bytes[hlen + BLOCK..hlen + 2 * BLOCK])
            .unwrap();
        assert!(ShardHeader::open(&bytes).is_err());
    }

    #[test]
    fn truncated_shard_is_rejected() {
        let bytes = ShardHeader::seal(id(), 4, 2, 10, &[1; 64]);
        assert!(ShardHeader::open(&bytes[..bytes.len() - 1]).is_err());
        assert!(ShardHeader::open(&bytes[..10]).is_err());
        assert!(ShardHeader::open(&bytes[..HEADER_LEN + 5]).is_err());
    }
}
