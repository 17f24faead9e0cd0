//! The gate's rules, pure functions over measured figures: ABBA order, the per-pair ratio
//! (below 1 always means slower), which pairs count ([`judge_pair`], with typed
//! [`PairProblem`]s and [`CandidateFailure`]s), and the verdict from the paired estimate.

use anyhow::Result;

use crate::error::input_error;
use crate::flags::Metric;
use crate::record::loadgen_report::ReportFigures;
use crate::record::regress::{Side, Verdict};
use crate::stats::RatioEstimate;

/// Slower/faster only when the whole interval lies beyond the threshold.
pub fn verdict(estimate: &RatioEstimate, threshold: f64) -> Verdict {
    if estimate.ci.high < 1.0 - threshold {
        Verdict::Slower
    } else if estimate.ci.low > 1.0 + threshold {
        Verdict::Faster
    } else {
        Verdict::NoChange
    }
}

/// Parses `5%` or `0.05` into a fraction.
pub fn parse_threshold(text: &str) -> Result<f64> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| input_error(format!("--threshold {text:?}: expected e.g. 5% or 0.05")))?;
    if !(0.0..1.0).contains(&value) {
        return Err(input_error(format!(
            "--threshold {text:?} must be between 0% and 100%"
        )));
    }
    Ok(value)
}

/// Why a pair is left out of the estimate.
#[derive(Debug, Clone, PartialEq)]
pub enum PairProblem {
    /// That side's loadgen verified no message.
    VerifiedNothing(Side),
    /// That side's loadgen said `valid: false`, for these reasons.
    Invalid { side: Side, reasons: Vec<String> },
    /// The baseline had this many errors.
    BaselineErrors(u64),
}

impl std::fmt::Display for PairProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::VerifiedNothing(side) => write!(f, "{side} verified no messages"),
            Self::Invalid { side, reasons } => {
                write!(f, "{side} measurement invalid ({})", reasons.join("; "))
            }
            Self::BaselineErrors(errors) => write!(f, "baseline had {errors} errors"),
        }
    }
}

/// Why the candidate fails the gate whatever the ratios say: an echo server that drops or
/// corrupts messages is broken, not merely slow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CandidateFailure {
    /// The candidate had this many errors.
    Errors(u64),
    /// The candidate verified no message.
    VerifiedNothing,
}

impl std::fmt::Display for CandidateFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Errors(errors) => write!(f, "candidate had {errors} errors"),
            Self::VerifiedNothing => f.write_str("candidate verified no messages"),
        }
    }
}

/// What one pair contributes: a ratio for the estimate, or why it is excluded; and whether the
/// candidate failed outright (errors or nothing verified), which fails the gate by itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PairOutcome {
    pub pair: usize,
    pub ratio: Option<f64>,
    /// Why the pair is excluded (empty: it is not).
    pub problems: Vec<PairProblem>,
    pub candidate_failure: Option<CandidateFailure>,
}

impl PairOutcome {
    /// `pair 3: baseline had 2 errors; …` (an entry of `excluded_pairs`) when excluded.
    pub fn excluded_line(&self) -> Option<String> {
        let problems: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        (!problems.is_empty()).then(|| format!("pair {}: {}", self.pair, problems.join("; ")))
    }

    /// `pair 1: candidate had 7 errors` (an entry of `candidate_failures`).
    pub fn candidate_failure_line(&self) -> Option<String> {
        self.candidate_failure
            .map(|failure| format!("pair {}: {failure}", self.pair))
    }
}

/// Judges one pair. A pair is excluded when either side's loadgen said `valid: false` (its
/// numbers cannot be trusted), either side verified nothing, or the baseline had errors. A
/// candidate with errors or nothing verified fails the gate whatever the ratios say.
pub fn judge_pair(
    metric: Metric,
    pair: usize,
    baseline: &ReportFigures,
    candidate: &ReportFigures,
) -> PairOutcome {
    let mut problems = Vec::new();
    for (side, figures) in [(Side::Baseline, baseline), (Side::Candidate, candidate)] {
        if figures.messages_verified == 0 {
            problems.push(PairProblem::VerifiedNothing(side));
        } else if figures.valid == Some(false) {
            problems.push(PairProblem::Invalid {
                side,
                reasons: figures.invalid_reasons.clone(),
            });
        }
    }
    if baseline.errors_total > 0 {
        problems.push(PairProblem::BaselineErrors(baseline.errors_total));
    }
    let candidate_failure = if candidate.errors_total > 0 {
        Some(CandidateFailure::Errors(candidate.errors_total))
    } else if candidate.messages_verified == 0 {
        Some(CandidateFailure::VerifiedNothing)
    } else {
        None
    };
    let ratio = problems.is_empty().then(|| {
        pair_ratio(
            metric,
            metric_value(metric, baseline),
            metric_value(metric, candidate),
        )
    });
    PairOutcome {
        pair,
        ratio,
        problems,
        candidate_failure,
    }
}

/// ABBA order: for pair i, which side runs first (`true` = baseline first).
pub fn baseline_first(pair: usize) -> bool {
    pair.is_multiple_of(2)
}

/// The "speed" ratio of one pair: candidate over baseline for throughput, baseline over
/// candidate for p99 (lower latency is faster). Below 1 means the candidate is slower.
pub fn pair_ratio(metric: Metric, baseline: f64, candidate: f64) -> f64 {
    match metric {
        Metric::Throughput => candidate / baseline,
        Metric::P99 => baseline / candidate,
    }
}

/// The compared value of one trial. A side that verified nothing is not dropped (a server that
/// stops answering is the worst regression): its throughput counts as one message in the window,
/// its p99 as the whole window.
pub fn metric_value(metric: Metric, figures: &ReportFigures) -> f64 {
    let window_s = figures.duration_s.max(1e-3);
    match metric {
        Metric::Throughput if figures.messages_verified == 0 => 1.0 / window_s,
        Metric::Throughput => figures.messages_per_s,
        Metric::P99 if figures.messages_verified == 0 => window_s * 1e6,
        Metric::P99 => figures.p99_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::paired_ratio_median;

    #[test]
    fn thresholds_parse() {
        assert_eq!(parse_threshold("5%").expect("valid"), 0.05);
        assert_eq!(parse_threshold("0.1").expect("valid"), 0.1);
        assert_eq!(
            crate::exit_code(&parse_threshold("fast").expect_err("bad")),
            2
        );
        assert!(parse_threshold("150%").is_err());
    }

    #[test]
    fn abba_alternates() {
        let order: Vec<bool> = (0..4).map(baseline_first).collect();
        assert_eq!(order, [true, false, true, false]);
    }

    #[test]
    fn ratios_point_the_same_way_for_both_metrics() {
        // Candidate with half the throughput, or twice the p99: both are ratio 0.5 (slower).
        assert_eq!(pair_ratio(Metric::Throughput, 1000.0, 500.0), 0.5);
        assert_eq!(pair_ratio(Metric::P99, 100.0, 200.0), 0.5);
    }

    #[test]
    fn verdicts_on_fixed_ratios() {
        let slower = paired_ratio_median(&[0.50, 0.52, 0.49, 0.51, 0.5, 0.53]);
        assert_eq!(verdict(&slower, 0.05), Verdict::Slower);
        let same = paired_ratio_median(&[0.98, 1.03, 1.01, 0.99, 1.0, 0.97]);
        assert_eq!(verdict(&same, 0.05), Verdict::NoChange);
        let faster = paired_ratio_median(&[1.5, 1.55, 1.48, 1.52, 1.6, 1.49]);
        assert_eq!(verdict(&faster, 0.05), Verdict::Faster);
        // Slower by 8% but too noisy to be sure it is beyond 5%: no verdict of slower.
        let noisy = paired_ratio_median(&[0.80, 1.05, 0.90, 0.93, 0.91, 0.94]);
        assert_eq!(verdict(&noisy, 0.05), Verdict::NoChange);
        // One stalled pair among ten does not hide a clear slowdown.
        let stalled =
            paired_ratio_median(&[0.5, 0.52, 0.49, 40.0, 0.51, 0.5, 0.48, 0.53, 0.5, 0.47]);
        assert_eq!(verdict(&stalled, 0.05), Verdict::Slower);
    }

    #[test]
    fn invalid_pairs_are_excluded_and_candidate_errors_fail() {
        let figures = |rate: f64, valid: Option<bool>, errors: u64| ReportFigures {
            messages_per_s: rate,
            messages_verified: 1000,
            duration_s: 1.0,
            p50_us: 10.0,
            p90_us: 10.0,
            p99_us: 10.0,
            p999_us: 10.0,
            max_us: 10.0,
            errors_total: errors,
            valid,
            invalid_reasons: vec!["loadgen saturated".into()],
            saturated: None,
            achieved_ratio: None,
            target_per_s: None,
            starved: None,
        };
        let good = judge_pair(
            Metric::Throughput,
            0,
            &figures(1000.0, Some(true), 0),
            &figures(500.0, None, 0),
        );
        assert_eq!(good.ratio, Some(0.5));
        assert_eq!(good.excluded_line(), None);
        assert_eq!(good.candidate_failure, None);
        for (baseline, candidate) in [
            (
                figures(1000.0, Some(false), 0),
                figures(500.0, Some(true), 0),
            ),
            (
                figures(1000.0, Some(true), 0),
                figures(500.0, Some(false), 0),
            ),
            (
                figures(1000.0, Some(true), 2),
                figures(500.0, Some(true), 0),
            ),
        ] {
            let outcome = judge_pair(Metric::Throughput, 3, &baseline, &candidate);
            assert_eq!(outcome.ratio, None, "{outcome:?}");
            assert!(
                outcome
                    .excluded_line()
                    .is_some_and(|why| why.starts_with("pair 3: ")),
                "{outcome:?}"
            );
        }
        // Every problem of a pair is named, in the words `excluded_pairs` has always had.
        let both = judge_pair(
            Metric::Throughput,
            4,
            &figures(1000.0, Some(false), 2),
            &figures(500.0, Some(false), 0),
        );
        assert_eq!(
            both.problems,
            [
                PairProblem::Invalid {
                    side: Side::Baseline,
                    reasons: vec!["loadgen saturated".into()]
                },
                PairProblem::Invalid {
                    side: Side::Candidate,
                    reasons: vec!["loadgen saturated".into()]
                },
                PairProblem::BaselineErrors(2),
            ]
        );
        assert_eq!(
            both.excluded_line().as_deref(),
            Some(
                "pair 4: baseline measurement invalid (loadgen saturated); candidate measurement \
                 invalid (loadgen saturated); baseline had 2 errors"
            )
        );
        let erring = judge_pair(
            Metric::P99,
            1,
            &figures(1000.0, Some(true), 0),
            &figures(1000.0, Some(true), 7),
        );
        assert_eq!(erring.ratio, Some(1.0));
        assert_eq!(erring.candidate_failure, Some(CandidateFailure::Errors(7)));
        assert_eq!(
            erring.candidate_failure_line().as_deref(),
            Some("pair 1: candidate had 7 errors")
        );
        let mut silent = figures(0.0, Some(false), 0);
        silent.messages_verified = 0;
        let dead = judge_pair(Metric::Throughput, 2, &figures(1000.0, None, 0), &silent);
        assert_eq!(dead.ratio, None);
        assert_eq!(
            dead.candidate_failure_line().as_deref(),
            Some("pair 2: candidate verified no messages")
        );
        assert_eq!(
            dead.excluded_line().as_deref(),
            Some("pair 2: candidate verified no messages")
        );
    }

    #[test]
    fn a_side_that_answered_nothing_still_counts() {
        let figures = |verified: u64, rate: f64, p99: f64| ReportFigures {
            messages_per_s: rate,
            messages_verified: verified,
            duration_s: 2.0,
            p50_us: p99,
            p90_us: p99,
            p99_us: p99,
            p999_us: p99,
            max_us: p99,
            errors_total: 0,
            valid: Some(verified > 100),
            invalid_reasons: vec![],
            saturated: None,
            achieved_ratio: None,
            target_per_s: None,
            starved: None,
        };
        assert_eq!(metric_value(Metric::Throughput, &figures(0, 0.0, 0.0)), 0.5);
        assert_eq!(metric_value(Metric::P99, &figures(0, 0.0, 0.0)), 2e6);
        assert_eq!(
            metric_value(Metric::Throughput, &figures(5000, 2500.0, 90.0)),
            2500.0
        );
        assert_eq!(
            metric_value(Metric::P99, &figures(5000, 2500.0, 90.0)),
            90.0
        );
    }
}
