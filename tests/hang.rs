//! A member that stops answering (no error, no reply: a dying drive, a
//! stuck USB or network disk) must not stop the pool: reads and writes of
//! other files go on, each call to it ends at its deadline, and the member
//! is marked suspect, then failed, by the errors its timeouts and full
//! queue count. The hang is a disk behind the member seam that blocks
//! every call until released.

use shardfs::fs::{Fs, Kind, NewNode, ROOT_INO};
use shardfs::meta::{MemStore, MetaCache};
use shardfs::pool::{
    new_id, DiskBackend, Health, MemDisk, Member, Pool, Superblock, FORMAT_VERSION,
};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A disk that, while `hung`, blocks every call until released.
#[derive(Debug, Default)]
struct HangDisk {
    inner: MemDisk,
    hung: AtomicBool,
    gate: Mutex<()>,
    released: Condvar,
}

impl HangDisk {
    fn wait(&self) {
        let mut g = self.gate.lock().unwrap();
        while self.hung.load(Ordering::SeqCst) {
            g = self.released.wait(g).unwrap();
        }
    }

    fn hang(&self, on: bool) {
        let _g = self.gate.lock().unwrap();
        self.hung.store(on, Ordering::SeqCst);
        self.released.notify_all();
    }
}

impl DiskBackend for HangDisk {
    fn describe(&self) -> String {
        "hang".into()
    }
    fn local_root(&self) -> Option<&Path> {
        None
    }
    fn write_file(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        self.wait();
        self.inner.write_file(rel, parts)
    }
    fn write_at(&self, rel: &str, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        self.wait();
        self.inner.write_at(rel, offset, parts)
    }
    fn write_atomic(&self, rel: &str, data: &[u8]) -> io::Result<()> {
        self.wait();
        self.inner.write_atomic(rel, data)
    }
    fn read_file(&self, rel: &str) -> io::Result<Vec<u8>> {
        self.wait();
        self.inner.read_file(rel)
    }
    fn read_range(&self, rel: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.wait();
        self.inner.read_range(rel, offset, len)
    }
    fn remove_file(&self, rel: &str) -> io::Result<()> {
        self.wait();
        self.inner.remove_file(rel)
    }
    fn punch_hole(&self, rel: &str, offset: u64, len: u64) -> io::Result<()> {
        self.wait();
        self.inner.punch_hole(rel, offset, len)
    }
    fn list_dir(&self, rel: &str) -> io::Result<Vec<String>> {
        self.wait();
        self.inner.list_dir(rel)
    }
    fn create_dir_all(&self, rel: &str) -> io::Result<()> {
        self.wait();
        self.inner.create_dir_all(rel)
    }
    fn sync_file(&self, rel: &str) -> io::Result<()> {
        self.wait();
        self.inner.sync_file(rel)
    }
    fn sync_dir(&self, rel: &str) -> io::Result<()> {
        self.wait();
        self.inner.sync_dir(rel)
    }
    fn capacity(&self) -> io::Result<(u64, u64)> {
        self.wait();
        self.inner.capacity()
    }
    fn sync_fs(&self) -> io::Result<()> {
        self.wait();
        self.inner.sync_fs()
    }
    fn fs_id(&self) -> Option<u64> {
        None
    }
}

const SHARD: u32 = 64 * 1024;
const STRIPE: usize = 4 * SHARD as usize;
const DEADLINE: Duration = Duration::from_millis(300);

fn node(kind: Kind) -> NewNode {
    NewNode {
        kind,
        perm: 0o644,
        uid: 0,
        gid: 0,
        rdev: 0,
        target: Vec::new(),
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed as u32) as u8
        })
        .collect()
}

/// Write `data` as `name` in `dir`, close it (durable) and return its inode.
fn put(fs: &Fs, dir: u64, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = fs
        .create_open(dir, name.as_bytes(), node(Kind::File), true)
        .expect("create");
    for (i, c) in data.chunks(128 * 1024).enumerate() {
        fs.write(attr.ino, (i * 128 * 1024) as u64, c)
            .expect("write");
    }
    fs.flush_handle(fh).expect("close is durable");
    fs.release(fh).expect("release");
    attr.ino
}

#[test]
fn a_member_that_stops_answering_fails_out_within_its_deadline_and_the_rest_goes_on() {
    // a pool that waits on the hung member forever fails the test instead
    // of hanging it
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(180));
        eprintln!("the pool is still waiting on the hung member after 180 s");
        std::process::exit(1);
    });
    let ids: Vec<String> = (0..6).map(|_| new_id()).collect();
    let sb = Superblock {
        magic: "shardfs".into(),
        format_version: FORMAT_VERSION,
        pool_id: new_id(),
        member_id: ids[0].clone(),
        member_index: 0,
        members: ids.clone(),
        k: 4,
        m: 2,
        shard_size: SHARD,
        inline_max: 4096,
        meta_replicas: vec![0, 1, 2],
        created: 0,
        domains: Vec::new(),
        meta_epoch: 0,
        classes: Vec::new(),
    };
    let disks: Vec<Arc<HangDisk>> = (0..6).map(|_| Arc::default()).collect();
    let members: Vec<Member> = disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Member::new(
                i as u16,
                ids[i].clone(),
                format!("d{i}"),
                Some(d.clone() as Arc<dyn DiskBackend>),
            )
        })
        .collect();
    let pool = Arc::new(Pool::new(sb, members).expect("pool"));
    pool.set_io_timeout(DEADLINE);
    let p2 = pool.clone();
    let meta = MetaCache::new(
        Arc::new(MemStore::default()),
        Box::new(move || p2.sync_pending()),
    );
    let fs = Fs::mount(pool.clone(), meta).expect("mount");
    let b = fs
        .create_node(ROOT_INO, b"bkt", node(Kind::Dir))
        .expect("bucket")
        .ino;
    let old_a = pattern(1, 3 * STRIPE + 999);
    let old_b = pattern(2, 2 * STRIPE);
    let a = put(&fs, b, "a", &old_a);
    let bb = put(&fs, b, "b", &old_b);

    // member 4 (no metadata replica) stops answering
    disks[4].hang(true);
    let t0 = Instant::now();
    // old files read back whole (from parity where member 4 holds data)
    assert_eq!(
        fs.read(a, 0, old_a.len() as u32 + 1).expect("read a"),
        old_a
    );
    // new files are written and made durable
    let new_c = pattern(3, 3 * STRIPE + 5);
    let c = put(&fs, b, "c", &new_c);
    let new_d = pattern(4, 100_000);
    let d = put(&fs, b, "d", &new_d);
    // a small overwrite of an old file
    let fh = fs.open(bb, true).expect("open b");
    fs.write(bb, 10, b"patched while a member hangs")
        .expect("overwrite");
    fs.fsync(bb).expect("fsync b");
    fs.release(fh).expect("close b");
    let mut want_b = old_b.clone();
    want_b[10..10 + 28].copy_from_slice(b"patched while a member hangs");
    assert_eq!(fs.read(bb, 0, want_b.len() as u32).expect("read b"), want_b);
    assert_eq!(fs.read(c, 0, new_c.len() as u32).expect("read c"), new_c);
    assert_eq!(fs.read(d, 0, new_d.len() as u32).expect("read d"), new_d);
    let took = t0.elapsed();
    // every call to the hung member ended at its deadline: a handful of
    // deadlines in all, not one per request, and nothing waited forever
    assert!(
        took < DEADLINE * 40,
        "the pool stalled behind the hung member for {took:?}"
    );
    // the health probe and the errors take it out of service
    let until = Instant::now() + DEADLINE * 60;
    while pool.member(4).health() == Health::Online && Instant::now() < until {
        let _ = fs.probe_members();
    }
    let h = pool.member(4).health();
    assert!(
        matches!(h, Health::Suspect | Health::Failed),
        "member 4 is still {h:?}"
    );
    while pool.member(4).health() != Health::Failed && Instant::now() < until {
        let _ = fs.probe_members();
    }
    assert_eq!(
        pool.member(4).health(),
        Health::Failed,
        "within {:?}",
        DEADLINE * 60
    );
    // once failed nothing is sent to it: new writes do not wait at all
    let t1 = Instant::now();
    let e = pattern(5, 2 * STRIPE);
    let ei = put(&fs, b, "e", &e);
    assert_eq!(fs.read(ei, 0, e.len() as u32).expect("read e"), e);
    assert!(
        t1.elapsed() < DEADLINE * 3,
        "wrote around a failed member in {:?}",
        t1.elapsed()
    );
    // the member answers again: the probe brings it back
    disks[4].hang(false);
    let until = Instant::now() + Duration::from_secs(20);
    while pool.member(4).health() != Health::Online && Instant::now() < until {
        let _ = fs.probe_members();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pool.member(4).health(), Health::Online);
    assert_eq!(fs.read(a, 0, old_a.len() as u32).expect("read a"), old_a);
}
