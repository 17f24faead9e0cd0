//! The gate's rules, pure functions over measured figures: ABBA order, the per-pair ratio
//! (below 1 always means slower), which pairs count ([`judge_pair`], with typed
//! [`PairProblem`]s and [`CandidateFailure`]s), and the sequential [`Design`] that turns the
//! pairs into a verdict with known error rates.
//!
//! # The design
//!
//! Each usable pair gives a *slowdown* `ln(cost of candidate / cost of baseline)` (cost = CPU
//! per message, 1 / throughput, or p99). At 10, 20, 30, … pairs (and once more when the pairs
//! or the time run out) the gate looks: the Hodges–Lehmann estimate of the slowdowns with its
//! exact Wilcoxon signed-rank interval, each side of which errs with probability
//! `α_look = 1% / looks` (Bonferroni over the planned looks, so stopping at any look keeps the
//! total below 1%). Then, in order:
//! - `slower` when the interval lies above 0 and the estimate beyond the floor (half the
//!   threshold): significant, and not negligible;
//! - `faster`, the mirror image;
//! - `no change` when the interval lies within ± the threshold (equivalence, two one-sided
//!   tests at `α_look`);
//! - otherwise the gate adds pairs; when it may not (the pairs or the budget ran out), the
//!   verdict is `inconclusive`.
//!
//! So a candidate that is not slower is called `slower` with probability at most 1% (however
//! many looks were taken), a candidate a threshold slower is called `no change` with
//! probability at most 1%, and the chance of catching it is as high as the noise allows: every
//! look reports the [`Judgement::minimum_detectable`] change, the rise this run would have
//! caught 95% of the time at its observed pair-to-pair noise. The unit tests below check the
//! rates by simulation on noise measured on a 2-core VM.

use anyhow::Result;
use loadgen::validity::InvalidKind;

use crate::error::input_error;
use crate::flags::Metric;
use crate::record::loadgen_report::ReportFigures;
use crate::record::regress::{Side, Verdict};
use crate::stats::{ShiftEstimate, hodges_lehmann, normal_quantile, robust_sd};

/// The chance of `slower` for a candidate that is not slower, over all looks of one run.
pub const FALSE_ALARM: f64 = 0.01;

/// The chance of `slower` the design aims at for a rise of the threshold (the minimum
/// detectable change is stated at this power).
pub const POWER: f64 = 0.95;

/// Usable pairs at the first look: the fewest whose signed-rank interval reaches each look's
/// error (2⁻¹⁰ < 1%/looks for up to 10 looks).
pub const FIRST_LOOK: usize = 10;

/// Usable pairs between looks.
pub const LOOK_EVERY: usize = 10;

/// The sequential design of one run: the threshold and the most pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Design {
    /// The rise the gate must catch, as a fraction (0.05).
    pub threshold: f64,
    /// The most pairs (`--trials`), at least [`FIRST_LOOK`].
    pub max_pairs: usize,
}

/// What one look at the pairs says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    /// `None`: undecided (more pairs may decide).
    pub decision: Option<Verdict>,
    /// The Hodges–Lehmann slowdown (log of the cost ratio) and its interval.
    pub shift: ShiftEstimate,
    /// The smallest rise of the cost (a fraction: 0.03 = 3%) that this many pairs at the
    /// observed noise catch with probability [`POWER`].
    pub minimum_detectable: f64,
}

impl Design {
    /// The looks planned: at [`FIRST_LOOK`], every [`LOOK_EVERY`] pairs after it, and at
    /// `max_pairs`.
    pub fn looks(&self) -> usize {
        let grid = (self.max_pairs.saturating_sub(FIRST_LOOK)) / LOOK_EVERY + 1;
        if self.is_grid_look(self.max_pairs) {
            grid
        } else {
            grid + 1
        }
    }

    fn is_grid_look(&self, pairs: usize) -> bool {
        pairs >= FIRST_LOOK && (pairs - FIRST_LOOK).is_multiple_of(LOOK_EVERY)
    }

    /// Whether the gate looks after `pairs` usable pairs (besides the last look, taken when
    /// the pairs or the time run out).
    pub fn is_look(&self, pairs: usize) -> bool {
        pairs <= self.max_pairs && (self.is_grid_look(pairs) || pairs == self.max_pairs)
    }

    /// Each side of each look's interval errs with at most this probability.
    pub fn alpha_per_look(&self) -> f64 {
        FALSE_ALARM / self.looks() as f64
    }

    /// The least estimated rise that may be called `slower` (half the threshold), as a
    /// fraction.
    pub fn floor(&self) -> f64 {
        self.threshold / 2.0
    }

    /// Looks at the slowdowns (`ln(cost of candidate / cost of baseline)`, one per usable pair).
    pub fn judge(&self, slowdowns: &[f64]) -> Judgement {
        let alpha = self.alpha_per_look();
        let shift = hodges_lehmann(slowdowns, alpha);
        let limit = (1.0 + self.threshold).ln();
        let floor = (1.0 + self.floor()).ln();
        let decision = if slowdowns.len() < FIRST_LOOK.min(self.max_pairs) {
            None
        } else if shift.ci.low > 0.0 && shift.estimate >= floor {
            Some(Verdict::Slower)
        } else if shift.ci.high < 0.0 && shift.estimate <= -floor {
            Some(Verdict::Faster)
        } else if shift.ci.low > -limit && shift.ci.high < limit {
            Some(Verdict::NoChange)
        } else {
            None
        };
        Judgement {
            decision,
            shift,
            minimum_detectable: self.minimum_detectable(slowdowns),
        }
    }

    /// The smallest rise caught with probability [`POWER`] by this many pairs at their
    /// observed noise: `slower` needs the interval's low end above 0 (`z_α·SE`) and the
    /// estimate beyond the floor, so the rise must exceed the larger of the two by `z_power·SE`.
    /// SE is the Hodges–Lehmann standard error, `√(π/3)·σ/√n` with σ robust (MAD); a fraction.
    pub fn minimum_detectable(&self, slowdowns: &[f64]) -> f64 {
        let n = slowdowns.len();
        if n < 2 {
            return f64::INFINITY;
        }
        let standard_error =
            (std::f64::consts::PI / 3.0).sqrt() * robust_sd(slowdowns) / (n as f64).sqrt();
        let z_alpha = normal_quantile(1.0 - self.alpha_per_look());
        let z_power = normal_quantile(POWER);
        let floor = (1.0 + self.floor()).ln();
        ((z_alpha * standard_error).max(floor) + z_power * standard_error).exp_m1()
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
    /// That side's server CPU was not measured over the window (`--metric cpu`).
    NoCpuFigure(Side),
}

impl std::fmt::Display for PairProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::VerifiedNothing(side) => write!(f, "{side} verified no messages"),
            Self::Invalid { side, reasons } => {
                write!(f, "{side} measurement invalid ({})", reasons.join("; "))
            }
            Self::BaselineErrors(errors) => write!(f, "baseline had {errors} errors"),
            Self::NoCpuFigure(side) => write!(
                f,
                "{side} server CPU not measured over the window (loadgen started late, or /proc unreadable)"
            ),
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
/// numbers cannot be trusted; for `--metric cpu` a loadgen that was only saturated itself still
/// counts), either side verified nothing or lacks the compared figure, or the baseline had
/// errors. A candidate with errors or nothing verified fails the gate whatever the ratios say.
pub fn judge_pair(
    metric: Metric,
    pair: usize,
    baseline: &Measured,
    candidate: &Measured,
) -> PairOutcome {
    let mut problems = Vec::new();
    for (side, measured) in [(Side::Baseline, baseline), (Side::Candidate, candidate)] {
        let figures = measured.figures;
        if figures.messages_verified == 0 {
            problems.push(PairProblem::VerifiedNothing(side));
        } else if figures.valid == Some(false)
            && !(metric == Metric::Cpu && only_loadgen_saturated(figures))
        {
            problems.push(PairProblem::Invalid {
                side,
                reasons: figures.invalid_reasons.clone(),
            });
        } else if metric_value(metric, measured).is_none() {
            problems.push(PairProblem::NoCpuFigure(side));
        }
    }
    if baseline.figures.errors_total > 0 {
        problems.push(PairProblem::BaselineErrors(baseline.figures.errors_total));
    }
    let candidate_failure = if candidate.figures.errors_total > 0 {
        Some(CandidateFailure::Errors(candidate.figures.errors_total))
    } else if candidate.figures.messages_verified == 0 {
        Some(CandidateFailure::VerifiedNothing)
    } else {
        None
    };
    let ratio = match (
        problems.is_empty(),
        metric_value(metric, baseline),
        metric_value(metric, candidate),
    ) {
        (true, Some(base), Some(cand)) => Some(pair_ratio(metric, base, cand)),
        _ => None,
    };
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
/// candidate for CPU per message and p99 (less is faster). Below 1 means the candidate is
/// slower; its negative logarithm is the pair's slowdown.
pub fn pair_ratio(metric: Metric, baseline: f64, candidate: f64) -> f64 {
    match metric {
        Metric::Throughput => candidate / baseline,
        Metric::Cpu | Metric::P99 => baseline / candidate,
    }
}

/// What one side of a pair measured: loadgen's figures and the server's CPU per message.
#[derive(Debug, Clone, Copy)]
pub struct Measured<'a> {
    pub figures: &'a ReportFigures,
    /// `None` when the CPU could not be sampled over the window.
    pub cpu_per_message_us: Option<f64>,
}

/// The compared value of one trial (`None`: the CPU was not measured). A side that verified
/// nothing is not dropped (a server that stops answering is the worst regression): its
/// throughput counts as one message in the window, its p99 as the whole window.
pub fn metric_value(metric: Metric, side: &Measured) -> Option<f64> {
    let figures = side.figures;
    let window_s = figures.duration_s.max(1e-3);
    match metric {
        Metric::Throughput if figures.messages_verified == 0 => Some(1.0 / window_s),
        Metric::Throughput => Some(figures.messages_per_s),
        Metric::P99 if figures.messages_verified == 0 => Some(window_s * 1e6),
        Metric::P99 => Some(figures.p99_us),
        Metric::Cpu => side.cpu_per_message_us,
    }
}

/// True when loadgen's only objection is that it was saturated itself: it then measured less
/// throughput than the server could give, but the server's CPU per message still stands.
pub fn only_loadgen_saturated(figures: &ReportFigures) -> bool {
    figures.saturated == Some(true)
        && !figures.invalid_reasons.is_empty()
        && figures
            .kinds()
            .is_some_and(|kinds| kinds == [InvalidKind::Saturated])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn figures(rate: f64, valid: Option<bool>, errors: u64) -> ReportFigures {
        ReportFigures {
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
            invalid_kinds: vec![],
            saturated: None,
            achieved_ratio: None,
            target_per_s: None,
            starved: None,
        }
    }

    fn measured(figures: &ReportFigures) -> Measured<'_> {
        Measured {
            figures,
            cpu_per_message_us: Some(1e6 / figures.messages_per_s.max(1.0)),
        }
    }

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
    fn ratios_point_the_same_way_for_every_metric() {
        // Half the throughput, twice the p99, twice the CPU per message: all ratio 0.5 (slower).
        assert_eq!(pair_ratio(Metric::Throughput, 1000.0, 500.0), 0.5);
        assert_eq!(pair_ratio(Metric::P99, 100.0, 200.0), 0.5);
        assert_eq!(pair_ratio(Metric::Cpu, 2.0, 4.0), 0.5);
    }

    #[test]
    fn looks_and_their_share_of_the_false_alarms() {
        let design = |max_pairs| Design {
            threshold: 0.05,
            max_pairs,
        };
        // 60 pairs: looks at 10, 20, …, 60; each side of each interval errs ≤ 1%/6.
        assert_eq!(design(60).looks(), 6);
        assert!((design(60).alpha_per_look() - 0.01 / 6.0).abs() < 1e-15);
        let looks: Vec<usize> = (1..=60).filter(|&n| design(60).is_look(n)).collect();
        assert_eq!(looks, [10, 20, 30, 40, 50, 60]);
        // 25 pairs: 10, 20, and the last at 25.
        assert_eq!(design(25).looks(), 3);
        assert!(design(25).is_look(25) && !design(25).is_look(30));
        assert_eq!(design(10).looks(), 1);
        assert_eq!(design(60).floor(), 0.025);
    }

    /// `n` slowdowns with mean `shift` and spread `sd`: normal quantiles, so their noise is known
    /// exactly (no randomness).
    fn known_noise(n: usize, shift: f64, sd: f64) -> Vec<f64> {
        (0..n)
            .map(|i| shift + sd * normal_quantile((i as f64 + 0.5) / n as f64))
            .collect()
    }

    #[test]
    fn verdicts_on_synthetic_pairs() {
        let design = Design {
            threshold: 0.05,
            max_pairs: 60,
        };
        let verdict = |slowdowns: &[f64]| design.judge(slowdowns).decision;
        // 8% slower, 1% noise: slower at the first look.
        assert_eq!(verdict(&known_noise(10, 0.08, 0.01)), Some(Verdict::Slower));
        assert_eq!(
            verdict(&known_noise(10, -0.08, 0.01)),
            Some(Verdict::Faster)
        );
        assert_eq!(
            verdict(&known_noise(10, 0.0, 0.01)),
            Some(Verdict::NoChange)
        );
        // 1.5% slower and precisely measured: significant, but below the floor: no change.
        assert_eq!(
            verdict(&known_noise(40, 0.015, 0.005)),
            Some(Verdict::NoChange)
        );
        // 4% slower at 4% noise and 10 pairs: neither slower nor within ±5%: undecided.
        assert_eq!(verdict(&known_noise(10, 0.04, 0.04)), None);
        // Fewer pairs than the first look decide nothing.
        assert_eq!(verdict(&known_noise(9, 0.5, 0.001)), None);
        // One stalled pair (a baseline that stalled: a huge negative slowdown): at ten pairs
        // the interval reaches to it (each side may err only 1%/6 = 2⁻⁹·⁶, and ten signs give
        // 2⁻¹⁰), so the gate asks for more; at twenty it no longer hides a clear slowdown.
        let mut stalled = known_noise(20, 0.10, 0.01);
        stalled[4] = -3.0;
        assert_eq!(verdict(&stalled[..10]), None);
        assert_eq!(verdict(&stalled), Some(Verdict::Slower));
    }

    #[test]
    fn the_minimum_detectable_change_follows_the_noise() {
        let design = Design {
            threshold: 0.05,
            max_pairs: 60,
        };
        // Tiny noise: the floor decides: 2.5% plus a little.
        let quiet = design.minimum_detectable(&known_noise(10, 0.0, 0.001));
        assert!((0.025..0.027).contains(&quiet), "{quiet}");
        // Known noise σ = 8% over 40 pairs: SE = √(π/3)·0.08/√40 = 1.294%; z(1 − 1%/6) = 2.935
        // (3.80% > the floor, 2.47% in the log), z(95%) = 1.645: (2.935 + 1.645) × 1.294% =
        // 5.93% in the log, 6.11% as a rise.
        let noisy = design.minimum_detectable(&known_noise(40, 0.0, 0.08));
        assert!((noisy - 0.0611).abs() < 0.001, "{noisy}");
        // Twice the noise needs four times the pairs for the same.
        let more = design.minimum_detectable(&known_noise(160, 0.0, 0.16));
        assert!((more - noisy).abs() < 0.002, "{more} vs {noisy}");
        // Below that, the floor: σ = 4% over 40 pairs would give 2.96% by the interval alone,
        // but `slower` also needs an estimate of 2.5%: 2.47% + 1.645 × 0.647% = 3.53% (3.60%).
        let floored = design.minimum_detectable(&known_noise(40, 0.0, 0.04));
        assert!((floored - 0.0360).abs() < 0.001, "{floored}");
        assert_eq!(design.minimum_detectable(&[0.1]), f64::INFINITY);
    }

    /// Slowdowns measured on a 2-core VM: the 100 pairs of the event-loop server against itself
    /// in the calibration of docs/perf-gate.md (simultaneous pairs, 16 connections, depth 1,
    /// 1 s windows, CPU per message; `same_slowdowns` of its ten `calibration.json`).
    const MEASURED_SAME: [f64; 100] = [
        0.0135, -0.0089, 0.0032, -0.0007, 0.0157, 0.0041, 0.0019, -0.0003, 0.0033, 0.0002, 0.0195,
        -0.0011, -0.0074, -0.0250, 0.0034, -0.0194, 0.0064, -0.0053, -0.0058, 0.0142, 0.0060,
        -0.0179, 0.0003, 0.0051, 0.0053, -0.0003, -0.0001, -0.0055, 0.0052, -0.0135, 0.0032,
        0.0006, 0.0059, 0.0029, -0.0105, 0.0100, 0.0088, -0.0038, 0.0055, -0.0027, -0.0018, 0.0150,
        0.0136, 0.0094, 0.0135, 0.0061, 0.0122, -0.0123, -0.0017, -0.0028, -0.0051, 0.0135, 0.0118,
        0.0030, -0.0035, -0.0088, -0.0030, 0.0013, 0.0011, -0.0054, 0.0009, 0.0089, 0.0063, 0.0006,
        -0.0014, 0.0027, 0.0024, -0.0034, 0.0112, -0.0023, -0.0061, -0.0072, 0.0039, -0.0025,
        -0.0023, 0.0013, 0.0174, -0.0183, 0.0026, -0.0001, -0.0025, -0.0122, -0.0101, 0.0131,
        0.0094, 0.0041, 0.0049, -0.0046, 0.0002, -0.0003, -0.0056, 0.0040, 0.0032, -0.0093, 0.0029,
        0.0029, -0.0078, -0.0080, -0.0074, -0.0049,
    ];

    /// Runs the sequential gate `runs` times on pairs drawn (with replacement) from `noise`,
    /// with a random sign, scaled by `scale` and shifted by `shift`; returns how often each
    /// verdict came out (slower, faster, no change, inconclusive). The random sign is the null
    /// model of a server against itself: its two sides are exchangeable, so a slowdown and its
    /// negative are equally likely (a sample of ten is not symmetric by chance alone).
    fn simulate(noise: &[f64], scale: f64, shift: f64, runs: usize, seed: u64) -> [usize; 4] {
        let design = Design {
            threshold: 0.05,
            max_pairs: 60,
        };
        let center = crate::stats::median(noise);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut counts = [0; 4];
        for _ in 0..runs {
            let mut slowdowns = Vec::with_capacity(design.max_pairs);
            let verdict = loop {
                let draw = noise[rng.random_range(0..noise.len())] - center;
                let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
                slowdowns.push(shift + scale * sign * draw);
                if design.is_look(slowdowns.len()) {
                    if let Some(verdict) = design.judge(&slowdowns).decision {
                        break Some(verdict);
                    }
                    if slowdowns.len() == design.max_pairs {
                        break None;
                    }
                }
            };
            counts[match verdict {
                Some(Verdict::Slower) => 0,
                Some(Verdict::Faster) => 1,
                Some(Verdict::NoChange) => 2,
                _ => 3,
            }] += 1;
        }
        counts
    }

    #[test]
    fn the_design_keeps_its_error_rates_on_measured_noise() {
        let rise = 1.05_f64.ln();
        let same = simulate(&MEASURED_SAME, 1.0, 0.0, 2000, 1);
        let slower = simulate(&MEASURED_SAME, 1.0, rise, 2000, 2);
        // [slower, faster, no change, inconclusive]; `--nocapture` shows them.
        eprintln!("measured noise: itself {same:?}, +5% {slower:?}");
        assert!(same[0] <= 20, "false alarms {same:?}");
        assert!(slower[0] >= 1900, "power at +5% {slower:?}");
        assert_eq!(slower[2], 0, "a 5% rise called no change: {slower:?}");
    }

    #[test]
    fn the_false_alarm_rate_holds_where_the_noise_is_large() {
        // Ten times the measured noise (as one-after-the-other pairs see it): the intervals,
        // not the floor, decide, and the sequential looks must still keep false alarms ≤ 1%.
        let same = simulate(&MEASURED_SAME, 10.0, 0.0, 3000, 3);
        // A 5% rise at that noise is often undecided when the pairs run out, never no change.
        let slower = simulate(&MEASURED_SAME, 10.0, 1.05_f64.ln(), 1000, 4);
        eprintln!("10 × the measured noise: itself {same:?}, +5% {slower:?}");
        assert!(same[0] <= 36, "false alarms {same:?}"); // 1% + 2 standard errors
        assert!(slower[2] <= 10, "{slower:?}");
        assert!(slower[0] + slower[3] >= 990, "{slower:?}");
    }

    /// Fills in the CPU figure of a side.
    fn with_cpu(figures: &ReportFigures, cpu: Option<f64>) -> Measured<'_> {
        Measured {
            figures,
            cpu_per_message_us: cpu,
        }
    }

    #[test]
    fn invalid_pairs_are_excluded_and_candidate_errors_fail() {
        let (fast, slow) = (figures(1000.0, Some(true), 0), figures(500.0, None, 0));
        let good = judge_pair(Metric::Throughput, 0, &measured(&fast), &measured(&slow));
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
            let outcome = judge_pair(
                Metric::Throughput,
                3,
                &measured(&baseline),
                &measured(&candidate),
            );
            assert_eq!(outcome.ratio, None, "{outcome:?}");
            assert!(
                outcome
                    .excluded_line()
                    .is_some_and(|why| why.starts_with("pair 3: ")),
                "{outcome:?}"
            );
        }
        // Every problem of a pair is named, in the words `excluded_pairs` has always had.
        let (bad_base, bad_cand) = (
            figures(1000.0, Some(false), 2),
            figures(500.0, Some(false), 0),
        );
        let both = judge_pair(
            Metric::Throughput,
            4,
            &measured(&bad_base),
            &measured(&bad_cand),
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
        let (clean, erring) = (
            figures(1000.0, Some(true), 0),
            figures(1000.0, Some(true), 7),
        );
        let outcome = judge_pair(Metric::P99, 1, &measured(&clean), &measured(&erring));
        assert_eq!(outcome.ratio, Some(1.0));
        assert_eq!(outcome.candidate_failure, Some(CandidateFailure::Errors(7)));
        assert_eq!(
            outcome.candidate_failure_line().as_deref(),
            Some("pair 1: candidate had 7 errors")
        );
        let mut silent = figures(0.0, Some(false), 0);
        silent.messages_verified = 0;
        let base = figures(1000.0, None, 0);
        let dead = judge_pair(Metric::Throughput, 2, &measured(&base), &measured(&silent));
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
    fn the_cpu_metric_keeps_pairs_whose_loadgen_was_only_saturated() {
        let mut saturated = figures(1000.0, Some(false), 0);
        saturated.saturated = Some(true);
        // Worded as a loadgen from before `invalid_kinds` worded it.
        saturated.invalid_reasons = vec![
            "the load generator was saturated: its busiest thread was busy 99% of the time".into(),
        ];
        let fine = figures(1000.0, Some(true), 0);
        let cpu = judge_pair(
            Metric::Cpu,
            0,
            &with_cpu(&saturated, Some(2.0)),
            &with_cpu(&fine, Some(2.5)),
        );
        assert_eq!(cpu.ratio, Some(0.8));
        // Throughput from a saturated loadgen is the loadgen's, not the server's: excluded.
        let throughput = judge_pair(
            Metric::Throughput,
            0,
            &with_cpu(&saturated, Some(2.0)),
            &with_cpu(&fine, Some(2.5)),
        );
        assert_eq!(throughput.ratio, None);
        // The kinds decide where the report has them, whatever the words.
        let mut typed = saturated.clone();
        typed.invalid_reasons = vec!["busy".into()];
        typed.invalid_kinds = vec![InvalidKind::Saturated];
        assert!(only_loadgen_saturated(&typed));
        typed.invalid_kinds = vec![InvalidKind::Saturated, InvalidKind::FewSamples];
        assert!(!only_loadgen_saturated(&typed));
        // Words no loadgen writes: the kinds cannot be told, and the pair is not kept.
        typed.invalid_kinds.clear();
        assert!(!only_loadgen_saturated(&typed));
        // Any other objection still excludes, and so does a missing CPU figure.
        saturated
            .invalid_reasons
            .push("only 12 latency samples (fewer than 100)".into());
        let other = judge_pair(
            Metric::Cpu,
            0,
            &with_cpu(&saturated, Some(2.0)),
            &with_cpu(&fine, Some(2.5)),
        );
        assert_eq!(other.ratio, None);
        let unmeasured = judge_pair(
            Metric::Cpu,
            5,
            &with_cpu(&fine, Some(2.0)),
            &with_cpu(&fine, None),
        );
        assert_eq!(
            unmeasured.problems,
            [PairProblem::NoCpuFigure(Side::Candidate)]
        );
        assert!(
            unmeasured
                .excluded_line()
                .is_some_and(|line| line.contains("candidate server CPU not measured")),
            "{unmeasured:?}"
        );
    }

    #[test]
    fn a_side_that_answered_nothing_still_counts() {
        let answered = |verified: u64, rate: f64, p99: f64| ReportFigures {
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
            invalid_kinds: vec![],
            saturated: None,
            achieved_ratio: None,
            target_per_s: None,
            starved: None,
        };
        let (nothing, some) = (answered(0, 0.0, 0.0), answered(5000, 2500.0, 90.0));
        let value = |metric, figures| metric_value(metric, &with_cpu(figures, None));
        assert_eq!(value(Metric::Throughput, &nothing), Some(0.5));
        assert_eq!(value(Metric::P99, &nothing), Some(2e6));
        assert_eq!(value(Metric::Throughput, &some), Some(2500.0));
        assert_eq!(value(Metric::P99, &some), Some(90.0));
        assert_eq!(value(Metric::Cpu, &some), None);
    }
}
