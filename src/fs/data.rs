//! File data: inline small files, stripe buffers, reads and truncation.
//!
//! A file starts inline (its bytes in the replicated metadata). When it
//! grows past `inline_max` it becomes striped: every stripe is written as a
//! new generation of k+m shards, and the stripe map entry is switched to
//! the new generation in a metadata batch; the old generation's shards are
//! removed only after that batch is durable. A stripe is therefore always
//! wholly old or wholly new.

use super::pages::overlay_pages;
use super::schema::*;
use super::{
    Fs, FsError, FsResult, InFlight, Inner, MAX_DIRTY_PAGES, MAX_DIRTY_STRIPES, MAX_FILE_SIZE, PAGE,
};
use crate::meta::{AfterCommit, Op};
use crate::pool::StripeLoc;
use std::sync::Arc;

/// Stripes a file may have in background writes at once.
const MAX_INFLIGHT: usize = 2;

/// Grow the durable size of an open file after a commit that made the data
/// up to `covered` durable. It never passes the start of a stripe still
/// buffered or in flight, so after a crash the committed size covers only
/// bytes that were committed; with nothing pending, all of the logical
/// size is durable.
fn advance_persisted(of: &mut super::OpenFile, covered: u64, ss: u64) {
    let lowest_pending = of
        .dirty
        .keys()
        .chain(of.inflight.keys())
        .chain(of.pages.keys())
        .min()
        .map(|s| s * ss);
    of.persisted_size = match lowest_pending {
        None => of.inode.size,
        Some(p) => of.persisted_size.max(covered.min(p)).min(of.inode.size),
    };
}

/// One part of a planned read.
enum Piece {
    /// Bytes already copied (buffered data, cache, inline file).
    Bytes(Vec<u8>),
    /// A hole.
    Zeros(usize),
    /// A committed stripe to read: `take` bytes from `in_off`.
    Fetch {
        stripe: u64,
        in_off: usize,
        take: usize,
        loc: StripeLoc,
    },
}

impl Fs {
    pub(crate) fn stripe_loc(&self, ino: u64, stripe: u64) -> FsResult<Option<StripeLoc>> {
        match self.meta.get(&stripe_key(ino, stripe))? {
            Some(b) => Ok(Some(dec_loc(&self.pool, &b)?)),
            None => Ok(None),
        }
    }

    /// Read stripe `s` of `ino` as committed (zeros if it was never
    /// written), padded to the stripe size.
    pub(super) fn read_committed_stripe(
        &self,
        g: &mut Inner,
        ino: u64,
        s: u64,
    ) -> FsResult<Arc<Vec<u8>>> {
        let ss = self.stripe_size() as usize;
        let Some(loc) = self.stripe_loc(ino, s)? else {
            return Ok(Arc::new(vec![0; ss]));
        };
        if let Some(of) = g.open.get(&ino) {
            if let Some((cs, cg, data)) = &of.cache {
                if *cs == s && *cg == loc.version() {
                    return Ok(data.clone());
                }
            }
        }
        let mut data = self.pool.read_stripe(ino, s, &loc)?;
        data.resize(ss, 0);
        let data = Arc::new(data);
        if let Some(of) = g.open.get_mut(&ino) {
            of.cache = Some((s, loc.version(), data.clone()));
        }
        Ok(data)
    }

    fn inline_data<'a>(&self, g: &'a mut Inner, ino: u64) -> FsResult<&'a mut Vec<u8>> {
        let of = self.ensure_open(g, ino)?;
        if of.inline.is_none() {
            // an inline file never outgrows inline_max (it becomes striped
            // first): a larger size is a corrupt record, not an allocation
            if of.inode.size > self.pool.sb.inline_max as u64 {
                let e = format!(
                    "inode {ino}: inline size {} exceeds the pool's inline limit {}",
                    of.inode.size, self.pool.sb.inline_max
                );
                return Err(super::FsError::Corrupt(e));
            }
            let mut v = self.meta.get(&inline_key(ino))?.unwrap_or_default();
            v.resize(of.inode.size as usize, 0);
            let of = g.open.get_mut(&ino).expect("open");
            of.inline = Some(v);
        }
        Ok(g.open
            .get_mut(&ino)
            .expect("open")
            .inline
            .as_mut()
            .expect("loaded"))
    }

    /// Read up to `size` bytes at `offset`.
    ///
    /// The read is planned under the filesystem lock (buffered data is
    /// copied, stripe locations are taken), and shards are read and decoded
    /// after it is released, so reads of different stripes run in parallel.
    /// Shards are immutable and a superseded generation is deleted only
    /// after the new one is committed: a read that loses that race sees a
    /// changed location on retry and reads the new generation.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.tier.touch(ino);
        self.read_quiet(ino, offset, size)
    }

    /// [`Fs::read`] without counting an access (replica builds and checks
    /// must not heat the object they copy).
    pub(crate) fn read_quiet(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        // Shards are read without the lock. A stripe rewritten, moved by
        // repair, truncated away or deleted meanwhile has its old shards
        // removed under us: then the read starts over from the current
        // state (the model check's concurrency test found the EIO this
        // gave for a stripe that a concurrent truncate dropped).
        let mut attempt = 0;
        loop {
            match self.read_once(ino, offset, size) {
                Err((e, Some((stripe, loc)))) if attempt < 4 => {
                    if self.stripe_loc(ino, stripe)?.as_ref() == Some(&loc) {
                        return Err(e);
                    }
                    attempt += 1;
                }
                Err((e, _)) => return Err(e),
                Ok(v) => return Ok(v),
            }
        }
    }

    /// One attempt of [`Fs::read`]; an error from reading a committed
    /// stripe names the stripe and the location it planned to read.
    /// (The error is large only on the rare failed read: not boxed.)
    #[allow(clippy::type_complexity, clippy::result_large_err)]
    fn read_once(
        &self,
        ino: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, (FsError, Option<(u64, StripeLoc)>)> {
        let plan = {
            let mut g = self.lock();
            let inode = self
                .ensure_open(&mut g, ino)
                .map_err(|e| (e, None))?
                .inode
                .clone();
            let plan = self.plan_read(&mut g, &inode, offset, size);
            self.close_if_unused(&mut g, ino).map_err(|e| (e, None))?;
            plan.map_err(|e| (e, None))?
        };
        let mut out = Vec::new();
        for piece in plan {
            match piece {
                Piece::Bytes(b) => out.extend_from_slice(&b),
                Piece::Zeros(n) => out.resize(out.len() + n, 0),
                Piece::Fetch {
                    stripe,
                    in_off,
                    take,
                    loc,
                } => {
                    // only the data shard blocks the range touches; a bad
                    // or missing shard falls back to a decode from any k
                    let bytes = self
                        .pool
                        .read_stripe_range(ino, stripe, &loc, in_off, in_off + take)
                        .map_err(|e| (e.into(), Some((stripe, loc))))?;
                    out.extend_from_slice(&bytes);
                    out.resize(out.len() + take - bytes.len(), 0);
                }
            }
        }
        Ok(out)
    }

    fn plan_read(
        &self,
        g: &mut Inner,
        inode: &Inode,
        offset: u64,
        size: u32,
    ) -> FsResult<Vec<Piece>> {
        match inode.kind {
            Kind::Dir => return Err(FsError::IsDir),
            Kind::File => {}
            _ => return Err(FsError::Invalid("read of a special file".into())),
        }
        let ino = inode.ino;
        if offset >= inode.size {
            return Ok(Vec::new());
        }
        let end = (offset + size as u64).min(inode.size);
        if !inode.striped {
            let data = self.inline_data(g, ino)?;
            let e = (end as usize).min(data.len());
            let s = (offset as usize).min(e);
            let mut out = data[s..e].to_vec();
            out.resize((end - offset) as usize, 0);
            return Ok(vec![Piece::Bytes(out)]);
        }
        let ss = self.stripe_size();
        let mut plan = Vec::new();
        let mut pos = offset;
        while pos < end {
            let s = pos / ss;
            let in_off = (pos % ss) as usize;
            let take = ((ss - pos % ss).min(end - pos)) as usize;
            pos += take as u64;
            let of = g.open.get(&ino).expect("open");
            if let Some(buf) = of.dirty.get(&s) {
                plan.push(Piece::Bytes(buf[in_off..in_off + take].to_vec()));
                continue;
            }
            if let Some(f) = of.inflight.get(&s) {
                plan.push(Piece::Bytes(f.data[in_off..in_off + take].to_vec()));
                continue;
            }
            let Some(loc) = self.stripe_loc(ino, s)? else {
                plan.push(Piece::Zeros(take));
                continue;
            };
            if let Some(Some((_, _, data))) = of
                .cache
                .as_ref()
                .map(|c| (c.0 == s && c.1 == loc.version()).then_some(c))
            {
                let mut b = data[in_off..in_off + take].to_vec();
                if let Some(pages) = of.pages.get(&s) {
                    overlay_pages(pages, in_off, &mut b);
                }
                plan.push(Piece::Bytes(b));
                continue;
            }
            match of.pages.get(&s) {
                // runs of buffered pages are copied, the rest fetched
                Some(pages) => {
                    let (mut at, stop) = (in_off, in_off + take);
                    let buffered = |x: usize| pages.contains_key(&((x / PAGE) as u32));
                    while at < stop {
                        // the run of pages that are all buffered, or all not
                        let b = buffered(at);
                        let mut e = (at / PAGE + 1) * PAGE;
                        while e < stop && buffered(e) == b {
                            e += PAGE;
                        }
                        let e = e.min(stop);
                        if b {
                            let mut bytes = vec![0u8; e - at];
                            overlay_pages(pages, at, &mut bytes);
                            plan.push(Piece::Bytes(bytes));
                        } else {
                            plan.push(Piece::Fetch {
                                stripe: s,
                                in_off: at,
                                take: e - at,
                                loc: loc.clone(),
                            });
                        }
                        at = e;
                    }
                }
                None => plan.push(Piece::Fetch {
                    stripe: s,
                    in_off,
                    take,
                    loc,
                }),
            }
        }
        Ok(plan)
    }

    /// Write `data` at `offset`; returns the bytes written.
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.tier.touch(ino);
        let mut g = self.lock();
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        // commit background stripe writes that have finished (errors of
        // earlier writes surface here)
        self.reap_ready(&mut g, ino)?;
        let of = self.ensure_open(&mut g, ino)?;
        if of.pt_refs > 0 {
            return Err(FsError::Busy);
        }
        let held = of.mem(self.stripe_size() as usize);
        match of.inode.kind {
            Kind::Dir => return Err(FsError::IsDir),
            Kind::File => {}
            _ => return Err(FsError::Invalid("write to a special file".into())),
        }
        if self.meta.failed() {
            return Err(crate::meta::MetaError::ReadOnly.into());
        }
        let inline_max = self.pool.sb.inline_max as u64;
        let t = now();
        if !of.inode.striped && end <= inline_max {
            let buf = self.inline_data(&mut g, ino)?;
            if buf.len() < end as usize {
                buf.resize(end as usize, 0);
            }
            buf[offset as usize..end as usize].copy_from_slice(data);
            let of = g.open.get_mut(&ino).expect("open");
            of.inline_dirty = true;
            of.inode.size = of.inode.size.max(end);
            of.inode.mtime = t;
            of.inode.ctime = t;
            of.attr_dirty = true;
        } else {
            if !of.inode.striped {
                self.convert_to_striped(&mut g, ino)?;
            }
            let old = g.open.get(&ino).expect("open").inode.size;
            if end > old {
                let (mut ops, mut after) = (Vec::new(), Vec::new());
                self.clear_past_eof(&mut g, ino, old, &mut ops, &mut after)?;
                if !ops.is_empty() {
                    self.meta.apply(ops, after)?;
                }
            }
            let ss = self.stripe_size();
            let mut pos = offset;
            while pos < end {
                let s = pos / ss;
                let in_off = (pos % ss) as usize;
                let take = ((ss - pos % ss).min(end - pos)) as usize;
                let src = (pos - offset) as usize;
                if self.write_pages(&mut g, ino, s, in_off, &data[src..src + take])? {
                    pos += take as u64;
                    continue;
                }
                self.stripe_buffer(&mut g, ino, s, pos, pos + take as u64)?;
                let of = g.open.get_mut(&ino).expect("open");
                let buf = of.dirty.get_mut(&s).expect("buffer");
                let src = (pos - offset) as usize;
                buf[in_off..in_off + take].copy_from_slice(&data[src..src + take]);
                of.inode.size = of.inode.size.max(pos + take as u64);
                pos += take as u64;
                if pos.is_multiple_of(ss) {
                    // the stripe is complete: write it out in the background
                    self.start_stripe_write(&mut g, ino, s)?;
                }
            }
            let of = g.open.get_mut(&ino).expect("open");
            of.inode.mtime = t;
            of.inode.ctime = t;
            of.attr_dirty = true;
            if of.dirty.len() > MAX_DIRTY_STRIPES {
                let all: Vec<u64> = of.dirty.keys().copied().collect();
                self.flush_stripes(&mut g, ino, &all)?;
            }
            if g.open.get(&ino).expect("open").page_count > MAX_DIRTY_PAGES {
                self.flush_pages(&mut g, ino)?;
            }
        }
        self.charge(&mut g, ino, held)?;
        self.close_if_unused(&mut g, ino)?;
        Ok(data.len() as u32)
    }

    /// Before a striped file grows past `old` (its size): make sure no
    /// committed stripe holds bytes at or past `old`, since those would
    /// appear in the grown file where zeros belong. A running mount never
    /// commits such bytes (shrinking rewrites the tail stripe), but a crash
    /// can: a stripe may be committed while the durable size stays below
    /// it, because the size only advances over data with no older pending
    /// stripe before it. Checked once per open session, at the first growth;
    /// the tail stripe is reloaded zero-filled and stripes wholly past EOF
    /// are dropped (in `ops`, with their shards deleted after the commit).
    fn clear_past_eof(
        &self,
        g: &mut Inner,
        ino: u64,
        old: u64,
        ops: &mut Vec<Op>,
        after: &mut Vec<AfterCommit>,
    ) -> FsResult<()> {
        let of = g.open.get_mut(&ino).expect("open");
        if of.eof_checked || !of.inode.striped {
            return Ok(());
        }
        of.eof_checked = true;
        let busy = |of: &super::OpenFile, s: u64| {
            of.dirty.contains_key(&s) || of.inflight.contains_key(&s) || of.pages.contains_key(&s)
        };
        let ss = self.stripe_size();
        let tail = old / ss;
        if !old.is_multiple_of(ss) && !busy(of, tail) {
            if let Some(loc) = self.stripe_loc(ino, tail)? {
                if loc.len as u64 > old % ss {
                    log::warn!(
                        "inode {ino}: stripe {tail} holds bytes past the end of the file \
                         (left by a crash); they are cleared before the file grows"
                    );
                    // loads the stripe with every byte past EOF zeroed
                    self.stripe_buffer(g, ino, tail, old, old)?;
                }
            }
        }
        let of = g.open.get(&ino).expect("open");
        let dropped = self.drop_stripes_from(ino, old.div_ceil(ss), |s| busy(of, s), ops, after)?;
        if !dropped.is_empty() {
            log::warn!(
                "inode {ino}: stripes {dropped:?} lay past the end of the file (left by a crash): dropped"
            );
        }
        Ok(())
    }

    /// Ensure a dirty buffer exists for stripe `s`, loading the committed
    /// stripe unless the write [from, to) covers every byte that matters.
    fn stripe_buffer(&self, g: &mut Inner, ino: u64, s: u64, from: u64, to: u64) -> FsResult<()> {
        if g.open.get(&ino).expect("open").pages.contains_key(&s) {
            return self.pages_to_whole(g, ino, s);
        }
        let ss = self.stripe_size();
        let of = g.open.get(&ino).expect("open");
        if of.dirty.contains_key(&s) {
            return Ok(());
        }
        let size = of.inode.size;
        let start = s * ss;
        let live_end = (start + ss).min(size);
        let covers = from <= start && to >= live_end;
        let buf = if covers {
            // bytes the write does not cover must read as zeros
            let mut b = g.spare.pop().unwrap_or_default();
            let (a, z) = (from.saturating_sub(start) as usize, (to - start) as usize);
            if b.len() == ss as usize {
                b[..a].fill(0);
                b[z..].fill(0);
            } else {
                b = vec![0; ss as usize];
            }
            b
        } else {
            let inflight = of.inflight.get(&s).map(|f| f.data.clone());
            let mut b = match inflight {
                // the newest bytes of the stripe are still being written
                Some(d) => d.as_ref().clone(),
                None => self.read_committed_stripe(g, ino, s)?.as_ref().clone(),
            };
            // bytes past EOF must read as zeros once the file grows
            let valid = size.saturating_sub(start).min(ss) as usize;
            b[valid..].fill(0);
            b
        };
        g.open.get_mut(&ino).expect("open").dirty.insert(s, buf);
        Ok(())
    }

    /// Move an inline file's bytes into stripe 0 and write it out at once,
    /// in the same batch that drops the inline copy.
    fn convert_to_striped(&self, g: &mut Inner, ino: u64) -> FsResult<()> {
        let data = self.inline_data(g, ino)?.clone();
        let ss = self.stripe_size() as usize;
        let of = g.open.get_mut(&ino).expect("open");
        let mut buf = data;
        buf.resize(ss, 0);
        of.dirty.insert(0, buf);
        of.inline = None;
        of.inline_dirty = false;
        of.inode.striped = true;
        if of.inode.size == 0 {
            // nothing to keep: no stripe 0 needed yet
            of.dirty.clear();
            let mut ops = vec![Op::Del(inline_key(ino))];
            let inode = of.inode.clone();
            Self::put_inode(g, &inode, &mut ops);
            self.meta.apply(ops, vec![])?;
            return Ok(());
        }
        self.flush_stripes(g, ino, &[0])
    }

    /// Write out the given dirty stripes and commit their new locations,
    /// together with the inode and the removal of any inline copy.
    pub(crate) fn flush_stripes(&self, g: &mut Inner, ino: u64, stripes: &[u64]) -> FsResult<()> {
        self.flush_stripes_with(g, ino, stripes, Vec::new(), Vec::new())
    }

    /// [`Fs::flush_stripes`], committing `ops` and `after` in the same batch.
    fn flush_stripes_with(
        &self,
        g: &mut Inner,
        ino: u64,
        stripes: &[u64],
        mut ops: Vec<Op>,
        mut after: Vec<AfterCommit>,
    ) -> FsResult<()> {
        let ss = self.stripe_size();
        let mut covered = 0u64;
        for &s in stripes {
            // an older write of this stripe commits first
            self.reap_one(g, ino, s)?;
            let of = g.open.get_mut(&ino).expect("open");
            let Some(buf) = of.dirty.remove(&s) else {
                continue;
            };
            let size = of.inode.size;
            let start = s * ss;
            if start >= size {
                continue; // truncated away
            }
            let len = (size - start).min(ss) as usize;
            let generation = g.next_gen;
            g.next_gen += 1;
            // the buffer is shared with the member workers, not copied
            let buf = Arc::new(buf);
            let loc = match self
                .pool
                .write_stripe_buf(ino, s, generation, buf.clone(), len)
            {
                Ok(loc) => loc,
                Err(e) => {
                    // keep the data buffered so a later flush can retry
                    let buf = Arc::try_unwrap(buf).unwrap_or_else(|a| (*a).clone());
                    g.open.get_mut(&ino).expect("open").dirty.insert(s, buf);
                    return Err(e.into());
                }
            };
            self.record_stripe(g, ino, s, &loc, buf, len, &mut ops, &mut after)?;
            covered = covered.max(start + len as u64);
        }
        self.commit_stripes(g, ino, covered, ops, after)
    }

    /// Commit recorded stripes with the generation counter, the file's
    /// inode (its durable size advanced to `covered`, see
    /// [`advance_persisted`]) and the removal of any inline copy.
    pub(super) fn commit_stripes(
        &self,
        g: &mut Inner,
        ino: u64,
        covered: u64,
        mut ops: Vec<Op>,
        after: Vec<AfterCommit>,
    ) -> FsResult<()> {
        ops.push(Op::Put(
            counter_key("gen"),
            g.next_gen.to_be_bytes().to_vec(),
        ));
        ops.push(Op::Del(inline_key(ino)));
        let ss = self.stripe_size();
        let of = g.open.get_mut(&ino).expect("open");
        advance_persisted(of, covered, ss);
        let inode = of.inode.clone();
        of.attr_dirty = false;
        Self::put_inode(g, &inode, &mut ops);
        self.meta.apply(ops, after)?;
        Ok(())
    }

    /// Hand the complete dirty stripe `s` to a background writer, so the
    /// caller's next write overlaps its encoding and shard I/O.
    fn start_stripe_write(&self, g: &mut Inner, ino: u64, s: u64) -> FsResult<()> {
        // Failures we can foresee are reported to this write, not a later
        // one: too few members, or members close to full (room for the
        // stripes in flight and this one, on every member, with margin).
        let min = self.pool.k() + 1;
        let shard_len = self.pool.codec.shard_len(self.stripe_size() as usize);
        if self.pool.online_count() < min || !self.pool.has_room(shard_len, 4 * MAX_INFLIGHT) {
            return self.flush_stripes(g, ino, &[s]);
        }
        // one write per stripe at a time keeps a stripe's commits in order;
        // a bounded number per file bounds memory
        self.reap_one(g, ino, s)?;
        while g.open.get(&ino).map_or(0, |of| of.inflight.len()) >= MAX_INFLIGHT {
            let oldest = g.open[&ino]
                .inflight
                .iter()
                .min_by_key(|(_, f)| f.generation)
                .map(|(s, _)| *s)
                .expect("non-empty");
            self.reap_one(g, ino, oldest)?;
        }
        let ss = self.stripe_size();
        let of = g.open.get_mut(&ino).expect("open");
        let Some(buf) = of.dirty.remove(&s) else {
            return Ok(());
        };
        let start = s * ss;
        if start >= of.inode.size {
            return Ok(()); // truncated away
        }
        let len = (of.inode.size - start).min(ss) as usize;
        let generation = g.next_gen;
        g.next_gen += 1;
        let data = Arc::new(buf);
        let (pool, job_data) = (self.pool.clone(), data.clone());
        let queued = self
            .pool
            .stripe_writers
            .submit(move || Ok(pool.write_stripe_buf(ino, s, generation, job_data, len)));
        let of = g.open.get_mut(&ino).expect("open");
        let Ok(ticket) = queued else {
            // the writers are saturated: write it here
            of.dirty
                .insert(s, Arc::try_unwrap(data).unwrap_or_else(|a| (*a).clone()));
            return self.flush_stripes(g, ino, &[s]);
        };
        of.inflight.insert(
            s,
            InFlight {
                generation,
                len,
                data,
                done: ticket.into_receiver(),
            },
        );
        Ok(())
    }

    /// Commit the background writes of `ino` that have finished.
    fn reap_ready(&self, g: &mut Inner, ino: u64) -> FsResult<()> {
        let ready: Vec<u64> = match g.open.get(&ino) {
            Some(of) => of
                .inflight
                .iter()
                .filter(|(_, f)| !f.done.is_empty())
                .map(|(s, _)| *s)
                .collect(),
            None => return Ok(()),
        };
        for s in ready {
            self.reap_one(g, ino, s)?;
        }
        Ok(())
    }

    /// Wait for every background write of `ino` and commit it; the first
    /// error is returned after all are reaped.
    fn reap(&self, g: &mut Inner, ino: u64) -> FsResult<()> {
        let all: Vec<u64> = match g.open.get(&ino) {
            Some(of) => of.inflight.keys().copied().collect(),
            None => return Ok(()),
        };
        let mut first = Ok(());
        for s in all {
            if let Err(e) = self.reap_one(g, ino, s) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Wait for the background write of stripe `s` (if any) and commit its
    /// location. Blocks under the filesystem lock: the writer needs only the
    /// pool, never this lock.
    pub(crate) fn reap_one(&self, g: &mut Inner, ino: u64, s: u64) -> FsResult<()> {
        let Some(f) = g.open.get_mut(&ino).and_then(|of| of.inflight.remove(&s)) else {
            return Ok(());
        };
        let res = match f.done.recv() {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(crate::pool::PoolError::Setup(format!(
                "stripe writer failed: {e}"
            ))),
            Err(_) => Err(crate::pool::PoolError::Setup(
                "stripe writer ended without a result".into(),
            )),
        };
        let ss = self.stripe_size();
        let loc = match res {
            Ok(loc) => loc,
            Err(e) => {
                // keep the bytes buffered (unless newer ones are) so a later
                // flush retries them; the error goes to this caller
                let of = g.open.get_mut(&ino).expect("open");
                of.dirty
                    .entry(s)
                    .or_insert_with(|| Arc::try_unwrap(f.data).unwrap_or_else(|a| (*a).clone()));
                return Err(e.into());
            }
        };
        let mut ops = Vec::new();
        let mut after: Vec<AfterCommit> = Vec::new();
        if !self.record_stripe(g, ino, s, &loc, f.data, f.len, &mut ops, &mut after)? {
            return Ok(());
        }
        self.commit_stripes(g, ino, s * ss + f.len as u64, ops, after)
    }

    /// Record a written stripe generation in `ops`: `T(ino, s)` switches to
    /// `loc`, the superseded generation is deleted after the commit, and the
    /// stripe's bytes become the file's cached stripe (the one they replace
    /// is kept for reuse). If a newer generation is committed already, ours
    /// is stale: its shards are deleted and `false` is returned.
    #[allow(clippy::too_many_arguments)]
    fn record_stripe(
        &self,
        g: &mut Inner,
        ino: u64,
        s: u64,
        loc: &StripeLoc,
        mut data: Arc<Vec<u8>>,
        len: usize,
        ops: &mut Vec<Op>,
        after: &mut Vec<AfterCommit>,
    ) -> FsResult<bool> {
        match self.stripe_loc(ino, s)? {
            Some(cur) if cur.generation > loc.generation => {
                self.pool.delete_stripe(ino, s, loc);
                return Ok(false);
            }
            Some(old) => {
                let pool = self.pool.clone();
                after.push(Box::new(move || pool.delete_stripe(ino, s, &old)));
            }
            None => {}
        }
        ops.push(Op::Put(stripe_key(ino, s), enc(loc)));
        // bytes past the stripe's data must read as zeros from the cache
        if data[len..].iter().any(|&b| b != 0) {
            Arc::make_mut(&mut data)[len..].fill(0);
        }
        let ss = self.stripe_size() as usize;
        let of = g.open.get_mut(&ino).expect("open");
        let old = of.cache.replace((s, loc.generation, data));
        if let Some(b) = old.and_then(|(_, _, a)| Arc::try_unwrap(a).ok()) {
            if g.spare.len() < 2 && b.len() == ss {
                g.spare.push(b);
            }
        }
        Ok(true)
    }

    /// Write out everything buffered for `ino` (close, fsync).
    pub(super) fn flush_file_locked(&self, g: &mut Inner, ino: u64) -> FsResult<()> {
        if !g.open.contains_key(&ino) {
            return Ok(());
        }
        self.reap(g, ino)?;
        if g.open.get(&ino).is_some_and(|of| !of.pages.is_empty()) {
            self.flush_pages(g, ino)?;
        }
        let Some(of) = g.open.get_mut(&ino) else {
            return Ok(());
        };
        if !of.dirty.is_empty() {
            let all: Vec<u64> = of.dirty.keys().copied().collect();
            return self.flush_stripes(g, ino, &all);
        }
        if of.inline_dirty {
            let data = of.inline.clone().unwrap_or_default();
            of.inline_dirty = false;
            of.persisted_size = of.inode.size;
            of.attr_dirty = false;
            let inode = of.inode.clone();
            let mut ops = vec![Op::Put(inline_key(ino), data)];
            Self::put_inode(g, &inode, &mut ops);
            self.meta.apply(ops, vec![])?;
        } else if of.attr_dirty {
            of.attr_dirty = false;
            let inode = of.inode.clone();
            let mut ops = Vec::new();
            Self::put_inode(g, &inode, &mut ops);
            self.meta.apply(ops, vec![])?;
        }
        Ok(())
    }

    /// Flush buffered data of the file behind a handle (FUSE flush = close(2)).
    /// Wait for every background stripe write to land and record it (in
    /// the metadata cache; nothing is committed). Tests use it to fence
    /// fault injection off from writes in flight.
    pub fn quiesce(&self) -> FsResult<()> {
        let mut g = self.lock();
        let inos: Vec<u64> = g.open.keys().copied().collect();
        let mut first = Ok(());
        for ino in inos {
            if let Err(e) = self.reap(&mut g, ino) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// FUSE flush: a handle opened for writing makes its file durable.
    pub fn flush_handle(&self, fh: u64) -> FsResult<()> {
        let (ino, writable) = self.handle(fh)?;
        if writable {
            self.fsync(ino)?;
        }
        Ok(())
    }

    /// Set the size of `ino` (shrink or grow), adding the metadata changes
    /// to `ops`. Shards of dropped stripes are removed after commit.
    pub(super) fn truncate_locked(
        &self,
        g: &mut Inner,
        ino: u64,
        size: u64,
        ops: &mut Vec<Op>,
        after: &mut Vec<AfterCommit>,
    ) -> FsResult<()> {
        self.ensure_open(g, ino)?;
        // write out buffered data first so the stripe map is complete
        self.flush_file_locked(g, ino)?;
        let of = g.open.get(&ino).expect("open");
        let old = of.inode.size;
        if !of.inode.striped {
            if size > self.pool.sb.inline_max as u64 {
                self.convert_to_striped(g, ino)?;
            } else {
                let buf = self.inline_data(g, ino)?;
                buf.resize(size as usize, 0);
                let data = buf.clone();
                ops.push(Op::Put(inline_key(ino), data));
                let of = g.open.get_mut(&ino).expect("open");
                of.inode.size = size;
                of.persisted_size = size;
                of.inline_dirty = false;
                return Ok(());
            }
        }
        let ss = self.stripe_size();
        if size > old {
            self.clear_past_eof(g, ino, old, ops, after)?;
        }
        if size < old {
            // Drop whole stripes past the new end, in the same batch as the
            // rewrite of the stripe holding the new end (if any).
            let mut drop_ops = Vec::new();
            let mut drop_after: Vec<AfterCommit> = Vec::new();
            self.drop_stripes_from(
                ino,
                size.div_ceil(ss),
                |_| false,
                &mut drop_ops,
                &mut drop_after,
            )?;
            // the stripe holding the new end keeps only bytes before it:
            // rewrite it so a later extension reads zeros
            let tail = size / ss;
            if !size.is_multiple_of(ss) && self.stripe_loc(ino, tail)?.is_some() {
                let mut buf = self.read_committed_stripe(g, ino, tail)?.as_ref().clone();
                buf[(size % ss) as usize..].fill(0);
                let of = g.open.get_mut(&ino).expect("open");
                of.inode.size = size;
                of.dirty.insert(tail, buf);
                self.flush_stripes_with(g, ino, &[tail], drop_ops, drop_after)?;
            } else {
                ops.extend(drop_ops);
                after.extend(drop_after);
            }
        }
        let of = g.open.get_mut(&ino).expect("open");
        of.inode.size = size;
        of.persisted_size = size;
        of.cache = None;
        Ok(())
    }
}
