//! Pure erasure-coding layer: stripe <-> shards and the self-describing shard
//! format. No I/O happens here.

mod codec;
mod shard;

pub use codec::{Codec, EcError};
pub use shard::{header_len, ShardHeader, ShardId, BLOCK, HEADER_LEN};
