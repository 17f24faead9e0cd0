//! Statistics for small samples from a noisy machine: median, spread, bootstrap confidence
//! intervals for a median, paired ratios (median with a sign-test interval, the one `regress`
//! uses; and a t-interval on log ratios for comparison).
//!
//! All pure functions over `&[f64]`; randomness comes from a caller-seeded RNG so a run can be
//! reproduced exactly. Tested on fixed samples below.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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

/// Percentile bootstrap 95% confidence interval of the median: `resamples` resamples with
/// replacement from `samples`, seeded. With a single sample the interval is that sample.
pub fn bootstrap_median_ci(samples: &[f64], resamples: usize, seed: u64) -> Interval {
    if samples.len() < 2 {
        let value = samples.first().copied().unwrap_or(f64::NAN);
        return Interval {
            low: value,
            high: value,
        };
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut resample = vec![0.0; samples.len()];
    let mut medians = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for slot in resample.iter_mut() {
            *slot = samples[rng.random_range(0..samples.len())];
        }
        medians.push(median(&resample));
    }
    Interval {
        low: quantile(&medians, 0.025),
        high: quantile(&medians, 0.975),
    }
}

/// Two-sided 95% Student t critical value for `degrees_of_freedom`.
pub fn t_critical_95(degrees_of_freedom: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match degrees_of_freedom {
        0 => f64::INFINITY,
        1..=30 => TABLE[degrees_of_freedom - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// The geometric mean of paired ratios and its 95% interval (t-interval on the log ratios).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RatioEstimate {
    pub ratio: f64,
    pub ci: Interval,
    pub pairs: usize,
}

/// Estimates candidate/baseline from paired ratios (each > 0).
pub fn paired_ratio(ratios: &[f64]) -> RatioEstimate {
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let n = logs.len();
    if n == 0 {
        return RatioEstimate {
            ratio: f64::NAN,
            ci: Interval {
                low: f64::NAN,
                high: f64::NAN,
            },
            pairs: 0,
        };
    }
    let mean = logs.iter().sum::<f64>() / n as f64;
    let half_width = if n < 2 {
        f64::INFINITY
    } else {
        let variance = logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        t_critical_95(n - 1) * (variance / n as f64).sqrt()
    };
    RatioEstimate {
        ratio: mean.exp(),
        ci: Interval {
            low: (mean - half_width).exp(),
            high: (mean + half_width).exp(),
        },
        pairs: n,
    }
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
    fn bootstrap_interval_contains_median_and_stays_within_range() {
        let samples = [98.0, 100.0, 101.0, 103.0, 99.0, 102.0, 100.5];
        let ci = bootstrap_median_ci(&samples, 2000, 7);
        assert!(ci.low <= 100.5 && 100.5 <= ci.high, "{ci:?}");
        assert!(ci.low >= 98.0 && ci.high <= 103.0, "{ci:?}");
        assert!(ci.high - ci.low < 5.0, "{ci:?}");
        // Seeded: the same seed gives the same interval.
        assert_eq!(ci, bootstrap_median_ci(&samples, 2000, 7));
    }

    #[test]
    fn separated_samples_have_disjoint_intervals() {
        let fast = bootstrap_median_ci(&[200.0, 205.0, 198.0, 202.0, 201.0], 1000, 1);
        let slow = bootstrap_median_ci(&[100.0, 104.0, 98.0, 101.0, 99.0], 1000, 1);
        assert!(!fast.overlaps(&slow));
        let close = bootstrap_median_ci(&[199.0, 204.0, 197.0, 210.0, 190.0], 1000, 1);
        assert!(fast.overlaps(&close));
    }

    #[test]
    fn paired_ratio_on_fixed_samples() {
        // Ratios 0.9, 1.0, 1.1: log mean ≈ −0.00336 → geometric mean ≈ 0.99666.
        let estimate = paired_ratio(&[0.9, 1.0, 1.1]);
        assert!((estimate.ratio - 0.996_655).abs() < 1e-5, "{estimate:?}");
        // sd of logs ≈ 0.10034; t(2) = 4.303; half width = 4.303 × 0.10034 / √3 ≈ 0.2493.
        assert!((estimate.ci.low - (-0.003_353_f64 - 0.249_28).exp()).abs() < 1e-3);
        assert!((estimate.ci.high - (-0.003_353_f64 + 0.249_28).exp()).abs() < 1e-3);
        assert_eq!(estimate.pairs, 3);
    }

    #[test]
    fn constant_ratios_give_a_point_interval() {
        let estimate = paired_ratio(&[0.5, 0.5, 0.5, 0.5]);
        assert!((estimate.ratio - 0.5).abs() < 1e-12);
        assert!((estimate.ci.low - 0.5).abs() < 1e-12 && (estimate.ci.high - 0.5).abs() < 1e-12);
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
    fn t_table_edges() {
        assert_eq!(t_critical_95(1), 12.706);
        assert_eq!(t_critical_95(30), 2.042);
        assert_eq!(t_critical_95(1000), 1.960);
    }
}
