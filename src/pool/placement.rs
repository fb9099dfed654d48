//! Which members get the shards of a new stripe (and of rebuilt or moved
//! shards).
//!
//! Every stripe picks its own members, so one file and one bucket spread
//! over the whole pool. Each pick is a weighted power of two choices: two
//! candidates are drawn with probability proportional to their free space,
//! and the one with the lower heat (expected wait of a new request) wins.
//! Free space keeps capacity balanced over time; heat keeps a burst from
//! piling onto a few members. Failure domains: never two shards of a stripe
//! in one domain while a domain without one has a candidate left; when
//! there are fewer domains than shards, the least-used domains go first.
//!
//! [`place`] is pure (no pool, no I/O), so the scale simulator
//! (`shardfs-heatsim`) and the property tests run the same code as the pool.

use super::Pool;
use std::sync::atomic::Ordering;

/// One member as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Member index (or any id).
    pub id: u32,
    /// Free bytes (weight of the draw; at least 1 is used).
    pub free: f64,
    /// Heat: expected wait of a new request (lower wins).
    pub load: f64,
    /// Failure domain (members without a declared one: their own).
    pub domain: u32,
}

/// Choose up to `n` distinct candidates for shards of one stripe whose
/// other shards sit in `taken_domains`. `rand` returns uniform numbers in
/// [0, 1). Returns positions in `cands`, in pick order.
pub fn place(
    cands: &[Candidate],
    n: usize,
    taken_domains: &[u32],
    rand: &mut dyn FnMut() -> f64,
) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::with_capacity(n);
    let mut used: std::collections::HashMap<u32, usize> = Default::default();
    for &d in taken_domains {
        *used.entry(d).or_default() += 1;
    }
    let mut allowed: Vec<usize> = Vec::with_capacity(cands.len());
    while chosen.len() < n {
        // the candidates not chosen, in the least-used domains among them
        allowed.clear();
        let mut best = usize::MAX;
        for (i, c) in cands.iter().enumerate() {
            if chosen.contains(&i) {
                continue;
            }
            let u = used.get(&c.domain).copied().unwrap_or(0);
            if u < best {
                best = u;
                allowed.clear();
            }
            if u == best {
                allowed.push(i);
            }
        }
        if allowed.is_empty() {
            break;
        }
        let a = draw(cands, &allowed, rand);
        let b = draw(cands, &allowed, rand);
        let pick = if cands[b].load < cands[a].load { b } else { a };
        *used.entry(cands[pick].domain).or_default() += 1;
        chosen.push(pick);
    }
    chosen
}

/// One candidate of `allowed`, drawn with probability proportional to free space.
fn draw(cands: &[Candidate], allowed: &[usize], rand: &mut dyn FnMut() -> f64) -> usize {
    let w = |i: usize| cands[i].free.max(1.0);
    let total: f64 = allowed.iter().map(|&i| w(i)).sum();
    let mut x = rand() * total;
    for &i in allowed {
        x -= w(i);
        if x < 0.0 {
            return i;
        }
    }
    *allowed.last().expect("not empty")
}

/// Domain number of a member: its declared domain, else its own.
fn domain_of(pool: &Pool, index: u16) -> u32 {
    match pool.member(index).domain() {
        Some(d) => {
            let h = blake3::hash(d.as_bytes());
            // declared domains live above the member-index range
            0x1_0000 | (u32::from_le_bytes(h.as_bytes()[..4].try_into().unwrap()) >> 1)
        }
        None => index as u32,
    }
}

/// Choose up to `n` online members, none in `exclude`, for new shards of a
/// stripe whose other shards are on `holders` (their failure domains are
/// avoided while others remain).
pub(super) fn choose(pool: &Pool, n: usize, exclude: &[u16], holders: &[u16]) -> Vec<u16> {
    choose_in(pool, n, exclude, holders, None)
}

/// [`choose`] among members of `class` only (when given).
pub(super) fn choose_in(
    pool: &Pool,
    n: usize,
    exclude: &[u16],
    holders: &[u16],
    class: Option<&str>,
) -> Vec<u16> {
    let cands: Vec<Candidate> = pool
        .members()
        .iter()
        .filter(|m| m.writable_disk().is_some() && !exclude.contains(&m.index))
        .filter(|m| class.is_none() || m.class() == class)
        .map(|m| Candidate {
            id: m.index as u32,
            free: m.free.load(Ordering::Relaxed) as f64,
            load: m.heat.load(),
            domain: domain_of(pool, m.index),
        })
        .collect();
    let taken: Vec<u32> = holders
        .iter()
        .filter(|&&i| i != super::NO_MEMBER && (i as usize) < pool.members().len())
        .map(|&i| domain_of(pool, i))
        .collect();
    let mut rand = || pool.random();
    place(&cands, n, &taken, &mut rand)
        .into_iter()
        .map(|i| cands[i].id as u16)
        .collect()
}

/// True if member `to` may take a shard of a stripe on `members` without
/// doubling up a failure domain that could be avoided (rebalance).
pub fn domain_ok(pool: &Pool, members: &[u16], from: u16, to: u16) -> bool {
    let used: Vec<u32> = members
        .iter()
        .filter(|&&i| i != super::NO_MEMBER && i != from)
        .map(|&i| domain_of(pool, i))
        .collect();
    let to_d = domain_of(pool, to);
    !used.contains(&to_d) || to_d == domain_of(pool, from)
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
            classes: Vec::new(),
        };
        Pool::new(sb, members).unwrap()
    }

    #[test]
    fn picks_distinct_online_members_and_spreads() {
        let p = pool(12, 10);
        let mut hits = [0u32; 12];
        for _ in 0..2000 {
            let c = super::choose(&p, 6, &[], &[]);
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
        let c = super::choose(&p, 6, &[0, 1], &[]);
        assert_eq!(c.len(), 4);
        assert!(!c.contains(&0) && !c.contains(&1));
    }

    use super::{place, Candidate};
    use proptest::prelude::*;

    fn cands() -> impl Strategy<Value = Vec<Candidate>> {
        prop::collection::vec((1u32..1000, 0u32..100, 0u32..8), 1..40).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (free, load, domain))| Candidate {
                    id: i as u32,
                    free: free as f64,
                    load: load as f64,
                    domain,
                })
                .collect()
        })
    }

    proptest! {
        /// Distinct members, as many as asked (or all there are), and no
        /// failure domain used twice while an unused one had a candidate:
        /// domain use counts never differ by more than one among domains
        /// that still had candidates.
        #[test]
        fn picks_are_distinct_and_spread_over_domains(
            cs in cands(), n in 1usize..12, taken in prop::collection::vec(0u32..8, 0..4), seed: u64,
        ) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut r = || rng.random::<f64>();
            let got = place(&cs, n, &taken, &mut r);
            prop_assert_eq!(got.len(), n.min(cs.len()));
            let mut s = got.clone();
            s.sort();
            s.dedup();
            prop_assert_eq!(s.len(), got.len());
            // replay the rule: each pick came from a least-used domain
            let mut used: std::collections::HashMap<u32, usize> = Default::default();
            for d in &taken {
                *used.entry(*d).or_default() += 1;
            }
            let mut chosen = Vec::new();
            for &p in &got {
                let least = cs.iter().enumerate()
                    .filter(|(i, _)| !chosen.contains(i))
                    .map(|(_, c)| used.get(&c.domain).copied().unwrap_or(0))
                    .min().unwrap();
                prop_assert_eq!(used.get(&cs[p].domain).copied().unwrap_or(0), least,
                    "pick {} from a domain used more than another available one", p);
                *used.entry(cs[p].domain).or_default() += 1;
                chosen.push(p);
            }
        }
    }

    use rand::{Rng, SeedableRng};

    /// Weights: with equal heat, a member with 3x the free space is picked
    /// about 3x as often; with equal space, the cooler of two is preferred.
    #[test]
    fn free_space_weights_and_heat_steers() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut r = || rng.random::<f64>();
        let cs: Vec<Candidate> = (0..4)
            .map(|i| Candidate {
                id: i,
                free: if i == 0 { 3000.0 } else { 1000.0 },
                load: 1.0,
                domain: i,
            })
            .collect();
        let mut hits = [0u32; 4];
        for _ in 0..20_000 {
            hits[place(&cs, 1, &[], &mut r)[0]] += 1;
        }
        // power of two by weight: P(0) = 1 - (1 - 0.5)^2 = 0.75 with ties
        // going to the first draw; the point is 0 beats each other member
        // by far more than 3x, and the others are equal
        assert!(hits[0] > 3 * hits[1], "{hits:?}");
        let spread = hits[1..].iter().max().unwrap() - hits[1..].iter().min().unwrap();
        assert!(spread < 600, "{hits:?}");
        // equal space, member 2 hot: it is picked only when drawn twice
        let cs: Vec<Candidate> = (0..4)
            .map(|i| Candidate {
                id: i,
                free: 1000.0,
                load: if i == 2 { 50.0 } else { 1.0 },
                domain: i,
            })
            .collect();
        let mut hits = [0u32; 4];
        for _ in 0..20_000 {
            hits[place(&cs, 1, &[], &mut r)[0]] += 1;
        }
        let p2 = hits[2] as f64 / 20_000.0;
        assert!(
            (p2 - 1.0 / 16.0).abs() < 0.02,
            "hot member picked {p2}: {hits:?}"
        );
    }
}
