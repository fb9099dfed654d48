//! shardfs: an erasure-coded filesystem over a pool of member disks.
//!
//! Layers, bottom up: `ec` (pure codec), `pool` (member disks, placement,
//! shard I/O), `meta` (metadata store seam), `fs` (POSIX semantics),
//! `fuse` (the only module that names fuser), `control` (admin socket),
//! `daemon` (wiring a mounted pool together), `s3` (the same objects over
//! the S3 API).
#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod catalog;
pub mod control;
pub mod crash;
pub mod daemon;
pub mod durability;
pub mod ec;
pub mod fs;
pub mod fuse;
pub mod guard;
pub mod heatsim;
pub mod maintenance;
pub mod meta;
pub mod metrics;
pub mod model;
pub mod pool;
pub mod recover;
pub mod s3;
