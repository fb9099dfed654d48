//! The control socket: a versioned JSON-lines protocol shared by the
//! daemon (`server`) and `shardctl` (`client`).
//!
//! Each request is one JSON object on one line, at most
//! [`MAX_FRAME`] bytes: `{"v":1,"cmd":"status"}` or
//! `{"v":1,"cmd":"locate","path":"bucket/key"}`. Each reply is one line:
//! `{"v":1,"ok":true,"result":{...}}` or `{"v":1,"ok":false,"error":"..."}`.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest request or reply line accepted, in bytes.
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest reply a client accepts (a locate of a huge file is long).
pub const MAX_REPLY: usize = 64 << 20;
/// Most stripes in one locate reply: a huge file is located in pages
/// (`from`, `limit`; the reply's `next` is the first stripe of the next
/// page), so no reply is bigger than a few MiB and no request verifies
/// more than this many stripes.
pub const LOCATE_PAGE: u64 = 256;
/// Directory of control sockets by default, for root.
pub const DEFAULT_DIR: &str = "/run/shardfs";

/// Directory of control sockets by default: [`DEFAULT_DIR`] for root,
/// `$XDG_RUNTIME_DIR/shardfs` (or `/tmp/shardfs-UID`) for other users.
pub fn default_dir() -> std::path::PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return DEFAULT_DIR.into();
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d).join("shardfs"),
        _ => format!("/tmp/shardfs-{uid}").into(),
    }
}

/// A request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    /// protocol version
    pub v: u32,
    /// command
    #[serde(flatten)]
    pub cmd: Command,
}

/// Commands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Pool and member status.
    Status,
    /// Where the shards of an object live and whether they verify.
    Locate {
        /// "bucket/key"
        path: String,
        /// first stripe index of this page (default 0)
        #[serde(default)]
        from: u64,
        /// stripes in this page (default and most [`LOCATE_PAGE`])
        #[serde(default)]
        limit: Option<u64>,
    },
    /// Repair progress, rate and ETA.
    RepairStatus,
    /// Start a repair pass now.
    RepairStart,
    /// Set the repair and scrub rate limit (bytes/s, 0 = none).
    RepairRate {
        /// bytes per second
        bytes_per_sec: u64,
    },
    /// Start a scrub pass now.
    ScrubStart,
    /// Scrub progress and when the last full pass ended.
    ScrubStatus,
    /// Take a member out now and rebuild its shards from redundancy.
    DiskFail {
        /// member index
        member: u16,
    },
    /// Move every shard off a member, then mark it removed.
    DiskDrain {
        /// member index
        member: u16,
    },
    /// Format an empty directory and join it to the pool as a new member;
    /// a rebalance then moves data onto it.
    DiskAdd {
        /// absolute path of the new member directory
        path: String,
        /// failure domain (required when the pool declares domains)
        #[serde(default)]
        domain: Option<String>,
        /// device class ("ssd", "hdd", ...)
        #[serde(default)]
        class: Option<String>,
    },
    /// Start a rebalance pass now.
    RebalanceStart,
    /// Rebalance progress and the spread of shard bytes over members.
    RebalanceStatus,
    /// Per-member heat: in flight, latency, p95, IOPS, bandwidth,
    /// utilisation and load; the read policy and hedges.
    Heat,
    /// Per-member load, second by second, over the last 10 minutes.
    HeatHistory,
    /// Choose how reads pick shards: "heat" or "naive".
    ReadPolicy {
        /// heat | naive
        policy: String,
    },
    /// Bytes per member class, tier policies, moves done and pending.
    TierStatus,
    /// Start a tier pass now; `force` = "hot" | "cold" puts every object
    /// of a bucket with a policy on that tier.
    TierStart {
        /// hot | cold
        #[serde(default)]
        force: Option<String>,
    },
    /// Set the tier policy of a bucket (or, without one, the pool default).
    TierPolicy {
        /// bucket name (None: pool default)
        #[serde(default)]
        bucket: Option<String>,
        /// the policy
        policy: crate::fs::TierPolicy,
    },
    /// Estimated annual durability.
    Durability {
        /// annual failure rate per failure domain (default 1.5 %)
        afr: Option<f64>,
    },
    /// Every metric in the Prometheus text format: `{"text": "..."}`.
    Metrics,
}

/// A reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// protocol version
    pub v: u32,
    /// success
    pub ok: bool,
    /// result on success
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// message on failure
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    /// A success reply.
    pub fn ok(result: serde_json::Value) -> Self {
        Reply {
            v: PROTOCOL_VERSION,
            ok: true,
            result: Some(result),
            error: None,
        }
    }
    /// An error reply.
    pub fn err(msg: impl Into<String>) -> Self {
        Reply {
            v: PROTOCOL_VERSION,
            ok: false,
            result: None,
            error: Some(msg.into()),
        }
    }
}

/// One member in a heat reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberHeat {
    /// index
    pub index: u16,
    /// state
    pub state: String,
    /// path
    pub path: String,
    /// measured heat
    pub heat: crate::pool::heat::HeatSnapshot,
    /// HDD emulation limits, if emulated
    pub emulated: Option<crate::pool::heat::Limits>,
}

/// The heat reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeatReport {
    /// read policy: heat | naive
    pub read_policy: String,
    /// reads hedged since mount
    pub hedges: u64,
    /// stripes decoded with parity since mount because a shard was missing or bad
    pub reconstructions: u64,
    /// stripes decoded with parity since mount by choice (busy data shards skipped)
    #[serde(default)]
    pub parity_by_choice: u64,
    /// members
    pub members: Vec<MemberHeat>,
}

/// One member's history in a heat-history reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberHistory {
    /// index
    pub index: u16,
    /// seconds, oldest first
    pub seconds: Vec<crate::pool::heat::Second>,
}

/// One member in a status reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    /// index
    pub index: u16,
    /// id
    pub id: String,
    /// path
    pub path: String,
    /// online / missing
    pub state: String,
    /// capacity in bytes
    pub total_bytes: u64,
    /// used bytes
    pub used_bytes: u64,
    /// I/O errors seen
    pub errors: u64,
    /// holds a metadata replica (and its state)
    pub meta_replica: Option<String>,
    /// failure domain declared at mkfs
    #[serde(default)]
    pub domain: Option<String>,
}

/// A status reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// pool id
    pub pool_id: String,
    /// data shards
    pub k: u8,
    /// parity shards
    pub m: u8,
    /// shard size
    pub shard_size: u32,
    /// inline threshold
    pub inline_max: u32,
    /// members
    pub members: Vec<MemberStatus>,
    /// inodes
    pub objects: u64,
    /// stripes
    pub stripes: u64,
    /// stripes with a shard on a missing member or never written
    pub degraded_stripes: u64,
    /// shards found bad on read since mount
    pub bad_shards: u64,
    /// stripes decoded with parity on read since mount because a shard was
    /// missing or bad
    pub reconstructions: u64,
    /// stripes decoded with parity on read since mount by choice (busy or
    /// slow data shards skipped; nothing missing)
    #[serde(default)]
    pub parity_by_choice: u64,
    /// usable bytes after parity
    pub usable_bytes: u64,
    /// free usable bytes
    pub usable_free_bytes: u64,
    /// times the maintenance worker (repair, scrub, rebalance, tiering)
    /// panicked and was restarted by its supervisor since mount
    #[serde(default)]
    pub maintenance_restarts: u64,
    /// the last such panic's message
    #[serde(default)]
    pub maintenance_last_panic: Option<String>,
}

/// One shard in a locate reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardStatus {
    /// shard index (0..k data, k.. parity)
    pub index: usize,
    /// member index, or null if never written
    pub member: Option<u16>,
    /// member path
    pub member_path: String,
    /// checksum verified
    pub ok: bool,
    /// why not
    pub error: Option<String>,
}

/// One stripe in a locate reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StripeStatus {
    /// stripe index
    pub stripe: u64,
    /// generation
    pub generation: u64,
    /// file bytes
    pub len: u32,
    /// shards
    pub shards: Vec<ShardStatus>,
}

/// A locate reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Locate {
    /// the path asked for
    pub path: String,
    /// inode
    pub ino: u64,
    /// kind
    pub kind: String,
    /// size
    pub size: u64,
    /// "inline" or "striped"
    pub layout: String,
    /// data shards per stripe (shards k.. are parity)
    pub k: u8,
    /// members holding the metadata (and so inline data)
    pub meta_replicas: Vec<String>,
    /// stripes of this page (empty when inline)
    pub stripes: Vec<StripeStatus>,
    /// the first stripe index of the next page, if there are more stripes
    #[serde(default)]
    pub next: Option<u64>,
}
