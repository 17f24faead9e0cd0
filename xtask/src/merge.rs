//! `cargo xtask merge A.json B.json … -o ALL.json`: combine loadgen reports from many hosts.
//!
//! Exact, not averaged: counts and bytes are added, errors are added by kind, every serialized
//! HdrHistogram under `histograms` is decoded, added and re-encoded, and the percentiles are
//! recomputed from the merged histograms. Throughput is the sum over agents (they run at the same
//! time, aligned by loadgen `--start-at`). Reports with different schemas or message sizes are
//! refused. Try it: `cargo xtask merge results/agents/*.json -o merged.json`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use serde_json::{Value, json};

use crate::loadgen_report::{histogram, read_report};

/// The message size a report was made with (`config.size` or `config.size_bytes`).
fn message_size(report: &Value) -> Option<u64> {
    report
        .pointer("/config/size_bytes")
        .or_else(|| report.pointer("/config/size"))
        .and_then(Value::as_u64)
}

fn add_number(target: &mut Value, pointer: &str, amount: &Value) {
    let Some(amount) = amount.pointer(pointer) else {
        return;
    };
    let Some(slot) = target.pointer_mut(pointer) else {
        return;
    };
    *slot = match (slot.as_u64(), amount.as_u64()) {
        (Some(a), Some(b)) => json!(a + b),
        _ => json!(slot.as_f64().unwrap_or(0.0) + amount.as_f64().unwrap_or(0.0)),
    };
}

/// Percentile keys as in the loadgen report, from a histogram.
pub fn percentiles(histogram: &Histogram<u64>) -> Value {
    json!({
        "min": histogram.min(),
        "mean": histogram.mean(),
        "p50": histogram.value_at_quantile(0.5),
        "p90": histogram.value_at_quantile(0.9),
        "p99": histogram.value_at_quantile(0.99),
        "p999": histogram.value_at_quantile(0.999),
        "p9999": histogram.value_at_quantile(0.9999),
        "max": histogram.max(),
    })
}

/// Merges parsed reports (the first one gives the shape of the result).
pub fn merge_reports(reports: &[Value], names: &[String]) -> Result<Value> {
    let Some(first) = reports.first() else {
        bail!("nothing to merge");
    };
    for (report, name) in reports.iter().zip(names).skip(1) {
        if report.get("schema") != first.get("schema") {
            bail!(
                "{name}: schema {} differs from {} of {}",
                report["schema"],
                first["schema"],
                names[0]
            );
        }
        if message_size(report) != message_size(first) {
            bail!(
                "{name}: message size {:?} differs from {:?} of {}; merged latencies would mix workloads",
                message_size(report),
                message_size(first),
                names[0]
            );
        }
    }
    let mut merged = first.clone();
    for report in &reports[1..] {
        for pointer in [
            "/messages/sent",
            "/messages/verified",
            "/bytes/sent",
            "/bytes/received",
            "/throughput/messages_per_s",
            "/throughput/bytes_per_s",
            "/throughput/target_per_s",
            "/errors/total",
        ] {
            add_number(&mut merged, pointer, report);
        }
        if let (Some(into), Some(from)) = (
            merged
                .pointer_mut("/errors/by_kind")
                .and_then(Value::as_object_mut),
            report.pointer("/errors/by_kind").and_then(Value::as_object),
        ) {
            for (kind, count) in from {
                let sum = into.get(kind).and_then(Value::as_u64).unwrap_or(0)
                    + count.as_u64().unwrap_or(0);
                into.insert(kind.clone(), json!(sum));
            }
        }
        if let (Some(into), Some(from)) = (
            merged
                .pointer_mut("/errors/samples")
                .and_then(Value::as_array_mut),
            report.pointer("/errors/samples").and_then(Value::as_array),
        ) {
            into.extend(from.iter().cloned());
            into.truncate(16);
        }
    }
    let duration = reports
        .iter()
        .filter_map(|r| r.get("duration_s").and_then(Value::as_f64))
        .fold(0.0, f64::max);
    merged["duration_s"] = json!(duration);
    // Histograms: add exactly, re-encode, recompute percentiles where the report has them.
    let histogram_names: Vec<String> = first
        .get("histograms")
        .and_then(Value::as_object)
        .map(|h| h.keys().cloned().collect())
        .unwrap_or_default();
    for name in histogram_names {
        let mut total: Option<Histogram<u64>> = None;
        for (report, file) in reports.iter().zip(names) {
            let Some(part) = histogram(report, &name).with_context(|| file.clone())? else {
                bail!("{file}: has no histograms.{name}");
            };
            match &mut total {
                Some(total) => total
                    .add(&part)
                    .map_err(|e| anyhow::anyhow!("{file}: histograms.{name}: {e:?}"))?,
                None => total = Some(part),
            }
        }
        let Some(total) = total else { continue };
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&total, &mut bytes)
            .map_err(|e| anyhow::anyhow!("serializing histograms.{name}: {e:?}"))?;
        merged["histograms"][&name] =
            json!(base64::engine::general_purpose::STANDARD.encode(&bytes));
        if merged.get(&name).is_some_and(Value::is_object) {
            merged[&name] = percentiles(&total);
        }
    }
    merged["merged_from"] = json!(names);
    merged["agents"] = json!(
        reports
            .iter()
            .map(|r| r.get("env").cloned().unwrap_or(Value::Null))
            .collect::<Vec<_>>()
    );
    Ok(merged)
}

/// `cargo xtask merge`.
pub fn run(inputs: &[PathBuf], output: &Path) -> Result<()> {
    if inputs.len() < 2 {
        return Err(crate::input_error("merge needs at least two reports"));
    }
    let reports = inputs
        .iter()
        .map(|path| read_report(path))
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    let merged = merge_reports(&reports, &names)?;
    crate::manifest::write_json(output, &merged)?;
    eprintln!(
        "merged {} reports: {} messages verified, {} msg/s, p99 {} µs → {}",
        inputs.len(),
        merged.pointer("/messages/verified").unwrap_or(&Value::Null),
        merged
            .pointer("/throughput/messages_per_s")
            .and_then(Value::as_f64)
            .map_or("-".into(), crate::summary::format_count),
        merged.pointer("/latency_us/p99").unwrap_or(&Value::Null),
        output.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(values: &[u64], kind: &str) -> (Value, Histogram<u64>) {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for &value in values {
            histogram.record(value).expect("in range");
        }
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&histogram, &mut bytes)
            .expect("serializes");
        let report = json!({
            "schema": "echolab.loadgen/1",
            "config": {"size": 64},
            "env": {"host": kind},
            "duration_s": 1.0,
            "messages": {"sent": values.len(), "verified": values.len()},
            "bytes": {"sent": values.len() * 64, "received": values.len() * 64},
            "throughput": {"messages_per_s": values.len() as f64, "bytes_per_s": 0.0},
            "latency_us": percentiles(&histogram),
            "errors": {"total": 1, "by_kind": {kind: 1}, "samples": []},
            "histograms": {"latency_us": base64::engine::general_purpose::STANDARD.encode(&bytes)},
        });
        (report, histogram)
    }

    #[test]
    fn merge_of_two_equals_one_report_over_the_same_data() {
        let a_values: Vec<u64> = (1..=500).map(|v| v * 3).collect();
        let b_values: Vec<u64> = (1..=300).map(|v| v * 50 + 7).collect();
        let (a, _) = report(&a_values, "reset");
        let (b, _) = report(&b_values, "timeout");
        let all: Vec<u64> = a_values.iter().chain(&b_values).copied().collect();
        let (one, _) = report(&all, "reset");
        let merged = merge_reports(&[a, b], &["a".into(), "b".into()]).expect("merges");
        assert_eq!(merged["latency_us"], one["latency_us"]);
        assert_eq!(
            merged["histograms"]["latency_us"],
            one["histograms"]["latency_us"]
        );
        assert_eq!(merged["messages"]["verified"], json!(800));
        assert_eq!(merged["errors"]["total"], json!(2));
        assert_eq!(
            merged["errors"]["by_kind"],
            json!({"reset": 1, "timeout": 1})
        );
        assert_eq!(merged["throughput"]["messages_per_s"], json!(800.0));
        assert_eq!(merged["merged_from"], json!(["a", "b"]));
    }

    #[test]
    fn refuses_different_sizes_or_schemas() {
        let (a, _) = report(&[1, 2, 3], "reset");
        let (mut b, _) = report(&[4, 5], "reset");
        b["config"]["size"] = json!(1024);
        let error =
            merge_reports(&[a.clone(), b], &["a".into(), "b".into()]).expect_err("sizes differ");
        assert!(error.to_string().contains("message size"), "{error}");
        let (mut c, _) = report(&[4, 5], "reset");
        c["schema"] = json!("echolab.loadgen/2");
        assert!(merge_reports(&[a, c], &["a".into(), "c".into()]).is_err());
    }
}
