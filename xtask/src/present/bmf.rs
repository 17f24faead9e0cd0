//! Bencher Metric Format (BMF) JSON, for dashboards that track results over time
//! (<https://bencher.dev/docs/reference/bencher-metric-format>): `{benchmark: {measure:
//! {value, lower_value, upper_value}}}`. `bench --bmf FILE` writes one benchmark per cell,
//! `regress --bmf FILE` one per side and one for the change; `results/README.md` lists the
//! names and measures.
//!
//! Measures: `throughput` (messages/s) and `latency` (p99, ns) are Bencher's built-in ones;
//! `cpu-per-message` (server CPU ns per message) and `change` (the regress estimate, percent
//! of the compared cost) are created on first use.

use std::path::Path;

use anyhow::Result;
use serde_json::{Map, Value, json};

use super::text::metric_name;
use crate::record::regress::{RegressFile, RegressTrial, Side};
use crate::record::summary::CellSummary;
use crate::record::trial::{Cell, TrialsFile};
use crate::record::write_json;
use crate::stats::{median, min_max};

/// One measure: a value and, when known, its bounds (skipped when not finite).
fn measure(value: f64, bounds: Option<(f64, f64)>) -> Option<Value> {
    if !value.is_finite() {
        return None;
    }
    let mut entry = Map::new();
    entry.insert("value".into(), json!(value));
    if let Some((low, high)) = bounds.filter(|(low, high)| low.is_finite() && high.is_finite()) {
        entry.insert("lower_value".into(), json!(low));
        entry.insert("upper_value".into(), json!(high));
    }
    Some(Value::Object(entry))
}

/// A benchmark: its measures, those without a finite value left out.
fn benchmark(measures: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(
        measures
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| (name.to_string(), value)))
            .collect(),
    )
}

/// The name of a cell's benchmark: `echolab/bench/pool/c16-s64`.
pub fn cell_benchmark(cell: &Cell) -> String {
    format!(
        "echolab/bench/{}/c{}-s{}",
        cell.server, cell.connections, cell.size_bytes
    )
}

/// The BMF of a bench run: per cell its median throughput (bounds: the interval of the
/// median), p99 (bounds: the trials' range) and server CPU per message (bounds: range).
pub fn bench(summaries: &[CellSummary], trials: &TrialsFile) -> Value {
    let mut out = Map::new();
    for summary in summaries.iter().filter(|s| s.trials > 0) {
        let of_cell = || trials.trials.iter().filter(|t| t.cell == summary.cell);
        let p99_ns: Vec<f64> = of_cell()
            .filter_map(|t| t.figures.as_ref().map(|f| f.p99_us * 1000.0))
            .collect();
        let cpu_ns: Vec<f64> = of_cell()
            .filter_map(|t| t.server_cpu_per_message_us.map(|us| us * 1000.0))
            .collect();
        let ci = summary.messages_per_s_ci95;
        out.insert(
            cell_benchmark(&summary.cell),
            benchmark(vec![
                (
                    "throughput",
                    measure(summary.messages_per_s_median, Some((ci.low, ci.high))),
                ),
                ("latency", measure(median(&p99_ns), Some(min_max(&p99_ns)))),
                (
                    "cpu-per-message",
                    measure(median(&cpu_ns), Some(min_max(&cpu_ns))),
                ),
            ]),
        );
    }
    Value::Object(out)
}

/// The BMF of a regress run: per side (`echolab/regress/baseline/<server>`, `…/candidate/…`)
/// the medians of its trials, and `echolab/regress/change` with the estimated change of the
/// compared cost in percent (bounds: its interval) under the metric's name, e.g.
/// `cpu-change`. Figures are read from each trial's loadgen report in `run_dir`.
pub fn regress(file: &RegressFile, run_dir: &Path) -> Value {
    let mut out = Map::new();
    for contender in [&file.baseline, &file.candidate] {
        let trials: Vec<&RegressTrial> = file
            .trials
            .iter()
            .filter(|t| t.side == contender.label)
            .collect();
        let figures: Vec<serde_json::Value> = trials
            .iter()
            .filter_map(|t| crate::record::read_json(&run_dir.join(&t.report)).ok())
            .collect();
        let numbers = |pointer: &str, scale: f64| -> Vec<f64> {
            figures
                .iter()
                .filter_map(|report| report.pointer(pointer).and_then(Value::as_f64))
                .map(|x| x * scale)
                .collect()
        };
        let throughput = numbers("/throughput/messages_per_s", 1.0);
        let p99_ns = numbers("/latency_us/p99", 1000.0);
        let cpu_ns: Vec<f64> = trials
            .iter()
            .filter_map(|t| t.cpu_per_message_us.map(|us| us * 1000.0))
            .collect();
        let side = match contender.label {
            Side::Baseline => "baseline",
            Side::Candidate => "candidate",
        };
        out.insert(
            format!("echolab/regress/{side}/{}", contender.server.name),
            benchmark(vec![
                (
                    "throughput",
                    measure(median(&throughput), Some(min_max(&throughput))),
                ),
                ("latency", measure(median(&p99_ns), Some(min_max(&p99_ns)))),
                (
                    "cpu-per-message",
                    measure(median(&cpu_ns), Some(min_max(&cpu_ns))),
                ),
            ]),
        );
    }
    if let Some(change) = &file.change {
        out.insert(
            "echolab/regress/change".into(),
            benchmark(vec![(
                &format!("{}-change", metric_name(file.metric)),
                measure(
                    change.estimate * 100.0,
                    Some((change.low * 100.0, change.high * 100.0)),
                ),
            )]),
        );
    }
    Value::Object(out)
}

/// Writes a regress run's BMF to `path`.
pub fn write_regress(path: &Path, file: &RegressFile, run_dir: &Path) -> Result<()> {
    write_json(path, &regress(file, run_dir))
}

/// Writes a bench run's BMF to `path`.
pub fn write_bench(path: &Path, summaries: &[CellSummary], trials: &TrialsFile) -> Result<()> {
    write_json(path, &bench(summaries, trials))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::fixtures::{cell, record};
    use crate::summary::summarize;

    /// Every benchmark maps measures to objects with a numeric `value` and, if any, both
    /// bounds around it (BMF's schema, and what Bencher's `json` adapter reads).
    fn assert_bmf(value: &Value) {
        let benchmarks = value.as_object().expect("an object of benchmarks");
        assert!(!benchmarks.is_empty());
        for (name, measures) in benchmarks {
            for (measure, metric) in measures.as_object().expect("an object of measures") {
                let number = |key: &str| metric.get(key).and_then(Value::as_f64);
                let value = number("value").unwrap_or_else(|| panic!("{name}/{measure}"));
                if let (Some(low), Some(high)) = (number("lower_value"), number("upper_value")) {
                    assert!(low <= value && value <= high, "{name}/{measure}: {metric}");
                } else {
                    assert!(metric.get("lower_value").is_none(), "{name}/{measure}");
                }
            }
        }
    }

    #[test]
    fn bench_bmf_has_a_benchmark_per_cell() {
        let cells = vec![cell("pool", 16), cell("thread", 16)];
        let records: Vec<_> = (0..5)
            .flat_map(|t| {
                [
                    record(cells[0].clone(), t, 300.0 + f64::from(t), 150.0, 0),
                    record(cells[1].clone(), t, 200.0 + f64::from(t), 250.0, 0),
                ]
            })
            .collect();
        let summaries = summarize(&cells, &records);
        let trials = TrialsFile::new(1, cells, records);
        let bmf = bench(&summaries, &trials);
        assert_bmf(&bmf);
        let pool = &bmf["echolab/bench/pool/c16-s64"];
        assert_eq!(pool["throughput"]["value"], 302.0);
        assert_eq!(pool["latency"]["value"], 150_000.0);
        assert!(pool["cpu-per-message"]["value"].as_f64().is_some());
        assert_eq!(bmf.as_object().map(Map::len), Some(2));
    }
}
