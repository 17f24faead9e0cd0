//! Statistics for small samples from a noisy machine: median, spread, an order-statistic
//! (sign-test) confidence interval for a median with its exact coverage, and paired ratios
//! (median with a sign-test interval, the one `regress` uses).
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
}
