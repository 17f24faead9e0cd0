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
        "[{:>width$}/{total}] {} t{}",
        step,
        record.cell.label(),
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

/// A step that passed although its loop was late (`capacity::slo::judge_step`).
pub const LATE_PASS: &str =
    "pass (its loop was late, and the SLO held with that lateness inside the latency)";

/// One line per measured capacity step.
pub fn step_line(step: &Step) -> String {
    let reasons: Vec<String> = step.reasons.iter().map(ToString::to_string).collect();
    let line = format!(
        "  {:>10}/s → achieved {:>10.0}/s, p99 {} µs, errors {}: {}{}",
        step.target_per_s,
        step.achieved_per_s,
        step.latency_us
            .get("p99")
            .and_then(serde_json::Value::as_f64)
            .map_or("-".into(), format_us),
        step.errors,
        match (step.pass, step.counted_as.as_deref()) {
            (true, _) if step.valid == Some(false) => LATE_PASS.to_string(),
            (true, _) => "pass".to_string(),
            (false, Some("no vote")) => format!("no vote ({})", reasons.join("; ")),
            (false, _) => format!("FAIL ({})", reasons.join("; ")),
        },
        if step.attempt > 1 { " [again]" } else { "" }
    );
    match step.loadgen_steal_ms {
        Some(ms) if ms >= STEAL_WORTH_SAYING_MS => {
            line + &format!(" [steal on the loadgen's CPUs: {ms:.0} ms]")
        }
        _ => line,
    }
}

/// Steal time in a step worth naming in its line (one clock tick is 10 ms on most kernels).
const STEAL_WORTH_SAYING_MS: f64 = 10.0;

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

/// The rates a capacity search left unmeasured, in a line beside its answer (`None` when it
/// measured every rate it went through).
pub fn unmeasured_line(file: &CapacityFile) -> Option<String> {
    let rates: Vec<String> = file
        .unmeasured_per_s
        .iter()
        .map(|&rate| format_count(rate as f64))
        .collect();
    (!rates.is_empty()).then(|| {
        format!(
            "not measured: {} msg/s (the loadgen's loop lost its CPU there for spells while it \
             had little to do; the answer rests on the rates measured around it)",
            rates.join(", ")
        )
    })
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
            (None, Some(fail)) => match self.loadgen_limit_per_s {
                Some(limit) => write!(
                    f,
                    "capacity: unknown (it fails at {} msg/s; below, the loadgen could not \
                     measure {}: {why})",
                    count(fail),
                    count(limit)
                ),
                None => write!(
                    f,
                    "capacity: below {} msg/s (every rate tried failed: {why})",
                    count(fail)
                ),
            },
            (None, None) => write!(f, "capacity: unknown ({why})"),
        }
    }
}

/// The name of a regress metric in the run's first line.
pub fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Cpu => "cpu",
        Metric::Throughput => "throughput",
        Metric::P99 => "p99",
    }
}

/// What a regress change is a change of: the candidate's cost by `metric`.
pub fn cost_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Cpu => "CPU per message",
        Metric::Throughput => "time per message (1/throughput)",
        Metric::P99 => "p99 latency",
    }
}

/// One line per regress trial: `  pair 0 baseline        12,510 msg/s  errors 0`, with the
/// server's CPU per message and its CPU share of the window when measured.
pub fn regress_trial_line(metric: Metric, trial: &RegressTrial) -> String {
    let (value, unit) = match metric {
        Metric::Cpu => (format!("{:.3}", trial.value), "µs CPU/msg"),
        Metric::Throughput => (format_count(trial.value), "msg/s"),
        Metric::P99 => (format_us(trial.value), "µs p99"),
    };
    let cpu = match (metric, trial.cpu_per_message_us, trial.cpu_share) {
        (Metric::Cpu, _, Some(share)) => format!("  cpu share {:.0}%", share * 100.0),
        (_, Some(cpu), Some(share)) => {
            format!("  {cpu:.3} µs CPU/msg, cpu share {:.0}%", share * 100.0)
        }
        _ => String::new(),
    };
    format!(
        "  pair {} {:<9} {:>12} {unit}  errors {}{cpu}",
        trial.pair,
        trial.side.as_str(),
        value,
        trial.errors
    )
}

/// `verdict: slower (candidate's CPU per message +8.1%, 99.67% CI +6.0% … +10.2%, 20 pairs;
/// threshold 5.0%; smallest rise this run could detect: 3.1%)`. Excluded pairs are counted in
/// the line. A file the run did not finish says so instead; a file from before the sequential
/// gate gets its old line.
pub fn verdict_line(file: &RegressFile) -> String {
    let Some(verdict) = file.verdict else {
        return format!(
            "no verdict: the run stopped after {} pairs",
            file.pairs_run()
        );
    };
    let excluded = if file.excluded_pairs.is_empty() {
        String::new()
    } else {
        format!(", {} excluded", file.excluded_pairs.len())
    };
    let percent = |fraction: f64| format!("{:+.1}%", fraction * 100.0);
    match (&file.change, file.minimum_detectable_effect, &file.estimate) {
        (Some(change), Some(detectable), Some(estimate)) => format!(
            "verdict: {verdict} (candidate's {} {}, {:.2}% CI {} … {}, {} pairs{excluded}; \
             threshold {:.1}%; smallest rise this run could detect: {:.1}%)",
            cost_name(file.metric),
            percent(change.estimate),
            change.confidence * 100.0,
            percent(change.low),
            percent(change.high),
            estimate.pairs,
            file.threshold * 100.0,
            detectable * 100.0
        ),
        (_, _, Some(estimate)) => format!(
            "verdict: {} (candidate/baseline {} median {:.3}, 95% CI {:.3}–{:.3} over {} pairs{}; threshold {:.1}%)",
            verdict,
            match file.metric {
                Metric::Cpu => "speed by CPU per message",
                Metric::Throughput => "throughput",
                Metric::P99 => "speed by p99",
            },
            estimate.ratio,
            estimate.ci.low,
            estimate.ci.high,
            estimate.pairs,
            excluded,
            file.threshold * 100.0
        ),
        _ => format!(
            "verdict: {verdict} ({} pairs run{excluded}: {})",
            file.pairs_run(),
            file.stopped_because.as_deref().unwrap_or("no estimate")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::capacity::StepReason;

    #[test]
    fn a_step_line_says_what_the_step_counted_as_and_the_hosts_steal() {
        let mut step = Step::failed(
            64_000,
            StepReason::LoadgenInvalid(vec!["the load generator fell behind".into()]),
        );
        step.achieved_per_s = 64_000.0;
        step.latency_us = serde_json::json!({"p99": 319.0});
        step.counted_as = Some("no vote".into());
        step.loadgen_steal_ms = Some(230.0);
        let line = step_line(&step);
        assert!(
            line.contains(
                "no vote (loadgen marked the run invalid: the load generator fell behind)"
            ),
            "{line}"
        );
        assert!(
            line.ends_with("[steal on the loadgen's CPUs: 230 ms]"),
            "{line}"
        );
        // A pass whose loop was late says so; steal below a clock tick is not worth a word.
        step.pass = true;
        step.valid = Some(false);
        step.reasons.clear();
        step.counted_as = Some("pass".into());
        step.loadgen_steal_ms = Some(0.0);
        assert!(step_line(&step).ends_with(&format!("p99 319 µs, errors 0: {LATE_PASS}")));
        step.valid = Some(true);
        assert!(step_line(&step).ends_with("errors 0: pass"));
    }
}
