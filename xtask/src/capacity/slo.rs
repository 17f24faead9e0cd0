//! What a capacity step must meet and whether it did: the SLO in loadgen's `--slo` syntax
//! ([`CapacitySlo`], upper bounds only), the judgement of one loadgen report against it and the
//! 1%-of-target rule ([`judge`], with a typed [`StepReason`] per failed condition), and the
//! step a trial record becomes ([`step_from_record`]).

use std::path::Path;

use anyhow::{Context, Result};
use loadgen::Report;
use loadgen::slo::{Clause, Metric, Op, check, parse_slo};

use crate::error::input_error;
use crate::record::capacity::{LatencyLimit, SloRecord, Step, StepReason};
use crate::record::loadgen_report::read_report;
use crate::record::trial::TrialRecord;

/// Required achieved/target ratio for a step to pass.
pub const MIN_ACHIEVED_RATIO: f64 = 0.99;

/// The SLO a capacity step must meet: loadgen's parsed clauses (what [`judge`] checks with
/// `loadgen::slo::check`) and the record written to `capacity.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacitySlo {
    /// Upper bounds only; `errors=N` is held as `errors<=N`, and `errors<=0` is added when the
    /// text bounds no errors (capacity never counts a rate that loses messages).
    pub slo: loadgen::slo::Slo,
    pub record: SloRecord,
}

impl CapacitySlo {
    /// Parses `p99<=1ms,p999<=5ms,errors=0` with loadgen's parser (the syntax of its `--slo`)
    /// and keeps what a capacity search can use: upper bounds on latency (at least one) and on
    /// errors. Anything else is an input error (exit 2) naming the clause.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            input_error(format!(
                "SLO {text:?}: {why} (expected e.g. 'p99<=1ms,p999<=5ms,errors=0')"
            ))
        };
        let parsed = parse_slo(text).map_err(|error| bad(&error.0))?;
        let mut clauses = Vec::new();
        let mut latency = Vec::new();
        let mut max_errors: Option<u64> = None;
        for clause in parsed.clauses {
            match (clause.metric, clause.op) {
                (Metric::Latency(key), Op::Le | Op::Lt) => {
                    latency.push(LatencyLimit {
                        key: key.to_string(),
                        limit_us: clause.limit,
                    });
                    clauses.push(clause);
                }
                (Metric::Errors, op @ (Op::Le | Op::Eq | Op::Lt)) => {
                    if clause.limit.fract() != 0.0 || (op == Op::Lt && clause.limit < 1.0) {
                        return Err(bad(&format!(
                            "clause {:?}: errors needs a whole number (at least 0)",
                            clause.text
                        )));
                    }
                    let max = clause.limit as u64 - u64::from(op == Op::Lt);
                    max_errors = Some(max_errors.map_or(max, |other| other.min(max)));
                    clauses.push(Clause {
                        op: if op == Op::Eq { Op::Le } else { op },
                        ..clause
                    });
                }
                _ => {
                    return Err(bad(&format!(
                        "clause {:?}: capacity needs upper bounds on latency or errors \
                         (p99<=1ms, errors<=N); it sets the rate itself",
                        clause.text
                    )));
                }
            }
        }
        if latency.is_empty() {
            return Err(bad("no latency clause (e.g. 'p99<=1ms')"));
        }
        if max_errors.is_none() {
            clauses.push(Clause {
                metric: Metric::Errors,
                op: Op::Le,
                limit: 0.0,
                text: "errors<=0 (default)".into(),
            });
        }
        Ok(Self {
            slo: loadgen::slo::Slo { clauses },
            record: SloRecord {
                text: text.trim().to_string(),
                latency,
                max_errors: max_errors.unwrap_or(0),
            },
        })
    }
}

/// Judges one report against the SLO (`loadgen::slo::check`) and the 1%-of-target rule:
/// whether the step passes, and every reason it does not.
pub fn judge(slo: &CapacitySlo, target_per_s: u64, report: &Report) -> (bool, Vec<StepReason>) {
    // One line per clause, then one for an invalid run (said below, with its reasons).
    let verdict = check(&slo.slo, report);
    let mut reasons: Vec<StepReason> = verdict
        .lines
        .into_iter()
        .take(slo.slo.clauses.len())
        .filter(|line| line.contains("NOT MET"))
        .map(StepReason::SloNotMet)
        .collect();
    let achieved = report.throughput.messages_per_s;
    let ratio = report
        .throughput
        .achieved_ratio
        .unwrap_or(achieved / target_per_s as f64);
    if ratio < MIN_ACHIEVED_RATIO {
        reasons.push(StepReason::BelowTarget {
            achieved_per_s: achieved,
            ratio,
        });
    }
    if !report.valid {
        reasons.push(StepReason::LoadgenInvalid(report.invalid_reasons.clone()));
    }
    let starved = report.connections.starved;
    if starved > 0 {
        reasons.push(StepReason::Starved(starved));
    }
    if report.loadgen.saturated {
        reasons.push(StepReason::LoadgenSaturated);
    }
    (reasons.is_empty(), reasons)
}

/// Turns one trial record into a judged step: reads its loadgen report as `loadgen::Report`
/// and [`judge`]s it; a trial without a usable report is a failed step saying why.
pub fn step_from_record(
    slo: &CapacitySlo,
    rate: u64,
    record: &TrialRecord,
    run_dir: &Path,
) -> Result<Step> {
    let report_path = run_dir.join(&record.loadgen_json);
    if let Some(failure) = &record.failure {
        return Ok(Step::failed(rate, StepReason::TrialFailed(failure.clone())));
    }
    if !report_path.exists() {
        return Ok(Step::failed(rate, StepReason::NoReport));
    }
    let json = read_report(&report_path).context("reading step report")?;
    let report: Report = match serde_json::from_value(json.clone()) {
        Ok(report) => report,
        Err(error) => {
            return Ok(Step::failed(
                rate,
                StepReason::ReportMismatch {
                    report: record.loadgen_json.clone(),
                    error: error.to_string(),
                },
            ));
        }
    };
    let (pass, reasons) = judge(slo, rate, &report);
    Ok(Step {
        target_per_s: rate,
        attempt: 1,
        achieved_per_s: report.throughput.messages_per_s,
        latency_us: json
            .get("latency_us")
            .cloned()
            .unwrap_or(serde_json::Value::Null),
        service_time_us: json.get("service_time_us").cloned(),
        errors: report.errors.total,
        valid: Some(report.valid),
        pass,
        reasons,
        report: Some(record.loadgen_json.clone()),
        confirm: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid open-loop report: 9,950 of 10,000 msg/s, p99 800 µs, p999 2 ms, no errors.
    fn report() -> Report {
        let mut config = loadgen::Config::new("127.0.0.1:1");
        config.rate_per_s = Some(10_000.0);
        Report {
            schema: loadgen::report::SCHEMA.into(),
            config,
            env: loadgen::env::Env {
                host: "test".into(),
                cores: 2,
                kernel: "Linux".into(),
                loadgen_version: "0".into(),
                git_commit: None,
                start_time: "2026-01-01T00:00:00Z".into(),
                start_unix_s: 0.0,
            },
            duration_s: 2.0,
            messages: loadgen::report::Messages {
                sent: 19_900,
                verified: 19_900,
            },
            bytes: loadgen::report::Bytes::default(),
            throughput: loadgen::report::Throughput {
                messages_per_s: 9950.0,
                ..Default::default()
            },
            latency_us: loadgen::report::Percentiles {
                p50: 300,
                p99: 800,
                p999: 2000,
                max: 3000,
                ..Default::default()
            },
            service_time_us: Default::default(),
            connect_us: Default::default(),
            schedule: None,
            timing: None,
            steps: Vec::new(),
            connections: Default::default(),
            errors: Default::default(),
            loadgen: Default::default(),
            valid: true,
            invalid_reasons: vec![],
            histograms: Default::default(),
        }
    }

    #[test]
    fn slo_record_comes_from_loadgens_parser() {
        let slo = CapacitySlo::parse(" p99<=1ms, p99.9<5ms,errors=2,max<=250us").expect("valid");
        assert_eq!(slo.record.text, "p99<=1ms, p99.9<5ms,errors=2,max<=250us");
        let limits: Vec<(&str, f64)> = slo
            .record
            .latency
            .iter()
            .map(|l| (l.key.as_str(), l.limit_us))
            .collect();
        assert_eq!(limits, [("p99", 1000.0), ("p999", 5000.0), ("max", 250.0)]);
        assert_eq!(slo.record.max_errors, 2);
        assert_eq!(
            CapacitySlo::parse("errors<3,p50<=2s")
                .expect("valid")
                .record
                .max_errors,
            2
        );
        // No errors clause: none tolerated, and the checked clauses say so.
        let slo = CapacitySlo::parse("p50<=2s").expect("valid");
        assert_eq!(slo.record.max_errors, 0);
        assert_eq!(slo.slo.clauses.len(), 2);
        let json = serde_json::to_value(&slo.record).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"text": "p50<=2s", "latency": [{"key": "p50", "limit_us": 2e6}],
                               "max_errors": 0})
        );
    }

    #[test]
    fn bad_slos_are_input_errors_naming_the_problem() {
        for (bad, why) in [
            ("p99", "no comparison"),
            ("p98<=1ms", "unknown metric"),
            ("p99<=fast", "p99<=fast"),
            ("errors=some", "not a number"),
            ("errors=0", "no latency clause"),
            ("", "no clauses"),
            ("p99>=1ms", "upper bounds"),
            ("p99<=1ms,rate>=100", "upper bounds"),
            ("p99<=1ms,errors<=1.5", "whole number"),
            ("p99<=1ms,errors<0", "whole number"),
        ] {
            let error = CapacitySlo::parse(bad).expect_err(bad);
            assert_eq!(crate::exit_code(&error), 2, "{bad}: {error}");
            let text = error.to_string();
            assert!(
                text.contains(why) && text.contains("expected e.g."),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn judge_requires_slo_rate_and_validity() {
        let slo = CapacitySlo::parse("p99<=1ms").expect("valid");
        assert_eq!(judge(&slo, 10_000, &report()), (true, vec![]));
        let mut slow = report();
        slow.throughput.messages_per_s = 9800.0;
        let (pass, reasons) = judge(&slo, 10_000, &slow);
        assert_eq!(
            reasons,
            [StepReason::BelowTarget {
                achieved_per_s: 9800.0,
                ratio: 0.98
            }]
        );
        assert!(!pass && reasons[0].to_string().contains("98.0% of the target"));
        let mut invalid = report();
        invalid.valid = false;
        invalid.invalid_reasons = vec!["schedule lag".into()];
        let (pass, reasons) = judge(&slo, 10_000, &invalid);
        assert_eq!(reasons.len(), 1, "said once: {reasons:?}");
        assert!(
            !pass && reasons[0].to_string().contains("schedule lag"),
            "{reasons:?}"
        );
        assert!(reasons[0].is_instrument());
        let mut ratio = report();
        ratio.throughput.achieved_ratio = Some(0.5);
        assert!(!judge(&slo, 10_000, &ratio).0);
        let mut starved = report();
        starved.connections.starved = 14;
        let (pass, reasons) = judge(&slo, 10_000, &starved);
        assert!(
            !pass && reasons[0].to_string().starts_with("14 connections starved"),
            "{reasons:?}"
        );
        assert!(!reasons[0].is_instrument());
        let mut saturated = report();
        saturated.loadgen.saturated = true;
        assert_eq!(
            judge(&slo, 10_000, &saturated).1,
            [StepReason::LoadgenSaturated]
        );
    }

    #[test]
    fn judge_names_each_broken_clause() {
        let slo = CapacitySlo::parse("p99<=1ms,p999<=5ms,errors<=1").expect("valid");
        let mut bad = report();
        bad.latency_us.p99 = 1500;
        bad.errors.total = 3;
        let (pass, reasons) = judge(&slo, 10_000, &bad);
        assert!(!pass);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        let texts: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        assert!(
            texts[0].contains("p99<=1ms") && texts[0].contains("1500"),
            "{texts:?}"
        );
        assert!(
            texts[1].contains("errors<=1") && texts[1].contains('3'),
            "{texts:?}"
        );
        assert!(matches!(reasons[0], StepReason::SloNotMet(_)));
        // errors=1 is an upper bound here (not loadgen's "exactly"): no errors also passes.
        let slo = CapacitySlo::parse("p99<=1ms,errors=1").expect("valid");
        assert!(judge(&slo, 10_000, &report()).0);
        // Without an errors clause a single error fails the step.
        let slo = CapacitySlo::parse("p99<=1ms").expect("valid");
        let mut one_error = report();
        one_error.errors.total = 1;
        let (pass, reasons) = judge(&slo, 10_000, &one_error);
        assert!(
            !pass && reasons[0].to_string().contains("errors<=0"),
            "{reasons:?}"
        );
    }
}
