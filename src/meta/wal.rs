//! A write-ahead log in front of an LMDB replica.
//!
//! A commit appends one checksummed record to `wal` and fdatasyncs it: one
//! sync instead of LMDB's two page-and-meta syncs. Committed batches are
//! kept in an in-memory overlay and reach LMDB in checkpoints (one durable
//! LMDB transaction carrying the sequence of the last record it holds),
//! after which the log is emptied. Opening replays every intact record
//! whose sequence follows LMDB's into LMDB, so a crash loses nothing that a
//! commit acknowledged.
//!
//! Record: `magic u32 | payload length u32 | seq u64 | BLAKE3(seq ++ payload) [32] | payload`,
//! little endian; payload = bincode of the batch. Replay stops at the first
//! record that is torn, fails its checksum, or does not carry the next
//! sequence (a stale tail left by an emptied log).

use super::{merge_range, KvPairs, LmdbStore, MetaError, MetaStore, Op, Overlay};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

const MAGIC: u32 = 0x5357_414c; // "SWAL"
const HEADER: usize = 4 + 4 + 8 + 32;
/// Log file name inside the replica directory.
pub const WAL_FILE: &str = "wal";
/// The log file is zero-filled to this size up front, so appends overwrite
/// allocated blocks and fdatasync needs no journal commit for a size or
/// extent change. A checkpoint is taken before the log would outgrow it...
const LOG_BYTES: u64 = 8 << 20;
/// ...or the overlay holds this many keys...
const CHECKPOINT_KEYS: usize = 100_000;
/// ...or this long has passed since the last checkpoint.
const CHECKPOINT_AGE: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
enum RecOp {
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
}

struct Log {
    file: File,
    len: u64,
    seq: u64,
    last_checkpoint: Instant,
}

/// One metadata replica: LMDB plus its write-ahead log.
pub struct WalStore {
    lmdb: LmdbStore,
    dir: PathBuf,
    log: Mutex<Log>,
    overlay: RwLock<Overlay>,
}

impl std::fmt::Debug for WalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WalStore({})", self.dir.display())
    }
}

fn err(dir: &Path, e: impl std::fmt::Display) -> MetaError {
    MetaError::Store {
        store: dir.display().to_string(),
        msg: e.to_string(),
    }
}

fn checksum(seq: u64, payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    *h.finalize().as_bytes()
}

/// Encode one log record.
fn record(seq: u64, ops: &[Op]) -> Vec<u8> {
    let rec: Vec<RecOp> = ops
        .iter()
        .map(|o| match o {
            Op::Put(k, v) => RecOp::Put(k.clone(), v.clone()),
            Op::Del(k) => RecOp::Del(k.clone()),
        })
        .collect();
    let payload = bincode::serialize(&rec).expect("serialisable");
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&checksum(seq, &payload));
    out.extend_from_slice(&payload);
    out
}

/// Intact records of a log, in order, starting with sequence `first`.
fn parse(bytes: &[u8], first: u64) -> Vec<(u64, Vec<Op>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut want = None;
    while pos + HEADER <= bytes.len() {
        let h = &bytes[pos..pos + HEADER];
        if u32::from_le_bytes(h[0..4].try_into().unwrap()) != MAGIC {
            break;
        }
        let len = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
        let seq = u64::from_le_bytes(h[8..16].try_into().unwrap());
        let Some(payload) = bytes.get(pos + HEADER..pos + HEADER + len) else {
            break; // torn
        };
        if checksum(seq, payload) != h[16..48] {
            break;
        }
        if let Some(w) = want {
            if seq != w {
                break; // stale tail of an emptied log
            }
        }
        let Ok(rec) = bincode::deserialize::<Vec<RecOp>>(payload) else {
            break;
        };
        want = Some(seq + 1);
        pos += HEADER + len;
        if seq >= first {
            out.push((
                seq,
                rec.into_iter()
                    .map(|r| match r {
                        RecOp::Put(k, v) => Op::Put(k, v),
                        RecOp::Del(k) => Op::Del(k),
                    })
                    .collect(),
            ));
        }
    }
    // only a run that continues LMDB exactly may be applied
    match out.first() {
        Some((s, _)) if *s == first => out,
        _ => Vec::new(),
    }
}

impl WalStore {
    /// Open the replica in `dir`: replay its log into LMDB, then empty the log.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        let lmdb = LmdbStore::open(dir)?;
        let applied = lmdb.sequence()?;
        let path = dir.join(WAL_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(dir, e)),
        };
        let records = parse(&bytes, applied + 1);
        let mut seq = applied;
        if !records.is_empty() {
            let mut ops = Vec::new();
            for (s, batch) in records {
                ops.extend(batch);
                seq = s;
            }
            log::info!(
                "metadata replica {}: replayed log up to commit {seq} (from {applied})",
                dir.display()
            );
            lmdb.commit_at(&ops, Some(seq))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(crate::guard::modes::FILE_MODE)
            .open(&path)
            .map_err(|e| err(dir, e))?;
        // Zero-fill: replay stops at the first zero header (bad magic).
        file.set_len(0).map_err(|e| err(dir, e))?;
        let zeros = vec![0u8; 1 << 20];
        let mut f = &file;
        for _ in 0..LOG_BYTES >> 20 {
            f.write_all(&zeros).map_err(|e| err(dir, e))?;
        }
        f.seek(SeekFrom::Start(0)).map_err(|e| err(dir, e))?;
        file.sync_all().map_err(|e| err(dir, e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err(dir, e))?;
        Ok(WalStore {
            lmdb,
            dir: dir.to_path_buf(),
            log: Mutex::new(Log {
                file,
                len: 0,
                seq,
                last_checkpoint: Instant::now(),
            }),
            overlay: RwLock::new(Overlay::new()),
        })
    }

    /// Move the overlay into LMDB and empty the log. Caller holds the log.
    fn checkpoint(&self, log: &mut Log) -> Result<(), MetaError> {
        let ops: Vec<Op> = {
            let o = self.overlay.read().unwrap();
            if o.is_empty() {
                return Ok(());
            }
            o.iter()
                .map(|(k, v)| match v {
                    Some(v) => Op::Put(k.clone(), v.clone()),
                    None => Op::Del(k.clone()),
                })
                .collect()
        };
        // LMDB first (durable), then forget the overlay: a reader that
        // misses the overlay finds the value in LMDB.
        let t0 = Instant::now();
        self.lmdb.commit_at(&ops, Some(log.seq))?;
        self.overlay.write().unwrap().clear();
        log::debug!(
            "metadata replica {}: checkpoint of {} keys ({} log bytes) in {} ms",
            self.dir.display(),
            ops.len(),
            log.len,
            t0.elapsed().as_millis()
        );
        // Reuse the log from its start. Records left behind it have
        // sequences LMDB already has: replay skips them, and stops at the
        // first one that does not continue the new run.
        log.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| err(&self.dir, e))?;
        log.len = 0;
        log.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Checkpoint now (clean unmount, copies).
    pub fn flush(&self) -> Result<(), MetaError> {
        let mut log = self.log.lock().unwrap();
        self.checkpoint(&mut log)
    }

    /// Checkpoint, then write a consistent copy of the replica into `dest`.
    pub fn snapshot_to_dir(&self, dest: &Path) -> Result<(), MetaError> {
        self.flush()?;
        self.lmdb.copy_to_dir(dest)?;
        // the destination's old log must not be replayed over the copy
        let _ = std::fs::remove_file(dest.join(WAL_FILE));
        Ok(())
    }

    /// Close, waiting until LMDB releases the environment.
    pub fn close(self) {
        self.lmdb.close();
    }
}

impl MetaStore for WalStore {
    fn copy_to_dir(&self, dest: &Path) -> Result<(), MetaError> {
        self.snapshot_to_dir(dest)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        if let Some(v) = self.overlay.read().unwrap().get(key) {
            return Ok(v.clone());
        }
        self.lmdb.get(key)
    }

    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs, MetaError> {
        let snapshot: Overlay = self
            .overlay
            .read()
            .unwrap()
            .range(start.to_vec()..end.to_vec())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        merge_range(&snapshot, &self.lmdb, start, end, limit)
    }

    fn range_sizes(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<super::KeySizes, MetaError> {
        let snapshot: std::collections::BTreeMap<Vec<u8>, Option<usize>> = self
            .overlay
            .read()
            .unwrap()
            .range(start.to_vec()..end.to_vec())
            .map(|(k, v)| (k.clone(), v.as_ref().map(Vec::len)))
            .collect();
        super::merge_sizes(&snapshot, &self.lmdb, start, end, limit)
    }

    fn commit(&self, ops: &[Op]) -> Result<(), MetaError> {
        let mut log = self.log.lock().unwrap();
        let seq = log.seq + 1;
        let rec = record(seq, ops);
        if log.len > 0 && log.len + rec.len() as u64 > LOG_BYTES {
            self.checkpoint(&mut log)?;
        }
        log.file.write_all(&rec).map_err(|e| err(&self.dir, e))?;
        log.file.sync_data().map_err(|e| err(&self.dir, e))?;
        log.seq = seq;
        log.len += rec.len() as u64;
        {
            let mut o = self.overlay.write().unwrap();
            for op in ops {
                match op {
                    Op::Put(k, v) => o.insert(k.clone(), Some(v.clone())),
                    Op::Del(k) => o.insert(k.clone(), None),
                };
            }
        }
        let keys = self.overlay.read().unwrap().len();
        if keys > CHECKPOINT_KEYS || log.last_checkpoint.elapsed() > CHECKPOINT_AGE {
            match self.checkpoint(&mut log) {
                // The batch is durable in the log already: a checkpoint that
                // found the disk full is retried later (at the latest when
                // the log is full, and that commit fails with ENOSPC before
                // its append), and this commit is not reported as failed.
                Err(MetaError::NoSpace(msg)) => {
                    log::warn!(
                        "metadata replica {}: checkpoint postponed, disk full: {msg}",
                        self.dir.display()
                    );
                    log.last_checkpoint = Instant::now();
                }
                r => r?,
            }
        }
        Ok(())
    }

    fn sequence(&self) -> Result<u64, MetaError> {
        Ok(self.log.lock().unwrap().seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Issue 14: the WAL record parser over any bytes (a valid log with
        /// bytes changed, or noise) returns the intact prefix, never panics.
        #[test]
        fn wal_parse_never_panics(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            edits in proptest::collection::vec(
                (proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..4),
        ) {
            let _ = parse(&raw, 1);
            let mut log = record(1, &[Op::Put(b"k".to_vec(), raw.clone())]);
            log.extend(record(2, &[Op::Del(b"k".to_vec())]));
            for (at, v) in edits {
                let i = at % log.len();
                log[i] = v;
            }
            let got = parse(&log, 1);
            proptest::prop_assert!(got.len() <= 2);
        }
    }

    fn put(k: &str, v: &str) -> Op {
        Op::Put(k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn commits_survive_reopen_without_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = WalStore::open(d.path()).unwrap();
            s.commit(&[put("a", "1"), put("b", "2")]).unwrap();
            s.commit(&[Op::Del(b"a".to_vec()), put("c", "3")]).unwrap();
            assert_eq!(s.get(b"c").unwrap(), Some(b"3".to_vec()));
            assert_eq!(s.range(b"a", b"z", 10).unwrap().len(), 2);
            // dropped without checkpoint: as after kill -9
            std::mem::forget(s);
        }
        // LMDB allows one environment per path per process: reopen the
        // files in a fresh copy of the directory
        let d2 = tempfile::tempdir().unwrap();
        for f in ["data.mdb", WAL_FILE] {
            std::fs::copy(d.path().join(f), d2.path().join(f)).unwrap();
        }
        let s = WalStore::open(d2.path()).unwrap();
        assert_eq!(s.sequence().unwrap(), 2);
        assert_eq!(s.get(b"a").unwrap(), None);
        assert_eq!(s.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.get(b"c").unwrap(), Some(b"3".to_vec()));
        // the log was applied and reset: nothing left to replay
        let bytes = std::fs::read(d2.path().join(WAL_FILE)).unwrap();
        assert!(parse(&bytes, 1).is_empty() && parse(&bytes, 3).is_empty());
    }

    #[test]
    fn torn_or_corrupt_tail_is_ignored_and_stale_records_are_not_replayed() {
        let good1 = record(1, &[put("a", "1")]);
        let good2 = record(2, &[put("b", "2")]);
        let mut bytes = good1.clone();
        bytes.extend_from_slice(&good2);
        assert_eq!(parse(&bytes, 1).len(), 2);
        // torn second record
        assert_eq!(parse(&bytes[..bytes.len() - 3], 1).len(), 1);
        // flipped byte in the second record's payload
        let mut flipped = bytes.clone();
        let l = flipped.len();
        flipped[l - 1] ^= 1;
        assert_eq!(parse(&flipped, 1).len(), 1);
        // records LMDB already has are skipped
        assert_eq!(parse(&bytes, 2).len(), 1);
        // a log that does not continue LMDB is not applied
        assert!(parse(&bytes, 5).is_empty());
        // a stale tail after an emptied-and-reused log stops replay
        let mut reused = record(7, &[put("x", "1")]);
        reused.extend_from_slice(&good2);
        assert_eq!(parse(&reused, 7).len(), 1);
    }

    #[test]
    fn checkpoint_moves_overlay_into_lmdb() {
        let d = tempfile::tempdir().unwrap();
        let s = WalStore::open(d.path()).unwrap();
        s.commit(&[put("k", "v")]).unwrap();
        assert_eq!(
            parse(&std::fs::read(d.path().join(WAL_FILE)).unwrap(), 1).len(),
            1
        );
        s.flush().unwrap();
        assert_eq!(s.log.lock().unwrap().len, 0);
        assert_eq!(s.lmdb.get(b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(s.lmdb.sequence().unwrap(), 1);
        assert_eq!(s.get(b"k").unwrap(), Some(b"v".to_vec()));
        s.close();
    }

    /// Issue 14: on a full metadata disk a commit whose batch is in the log
    /// is not reported as failed because the checkpoint after it found no
    /// room (ENOSPC once the LMDB reserve is spent); the checkpoint is
    /// taken later, once there is room.
    #[test]
    fn a_checkpoint_that_finds_the_disk_full_does_not_fail_a_logged_commit() {
        use std::process::Command;
        let mnt = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs"])
            .arg(mnt.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs (tests run as root)");
        struct Umount<'a>(&'a Path);
        impl Drop for Umount<'_> {
            fn drop(&mut self) {
                let _ = Command::new("umount").arg("-l").arg(self.0).status();
            }
        }
        let _u = Umount(mnt.path());
        let fill = || {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(mnt.path().join("filler"))
                .unwrap();
            for chunk in [1 << 20, 4096] {
                let buf = vec![1u8; chunk];
                while f.write_all(&buf).is_ok() {}
            }
        };
        let big = |b: u8| -> Vec<Op> {
            (0..32u8)
                .map(|i| Op::Put(vec![b'k', b, i], vec![b ^ i; 8 << 10]))
                .collect()
        };
        let dir = mnt.path().join("meta");
        let s = WalStore::open(&dir).unwrap();
        fill();
        // this checkpoint spends the LMDB reserve
        s.log.lock().unwrap().last_checkpoint = Instant::now() - CHECKPOINT_AGE * 2;
        s.commit(&big(1)).unwrap();
        assert_eq!(s.log.lock().unwrap().len, 0, "checkpoint taken");
        fill();
        // this one finds no room: the logged commit still succeeds
        s.log.lock().unwrap().last_checkpoint = Instant::now() - CHECKPOINT_AGE * 2;
        s.commit(&big(2)).unwrap();
        assert!(s.log.lock().unwrap().len > 0, "checkpoint postponed");
        assert_eq!(s.get(&[b'k', 2, 5]).unwrap(), Some(vec![2 ^ 5; 8 << 10]));
        assert_eq!(s.lmdb.get(&[b'k', 2, 5]).unwrap(), None);
        std::fs::remove_file(mnt.path().join("filler")).unwrap();
        s.flush().unwrap();
        assert_eq!(
            s.lmdb.get(&[b'k', 2, 5]).unwrap(),
            Some(vec![2 ^ 5; 8 << 10])
        );
        assert_eq!(s.lmdb.sequence().unwrap(), 2);
        s.close();
    }
}
