//! `loadgen merge A.json B.json … -o ALL.json`: combines reports from loadgens that ran at the
//! same time (on one or many hosts, aligned with `--start-at`) into one report.
//!
//! Histograms are decoded and added exactly, so the merged percentiles are those of all the
//! samples together (no averaging of percentiles); counts, bytes and errors add up. `duration_s`
//! is the combined time span of the windows (earliest window start to latest window end, from
//! each report's start time and warm-up), and throughput is the total over it. Jain's index is
//! recombined exactly from each report's sum and sum of squares; the merged median per
//! connection is the median of the reports' medians (an approximation). Error samples are in time
//! order, `at_s` counted from the earliest report's start. Reports with different schema ids,
//! message sizes, loop kinds (open vs closed), depths or arrivals are refused, and so is the same
//! file given twice.

use crate::errors::ErrorKind;
use crate::report::{
    Percentiles, Report, Schedule, decode_histogram, encode_histogram, write_json,
};
use anyhow::{Context, bail};
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
    let mut latency = decode_histogram(&first.histograms.latency_us)?;
    let mut service = decode_or_empty(&first.histograms.service_time_us)?;
    let mut connect = decode_or_empty(&first.histograms.connect_us)?;
    for r in &reports[1..] {
        latency
            .add(decode_histogram(&r.histograms.latency_us)?)
            .map_err(|e| anyhow::anyhow!("adding histograms: {e:?}"))?;
        service
            .add(decode_or_empty(&r.histograms.service_time_us)?)
            .map_err(|e| anyhow::anyhow!("adding histograms: {e:?}"))?;
        connect
            .add(decode_or_empty(&r.histograms.connect_us)?)
            .map_err(|e| anyhow::anyhow!("adding histograms: {e:?}"))?;
    }
    let sum = |f: &dyn Fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    let sumf = |f: &dyn Fn(&Report) -> f64| reports.iter().map(f).sum::<f64>();
    out.duration_s = (span_end - span_start).max(0.0);
    out.messages.sent = sum(&|r| r.messages.sent);
    out.messages.verified = sum(&|r| r.messages.verified);
    out.bytes.sent = sum(&|r| r.bytes.sent);
    out.bytes.received = sum(&|r| r.bytes.received);
    let per_s = |x: u64| {
        if out.duration_s > 0.0 {
            x as f64 / out.duration_s
        } else {
            0.0
        }
    };
    out.throughput.messages_per_s = per_s(out.messages.verified);
    out.throughput.bytes_per_s = per_s(out.bytes.received);
    let targets: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.throughput.target_per_s)
        .collect();
    if !targets.is_empty() {
        let target: f64 = targets.iter().sum();
        out.throughput.target_per_s = Some(target);
        out.throughput.achieved_ratio = Some(out.throughput.messages_per_s / target);
    }
    out.latency_us = Percentiles::of(&latency);
    out.service_time_us = Percentiles::of(&service);
    out.connect_us = Percentiles::of(&connect);
    let schedules: Vec<Schedule> = reports.iter().filter_map(|r| r.schedule).collect();
    if !schedules.is_empty() {
        out.schedule = Some(Schedule {
            max_lag_us: schedules.iter().map(|s| s.max_lag_us).max().unwrap_or(0),
            p99_lag_us: schedules.iter().map(|s| s.p99_lag_us).max().unwrap_or(0),
            mean_lag_us: schedules.iter().map(|s| s.mean_lag_us).fold(0.0, f64::max),
            behind: schedules.iter().any(|s| s.behind),
            loop_max_lag_us: schedules
                .iter()
                .map(|s| s.loop_max_lag_us)
                .max()
                .unwrap_or(0),
            loop_p99_lag_us: schedules
                .iter()
                .map(|s| s.loop_p99_lag_us)
                .max()
                .unwrap_or(0),
            loop_mean_lag_us: schedules
                .iter()
                .map(|s| s.loop_mean_lag_us)
                .fold(0.0, f64::max),
            held_back: schedules.iter().map(|s| s.held_back).sum(),
        });
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
    out.loadgen.threads = reports.iter().map(|r| r.loadgen.threads).sum();
    out.loadgen.cpu_s = sumf(&|r| r.loadgen.cpu_s);
    out.loadgen.utime_s = sumf(&|r| r.loadgen.utime_s);
    out.loadgen.stime_s = sumf(&|r| r.loadgen.stime_s);
    out.loadgen.cpu_per_message_us = if out.messages.verified > 0 {
        out.loadgen.cpu_s * 1e6 / out.messages.verified as f64
    } else {
        0.0
    };
    out.loadgen.busy_fraction = reports
        .iter()
        .map(|r| r.loadgen.busy_fraction)
        .fold(0.0, f64::max);
    out.loadgen.saturated = reports.iter().any(|r| r.loadgen.saturated);
    out.valid = reports.iter().all(|r| r.valid);
    out.invalid_reasons = reports
        .iter()
        .flat_map(|r| r.invalid_reasons.iter().cloned())
        .collect();
    out.invalid_reasons.dedup();
    out.histograms.latency_us = encode_histogram(&latency)?;
    out.histograms.service_time_us = encode_histogram(&service)?;
    out.histograms.connect_us = encode_histogram(&connect)?;
    Ok(out)
}

fn decode_or_empty(text: &str) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    if text.is_empty() {
        Ok(crate::stats::new_histogram())
    } else {
        decode_histogram(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::report::BuildInputs;
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
