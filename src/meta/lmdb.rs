use super::{KvPairs, MetaError, MetaStore, Op, SEQ_KEY};
use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions};
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// LMDB through heed, in its default durable mode: every commit is fsynced
/// before it returns. (heed is used instead of the archived lmdb-rkv; see
/// docs/DESIGN.md.)
pub struct LmdbStore {
    env: Env,
    db: Database<Bytes, Bytes>,
    path: PathBuf,
}

impl std::fmt::Debug for LmdbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LmdbStore({})", self.path.display())
    }
}

/// Virtual size of the LMDB map; pages are only used as written.
const MAP_SIZE: usize = 64 << 30;

impl LmdbStore {
    /// Open (creating if needed) the store in directory `path`.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        let err = |e: &dyn std::fmt::Display| MetaError::Store {
            store: path.display().to_string(),
            msg: e.to_string(),
        };
        crate::guard::modes::create_dir_all(path).map_err(|e| err(&e))?;
        // SAFETY: each metadata directory is opened once per process (the
        // daemon owns its pool) and never truncated or mapped elsewhere.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(MAP_SIZE)
                .max_dbs(1)
                .open(path)
        }
        .map_err(|e| err(&e))?;
        let mut wtxn = env.write_txn().map_err(|e| err(&e))?;
        let db: Database<Bytes, Bytes> =
            env.create_database(&mut wtxn, None).map_err(|e| err(&e))?;
        wtxn.commit().map_err(|e| err(&e))?;
        Ok(LmdbStore {
            env,
            db,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> MetaError {
        MetaError::Store {
            store: self.path.display().to_string(),
            msg: e.to_string(),
        }
    }

    /// Write a consistent copy of the store into directory `dest` (for
    /// bringing a lagging replica up to date).
    pub fn copy_to_dir(&self, dest: &Path) -> Result<(), MetaError> {
        crate::guard::modes::create_dir_all(dest).map_err(|e| self.err(e))?;
        let tmp = dest.join("data.mdb.copy");
        let _ = std::fs::remove_file(&tmp);
        let f = self
            .env
            .copy_to_path(&tmp, heed::CompactionOption::Disabled)
            .map_err(|e| self.err(e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let owner_only = std::fs::Permissions::from_mode(crate::guard::modes::FILE_MODE);
            f.set_permissions(owner_only).map_err(|e| self.err(e))?;
        }
        f.sync_all().map_err(|e| self.err(e))?;
        std::fs::rename(&tmp, dest.join("data.mdb")).map_err(|e| self.err(e))?;
        let _ = std::fs::remove_file(dest.join("lock.mdb"));
        std::fs::File::open(dest)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.err(e))
    }

    /// Close the environment and wait until LMDB has released it.
    pub fn close(self) {
        self.env.prepare_for_closing().wait();
    }
}

impl LmdbStore {
    /// Commit `ops` durably; the commit sequence becomes `seq` if given,
    /// else the old sequence plus one.
    pub fn commit_at(&self, ops: &[Op], seq: Option<u64>) -> Result<(), MetaError> {
        let mut wtxn = self.env.write_txn().map_err(|e| self.err(e))?;
        for op in ops {
            match op {
                Op::Put(k, v) => self.db.put(&mut wtxn, k, v),
                Op::Del(k) => self.db.delete(&mut wtxn, k).map(|_| ()),
            }
            .map_err(|e| self.err(e))?;
        }
        let seq = match seq {
            Some(s) => s,
            None => {
                self.db
                    .get(&wtxn, SEQ_KEY)
                    .map_err(|e| self.err(e))?
                    .map(|v| {
                        u64::from_be_bytes(
                            v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]),
                        )
                    })
                    .unwrap_or(0)
                    + 1
            }
        };
        self.db
            .put(&mut wtxn, SEQ_KEY, &seq.to_be_bytes())
            .map_err(|e| self.err(e))?;
        wtxn.commit().map_err(|e| self.err(e))
    }
}

impl MetaStore for LmdbStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        let rtxn = self.env.read_txn().map_err(|e| self.err(e))?;
        Ok(self
            .db
            .get(&rtxn, key)
            .map_err(|e| self.err(e))?
            .map(<[u8]>::to_vec))
    }

    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs, MetaError> {
        let rtxn = self.env.read_txn().map_err(|e| self.err(e))?;
        let r = (Bound::Included(start), Bound::Excluded(end));
        let mut out = Vec::new();
        for item in self.db.range(&rtxn, &r).map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push((k.to_vec(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn range_sizes(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<super::KeySizes, MetaError> {
        // the value is a slice of the map: its length costs no copy
        let rtxn = self.env.read_txn().map_err(|e| self.err(e))?;
        let r = (Bound::Included(start), Bound::Excluded(end));
        let mut out = Vec::new();
        for item in self.db.range(&rtxn, &r).map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push((k.to_vec(), v.len()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn commit(&self, ops: &[Op]) -> Result<(), MetaError> {
        self.commit_at(ops, None)
    }

    fn sequence(&self) -> Result<u64, MetaError> {
        Ok(self
            .get(SEQ_KEY)?
            .map(|v| {
                u64::from_be_bytes(v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]))
            })
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_get_range_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = LmdbStore::open(dir.path()).unwrap();
        s.commit(&[
            Op::Put(b"a1".to_vec(), b"x".to_vec()),
            Op::Put(b"a2".to_vec(), b"y".to_vec()),
            Op::Put(b"b1".to_vec(), b"z".to_vec()),
        ])
        .unwrap();
        s.commit(&[Op::Del(b"a2".to_vec())]).unwrap();
        assert_eq!(s.get(b"a1").unwrap(), Some(b"x".to_vec()));
        assert_eq!(s.get(b"a2").unwrap(), None);
        let r = s.range(b"a", b"b", 10).unwrap();
        assert_eq!(r, vec![(b"a1".to_vec(), b"x".to_vec())]);
        assert_eq!(s.sequence().unwrap(), 2);
        s.close();
        let s = LmdbStore::open(dir.path()).unwrap();
        assert_eq!(s.get(b"b1").unwrap(), Some(b"z".to_vec()));
        assert_eq!(s.sequence().unwrap(), 2);
        s.close();
    }
}
