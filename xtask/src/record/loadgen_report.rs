//! Reading loadgen JSON reports (`echolab.loadgen/1`) by key path.
//!
//! xtask reads only the keys it needs, as `serde_json::Value` pointers, so it stays decoupled
//! from the loadgen's Rust types: keys are only ever added to that schema, never renamed.
//! Keys from later issues (`valid`, `throughput.achieved_ratio`, …) are optional here.
//! (`capacity` is the exception: it judges each step with `loadgen::slo::check`, so it reads
//! its reports as `loadgen::Report`; a report that does not fit fails that step, naming why.)

use std::path::Path;

use anyhow::{Context, Result};
use loadgen::validity::{InvalidKind, kinds_of};
use serde::{Deserialize, Serialize};

/// The numbers xtask uses from one loadgen report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportFigures {
    pub messages_per_s: f64,
    pub messages_verified: u64,
    pub duration_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub errors_total: u64,
    /// `valid` (issue 4); `None` when the loadgen does not report it.
    pub valid: Option<bool>,
    pub invalid_reasons: Vec<String>,
    /// `invalid_kinds` as written (empty when valid, and in reports from before it; one kind
    /// this xtask does not know empties it): read them with [`ReportFigures::kinds`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invalid_kinds: Vec<InvalidKind>,
    pub saturated: Option<bool>,
    /// `throughput.achieved_ratio` (open loop only).
    pub achieved_ratio: Option<f64>,
    pub target_per_s: Option<f64>,
    /// `connections.starved` (issue 4): connections with no verified echo for too long.
    #[serde(default)]
    pub starved: Option<u64>,
}

fn number(report: &serde_json::Value, pointer: &str) -> Result<f64> {
    report
        .pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .with_context(|| format!("loadgen report has no number at {pointer}"))
}

fn optional_number(report: &serde_json::Value, pointer: &str) -> Option<f64> {
    report.pointer(pointer).and_then(serde_json::Value::as_f64)
}

impl ReportFigures {
    /// The kinds of `invalid_reasons` (from their words in a report from before the kinds;
    /// `None` when they cannot be told): loadgen's `validity::kinds_of`.
    pub fn kinds(&self) -> Option<Vec<InvalidKind>> {
        kinds_of(&self.invalid_kinds, &self.invalid_reasons)
    }

    /// Extracts the figures; fails naming the first missing required key.
    pub fn from_json(report: &serde_json::Value) -> Result<Self> {
        Ok(Self {
            messages_per_s: number(report, "/throughput/messages_per_s")?,
            messages_verified: number(report, "/messages/verified")? as u64,
            duration_s: number(report, "/duration_s")?,
            p50_us: number(report, "/latency_us/p50")?,
            p90_us: optional_number(report, "/latency_us/p90").unwrap_or(f64::NAN),
            p99_us: number(report, "/latency_us/p99")?,
            p999_us: optional_number(report, "/latency_us/p999").unwrap_or(f64::NAN),
            max_us: optional_number(report, "/latency_us/max").unwrap_or(f64::NAN),
            errors_total: number(report, "/errors/total")? as u64,
            valid: report
                .pointer("/valid")
                .and_then(serde_json::Value::as_bool),
            invalid_reasons: report
                .pointer("/invalid_reasons")
                .and_then(serde_json::Value::as_array)
                .map(|reasons| {
                    reasons
                        .iter()
                        .map(|reason| match reason.as_str() {
                            Some(text) => text.to_string(),
                            None => reason.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            invalid_kinds: report
                .pointer("/invalid_kinds")
                .and_then(|kinds| serde_json::from_value(kinds.clone()).ok())
                .unwrap_or_default(),
            saturated: report
                .pointer("/loadgen/saturated")
                .and_then(serde_json::Value::as_bool),
            achieved_ratio: optional_number(report, "/throughput/achieved_ratio"),
            target_per_s: optional_number(report, "/throughput/target_per_s"),
            starved: report
                .pointer("/connections/starved")
                .and_then(serde_json::Value::as_u64),
        })
    }
}

/// Reads a report file as JSON.
pub fn read_report(path: &Path) -> Result<serde_json::Value> {
    super::read_json(path)
}

/// Decodes `histograms.<name>` (HdrHistogram V2 / V2-deflate, base64) from a report, with
/// loadgen's decoder.
pub fn histogram(
    report: &serde_json::Value,
    name: &str,
) -> Result<Option<hdrhistogram::Histogram<u64>>> {
    let Some(encoded) = report
        .pointer(&format!("/histograms/{name}"))
        .and_then(serde_json::Value::as_str)
    else {
        return Ok(None);
    };
    let histogram =
        loadgen::report::decode_histogram(encoded).with_context(|| format!("histograms.{name}"))?;
    Ok(Some(histogram))
}

/// `histograms.<name>` of every given report, added exactly; `None` when no report has it. A
/// report that is missing or does not decode is passed over (its trial still counts in the
/// summary; only the picture lacks it).
pub fn merged_histogram(
    reports: impl IntoIterator<Item = impl AsRef<Path>>,
    name: &str,
) -> Result<Option<hdrhistogram::Histogram<u64>>> {
    let mut total: Option<hdrhistogram::Histogram<u64>> = None;
    for path in reports {
        let Ok(report) = read_report(path.as_ref()) else {
            continue;
        };
        let Ok(Some(histogram)) = histogram(&report, name) else {
            continue;
        };
        match &mut total {
            Some(total) => total
                .add(&histogram)
                .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?,
            None => total = Some(histogram),
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};

    fn sample_report() -> serde_json::Value {
        let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .expect("bounds are valid");
        for value in 1..=100u64 {
            histogram.record(value * 10).expect("in range");
        }
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&histogram, &mut bytes)
            .expect("serializes");
        serde_json::json!({
            "schema": "echolab.loadgen/1",
            "duration_s": 1.5,
            "messages": {"sent": 1000, "verified": 1000},
            "throughput": {"messages_per_s": 666.6, "bytes_per_s": 42000.0},
            "latency_us": {"min": 10, "mean": 505.0, "p50": 500, "p90": 900, "p99": 990,
                           "p999": 1000, "p9999": 1000, "max": 1000},
            "errors": {"total": 2, "by_kind": {"reset": 2}, "samples": []},
            "histograms": {
                "latency_us": base64::engine::general_purpose::STANDARD.encode(&bytes)
            }
        })
    }

    #[test]
    fn figures_from_issue_2_keys() {
        let figures = ReportFigures::from_json(&sample_report()).expect("all keys present");
        assert_eq!(figures.messages_per_s, 666.6);
        assert_eq!(figures.messages_verified, 1000);
        assert_eq!(figures.p99_us, 990.0);
        assert_eq!(figures.errors_total, 2);
        assert_eq!(figures.valid, None);
    }

    #[test]
    fn missing_key_is_named() {
        let mut report = sample_report();
        report["latency_us"]
            .as_object_mut()
            .expect("object")
            .remove("p99");
        let error = ReportFigures::from_json(&report).expect_err("p99 is required");
        assert!(error.to_string().contains("/latency_us/p99"), "{error}");
    }

    #[test]
    fn histogram_round_trips() {
        let histogram = histogram(&sample_report(), "latency_us")
            .expect("decodes")
            .expect("present");
        assert_eq!(histogram.len(), 100);
        assert_eq!(histogram.value_at_quantile(0.5), 500);
    }
}
