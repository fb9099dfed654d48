//! Writing shards: whole stripes, rebuilt and copied shards, removals and
//! the syncs that make them durable before metadata points at them.
//!
//! Every disk call runs on the target member's I/O workers
//! ([`super::io`]) with the pool's I/O deadline. A shard is a record
//! appended to its member's log ([`super::records`]), written and
//! fdatasynced by one worker call, so its data is durable when the call
//! returns (patch records likewise, see [`super::patch`]);
//! [`Pool::sync_pending`] then only syncs the directories that gained
//! logs, never a whole host filesystem. (Shard files of their own,
//! `shards/DD/...`, are only read and removed: pools made before format
//! 3 have them.)

use super::io::{IoFail, Ticket};
use super::records::Append;
use super::*;
use std::time::Instant;

/// An encoded stripe shared with the member workers writing its shards.
pub(super) struct Encoded {
    /// The stripe's data, at least `k * shard_len` bytes, zero past the
    /// stripe's length (data shard i is `shard_len` bytes from `i * shard_len`).
    data: Arc<Vec<u8>>,
    parity: Vec<Vec<u8>>,
    shard_len: usize,
    k: usize,
}

impl Encoded {
    /// Encode `data[..len]` (a buffer that may be longer, e.g. a whole
    /// stripe buffer): no copy when the buffer already holds the zero
    /// padding the shards need.
    pub(super) fn new(codec: &crate::ec::Codec, data: Arc<Vec<u8>>, len: usize) -> Encoded {
        let k = codec.k();
        let shard_len = codec.shard_len(len);
        let need = k * shard_len;
        let padded_ok =
            data.len() >= need && data[len.min(data.len())..need].iter().all(|&b| b == 0);
        let data = if padded_ok {
            data
        } else {
            let mut v = vec![0u8; need];
            v[..len].copy_from_slice(&data[..len]);
            Arc::new(v)
        };
        let (_, parity) = codec.encode_parity(&data[..need]);
        Encoded {
            data,
            parity,
            shard_len,
            k,
        }
    }

    /// Payload of shard `i`.
    pub(super) fn shard(&self, i: usize) -> &[u8] {
        if i < self.k {
            &self.data[i * self.shard_len..(i + 1) * self.shard_len]
        } else {
            &self.parity[i - self.k]
        }
    }
}

impl Pool {
    /// Write one stripe generation: encode, place and write k+m shards.
    /// Shards are durable when this returns, except for their directory
    /// entries, which [`Pool::sync_pending`] syncs before the metadata
    /// commit that refers to them.
    pub fn write_stripe(
        &self,
        object: u64,
        stripe: u64,
        generation: u64,
        data: &[u8],
    ) -> Result<StripeLoc, PoolError> {
        self.write_stripe_buf(
            object,
            stripe,
            generation,
            Arc::new(data.to_vec()),
            data.len(),
        )
    }

    /// [`Pool::write_stripe`] of `data[..len]`, sharing the buffer with the
    /// member workers instead of copying it.
    pub fn write_stripe_buf(
        &self,
        object: u64,
        stripe: u64,
        generation: u64,
        data: Arc<Vec<u8>>,
        len: usize,
    ) -> Result<StripeLoc, PoolError> {
        let n = self.k() + self.m();
        let min = self.k() + 1;
        let online = self.online_count();
        if online < min {
            log::error!(
                "only {online} members online, below the write quorum of {min} (k+1): \
                 refusing writes (EROFS); reads go on"
            );
            return Err(PoolError::BelowWriteQuorum {
                have: online,
                need: min,
            });
        }
        let enc = Arc::new(Encoded::new(&self.codec, data, len));
        let mut members = vec![NO_MEMBER; n];
        let mut places = vec![Place::FILE; n];
        let mut used: Vec<u16> = Vec::new();
        let mut todo: Vec<usize> = (0..n).collect();
        let mut out_of_space = false;
        // Two rounds: shards whose member failed are retried on unused members.
        for _round in 0..2 {
            let holders: Vec<u16> = members
                .iter()
                .copied()
                .filter(|&m| m != NO_MEMBER)
                .collect();
            // the hot class first (tiering), then anyone
            let mut targets = match self.write_class() {
                Some(c) => placement::choose_in(self, todo.len(), &used, &holders, Some(&c)),
                None => Vec::new(),
            };
            if targets.len() < todo.len() {
                let mut ex = used.clone();
                ex.extend(&targets);
                let mut h = holders.clone();
                h.extend(&targets);
                targets.extend(placement::choose(self, todo.len() - targets.len(), &ex, &h));
            }
            let jobs: Vec<(usize, u16)> = todo.iter().copied().zip(targets).collect();
            let deadline = Instant::now() + self.io_timeout();
            let started: Vec<_> = jobs
                .iter()
                .map(|&(idx, mi)| {
                    let t = self
                        .start_shard_write(object, stripe, generation, len as u32, &enc, idx, mi);
                    (idx, mi, t)
                })
                .collect();
            todo.clear();
            for (idx, mi, a) in started {
                used.push(mi);
                match self.finish_shard_write(mi, a, enc.shard_len, deadline) {
                    Ok(place) => {
                        members[idx] = mi;
                        places[idx] = place;
                    }
                    Err(full) => {
                        out_of_space |= full;
                        todo.push(idx);
                    }
                }
            }
            if todo.is_empty() {
                break;
            }
        }
        let written = members.iter().filter(|&&m| m != NO_MEMBER).count();
        if written < min {
            // the shards that did land are useless: remove them now
            for (i, &mi) in members.iter().enumerate() {
                if mi != NO_MEMBER {
                    self.release_shard(
                        mi,
                        places[i],
                        shard_path(object, stripe, generation, i as u8),
                        enc.shard_len,
                    );
                }
            }
            if out_of_space {
                log::error!(
                    "object {object} stripe {stripe}: members are full, only {written} shards \
                     could be written (ENOSPC)"
                );
                return Err(PoolError::NoSpace);
            }
            log::error!(
                "object {object} stripe {stripe}: only {written} shards could be written, \
                 below the write quorum of {min} (k+1): refusing the write (EROFS)"
            );
            return Err(PoolError::BelowWriteQuorum {
                have: written,
                need: min,
            });
        }
        if written < n {
            log::warn!(
                "object {object} stripe {stripe} gen {generation} written degraded: {written} of {n} shards"
            );
            self.degraded_writes.store(true, Ordering::Relaxed);
        }
        Ok(StripeLoc {
            generation,
            len: len as u32,
            members,
            patches: Vec::new(),
            places,
        })
    }

    /// Queue the append (and fdatasync) of shard `idx` of an encoded
    /// stripe as a record in member `mi`'s log.
    #[allow(clippy::too_many_arguments)]
    fn start_shard_write(
        &self,
        object: u64,
        stripe: u64,
        generation: u64,
        stripe_len: u32,
        enc: &Arc<Encoded>,
        idx: usize,
        mi: u16,
    ) -> Option<Append> {
        let m = &self.slots[mi as usize];
        m.writable_disk()?;
        let id = self.shard_id(object, stripe, generation, idx);
        let (k, mm) = (self.sb.k, self.sb.m);
        let enc = enc.clone();
        Some(
            self.append_shard(mi, &id, enc.shard_len, move |d, rel, at, allocate| {
                let shard = enc.shard(idx);
                let header = ShardHeader::header(id, k, mm, stripe_len, shard);
                d.write_at_durable(rel, at, &[&header, shard], allocate)
            }),
        )
    }

    /// Collect a shard append: its place, or `Err(true)` when the member
    /// is out of space (`Err(false)`: failed otherwise). A failed append's
    /// space is given back.
    fn finish_shard_write(
        &self,
        mi: u16,
        a: Option<Append>,
        payload_len: usize,
        deadline: Instant,
    ) -> Result<Place, bool> {
        let m = &self.slots[mi as usize];
        let Some(a) = a else {
            m.account::<()>(
                &Err(IoFail::Io(std::io::Error::other("member not online"))),
                "write shard",
            );
            return Err(false);
        };
        let r = a.ticket.and_then(|t| t.wait_until(deadline));
        let what = format!("append {}", super::patch::log_path(a.place.log));
        m.account(&r, &what);
        match r {
            Ok(()) => {
                self.stats.shards_written.fetch_add(1, Ordering::Relaxed);
                if a.new_log {
                    self.log_dir_queued(mi, a.place.log);
                }
                Ok(a.place)
            }
            Err(e) => {
                if matches!(e, IoFail::Timeout(_) | IoFail::Busy) {
                    // the write may still land later (after the punch):
                    // dead bytes the next mount's sweep punches again
                    self.garbage_left.store(true, Ordering::Relaxed);
                }
                self.release_shard(mi, a.place, String::new(), payload_len);
                Err(e.is_full())
            }
        }
    }

    /// Write one shard record (header and payload) on member `mi`,
    /// durably; its place, or `Err(true)` when the member is full.
    fn write_shard(
        &self,
        mi: u16,
        id: &ShardId,
        header: Arc<Vec<u8>>,
        payload: Arc<Vec<u8>>,
    ) -> Result<Place, bool> {
        let m = &self.slots[mi as usize];
        if m.writable_disk().is_none() {
            return Err(false);
        }
        let len = payload.len();
        let a = self.append_shard(mi, id, len, move |d, rel, at, allocate| {
            d.write_at_durable(rel, at, &[&header[..], &payload[..]], allocate)
        });
        self.finish_shard_write(mi, Some(a), len, Instant::now() + self.io_timeout())
    }

    /// Write new copies of shards `slots` of a stripe generation, computed
    /// from `shards` (any k verified shards of it, as
    /// [`Pool::read_shards`] gives them; only the slots asked are
    /// computed, and a slot present in `shards` is written as it is): in
    /// place when the slot's member is online (a rotten copy on a healthy
    /// disk), else on an online member holding no shard of the stripe
    /// (never two shards of a stripe on one member). Returns (slot,
    /// member, place) for every shard written; fewer than asked when
    /// members run out. Not durable until [`Pool::sync_pending`]; the old
    /// copy (same member or not) is the caller's to release after the
    /// commit ([`Pool::remove_shard`]). The stripe must have
    /// no patches (callers fold patched stripes instead: a rebuilt shard
    /// would be overlaid by patches on another member).
    pub fn rebuild_shards(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
        shards: &[Option<Vec<u8>>],
        slots: &[usize],
    ) -> Vec<(usize, u16, Place)> {
        if !loc.patches.is_empty() {
            return Vec::new();
        }
        let built = match self.codec.reconstruct_some(shards, slots) {
            Ok(b) => b,
            Err(e) => {
                log::error!("object {object} stripe {stripe}: rebuild: {e}");
                return Vec::new();
            }
        };
        let mut exclude: Vec<u16> = loc.members.clone();
        // members keeping a shard of the stripe: their domains are avoided
        let mut holders: Vec<u16> = loc
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| !slots.contains(i))
            .map(|(_, &m)| m)
            .collect();
        let mut done = Vec::new();
        for (&slot, shard) in slots.iter().zip(built) {
            let id = self.shard_id(object, stripe, loc.generation, slot);
            let header = Arc::new(ShardHeader::header(
                id, self.sb.k, self.sb.m, loc.len, &shard,
            ));
            let shard = Arc::new(shard);
            // a bad copy on a healthy member (bit rot) is rewritten there
            // (as a new record: the old one is released after the commit)
            let here = loc.members[slot];
            if here != NO_MEMBER && self.slots[here as usize].writable_disk().is_some() {
                if let Ok(place) = self.write_shard(here, &id, header.clone(), shard.clone()) {
                    self.headers.lock().unwrap().remove(&(here, id));
                    done.push((slot, here, place));
                    holders.push(here);
                    continue;
                }
            }
            // a few tries: a target may fail (then it is excluded too)
            for _ in 0..3 {
                let Some(&mi) = placement::choose(self, 1, &exclude, &holders).first() else {
                    break;
                };
                exclude.push(mi);
                if let Ok(place) = self.write_shard(mi, &id, header.clone(), shard.clone()) {
                    done.push((slot, mi, place));
                    holders.push(mi);
                    break;
                }
            }
        }
        done
    }

    /// Copy shard `slot` of a stripe generation from the member that holds
    /// it to member `to` (rebalance): the copy is read and verified, then
    /// appended to `to`'s log; returns its place there. Not durable until
    /// [`Pool::sync_pending`]; the caller commits the new location and
    /// then removes the old copy.
    /// A stripe with patches is not copied (its shard would lose the
    /// patches on the old member): callers fold it first.
    pub fn copy_shard(
        &self,
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
        slot: usize,
        to: u16,
    ) -> Result<Place, String> {
        if !loc.patches.is_empty() {
            return Err("the stripe has patches: fold it first".into());
        }
        let from = loc.members[slot];
        let id = self.shard_id(object, stripe, loc.generation, slot);
        let payload = match self.read_shard(from, id, loc) {
            Ok(p) => p,
            Err(e) => {
                self.shard_failed(from, &id, &e);
                return Err(e);
            }
        };
        let header = ShardHeader::header(id, self.sb.k, self.sb.m, loc.len, &payload);
        self.write_shard(to, &id, Arc::new(header), Arc::new(payload))
            .map_err(|full| {
                if full {
                    "target member is full".to_string()
                } else {
                    "write to the target member failed".to_string()
                }
            })
    }

    /// Give back one shard (a replaced copy, or one never committed) of
    /// stripe generation `loc` held at (`mi`, `place`) if its member is
    /// reachable: a record's space, or a shard file of its own.
    pub fn remove_shard(
        &self,
        (mi, place): (u16, Place),
        object: u64,
        stripe: u64,
        loc: &StripeLoc,
        index: u8,
    ) {
        if mi != NO_MEMBER {
            self.release_shard(
                mi,
                place,
                shard_path(object, stripe, loc.generation, index),
                self.codec.shard_len(loc.len as usize),
            );
        }
    }

    /// Queue the removal of `rel` on member `mi` without waiting for it
    /// (removals run after commits; a hung member must not hold them up).
    /// A removal that cannot be done, now or later, leaves garbage for the
    /// next mount's sweep.
    pub(super) fn remove_later(&self, mi: u16, rel: String) {
        self.cleanup_later(mi, move |d| d.remove_file(&rel));
    }

    /// Queue `job` (a removal or a punch of dead space) on member `mi`
    /// without waiting; [`Pool::garbage_left`] waits for the outstanding
    /// ones. A job that cannot run (the member is absent, its queue is
    /// closed) or fails leaves garbage for the next mount's sweep.
    pub(super) fn cleanup_later<F>(&self, mi: u16, job: F)
    where
        F: FnOnce(&dyn DiskBackend) -> std::io::Result<()> + Send + 'static,
    {
        let m = &self.slots[mi as usize];
        if m.live_disk().is_none() {
            // stays on the absent member until the next sweep
            self.garbage_left.store(true, Ordering::Relaxed);
            return;
        }
        let garbage = self.garbage_left.clone();
        let outstanding = self.removals.clone();
        outstanding.fetch_add(1, Ordering::SeqCst);
        let o2 = outstanding.clone();
        let g2 = garbage.clone();
        let queued = m.submit(move |d| {
            let r = job(d);
            if r.is_err() {
                g2.store(true, Ordering::Relaxed);
            }
            o2.fetch_sub(1, Ordering::SeqCst);
            r
        });
        if queued.is_err() {
            outstanding.fetch_sub(1, Ordering::SeqCst);
            garbage.store(true, Ordering::Relaxed);
        }
    }

    /// Remove the shard files of a stripe generation (after the metadata
    /// that dropped it is durable), and release its patches. Missing
    /// members are skipped: their orphans are reclaimed by the mount-time
    /// sweep.
    pub fn delete_stripe(&self, object: u64, stripe: u64, loc: &StripeLoc) {
        for (i, &mi) in loc.members.iter().enumerate() {
            self.remove_shard((mi, loc.place(i)), object, stripe, loc, i as u8);
        }
        self.release_patches(&loc.patches);
    }

    /// Make every shard written so far durable: shard files and patch
    /// records were fdatasynced when written, so this syncs the directories
    /// that gained entries, on each member's workers, in parallel,
    /// within the I/O deadline. Called before a metadata commit that refers
    /// to them. A member that fails or times out is counted (and its shards
    /// are then treated like lost ones by reads and repair).
    pub fn sync_pending(&self) {
        let list = std::mem::take(&mut *self.unsynced.lock().unwrap());
        let mut per_member: std::collections::BTreeMap<u16, std::collections::BTreeSet<String>> =
            Default::default();
        for (mi, dir) in list {
            per_member.entry(mi).or_default().insert(dir);
        }
        if per_member.is_empty() {
            return;
        }
        let deadline = Instant::now() + self.io_timeout();
        let started: Vec<(u16, Result<Ticket<()>, IoFail>)> = per_member
            .into_iter()
            .map(|(mi, dirs)| {
                let t = self.slots[mi as usize].submit(move |d| {
                    for dir in dirs {
                        d.sync_dir(&dir)?;
                    }
                    Ok(())
                });
                (mi, t)
            })
            .collect();
        for (mi, t) in started {
            let r = t.and_then(|t| t.wait_until(deadline));
            self.slots[mi as usize].account(&r, "fsync dir");
        }
    }
}
