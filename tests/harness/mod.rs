//! Conformance harness: the real filesystem (below FUSE, through the same
//! `Fs` methods the FUSE glue calls, over crash-simulating member disks and
//! metadata) and the reference model (`shardfs::model`) driven by the same
//! operations, compared after every step.
//!
//! Where the kernel stands between a program and the FUSE glue, the
//! executor does what the kernel does, using only the real filesystem's
//! answers: it resolves paths with `lookup` (never following symlinks),
//! refuses to open directories (EISDIR) and symlinks (ELOOP, as with
//! O_NOFOLLOW), returns EEXIST for O_EXCL and mkdir on an existing name
//! (the kernel's lookup comes first), EBADF for writes on read-only
//! handles, and sends O_TRUNC as a truncate before the open.
#![allow(dead_code)]

use proptest::prelude::*;
use shardfs::crash::{crash_all, CrashClock, CrashDisk, CrashMeta, Unsynced};
use shardfs::fs::{Fs, FsError, Kind, NewNode, SetAttr, ROOT_INO};
use shardfs::meta::MetaCache;
use shardfs::model::{content_allowed, Body, Model};
use shardfs::pool::{Member, Pool, Superblock, FORMAT_VERSION};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Eight members for a 4+2 code: with a member taken out and one more
/// unhealthy, six remain for full-width writes and repair.
pub const MEMBERS: usize = 8;
pub const K: usize = 4;
pub const M: usize = 2;
pub const SHARD: u32 = 2048;
pub const STRIPE: u64 = K as u64 * SHARD as u64;
pub const INLINE: u64 = 1536;

/// Names the generator uses: valid and invalid buckets, short names, one
/// over NAME_MAX.
pub fn names() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "bkt",
        "bucket-two",
        "a",
        "b",
        "c.txt",
        "dir1",
        "bkt",
        "a",
        "b",
        "dir1",
        "e",
        "f",
        "Bad_Bucket",
        "10.0.0.1",
        "a..b",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push(vec![b'n'; 256]);
    v
}

const XATTRS: [&[u8]; 7] = [
    b"user.a",
    b"user.b",
    b"user.a",
    b"user.b",
    b"user.a",
    b"trusted.x",
    b"user.",
];

/// A member disk pool, metadata store and (when mounted) filesystem on one
/// simulated machine.
pub struct Rig {
    pub clock: Arc<CrashClock>,
    pub disks: Vec<Arc<CrashDisk>>,
    pub meta: Arc<CrashMeta>,
    sb: Superblock,
    pub fs: Option<Fs>,
    /// Read policy, kept across remounts.
    pub policy: shardfs::pool::ReadPolicy,
}

impl Rig {
    /// A fresh pool of [`MEMBERS`] members, mounted: half "ssd", half
    /// "hdd" (classes matter only once a tier policy is set).
    pub fn new() -> Rig {
        let classes = (0..MEMBERS)
            .map(|i| if i < MEMBERS / 2 { "ssd" } else { "hdd" }.to_string())
            .collect();
        Rig::with_classes(MEMBERS, classes)
    }

    /// A fresh pool of `n` members, mounted.
    pub fn with_members(n: usize) -> Rig {
        Rig::with_classes(n, Vec::new())
    }

    /// A fresh pool of `n` members of the given device classes, mounted.
    pub fn with_classes(n: usize, classes: Vec<String>) -> Rig {
        let clock = CrashClock::new();
        // fixed ids: placement is seeded from the pool id, so a sequence
        // replays the same way
        let ids: Vec<String> = (0..n).map(|i| format!("{:032x}", i + 1)).collect();
        let sb = Superblock {
            magic: "shardfs".into(),
            format_version: FORMAT_VERSION,
            pool_id: format!("{:032x}", 0xfeed),
            member_id: ids[0].clone(),
            member_index: 0,
            members: ids,
            k: K as u8,
            m: M as u8,
            shard_size: SHARD,
            inline_max: INLINE as u32,
            meta_replicas: vec![0, 1, 2],
            created: 0,
            domains: Vec::new(),
            meta_epoch: 0,
            classes,
        };
        let mut rig = Rig {
            disks: (0..n).map(|_| CrashDisk::new(clock.clone())).collect(),
            meta: CrashMeta::new(clock.clone()),
            clock,
            sb,
            fs: None,
            policy: shardfs::pool::ReadPolicy::Heat,
        };
        // superblocks, as mkfs writes them (the member probe reads them)
        for (i, d) in rig.disks.iter().enumerate() {
            let mut sb = rig.sb.clone();
            sb.member_id = rig.sb.members[i].clone();
            sb.member_index = i as u16;
            d.view()
                .write_atomic(shardfs::pool::SUPERBLOCK_FILE, &sb.encode())
                .expect("superblock");
        }
        rig.mount().expect("first mount");
        rig
    }

    /// Mount over fresh views of the disks and the metadata.
    pub fn mount(&mut self) -> Result<(), FsError> {
        assert!(self.fs.is_none(), "already mounted");
        let members = self
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Member::new(
                    i as u16,
                    self.sb.members[i].clone(),
                    format!("sim{i}"),
                    Some(d.view()),
                )
            })
            .collect();
        let pool = Arc::new(Pool::new(self.sb.clone(), members).expect("pool"));
        pool.set_read_policy(self.policy);
        let p2 = pool.clone();
        let meta = MetaCache::new(self.meta.view(), Box::new(move || p2.sync_pending()));
        self.fs = Some(Fs::mount(pool, meta)?);
        Ok(())
    }

    pub fn fs(&self) -> &Fs {
        self.fs.as_ref().expect("mounted")
    }

    /// Clean unmount (the caller released every handle first).
    pub fn unmount(&mut self) -> Result<(), FsError> {
        let fs = self.fs.take().expect("mounted");
        fs.unmount_sync()
    }

    /// Power cut: everything not synced is treated as `policy` says; the
    /// mount is dropped without flushing anything.
    pub fn crash(&mut self, policy: Unsynced) {
        crash_all(&self.clock, &self.disks, &self.meta, policy);
        self.fs = None;
    }

    /// `disk add`: a new empty member joins the running pool.
    pub fn add_member(&mut self) -> Result<usize, String> {
        let n = self.disks.len();
        let d = CrashDisk::new(self.clock.clone());
        let i = self
            .fs()
            .pool
            .add_member(d.view(), format!("sim{n}"), None, None)
            .map_err(|e| e.to_string())?;
        assert_eq!(i as usize, n, "a new member takes the next index");
        self.sb
            .members
            .push(self.fs().pool.member(i).id().to_string());
        self.disks.push(d);
        Ok(n)
    }

    /// Set or clear the injected failure of member `i`.
    pub fn fail(&self, i: usize, on: bool) {
        self.disks[i].fail.store(on, Ordering::SeqCst);
    }
}

/// A bucket `bkt` holding `n` files `f<i>` of `len(i)` pattern bytes,
/// written and closed: (inode, bytes) of each.
pub fn bucket_of_files(fs: &Fs, n: usize, len: impl Fn(usize) -> usize) -> Vec<(u64, Vec<u8>)> {
    let b = fs
        .create_node(ROOT_INO, b"bkt", new_node(Kind::Dir, 0o755, b""))
        .expect("mkdir bkt")
        .ino;
    (0..n)
        .map(|i| {
            let data = pattern(i as u8 + 1, 0, len(i));
            let (a, fh) = fs
                .create_open(
                    b,
                    format!("f{i}").as_bytes(),
                    new_node(Kind::File, 0o644, b""),
                    true,
                )
                .expect("create");
            fs.write(a.ino, 0, &data).expect("write");
            fs.flush_handle(fh).expect("flush");
            fs.release(fh).expect("release");
            (a.ino, data)
        })
        .collect()
}

/// A maintenance task without a rate limit (tests run passes at full speed).
pub fn unlimited() -> shardfs::fs::Task {
    let t = shardfs::fs::Task::default();
    t.rate_limit.store(0, Ordering::Relaxed);
    t
}

/// Inode of `path`, resolved with lookups from the root.
pub fn resolve(fs: &Fs, path: &[u8]) -> Result<u64, i32> {
    let mut ino = ROOT_INO;
    for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        ino = fs.lookup(ino, c).map_err(|e| e.errno())?.ino;
    }
    Ok(ino)
}

/// (parent inode, name) of `path`.
pub fn parent_of<'a>(fs: &Fs, path: &'a [u8]) -> Result<(u64, &'a [u8]), i32> {
    let cut = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
    let (dir, name) = (&path[..cut], &path[cut + 1..]);
    let p = resolve(fs, dir)?;
    if fs.getattr(p).map_err(|e| e.errno())?.kind != Kind::Dir {
        return Err(libc::ENOTDIR);
    }
    if name.len() > 255 {
        return Err(libc::ENAMETOOLONG);
    }
    Ok((p, name))
}

pub fn new_node(kind: Kind, perm: u16, target: &[u8]) -> NewNode {
    NewNode {
        kind,
        perm,
        uid: 0,
        gid: 0,
        rdev: 0,
        target: target.to_vec(),
    }
}

/// Deterministic bytes for a write: never zero, so holes are told apart.
pub fn pattern(seed: u8, off: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = (seed as u64)
                .wrapping_mul(0x9e37_79b9)
                .wrapping_add((off + i).wrapping_mul(2_654_435_761) >> 7);
            1 + (x % 255) as u8
        })
        .collect()
}

// ---------------------------------------------------------------- ops

/// Which path an operation targets, resolved against the model when run
/// (so shrinking keeps sequences meaningful).
#[derive(Debug, Clone, Copy)]
pub enum Pick {
    /// The i-th existing path (modulo their number).
    Existing(u16),
    /// Name `n` of [`names`] in the d-th existing directory (or the root).
    New(u16, u8),
    /// A fixed path (hand-written regression tests only).
    Path(&'static str),
}

/// An offset or size: near a boundary, or anywhere in a few stripes.
#[derive(Debug, Clone, Copy)]
pub struct Num(pub u8, pub i16);

impl Num {
    pub fn value(self) -> u64 {
        let anchors = [
            0,
            INLINE,
            SHARD as u64,
            STRIPE,
            STRIPE + SHARD as u64,
            2 * STRIPE,
            3 * STRIPE,
            (STRIPE * 7) / 3,
        ];
        let a = anchors[self.0 as usize % anchors.len()];
        (a as i64 + self.1 as i64).max(0) as u64
    }
}

/// One step of a sequence.
#[derive(Debug, Clone)]
pub enum Op {
    Mkdir(Pick),
    Create(Pick, bool),
    Open(Pick, bool, bool),
    Write(u8, Num, Num, u8),
    Read(u8, Num, Num),
    Close(u8),
    Fsync(u8),
    Truncate(Pick, Num),
    Rename(Pick, Pick, bool),
    /// renameat2 with RENAME_EXCHANGE of two names.
    Exchange(Pick, Pick),
    Link(Pick, Pick),
    Unlink(Pick),
    Rmdir(Pick),
    Symlink(Pick),
    Chmod(Pick, u16),
    SetXattr(Pick, u8, u16, u8),
    GetXattr(Pick, u8),
    RemoveXattr(Pick, u8),
    SyncAll,
    /// Lose member i (at most one at a time, at most m ever bad).
    Lose(u8),
    /// Bring the lost member back.
    Return,
    /// Flip one bit of one shard file or patch log.
    Flip(u16, u16),
    /// Read everything with m members failed (exact), then m+1 (exact or EIO).
    DegradedRead(u8),
    /// Clean unmount and mount.
    Remount,
    /// Power cut and mount.
    Crash(u64),
    /// A repair pass (afterwards nothing may need repair).
    Repair,
    /// A scrub pass (afterwards nothing may need repair, and every flipped
    /// bit is gone).
    Scrub,
    /// `shardctl disk fail`: take member i out for good.
    FailMember(u8),
    /// `shardctl disk drain`: move everything off member i.
    Drain(u8),
    /// `shardctl disk add`: a new empty member joins (at most 2 per run).
    AddMember,
    /// A rebalance pass (moves shards onto members holding less).
    Rebalance,
    /// Fold every patched stripe (rewrite it whole; patch logs emptied).
    Fold,
    /// Switch reads to the naive policy (true) or heat-aware, hedged (false).
    NaiveReads(bool),
    /// A tier pass forcing every object hot (true) or cold (false); the
    /// first one sets the pool policy (hot on "ssd", cold on "hdd").
    Retier(bool),
    /// Make member i slow (reads take 0, 2 or 4 ms more): heat-aware
    /// reads route around it and hedges fire.
    Slow(u8, u8),
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        6 => any::<u16>().prop_map(Pick::Existing),
        1 => (any::<u16>(), any::<u8>()).prop_map(|(d, n)| Pick::New(d, n)),
    ]
}

fn new_pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        1 => any::<u16>().prop_map(Pick::Existing),
        5 => (any::<u16>(), any::<u8>()).prop_map(|(d, n)| Pick::New(d, n)),
    ]
}

fn num() -> impl Strategy<Value = Num> {
    prop_oneof![
        3 => (any::<u8>(), -3i16..=3).prop_map(|(a, d)| Num(a, d)),
        2 => (any::<u8>(), -64i16..=64).prop_map(|(a, d)| Num(a, d)),
        1 => (any::<u8>(), 0i16..=i16::MAX).prop_map(|(a, d)| Num(a, d % (3 * STRIPE as i16))),
    ]
}

/// A length: mostly small, sometimes a stripe or more.
fn len() -> impl Strategy<Value = Num> {
    prop_oneof![
        3 => (1i16..=300).prop_map(|d| Num(0, d)),
        2 => num(),
    ]
}

/// Operations of the namespace and data; `faults` adds fault and
/// lifecycle operations.
pub fn op(faults: bool) -> BoxedStrategy<Op> {
    let base = prop_oneof![
        3 => new_pick().prop_map(Op::Mkdir),
        6 => (new_pick(), any::<bool>()).prop_map(|(p, e)| Op::Create(p, e)),
        3 => (pick(), any::<bool>(), prop::bool::weighted(0.2)).prop_map(|(p, w, t)| Op::Open(p, w, t)),
        14 => (any::<u8>(), num(), len(), any::<u8>()).prop_map(|(h, o, l, s)| Op::Write(h, o, l, s)),
        5 => (any::<u8>(), num(), len()).prop_map(|(h, o, l)| Op::Read(h, o, l)),
        3 => any::<u8>().prop_map(Op::Close),
        2 => any::<u8>().prop_map(Op::Fsync),
        2 => (pick(), num()).prop_map(|(p, n)| Op::Truncate(p, n)),
        3 => (pick(), new_pick(), prop::bool::weighted(0.2)).prop_map(|(a, b, n)| Op::Rename(a, b, n)),
        1 => (pick(), pick()).prop_map(|(a, b)| Op::Exchange(a, b)),
        2 => (pick(), new_pick()).prop_map(|(a, b)| Op::Link(a, b)),
        2 => pick().prop_map(Op::Unlink),
        1 => pick().prop_map(Op::Rmdir),
        1 => new_pick().prop_map(Op::Symlink),
        1 => (pick(), any::<u16>()).prop_map(|(p, m)| Op::Chmod(p, m)),
        3 => (pick(), any::<u8>(), any::<u16>(), any::<u8>()).prop_map(|(p, n, s, f)| Op::SetXattr(p, n, s, f)),
        2 => (pick(), any::<u8>()).prop_map(|(p, n)| Op::GetXattr(p, n)),
        2 => (pick(), any::<u8>()).prop_map(|(p, n)| Op::RemoveXattr(p, n)),
        1 => Just(Op::SyncAll),
    ];
    if !faults {
        return base.boxed();
    }
    prop_oneof![
        100 => base,
        2 => any::<u8>().prop_map(Op::Lose),
        1 => Just(Op::Return),
        3 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::Flip(a, b)),
        2 => any::<u8>().prop_map(Op::DegradedRead),
        1 => Just(Op::Remount),
        2 => any::<u64>().prop_map(Op::Crash),
        2 => Just(Op::Repair),
        2 => Just(Op::Scrub),
        1 => any::<u8>().prop_map(Op::FailMember),
        1 => any::<u8>().prop_map(Op::Drain),
        1 => Just(Op::AddMember),
        2 => Just(Op::Rebalance),
        2 => Just(Op::Fold),
        1 => any::<bool>().prop_map(Op::NaiveReads),
        2 => any::<bool>().prop_map(Op::Retier),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(i, s)| Op::Slow(i, s)),
    ]
    .boxed()
}

// ---------------------------------------------------------------- observing

/// What a program can see of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub kind: char,
    pub perm: u32,
    pub nlink: u32,
    pub size: u64,
    pub target: Vec<u8>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// First path (in order) of the same inode: hard links share it.
    pub link: String,
}

/// Whole tree: path -> what is seen, plus file contents by path.
pub type View = (BTreeMap<Vec<u8>, Seen>, BTreeMap<Vec<u8>, Vec<u8>>);

fn kind_char(k: Kind) -> char {
    match k {
        Kind::Dir => 'd',
        Kind::File => 'f',
        Kind::Symlink => 'l',
        _ => '?',
    }
}

/// The model's tree as seen by a program, and each path's inode.
pub fn view_model(m: &Model) -> (View, BTreeMap<Vec<u8>, u64>) {
    let mut seen = BTreeMap::new();
    let mut data = BTreeMap::new();
    let mut first: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut inos = BTreeMap::new();
    for (path, ino) in m.paths() {
        let n = &m.tree[&ino];
        let link = show(first.entry(ino).or_insert_with(|| path.clone()));
        let (kind, size, target) = match &n.body {
            Body::Dir(_) => ('d', 0, Vec::new()),
            Body::File(d) => {
                data.insert(path.clone(), d.clone());
                ('f', d.len() as u64, Vec::new())
            }
            Body::Symlink(t) => ('l', t.len() as u64, t.clone()),
        };
        inos.insert(path.clone(), ino);
        seen.insert(
            path,
            Seen {
                kind,
                perm: n.perm,
                nlink: n.nlink,
                size,
                target,
                xattrs: n.xattrs.clone(),
                link,
            },
        );
    }
    ((seen, data), inos)
}

/// The real tree as seen through the filesystem's methods. `Err` is the
/// errno of the first failing call (a read under too many faults).
pub fn view_real(fs: &Fs) -> Result<View, (Vec<u8>, i32)> {
    let mut seen = BTreeMap::new();
    let mut data = BTreeMap::new();
    let mut first: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut inos: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut stack = vec![(Vec::new(), ROOT_INO)];
    while let Some((dir_path, dir)) = stack.pop() {
        let e = |err: FsError| (dir_path.clone(), err.errno());
        let mut entries = Vec::new();
        let mut off = 0;
        loop {
            let batch = fs.readdir(dir, off, 64).map_err(e)?;
            let Some(last) = batch.last() else { break };
            off = last.1;
            entries.extend(batch);
        }
        for (ino, _, kind, name) in entries {
            if name == b"." || name == b".." {
                continue;
            }
            let mut path = dir_path.clone();
            path.push(b'/');
            path.extend_from_slice(&name);
            let e = |err: FsError| (path.clone(), err.errno());
            let a = fs.getattr(ino).map_err(e)?;
            assert_eq!(a.kind, kind, "{path:?}: readdir kind differs from getattr");
            inos.insert(path.clone(), ino);
            let link = String::new(); // set below, once every path is known
            let mut xattrs = BTreeMap::new();
            for x in fs.listxattr(ino).map_err(e)?.split(|&b| b == 0) {
                if !x.is_empty() {
                    xattrs.insert(x.to_vec(), fs.getxattr(ino, x).map_err(e)?);
                }
            }
            let mut target = Vec::new();
            match a.kind {
                Kind::Dir => stack.push((path.clone(), ino)),
                Kind::File => {
                    let d = fs.read(ino, 0, a.size as u32 + 1).map_err(e)?;
                    assert_eq!(d.len() as u64, a.size, "{path:?}: read length != size");
                    data.insert(path.clone(), d);
                }
                Kind::Symlink => target = fs.readlink(ino).map_err(e)?,
                _ => {}
            }
            seen.insert(
                path,
                Seen {
                    kind: kind_char(a.kind),
                    perm: a.perm as u32 & 0o7777,
                    nlink: a.nlink,
                    size: if a.kind == Kind::Dir { 0 } else { a.size },
                    target,
                    xattrs,
                    link,
                },
            );
        }
    }
    // hard links: every path names the first path of its inode
    for (path, ino) in &inos {
        let link = show(first.entry(*ino).or_insert_with(|| path.clone()));
        if let Some(s) = seen.get_mut(path) {
            s.link = link;
        }
    }
    Ok((seen, data))
}

/// Short printable form of a path.
pub fn show(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p);
    if s.len() > 40 {
        format!("{}…({} bytes)", &s[..40], s.len())
    } else {
        s.into_owned()
    }
}

/// First difference between two views, if any.
pub fn diff(want: &View, got: &View) -> Option<String> {
    let paths: BTreeSet<&Vec<u8>> = want.0.keys().chain(got.0.keys()).collect();
    for p in paths {
        match (want.0.get(p), got.0.get(p)) {
            (Some(a), Some(b)) if a != b => {
                return Some(format!("{}: model {a:?}, real {b:?}", show(p)))
            }
            (Some(_), None) => return Some(format!("{}: in the model only", show(p))),
            (None, Some(_)) => return Some(format!("{}: in the filesystem only", show(p))),
            _ => {}
        }
        if let (Some(a), Some(b)) = (want.1.get(p), got.1.get(p)) {
            if a != b {
                let at = a.iter().zip(b).position(|(x, y)| x != y);
                return Some(format!(
                    "{}: contents differ ({} vs {} bytes, first difference at {at:?})",
                    show(p),
                    a.len(),
                    b.len()
                ));
            }
        }
    }
    None
}

// ---------------------------------------------------------------- running

/// Result of one operation, on either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Done,
    Bytes(Vec<u8>),
    Count(usize),
    Skipped,
}

pub type R = Result<Out, i32>;

/// A result without the bytes, for logs.
fn brief(r: &R) -> String {
    match r {
        Ok(Out::Bytes(b)) => format!("Ok({} bytes)", b.len()),
        other => format!("{other:?}"),
    }
}

fn done<T>(r: Result<T, i32>) -> R {
    r.map(|_| Out::Done)
}

fn real<T>(r: Result<T, FsError>) -> Result<T, i32> {
    r.map_err(|e| e.errno())
}

/// The model and the filesystem side by side.
pub struct Pair {
    pub s: Session,
    pub rig: Rig,
    /// The member currently failed, if any.
    lost: Option<usize>,
    /// Members ever failed or corrupted: their shards may be missing or
    /// bad until repair exists (issue 4), so at most m of them.
    bad: BTreeSet<usize>,
    /// Members an admin failed or drained (they stay unwritable); at most one.
    admin: BTreeSet<usize>,
    /// Progress and rate of repair and scrub passes.
    pub task: shardfs::fs::Task,
    /// Members added so far.
    added: usize,
    /// Steps run.
    pub steps: usize,
    /// Log of the steps, for failure reports.
    pub log: Vec<String>,
    /// Per operation kind: (ok, error, skipped).
    pub tally: BTreeMap<String, (u64, u64, u64)>,
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

impl Pair {
    /// A pair holding two buckets and a directory, as users start.
    pub fn new() -> Pair {
        let mut p = Pair::empty();
        for path in [&b"/bkt"[..], b"/bucket-two", b"/bkt/dir1"] {
            p.s.model.mkdir(path, 0o755).expect("model setup");
            let fs = p.rig.fs();
            let (d, n) = parent_of(fs, path).expect("setup parent");
            fs.create_node(d, n, new_node(Kind::Dir, 0o755, b""))
                .expect("setup mkdir");
        }
        p.compare();
        p
    }

    /// A pair over an empty filesystem.
    pub fn empty() -> Pair {
        Pair {
            s: Session::new(Model::new()),
            rig: Rig::new(),
            lost: None,
            bad: BTreeSet::new(),
            admin: BTreeSet::new(),
            task: unlimited(),
            added: 0,
            steps: 0,
            log: Vec::new(),
            tally: BTreeMap::new(),
        }
    }

    /// Run one operation on both sides and compare.
    pub fn step(&mut self, op: &Op) {
        self.steps += 1;
        let desc = format!("{op:?}");
        let hedges = |p: &Pair| {
            p.rig
                .fs
                .as_ref()
                .map(|f| f.pool.stats.hedges.load(Ordering::Relaxed))
                .unwrap_or(0)
        };
        let before = hedges(self);
        let (want, got) = self.run(op);
        if hedges(self) > before {
            self.tally.entry("Hedged".into()).or_default().0 += 1;
        }
        self.log.push(format!("{desc} -> {}", brief(&want)));
        let kind = desc.split('(').next().unwrap_or("").to_string();
        let e = self.tally.entry(kind).or_default();
        match &want {
            Ok(Out::Skipped) => e.2 += 1,
            Ok(_) => e.0 += 1,
            Err(_) => e.1 += 1,
        }
        if want != got {
            self.fail(&format!(
                "result differs: model {}, filesystem {}",
                brief(&want),
                brief(&got)
            ));
        }
        self.compare();
    }

    fn fail(&self, why: &str) -> ! {
        let tail: Vec<&String> = self.log.iter().rev().take(12).collect();
        panic!(
            "step {}: {why}\nlast steps (newest first):\n  {}",
            self.steps,
            tail.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }

    /// Compare the whole tree with the model.
    pub fn compare(&self) {
        let (want, _) = view_model(&self.s.model);
        match view_real(self.rig.fs()) {
            Ok(got) => {
                if let Some(d) = diff(&want, &got) {
                    self.fail(&format!("tree differs: {d}"));
                }
            }
            Err((p, e)) => self.fail(&format!(
                "reading the tree failed at {} with errno {e} (bad members {:?})",
                show(&p),
                self.bad
            )),
        }
    }

    /// Run one operation on both sides without comparing.
    pub fn run(&mut self, op: &Op) -> (R, R) {
        match *op {
            Op::Lose(i) => {
                let i = i as usize % self.rig.disks.len();
                if self.lost.is_some() || !self.budget(i) {
                    return (Ok(Out::Skipped), Ok(Out::Skipped));
                }
                self.rig.fail(i, true);
                self.lost = Some(i);
                self.bad.insert(i);
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::Return => {
                if let Some(i) = self.lost.take() {
                    self.rig.fail(i, false);
                    self.probe();
                }
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::Repair => {
                self.quiesce();
                // a pass commits pending metadata first
                self.s.model.sync_metadata();
                // as the daemon's loop does: passes until nothing is left
                // (a pass can find more: reads of a failing member flag
                // its shards, or make it fail)
                let mut left = 0;
                for _ in 0..4 {
                    match self.rig.fs().repair_pass(&self.task) {
                        Ok(n) => left = n,
                        Err(e) => self.fail(&format!("repair: {e}")),
                    }
                    if left == 0 {
                        break;
                    }
                }
                if left > 0 && self.all_healthy() {
                    self.fail(&format!("{left} stripes still need repair after 4 passes"));
                }
                if left == 0 {
                    self.after_full_repair();
                }
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::Scrub => {
                self.quiesce();
                self.s.model.sync_metadata();
                if let Err(e) = self.rig.fs().scrub_pass(&self.task) {
                    self.fail(&format!("scrub: {e}"));
                }
                for _ in 0..3 {
                    match self.rig.fs().repair_pass(&self.task) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => self.fail(&format!("repair: {e}")),
                    }
                }
                match self.rig.fs().repair_plan() {
                    Ok(p) if p.is_empty() => {
                        // every shard was read and verified, and the bad
                        // ones rebuilt: only the lost member is still bad
                        self.bad = self.lost.into_iter().collect();
                        self.after_full_repair();
                    }
                    // with a member lost or unwritable there may be no
                    // member left to take a rebuilt shard
                    Ok(p) if !self.all_healthy() => {
                        let _ = p;
                    }
                    Ok(p) => self.fail(&format!("{} stripes need repair after a scrub", p.len())),
                    Err(e) => self.fail(&format!("repair plan: {e}")),
                }
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::AddMember => {
                if self.added >= 2 {
                    return (Ok(Out::Skipped), Ok(Out::Skipped));
                }
                if let Err(e) = self.rig.add_member() {
                    if self.rig.clock.stopped() {
                        return (Ok(Out::Done), Err(libc::EIO)); // cut short
                    }
                    self.fail(&format!("disk add: {e}"));
                }
                self.added += 1;
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::NaiveReads(naive) => {
                let p = if naive {
                    shardfs::pool::ReadPolicy::Naive
                } else {
                    shardfs::pool::ReadPolicy::Heat
                };
                self.rig.policy = p;
                self.rig.fs().pool.set_read_policy(p);
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::Retier(hot) => {
                self.quiesce();
                self.s.model.sync_metadata();
                let fs = self.rig.fs();
                let policy = shardfs::fs::TierPolicy {
                    hot_class: Some("ssd".into()),
                    cold_class: Some("hdd".into()),
                    ..Default::default()
                };
                if let Err(e) = fs.set_tier_policy(None, policy) {
                    if self.rig.clock.stopped() {
                        return (Ok(Out::Done), Err(libc::EIO));
                    }
                    self.fail(&format!("tier policy: {e}"));
                }
                let t = if hot {
                    shardfs::fs::Tier::Hot
                } else {
                    shardfs::fs::Tier::Cold
                };
                if let Err(e) = fs.tier_pass(&self.task, Some(t)) {
                    if self.rig.clock.stopped() {
                        return (Ok(Out::Done), Err(libc::EIO));
                    }
                    self.fail(&format!("tier pass: {e}"));
                }
                self.check_distinct_members("tier pass");
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::Slow(i, ms) => {
                let i = i as usize % self.rig.disks.len();
                self.rig.disks[i]
                    .slow_ms
                    .store([0, 2, 4][ms as usize % 3], Ordering::SeqCst);
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::Rebalance => {
                self.quiesce();
                self.s.model.sync_metadata();
                if let Err(e) = self.rig.fs().rebalance_pass(&self.task) {
                    if self.rig.clock.stopped() {
                        return (Ok(Out::Done), Err(libc::EIO)); // cut short
                    }
                    self.fail(&format!("rebalance: {e}"));
                }
                // and the heat rebalance (objects read so far are warm)
                if let Err(e) = self.rig.fs().heat_rebalance_pass(&self.task, 8) {
                    if self.rig.clock.stopped() {
                        return (Ok(Out::Done), Err(libc::EIO));
                    }
                    self.fail(&format!("heat rebalance: {e}"));
                }
                self.check_distinct_members("rebalance");
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::Fold => {
                self.quiesce();
                self.s.model.sync_metadata();
                self.rig
                    .fs()
                    .fold_idle(std::time::Duration::ZERO, usize::MAX);
                // (as the other background passes do, the namespace is
                // committed with it)
                let synced = self.rig.fs().meta.sync();
                if self.rig.clock.stopped() {
                    return (Ok(Out::Done), Err(libc::EIO)); // cut short
                }
                if let Err(e) = synced {
                    self.fail(&format!("fold: metadata sync: {e}"));
                }
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::FailMember(i) | Op::Drain(i) => {
                let i = i as usize % self.rig.disks.len();
                if !self.admin.is_empty() || !self.budget(i) {
                    return (Ok(Out::Skipped), Ok(Out::Skipped));
                }
                let h = if matches!(op, Op::FailMember(_)) {
                    shardfs::pool::Health::Failed
                } else {
                    shardfs::pool::Health::Draining
                };
                if let Err(e) = self.rig.fs().set_member_health(i as u16, h) {
                    self.fail(&format!("set member {i} {h:?}: {e}"));
                }
                self.admin.insert(i);
                self.bad.insert(i);
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::Flip(f, at) => {
                let mut shards = Vec::new();
                for (mi, d) in self.rig.disks.iter().enumerate() {
                    if Some(mi) == self.lost || !self.budget(mi) {
                        continue;
                    }
                    for (rel, len) in d.list() {
                        // shard files and patch logs (a flip in a dead
                        // record of a log changes nothing anyone reads)
                        if (rel.starts_with("shards/") || rel.starts_with("patches/")) && len > 0 {
                            shards.push((mi, rel, len));
                        }
                    }
                }
                if shards.is_empty() {
                    return (Ok(Out::Skipped), Ok(Out::Skipped));
                }
                let (mi, rel, len) = &shards[f as usize % shards.len()];
                let at = at as usize % len;
                // the durable copy may be shorter (a log appended to since
                // its last sync, or a file a background writer replaced)
                self.rig.disks[*mi].corrupt(rel, |v| {
                    if at < v.len() {
                        v[at] ^= 1 << (at % 8)
                    }
                });
                self.bad.insert(*mi);
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::DegradedRead(pick) => {
                self.degraded_read(pick);
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::Remount => {
                self.remount();
                (Ok(Out::Done), Ok(Out::Done))
            }
            Op::Crash(seed) => {
                self.crash(Unsynced::Mixed(seed));
                (Ok(Out::Done), Ok(Out::Done))
            }
            _ => {
                let fs = self.rig.fs.as_ref().expect("mounted");
                self.s.exec(fs, op)
            }
        }
    }

    /// Every stripe's shards sit on distinct members.
    fn check_distinct_members(&self, after: &str) {
        for (ino, locs) in self.all_stripes() {
            for (s, loc) in locs {
                let mut placed: Vec<u16> = loc
                    .members
                    .iter()
                    .copied()
                    .filter(|&m| m != shardfs::pool::NO_MEMBER)
                    .collect();
                placed.sort();
                let n = placed.len();
                placed.dedup();
                if placed.len() != n {
                    self.fail(&format!(
                        "inode {ino} stripe {s}: two shards on one member after {after}: {loc:?}"
                    ));
                }
            }
        }
    }

    /// May member `i` become bad? At most m bad members (reads stay exact),
    /// and at most m unwritable ones with the admin's (writes stay k+m wide).
    fn budget(&self, i: usize) -> bool {
        let mut b: BTreeSet<usize> = self.bad.union(&self.admin).copied().collect();
        b.insert(i);
        let mut bad = self.bad.clone();
        bad.insert(i);
        bad.len() <= M && b.len() <= M
    }

    /// No member lost, and every member an admin did not take out online.
    fn all_healthy(&self) -> bool {
        self.lost.is_none()
            && self.rig.fs().pool.members().iter().all(|m| {
                self.admin.contains(&(m.index as usize))
                    || m.health() == shardfs::pool::Health::Online
            })
    }

    /// What the daemon's periodic member probe does.
    fn probe(&self) {
        if let Err(e) = self.rig.fs().probe_members() {
            self.fail(&format!("member probe: {e}"));
        }
    }

    fn quiesce(&self) {
        if let Err(e) = self.rig.fs().quiesce() {
            self.fail(&format!("background writes failed: {e}"));
        }
    }

    /// After a pass left nothing to repair: an admin-failed or drained
    /// member holds no referenced shard any more, so it is no longer bad
    /// (it stays unwritable); a drained one is now removed.
    fn after_full_repair(&mut self) {
        let fs = self.rig.fs();
        for &i in &self.admin {
            let h = fs.pool.member(i as u16).health();
            use shardfs::pool::Health;
            if !matches!(h, Health::Failed | Health::Removed) {
                self.fail(&format!("member {i} is {h:?} after a full repair"));
            }
            for (ino, locs) in self.all_stripes() {
                for (s, loc) in locs {
                    if loc.members.contains(&(i as u16)) {
                        self.fail(&format!("inode {ino} stripe {s} still on member {i}"));
                    }
                }
            }
        }
        for i in self.admin.clone() {
            self.bad.remove(&i);
        }
    }

    /// Every file's stripe map.
    fn all_stripes(&self) -> Vec<(u64, Vec<(u64, shardfs::pool::StripeLoc)>)> {
        let fs = self.rig.fs();
        self.s
            .model
            .paths()
            .into_iter()
            .filter_map(|(p, _)| resolve(fs, &p).ok())
            .map(|ino| (ino, fs.stripes(ino).unwrap_or_default()))
            .collect()
    }

    /// Fail members so that m are bad, read everything (must be exact);
    /// then fail one more, read everything (exact or EIO); restore.
    fn degraded_read(&mut self, pick: u8) {
        // writes in flight would see the extra failures: let them land first
        if let Err(e) = self.rig.fs().quiesce() {
            self.fail(&format!(
                "background writes failed before the degraded read: {e}"
            ));
        }
        let mut failed = Vec::new();
        let mut extra: Vec<usize> = (0..self.rig.disks.len())
            .filter(|i| !self.bad.contains(i))
            .collect();
        let turn = pick as usize % extra.len().max(1);
        extra.rotate_left(turn);
        let mut bad = self.bad.clone();
        for &i in &extra {
            if bad.len() >= M {
                break;
            }
            bad.insert(i);
            failed.push(i);
        }
        // the bad members that are not lost are failed too: the worst case
        for &i in &bad {
            if Some(i) != self.lost {
                self.rig.fail(i, true);
            }
        }
        self.compare();
        // one more than m: reads may fail, never return wrong bytes
        if let Some(&more) = extra.get(failed.len()) {
            self.rig.fail(more, true);
            let (want, _) = view_model(&self.s.model);
            let fs = self.rig.fs();
            for (path, ino) in self.s.model.paths() {
                if !matches!(self.s.model.tree[&ino].body, Body::File(_)) {
                    continue;
                }
                let Ok(rino) = resolve(fs, &path) else {
                    self.fail(&format!("{} vanished with m+1 members failed", show(&path)));
                };
                match fs.read(rino, 0, u32::MAX / 2) {
                    Ok(d) if d == want.1[&path] => {}
                    Ok(d) => self.fail(&format!(
                        "{}: WRONG BYTES with m+1 members failed ({} bytes)",
                        show(&path),
                        d.len()
                    )),
                    Err(e) if e.errno() == libc::EIO => {}
                    Err(e) => self.fail(&format!("{}: {e} with m+1 failed", show(&path))),
                }
            }
            self.rig.fail(more, false);
        }
        for &i in &bad {
            if Some(i) != self.lost {
                self.rig.fail(i, false);
            }
        }
        self.probe();
    }

    /// Close every handle, unmount cleanly, mount again and compare.
    pub fn remount(&mut self) {
        for (m, r) in std::mem::take(&mut self.s.handles) {
            let fs = self.rig.fs();
            let want = self.s.model.close(m);
            let got = real(fs.flush_handle(r)).and(real(fs.release(r)));
            if want.is_ok() != got.is_ok() {
                self.fail(&format!("close at unmount: model {want:?}, real {got:?}"));
            }
        }
        self.s.model.unmount();
        if let Err(e) = self.rig.unmount() {
            self.fail(&format!("unmount: {e}"));
        }
        if let Err(e) = self.rig.mount() {
            self.fail(&format!("mount after a clean unmount: {e}"));
        }
        self.compare();
        self.check_no_leaks();
    }

    /// Every shard on a reachable member (a shard file, or a record in a
    /// log) belongs to a committed stripe.
    pub fn check_no_leaks(&self) {
        let fs = self.rig.fs();
        let mut referenced = BTreeSet::new();
        for (path, _) in self.s.model.paths() {
            let Ok(ino) = resolve(fs, &path) else {
                continue;
            };
            for (s, loc) in fs.stripes(ino).unwrap_or_default() {
                for (i, &mi) in loc.members.iter().enumerate() {
                    let (rel, at, _) = fs.pool.shard_at(ino, s, &loc, i);
                    referenced.insert((mi as usize, rel, at));
                }
            }
        }
        for (mi, d) in self.rig.disks.iter().enumerate() {
            if Some(mi) == self.lost {
                continue;
            }
            for (rel, at) in shard_records(d.as_ref()) {
                if !referenced.contains(&(mi, rel.clone(), at)) {
                    // deletions that failed while the member was away are
                    // swept at the next mount that is not clean
                    if !self.rig.fs().pool.garbage_left() && self.bad.is_empty() {
                        self.fail(&format!("leaked shard {rel} at {at} on member {mi}"));
                    }
                }
            }
        }
    }

    /// Power cut, mount, and check the result is a state the model allows.
    pub fn crash(&mut self, policy: Unsynced) {
        self.s.handles.clear();
        self.rig.crash(policy);
        if let Err(e) = self.rig.mount() {
            self.fail(&format!("mount after a crash: {e}"));
        }
        self.check_recovered();
    }

    /// After a crash: the tree must be one the model allows; adopt it.
    pub fn check_recovered(&mut self) {
        let m = self.s.model.clone();
        self.check_recovered_any(&[m]);
    }

    /// After a crash: the tree must be one that one of `models` allows
    /// (several when an operation was cut short: before and after it).
    pub fn check_recovered_any(&mut self, models: &[Model]) {
        let got = match view_real(self.rig.fs()) {
            Ok(v) => v,
            Err((p, e)) => self.fail(&format!("after crash, {} gave errno {e}", show(&p))),
        };
        let mut why = Vec::new();
        let mut chosen = None;
        for cand in models.iter().flat_map(|m| m.crash_candidates()) {
            let ((want, _), inos) = view_model(&cand);
            let mut ok = true;
            // everything but uncertain file contents must match exactly
            let mut w2 = want.clone();
            let mut g2 = got.0.clone();
            let mut recovered = BTreeMap::new();
            for (p, ino) in &inos {
                let node = &cand.tree[ino];
                if let Body::File(_) = node.body {
                    let Some(bytes) = got.1.get(p) else { continue };
                    if let Err(e) = content_allowed(node, bytes) {
                        why.push(format!("{}: {e}", show(p)));
                        ok = false;
                        break;
                    }
                    recovered.insert(*ino, bytes.clone());
                    // sizes are checked through the contents
                    if let Some(s) = w2.get_mut(p) {
                        s.size = 0;
                    }
                    if let Some(s) = g2.get_mut(p) {
                        s.size = 0;
                    }
                }
            }
            if ok {
                if let Some(d) = diff(&(w2, BTreeMap::new()), &(g2, BTreeMap::new())) {
                    why.push(d);
                    ok = false;
                }
            }
            if ok {
                chosen = Some((cand, recovered));
                break;
            }
        }
        match chosen {
            Some((cand, recovered)) => self.s.model.adopt_after_crash(cand, &recovered),
            None => self.fail(&format!(
                "the tree after a crash matches no state the model allows: {why:?}"
            )),
        }
        self.log.push("(recovered)".into());
        self.compare();
    }
}

/// One client's view: the model, its open handles (model fh, real fh),
/// and the directories it may touch (all when empty).
pub struct Session {
    pub model: Model,
    pub handles: Vec<(u64, u64)>,
    pub confine: Vec<Vec<u8>>,
}

impl Session {
    fn path(&self, p: Pick) -> Vec<u8> {
        let mut paths = self.model.paths();
        let names = names();
        // a confined session picks inside its directories only
        let mut dirs: Vec<Vec<u8>> = if self.confine.is_empty() {
            vec![Vec::new()] // the root once
        } else {
            self.confine.clone()
        };
        if !self.confine.is_empty() {
            paths.retain(|(p, _)| self.allowed(p));
        }
        match p {
            Pick::Path(p) => p.as_bytes().to_vec(),
            Pick::Existing(i) if !paths.is_empty() => paths[i as usize % paths.len()].0.clone(),
            Pick::Existing(i) => {
                let dir = dirs.first().cloned().unwrap_or_default();
                [dir.as_slice(), b"/", &names[i as usize % names.len()]].concat()
            }
            Pick::New(d, n) => {
                // every directory but the root three times
                for (p, ino) in &paths {
                    if matches!(self.model.tree[ino].body, Body::Dir(_)) {
                        dirs.extend([p.clone(), p.clone(), p.clone()]);
                    }
                }
                let dir = &dirs[d as usize % dirs.len()];
                [dir.as_slice(), b"/", &names[n as usize % names.len()]].concat()
            }
        }
    }

    fn handle(&self, h: u8) -> Option<(usize, u64, u64)> {
        if self.handles.is_empty() {
            return None;
        }
        let i = h as usize % self.handles.len();
        Some((i, self.handles[i].0, self.handles[i].1))
    }

    pub fn new(model: Model) -> Session {
        Session {
            model,
            handles: Vec::new(),
            confine: Vec::new(),
        }
    }

    /// True if `path` is inside the directories this session may touch.
    fn allowed(&self, path: &[u8]) -> bool {
        self.confine.is_empty()
            || self
                .confine
                .iter()
                .any(|c| path.starts_with(c) && path.len() > c.len() && path[c.len()] == b'/')
    }

    /// Run a namespace or data operation on both sides (fault and
    /// lifecycle operations are the [`Pair`]'s).
    pub fn exec(&mut self, fs: &Fs, op: &Op) -> (R, R) {
        if !self.confine.is_empty() {
            let picks: Vec<Pick> = match *op {
                Op::Mkdir(p) | Op::Create(p, _) | Op::Open(p, _, _) | Op::Truncate(p, _) => vec![p],
                Op::Unlink(p) | Op::Rmdir(p) | Op::Symlink(p) | Op::Chmod(p, _) => vec![p],
                Op::SetXattr(p, ..) | Op::GetXattr(p, _) | Op::RemoveXattr(p, _) => vec![p],
                Op::Rename(a, b, _) | Op::Exchange(a, b) | Op::Link(a, b) => vec![a, b],
                Op::SyncAll => return (Ok(Out::Skipped), Ok(Out::Skipped)),
                _ => vec![],
            };
            if !picks.iter().all(|&p| self.allowed(&self.path(p))) {
                return (Ok(Out::Skipped), Ok(Out::Skipped));
            }
        }
        match *op {
            Op::Mkdir(p) => {
                let path = self.path(p);
                let want = done(self.model.mkdir(&path, 0o755));
                let got = parent_of(fs, &path).and_then(|(d, n)| {
                    if fs.lookup(d, n).is_ok() {
                        return Err(libc::EEXIST);
                    }
                    done(real(fs.create_node(d, n, new_node(Kind::Dir, 0o755, b""))))
                });
                (want, got)
            }
            Op::Symlink(p) => {
                let path = self.path(p);
                let target = b"some/target";
                let want = done(self.model.symlink(&path, target));
                let got = parent_of(fs, &path).and_then(|(d, n)| {
                    if fs.lookup(d, n).is_ok() {
                        return Err(libc::EEXIST);
                    }
                    done(real(fs.create_node(
                        d,
                        n,
                        new_node(Kind::Symlink, 0o777, target),
                    )))
                });
                (want, got)
            }
            Op::Create(p, excl) => {
                let path = self.path(p);
                let want = self.model.create(&path, excl, 0o644);
                let got = parent_of(fs, &path).and_then(|(d, n)| match fs.lookup(d, n) {
                    Ok(_) if excl => Err(libc::EEXIST),
                    Ok(a) => open_real(fs, a.ino, true, false),
                    Err(_) => real(fs.create_open(d, n, new_node(Kind::File, 0o644, b""), true))
                        .map(|(_, fh)| fh),
                });
                self.pair_handles(fs, want, got)
            }
            Op::Open(p, w, t) => {
                let path = self.path(p);
                let want = self.model.open(&path, w, t);
                let got = resolve(fs, &path).and_then(|ino| open_real(fs, ino, w, t));
                self.pair_handles(fs, want, got)
            }
            Op::Write(h, off, n, seed) => {
                let Some((_, mfh, rfh)) = self.handle(h) else {
                    return (Ok(Out::Skipped), Ok(Out::Skipped));
                };
                let (off, n) = (off.value(), n.value().max(1) as usize);
                let data = pattern(seed, off, n);
                let want = self.model.write(mfh, off, &data).map(Out::Count);
                let got = real(fs.handle(rfh)).and_then(|(ino, writable)| {
                    if !writable {
                        return Err(libc::EBADF);
                    }
                    real(fs.write(ino, off, &data)).map(|n| Out::Count(n as usize))
                });
                (want, got)
            }
            Op::Read(h, off, n) => {
                let Some((_, mfh, rfh)) = self.handle(h) else {
                    return (Ok(Out::Skipped), Ok(Out::Skipped));
                };
                let (off, n) = (off.value(), n.value() as usize);
                let want = self.model.read(mfh, off, n).map(Out::Bytes);
                let got = real(fs.handle(rfh))
                    .and_then(|(ino, _)| real(fs.read(ino, off, n as u32)).map(Out::Bytes));
                (want, got)
            }
            Op::Close(h) => {
                let Some((i, mfh, rfh)) = self.handle(h) else {
                    return (Ok(Out::Skipped), Ok(Out::Skipped));
                };
                self.handles.remove(i);
                let want = done(self.model.close(mfh));
                // the kernel sends flush, then release; close reports flush's error
                let flushed = real(fs.flush_handle(rfh));
                let released = real(fs.release(rfh));
                (want, done(flushed.and(released)))
            }
            Op::Fsync(h) => {
                let Some((_, mfh, rfh)) = self.handle(h) else {
                    return (Ok(Out::Skipped), Ok(Out::Skipped));
                };
                let want = done(self.model.fsync(mfh));
                let got = real(fs.handle(rfh)).and_then(|(ino, _)| done(real(fs.fsync(ino))));
                (want, got)
            }
            Op::Truncate(p, size) => {
                let path = self.path(p);
                let size = size.value();
                let want = done(self.model.truncate(&path, size));
                let got = resolve(fs, &path).and_then(|ino| {
                    if fs.getattr(ino).map_err(|e| e.errno())?.kind == Kind::Symlink {
                        return Err(libc::ELOOP);
                    }
                    let s = SetAttr {
                        size: Some(size),
                        ..Default::default()
                    };
                    done(real(fs.setattr(ino, s)))
                });
                (want, got)
            }
            Op::Chmod(p, mode) => {
                let path = self.path(p);
                let mode = mode as u32 & 0o7777;
                let want = done(self.model.chmod(&path, mode));
                let got = resolve(fs, &path).and_then(|ino| {
                    let s = SetAttr {
                        mode: Some(mode),
                        ..Default::default()
                    };
                    done(real(fs.setattr(ino, s)))
                });
                (want, got)
            }
            Op::Rename(a, b, noreplace) => {
                let (from, to) = (self.path(a), self.path(b));
                let want = done(self.model.rename(&from, &to, noreplace));
                let got = parent_of(fs, &from).and_then(|(sp, sn)| {
                    let (dp, dn) = parent_of(fs, &to)?;
                    done(real(fs.rename(sp, sn, dp, dn, noreplace)))
                });
                (want, got)
            }
            Op::Exchange(a, b) => {
                let (from, to) = (self.path(a), self.path(b));
                let want = done(self.model.exchange(&from, &to));
                let got = parent_of(fs, &from).and_then(|(sp, sn)| {
                    let (dp, dn) = parent_of(fs, &to)?;
                    done(real(fs.rename_exchange(sp, sn, dp, dn)))
                });
                (want, got)
            }
            Op::Link(a, b) => {
                let (from, to) = (self.path(a), self.path(b));
                let want = done(self.model.link(&from, &to));
                let got = resolve(fs, &from).and_then(|ino| {
                    let (dp, dn) = parent_of(fs, &to)?;
                    if fs.lookup(dp, dn).is_ok() {
                        return Err(libc::EEXIST);
                    }
                    done(real(fs.link(ino, dp, dn)))
                });
                (want, got)
            }
            Op::Unlink(p) => {
                let path = self.path(p);
                let want = done(self.model.unlink(&path));
                let got = parent_of(fs, &path).and_then(|(d, n)| done(real(fs.unlink(d, n))));
                (want, got)
            }
            Op::Rmdir(p) => {
                let path = self.path(p);
                let want = done(self.model.rmdir(&path));
                let got = parent_of(fs, &path).and_then(|(d, n)| done(real(fs.rmdir(d, n))));
                (want, got)
            }
            Op::SetXattr(p, n, size, flags) => {
                let path = self.path(p);
                let name = XATTRS[n as usize % XATTRS.len()];
                let value = pattern(n, 0, size as usize % 300);
                let (create, replace) = (flags % 3 == 1, flags % 3 == 2);
                let want = done(self.model.setxattr(&path, name, &value, create, replace));
                let got = resolve(fs, &path)
                    .and_then(|ino| done(real(fs.setxattr(ino, name, &value, create, replace))));
                (want, got)
            }
            Op::GetXattr(p, n) => {
                let path = self.path(p);
                let name = XATTRS[n as usize % XATTRS.len()];
                let want = self.model.getxattr(&path, name).map(Out::Bytes);
                let got =
                    resolve(fs, &path).and_then(|ino| real(fs.getxattr(ino, name)).map(Out::Bytes));
                (want, got)
            }
            Op::RemoveXattr(p, n) => {
                let path = self.path(p);
                let name = XATTRS[n as usize % XATTRS.len()];
                let want = done(self.model.removexattr(&path, name));
                let got = resolve(fs, &path).and_then(|ino| done(real(fs.removexattr(ino, name))));
                (want, got)
            }
            Op::SyncAll => {
                self.model.sync_metadata();
                (
                    Ok(Out::Done),
                    done(real(fs.meta.sync().map_err(FsError::from))),
                )
            }
            _ => (Ok(Out::Skipped), Ok(Out::Skipped)),
        }
    }

    fn pair_handles(&mut self, fs: &Fs, want: Result<u64, i32>, got: Result<u64, i32>) -> (R, R) {
        match (&want, &got) {
            (Ok(m), Ok(r)) => self.handles.push((*m, *r)),
            (Ok(m), Err(_)) => {
                let _ = self.model.close(*m);
            }
            (Err(_), Ok(r)) => {
                let _ = fs.release(*r);
            }
            _ => {}
        }
        (want.map(|_| Out::Done), got.map(|_| Out::Done))
    }
}

fn open_real(fs: &Fs, ino: u64, writable: bool, trunc: bool) -> Result<u64, i32> {
    match real(fs.getattr(ino))?.kind {
        Kind::Dir => return Err(libc::EISDIR),
        Kind::Symlink => return Err(libc::ELOOP),
        _ => {}
    }
    if writable && trunc {
        let s = SetAttr {
            size: Some(0),
            ..Default::default()
        };
        real(fs.setattr(ino, s))?;
    }
    real(fs.open(ino, writable))
}

/// Run a whole sequence (panics with a report on the first difference).
pub fn run_sequence(ops: &[Op]) -> BTreeMap<String, (u64, u64, u64)> {
    let mut pair = Pair::new();
    for op in ops {
        pair.step(op);
    }
    // finally: a clean remount keeps everything
    pair.remount();
    pair.tally
}

/// [`run_sequence`] with the panic messages of failing runs kept quiet
/// (proptest reports the shrunk failure once, at the end).
pub fn run_quietly(ops: &[Op]) {
    quiet_panics();
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_SEQUENCE.with(|c| c.set(false));
        }
    }
    IN_SEQUENCE.with(|c| c.set(true));
    let _reset = Reset;
    run_sequence(ops);
}

thread_local! {
    static IN_SEQUENCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Proptest reports the failure and its shrunk case; the panics of every
/// shrinking step would drown it.
pub fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("SHARDFS_LOUD").is_none() {
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let msg = info
                    .payload()
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| info.payload().downcast_ref::<&str>().copied())
                    .unwrap_or("");
                // proptest's final report, or a panic outside a sequence
                if msg.contains("minimal failing input") || !IN_SEQUENCE.with(|c| c.get()) {
                    default(info);
                }
            }));
        }
    });
}

/// Does `ops` fail? (The panic message, if so.)
pub fn failure(ops: &[Op]) -> Option<String> {
    let r = std::panic::catch_unwind(|| run_quietly(ops));
    r.err().map(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Shrink a failing sequence by removing operations one at a time while
/// it still fails the same way (the first line of the message, without
/// the step number). Proptest's own shrinking is weak here: removing one
/// operation moves every later index-based pick.
pub fn minimize(mut ops: Vec<Op>) -> Vec<Op> {
    let key = |m: &str| {
        let first = m.lines().next().unwrap_or("");
        first
            .split_once(": ")
            .map(|x| x.1)
            .unwrap_or(first)
            .to_string()
    };
    let want = key(&failure(&ops).expect("the sequence fails"));
    let mut chunk = ops.len() / 2;
    while chunk >= 1 {
        let mut i = 0;
        while i < ops.len() {
            let mut shorter = ops.clone();
            shorter.drain(i..(i + chunk).min(ops.len()));
            match failure(&shorter) {
                Some(m) if key(&m) == want => ops = shorter,
                _ => i += chunk,
            }
        }
        chunk /= 2;
    }
    ops
}

/// The verified shards on a member disk, as (file, offset): shard files of
/// their own (`shards/`, offset 0) and records in the logs (`patches/`, at
/// 4 KiB boundaries).
pub fn shard_records(d: &CrashDisk) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (rel, _) in d.list() {
        let in_log = rel.starts_with("patches/");
        if !in_log && !rel.starts_with("shards/") {
            continue;
        }
        let Some(b) = d.contents(&rel) else {
            continue;
        };
        let mut at = 0usize;
        while at + shardfs::ec::HEADER_LEN <= b.len() {
            let len = shard_len_at(&b[at..]);
            if len.is_some() {
                out.push((rel.clone(), at as u64));
            }
            if !in_log {
                break;
            }
            at += len.map_or(4096, |l| l.next_multiple_of(4096));
        }
    }
    out
}

/// The length of the verified shard at the start of `b`, if one is there.
pub fn shard_len_at(b: &[u8]) -> Option<usize> {
    if b.len() < shardfs::ec::HEADER_LEN || &b[..8] != b"SHRDFS01" {
        return None;
    }
    let payload = u32::from_le_bytes(b[56..60].try_into().unwrap()) as usize;
    let len = shardfs::ec::header_len(payload) + payload;
    shardfs::ec::ShardHeader::open(b.get(..len)?).ok()?;
    Some(len)
}
