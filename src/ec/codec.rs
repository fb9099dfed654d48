use reed_solomon_erasure::galois_8::ReedSolomon;

/// Errors from encoding or decoding a stripe.
#[derive(Debug, thiserror::Error)]
pub enum EcError {
    /// The (k, m) pair is not usable.
    #[error("invalid layout k={k} m={m}: {why}")]
    BadLayout {
        /// data shards
        k: usize,
        /// parity shards
        m: usize,
        /// reason
        why: String,
    },
    /// Fewer than k shards survive.
    #[error("only {have} of the {need} shards needed are available")]
    TooFewShards {
        /// shards present
        have: usize,
        /// shards needed (k)
        need: usize,
    },
}

/// A Reed-Solomon code with k data and m parity shards.
pub struct Codec {
    k: usize,
    m: usize,
    rs: ReedSolomon,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Codec({}+{})", self.k, self.m)
    }
}

/// Shards are padded to a multiple of this many bytes (SIMD friendly).
const SHARD_ALIGN: usize = 64;

impl Codec {
    /// A codec for k data and m parity shards.
    pub fn new(k: usize, m: usize) -> Result<Self, EcError> {
        if k == 0 || m == 0 || k + m > 255 {
            return Err(EcError::BadLayout {
                k,
                m,
                why: "need k >= 1, m >= 1 and k + m <= 255".into(),
            });
        }
        let rs = ReedSolomon::new(k, m).map_err(|e| EcError::BadLayout {
            k,
            m,
            why: format!("{e:?}"),
        })?;
        Ok(Codec { k, m, rs })
    }

    /// Number of data shards.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of parity shards.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Length of each shard for a stripe holding `data_len` bytes.
    pub fn shard_len(&self, data_len: usize) -> usize {
        let per = data_len.div_ceil(self.k).max(1);
        per.div_ceil(SHARD_ALIGN) * SHARD_ALIGN
    }

    /// Cut `data` into k data shards (zero padded) and compute m parity shards.
    pub fn encode(&self, data: &[u8]) -> Vec<Vec<u8>> {
        let (padded, parity) = self.encode_parity(data);
        let len = self.shard_len(data.len());
        padded
            .chunks(len)
            .map(<[u8]>::to_vec)
            .chain(parity)
            .collect()
    }

    /// Parity of `data` without copying it: returns the data padded to k
    /// shards (borrowed when it needs no padding; data shard i is bytes
    /// `i*len..(i+1)*len` with `len = shard_len(data.len())`) and the m
    /// parity shards.
    pub fn encode_parity<'a>(&self, data: &'a [u8]) -> (std::borrow::Cow<'a, [u8]>, Vec<Vec<u8>>) {
        let len = self.shard_len(data.len());
        let padded: std::borrow::Cow<'a, [u8]> = if data.len() == len * self.k {
            std::borrow::Cow::Borrowed(data)
        } else {
            let mut v = vec![0u8; len * self.k];
            v[..data.len()].copy_from_slice(data);
            std::borrow::Cow::Owned(v)
        };
        let mut parity = vec![vec![0u8; len]; self.m];
        {
            let data_shards: Vec<&[u8]> = padded.chunks(len).collect();
            let mut par: Vec<&mut [u8]> = parity.iter_mut().map(|p| p.as_mut_slice()).collect();
            self.rs
                .encode_sep(&data_shards, &mut par)
                .expect("shards are equal length and counted");
        }
        (padded, parity)
    }

    /// Rebuild the stripe's `data_len` bytes from any k shards. `shards[i]`
    /// is shard i if it was read and verified, `None` otherwise.
    pub fn decode(
        &self,
        mut shards: Vec<Option<Vec<u8>>>,
        data_len: usize,
    ) -> Result<Vec<u8>, EcError> {
        let have = shards.iter().filter(|s| s.is_some()).count();
        if have < self.k {
            return Err(EcError::TooFewShards { have, need: self.k });
        }
        if shards[..self.k].iter().any(|s| s.is_none()) {
            self.rs
                .reconstruct_data(&mut shards)
                .map_err(|_| EcError::TooFewShards { have, need: self.k })?;
        }
        let mut out = Vec::with_capacity(data_len);
        for s in shards.iter().take(self.k) {
            let s = s.as_ref().expect("reconstructed");
            let take = (data_len - out.len()).min(s.len());
            out.extend_from_slice(&s[..take]);
            if out.len() == data_len {
                break;
            }
        }
        out.resize(data_len, 0);
        Ok(out)
    }

    /// Fill in the missing data pieces from any k present ones. Pieces are
    /// the same byte range of every shard (any equal length works: the code
    /// is per byte position).
    pub fn reconstruct(&self, pieces: &mut [Option<Vec<u8>>]) -> Result<(), EcError> {
        let have = pieces.iter().filter(|s| s.is_some()).count();
        if have < self.k {
            return Err(EcError::TooFewShards { have, need: self.k });
        }
        self.rs
            .reconstruct_data(pieces)
            .map_err(|_| EcError::TooFewShards { have, need: self.k })
    }

    /// Compute only the shards `want` (data or parity, by index) from any k
    /// present shards of equal length, without touching the others:
    /// `shards[i]` is shard i if it was read and verified. Returns the
    /// wanted shards in the order asked (a present one is copied).
    ///
    /// Every shard of the code is a linear combination of any k others
    /// (over GF(2^8), per byte position). The coefficients for the k
    /// present shards used are found by running the codec's own
    /// reconstruction on k-byte unit shards (byte j of used shard j is 1,
    /// every other byte 0: reconstructed byte j of shard t is then its
    /// coefficient of used shard j); each wanted shard then costs k
    /// multiply-adds per byte, where a decode of the data followed by a
    /// full encode costs a copy of the stripe and k per byte per parity
    /// shard too.
    pub fn reconstruct_some(
        &self,
        shards: &[Option<Vec<u8>>],
        want: &[usize],
    ) -> Result<Vec<Vec<u8>>, EcError> {
        let n = self.k + self.m;
        let used: Vec<usize> = (0..n.min(shards.len()))
            .filter(|&i| shards[i].is_some())
            .take(self.k)
            .collect();
        if used.len() < self.k || want.iter().any(|&t| t >= n) {
            return Err(EcError::TooFewShards {
                have: used.len(),
                need: self.k,
            });
        }
        let len = shards[used[0]].as_ref().expect("present").len();
        if len == 0
            || used
                .iter()
                .any(|&i| shards[i].as_ref().expect("present").len() != len)
        {
            return Err(EcError::TooFewShards {
                have: used.len(),
                need: self.k,
            });
        }
        let missing: Vec<usize> = want
            .iter()
            .copied()
            .filter(|&t| shards[t].is_none())
            .collect();
        let mut coef: Vec<Option<Vec<u8>>> = vec![None; n];
        if !missing.is_empty() {
            for (j, &i) in used.iter().enumerate() {
                let mut unit = vec![0u8; self.k];
                unit[j] = 1;
                coef[i] = Some(unit);
            }
            self.rs
                .reconstruct(&mut coef)
                .map_err(|_| EcError::TooFewShards {
                    have: used.len(),
                    need: self.k,
                })?;
        }
        let mut out = Vec::with_capacity(want.len());
        for &t in want {
            if let Some(s) = &shards[t] {
                out.push(s.clone());
                continue;
            }
            let c = coef[t].as_ref().expect("reconstructed");
            let mut v = vec![0u8; len];
            for (j, &i) in used.iter().enumerate() {
                let src = shards[i].as_ref().expect("present");
                reed_solomon_erasure::galois_8::mul_slice_xor(c[j], src, &mut v);
            }
            out.push(v);
        }
        Ok(out)
    }

    /// Recompute parity shards for a full set of shards (used by tests and repair).
    pub fn verify(&self, shards: &[Vec<u8>]) -> bool {
        self.rs.verify(shards).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_small_layout_and_every_loss_of_m() {
        for k in 1..=6 {
            for m in 1..=3 {
                let c = Codec::new(k, m).unwrap();
                for len in [1usize, 63, 64, 1000, 4096 * k + 7] {
                    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
                    let shards = c.encode(&data);
                    assert_eq!(shards.len(), k + m);
                    assert!(c.verify(&shards));
                    // lose the first m, the last m, and a middle mix
                    for start in 0..=k {
                        let mut opt: Vec<Option<Vec<u8>>> =
                            shards.iter().cloned().map(Some).collect();
                        for slot in opt.iter_mut().skip(start).take(m) {
                            *slot = None;
                        }
                        assert_eq!(c.decode(opt, len).unwrap(), data, "k={k} m={m} len={len}");
                    }
                }
            }
        }
    }

    #[test]
    fn reconstruct_some_gives_exactly_the_shards_lost() {
        for (k, m) in [(1, 1), (2, 1), (4, 2), (5, 3), (6, 3)] {
            let c = Codec::new(k, m).unwrap();
            let data: Vec<u8> = (0..(4096 * k + 100)).map(|i| (i * 7 % 253) as u8).collect();
            let shards = c.encode(&data);
            let n = k + m;
            // every set of lost shards of size 1..=m (as bit masks)
            for mask in 1u32..(1 << n) {
                if mask.count_ones() as usize > m {
                    continue;
                }
                let lost: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
                let mut opt: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
                for &i in &lost {
                    opt[i] = None;
                }
                let got = c.reconstruct_some(&opt, &lost).unwrap();
                for (g, &i) in got.iter().zip(&lost) {
                    assert_eq!(g, &shards[i], "k={k} m={m} lost={lost:?} shard {i}");
                }
                // one lost shard alone, the others not asked for
                let one = c.reconstruct_some(&opt, &lost[..1]).unwrap();
                assert_eq!(one[0], shards[lost[0]]);
            }
            // too few present
            let mut opt: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
            for s in opt.iter_mut().take(m + 1) {
                *s = None;
            }
            assert!(c.reconstruct_some(&opt, &[0]).is_err());
        }
    }

    #[test]
    fn decode_with_fewer_than_k_fails() {
        let c = Codec::new(4, 2).unwrap();
        let shards = c.encode(b"hello world");
        let mut opt: Vec<Option<Vec<u8>>> = shards.into_iter().map(Some).collect();
        opt[0] = None;
        opt[1] = None;
        opt[5] = None;
        assert!(matches!(
            c.decode(opt, 11),
            Err(EcError::TooFewShards { have: 3, need: 4 })
        ));
    }

    #[test]
    fn bad_layouts_are_rejected() {
        assert!(Codec::new(0, 2).is_err());
        assert!(Codec::new(4, 0).is_err());
        assert!(Codec::new(200, 100).is_err());
    }
}
