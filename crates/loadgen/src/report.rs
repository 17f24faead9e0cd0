//! The JSON report (`--json FILE`, schema `echolab.loadgen/1`): its types, how it is computed
//! from what the threads measured, the histogram (de)serialization shared with `merge`, and
//! writing a report as JSON (the CLI's `--json` and `merge -o`).
//!
//! The JSON Schema lives in `crates/loadgen/schema/loadgen-report.schema.json`; keys are only
//! ever added, never renamed. Every histogram is HdrHistogram V2 + deflate, base64 encoded, so
//! reports from many hosts add up exactly.

use crate::config::Config;
use crate::env::Env;
use crate::errors::{ErrorKind, ErrorSample};
use crate::stats::{ThreadResult, jain_fairness, median};
use anyhow::Context;
use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// The schema id every report carries.
pub const SCHEMA: &str = "echolab.loadgen/1";

/// Fewer latency samples than this make a run `valid: false`.
pub const MIN_VALID_SAMPLES: u64 = 100;

/// A complete loadgen report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The configuration that produced it.
    pub config: Config,
    /// Where and when it ran.
    pub env: Env,
    /// Length of the measured window in seconds: the planned window for a `--duration` run
    /// (echoes completing after it are not counted as verified), the time to the last echo for
    /// a `--messages` run.
    pub duration_s: f64,
    /// Message counts in the measured window.
    pub messages: Messages,
    /// Byte counts in the measured window.
    pub bytes: Bytes,
    /// Rates over the measured window.
    pub throughput: Throughput,
    /// Latency from the intended send time to the last verified byte.
    pub latency_us: Percentiles,
    /// Time from the actual send to the last verified byte.
    #[serde(default)]
    pub service_time_us: Percentiles,
    /// Connect time of each connection opened.
    #[serde(default)]
    pub connect_us: Percentiles,
    /// Open loop only: how far sends lagged behind their intended times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Per-connection fairness.
    pub connections: Connections,
    /// Errors by kind, with samples.
    pub errors: Errors,
    /// The load generator's own cost.
    #[serde(default)]
    pub loadgen: LoadgenCost,
    /// Whether the measurement can be trusted.
    #[serde(default = "default_true")]
    pub valid: bool,
    /// Why not, if `valid` is false.
    #[serde(default)]
    pub invalid_reasons: Vec<String>,
    /// Serialized histograms.
    pub histograms: Histograms,
}

fn default_true() -> bool {
    true
}

/// `messages`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Messages {
    /// Measured messages whose first byte was written.
    pub sent: u64,
    /// Measured messages whose every byte came back as sent, inside the measured window.
    pub verified: u64,
}

/// `bytes`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bytes {
    /// Bytes written in the measured window.
    pub sent: u64,
    /// Bytes read in the measured window.
    pub received: u64,
}

/// `throughput`
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Throughput {
    /// Verified messages per second.
    pub messages_per_s: f64,
    /// Bytes per second, each way (received bytes).
    pub bytes_per_s: f64,
    /// Open loop: the rate asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_per_s: Option<f64>,
    /// Open loop: `messages_per_s / target_per_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub achieved_ratio: Option<f64>,
}

/// Percentiles of a microsecond histogram.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of values recorded.
    #[serde(default)]
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// 50th percentile.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 95th percentile.
    #[serde(default)]
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest value.
    pub max: u64,
}

impl Percentiles {
    /// The percentiles of `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }
}

/// Loop lateness (p99 of `loop_lag_us`) above which the load generator is `behind`.
pub const BEHIND_LOOP_P99_US: u64 = 10_000;

/// `schedule` (open loop only)
///
/// Two lags: the *send lag* (`*_lag_us`) is first byte written minus intended time and includes
/// waiting for the server (the `--depth` cap full, socket backpressure, a reconnect); the *loop
/// lag* (`loop_*_lag_us`) is only the loop's own lateness: when it issued a message minus when
/// it could have (the intended time, or later when the connection could not take it). Only the
/// loop lag says the load generator fell behind.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Schedule {
    /// Largest delay of a first-byte write behind its intended time (µs), waiting for the server
    /// included.
    pub max_lag_us: u64,
    /// 99th percentile of that delay (µs).
    pub p99_lag_us: u64,
    /// Mean delay (µs).
    pub mean_lag_us: f64,
    /// True when the load generator itself fell behind its schedule: p99 of the loop lag above
    /// [`BEHIND_LOOP_P99_US`]. A slow or stalled server does not make it true.
    pub behind: bool,
    /// Largest lateness of the loop itself in issuing a message (µs).
    #[serde(default)]
    pub loop_max_lag_us: u64,
    /// 99th percentile of the loop's lateness (µs).
    #[serde(default)]
    pub loop_p99_lag_us: u64,
    /// Mean lateness of the loop (µs).
    #[serde(default)]
    pub loop_mean_lag_us: f64,
    /// Measured messages whose intended time came while their connection could not take them
    /// (the `--depth` cap was full or it was connecting): held back by the server.
    #[serde(default)]
    pub held_back: u64,
}

/// `connections`
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Connections {
    /// Connections established (more than `config.connections` with churn).
    pub opened: u64,
    /// Fewest verified messages of any connection slot in the window.
    #[serde(default)]
    pub min_messages: u64,
    /// Median verified messages per connection slot.
    #[serde(default)]
    pub median_messages: u64,
    /// Most verified messages of any connection slot.
    #[serde(default)]
    pub max_messages: u64,
    /// Jain's fairness index over messages per connection slot (1 = perfectly even).
    #[serde(default)]
    pub jain_fairness: f64,
    /// Connection slots that went longer than the stall threshold with a message outstanding
    /// and no verified echo (idle time between messages does not count).
    #[serde(default)]
    pub starved: u64,
    /// The stall threshold `starved` was judged by: `--stall-threshold`, or 90% of the window
    /// when the window is shorter than that (else no connection could ever count as starved).
    #[serde(default)]
    pub stall_threshold_ms: f64,
}

/// `errors`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Errors {
    /// All errors.
    pub total: u64,
    /// Count per kind; every kind is present, zero or not.
    pub by_kind: BTreeMap<String, u64>,
    /// The first few errors in time order.
    pub samples: Vec<ErrorSample>,
}

impl Errors {
    /// The count of one kind.
    pub fn count(&self, kind: ErrorKind) -> u64 {
        self.by_kind.get(kind.as_str()).copied().unwrap_or(0)
    }
}

/// `loadgen`: the instrument's own cost.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LoadgenCost {
    /// Client threads used.
    pub threads: usize,
    /// CPU time (user + system, getrusage per client thread) during the measured window, s.
    pub cpu_s: f64,
    /// CPU time per verified message, µs.
    pub cpu_per_message_us: f64,
    /// The part of `cpu_s` spent in user space (`ru_utime`): the loadgen's own code, its
    /// payload copies and verification. Absent (0) in reports from before it was recorded.
    #[serde(default)]
    pub utime_s: f64,
    /// The part of `cpu_s` spent in the kernel (`ru_stime`): system calls, the TCP stack.
    #[serde(default)]
    pub stime_s: f64,
    /// Fraction of wall time the busiest client thread was on a CPU during the window (0..1).
    pub busy_fraction: f64,
    /// True when the loadgen itself was the bottleneck (busy threads or schedule lag).
    pub saturated: bool,
}

/// `histograms`: HdrHistogram V2 + deflate, base64.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Histograms {
    /// Of `latency_us`.
    pub latency_us: String,
    /// Of `service_time_us`.
    #[serde(default)]
    pub service_time_us: String,
    /// Of `connect_us`.
    #[serde(default)]
    pub connect_us: String,
}

/// Serializes a histogram as HdrHistogram V2-deflate, base64 (standard alphabet, padded).
pub fn encode_histogram(h: &Histogram<u64>) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| anyhow::anyhow!("serializing a histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// Decodes a histogram written by [`encode_histogram`] (or any HdrHistogram V2 encoder).
pub fn decode_histogram(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .context("histogram is not valid base64")?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("histogram is not HdrHistogram V2: {e:?}"))
}

/// Inputs to [`Report::build`] beyond the thread results.
#[derive(Debug, Clone)]
pub(crate) struct BuildInputs {
    pub threads: usize,
    pub duration_s: f64,
    pub cpu_s: f64,
}

impl Report {
    /// Computes the report from merged thread results.
    pub(crate) fn build(
        config: &Config,
        env: Env,
        merged: &ThreadResult,
        inputs: BuildInputs,
    ) -> anyhow::Result<Report> {
        let duration_s = inputs.duration_s;
        let per_s = |x: u64| {
            if duration_s > 0.0 {
                x as f64 / duration_s
            } else {
                0.0
            }
        };
        let messages_per_s = per_s(merged.messages_verified);
        let mut by_kind = BTreeMap::new();
        for kind in ErrorKind::ALL {
            by_kind.insert(kind.as_str().to_string(), merged.errors[kind.index()]);
        }
        let per_slot: Vec<u64> = merged.slots.iter().map(|s| s.messages).collect();
        // A window shorter than the threshold could never show a starved connection: judge by
        // 90% of the window then (a connection unserved for almost all of it is starved).
        let window_ns = (duration_s * 1e9) as u64;
        let mut stall_ns = config.stall_threshold_ms * 1_000_000;
        if window_ns > 0 {
            stall_ns = stall_ns.min(window_ns / 10 * 9);
        }
        let starved = merged
            .slots
            .iter()
            .filter(|s| s.max_gap_ns > stall_ns)
            .count() as u64;
        // The busiest thread, not the mean: one thread at 100% limits the load it offers even
        // when the others idle.
        let busy_fraction = merged.max_busy_fraction;
        let schedule = config.rate_per_s.map(|_| {
            let lag = &merged.schedule_lag;
            let own = &merged.loop_lag;
            let mean = |h: &Histogram<u64>| if h.is_empty() { 0.0 } else { h.mean() };
            // Only the loop's own lateness blames the load generator: sends held back by the
            // depth cap, socket backpressure or errors are the server's doing, and an achieved
            // rate below the target with an on-time loop is the server's throughput.
            Schedule {
                max_lag_us: lag.max(),
                p99_lag_us: lag.value_at_quantile(0.99),
                mean_lag_us: mean(lag),
                behind: own.value_at_quantile(0.99) > BEHIND_LOOP_P99_US,
                loop_max_lag_us: own.max(),
                loop_p99_lag_us: own.value_at_quantile(0.99),
                loop_mean_lag_us: mean(own),
                held_back: merged.held_back,
            }
        });
        let behind = schedule.is_some_and(|s| s.behind);
        let saturated = busy_fraction > 0.9 || behind;
        let mut invalid_reasons = Vec::new();
        if merged.opened == 0 {
            invalid_reasons.push("no connection to the target could be established".into());
        }
        if merged.latency.len() < MIN_VALID_SAMPLES {
            invalid_reasons.push(format!(
                "only {} latency samples (fewer than {MIN_VALID_SAMPLES})",
                merged.latency.len()
            ));
        }
        if busy_fraction > 0.9 {
            invalid_reasons.push(format!(
                "the load generator was saturated: its busiest thread was busy {:.0}% of the time",
                busy_fraction * 100.0
            ));
        }
        if behind {
            invalid_reasons.push(
                "the load generator fell behind its open-loop schedule: its loop issued \
                 messages late (see schedule.loop_*)"
                    .into(),
            );
        }
        let total_errors: u64 = merged.errors.iter().sum();
        Ok(Report {
            schema: SCHEMA.to_string(),
            config: config.clone(),
            env,
            duration_s,
            messages: Messages {
                sent: merged.messages_sent,
                verified: merged.messages_verified,
            },
            bytes: Bytes {
                sent: merged.bytes_sent,
                received: merged.bytes_received,
            },
            throughput: Throughput {
                messages_per_s,
                bytes_per_s: per_s(merged.bytes_received),
                target_per_s: config.rate_per_s,
                achieved_ratio: config.rate_per_s.map(|t| messages_per_s / t),
            },
            latency_us: Percentiles::of(&merged.latency),
            service_time_us: Percentiles::of(&merged.service),
            connect_us: Percentiles::of(&merged.connect),
            schedule,
            connections: Connections {
                opened: merged.opened,
                min_messages: per_slot.iter().copied().min().unwrap_or(0),
                median_messages: median(&per_slot),
                max_messages: per_slot.iter().copied().max().unwrap_or(0),
                jain_fairness: jain_fairness(&per_slot),
                starved,
                stall_threshold_ms: stall_ns as f64 / 1e6,
            },
            errors: Errors {
                total: total_errors,
                by_kind,
                samples: merged.samples.clone(),
            },
            loadgen: LoadgenCost {
                threads: inputs.threads,
                cpu_s: inputs.cpu_s,
                cpu_per_message_us: if merged.messages_verified > 0 {
                    inputs.cpu_s * 1e6 / merged.messages_verified as f64
                } else {
                    0.0
                },
                utime_s: merged.user_cpu_ns as f64 / 1e9,
                stime_s: merged.cpu_ns.saturating_sub(merged.user_cpu_ns) as f64 / 1e9,
                busy_fraction,
                saturated,
            },
            valid: invalid_reasons.is_empty(),
            invalid_reasons,
            histograms: Histograms {
                latency_us: encode_histogram(&merged.latency)?,
                service_time_us: encode_histogram(&merged.service)?,
                connect_us: encode_histogram(&merged.connect)?,
            },
        })
    }

    /// Whether the target could not be reached at all.
    pub fn unreachable(&self) -> bool {
        self.connections.opened == 0
    }

    /// The decoded latency histogram.
    pub fn latency_histogram(&self) -> anyhow::Result<Histogram<u64>> {
        decode_histogram(&self.histograms.latency_us)
    }

    /// Writes the report as pretty JSON, followed by a newline, to `w`.
    pub fn write_json_to(&self, mut w: impl Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut w, self)?;
        writeln!(w)?;
        w.flush()
    }
}

/// Writes `report` as pretty JSON to the file `path` (created or truncated).
pub fn write_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    report
        .write_json_to(BufWriter::new(file))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn histogram_round_trips_through_base64() {
        let mut h = new_histogram();
        for v in [1u64, 17, 250, 250, 9_999, 1_000_000] {
            h.record(v).unwrap();
        }
        let text = encode_histogram(&h).unwrap();
        let back = decode_histogram(&text).unwrap();
        assert_eq!(back.len(), h.len());
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert!(decode_histogram("not base64!").is_err());
    }

    /// A one-thread, one-second report of `t` with `cpu_s` of CPU.
    fn report_of(t: &ThreadResult, cpu_s: f64) -> Report {
        let inputs = BuildInputs {
            threads: 1,
            duration_s: 1.0,
            cpu_s,
        };
        Report::build(
            &Config::new("127.0.0.1:7"),
            crate::env::capture(),
            t,
            inputs,
        )
        .unwrap()
    }

    #[test]
    fn a_report_written_as_json_reads_back_the_same() {
        let mut t = ThreadResult::new(1);
        for ns in [20_000u64, 35_000, 1_000_000] {
            crate::stats::record_ns_as_us(&mut t.latency, ns);
        }
        t.messages_verified = 3;
        t.opened = 1;
        let report = report_of(&t, 0.01);
        let mut out = Vec::new();
        report.write_json_to(&mut out).unwrap();
        assert!(out.ends_with(b"}\n"));
        let back: Report = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, report);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write_json(&report, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), out);
        let err = write_json(&report, &dir.path().join("missing/report.json")).unwrap_err();
        assert!(format!("{err:#}").contains("creating"), "{err:#}");
    }

    #[test]
    fn the_cpu_splits_into_user_and_system_and_old_reports_without_it_still_load() {
        let mut t = ThreadResult::new(1);
        crate::stats::record_ns_as_us(&mut t.latency, 20_000);
        t.messages_verified = 1;
        t.opened = 1;
        t.cpu_ns = 40_000_000;
        t.user_cpu_ns = 10_000_000;
        let report = report_of(&t, 0.04);
        assert!((report.loadgen.utime_s - 0.01).abs() < 1e-12);
        assert!((report.loadgen.stime_s - 0.03).abs() < 1e-12);

        // A report from before the split: the keys are absent and read as 0.
        let mut value = serde_json::to_value(&report).unwrap();
        let cost = value["loadgen"].as_object_mut().unwrap();
        cost.remove("utime_s");
        cost.remove("stime_s");
        let old: Report = serde_json::from_value(value).unwrap();
        assert_eq!((old.loadgen.utime_s, old.loadgen.stime_s), (0.0, 0.0));
        assert_eq!(old.loadgen.cpu_s, report.loadgen.cpu_s);
    }
}
