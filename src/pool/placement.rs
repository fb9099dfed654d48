//! Which members get the shards of a new stripe.
//!
//! Every stripe picks its own members, so one file (and one bucket) spreads
//! over the whole pool. Members are drawn without replacement with
//! probability proportional to their free space (Efraimidis-Spirakis
//! weighted sampling). Heat-aware placement plugs in here later.

use super::Pool;
use std::sync::atomic::Ordering;

/// Choose up to `n` distinct members that take new shards (online), not
/// in `exclude`.
pub(super) fn choose(pool: &Pool, n: usize, exclude: &[u16]) -> Vec<u16> {
    let mut keyed: Vec<(f64, u16)> = pool
        .members()
        .iter()
        .filter(|m| m.writable_disk().is_some() && !exclude.contains(&m.index))
        .map(|m| {
            let free = m.free.load(Ordering::Relaxed).max(1) as f64;
            let u: f64 = pool.random().max(f64::MIN_POSITIVE);
            // key = u^(1/w); larger keys win. Compare logs to stay in range.
            (u.ln() / free, m.index)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    keyed.into_iter().take(n).map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use crate::pool::{MemDisk, Member, Pool, Superblock, FORMAT_VERSION};
    use std::sync::Arc;

    fn pool(n: usize, online: usize) -> Pool {
        let members = (0..n)
            .map(|i| {
                let m = Member::new(
                    i as u16,
                    format!("{i}"),
                    format!("m{i}"),
                    Some(Arc::new(MemDisk::default()) as _),
                );
                if i >= online {
                    m.set_health(crate::pool::Health::Failed);
                }
                m
            })
            .collect();
        let sb = Superblock {
            magic: "shardfs".into(),
            format_version: FORMAT_VERSION,
            pool_id: "0".repeat(32),
            member_id: "0".repeat(32),
            member_index: 0,
            members: vec![String::new(); n],
            k: 4,
            m: 2,
            shard_size: 4096,
            inline_max: 1024,
            meta_replicas: vec![0, 1, 2],
            created: 0,
            domains: Vec::new(),
            meta_epoch: 0,
        };
        Pool::new(sb, members).unwrap()
    }

    #[test]
    fn picks_distinct_online_members_and_spreads() {
        let p = pool(12, 10);
        let mut hits = [0u32; 12];
        for _ in 0..2000 {
            let c = super::choose(&p, 6, &[]);
            assert_eq!(c.len(), 6);
            let mut s = c.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 6, "distinct");
            for i in c {
                assert!(i < 10, "offline member chosen");
                hits[i as usize] += 1;
            }
        }
        // equal free space: every online member gets about 6/10 of the stripes
        for h in &hits[..10] {
            assert!((1000..1400).contains(h), "uneven spread {hits:?}");
        }
    }

    #[test]
    fn excludes_and_caps() {
        let p = pool(6, 6);
        let c = super::choose(&p, 6, &[0, 1]);
        assert_eq!(c.len(), 4);
        assert!(!c.contains(&0) && !c.contains(&1));
    }
}
