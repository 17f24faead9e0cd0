//! One-line texts the commands print as they go and at the end: a finished bench trial, a
//! capacity step, the capacity answer, a regress trial and the regress verdict. Pure functions of
//! records, so the same words appear on the terminal and in `index.html`.

use super::format::{format_count, format_us};
use crate::flags::Metric;
use crate::record::capacity::{CapacityFile, Step};
use crate::record::regress::{RegressFile, RegressTrial};
use crate::record::trial::TrialRecord;

/// One line per finished bench trial: `[ 3/45] pool c=16 64B t0: 123,456 msg/s, p99 …`.
pub fn trial_line(step: usize, total: usize, record: &TrialRecord) -> String {
    let label = format!(
        "[{:>width$}/{total}] {} c={} {}B t{}",
        step,
        record.cell.server,
        record.cell.connections,
        record.cell.size_bytes,
        record.trial,
        width = total.to_string().len()
    );
    match (&record.figures, &record.failure) {
        (Some(figures), _) => format!(
            "{label}: {} msg/s, p99 {} µs, errors {}{}",
            format_count(figures.messages_per_s),
            format_us(figures.p99_us),
            figures.errors_total,
            match figures.valid {
                Some(false) => format!(" (invalid: {})", figures.invalid_reasons.join("; ")),
                _ => String::new(),
            }
        ),
        (None, Some(failure)) => format!("{label}: FAILED: {failure}"),
        (None, None) => format!("{label}: no result"),
    }
}

/// One line per measured capacity step.
pub fn step_line(step: &Step) -> String {
    let reasons: Vec<String> = step.reasons.iter().map(ToString::to_string).collect();
    format!(
        "  {:>10}/s → achieved {:>10.0}/s, p99 {} µs, errors {}: {}{}",
        step.target_per_s,
        step.achieved_per_s,
        step.latency_us
            .get("p99")
            .and_then(serde_json::Value::as_f64)
            .map_or("-".into(), format_us),
        step.errors,
        match (step.pass, step.counted_as.as_deref()) {
            (true, _) => "pass".to_string(),
            (false, Some("no vote")) => format!("no vote ({})", reasons.join("; ")),
            (false, _) => format!("FAIL ({})", reasons.join("; ")),
        },
        if step.attempt > 1 { " [again]" } else { "" }
    )
}

/// The one-line answer of a capacity search (`capacity: 3,500 msg/s (passes at …)`).
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityAnswer<'a> {
    /// The highest passing rate.
    pub capacity_per_s: Option<u64>,
    /// The lowest failing rate.
    pub first_fail_per_s: Option<u64>,
    /// Set when the first failure was the loadgen's own: the answer is a lower bound.
    pub loadgen_limit_per_s: Option<u64>,
    pub stopped_because: &'a str,
    /// What limited the answer (`capacity.json`'s `limiting_factor`), when known.
    pub limiting_factor: Option<&'a str>,
}

impl<'a> CapacityAnswer<'a> {
    /// The answer `capacity.json` holds.
    pub fn of(file: &'a CapacityFile) -> Self {
        Self {
            capacity_per_s: file.capacity_per_s,
            first_fail_per_s: file.first_fail_per_s,
            loadgen_limit_per_s: file.loadgen_limit_per_s,
            stopped_because: &file.stopped_because,
            limiting_factor: file.limiting_factor.as_deref(),
        }
    }
}

impl std::fmt::Display for CapacityAnswer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |rate: u64| format_count(rate as f64);
        let why = self.stopped_because;
        if let (Some(pass), Some(limit)) = (self.capacity_per_s, self.loadgen_limit_per_s) {
            write!(
                f,
                "capacity: at least {} msg/s (loadgen limit reached at {}",
                count(pass),
                count(limit)
            )?;
            // Searches before steered steps said no more.
            return match self.limiting_factor {
                Some(_) => write!(f, "; {why})"),
                None => f.write_str(")"),
            };
        }
        match (self.capacity_per_s, self.first_fail_per_s) {
            (Some(pass), Some(fail)) => write!(
                f,
                "capacity: {} msg/s (passes at {}, fails at {} msg/s; {why}{})",
                count(pass),
                count(pass),
                count(fail),
                match self.limiting_factor {
                    Some("server") => "; limited by the server",
                    _ => "",
                }
            ),
            (Some(pass), None) => write!(
                f,
                "capacity: at least {} msg/s (no failing rate found: {why})",
                count(pass)
            ),
            (None, Some(fail)) => write!(
                f,
                "capacity: below {} msg/s (every rate tried failed: {why})",
                count(fail)
            ),
            (None, None) => write!(f, "capacity: unknown ({why})"),
        }
    }
}

/// The name of a regress metric in the run's first line.
pub fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Throughput => "throughput",
        Metric::P99 => "p99",
    }
}

/// One line per regress trial: `  pair 0 baseline        12,510 msg/s  errors 0`.
pub fn regress_trial_line(metric: Metric, trial: &RegressTrial) -> String {
    let (value, unit) = match metric {
        Metric::Throughput => (format_count(trial.value), "msg/s"),
        Metric::P99 => (format_us(trial.value), "µs p99"),
    };
    format!(
        "  pair {} {:<9} {:>12} {unit}  errors {}",
        trial.pair,
        trial.side.as_str(),
        value,
        trial.errors
    )
}

/// `verdict: slower (candidate/baseline 0.52, 95% CI 0.50–0.55; threshold 5%)`.
/// Excluded pairs (invalid measurements) are counted in the line. A file the run did not finish
/// says so instead.
pub fn verdict_line(file: &RegressFile) -> String {
    let (Some(verdict), Some(estimate)) = (file.verdict, &file.estimate) else {
        return format!(
            "no verdict: the run stopped after {} pairs",
            file.pairs_run()
        );
    };
    format!(
        "verdict: {} (candidate/baseline {} median {:.3}, 95% CI {:.3}–{:.3} over {} pairs{}; threshold {:.1}%)",
        verdict,
        match file.metric {
            Metric::Throughput => "throughput",
            Metric::P99 => "speed by p99",
        },
        estimate.ratio,
        estimate.ci.low,
        estimate.ci.high,
        estimate.pairs,
        if file.excluded_pairs.is_empty() {
            String::new()
        } else {
            format!(", {} excluded", file.excluded_pairs.len())
        },
        file.threshold * 100.0
    )
}
