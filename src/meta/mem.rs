use super::{KvPairs, MetaError, MetaStore, Op, SEQ_KEY};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// An in-memory store for tests. `fail` makes every call fail.
#[derive(Debug, Default)]
pub struct MemStore {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// When set, every call fails (a lost metadata member).
    pub fail: std::sync::atomic::AtomicBool,
}

impl MemStore {
    fn check(&self) -> Result<(), MetaError> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(MetaError::Store {
                store: "mem".into(),
                msg: "injected failure".into(),
            });
        }
        Ok(())
    }
}

impl MetaStore for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        self.check()?;
        Ok(self.map.lock().unwrap().get(key).cloned())
    }

    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs, MetaError> {
        self.check()?;
        Ok(self
            .map
            .lock()
            .unwrap()
            .range(start.to_vec()..end.to_vec())
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, ops: &[Op]) -> Result<(), MetaError> {
        self.check()?;
        let mut map = self.map.lock().unwrap();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    map.insert(k.clone(), v.clone());
                }
                Op::Del(k) => {
                    map.remove(k);
                }
            }
        }
        let seq = map
            .get(SEQ_KEY)
            .map(|v| {
                u64::from_be_bytes(v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]))
            })
            .unwrap_or(0);
        map.insert(SEQ_KEY.to_vec(), (seq + 1).to_be_bytes().to_vec());
        Ok(())
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
