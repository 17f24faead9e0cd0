//! Statistics for small samples from a noisy machine: median, spread, an order-statistic
//! (sign-test) confidence interval for a median with its exact coverage, paired ratios (median
//! with a sign-test interval), and what `regress` judges with: the Hodges–Lehmann estimate of a
//! location shift with its exact Wilcoxon signed-rank interval ([`hodges_lehmann`]), a robust
//! spread ([`robust_sd`]) and normal quantiles ([`normal_quantile`]).
//!
//! All pure, deterministic functions over `&[f64]`. Tested on fixed samples below.

/// The median (mean of the two middle values for an even count); `NaN` for no samples.
pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// (max − min) / median × 100: how far apart the trials of one cell lie, in percent.
pub fn spread_percent(samples: &[f64]) -> f64 {
    let middle = median(samples);
    if samples.is_empty() || middle == 0.0 {
        return f64::NAN;
    }
    let (min, max) = min_max(samples);
    (max - min) / middle * 100.0
}

/// (min, max) of the samples.
pub fn min_max(samples: &[f64]) -> (f64, f64) {
    samples
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), &x| {
            (low.min(x), high.max(x))
        })
}

/// The `q`-quantile (0..=1) with linear interpolation between order statistics.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let fraction = position - below as f64;
    sorted[below] + (sorted[above] - sorted[below]) * fraction
}

/// A two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// True when the two intervals share at least one point.
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.low <= other.high && other.low <= self.high
    }
}

/// An order-statistic (sign-test) confidence interval for a median and its exact coverage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MedianInterval {
    pub interval: Interval,
    /// The probability (0..=1) that `[x(k), x(n−k+1)]` covers the true median of a continuous
    /// distribution: `1 − 2·P(Binomial(n, ½) ≤ k − 1)`. It depends on `n` only.
    pub coverage: f64,
}

/// Coverage of `[x(k), x(n−k+1)]` for the median of `n` samples (see [`MedianInterval`]).
pub fn order_statistic_coverage(n: usize, k: usize) -> f64 {
    if n == 0 || k == 0 || 2 * k > n + 1 {
        return 0.0;
    }
    let total = 2f64.powi(n as i32);
    let mut coefficient = 1.0; // C(n, j)
    let mut tail = 0.0;
    for j in 0..k {
        tail += coefficient / total;
        coefficient = coefficient * (n - j) as f64 / (j + 1) as f64;
    }
    (1.0 - 2.0 * tail).max(0.0)
}

/// The distribution-free confidence interval for the median of `samples`: the order statistics
/// `[x(k), x(n−k+1)]` with the largest `k` whose coverage is still at least 95% (n ≥ 6), or the
/// sample range (`k = 1`) for smaller `n`, whose coverage is only `1 − 2^(1−n)`: 75% at n = 3,
/// 87.5% at 4, 93.75% at 5. The coverage is returned so callers label the interval honestly
/// (a percentile bootstrap of the median at n ≤ 5 also lands on min and max but claims 95%).
pub fn median_ci(samples: &[f64]) -> MedianInterval {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return MedianInterval {
            interval: Interval {
                low: f64::NAN,
                high: f64::NAN,
            },
            coverage: 0.0,
        };
    }
    let k = sign_test_rank(n).unwrap_or(1);
    MedianInterval {
        interval: Interval {
            low: sorted[k - 1],
            high: sorted[n - k],
        },
        coverage: order_statistic_coverage(n, k),
    }
}

/// A paired estimate of candidate/baseline: the ratio, its interval and how many pairs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RatioEstimate {
    pub ratio: f64,
    pub ci: Interval,
    pub pairs: usize,
}

/// Order-statistic rank `k` (1-based) such that `[x(k), x(n−k+1)]` covers the median with at
/// least 95% confidence (sign test); `None` when `n` is too small for that (n < 6).
pub fn sign_test_rank(n: usize) -> Option<usize> {
    // P(Binomial(n, 1/2) <= k - 1) <= 0.025, for the largest such k.
    let mut cumulative = 0.0;
    let mut coefficient = 1.0; // C(n, j)
    let total = 2f64.powi(n as i32);
    let mut best = None;
    for j in 0..n {
        cumulative += coefficient / total;
        if cumulative > 0.025 {
            break;
        }
        best = Some(j + 1);
        coefficient = coefficient * (n - j) as f64 / (j + 1) as f64;
    }
    best
}

/// A robust paired estimate: the median of the ratios with a distribution-free (sign test)
/// interval of at least 95%, `[x(k), x(n−k+1)]`. One stalled trial moves neither the estimate
/// nor the interval much, which is what a shared noisy machine needs. With fewer than 6 pairs
/// the interval is unbounded (0, ∞): too few pairs for any verdict.
pub fn paired_ratio_median(ratios: &[f64]) -> RatioEstimate {
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let ci = match sign_test_rank(n) {
        Some(k) => Interval {
            low: sorted[k - 1],
            high: sorted[n - k],
        },
        None => Interval {
            low: 0.0,
            high: f64::INFINITY,
        },
    };
    RatioEstimate {
        ratio: median(&sorted),
        ci,
        pairs: n,
    }
}

/// The standard normal quantile Φ⁻¹(p) for 0 < p < 1 (Acklam's rational approximation,
/// relative error below 1.2e-9); ±∞ at 0 and 1, NaN outside.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let tail = |q: f64| {
        let r = (-2.0 * q.ln()).sqrt();
        (((((C[0] * r + C[1]) * r + C[2]) * r + C[3]) * r + C[4]) * r + C[5])
            / ((((D[0] * r + D[1]) * r + D[2]) * r + D[3]) * r + 1.0)
    };
    if p < 0.02425 {
        tail(p)
    } else if p > 1.0 - 0.02425 {
        -tail(1.0 - p)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// A robust standard deviation: 1.4826 × the median absolute deviation from the median (the
/// standard deviation for normal data; one wild sample barely moves it). 0 for fewer than 2.
pub fn robust_sd(samples: &[f64]) -> f64 {
    if samples.len() < 2 {
        return 0.0;
    }
    let middle = median(samples);
    let deviations: Vec<f64> = samples.iter().map(|x| (x - middle).abs()).collect();
    1.4826 * median(&deviations)
}

/// `P(T⁺ ≤ t)` for t = 0, 1, …, n(n+1)/2: the exact null distribution of the Wilcoxon
/// signed-rank statistic of `n` pairs (every sign pattern equally likely).
pub fn signed_rank_cdf(n: usize) -> Vec<f64> {
    let max = n * (n + 1) / 2;
    let mut probability = vec![0.0; max + 1];
    probability[0] = 1.0;
    for rank in 1..=n {
        // Each rank joins the positive sum or not, with probability ½ each.
        for t in (0..=rank * (rank + 1) / 2).rev() {
            let with = if t >= rank {
                probability[t - rank]
            } else {
                0.0
            };
            probability[t] = 0.5 * (probability[t] + with);
        }
    }
    let mut cumulative = 0.0;
    probability
        .into_iter()
        .map(|p| {
            cumulative += p;
            cumulative
        })
        .collect()
}

/// The largest `k ≥ 1` with `P(T⁺ ≤ k − 1) ≤ alpha`: the Walsh averages below the `k`-th
/// smallest then lie below the shift with probability at most `alpha` (one side of the
/// interval). `None` when `n` is too small for `alpha` (2⁻ⁿ > alpha).
pub fn signed_rank_critical(n: usize, alpha: f64) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let cdf = signed_rank_cdf(n);
    let below = cdf.iter().take_while(|&&p| p <= alpha).count();
    (below > 0).then_some(below)
}

/// The Hodges–Lehmann estimate of a location shift and its Wilcoxon signed-rank interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShiftEstimate {
    /// The median of the Walsh averages `(xᵢ + xⱼ)/2, i ≤ j`.
    pub estimate: f64,
    /// Each side misses the true shift with probability at most the `alpha` asked for
    /// (exactly, for a symmetric distribution; `(−∞, ∞)` when `n` is too small for it).
    pub ci: Interval,
    pub n: usize,
}

/// The Hodges–Lehmann estimate of the center of `samples` (paired differences) with the exact
/// Wilcoxon signed-rank interval whose each side errs with probability at most
/// `alpha_one_sided`: `[W(k), W(M−k+1)]` of the `M = n(n+1)/2` sorted Walsh averages. Robust
/// (a wild sample moves it little) and nearly as efficient as the mean for normal data (95.5%).
pub fn hodges_lehmann(samples: &[f64], alpha_one_sided: f64) -> ShiftEstimate {
    let n = samples.len();
    let mut walsh = Vec::with_capacity(n * (n + 1) / 2);
    for i in 0..n {
        for j in i..n {
            walsh.push((samples[i] + samples[j]) / 2.0);
        }
    }
    walsh.sort_by(f64::total_cmp);
    let ci = match signed_rank_critical(n, alpha_one_sided) {
        Some(k) => Interval {
            low: walsh[k - 1],
            high: walsh[walsh.len() - k],
        },
        None => Interval {
            low: f64::NEG_INFINITY,
            high: f64::INFINITY,
        },
    };
    ShiftEstimate {
        estimate: median(&walsh),
        ci,
        n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn spread_is_range_over_median() {
        // range 20, median 100 → 20%.
        assert!((spread_percent(&[90.0, 100.0, 110.0]) - 20.0).abs() < 1e-9);
        assert_eq!(spread_percent(&[5.0, 5.0]), 0.0);
    }

    #[test]
    fn quantile_interpolates() {
        let samples = [10.0, 20.0, 30.0, 40.0, 50.0];
        assert_eq!(quantile(&samples, 0.0), 10.0);
        assert_eq!(quantile(&samples, 1.0), 50.0);
        assert_eq!(quantile(&samples, 0.5), 30.0);
        assert!((quantile(&samples, 0.1) - 14.0).abs() < 1e-9);
    }

    #[test]
    fn median_interval_coverage_is_exact_for_small_samples() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(median_ci(&[1.0]).coverage, 0.0));
        assert!(close(median_ci(&[1.0, 2.0, 3.0]).coverage, 0.75));
        assert!(close(median_ci(&[1.0, 2.0, 3.0, 4.0]).coverage, 0.875));
        assert!(close(
            median_ci(&[1.0, 2.0, 3.0, 4.0, 5.0]).coverage,
            0.9375
        ));
        assert!(close(order_statistic_coverage(6, 1), 1.0 - 2.0 / 64.0));
        for n in 6..40 {
            let ci = median_ci(&(0..n).map(f64::from).collect::<Vec<_>>());
            assert!(ci.coverage >= 0.95, "n={n}: {}", ci.coverage);
        }
    }

    #[test]
    fn median_interval_uses_order_statistics() {
        // n = 3..5: the range; never claimed as 95%.
        let ci = median_ci(&[103.0, 98.0, 100.0]);
        assert_eq!(
            ci.interval,
            Interval {
                low: 98.0,
                high: 103.0
            }
        );
        assert!(ci.coverage < 0.95);
        // n = 9: k = 2, so the second smallest and second largest.
        let samples = [98.0, 100.0, 101.0, 103.0, 99.0, 102.0, 100.5, 90.0, 110.0];
        let ci = median_ci(&samples);
        assert_eq!(
            ci.interval,
            Interval {
                low: 98.0,
                high: 103.0
            }
        );
        assert!(ci.coverage >= 0.95);
        let fast = median_ci(&[200.0, 205.0, 198.0, 202.0, 201.0]).interval;
        let slow = median_ci(&[100.0, 104.0, 98.0, 101.0, 99.0]).interval;
        assert!(!fast.overlaps(&slow));
        let close = median_ci(&[199.0, 204.0, 197.0, 210.0, 190.0]).interval;
        assert!(fast.overlaps(&close));
    }

    #[test]
    fn sign_test_ranks() {
        assert_eq!(sign_test_rank(5), None);
        assert_eq!(sign_test_rank(6), Some(1)); // 1 - 2/64 = 96.9%
        assert_eq!(sign_test_rank(9), Some(2)); // 1 - 2·10/512 = 96.1%
        assert_eq!(sign_test_rank(10), Some(2));
        assert_eq!(sign_test_rank(20), Some(6)); // 1 - 2·0.0207 = 95.9%
    }

    #[test]
    fn median_ratio_shrugs_off_one_stalled_pair() {
        // Five pairs at 0.5 and one where the baseline stalled (ratio 40): still clearly slower.
        let estimate = paired_ratio_median(&[0.5, 0.52, 0.49, 40.0, 0.51, 0.5]);
        assert_eq!(estimate.ratio, 0.505);
        assert_eq!(
            estimate.ci,
            Interval {
                low: 0.49,
                high: 40.0
            }
        );
        let estimate =
            paired_ratio_median(&[0.5, 0.52, 0.49, 40.0, 0.51, 0.5, 0.48, 0.53, 0.5, 0.47]);
        assert_eq!(
            estimate.ci,
            Interval {
                low: 0.48,
                high: 0.53
            }
        );
        // Too few pairs: no bounded interval.
        assert_eq!(paired_ratio_median(&[0.5, 0.5, 0.5]).ci.high, f64::INFINITY);
    }

    #[test]
    fn normal_quantiles() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(close(normal_quantile(0.5), 0.0));
        assert!(close(normal_quantile(0.975), 1.959_964));
        assert!(close(normal_quantile(0.95), 1.644_854));
        assert!(close(normal_quantile(0.01), -2.326_348));
        assert!(close(normal_quantile(0.001), -3.090_232));
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(1.5).is_nan());
    }

    #[test]
    fn robust_sd_ignores_a_wild_sample() {
        // MAD of (1 … 9) is 2: 1.4826 × 2.
        let samples: Vec<f64> = (1..=9).map(f64::from).collect();
        assert!((robust_sd(&samples) - 2.9652).abs() < 1e-9);
        let mut wild = samples.clone();
        wild[8] = 1e6;
        assert!((robust_sd(&wild) - 2.9652).abs() < 1e-9);
        assert_eq!(robust_sd(&[3.0]), 0.0);
    }

    #[test]
    fn signed_rank_distribution_matches_its_tables() {
        // n = 3: sums 0..6 from 8 sign patterns, counts 1 1 1 2 1 1 1.
        let cdf = signed_rank_cdf(3);
        let counts: Vec<f64> = cdf.iter().map(|p| (p * 8.0).round()).collect();
        assert_eq!(counts, [1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 8.0]);
        // Textbook critical values (two-sided 5%: T ≤ 8 at n = 10; ≤ 52 at n = 20).
        assert_eq!(signed_rank_critical(10, 0.025), Some(9));
        assert_eq!(signed_rank_critical(20, 0.025), Some(53));
        // 2⁻ⁿ is the smallest tail: n = 6 cannot give a one-sided 1%, n = 7 can.
        assert_eq!(signed_rank_critical(6, 0.01), None);
        assert_eq!(signed_rank_critical(7, 0.01), Some(1));
    }

    #[test]
    fn hodges_lehmann_estimate_and_interval() {
        // Walsh averages of (1, 2, 4): 1, 1.5, 2, 2.5, 3, 4 → median 2.25.
        let estimate = hodges_lehmann(&[1.0, 2.0, 4.0], 0.2);
        assert_eq!(estimate.estimate, 2.25);
        assert_eq!(estimate.n, 3);
        // P(T ≤ 0) = 1/8 ≤ 0.2 < P(T ≤ 1) = 1/4: k = 1, the extreme Walsh averages.
        assert_eq!(
            estimate.ci,
            Interval {
                low: 1.0,
                high: 4.0
            }
        );
        // At 0.25, P(T ≤ 1) = 1/4 is allowed too: k = 2 drops one Walsh average on each side.
        assert_eq!(
            hodges_lehmann(&[1.0, 2.0, 4.0], 0.25).ci,
            Interval {
                low: 1.5,
                high: 3.0
            }
        );
        // Too few samples for the asked error: unbounded.
        assert_eq!(hodges_lehmann(&[1.0, 2.0], 0.01).ci.high, f64::INFINITY);
        // One wild sample among twelve barely moves the estimate.
        let mut samples: Vec<f64> = (0..12).map(|i| 0.05 + 0.001 * f64::from(i % 5)).collect();
        let calm = hodges_lehmann(&samples, 0.01);
        samples[3] = 3.0;
        let wild = hodges_lehmann(&samples, 0.01);
        assert!(
            (wild.estimate - calm.estimate).abs() < 0.002,
            "{calm:?} {wild:?}"
        );
        // The interval widens on the wild side only (the Walsh averages with it sit there).
        assert!(
            wild.ci.low > 0.04 && wild.ci.high > calm.ci.high,
            "{wild:?}"
        );
    }
}
