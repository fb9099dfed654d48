//! Shard records in the members' logs (format 3).
//!
//! A new shard is not a file of its own: it is a record (the shard file's
//! bytes exactly: header, block table, payload) appended to the member's
//! current log, at a [`LOG_ALIGN`] boundary, the space after it padded to
//! the next boundary. The logs are the patch logs ([`super::patch`]): one
//! append-only file per 64 MiB of records, shared by shard and patch
//! records, reference-counted by the pool, deleted once nothing refers to
//! it. A stripe therefore costs no file create, no unlink and no
//! directory sync: one positioned write and one fdatasync per shard, into
//! blocks the log allocated ahead.
//!
//! Invariants:
//! - a record is referenced (its [`Place`] in a committed stripe
//!   location) only after the fdatasync of its bytes returned;
//! - a record's space is given back ([`Pool::release_shard`]) only after
//!   the commit that dropped its last reference is durable, or when it was
//!   never committed; given back means the log's reference count drops
//!   and, while other records keep the log, its blocks are punched out
//!   (`fallocate(PUNCH_HOLE)`), so `statfs` sees the space free at once;
//! - offsets are never reused: a log is only appended to by the session
//!   that created it, and log numbers only grow;
//! - after a crash, space written but never committed (or released but
//!   not yet punched) is found by [`Pool::sweep_log_gaps`]: at a mount
//!   after an unclean stop, everything in a log outside the records the
//!   stripe map names is punched.

use super::io::{IoFail, Ticket};
use super::patch::{log_path, LOG_MAX};
use super::*;
use crate::ec::ShardId;
use std::collections::BTreeMap;

/// Bytes a shard record of `payload_len` payload bytes takes in a log:
/// header, block table and payload, padded to [`LOG_ALIGN`].
pub fn record_len(payload_len: usize) -> u64 {
    ((crate::ec::header_len(payload_len) + payload_len) as u64).next_multiple_of(LOG_ALIGN)
}

/// A shard append queued on a member: its place, whether it started a new
/// log (whose directory entry must be synced before a commit names it),
/// and the write.
pub(super) struct Append {
    pub(super) place: Place,
    pub(super) new_log: bool,
    pub(super) ticket: Result<Ticket<()>, IoFail>,
}

impl Pool {
    /// Where the bytes of shard `slot` of stripe generation `loc` are on
    /// its member, as a shard file would hold them (header, block table,
    /// payload): (file, offset, length). For tools and tests that look at
    /// members directly.
    pub fn shard_at(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
        slot: usize,
    ) -> (String, u64, usize) {
        let payload = self.codec.shard_len(loc.len as usize);
        let (rel, base, _) = super::read::shard_addr(object, stripe, loc, slot);
        (rel, base, crate::ec::header_len(payload) + payload)
    }

    /// Queue the append (and fdatasync) of a shard record on member `mi`:
    /// room for a record of `payload_len` payload bytes is reserved in the
    /// member's current log now; `write(disk, log, offset, allocate)`
    /// runs on the member's worker and must write the record's bytes at
    /// `offset` of `log` durably (`DiskBackend::write_at_durable`). A
    /// failed append must be given back with [`Pool::release_shard`].
    pub(super) fn append_shard<F>(
        &self,
        mi: u16,
        id: &ShardId,
        payload_len: usize,
        write: F,
    ) -> Append
    where
        F: FnOnce(&dyn DiskBackend, &str, u64, u64) -> std::io::Result<()> + Send + 'static,
    {
        if self.legacy_files.load(Ordering::Relaxed) {
            // a shard file of its own, as format 2 wrote it (tests of
            // pools made before format 3); its directory is synced by
            // `sync_pending` before a commit names it
            let rel = shard_path(id.object, id.stripe, id.generation, id.index);
            let dir = rel.rsplit_once('/').map_or("", |(d, _)| d).to_string();
            self.unsynced.lock().unwrap().push((mi, dir));
            let ticket = self.slots[mi as usize].submit(move |d| {
                let r = write(d, &rel, 0, 0);
                if r.is_err() {
                    let _ = d.remove_file(&rel);
                }
                r
            });
            return Append {
                place: Place::FILE,
                new_log: false,
                ticket,
            };
        }
        let len = record_len(payload_len);
        let (log, at, new_log, allocate) = self.reserve_aligned(mi, &[len as usize], LOG_ALIGN);
        let place = Place {
            log,
            block: (at / LOG_ALIGN) as u32,
        };
        let rel = log_path(log);
        let ticket = self.slots[mi as usize].submit(move |d| write(d, &rel, at, allocate));
        Append {
            place,
            new_log,
            ticket,
        }
    }

    /// Write new shards as files of their own, as format 2 did (for tests
    /// that build a pool of an older format; never set in a mount).
    #[doc(hidden)]
    pub fn write_shard_files(&self, on: bool) {
        self.legacy_files.store(on, Ordering::Relaxed);
    }

    /// Give back the space of a shard record on member `mi` (its stripe
    /// was dropped and that is durable, or it was never committed): the
    /// log's reference count drops; a log nothing refers to any more (and
    /// not being appended to) is deleted, otherwise the record's blocks
    /// are punched out. A shard file of its own ([`Place::FILE`]) is
    /// removed.
    pub fn release_shard(&self, mi: u16, place: Place, rel_file: String, payload_len: usize) {
        if mi == NO_MEMBER {
            return;
        }
        if place.is_file() {
            self.remove_later(mi, rel_file);
            return;
        }
        let dead = {
            let mut all = self.patch_logs.lock().unwrap();
            let logs = all.entry(mi).or_default();
            match logs.live.get_mut(&place.log) {
                Some(c) => {
                    *c = c.saturating_sub(1);
                    let current = logs.current.map(|(n, _)| n) == Some(place.log);
                    if *c == 0 && !current {
                        logs.live.remove(&place.log);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        if dead {
            self.remove_later(mi, log_path(place.log));
        } else {
            self.punch_later(
                mi,
                log_path(place.log),
                place.offset(),
                record_len(payload_len),
            );
        }
    }

    /// Queue the punching of `len` bytes at `offset` of `rel` on member
    /// `mi` without waiting (like [`Pool::remove_later`]).
    pub(super) fn punch_later(&self, mi: u16, rel: String, offset: u64, len: u64) {
        self.cleanup_later(mi, move |d| d.punch_hole(&rel, offset, len));
    }

    /// At a mount after an unclean stop, before anything is appended:
    /// punch out every byte of every log that no committed record covers
    /// (`live`: per member, the `(offset, length)` of each shard and patch
    /// record the stripe map names, in any order). Records written but
    /// never committed, or released before the punch happened, lose their
    /// blocks. Only whole [`LOG_ALIGN`] blocks that no live record touches
    /// are punched. Returns the bytes punched (an upper bound: holes
    /// punched again count too).
    pub fn sweep_log_gaps(&self, live: &BTreeMap<(u16, u32), Vec<(u64, u64)>>) -> u64 {
        let mut punched = 0u64;
        for ((mi, log), extents) in live {
            // any member whose disk is there, failed or not (as the sweep
            // of shard files of their own does)
            let Some(d) = self.slots[*mi as usize].disk() else {
                continue;
            };
            let mut spans: Vec<(usize, usize)> = extents
                .iter()
                .map(|&(o, l)| (o as usize, (o + l) as usize))
                .collect();
            let spans = super::patch::merge_spans(&mut spans);
            let rel = log_path(*log);
            let mut from = 0u64;
            let ends = spans
                .iter()
                .map(|&(a, b)| (a as u64, b as u64))
                .chain(std::iter::once((LOG_MAX * 2, LOG_MAX * 2)));
            for (a, b) in ends {
                // the whole blocks of [from, a)
                let start = from.next_multiple_of(LOG_ALIGN);
                let end = a / LOG_ALIGN * LOG_ALIGN;
                if end > start {
                    if d.punch_hole(&rel, start, end - start).is_err() {
                        self.mark_garbage();
                        break;
                    }
                    if a < LOG_MAX * 2 {
                        punched += end - start;
                    }
                }
                from = from.max(b);
            }
        }
        punched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_padded_to_whole_blocks() {
        assert_eq!(record_len(1), LOG_ALIGN);
        let p = 1 << 20;
        let raw = (crate::ec::header_len(p) + p) as u64;
        assert!(record_len(p) >= raw && record_len(p) < raw + LOG_ALIGN);
        assert_eq!(record_len(p) % LOG_ALIGN, 0);
    }
}
