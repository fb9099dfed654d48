//! Pure erasure-coding layer: stripe <-> shards, the self-describing shard
//! format and the patch record format. No I/O happens here.

mod codec;
pub mod patch;
mod shard;

pub use codec::{Codec, EcError};
pub use patch::{Patch, PatchId};
pub use shard::{header_len, ShardHeader, ShardId, BLOCK, HEADER_LEN};
