//! The filesystem layer driven directly, without a FUSE mount: six
//! in-memory member disks (4+2, 4 KiB shards, 16 KiB stripes, 2 KiB inline
//! limit) under an in-memory metadata store, with faults injected through
//! the `MemDisk` handles.
//!
//! Members are built with `pool::Member::new` (the struct has private
//! fields, so a literal cannot be written outside the crate).

use shardfs::fs::schema::{inline_key, orphan_key, stripe_prefix, xattr_prefix};
use shardfs::fs::{Fs, FsResult, Kind, NewNode, SetAttr, ROOT_INO};
use shardfs::meta::{prefix_end, MemStore, MetaCache};
use shardfs::pool::{
    new_id, DiskBackend, MemDisk, Member, Pool, Superblock, FORMAT_VERSION, NO_MEMBER,
};
use std::fmt::Debug;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const MEMBERS: usize = 6;
const SHARD: u32 = 4096;
const STRIPE: u64 = 4 * SHARD as u64;
const INLINE: u64 = 2048;

/// A mounted filesystem over in-memory members.
struct Rig {
    fs: Fs,
    disks: Vec<Arc<MemDisk>>,
}

/// The superblock of a 4+2 test pool of members `ids` (as member 0).
fn superblock(ids: &[String]) -> Superblock {
    Superblock {
        magic: "shardfs".into(),
        format_version: FORMAT_VERSION,
        pool_id: new_id(),
        member_id: ids[0].clone(),
        member_index: 0,
        members: ids.to_vec(),
        k: 4,
        m: 2,
        shard_size: SHARD,
        inline_max: INLINE as u32,
        meta_replicas: vec![0, 1, 2],
        created: 0,
        domains: Vec::new(),
        meta_epoch: 0,
        classes: Vec::new(),
    }
}

fn rig() -> Rig {
    let ids: Vec<String> = (0..MEMBERS).map(|_| new_id()).collect();
    let sb = superblock(&ids);
    let disks: Vec<Arc<MemDisk>> = (0..MEMBERS).map(|_| Arc::default()).collect();
    let members: Vec<Member> = disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let disk = d.clone() as Arc<dyn DiskBackend>;
            Member::new(i as u16, ids[i].clone(), format!("mem{i}"), Some(disk))
        })
        .collect();
    let pool = Arc::new(Pool::new(sb, members).expect("pool"));
    assert_eq!(pool.stripe_size(), STRIPE);
    assert_eq!(pool.online_count(), MEMBERS);
    let p2 = pool.clone();
    let meta = MetaCache::new(
        Arc::new(MemStore::default()),
        Box::new(move || p2.sync_pending()),
    );
    let fs = Fs::mount(pool, meta).expect("mount");
    Rig { fs, disks }
}

impl Rig {
    /// Set or clear the injected failure of the given members.
    fn fail(&self, which: &[usize], on: bool) {
        for &i in which {
            self.disks[i].fail.store(on, Ordering::Relaxed);
        }
    }

    fn bucket(&self, name: &str) -> u64 {
        self.fs
            .create_node(ROOT_INO, name.as_bytes(), node(Kind::Dir))
            .expect("create bucket")
            .ino
    }

    /// Create `name` in `dir` holding `data`, written in uneven chunks, then
    /// close it and make everything durable.
    fn put_file(&self, dir: u64, name: &str, data: &[u8]) -> u64 {
        let (attr, fh) = self
            .fs
            .create_open(dir, name.as_bytes(), node(Kind::File), true)
            .expect("create");
        let mut off = 0;
        for chunk in data.chunks(3001) {
            let n = self.fs.write(attr.ino, off as u64, chunk).expect("write");
            assert_eq!(n as usize, chunk.len());
            off += chunk.len();
        }
        self.fs.flush_handle(fh).expect("flush");
        self.fs.release(fh).expect("release");
        self.fs.sync_all().expect("sync");
        assert_eq!(self.fs.getattr(attr.ino).unwrap().size, data.len() as u64);
        attr.ino
    }

    /// Every shard of `ino` as (member, file, offset, length): a shard
    /// file of its own, or a record in a log.
    fn shard_files(&self, ino: u64) -> Vec<(usize, String, u64, usize)> {
        let mut out = Vec::new();
        for (s, loc) in self.fs.stripes(ino).expect("stripes") {
            for (i, &mi) in loc.members.iter().enumerate() {
                assert_ne!(
                    mi, NO_MEMBER,
                    "ino {ino} stripe {s}: shard {i} never written"
                );
                let (rel, at, len) = self.fs.pool.shard_at(ino, s, &loc, i);
                out.push((mi as usize, rel, at, len));
            }
        }
        out
    }
}

fn node(kind: Kind) -> NewNode {
    NewNode {
        kind,
        perm: if kind == Kind::Dir { 0o755 } else { 0o644 },
        uid: 1000,
        gid: 1000,
        rdev: 0,
        target: if kind == Kind::Symlink {
            b"target".to_vec()
        } else {
            Vec::new()
        },
    }
}

/// The errno of a result that must be an error.
#[track_caller]
fn errno<T: Debug>(r: FsResult<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.errno(),
    }
}

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// An offset near an inline or stripe boundary (or anywhere, rarely).
    fn offset(&mut self) -> u64 {
        let anchor = match self.below(10) {
            0..=2 => INLINE * self.below(3),
            3..=8 => STRIPE * self.below(6),
            _ => return self.below(6 * STRIPE),
        };
        let delta = match self.below(3) {
            0 => self.below(5) as i64 - 2,
            1 => self.below(65) as i64 - 32,
            _ => self.below(1025) as i64 - 512,
        };
        (anchor as i64 + delta).max(0) as u64
    }

    /// A length: tiny, around the inline size, around a stripe, or larger.
    fn length(&mut self) -> usize {
        match self.below(6) {
            0 => 1 + self.below(8) as usize,
            1 => 1 + self.below(300) as usize,
            2 => (INLINE as i64 + self.below(9) as i64 - 4) as usize,
            3 => (STRIPE as i64 + self.below(9) as i64 - 4) as usize,
            4 => (2 * STRIPE + self.below(2 * STRIPE)) as usize,
            _ => 1 + self.below(STRIPE) as usize,
        }
    }
}

/// True when a shard's bytes are gone from its member: its file or log
/// is missing, or its record's space was punched out (reads as zeros).
fn shard_gone(d: &MemDisk, rel: &str, at: u64, len: usize) -> bool {
    match d.read_range(rel, at, len) {
        Err(_) => true,
        Ok(b) => b.iter().all(|&x| x == 0),
    }
}

/// Compare a read of `ino` with the model.
fn check_read(fs: &Fs, ino: u64, model: &[u8], off: u64, size: u32, step: usize) {
    let got = fs
        .read(ino, off, size)
        .unwrap_or_else(|e| panic!("step {step}: read({off}, {size}) failed: {e}"));
    let s = (off as usize).min(model.len());
    let e = (off as usize + size as usize).min(model.len());
    if got != model[s..e] {
        let first = got
            .iter()
            .zip(&model[s..e])
            .position(|(a, b)| a != b)
            .map(|p| p + s);
        panic!(
            "step {step}: read({off}, {size}) returned {} bytes, expected {}; first difference at file offset {first:?}",
            got.len(),
            e - s
        );
    }
}

#[test]
fn random_writes_truncates_and_reads_match_a_byte_vector_model() {
    let r = rig();
    let fs = &r.fs;
    let b = r.bucket("model");
    let (attr, mut fh) = fs.create_open(b, b"f0", node(Kind::File), true).unwrap();
    let mut ino = attr.ino;
    let mut model: Vec<u8> = Vec::new();
    let mut rng = Rng(0x5eed_0001);
    let mut counts = [0usize; 6];
    // steps that saw the file inline with data, and striped
    let (mut inline_steps, mut striped_steps) = (0, 0);
    for step in 0..600 {
        if step % 150 == 149 {
            // start over on a fresh file, so the inline phase and the switch
            // to stripes are exercised more than once; the old one is reclaimed
            check_read(fs, ino, &model, 0, model.len() as u32 + 1, step);
            let old = r.shard_files(ino);
            fs.release(fh).unwrap();
            fs.unlink(b, format!("f{}", step - 149).as_bytes()).unwrap();
            fs.meta.sync().unwrap();
            // superseded shards are removed after the commit, on the
            // members' workers
            assert!(fs.pool.settle_removals(std::time::Duration::from_secs(10)));
            for (mi, rel, at, len) in &old {
                assert!(
                    shard_gone(&r.disks[*mi], rel, *at, *len),
                    "step {step}: {rel}@{at} left"
                );
            }
            let name = format!("f{}", step + 1);
            let (attr, h) = fs
                .create_open(b, name.as_bytes(), node(Kind::File), true)
                .unwrap();
            (ino, fh) = (attr.ino, h);
            model.clear();
            continue;
        }
        let op = if model.len() as u64 > 7 * STRIPE {
            80 // keep the file small: shrink it
        } else {
            rng.below(100)
        };
        match op {
            0..=44 => {
                counts[0] += 1;
                let (off, n) = if step % 150 < 25 {
                    // early in a file's life: mostly within the inline limit,
                    // sometimes just past it
                    let off = rng.below(INLINE);
                    (off, 1 + rng.below(INLINE - off + 8) as usize)
                } else {
                    (rng.offset(), rng.length())
                };
                let data = rng.bytes(n);
                let n = fs
                    .write(ino, off, &data)
                    .unwrap_or_else(|e| panic!("step {step}: write({off}, {}): {e}", data.len()));
                assert_eq!(n as usize, data.len(), "step {step}");
                let end = off as usize + data.len();
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
            45..=74 => {
                counts[1] += 1;
                let off = if rng.below(4) == 0 {
                    rng.below(model.len() as u64 + 100)
                } else {
                    rng.offset()
                };
                let size = rng.length() as u32;
                check_read(fs, ino, &model, off, size, step);
            }
            75..=86 => {
                counts[2] += 1;
                let size = if rng.below(8) == 0 { 0 } else { rng.offset() };
                fs.setattr(
                    ino,
                    SetAttr {
                        size: Some(size),
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("step {step}: truncate({size}): {e}"));
                model.resize(size as usize, 0);
            }
            87..=91 => {
                counts[3] += 1;
                if rng.below(2) == 0 {
                    fs.flush_handle(fh).unwrap();
                } else {
                    fs.fsync(ino).unwrap();
                }
            }
            _ => {
                // close, read the closed file back whole, reopen
                counts[4] += 1;
                fs.release(fh).unwrap();
                fs.meta.sync().unwrap();
                check_read(fs, ino, &model, 0, model.len() as u32 + 1, step);
                fh = fs.open(ino, true).unwrap();
            }
        }
        let attr = fs.getattr(ino).unwrap();
        assert_eq!(attr.size, model.len() as u64, "step {step}: size");
        if attr.striped {
            striped_steps += 1;
        } else if attr.size > 0 {
            inline_steps += 1;
        }
        if step % 50 == 49 {
            counts[5] += 1;
            check_read(fs, ino, &model, 0, model.len() as u32 + 1, step);
        }
    }
    // every kind of step ran
    assert!(counts.iter().all(|&c| c > 0), "step mix {counts:?}");
    // the files went through the inline and the striped representation
    assert!(
        inline_steps >= 5 && striped_steps > 300,
        "inline {inline_steps}, striped {striped_steps} steps"
    );
    check_read(fs, ino, &model, 0, model.len() as u32 + 1, 600);
    fs.release(fh).unwrap();
    fs.sync_all().unwrap();
    assert_eq!(fs.getattr(ino).unwrap().size, model.len() as u64);
    check_read(fs, ino, &model, 0, model.len() as u32 + 1, 601);
    // no stripe past the end is left in the map
    for (s, loc) in fs.stripes(ino).unwrap() {
        assert!(
            s * STRIPE < model.len() as u64,
            "stripe {s} past EOF {}",
            model.len()
        );
        assert!(loc.len as u64 <= STRIPE);
    }
}

/// The corpus of the fault tests: (size, inode, content).
fn corpus(r: &Rig) -> Vec<(usize, u64, Vec<u8>)> {
    let b = r.bucket("corpus");
    let mut rng = Rng(0xc0de);
    [0usize, 100, 2048, 5000, 16384, 70000]
        .into_iter()
        .map(|n| {
            let data = rng.bytes(n);
            let ino = r.put_file(b, &format!("f{n}"), &data);
            (n, ino, data)
        })
        .collect()
}

fn is_striped(n: usize) -> bool {
    n as u64 > INLINE
}

#[test]
fn any_two_lost_members_read_back_exactly_and_three_give_eio() {
    let r = rig();
    let fs = &r.fs;
    let files = corpus(&r);
    for (n, ino, _) in &files {
        let attr = fs.getattr(*ino).unwrap();
        assert_eq!(attr.striped, is_striped(*n), "size {n}");
        if is_striped(*n) {
            let stripes = fs.stripes(*ino).unwrap();
            assert_eq!(stripes.len() as u64, (*n as u64).div_ceil(STRIPE));
            for (_, loc) in &stripes {
                let mut m = loc.members.clone();
                m.sort();
                m.dedup();
                assert_eq!(m.len(), MEMBERS, "shards on distinct members: {loc:?}");
            }
        }
    }
    let check_all = |what: &str| {
        for (n, ino, data) in &files {
            let got = fs
                .read(*ino, 0, *n as u32 + 100)
                .unwrap_or_else(|e| panic!("{what}: size {n}: {e}"));
            assert!(got == *data, "{what}: size {n}: wrong bytes");
            let (off, len) = (*n as u64 / 3, 20000u32);
            let got = fs
                .read(*ino, off, len)
                .unwrap_or_else(|e| panic!("{what}: size {n} at {off}: {e}"));
            let e = (off as usize + len as usize).min(*n);
            assert!(got == data[off as usize..e], "{what}: size {n} at {off}");
        }
    };
    check_all("healthy");
    let mut pairs = 0;
    for a in 0..MEMBERS {
        for b in a + 1..MEMBERS {
            r.fail(&[a, b], true);
            check_all(&format!("members {a},{b} failed"));
            r.fail(&[a, b], false);
            pairs += 1;
        }
    }
    assert_eq!(pairs, 15);
    let reconstructions = fs.pool.stats.reconstructions.load(Ordering::Relaxed);
    assert!(reconstructions > 0, "no stripe was decoded from parity");
    let mut triples = 0;
    for a in 0..MEMBERS {
        for b in a + 1..MEMBERS {
            for c in b + 1..MEMBERS {
                let what = format!("members {a},{b},{c} failed");
                r.fail(&[a, b, c], true);
                for (n, ino, data) in &files {
                    let n = *n;
                    let whole = fs.read(*ino, 0, n as u32 + 100);
                    if is_striped(n) {
                        // a whole stripe needs k of its shards: at most 3 are left
                        assert_eq!(errno(whole), libc::EIO, "{what}: size {n}");
                    } else {
                        // inline files live in the metadata, not on the members
                        assert!(whole.unwrap() == *data, "{what}: size {n}");
                    }
                    // smaller reads may be served by the data shards they
                    // touch if those survive: exact bytes or EIO, nothing else
                    for (off, len) in [(n.saturating_sub(10), 10), (n / 2, 3000), (1, 1)] {
                        match fs.read(*ino, off as u64, len as u32) {
                            Ok(got) => {
                                let want = &data[off.min(n)..(off + len).min(n)];
                                assert!(got == want, "{what}: size {n}: wrong bytes at {off}");
                            }
                            Err(e) => {
                                assert!(is_striped(n), "{what}: size {n}: {e}");
                                assert_eq!(e.errno(), libc::EIO, "{what}: size {n} at {off}");
                            }
                        }
                    }
                }
                r.fail(&[a, b, c], false);
                triples += 1;
            }
        }
    }
    assert_eq!(triples, 20);
    check_all("all members back");
}

#[test]
fn one_corrupt_byte_in_any_single_shard_never_changes_what_is_read() {
    let r = rig();
    let fs = &r.fs;
    let files: Vec<_> = corpus(&r)
        .into_iter()
        .filter(|(n, _, _)| is_striped(*n))
        .collect();
    let stats = &fs.pool.stats;
    let mut cases = 0;
    for (n, ino, data) in &files {
        for (s, loc) in fs.stripes(*ino).unwrap() {
            for (i, &mi) in loc.members.iter().enumerate() {
                let (rel, base, len) = fs.pool.shard_at(*ino, s, &loc, i);
                let base = base as usize;
                let disk = &r.disks[mi as usize];
                assert_eq!(
                    disk.read_range(&rel, base as u64, len)
                        .expect("shard present")
                        .len(),
                    len
                );
                // the payload is the tail of the file; the header comes first
                let payload = fs.pool.codec.shard_len(loc.len as usize);
                assert!(len > payload, "{rel}: {len} bytes");
                let hdr = len - payload;
                let mut at = vec![0, 9, 10, 13, 33, 50, 57, 61, 64, 95, hdr - 1];
                at.extend([hdr, hdr + payload / 2, len - 1]);
                for pos in at {
                    let bad_before = stats.bad_shards.load(Ordering::Relaxed);
                    assert!(disk.corrupt(&rel, |b| b[base + pos] ^= 0x5a));
                    let what = format!("size {n} stripe {s} shard {i} byte {pos} of {len}");
                    let got = fs
                        .read(*ino, 0, *n as u32)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(got == *data, "{what}: wrong bytes");
                    // a small read inside the shard's own bytes (a data
                    // shard holds stripe bytes i*payload..(i+1)*payload)
                    let at = s * STRIPE + (i * payload + payload / 2) as u64;
                    let want = &data[(at as usize).min(*n)..(at as usize + 100).min(*n)];
                    let got = fs
                        .read(*ino, at, 100)
                        .unwrap_or_else(|e| panic!("{what}: small read: {e}"));
                    assert!(got == want, "{what}: small read at {at}: wrong bytes");
                    // a bad data shard payload is noticed under the naive
                    // policy (data shards first, parity only when needed;
                    // the heat-aware one may read around it, which is what
                    // scrub is for). A header already verified may be
                    // cached, so only payload bytes are checked here.
                    if i < 4 && pos >= hdr {
                        fs.pool.set_read_policy(shardfs::pool::ReadPolicy::Naive);
                        let got = fs.read(*ino, 0, *n as u32).unwrap();
                        fs.pool.set_read_policy(shardfs::pool::ReadPolicy::Heat);
                        assert!(got == *data, "{what}: naive read: wrong bytes");
                        assert!(
                            stats.bad_shards.load(Ordering::Relaxed) > bad_before,
                            "{what}: corruption not detected"
                        );
                    }
                    assert!(disk.corrupt(&rel, |b| b[base + pos] ^= 0x5a));
                    cases += 1;
                }
                // a truncated shard is rejected too
                let orig = disk.read_file(&rel).unwrap();
                assert!(disk.corrupt(&rel, |b| b.truncate(base + len - 1)));
                assert!(
                    fs.read(*ino, 0, *n as u32).unwrap() == *data,
                    "truncated {rel}"
                );
                assert!(disk.corrupt(&rel, |b| *b = orig));
            }
        }
    }
    // 5000 and 16384 bytes: one stripe each; 70000 bytes: five
    assert_eq!(cases, 7 * 6 * 14);
    assert!(stats.reconstructions.load(Ordering::Relaxed) > 0);
}

#[test]
fn namespace_errors_have_posix_errnos() {
    let r = rig();
    let fs = &r.fs;
    let b = r.bucket("bucket");
    let sub = fs.create_node(b, b"sub", node(Kind::Dir)).unwrap().ino;
    let f = r.put_file(b, "file", b"hello");
    let e = fs.create_node(b, b"empty", node(Kind::Dir)).unwrap().ino;
    fs.create_node(sub, b"inner", node(Kind::File)).unwrap();

    // EEXIST
    assert_eq!(
        errno(fs.create_node(ROOT_INO, b"bucket", node(Kind::Dir))),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs.create_node(b, b"file", node(Kind::File))),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs.create_node(b, b"file", node(Kind::Dir))),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs.create_node(b, b"sub", node(Kind::Symlink))),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs.create_open(b, b"file", node(Kind::File), true)),
        libc::EEXIST
    );
    assert_eq!(errno(fs.link(f, b, b"sub")), libc::EEXIST);
    assert_eq!(errno(fs.rename(b, b"file", b, b"sub", true)), libc::EEXIST);
    assert_eq!(
        errno(fs.create_node(b, b".", node(Kind::Dir))),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs.create_node(b, b"..", node(Kind::File))),
        libc::EEXIST
    );

    // ENOENT
    assert_eq!(errno(fs.lookup(b, b"missing")), libc::ENOENT);
    assert_eq!(errno(fs.lookup(ROOT_INO, b"no-such-bucket")), libc::ENOENT);
    assert_eq!(errno(fs.unlink(b, b"missing")), libc::ENOENT);
    assert_eq!(errno(fs.rmdir(b, b"missing")), libc::ENOENT);
    assert_eq!(
        errno(fs.rename(b, b"missing", b, b"x", false)),
        libc::ENOENT
    );
    assert_eq!(errno(fs.resolve("bucket/sub/missing")), libc::ENOENT);
    assert_eq!(errno(fs.getattr(999_999)), libc::ENOENT);
    assert_eq!(errno(fs.open(999_999, false)), libc::ENOENT);
    assert_eq!(
        errno(fs.create_node(999_999, b"x", node(Kind::File))),
        libc::ENOENT
    );

    // ENOTEMPTY
    assert_eq!(errno(fs.rmdir(ROOT_INO, b"bucket")), libc::ENOTEMPTY);
    assert_eq!(errno(fs.rmdir(b, b"sub")), libc::ENOTEMPTY);
    assert_eq!(
        errno(fs.rename(b, b"empty", b, b"sub", false)),
        libc::ENOTEMPTY
    );

    // EISDIR
    assert_eq!(errno(fs.unlink(b, b"sub")), libc::EISDIR);
    assert_eq!(errno(fs.unlink(ROOT_INO, b"bucket")), libc::EISDIR);
    assert_eq!(
        errno(fs.rename(b, b"file", b, b"empty", false)),
        libc::EISDIR
    );
    assert_eq!(errno(fs.read(sub, 0, 10)), libc::EISDIR);
    assert_eq!(errno(fs.write(sub, 0, b"x")), libc::EISDIR);
    let trunc = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    assert_eq!(errno(fs.setattr(sub, trunc)), libc::EISDIR);

    // ENOTDIR
    assert_eq!(errno(fs.rmdir(b, b"file")), libc::ENOTDIR);
    assert_eq!(errno(fs.lookup(f, b"x")), libc::ENOTDIR);
    assert_eq!(
        errno(fs.create_node(f, b"x", node(Kind::File))),
        libc::ENOTDIR
    );
    assert_eq!(errno(fs.readdir(f, 0, 10)), libc::ENOTDIR);
    assert_eq!(
        errno(fs.rename(b, b"empty", b, b"file", false)),
        libc::ENOTDIR
    );
    assert_eq!(errno(fs.resolve("bucket/file/x")), libc::ENOTDIR);

    // ENAMETOOLONG: a 256-byte component (255 is fine)
    let long = vec![b'n'; 256];
    let max = vec![b'n'; 255];
    assert_eq!(
        errno(fs.create_node(b, &long, node(Kind::File))),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno(fs.create_node(b, &long, node(Kind::Dir))),
        libc::ENAMETOOLONG
    );
    assert_eq!(errno(fs.lookup(b, &long)), libc::ENAMETOOLONG);
    assert_eq!(
        errno(fs.rename(b, b"file", b, &long, false)),
        libc::ENAMETOOLONG
    );
    assert_eq!(errno(fs.link(f, b, &long)), libc::ENAMETOOLONG);
    assert_eq!(errno(fs.unlink(b, &long)), libc::ENAMETOOLONG);
    fs.create_node(b, &max, node(Kind::File)).unwrap();
    assert_eq!(fs.lookup(b, &max).unwrap().kind, Kind::File);

    // EINVAL: bucket names that break S3's rules
    for bad in [
        "ab",
        "Upper",
        "-lead",
        "trail-",
        "a_b",
        "a..b",
        "192.168.0.1",
    ] {
        assert_eq!(
            errno(fs.create_node(ROOT_INO, bad.as_bytes(), node(Kind::Dir))),
            libc::EINVAL,
            "{bad}"
        );
        assert_eq!(errno(fs.lookup(ROOT_INO, bad.as_bytes())), libc::ENOENT);
    }
    let long_bucket = "a".repeat(64);
    assert_eq!(
        errno(fs.create_node(ROOT_INO, long_bucket.as_bytes(), node(Kind::Dir))),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.rename(b, b"empty", ROOT_INO, b"Bad_Name", false)),
        libc::EINVAL
    );
    // moving a directory into itself
    assert_eq!(
        errno(fs.rename(b, b"sub", sub, b"loop", false)),
        libc::EINVAL
    );

    // EPERM: only buckets (directories) at the root
    for kind in [Kind::File, Kind::Symlink, Kind::Fifo] {
        assert_eq!(
            errno(fs.create_node(ROOT_INO, b"rootnode", node(kind))),
            libc::EPERM,
            "{kind:?}"
        );
    }
    assert_eq!(
        errno(fs.create_open(ROOT_INO, b"rootfile", node(Kind::File), true)),
        libc::EPERM
    );
    assert_eq!(
        errno(fs.rename(b, b"file", ROOT_INO, b"rootfile", false)),
        libc::EPERM
    );
    assert_eq!(errno(fs.link(f, ROOT_INO, b"rootlink")), libc::EPERM);
    assert_eq!(errno(fs.link(sub, b, b"dirlink")), libc::EPERM);

    // nothing above changed the namespace
    let names = |dir: u64| -> Vec<Vec<u8>> {
        fs.readdir(dir, 0, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.3)
            .collect()
    };
    assert_eq!(
        names(ROOT_INO),
        vec![b".".to_vec(), b"..".to_vec(), b"bucket".to_vec()]
    );
    let mut inb = names(b);
    inb.sort();
    let mut want = vec![
        b".".to_vec(),
        b"..".to_vec(),
        b"sub".to_vec(),
        b"file".to_vec(),
        b"empty".to_vec(),
        max.clone(),
    ];
    want.sort();
    assert_eq!(inb, want);
    assert_eq!(fs.read(f, 0, 100).unwrap(), b"hello");
    assert_eq!(fs.getattr(e).unwrap().kind, Kind::Dir);
    assert_eq!(fs.resolve("bucket/sub/inner").unwrap().kind, Kind::File);
    // and the checks did not hide real successes
    fs.rmdir(b, b"empty").unwrap();
    fs.unlink(sub, b"inner").unwrap();
    fs.rmdir(b, b"sub").unwrap();
    fs.unlink(b, b"file").unwrap();
    fs.unlink(b, &max).unwrap();
    fs.rmdir(ROOT_INO, b"bucket").unwrap();
    assert_eq!(names(ROOT_INO), vec![b".".to_vec(), b"..".to_vec()]);
}

#[test]
fn unlinked_open_file_stays_readable_and_is_reclaimed_at_last_release() {
    let r = rig();
    let fs = &r.fs;
    let b = r.bucket("unlink");
    let mut rng = Rng(77);
    let data = rng.bytes(70000); // four full stripes and a partial one
    let (attr, fh) = fs
        .create_open(b, b"victim", node(Kind::File), true)
        .unwrap();
    let ino = attr.ino;
    fs.write(ino, 0, &data[..40000]).unwrap();
    fs.fsync(ino).unwrap();
    // stripes 0 and 1 full, stripe 2 partial: its generation is superseded below
    let early = r.shard_files(ino);
    assert_eq!(early.len(), 3 * MEMBERS);
    // the tail is only buffered when the name goes away
    fs.write(ino, 40000, &data[40000..]).unwrap();
    fs.setxattr(ino, b"user.note", b"v", false, false).unwrap();
    let reader = fs.open(ino, false).unwrap();

    let before = r.shard_files(ino);
    assert!(!before.is_empty());
    for (mi, rel, at, len) in &before {
        assert!(!shard_gone(&r.disks[*mi], rel, *at, *len), "shard written");
    }

    fs.unlink(b, b"victim").unwrap();
    fs.meta.sync().unwrap();
    assert_eq!(errno(fs.lookup(b, b"victim")), libc::ENOENT);
    assert_eq!(fs.getattr(ino).unwrap().nlink, 0);
    assert!(fs.meta.get(&orphan_key(ino)).unwrap().is_some());
    assert!(fs.read(ino, 0, 70000).unwrap() == data);
    assert!(fs.read(ino, 16380, 10).unwrap() == data[16380..16390]);
    assert_eq!(fs.getxattr(ino, b"user.note").unwrap(), b"v");
    // writes through the open handle still work
    fs.write(ino, 69990, b"0123456789").unwrap();
    let mut data = data;
    data[69990..].copy_from_slice(b"0123456789");
    assert!(fs.read(ino, 0, 80000).unwrap() == data);
    // close(2) of the writer: flush, then release; the reader keeps it open
    fs.flush_handle(fh).unwrap();
    fs.release(fh).unwrap();
    fs.meta.sync().unwrap();
    assert!(fs.read(ino, 0, 70000).unwrap() == data, "one handle left");
    let all = r.shard_files(ino);
    assert_eq!(all.len(), 5 * MEMBERS, "every stripe written by now");
    for (mi, rel, at, len) in &all {
        assert!(
            !shard_gone(&r.disks[*mi], rel, *at, *len),
            "kept while open"
        );
    }

    fs.release(reader).unwrap();
    fs.meta.sync().unwrap();
    assert_eq!(errno(fs.getattr(ino)), libc::ENOENT);
    assert_eq!(errno(fs.read(ino, 0, 10)), libc::ENOENT);
    assert_eq!(errno(fs.open(ino, false)), libc::ENOENT);
    assert!(fs.stripes(ino).unwrap().is_empty());
    assert!(fs.meta.get(&orphan_key(ino)).unwrap().is_none());
    assert!(fs.meta.get(&inline_key(ino)).unwrap().is_none());
    let xp = xattr_prefix(ino);
    assert!(fs.meta.range(&xp, &prefix_end(&xp), 10).unwrap().is_empty());
    let sp = stripe_prefix(ino);
    assert!(fs.meta.range(&sp, &prefix_end(&sp), 10).unwrap().is_empty());
    assert!(fs.pool.settle_removals(std::time::Duration::from_secs(10)));
    for (mi, rel, at, len) in all.iter().chain(&before).chain(&early) {
        assert!(
            shard_gone(&r.disks[*mi], rel, *at, *len),
            "shard left behind: {rel}@{at}"
        );
    }
    assert!(
        fs.pool.list_all_shards().is_empty(),
        "no shard of anything is left"
    );
    assert_eq!(errno(fs.release(reader)), libc::EBADF);
}

/// A small overwrite of a committed stripe is written as a patch (one
/// record of the new bytes, m+1 = 3 copies on distinct members of the
/// stripe; the shards are not touched), not a new generation; it reads
/// back exactly, also with any two members lost; a fold rewrites the
/// stripe whole, drops the patches, and the patch logs are deleted once
/// nothing references them.
#[test]
fn small_overwrites_become_patches_that_survive_two_lost_members_and_fold_away() {
    let r = rig();
    let b = r.bucket("bkt");
    let mut rng = Rng(7);
    let mut model = rng.bytes(3 * STRIPE as usize + 1000);
    let ino = r.put_file(b, "f", &model);
    let before: Vec<_> = r.fs.stripes(ino).unwrap();
    let fh = r.fs.open(ino, true).unwrap();
    // 100 bytes inside stripe 1, data shard 2; 40 bytes across stripes 0/1
    for (off, len) in [
        (STRIPE as usize + 2 * SHARD as usize + 50, 100),
        (STRIPE as usize - 20, 40),
    ] {
        let new = rng.bytes(len);
        model[off..off + len].copy_from_slice(&new);
        r.fs.write(ino, off as u64, &new).unwrap();
    }
    r.fs.fsync(ino).unwrap();
    let after: Vec<_> = r.fs.stripes(ino).unwrap();
    assert_eq!(before.len(), after.len());
    for ((s, old), (_, new)) in before.iter().zip(&after) {
        // same generation and members: no stripe was rewritten
        assert_eq!(
            (old.generation, &old.members),
            (new.generation, &new.members),
            "stripe {s}"
        );
    }
    // stripes 0 and 1: one patch each, in 3 copies on 3 distinct members
    // that hold shards of the stripe
    for (s, loc) in &after[..2] {
        assert_eq!(loc.patch_count(), 1, "stripe {s}");
        let mut on: Vec<u16> = loc.patches.iter().map(|p| p.member).collect();
        on.sort();
        on.dedup();
        assert_eq!(on.len(), 3, "stripe {s}: copies on {on:?}");
        assert!(on.iter().all(|m| loc.members.contains(m)), "stripe {s}");
    }
    assert!(after[2].1.patches.is_empty());
    assert_eq!(r.fs.pool.stats.patches.load(Ordering::Relaxed), 2);
    // the shards themselves still verify as the old codeword
    for (s, loc) in &after {
        for (i, v) in r.fs.pool.verify_stripe(ino, *s, loc).iter().enumerate() {
            assert!(v.is_ok(), "stripe {s} shard {i}: {v:?}");
        }
        assert!(r.fs.pool.verify_patches(ino, *s, loc).is_empty());
    }
    check_read(&r.fs, ino, &model, 0, model.len() as u32, 0);
    // any two members lost: decoded from the shards, with a surviving
    // copy of each patch over them
    for a in 0..MEMBERS {
        for c in a + 1..MEMBERS {
            r.fail(&[a, c], true);
            check_read(&r.fs, ino, &model, 0, model.len() as u32, a * 10 + c);
            check_read(&r.fs, ino, &model, STRIPE - 30, 200, a * 10 + c);
            r.fail(&[a, c], false);
            for i in [a, c] {
                r.fs.pool
                    .member(i as u16)
                    .set_health(shardfs::pool::Health::Online);
            }
        }
    }
    // a second patch over the first, then fold
    let new = rng.bytes(10);
    let off = STRIPE as usize + 2 * SHARD as usize + 60;
    model[off..off + 10].copy_from_slice(&new);
    r.fs.write(ino, off as u64, &new).unwrap();
    r.fs.release(fh).unwrap();
    r.fs.sync_all().unwrap();
    assert_eq!(r.fs.stripes(ino).unwrap()[1].1.patch_count(), 2);
    let logs: usize = r.fs.pool.patch_log_counts().iter().map(|c| c.1).sum();
    assert!(logs > 0, "patch logs hold the records");
    assert_eq!(r.fs.fold_idle(std::time::Duration::ZERO, 100), 2);
    r.fs.sync_all().unwrap();
    for (s, loc) in r.fs.stripes(ino).unwrap() {
        assert!(loc.patches.is_empty(), "stripe {s} still patched");
    }
    check_read(&r.fs, ino, &model, 0, model.len() as u32, 99);
    // what the logs still hold are the shards of the folded stripes
    let refs: u64 = r.fs.pool.patch_log_counts().iter().map(|c| c.2).sum();
    let shards = r.fs.stripes(ino).unwrap().len() as u64 * MEMBERS as u64;
    assert_eq!(refs, shards, "no patch referenced after the fold");
}

/// A patch copy that no longer verifies (a flipped byte in its log) is
/// read around: m of the m+1 copies damaged, the bytes still read back
/// from the last; a scrub pass reports both and folds the stripe, so its
/// bytes have m+1 good sources again.
#[test]
fn damaged_patch_copies_are_read_around_and_scrub_folds_the_stripe() {
    let r = rig();
    let b = r.bucket("bkt");
    let mut rng = Rng(8);
    let mut model = rng.bytes(2 * STRIPE as usize);
    let ino = r.put_file(b, "f", &model);
    let new = rng.bytes(300);
    model[5000..5300].copy_from_slice(&new);
    let fh = r.fs.open(ino, true).unwrap();
    r.fs.write(ino, 5000, &new).unwrap();
    r.fs.release(fh).unwrap();
    r.fs.sync_all().unwrap();
    let loc = r.fs.stripes(ino).unwrap()[0].1.clone();
    assert_eq!(loc.patch_count(), 1);
    assert_eq!(loc.patches.len(), 3);
    for p in &loc.patches[..2] {
        let rel = format!("patches/{:08x}", p.log);
        let d = &r.disks[p.member as usize];
        let at = p.offset + p.len as u64 - 1;
        let mut byte = d.read_range(&rel, at, 1).unwrap();
        byte[0] ^= 0x40;
        d.write_at(&rel, at, &[&byte]).unwrap();
    }
    r.fs.pool.forget_cached_patches();
    check_read(&r.fs, ino, &model, 0, model.len() as u32, 0);
    check_read(&r.fs, ino, &model, 4990, 400, 1);
    assert_eq!(r.fs.pool.verify_patches(ino, 0, &loc).len(), 2);
    let task = shardfs::fs::Task::default();
    r.fs.scrub_pass(&task).unwrap();
    let after = r.fs.stripes(ino).unwrap()[0].1.clone();
    assert!(after.patches.is_empty(), "scrub folded the stripe");
    assert_ne!(after.generation, loc.generation);
    assert!(task.progress.lock().unwrap().shards >= 2);
    r.fs.sync_all().unwrap();
    r.fs.pool.forget_cached_patches();
    check_read(&r.fs, ino, &model, 0, model.len() as u32, 2);
}

/// Folds run without the filesystem lock: folds of a patched stripe
/// racing small overwrites and whole-stripe writes of it (in every
/// interleaving the threads happen to take) never commit stale
/// bytes; the file always reads as the writes made it.
#[test]
fn folds_racing_writes_never_commit_stale_bytes() {
    let r = Arc::new(rig());
    let b = r.bucket("bkt");
    let mut rng = Rng(9);
    let mut model = rng.bytes(3 * STRIPE as usize);
    let ino = r.put_file(b, "f", &model);
    let fh = r.fs.open(ino, true).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let folder = {
        let (r, stop) = (r.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut folds = 0;
            while !stop.load(Ordering::Relaxed) {
                for s in 0..3 {
                    if r.fs.fold_stripe(ino, s).unwrap_or(false) {
                        folds += 1;
                    }
                }
            }
            folds
        })
    };
    for round in 0..300 {
        let (off, len) = match round % 5 {
            4 => (STRIPE as usize, STRIPE as usize), // stripe 1 whole
            _ => (
                rng.below(model.len() as u64 - 300) as usize,
                1 + rng.below(299) as usize,
            ),
        };
        let new = rng.bytes(len);
        model[off..off + len].copy_from_slice(&new);
        r.fs.write(ino, off as u64, &new).unwrap();
        if round % 3 == 0 {
            r.fs.fsync(ino).unwrap();
        }
        if round % 50 == 49 {
            check_read(&r.fs, ino, &model, 0, model.len() as u32, round);
        }
    }
    r.fs.fsync(ino).unwrap();
    stop.store(true, Ordering::Relaxed);
    let folds = folder.join().unwrap();
    check_read(&r.fs, ino, &model, 0, model.len() as u32, 1000);
    r.fs.release(fh).unwrap();
    r.fs.sync_all().unwrap();
    r.fs.pool.forget_cached_patches();
    check_read(&r.fs, ino, &model, 0, model.len() as u32, 1001);
    assert!(folds > 0, "no fold happened");
}

/// A pool written by format version 1 (stripe locations without patch
/// lists, version 1 superblocks) mounts with this build, reads back, takes
/// patches, and has its superblocks upgraded to version 2 at mount (so a
/// build that knows only version 1 refuses it rather than misreading
/// patched stripes).
#[test]
fn a_format_version_1_pool_mounts_reads_takes_patches_and_is_upgraded() {
    #[derive(serde::Serialize)]
    struct LocV1 {
        generation: u64,
        len: u32,
        members: Vec<u16>,
    }
    let ids: Vec<String> = (0..MEMBERS).map(|_| new_id()).collect();
    let mut sb = superblock(&ids);
    sb.format_version = 1;
    let disks: Vec<Arc<MemDisk>> = (0..MEMBERS).map(|_| Arc::default()).collect();
    let store = Arc::new(MemStore::default());
    let mount = |sb: &Superblock| {
        let members: Vec<Member> = disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Member::new(
                    i as u16,
                    ids[i].clone(),
                    format!("mem{i}"),
                    Some(d.clone() as Arc<dyn DiskBackend>),
                )
            })
            .collect();
        let pool = Arc::new(Pool::new(sb.clone(), members).expect("pool"));
        let p2 = pool.clone();
        let meta = MetaCache::new(store.clone(), Box::new(move || p2.sync_pending()));
        Fs::mount(pool, meta).expect("mount")
    };
    // the old pool: a file, its stripe map rewritten in the version 1 encoding
    let mut rng = Rng(11);
    let mut model = rng.bytes(2 * STRIPE as usize + 300);
    let ino = {
        let fs = mount(&sb);
        let r = Rig {
            fs,
            disks: disks.clone(),
        };
        r.fs.pool.write_shard_files(true);
        let b = r.bucket("old");
        let ino = r.put_file(b, "f", &model);
        let ops: Vec<shardfs::meta::Op> =
            r.fs.stripes(ino)
                .unwrap()
                .into_iter()
                .map(|(s, loc)| {
                    let v1 = LocV1 {
                        generation: loc.generation,
                        len: loc.len,
                        members: loc.members,
                    };
                    shardfs::meta::Op::Put(
                        shardfs::fs::schema::stripe_key(ino, s),
                        bincode::serialize(&v1).unwrap(),
                    )
                })
                .collect();
        r.fs.meta.apply(ops, vec![]).unwrap();
        r.fs.unmount_sync().unwrap();
        ino
    };
    for (i, d) in disks.iter().enumerate() {
        sb.member_id = ids[i].clone();
        sb.member_index = i as u16;
        d.write_file(shardfs::pool::SUPERBLOCK_FILE, &[&sb.encode()])
            .unwrap();
    }
    sb.member_id = ids[0].clone();
    sb.member_index = 0;
    // mounted by this build
    let fs = mount(&sb);
    for d in &disks {
        let now =
            Superblock::decode(&d.read_file(shardfs::pool::SUPERBLOCK_FILE).unwrap()).unwrap();
        assert_eq!(
            now.format_version, FORMAT_VERSION,
            "superblock upgraded at mount"
        );
    }
    check_read(&fs, ino, &model, 0, model.len() as u32, 0);
    let fh = fs.open(ino, true).unwrap();
    let new = rng.bytes(50);
    model[STRIPE as usize + 10..STRIPE as usize + 60].copy_from_slice(&new);
    fs.write(ino, STRIPE + 10, &new).unwrap();
    fs.fsync(ino).unwrap();
    fs.release(fh).unwrap();
    assert!(
        !fs.stripes(ino).unwrap()[1].1.patches.is_empty(),
        "patched, not rewritten"
    );
    check_read(&fs, ino, &model, 0, model.len() as u32, 1);
}

/// Issue 13 (format 3): a pool written by format version 2 (every shard a
/// file of its own, stripe locations without shard places, version 2
/// superblocks, a patched stripe) mounts with this build, reads back
/// (patch included), takes new writes as log records, and frees its old
/// shard files as their stripes are rewritten or deleted.
#[test]
fn a_format_version_2_pool_of_shard_files_mounts_reads_rewrites_into_logs_and_frees_its_files() {
    #[derive(serde::Serialize)]
    struct LocV2 {
        generation: u64,
        len: u32,
        members: Vec<u16>,
        patches: Vec<shardfs::pool::PatchRef>,
    }
    let ids: Vec<String> = (0..MEMBERS).map(|_| new_id()).collect();
    let mut sb = superblock(&ids);
    sb.format_version = 2;
    let disks: Vec<Arc<MemDisk>> = (0..MEMBERS).map(|_| Arc::default()).collect();
    let store = Arc::new(MemStore::default());
    let mount = |sb: &Superblock| {
        let members: Vec<Member> = disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Member::new(
                    i as u16,
                    ids[i].clone(),
                    format!("mem{i}"),
                    Some(d.clone() as Arc<dyn DiskBackend>),
                )
            })
            .collect();
        let pool = Arc::new(Pool::new(sb.clone(), members).expect("pool"));
        let p2 = pool.clone();
        let meta = MetaCache::new(store.clone(), Box::new(move || p2.sync_pending()));
        Fs::mount(pool, meta).expect("mount")
    };
    // the old pool: a file, its stripe map rewritten in the version 1 encoding
    let mut rng = Rng(11);
    let mut model = rng.bytes(2 * STRIPE as usize + 300);
    let ino = {
        let fs = mount(&sb);
        let r = Rig {
            fs,
            disks: disks.clone(),
        };
        r.fs.pool.write_shard_files(true);
        let b = r.bucket("old");
        let ino = r.put_file(b, "f", &model);
        // a small overwrite: a patch, in a version 2 patch log
        let fh = r.fs.open(ino, true).unwrap();
        let new = rng.bytes(30);
        model[100..130].copy_from_slice(&new);
        r.fs.write(ino, 100, &new).unwrap();
        r.fs.fsync(ino).unwrap();
        r.fs.release(fh).unwrap();
        let ops: Vec<shardfs::meta::Op> =
            r.fs.stripes(ino)
                .unwrap()
                .into_iter()
                .map(|(s, loc)| {
                    assert!(loc.places.iter().all(|p| p.is_file()), "{loc:?}");
                    let v1 = LocV2 {
                        generation: loc.generation,
                        len: loc.len,
                        members: loc.members,
                        patches: loc.patches,
                    };
                    shardfs::meta::Op::Put(
                        shardfs::fs::schema::stripe_key(ino, s),
                        bincode::serialize(&v1).unwrap(),
                    )
                })
                .collect();
        r.fs.meta.apply(ops, vec![]).unwrap();
        r.fs.unmount_sync().unwrap();
        ino
    };
    for (i, d) in disks.iter().enumerate() {
        sb.member_id = ids[i].clone();
        sb.member_index = i as u16;
        d.write_file(shardfs::pool::SUPERBLOCK_FILE, &[&sb.encode()])
            .unwrap();
    }
    sb.member_id = ids[0].clone();
    sb.member_index = 0;
    // mounted by this build
    let fs = mount(&sb);
    for d in &disks {
        let now =
            Superblock::decode(&d.read_file(shardfs::pool::SUPERBLOCK_FILE).unwrap()).unwrap();
        assert_eq!(
            now.format_version, FORMAT_VERSION,
            "superblock upgraded at mount"
        );
    }
    check_read(&fs, ino, &model, 0, model.len() as u32, 0);
    assert!(
        !fs.stripes(ino).unwrap()[0].1.patches.is_empty(),
        "the old patch"
    );
    let old_files = fs.pool.list_all_shards();
    assert_eq!(old_files.len(), 3 * MEMBERS, "three stripes of shard files");
    // a whole-stripe rewrite goes to the logs and frees the stripe's files
    let fh = fs.open(ino, true).unwrap();
    let new = rng.bytes(STRIPE as usize);
    model[..STRIPE as usize].copy_from_slice(&new);
    fs.write(ino, 0, &new).unwrap();
    fs.fsync(ino).unwrap();
    fs.release(fh).unwrap();
    fs.meta.sync().unwrap();
    let (_, loc0) = fs.stripes(ino).unwrap().remove(0);
    assert!(loc0.places.iter().all(|p| !p.is_file()), "{loc0:?}");
    assert!(fs.pool.settle_removals(std::time::Duration::from_secs(10)));
    assert_eq!(fs.pool.list_all_shards().len(), 2 * MEMBERS);
    check_read(&fs, ino, &model, 0, model.len() as u32, 1);
    // and the stripes left as files still read, degraded too
    disks[0].fail.store(true, Ordering::Relaxed);
    disks[3].fail.store(true, Ordering::Relaxed);
    fs.pool.forget_cached_patches();
    check_read(&fs, ino, &model, 0, model.len() as u32, 2);
    disks[0].fail.store(false, Ordering::Relaxed);
    disks[3].fail.store(false, Ordering::Relaxed);
    // deleting the file frees the rest
    let b = fs
        .lookup(shardfs::fs::schema::ROOT_INO, b"old")
        .unwrap()
        .ino;
    fs.unlink(b, b"f").unwrap();
    fs.meta.sync().unwrap();
    assert!(fs.pool.settle_removals(std::time::Duration::from_secs(10)));
    assert!(
        fs.pool.list_all_shards().is_empty(),
        "every shard file freed"
    );
}

/// Issue 14: a stripe record that decodes but does not fit the pool (a
/// member index past the member count, too few shards, more bytes than a
/// stripe) answers a `Corrupt` error (EIO), never an index panic; the
/// file's other stripes still read.
#[test]
fn corrupt_stripe_locations_answer_eio_not_a_panic() {
    let r = rig();
    let b = r.bucket("bkt");
    let data = Rng(7).bytes(4 * STRIPE as usize);
    let ino = r.put_file(b, "f", &data);
    let stripes = r.fs.stripes(ino).unwrap();
    let mut bad_member = stripes[0].1.clone();
    bad_member.members[0] = MEMBERS as u16 + 3;
    let mut short = stripes[1].1.clone();
    short.members.truncate(2);
    let mut long = stripes[2].1.clone();
    long.len = STRIPE as u32 + 1;
    let ops = [(0, bad_member), (1, short), (2, long)]
        .into_iter()
        .map(|(s, l)| {
            shardfs::meta::Op::Put(
                shardfs::fs::schema::stripe_key(ino, s),
                shardfs::fs::schema::enc(&l),
            )
        })
        .collect();
    r.fs.meta.apply(ops, vec![]).unwrap();
    for s in 0..3u64 {
        let e =
            r.fs.read(ino, s * STRIPE, 4096)
                .expect_err("a corrupt stripe record must not read");
        assert_eq!(e.errno(), libc::EIO, "stripe {s}: {e}");
        assert!(e.to_string().contains("stripe location"), "stripe {s}: {e}");
    }
    let off = 3 * STRIPE as usize;
    assert_eq!(
        r.fs.read(ino, off as u64, 4096).unwrap(),
        data[off..off + 4096]
    );
}
