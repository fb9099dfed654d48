//! The superblock every member carries, so a member identifies itself.

use serde::{Deserialize, Serialize};

/// File name of the superblock at the root of every member.
pub const SUPERBLOCK_FILE: &str = "shardfs.superblock";
/// On-disk format version this build writes. Version 2 added patches
/// (stripe locations may carry patch lists; members hold `patches/` logs).
/// Version 3 puts new shards in those logs as records (stripe locations
/// carry a place per shard; see `pool::records`); shard files of version
/// 1 and 2 pools are still read, moved only by rewrites, and removed as
/// their stripes are dropped.
pub const FORMAT_VERSION: u32 = 3;
/// Oldest format version this build mounts. An older pool is upgraded
/// at mount, before anything is written: every present member's
/// superblock is rewritten as the current version (a build that knows
/// only an older one then refuses the pool instead of misreading it).
pub const MIN_FORMAT_VERSION: u32 = 1;

/// Pool layout and identity, identical on every member but for `member_*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Superblock {
    /// Always "shardfs".
    pub magic: String,
    /// On-disk format version.
    pub format_version: u32,
    /// Pool id (hex, 32 chars).
    pub pool_id: String,
    /// This member's id (hex, 32 chars).
    pub member_id: String,
    /// This member's index in `members`.
    pub member_index: u16,
    /// Ids of all members, by index.
    pub members: Vec<String>,
    /// Data shards per stripe.
    pub k: u8,
    /// Parity shards per stripe.
    pub m: u8,
    /// Bytes of one shard payload (a full stripe holds k of them).
    pub shard_size: u32,
    /// Files at most this long live inline in the replicated metadata.
    pub inline_max: u32,
    /// Member indices that hold a metadata replica.
    pub meta_replicas: Vec<u16>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Failure domain declared for each member, by index (empty: none
    /// declared; members on one filesystem are then one domain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Bumped each time `meta_replicas` changes (a replica moved off a
    /// failed or removed member): at mount the highest epoch's list wins.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub meta_epoch: u64,
    /// Device class of each member, by index ("ssd", "hdd", ...; empty:
    /// none declared). Tiering keeps hot and cold data on classes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A superblock as stored: the JSON body and its BLAKE3.
#[derive(Serialize, Deserialize)]
struct Stored {
    body: String,
    blake3: String,
}

impl Superblock {
    /// Encode with a checksum.
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_string(self).expect("serialisable");
        let blake3 = blake3::hash(body.as_bytes()).to_hex().to_string();
        let mut out = serde_json::to_vec_pretty(&Stored { body, blake3 }).expect("serialisable");
        out.push(b'\n');
        out
    }

    /// Decode and verify; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let stored: Stored =
            serde_json::from_slice(bytes).map_err(|e| format!("not a shardfs superblock: {e}"))?;
        if blake3::hash(stored.body.as_bytes()).to_hex().as_str() != stored.blake3 {
            return Err("superblock checksum mismatch".into());
        }
        let sb: Superblock = serde_json::from_str(&stored.body)
            .map_err(|e| format!("superblock body unreadable: {e}"))?;
        if sb.magic != "shardfs" {
            return Err("bad superblock magic".into());
        }
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&sb.format_version) {
            return Err(format!(
                "format version {} is not supported by this build (reads {MIN_FORMAT_VERSION} \
                 to {FORMAT_VERSION})",
                sb.format_version
            ));
        }
        super::validate::superblock(&sb)?;
        Ok(sb)
    }

    /// Pool id as bytes (for shard headers).
    pub fn pool_bytes(&self) -> [u8; 16] {
        hex16(&self.pool_id)
    }
}

/// Random 128-bit id as hex.
pub fn new_id() -> String {
    let v: u128 = rand::random();
    format!("{v:032x}")
}

/// Parse a 32-char hex id; malformed ids map to zeros (superblock decode checks the checksum first).
pub fn hex16(s: &str) -> [u8; 16] {
    u128::from_str_radix(s, 16).unwrap_or(0).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_and_tamper() {
        let sb = Superblock {
            magic: "shardfs".into(),
            format_version: FORMAT_VERSION,
            pool_id: new_id(),
            member_id: new_id(),
            member_index: 0,
            members: vec![new_id(); 6],
            k: 4,
            m: 2,
            shard_size: 1 << 18,
            inline_max: 1 << 16,
            meta_replicas: vec![0, 1, 2],
            created: 0,
            domains: vec!["r1".into(); 6],
            meta_epoch: 0,
            classes: Vec::new(),
        };
        let bytes = sb.encode();
        assert_eq!(Superblock::decode(&bytes).unwrap(), sb);
        // a superblock written before domains existed still reads
        let mut old = sb.clone();
        old.domains.clear();
        assert!(!String::from_utf8(old.encode()).unwrap().contains("domains"));
        assert_eq!(Superblock::decode(&old.encode()).unwrap(), old);
        let mut bad = String::from_utf8(bytes).unwrap();
        bad = bad.replacen("\\\"k\\\":4", "\\\"k\\\":5", 1);
        assert!(Superblock::decode(bad.as_bytes()).is_err());
        assert!(Superblock::decode(b"garbage").is_err());
    }
}
