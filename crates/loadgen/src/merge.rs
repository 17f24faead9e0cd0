//! `loadgen merge A.json B.json … -o ALL.json`: combines reports from loadgens that ran at the
//! same time (on one or many hosts, aligned with `--start-at`) into one report.
//!
//! Histograms are decoded and added exactly, so the merged percentiles are those of all the
//! samples together (no averaging of percentiles); counts, bytes and errors add up. `duration_s`
//! is the combined time span of the windows (earliest window start to latest window end, from
//! each report's start time and warm-up), and throughput is the total over it. Jain's index is
//! recombined exactly from each report's sum and sum of squares; the merged median per
//! connection is the median of the reports' medians (an approximation). The loop lag merges
//! exactly too (`histograms.loop_lag_us`), and `schedule.behind` is judged again on the sums;
//! reports written before it was kept fall back to the largest of their loop-lag figures. Error
//! samples are in time order, `at_s` counted from the earliest report's start. Stepped runs merge
//! step by step, by index (step `i` of every report into step `i`). Reports with different schema
//! ids, message sizes, loop kinds (open vs closed), depths, arrivals or numbers of steps are
//! refused, and so is the same file given twice.

use crate::errors::ErrorKind;
use crate::report::{
    Bytes, Errors, LoadgenCost, Messages, Percentiles, Report, Schedule, StepReport, Throughput,
    decode_histogram, encode_histogram, write_json,
};
use crate::validity::{InvalidKind, add_kind, judged_percentiles, late_loop};
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use std::path::{Path, PathBuf};

/// Reads, merges and writes reports; returns the merged report.
pub fn merge_files(inputs: &[PathBuf], output: &Path) -> anyhow::Result<Report> {
    let mut reports = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for path in inputs {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        if !seen.insert(key) {
            bail!(
                "{} is given twice: a report merged with itself counts its load twice",
                path.display()
            );
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let report: Report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a loadgen report", path.display()))?;
        reports.push(report);
    }
    let merged = merge_reports(&reports)?;
    write_json(&merged, output)?;
    Ok(merged)
}

/// Merges reports in memory.
pub fn merge_reports(reports: &[Report]) -> anyhow::Result<Report> {
    let Some(first) = reports.first() else {
        bail!("nothing to merge");
    };
    for r in reports {
        if r.schema != first.schema {
            bail!(
                "cannot merge reports with different schemas: {:?} and {:?}",
                first.schema,
                r.schema
            );
        }
        if r.config.size_bytes != first.config.size_bytes {
            bail!(
                "cannot merge reports with different message sizes: {} and {} bytes",
                first.config.size_bytes,
                r.config.size_bytes
            );
        }
        let kind = |r: &Report| {
            if r.config.open_loop() {
                "open loop (--rate)"
            } else {
                "closed loop"
            }
        };
        if r.config.open_loop() != first.config.open_loop() {
            bail!(
                "cannot merge an open-loop and a closed-loop report: {} and {}",
                kind(first),
                kind(r)
            );
        }
        if r.config.depth != first.config.depth {
            bail!(
                "cannot merge reports with different --depth: {:?} and {:?}",
                first.config.depth,
                r.config.depth
            );
        }
        if r.config.open_loop() && r.config.arrival != first.config.arrival {
            bail!(
                "cannot merge reports with different --arrival: {:?} and {:?}",
                first.config.arrival,
                r.config.arrival
            );
        }
        if r.steps.len() != first.steps.len() {
            bail!(
                "cannot merge reports with different numbers of steps: {} and {} (steps merge \
                 by index)",
                first.steps.len(),
                r.steps.len()
            );
        }
    }
    // Each window starts `warmup` after its report's start time.
    let window_start = |r: &Report| r.env.start_unix_s + r.config.warmup_ms as f64 / 1000.0;
    let earliest_start = reports
        .iter()
        .map(|r| r.env.start_unix_s)
        .fold(f64::INFINITY, f64::min);
    let span_start = reports
        .iter()
        .map(window_start)
        .fold(f64::INFINITY, f64::min);
    let span_end = reports
        .iter()
        .map(|r| window_start(r) + r.duration_s)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut out = first.clone();
    let latency = add_histograms(reports.iter().map(|r| r.histograms.latency_us.as_str()))?;
    let service = add_histograms(
        reports
            .iter()
            .map(|r| r.histograms.service_time_us.as_str()),
    )?;
    let connect = add_histograms(reports.iter().map(|r| r.histograms.connect_us.as_str()))?;
    let loop_lag = add_loop_lag(reports.iter().map(|r| r.histograms.loop_lag_us.as_str()))?;
    let sum = |f: &dyn Fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    out.duration_s = (span_end - span_start).max(0.0);
    out.messages = add_messages(reports.iter().map(|r| &r.messages));
    out.bytes = add_bytes(reports.iter().map(|r| &r.bytes));
    out.throughput = add_throughput(
        reports.iter().map(|r| &r.throughput),
        &out.messages,
        &out.bytes,
        out.duration_s,
    );
    out.latency_us = Percentiles::of(&latency);
    out.service_time_us = Percentiles::of(&service);
    out.connect_us = Percentiles::of(&connect);
    let schedules: Vec<Schedule> = reports.iter().filter_map(|r| r.schedule).collect();
    if !schedules.is_empty() {
        out.schedule = Some(add_schedules(
            &schedules,
            loop_lag.as_ref(),
            &latency,
            first.config.slo.as_deref(),
        ));
    }
    out.steps = (0..first.steps.len())
        .map(|i| {
            let steps: Vec<&StepReport> = reports.iter().map(|r| &r.steps[i]).collect();
            merge_steps(&steps, first.config.slo.as_deref())
        })
        .collect::<anyhow::Result<_>>()?;
    if reports
        .iter()
        .any(|r| r.timing.as_ref().map(|t| t.mode) != first.timing.as_ref().map(|t| t.mode))
    {
        // Agents that waited differently: no one mode describes the merged run.
        out.timing = None;
    }
    // Connections: Jain's index from n, Σx and Σx² (Σx² = (Σx)² / (n·J)).
    let slots: u64 = reports.iter().map(|r| r.config.connections as u64).sum();
    let (mut sum_x, mut sum_x2) = (0.0, 0.0);
    for r in reports {
        let x = r.messages.verified as f64;
        let n = r.config.connections as f64;
        sum_x += x;
        if r.connections.jain_fairness > 0.0 {
            sum_x2 += x * x / (n * r.connections.jain_fairness);
        }
    }
    let mut medians: Vec<u64> = reports
        .iter()
        .map(|r| r.connections.median_messages)
        .collect();
    medians.sort_unstable();
    out.config.connections = slots as usize;
    out.connections.opened = sum(&|r| r.connections.opened);
    out.connections.starved = sum(&|r| r.connections.starved);
    out.connections.min_messages = reports
        .iter()
        .map(|r| r.connections.min_messages)
        .min()
        .unwrap_or(0);
    out.connections.max_messages = reports
        .iter()
        .map(|r| r.connections.max_messages)
        .max()
        .unwrap_or(0);
    out.connections.median_messages = medians[(medians.len() - 1) / 2];
    out.connections.jain_fairness = if sum_x2 > 0.0 {
        sum_x * sum_x / (slots as f64 * sum_x2)
    } else {
        0.0
    };
    out.errors.total = sum(&|r| r.errors.total);
    for kind in ErrorKind::ALL {
        let k = kind.as_str();
        out.errors.by_kind.insert(
            k.to_string(),
            sum(&|r| r.errors.by_kind.get(k).copied().unwrap_or(0)),
        );
    }
    let mut samples: Vec<_> = reports
        .iter()
        .flat_map(|r| {
            let offset = r.env.start_unix_s - earliest_start;
            r.errors.samples.iter().cloned().map(move |mut s| {
                s.at_s += offset;
                s
            })
        })
        .collect();
    samples.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    samples.truncate(crate::errors::MAX_SAMPLES);
    out.errors.samples = samples;
    if let Some(earliest) = reports
        .iter()
        .min_by(|a, b| a.env.start_unix_s.total_cmp(&b.env.start_unix_s))
    {
        out.env = earliest.env.clone();
    }
    out.loadgen = add_costs(reports.iter().map(|r| &r.loadgen), out.messages.verified);
    (out.valid, out.invalid_reasons, out.invalid_kinds) = add_validity(
        reports
            .iter()
            .map(|r| (r.valid, &r.invalid_reasons, r.kinds())),
    );
    out.histograms.latency_us = encode_histogram(&latency)?;
    out.histograms.service_time_us = encode_histogram(&service)?;
    out.histograms.connect_us = encode_histogram(&connect)?;
    out.histograms.loop_lag_us = match &loop_lag {
        Some(h) => encode_histogram(h)?,
        None => String::new(),
    };
    Ok(out)
}

/// Step `i` of every report, merged: counts and histograms add up, the window is their span.
fn merge_steps(steps: &[&StepReport], slo: Option<&str>) -> anyhow::Result<StepReport> {
    let first = steps[0];
    let mut out = first.clone();
    let start = steps
        .iter()
        .map(|s| s.start_unix_s)
        .fold(f64::INFINITY, f64::min);
    let end = steps
        .iter()
        .map(|s| s.start_unix_s + s.duration_s)
        .fold(f64::NEG_INFINITY, f64::max);
    out.start_unix_s = start;
    out.duration_s = (end - start).max(0.0);
    out.target_per_s = steps.iter().map(|s| s.target_per_s).sum();
    let latency = add_histograms(steps.iter().map(|s| s.histograms.latency_us.as_str()))?;
    let service = add_histograms(steps.iter().map(|s| s.histograms.service_time_us.as_str()))?;
    let loop_lag = add_loop_lag(steps.iter().map(|s| s.histograms.loop_lag_us.as_str()))?;
    out.messages = add_messages(steps.iter().map(|s| &s.messages));
    out.bytes = add_bytes(steps.iter().map(|s| &s.bytes));
    out.throughput = add_throughput(
        steps.iter().map(|s| &s.throughput),
        &out.messages,
        &out.bytes,
        out.duration_s,
    );
    out.latency_us = Percentiles::of(&latency);
    out.service_time_us = Percentiles::of(&service);
    let schedules: Vec<Schedule> = steps.iter().map(|s| s.schedule).collect();
    out.schedule = add_schedules(&schedules, loop_lag.as_ref(), &latency, slo);
    out.errors = add_errors(steps.iter().map(|s| &s.errors));
    out.connections.opened = steps.iter().map(|s| s.connections.opened).sum();
    out.connections.starved = steps.iter().map(|s| s.connections.starved).sum();
    out.connections.min_messages = steps
        .iter()
        .map(|s| s.connections.min_messages)
        .min()
        .unwrap_or(0);
    out.connections.max_messages = steps
        .iter()
        .map(|s| s.connections.max_messages)
        .max()
        .unwrap_or(0);
    out.loadgen = add_costs(steps.iter().map(|s| &s.loadgen), out.messages.verified);
    (out.valid, out.invalid_reasons, out.invalid_kinds) = add_validity(
        steps
            .iter()
            .map(|s| (s.valid, &s.invalid_reasons, s.kinds())),
    );
    out.slo_met = steps
        .iter()
        .map(|s| s.slo_met)
        .collect::<Option<Vec<bool>>>()
        .map(|all| all.into_iter().all(|met| met));
    out.histograms.latency_us = encode_histogram(&latency)?;
    out.histograms.service_time_us = encode_histogram(&service)?;
    out.histograms.loop_lag_us = match &loop_lag {
        Some(h) => encode_histogram(h)?,
        None => String::new(),
    };
    Ok(out)
}

/// The histograms in `texts` added up (an empty text, from an older report, adds nothing).
fn add_histograms<'a>(texts: impl Iterator<Item = &'a str>) -> anyhow::Result<Histogram<u64>> {
    let mut sum = crate::stats::new_histogram();
    for text in texts.filter(|t| !t.is_empty()) {
        sum.add(decode_histogram(text)?)
            .map_err(|e| anyhow::anyhow!("adding histograms: {e:?}"))?;
    }
    Ok(sum)
}

/// The loop-lag histograms added up, when every report has one (older reports do not).
fn add_loop_lag<'a>(
    mut texts: impl Iterator<Item = &'a str> + Clone,
) -> anyhow::Result<Option<Histogram<u64>>> {
    if texts.clone().any(str::is_empty) {
        return Ok(None);
    }
    add_histograms(&mut texts).map(Some)
}

fn add_messages<'a>(all: impl Iterator<Item = &'a Messages>) -> Messages {
    all.fold(Messages::default(), |a, m| Messages {
        sent: a.sent + m.sent,
        verified: a.verified + m.verified,
    })
}

fn add_bytes<'a>(all: impl Iterator<Item = &'a Bytes>) -> Bytes {
    all.fold(Bytes::default(), |a, b| Bytes {
        sent: a.sent + b.sent,
        received: a.received + b.received,
    })
}

/// Rates over the merged span; the targets add up (N agents at R each offer N × R).
fn add_throughput<'a>(
    all: impl Iterator<Item = &'a Throughput>,
    messages: &Messages,
    bytes: &Bytes,
    duration_s: f64,
) -> Throughput {
    let per_s = |x: u64| {
        if duration_s > 0.0 {
            x as f64 / duration_s
        } else {
            0.0
        }
    };
    let targets: Vec<f64> = all.filter_map(|t| t.target_per_s).collect();
    let messages_per_s = per_s(messages.verified);
    let target_per_s = (!targets.is_empty()).then(|| targets.iter().sum::<f64>());
    Throughput {
        messages_per_s,
        bytes_per_s: per_s(bytes.received),
        target_per_s,
        achieved_ratio: target_per_s.map(|t| messages_per_s / t),
    }
}

/// The schedules merged: loop lag exactly from `loop_lag` when every report kept it (and
/// `behind` judged again on the sums), else the largest of each figure.
fn add_schedules(
    schedules: &[Schedule],
    loop_lag: Option<&Histogram<u64>>,
    latency: &Histogram<u64>,
    slo: Option<&str>,
) -> Schedule {
    let max = |f: fn(&Schedule) -> u64| schedules.iter().map(f).max().unwrap_or(0);
    let maxf = |f: fn(&Schedule) -> f64| schedules.iter().map(f).fold(0.0, f64::max);
    let mut out = Schedule {
        max_lag_us: max(|s| s.max_lag_us),
        p99_lag_us: max(|s| s.p99_lag_us),
        mean_lag_us: maxf(|s| s.mean_lag_us),
        behind: schedules.iter().any(|s| s.behind),
        loop_max_lag_us: max(|s| s.loop_max_lag_us),
        loop_p99_lag_us: max(|s| s.loop_p99_lag_us),
        loop_mean_lag_us: maxf(|s| s.loop_mean_lag_us),
        held_back: schedules.iter().map(|s| s.held_back).sum(),
        loop_lag_us: Percentiles::default(),
    };
    if let Some(h) = loop_lag {
        out.loop_lag_us = Percentiles::of(h);
        out.loop_max_lag_us = out.loop_lag_us.max;
        out.loop_p99_lag_us = out.loop_lag_us.p99;
        out.loop_mean_lag_us = out.loop_lag_us.mean;
        out.behind = late_loop(h, latency, &judged_percentiles(slo)).is_some();
    }
    out
}

fn add_errors<'a>(all: impl Iterator<Item = &'a Errors> + Clone) -> Errors {
    let mut out = Errors {
        total: all.clone().map(|e| e.total).sum(),
        ..Errors::default()
    };
    for kind in ErrorKind::ALL {
        let k = kind.as_str();
        out.by_kind.insert(
            k.to_string(),
            all.clone()
                .map(|e| e.by_kind.get(k).copied().unwrap_or(0))
                .sum(),
        );
    }
    let mut samples: Vec<_> = all.flat_map(|e| e.samples.iter().cloned()).collect();
    samples.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    samples.truncate(crate::errors::MAX_SAMPLES);
    out.samples = samples;
    out
}

/// The loadgens' costs: times add up (per message over `verified`), the busiest thread's
/// fractions are the largest.
fn add_costs<'a>(all: impl Iterator<Item = &'a LoadgenCost> + Clone, verified: u64) -> LoadgenCost {
    let sum = |f: fn(&LoadgenCost) -> f64| all.clone().map(f).sum::<f64>();
    let max = |f: fn(&LoadgenCost) -> f64| all.clone().map(f).fold(0.0, f64::max);
    let per_message = |s: f64| {
        if verified > 0 {
            s * 1e6 / verified as f64
        } else {
            0.0
        }
    };
    let cpu_s = sum(|c| c.cpu_s);
    let work_s = sum(|c| c.work_s);
    LoadgenCost {
        threads: all.clone().map(|c| c.threads).sum(),
        cpu_s,
        cpu_per_message_us: per_message(cpu_s),
        utime_s: sum(|c| c.utime_s),
        stime_s: sum(|c| c.stime_s),
        busy_fraction: max(|c| c.busy_fraction),
        saturated: all.clone().any(|c| c.saturated),
        work_s,
        work_per_message_us: per_message(work_s),
        spin_s: sum(|c| c.spin_s),
        work_fraction: max(|c| c.work_fraction),
    }
}

/// Valid when every input is; the reasons of all, each once.
fn add_validity<'a>(
    all: impl Iterator<Item = (bool, &'a Vec<String>, Option<Vec<InvalidKind>>)>,
) -> (bool, Vec<String>, Vec<InvalidKind>) {
    let mut valid = true;
    let mut reasons: Vec<String> = Vec::new();
    let mut kinds = Vec::new();
    // An input whose reasons' kinds cannot be told (`Report::kinds`): kinds from the others
    // would tell less than the reasons do, so the merge names none.
    let mut unknown = false;
    for (v, rs, ks) in all {
        valid &= v;
        for r in rs {
            if !reasons.contains(r) {
                reasons.push(r.clone());
            }
        }
        match ks {
            Some(ks) => ks.into_iter().for_each(|k| add_kind(&mut kinds, k)),
            None => unknown = true,
        }
    }
    if unknown {
        kinds.clear();
    }
    (valid, reasons, kinds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::report::{BuildInputs, StepReport};
    use crate::stats::{SlotStats, ThreadResult, record_ns_as_us};

    /// A thread result over pseudo-random latencies for `slots` (starting at `first_slot`).
    fn sample(seed: u64, first_slot: usize, slots: usize, n: u64) -> ThreadResult {
        let mut t = ThreadResult::new(0);
        let mut x = seed;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ns = 10_000 + x % 5_000_000;
            record_ns_as_us(&mut t.latency, ns);
            record_ns_as_us(&mut t.service, ns / 2);
            if i % 10 == 0 {
                record_ns_as_us(&mut t.connect, ns / 10);
            }
        }
        t.messages_sent = n;
        t.messages_verified = n;
        t.bytes_sent = n * 64;
        t.bytes_received = n * 64;
        t.errors[ErrorKind::Timeout.index()] = seed % 3;
        t.opened = slots as u64;
        t.ever_connected = true;
        t.slots = (0..slots)
            .map(|i| SlotStats {
                slot: first_slot + i,
                messages: n / slots as u64 + u64::from((i as u64) < n % slots as u64),
                max_gap_ns: 0,
            })
            .collect();
        t.cpu_ns = n * 3_000;
        t.user_cpu_ns = n * 1_000;
        t.wall_ns = 1_000_000_000;
        t
    }

    fn report(config: &Config, t: &ThreadResult) -> Report {
        let env = crate::env::capture();
        Report::build(
            config,
            env,
            t,
            BuildInputs {
                threads: 1,
                duration_s: 2.0,
                cpu_s: t.cpu_ns as f64 / 1e9,
                ..BuildInputs::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn merge_of_two_reports_equals_one_report_over_the_same_data() {
        let mut config = Config::new("127.0.0.1:1");
        config.connections = 4;
        let a = sample(0x1234_5678, 0, 4, 3_000);
        let b = sample(0x9876_5431, 4, 4, 5_000);
        let mut both = a.clone();
        both.merge(&b);
        let mut config_both = config.clone();
        config_both.connections = 8;
        let one = report(&config_both, &both);
        let ra = report(&config, &a);
        let mut rb = report(&config, &b);
        // Run together: the same start, so the combined span is the one window.
        rb.env = ra.env.clone();
        let merged = merge_reports(&[ra, rb]).unwrap();

        assert_eq!(merged.latency_us, one.latency_us);
        assert_eq!(merged.service_time_us, one.service_time_us);
        assert_eq!(merged.connect_us, one.connect_us);
        assert_eq!(merged.messages, one.messages);
        assert_eq!(merged.bytes, one.bytes);
        assert_eq!(merged.throughput, one.throughput);
        assert_eq!(merged.errors.total, one.errors.total);
        assert_eq!(merged.errors.by_kind, one.errors.by_kind);
        assert_eq!(merged.connections.opened, one.connections.opened);
        assert_eq!(
            merged.connections.min_messages,
            one.connections.min_messages
        );
        assert_eq!(
            merged.connections.max_messages,
            one.connections.max_messages
        );
        assert!((merged.connections.jain_fairness - one.connections.jain_fairness).abs() < 1e-9);
        assert!((merged.loadgen.cpu_s - one.loadgen.cpu_s).abs() < 1e-9);
        assert!((merged.loadgen.utime_s - one.loadgen.utime_s).abs() < 1e-9);
        assert!((merged.loadgen.stime_s - one.loadgen.stime_s).abs() < 1e-9);
        assert!(one.loadgen.utime_s > 0.0);
        assert!((one.loadgen.utime_s * 3.0 - one.loadgen.cpu_s).abs() < 1e-9);
        assert!((merged.loadgen.cpu_per_message_us - one.loadgen.cpu_per_message_us).abs() < 1e-9);
        assert_eq!(
            decode_histogram(&merged.histograms.latency_us).unwrap(),
            decode_histogram(&one.histograms.latency_us).unwrap()
        );
        assert_eq!(merged.config.connections, 8);
    }

    #[test]
    fn merged_validity_keeps_every_reason_and_each_kind_once() {
        let config = Config::new("127.0.0.1:1");
        let mut a = report(&config, &sample(1, 0, 4, 3_000));
        let mut b = report(&config, &sample(2, 0, 4, 3_000));
        let mut c = report(&config, &sample(3, 0, 4, 3_000));
        a.valid = false;
        a.invalid_reasons = vec!["saturated (a)".into()];
        a.invalid_kinds = vec![InvalidKind::Saturated];
        b.valid = false;
        b.invalid_reasons = vec!["late (b)".into(), "saturated (b)".into()];
        b.invalid_kinds = vec![InvalidKind::Late, InvalidKind::Saturated];
        b.env = a.env.clone();
        c.env = a.env.clone();
        let a_env = a.env.clone();
        let merged = merge_reports(&[a, b, c]).unwrap();
        assert!(!merged.valid);
        assert_eq!(
            merged.invalid_reasons,
            ["saturated (a)", "late (b)", "saturated (b)"]
        );
        assert_eq!(
            merged.invalid_kinds,
            [InvalidKind::Saturated, InvalidKind::Late]
        );
        // An invalid report from before `invalid_kinds`: its kinds are read from its words;
        // where a reason is worded otherwise, the merge names no kinds (and keeps every reason).
        let mut old = report(&config, &sample(4, 0, 4, 3_000));
        old.valid = false;
        old.invalid_reasons = vec!["only 40 latency samples (fewer than 100)".into()];
        old.env = a_env.clone();
        let merged = merge_reports(&[merged, old.clone()]).unwrap();
        assert_eq!(
            merged.invalid_kinds,
            [
                InvalidKind::Saturated,
                InvalidKind::Late,
                InvalidKind::FewSamples
            ]
        );
        old.invalid_reasons = vec!["something else went wrong".into()];
        let merged = merge_reports(&[merged, old]).unwrap();
        assert!(!merged.valid && merged.invalid_kinds.is_empty());
        assert_eq!(merged.invalid_reasons.len(), 5);
    }

    /// A stepped open-loop report of two steps (rates 1,000 and 2,000 msg/s) over `a` and `b`.
    fn stepped(a: &ThreadResult, b: &ThreadResult) -> Report {
        let mut config = Config::new("127.0.0.1:1");
        config.connections = 4;
        config.duration_ms = None;
        config.rate_steps = [1_000.0, 2_000.0]
            .into_iter()
            .map(|rate_per_s| crate::config::RateStep {
                rate_per_s,
                duration_ms: 1_000,
            })
            .collect();
        let steps = [a, b]
            .iter()
            .enumerate()
            .map(|(k, t)| {
                StepReport::build(
                    &config,
                    k,
                    1_000.0 * (k + 1) as f64,
                    250,
                    10.0 + k as f64,
                    1.0,
                    t,
                    1,
                )
                .unwrap()
            })
            .collect();
        let mut all = a.clone();
        all.merge(b);
        Report::build(
            &config,
            crate::env::capture(),
            &all,
            BuildInputs {
                threads: 1,
                duration_s: 2.0,
                cpu_s: 0.1,
                steps,
                ..BuildInputs::default()
            },
        )
        .unwrap()
    }

    /// `sample` with a loop lag of `lag_us` on every message.
    fn with_lag(seed: u64, n: u64, lag_us: u64) -> ThreadResult {
        let mut t = sample(seed, 0, 4, n);
        for _ in 0..n {
            record_ns_as_us(&mut t.loop_lag, lag_us * 1_000);
        }
        t
    }

    #[test]
    fn stepped_reports_merge_step_by_step_and_the_loop_lag_exactly() {
        let (a1, a2) = (with_lag(1, 1_000, 3), with_lag(2, 2_000, 5));
        let (b1, b2) = (with_lag(3, 1_000, 4), with_lag(4, 2_000, 900));
        let ra = stepped(&a1, &a2);
        let mut rb = stepped(&b1, &b2);
        rb.env = ra.env.clone();
        let merged = merge_reports(&[ra.clone(), rb]).unwrap();
        assert_eq!(merged.steps.len(), 2);
        for (k, (x, y)) in [(&a1, &b1), (&a2, &b2)].into_iter().enumerate() {
            let mut both = x.clone();
            both.merge(y);
            let step = &merged.steps[k];
            assert_eq!(step.index, k);
            assert_eq!(step.messages.verified, both.messages_verified);
            assert_eq!(step.latency_us, Percentiles::of(&both.latency));
            assert_eq!(step.schedule.loop_lag_us, Percentiles::of(&both.loop_lag));
            // Two agents at R each offered 2R.
            assert_eq!(step.target_per_s, 2_000.0 * (k + 1) as f64);
        }
        // The loop lag of the whole run merged exactly, and judged again on the sum.
        let mut lag = a1.loop_lag.clone();
        for h in [&a2.loop_lag, &b1.loop_lag, &b2.loop_lag] {
            lag.add(h).unwrap();
        }
        let schedule = merged.schedule.unwrap();
        assert_eq!(schedule.loop_lag_us, Percentiles::of(&lag));
        assert_eq!(schedule.loop_p99_lag_us, lag.value_at_quantile(0.99));
        assert!(!merged.steps[0].schedule.behind);
        // Different numbers of steps do not merge.
        let mut short = ra.clone();
        short.steps.pop();
        let err = merge_reports(&[ra, short]).unwrap_err().to_string();
        assert!(err.contains("different numbers of steps"), "{err}");
    }

    #[test]
    fn merge_refuses_mismatched_reports() {
        let config = Config::new("127.0.0.1:1");
        let a = report(&config, &sample(1, 0, 2, 200));
        let mut b = a.clone();
        b.config.size_bytes = 128;
        let err = merge_reports(&[a.clone(), b]).unwrap_err().to_string();
        assert!(err.contains("different message sizes"), "{err}");
        let mut c = a.clone();
        c.schema = "echolab.loadgen/2".into();
        let err = merge_reports(&[a.clone(), c]).unwrap_err().to_string();
        assert!(err.contains("different schemas"), "{err}");
        assert!(merge_reports(&[]).is_err());

        let mut open = a.clone();
        open.config.rate_per_s = Some(100.0);
        let err = merge_reports(&[a.clone(), open.clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("open-loop and a closed-loop"), "{err}");
        let mut deeper = a.clone();
        deeper.config.depth = Some(4);
        let err = merge_reports(&[a.clone(), deeper]).unwrap_err().to_string();
        assert!(err.contains("different --depth"), "{err}");
        let mut poisson = open.clone();
        poisson.config.arrival = crate::config::Arrival::Poisson;
        let err = merge_reports(&[open, poisson]).unwrap_err().to_string();
        assert!(err.contains("different --arrival"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_json(&a, &path).unwrap();
        let err = merge_files(&[path.clone(), path], &dir.path().join("out.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("given twice"), "{err}");
    }

    #[test]
    fn merge_spans_the_windows_and_orders_error_samples_in_time() {
        let config = Config::new("127.0.0.1:1");
        let mut a = report(&config, &sample(1, 0, 2, 200));
        let mut b = a.clone();
        // b started 1.5 s after a; both measured 2 s: together they span 3.5 s.
        b.env.start_unix_s = a.env.start_unix_s + 1.5;
        let sample_at = |at_s: f64, detail: &str| crate::errors::ErrorSample {
            kind: ErrorKind::Timeout,
            connection: Some(0),
            message: None,
            offset: None,
            expected: None,
            got: None,
            at_s,
            detail: detail.into(),
        };
        a.errors.samples = vec![sample_at(2.0, "a late")];
        b.errors.samples = vec![sample_at(0.1, "b early")];
        let merged = merge_reports(&[a.clone(), b.clone()]).unwrap();
        assert!(
            (merged.duration_s - 3.5).abs() < 1e-6,
            "{}",
            merged.duration_s
        );
        let per_s = (a.messages.verified + b.messages.verified) as f64 / 3.5;
        assert!((merged.throughput.messages_per_s - per_s).abs() < 1e-6);
        let details: Vec<&str> = merged
            .errors
            .samples
            .iter()
            .map(|s| s.detail.as_str())
            .collect();
        // b's error came 1.6 s after a's start, a's at 2.0 s.
        assert_eq!(details, ["b early", "a late"]);
        assert!((merged.errors.samples[0].at_s - 1.6).abs() < 1e-6);
        assert_eq!(merged.env.start_unix_s, a.env.start_unix_s);
    }
}
