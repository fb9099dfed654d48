//! A durability estimate for a pool: mean time to data loss (MTTDL), the
//! annual probability of losing data and its "nines", from a Markov chain
//! over the number of failed failure domains. Pure arithmetic, no I/O; the
//! caller supplies the repair time (used bytes / measured repair
//! throughput). The model and its assumptions are in
//! docs/durability-model.md.
//!
//! - States `i = 0..=t` count failed domains (`t` = tolerated domain
//!   failures); state `t + 1` is data loss and absorbs.
//! - Failure rate from state `i` is `(d - i) * lambda`, with
//!   `lambda = -ln(1 - afr)` per year, converted to per hour.
//! - Repair rate from state `i > 0` is `mu = 1 / repair_hours` (one repair
//!   at a time), or `i * mu` with `parallel_repair`.
//! - Expected hitting times of the loss state solve a small dense linear
//!   system, eliminated GTH-style (every pivot is a sum of positive rates,
//!   never a difference), so the result stays accurate when repair is
//!   many orders of magnitude faster than failure.

use serde::Serialize;

/// Hours in a (Julian) year, used for every per-year / per-hour conversion.
pub const HOURS_PER_YEAR: f64 = 8766.0;

/// Default annual failure rate of one failure domain (1.5 %).
pub const DEFAULT_AFR: f64 = 0.015;

/// What the estimate needs to know about a pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DurabilityInput {
    /// Data shards per stripe.
    pub k: usize,
    /// Parity shards per stripe.
    pub m: usize,
    /// Member disks in the pool.
    pub members: usize,
    /// Failure domains: members on the same device form one domain.
    pub domains: usize,
    /// Annual failure rate of one domain, in (0, 1).
    pub afr: f64,
    /// Hours to restore one failed domain's data.
    pub repair_hours: f64,
    /// Domains' worth of redundancy already lost now (0..=tolerated), for
    /// the degraded figures.
    pub degraded: usize,
    /// Repair all failed domains at once (rate `i * mu`) instead of one at
    /// a time (rate `mu`).
    pub parallel_repair: bool,
}

impl DurabilityInput {
    /// A healthy pool with [`DEFAULT_AFR`] and one repair at a time.
    pub fn new(k: usize, m: usize, members: usize, domains: usize, repair_hours: f64) -> Self {
        DurabilityInput {
            k,
            m,
            members,
            domains,
            afr: DEFAULT_AFR,
            repair_hours,
            degraded: 0,
            parallel_repair: false,
        }
    }
}

/// The result of [`estimate`]. Times are in hours.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DurabilityEstimate {
    /// Domains that may be down at once without losing data.
    pub tolerated_domain_failures: usize,
    /// Mean time to data loss from a healthy pool.
    pub mttdl_hours: f64,
    /// `1 - exp(-8766 / mttdl_hours)`.
    pub annual_loss_probability: f64,
    /// `-log10(annual_loss_probability)` (infinite if it underflows to 0).
    pub nines: f64,
    /// Mean time to data loss from the current (degraded) state.
    pub degraded_mttdl_hours: f64,
    /// Annual loss probability from `degraded_mttdl_hours`.
    pub degraded_annual_loss_probability: f64,
    /// `-log10(degraded_annual_loss_probability)`.
    pub degraded_nines: f64,
    /// The extra risk while degraded: the probability that data is lost
    /// before repair brings the pool back to full redundancy, starting from
    /// the current state (0 when healthy).
    pub degraded_loss_before_repair: f64,
}

/// Domain failures a stripe of `k + m` shards survives when its shards are
/// spread as evenly as possible over `domains` domains: the fullest domain
/// holds `ceil((k + m) / domains)` shards, so `t` lost domains lose at most
/// `t * ceil(..)` shards. A conservative bound (exact when every domain
/// holds the same count). Requires `domains >= 1`.
pub fn tolerated_domain_failures(k: usize, m: usize, domains: usize) -> usize {
    m / (k + m).div_ceil(domains)
}

/// Per-hour failure rate of one domain from its annual failure rate.
fn lambda_per_hour(afr: f64) -> f64 {
    -(-afr).ln_1p() / HOURS_PER_YEAR
}

/// `1 - exp(-HOURS_PER_YEAR / mttdl)`, accurate when tiny.
fn annual_loss(mttdl_hours: f64) -> f64 {
    -(-HOURS_PER_YEAR / mttdl_hours).exp_m1()
}

/// Estimate the durability of a pool. Errors name the offending input.
pub fn estimate(input: &DurabilityInput) -> Result<DurabilityEstimate, String> {
    let &DurabilityInput {
        k,
        m,
        members,
        domains,
        afr,
        repair_hours,
        degraded,
        parallel_repair,
    } = input;
    if k == 0 {
        return Err("k (data shards) must be at least 1".into());
    }
    if members < k + m {
        return Err(format!(
            "a {k}+{m} pool needs at least {} members, {members} given",
            k + m
        ));
    }
    if domains == 0 {
        return Err("domains must be at least 1".into());
    }
    if domains > members {
        return Err(format!(
            "domains ({domains}) cannot exceed members ({members}): each domain holds at least one member"
        ));
    }
    if !(afr > 0.0 && afr < 1.0) {
        return Err(format!("afr must be in (0, 1), got {afr}"));
    }
    if !(repair_hours > 0.0 && repair_hours.is_finite()) {
        return Err(format!(
            "repair_hours must be positive and finite, got {repair_hours}"
        ));
    }
    let t = tolerated_domain_failures(k, m, domains);
    if degraded > t {
        return Err(format!(
            "degraded ({degraded}) exceeds the tolerated domain failures ({t}): that state has already lost data"
        ));
    }
    let lambda = lambda_per_hour(afr);
    let mu = 1.0 / repair_hours;
    // t < domains always (t <= m * domains / (k + m) < domains), so every
    // transient state has a positive failure rate.
    let h = hitting_times(&birth_death(domains, t, lambda, mu, parallel_repair));
    let (mttdl, degraded_mttdl) = (h[0], h[degraded]);
    let p = annual_loss(mttdl);
    let dp = annual_loss(degraded_mttdl);
    Ok(DurabilityEstimate {
        tolerated_domain_failures: t,
        mttdl_hours: mttdl,
        annual_loss_probability: p,
        nines: -p.log10(),
        degraded_mttdl_hours: degraded_mttdl,
        degraded_annual_loss_probability: dp,
        degraded_nines: -dp.log10(),
        degraded_loss_before_repair: loss_before_repair(
            domains,
            t,
            lambda,
            mu,
            parallel_repair,
            degraded,
        ),
    })
}

/// Probability that the chain started in state `start` (domains down)
/// reaches data loss (`t + 1` down) before full repair (0 down): the
/// birth-death ruin probability `sum_{j<start} rho_j / sum_{j<=t} rho_j`
/// with `rho_j = prod_{i=1..j} down_i / up_i`.
fn loss_before_repair(
    d: usize,
    t: usize,
    lambda: f64,
    mu: f64,
    parallel: bool,
    start: usize,
) -> f64 {
    if start == 0 {
        return 0.0;
    }
    let mut rho = vec![1.0f64; t + 1];
    for j in 1..=t {
        let up = (d - j) as f64 * lambda;
        let down = if parallel { j as f64 * mu } else { mu };
        rho[j] = rho[j - 1] * down / up;
    }
    let total: f64 = rho.iter().sum();
    rho[..start].iter().sum::<f64>() / total
}

/// Rates of a continuous-time chain with transient states `0..n` and one
/// absorbing state: `rate[i][j]` (i != j) between transient states and
/// `absorb[i]` into the absorbing state. Diagonals are unused.
struct Chain {
    rate: Vec<Vec<f64>>,
    absorb: Vec<f64>,
}

/// The failed-domain chain: transient states `0..=t`, loss at `t + 1`.
fn birth_death(d: usize, t: usize, lambda: f64, mu: f64, parallel: bool) -> Chain {
    let n = t + 1;
    let mut rate = vec![vec![0.0; n]; n];
    let mut absorb = vec![0.0; n];
    for i in 0..n {
        let fail = (d - i) as f64 * lambda;
        if i + 1 < n {
            rate[i][i + 1] = fail;
        } else {
            absorb[i] = fail;
        }
        if i > 0 {
            rate[i][i - 1] = if parallel { i as f64 * mu } else { mu };
        }
    }
    Chain { rate, absorb }
}

/// Expected time to absorption from each transient state: the solution of
/// `out_i * h_i - sum_{j != i} rate[i][j] * h_j = 1`, with `out_i` the total
/// rate out of `i`. Gaussian elimination in the GTH form: eliminating state
/// `s` folds its transitions into the others (`rate[i][j] += rate[i][s] *
/// rate[s][j] / out_s`, likewise for `absorb` and the right-hand side), and
/// each pivot `out_s` is recomputed as the sum of the remaining outgoing
/// rates instead of by subtraction. Every quantity stays a sum of
/// positives, so nothing cancels. Requires absorption to be reachable from
/// every state.
fn hitting_times(chain: &Chain) -> Vec<f64> {
    let n = chain.absorb.len();
    let mut rate = chain.rate.clone();
    let mut absorb = chain.absorb.clone();
    let mut rhs = vec![1.0; n];
    let mut pivot = vec![0.0; n];
    for s in (0..n).rev() {
        let (above, below) = rate.split_at_mut(s);
        let row_s = &below[0][..s];
        let out: f64 = absorb[s] + row_s.iter().sum::<f64>();
        pivot[s] = out;
        for (i, row_i) in above.iter_mut().enumerate() {
            let f = row_i[s] / out;
            if f == 0.0 {
                continue;
            }
            for (j, (r, &x)) in row_i.iter_mut().zip(row_s).enumerate() {
                if j != i {
                    *r += f * x;
                }
            }
            absorb[i] += f * absorb[s];
            rhs[i] += f * rhs[s];
        }
    }
    let mut h = vec![0.0; n];
    for s in 0..n {
        let back: f64 = rate[s][..s].iter().zip(&h).map(|(r, x)| r * x).sum();
        h[s] = (rhs[s] + back) / pivot[s];
    }
    h
}

#[cfg(test)]
mod loss_tests {
    use super::*;

    #[test]
    fn the_risk_while_degraded_grows_with_the_shards_lost() {
        // 6 members, 4+2, AFR 1.5 %, 10 h repair
        let mut input = DurabilityInput::new(4, 2, 6, 6, 10.0);
        let healthy = estimate(&input).unwrap();
        assert_eq!(healthy.degraded_loss_before_repair, 0.0);
        input.degraded = 1;
        let one = estimate(&input).unwrap().degraded_loss_before_repair;
        input.degraded = 2;
        let two = estimate(&input).unwrap().degraded_loss_before_repair;
        // by hand, one down: loss needs two more failures before the repair
        // (10 h) ends: about (5 λ · 10 h) · (4 λ · 10 h), since the second
        // must also beat the repair of the first
        let l = -(1.0f64 - 0.015).ln() / HOURS_PER_YEAR;
        let approx_one = (5.0 * l * 10.0) * (4.0 * l * 10.0);
        assert!(
            (one / approx_one - 1.0).abs() < 0.01,
            "{one} vs {approx_one}"
        );
        // two down: one more failure within the repair
        let approx_two = 4.0 * l * 10.0;
        assert!(
            (two / approx_two - 1.0).abs() < 0.01,
            "{two} vs {approx_two}"
        );
        assert!(two > one && one > healthy.annual_loss_probability / 1e3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(k: usize, m: usize, n: usize, d: usize, afr: f64, repair: f64) -> DurabilityInput {
        DurabilityInput {
            afr,
            ..DurabilityInput::new(k, m, n, d, repair)
        }
    }

    fn rel(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    /// MTTDL of the m = 2 chain (states 0, 1, 2; loss at 3), solved on
    /// paper (docs/durability-model.md): with a_i = (d - i) lambda and
    /// repair rates b1, b2,
    /// h0 = 1/a0 + (a0 + b1)/(a0 a1) + (a0 a1 + b2 (a0 + b1))/(a0 a1 a2).
    fn mttdl_m2(d: f64, lambda: f64, b1: f64, b2: f64) -> f64 {
        let (a0, a1, a2) = (d * lambda, (d - 1.0) * lambda, (d - 2.0) * lambda);
        1.0 / a0 + (a0 + b1) / (a0 * a1) + (a0 * a1 + b2 * (a0 + b1)) / (a0 * a1 * a2)
    }

    /// Birth-death hitting time by first differences: with
    /// delta_i = h_i - h_{i+1}, state i gives
    /// a_i delta_i = 1 + b_i delta_{i-1}, and h_j = sum_{i >= j} delta_i.
    fn mttdl_recurrence(d: usize, t: usize, lambda: f64, mu: f64, parallel: bool) -> Vec<f64> {
        let mut delta = Vec::new();
        let mut prev = 0.0;
        for i in 0..=t {
            let b = match (i, parallel) {
                (0, _) => 0.0,
                (_, true) => i as f64 * mu,
                (_, false) => mu,
            };
            prev = (1.0 + b * prev) / ((d - i) as f64 * lambda);
            delta.push(prev);
        }
        (0..=t).map(|j| delta[j..].iter().sum()).collect()
    }

    #[test]
    fn hand_check_six_members_four_plus_two() {
        let e = estimate(&input(4, 2, 6, 6, 0.015, 10.0)).unwrap();
        let lambda = -(1.0f64 - 0.015).ln() / 8766.0;
        let mu = 1.0 / 10.0;
        let want = mttdl_m2(6.0, lambda, mu, mu);
        assert_eq!(e.tolerated_domain_failures, 2);
        assert!(
            rel(e.mttdl_hours, want) < 1e-9,
            "{} vs {want}",
            e.mttdl_hours
        );
        let p = 1.0 - (-8766.0 / want).exp();
        assert!(rel(e.annual_loss_probability, p) < 1e-6);
        assert!(e.nines > 6.0 && e.nines < 12.0, "nines {}", e.nines);
        let par = estimate(&DurabilityInput {
            parallel_repair: true,
            ..input(4, 2, 6, 6, 0.015, 10.0)
        })
        .unwrap();
        assert!(rel(par.mttdl_hours, mttdl_m2(6.0, lambda, mu, 2.0 * mu)) < 1e-9);
        let deg1 = estimate(&DurabilityInput {
            degraded: 1,
            ..input(4, 2, 6, 6, 0.015, 10.0)
        })
        .unwrap();
        let deg2 = estimate(&DurabilityInput {
            degraded: 2,
            ..input(4, 2, 6, 6, 0.015, 10.0)
        })
        .unwrap();
        println!("lambda = {lambda:.6e} /h, mu = {mu} /h");
        println!("healthy: {e:#?}");
        println!(
            "parallel repair: mttdl {:.6e} h, P {:.6e}, nines {:.4}",
            par.mttdl_hours, par.annual_loss_probability, par.nines
        );
        for (j, x) in [(1, &deg1), (2, &deg2)] {
            println!(
                "degraded {j}: mttdl {:.9e} h, P {:.9e}, nines {:.6}",
                x.degraded_mttdl_hours, x.degraded_annual_loss_probability, x.degraded_nines
            );
        }
        let approx = mu * mu / (6.0 * 5.0 * 4.0 * lambda.powi(3));
        println!(
            "approximation mu^2/(6*5*4 lambda^3) = {approx:.6e} h (rel {:.2e})",
            rel(approx, want)
        );
    }

    #[test]
    fn dense_solve_matches_recurrence() {
        for &parallel in &[false, true] {
            for m in 0..=8 {
                for &(afr, repair) in &[(0.015, 10.0), (0.001, 1.0), (0.3, 500.0), (1e-6, 0.01)] {
                    let k = 4;
                    let d = k + m + 2;
                    let x = DurabilityInput {
                        parallel_repair: parallel,
                        ..input(k, m, d, d, afr, repair)
                    };
                    let want = mttdl_recurrence(d, m, lambda_per_hour(afr), 1.0 / repair, parallel);
                    for (j, w) in want.iter().enumerate() {
                        let e = estimate(&DurabilityInput {
                            degraded: j,
                            ..x.clone()
                        })
                        .unwrap();
                        assert!(rel(e.mttdl_hours, want[0]) < 1e-12, "m {m} {afr} {repair}");
                        assert!(rel(e.degraded_mttdl_hours, *w) < 1e-12, "m {m} j {j}");
                    }
                }
            }
        }
    }

    #[test]
    fn approximation_within_one_percent_when_repair_is_fast() {
        for m in 1..=4 {
            let (k, d) = (6, 12);
            let x = input(k, m, d, d, 0.015, 10.0);
            let e = estimate(&x).unwrap();
            let lambda = lambda_per_hour(x.afr);
            let mu = 1.0 / x.repair_hours;
            let denom: f64 = (0..=m).map(|i| (d - i) as f64 * lambda).product();
            let approx = mu.powi(m as i32) / denom;
            assert!(
                rel(approx, e.mttdl_hours) < 0.01,
                "m {m}: {approx} vs {}",
                e.mttdl_hours
            );
        }
    }

    #[test]
    fn fewer_domains_tolerate_fewer_failures() {
        assert_eq!(tolerated_domain_failures(4, 2, 6), 2);
        assert_eq!(tolerated_domain_failures(4, 2, 5), 1);
        assert_eq!(tolerated_domain_failures(4, 2, 4), 1);
        assert_eq!(tolerated_domain_failures(4, 2, 3), 1);
        assert_eq!(tolerated_domain_failures(4, 4, 4), 2);
        assert_eq!(tolerated_domain_failures(4, 1, 4), 0);
        assert_eq!(tolerated_domain_failures(4, 2, 2), 0);
        assert_eq!(tolerated_domain_failures(4, 2, 1), 0);
        let six = estimate(&input(4, 2, 6, 6, 0.015, 10.0)).unwrap();
        let three = estimate(&input(4, 2, 6, 3, 0.015, 10.0)).unwrap();
        assert_eq!(three.tolerated_domain_failures, 1);
        assert!(
            three.nines < six.nines - 2.0,
            "{} vs {}",
            three.nines,
            six.nines
        );
        // One tolerated failure: h0 = 1/a0 + (a0 + mu)/(a0 a1).
        let lambda = lambda_per_hour(0.015);
        let (a0, a1, mu) = (3.0 * lambda, 2.0 * lambda, 0.1);
        let want = 1.0 / a0 + (a0 + mu) / (a0 * a1);
        assert!(rel(three.mttdl_hours, want) < 1e-12);
        // No tolerated failure: the first domain failure loses data.
        let none = estimate(&input(4, 1, 5, 4, 0.015, 10.0)).unwrap();
        assert_eq!(none.tolerated_domain_failures, 0);
        assert!(rel(none.mttdl_hours, 1.0 / (4.0 * lambda)) < 1e-12);
    }

    #[test]
    fn degraded_has_fewer_nines() {
        let healthy = estimate(&input(4, 2, 6, 6, 0.015, 10.0)).unwrap();
        assert_eq!(healthy.degraded_mttdl_hours, healthy.mttdl_hours);
        let mut prev = healthy.nines;
        for j in 1..=2 {
            let e = estimate(&DurabilityInput {
                degraded: j,
                ..input(4, 2, 6, 6, 0.015, 10.0)
            })
            .unwrap();
            assert_eq!(e.nines, healthy.nines);
            assert!(e.degraded_mttdl_hours < e.mttdl_hours);
            assert!(
                e.degraded_nines < prev,
                "degraded {j}: {}",
                e.degraded_nines
            );
            prev = e.degraded_nines;
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        let ok = input(4, 2, 6, 6, 0.015, 10.0);
        let bad = |f: &dyn Fn(&mut DurabilityInput), needle: &str| {
            let mut x = ok.clone();
            f(&mut x);
            let err = estimate(&x).unwrap_err();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        };
        bad(&|x| x.k = 0, "k (data shards)");
        bad(&|x| x.afr = 0.0, "afr");
        bad(&|x| x.afr = 1.0, "afr");
        bad(&|x| x.afr = f64::NAN, "afr");
        bad(&|x| x.repair_hours = 0.0, "repair_hours");
        bad(&|x| x.repair_hours = -1.0, "repair_hours");
        bad(&|x| x.repair_hours = f64::INFINITY, "repair_hours");
        bad(&|x| x.degraded = 3, "degraded");
        bad(&|x| x.domains = 7, "cannot exceed members");
        bad(&|x| x.domains = 0, "at least 1");
        bad(&|x| x.members = 5, "needs at least 6 members");
        bad(
            &|x| {
                x.domains = 3;
                x.degraded = 2;
            },
            "exceeds the tolerated",
        );
        assert!(estimate(&ok).is_ok());
    }
}
