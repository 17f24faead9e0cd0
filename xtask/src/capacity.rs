//! `cargo xtask capacity`: the highest open-loop rate a server holds within an SLO.
//!
//! How: loadgen in open loop (`--rate R`, latency corrected for coordinated omission) against a
//! fresh server per step; a doubling ramp from `--start-rate` until a step fails, then bisection
//! between the last pass and the first failure until the bracket is within `--precision`. A step
//! passes when the SLO holds on corrected latency, errors stay within it (0 by default), the
//! achieved rate is within 1% of the target, and the loadgen says its measurement is valid (not
//! saturated, no schedule lag). The search itself is a pure function over a `measure` closure
//! ([`search`]) so it is tested with a fake server; everything ends within `--budget`.
//!
//! Try it: `cargo xtask capacity --strategy pool --slo 'p99<=1ms'`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::bench::{BenchPlan, Pinning, ServerEntry, TrialRunner, parse_server_spec};
use crate::flags::CapacityArgs;
use crate::loadgen_report::read_report;
use crate::manifest::{Manifest, create_run_dir, write_json};
use crate::shell;
use crate::slo::Slo;
use crate::summary::Cell;
use crate::{input_error, interrupt};

/// Required achieved/target ratio for a step to pass.
pub const MIN_ACHIEVED_RATIO: f64 = 0.99;

/// The result of one step of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub target_per_s: u64,
    /// 1 for the first measurement of this rate, 2 for its retry (see `--retries`).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    pub achieved_per_s: f64,
    /// `latency_us` of the report (corrected latency): p50, p90, p99, p999, max …
    pub latency_us: serde_json::Value,
    /// `service_time_us` of the report, when the loadgen records it.
    pub service_time_us: Option<serde_json::Value>,
    pub errors: u64,
    pub valid: Option<bool>,
    pub pass: bool,
    /// Why it failed (empty when it passed).
    pub reasons: Vec<String>,
    /// The loadgen report, relative to the run directory.
    pub report: Option<String>,
}

fn first_attempt() -> u32 {
    1
}

/// Judges one report against the SLO and the 1%-of-target rule.
pub fn judge(slo: &Slo, target_per_s: u64, report: &serde_json::Value) -> (bool, Vec<String>) {
    let mut reasons = slo.violations(report);
    let achieved = report
        .pointer("/throughput/messages_per_s")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    let ratio = report
        .pointer("/throughput/achieved_ratio")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(achieved / target_per_s as f64);
    if ratio < MIN_ACHIEVED_RATIO {
        reasons.push(format!(
            "achieved {achieved:.0}/s is {:.1}% of the target",
            ratio * 100.0
        ));
    }
    if report
        .pointer("/valid")
        .and_then(serde_json::Value::as_bool)
        == Some(false)
    {
        let why: Vec<String> = report
            .pointer("/invalid_reasons")
            .and_then(serde_json::Value::as_array)
            .map(|reasons| {
                reasons
                    .iter()
                    .map(|r| r.as_str().map_or_else(|| r.to_string(), String::from))
                    .collect()
            })
            .unwrap_or_default();
        reasons.push(format!(
            "loadgen marked the run invalid: {}",
            why.join("; ")
        ));
    }
    if let Some(starved) = report
        .pointer("/connections/starved")
        .and_then(serde_json::Value::as_u64)
        .filter(|&n| n > 0)
    {
        reasons.push(format!(
            "{starved} connections starved (the server serves fewer connections at once than it \
             was given; for pool/rayon try --server-args '--workers N')"
        ));
    }
    if report
        .pointer("/loadgen/saturated")
        .and_then(serde_json::Value::as_bool)
        == Some(true)
    {
        reasons.push("loadgen saturated".into());
    }
    (reasons.is_empty(), reasons)
}

/// Limits of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchLimits {
    pub start_rate_per_s: u64,
    /// Lowest rate the downward ramp tries (below it a step has too few samples to judge).
    #[serde(default)]
    pub min_rate_per_s: u64,
    pub max_rate_per_s: u64,
    /// Stop bisecting when (fail − pass) / pass is at most this.
    pub precision: f64,
    pub max_steps: usize,
}

/// Where the capacity lies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchOutcome {
    /// The highest passing rate (`None` when even the lowest rate tried failed).
    pub capacity_per_s: Option<u64>,
    /// The lowest failing rate (`None` when the ramp reached its maximum or budget first).
    pub first_fail_per_s: Option<u64>,
    pub steps: Vec<Step>,
    /// Why the search stopped.
    pub stopped_because: String,
}

/// Ramp (doubling) then bisection. `measure(rate)` runs one step; `Ok(None)` from it means
/// "no time left" and ends the search with the bracket found so far.
pub fn search(
    limits: &SearchLimits,
    mut measure: impl FnMut(u64) -> Result<Option<Step>>,
) -> Result<SearchOutcome> {
    let mut steps: Vec<Step> = Vec::new();
    let mut pass: Option<u64> = None;
    let mut fail: Option<u64> = None;
    let mut rate = limits.start_rate_per_s.max(1);
    let stopped_because;
    // Ramp: up by doubling while passing; down by halving while the start rate fails.
    loop {
        if steps.len() >= limits.max_steps {
            return Ok(finish(
                pass,
                fail,
                steps,
                "step limit reached during the ramp",
            ));
        }
        let Some(step) = measure(rate)? else {
            return Ok(finish(
                pass,
                fail,
                steps,
                "time budget spent during the ramp",
            ));
        };
        let passed = step.pass;
        steps.push(step);
        if passed {
            pass = Some(rate);
            if fail.is_some() {
                break;
            }
            if rate >= limits.max_rate_per_s {
                return Ok(finish(
                    pass,
                    fail,
                    steps,
                    "reached --max-rate without failing",
                ));
            }
            rate = (rate.saturating_mul(2)).min(limits.max_rate_per_s);
        } else {
            fail = Some(rate);
            if pass.is_some() {
                break;
            }
            if rate / 2 < limits.min_rate_per_s.max(1) {
                return Ok(finish(
                    pass,
                    fail,
                    steps,
                    &format!("even {rate} msg/s fails the SLO"),
                ));
            }
            rate /= 2;
        }
    }
    // Bisection between the last pass and the first failure.
    loop {
        let (Some(low), Some(high)) = (pass, fail) else {
            bail!("bisection without a bracket");
        };
        if (high - low) as f64 <= limits.precision * low as f64 || high - low <= 1 {
            stopped_because = format!("bracket within {:.0}%", limits.precision * 100.0);
            break;
        }
        if steps.len() >= limits.max_steps {
            stopped_because = "step limit reached during bisection".into();
            break;
        }
        let middle = low + (high - low) / 2;
        let Some(step) = measure(middle)? else {
            stopped_because = "time budget spent during bisection".into();
            break;
        };
        if step.pass {
            pass = Some(middle);
        } else {
            fail = Some(middle);
        }
        steps.push(step);
    }
    Ok(finish(pass, fail, steps, &stopped_because))
}

fn finish(pass: Option<u64>, fail: Option<u64>, steps: Vec<Step>, why: &str) -> SearchOutcome {
    SearchOutcome {
        capacity_per_s: pass,
        first_fail_per_s: fail,
        steps,
        stopped_because: why.to_string(),
    }
}

/// The file `capacity.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityFile {
    pub schema: String,
    pub server: ServerEntry,
    pub slo: Slo,
    pub connections: u32,
    pub size_bytes: u32,
    pub duration_ms: u64,
    pub warmup_ms: u64,
    pub limits: SearchLimits,
    pub capacity_per_s: Option<u64>,
    pub first_fail_per_s: Option<u64>,
    pub stopped_because: String,
    pub steps: Vec<Step>,
}

/// Schema id of `capacity.json`.
pub const CAPACITY_SCHEMA: &str = "echolab.xtask.capacity/1";

/// The one-line answer.
pub fn answer_line(outcome: &SearchOutcome) -> String {
    match (outcome.capacity_per_s, outcome.first_fail_per_s) {
        (Some(pass), Some(fail)) => format!(
            "capacity: {} msg/s (passes at {}, fails at {} msg/s; {})",
            crate::summary::format_count(pass as f64),
            crate::summary::format_count(pass as f64),
            crate::summary::format_count(fail as f64),
            outcome.stopped_because
        ),
        (Some(pass), None) => format!(
            "capacity: at least {} msg/s (no failing rate found: {})",
            crate::summary::format_count(pass as f64),
            outcome.stopped_because
        ),
        (None, Some(fail)) => format!(
            "capacity: below {} msg/s (every rate tried failed: {})",
            crate::summary::format_count(fail as f64),
            outcome.stopped_because
        ),
        (None, None) => format!("capacity: unknown ({})", outcome.stopped_because),
    }
}

/// `cargo xtask capacity`.
pub fn run(args: &CapacityArgs) -> Result<()> {
    let slo = Slo::parse(&args.slo)?;
    let server = match (&args.strategy, &args.server) {
        (Some(_), Some(_)) => return Err(input_error("give --strategy or --server, not both")),
        (None, Some(command)) => parse_server_spec(&format!("server={command}"))?,
        (strategy, None) => {
            let name = strategy.clone().unwrap_or_else(|| "pool".into());
            if !crate::bench::KNOWN_STRATEGIES.contains(&name.as_str()) {
                return Err(input_error(format!(
                    "unknown strategy {name:?}; known: {}",
                    crate::bench::KNOWN_STRATEGIES.join(", ")
                )));
            }
            ServerEntry {
                name,
                command: None,
            }
        }
    };
    if args.connections == 0 || args.size == 0 || args.start_rate == 0 {
        return Err(input_error(
            "--connections, --size and --start-rate must be at least 1",
        ));
    }
    let root = shell::project_root();
    let binaries = shell::binaries(&root, &args.build, None)?;
    let mut plan = BenchPlan {
        servers: vec![server.clone()],
        all_strategies: false,
        connections: vec![args.connections],
        sizes_bytes: vec![args.size],
        depth: None,
        rate_per_s: None,
        trials: 1,
        duration_ms: args.duration.as_millis() as u64,
        warmup_ms: args.warmup.as_millis() as u64,
        pin: !args.no_pin,
        seed: 0,
        ready_timeout_ms: args.ready_timeout.as_millis() as u64,
        server_args: split_args(args.server_args.as_deref()),
    };
    crate::bench::resolve_strategies(&mut plan, &binaries)?;
    let run_dir = create_run_dir(&root, "capacity", args.out.as_deref())?;
    // At least 100 latency samples per step, or the loadgen rightly calls the step invalid.
    let min_rate_per_s = (100.0 / args.duration.as_secs_f64().max(0.001)).ceil() as u64;
    let limits = SearchLimits {
        start_rate_per_s: args.start_rate,
        min_rate_per_s,
        max_rate_per_s: args.max_rate,
        precision: args.precision_percent / 100.0,
        max_steps: 40,
    };
    let manifest = Manifest::collect(
        "capacity",
        serde_json::json!({"server": server, "slo": slo, "limits": limits,
            "connections": args.connections, "size_bytes": args.size,
            "duration_ms": plan.duration_ms, "warmup_ms": plan.warmup_ms, "pin": plan.pin}),
        &root,
    );
    manifest.write(&run_dir)?;
    std::fs::create_dir_all(run_dir.join("trials"))?;
    let pinning = Pinning::new(plan.pin);
    eprintln!(
        "capacity of {} at SLO {:?} ({} connections, {} B): ramp from {}/s, budget {}; run directory {}",
        server.name,
        slo.text,
        args.connections,
        args.size,
        args.start_rate,
        humantime::format_duration(args.budget),
        run_dir.display()
    );
    crate::bench::preflight(&plan, &binaries, &run_dir, &pinning)?;
    let started = Instant::now();
    let step_cost = Duration::from_millis(plan.warmup_ms + plan.duration_ms + 300);
    let mut order = 0;
    let cell = Cell {
        server: server.name.clone(),
        connections: args.connections,
        size_bytes: args.size,
    };
    let mut every_step: Vec<Step> = Vec::new();
    let outcome = search(&limits, |rate| {
        // Interference on a shared machine only ever adds latency, so a failed step is measured
        // again (`--retries`) and passes if any attempt passes.
        let mut last = None;
        for attempt in 1..=1 + args.retries {
            interrupt::check()?;
            if started.elapsed() + step_cost > args.budget {
                break;
            }
            let mut step_plan = plan.clone();
            step_plan.rate_per_s = Some(rate);
            let runner = TrialRunner {
                plan: &step_plan,
                binaries: &binaries,
                run_dir: &run_dir,
                pinning: &pinning,
            };
            let record = runner.run_trial(order, &cell, attempt - 1, &server)?;
            order += 1;
            let mut step = step_from_record(&slo, rate, &record, &run_dir)?;
            step.attempt = attempt;
            eprintln!("{}", step_line(&step));
            every_step.push(step.clone());
            let passed = step.pass;
            last = Some(step);
            if passed {
                break;
            }
        }
        Ok(last)
    })?;
    let file = CapacityFile {
        schema: CAPACITY_SCHEMA.into(),
        server,
        slo,
        connections: args.connections,
        size_bytes: args.size,
        duration_ms: plan.duration_ms,
        warmup_ms: plan.warmup_ms,
        limits,
        capacity_per_s: outcome.capacity_per_s,
        first_fail_per_s: outcome.first_fail_per_s,
        stopped_because: outcome.stopped_because.clone(),
        steps: every_step,
    };
    write_json(&run_dir.join("capacity.json"), &file)?;
    crate::report::draw_capacity(&run_dir, &file)?;
    println!("{}", answer_line(&outcome));
    println!("run directory: {}", run_dir.display());
    Ok(())
}

/// One line per measured step.
pub fn step_line(step: &Step) -> String {
    format!(
        "  {:>10}/s → achieved {:>10.0}/s, p99 {} µs, errors {}: {}{}",
        step.target_per_s,
        step.achieved_per_s,
        step.latency_us
            .get("p99")
            .and_then(serde_json::Value::as_f64)
            .map_or("-".into(), crate::summary::format_us),
        step.errors,
        if step.pass {
            "pass".to_string()
        } else {
            format!("FAIL ({})", step.reasons.join("; "))
        },
        if step.attempt > 1 { " [retry]" } else { "" }
    )
}

/// Splits `--server-args` on whitespace.
pub fn split_args(text: Option<&str>) -> Vec<String> {
    text.map(|text| text.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// Turns one trial record into a judged step.
pub fn step_from_record(
    slo: &Slo,
    rate: u64,
    record: &crate::summary::TrialRecord,
    run_dir: &Path,
) -> Result<Step> {
    let report_path = run_dir.join(&record.loadgen_json);
    let report = match (&record.failure, report_path.exists()) {
        (None, true) => Some(read_report(&report_path).context("reading step report")?),
        _ => None,
    };
    let Some(report) = report else {
        return Ok(Step {
            target_per_s: rate,
            attempt: 1,
            achieved_per_s: 0.0,
            latency_us: serde_json::Value::Null,
            service_time_us: None,
            errors: 0,
            valid: None,
            pass: false,
            reasons: vec![record.failure.clone().unwrap_or_else(|| "no report".into())],
            report: None,
        });
    };
    let (pass, reasons) = judge(slo, rate, &report);
    Ok(Step {
        target_per_s: rate,
        attempt: 1,
        achieved_per_s: report
            .pointer("/throughput/messages_per_s")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0),
        latency_us: report
            .get("latency_us")
            .cloned()
            .unwrap_or(serde_json::Value::Null),
        service_time_us: report.get("service_time_us").cloned(),
        errors: report
            .pointer("/errors/total")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
        valid: report.get("valid").and_then(serde_json::Value::as_bool),
        pass,
        reasons,
        report: Some(record.loadgen_json.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_step(rate: u64, knee: u64) -> Step {
        Step {
            target_per_s: rate,
            attempt: 1,
            achieved_per_s: rate.min(knee) as f64,
            latency_us: serde_json::json!({"p99": if rate <= knee { 200.0 } else { 5000.0 }}),
            service_time_us: None,
            errors: 0,
            valid: Some(true),
            pass: rate <= knee,
            reasons: vec![],
            report: None,
        }
    }

    fn limits() -> SearchLimits {
        SearchLimits {
            start_rate_per_s: 1000,
            min_rate_per_s: 1,
            max_rate_per_s: 10_000_000,
            precision: 0.05,
            max_steps: 40,
        }
    }

    #[test]
    fn finds_the_knee_within_precision() {
        for knee in [1_000, 3_000, 37_000, 123_456, 999_999] {
            let mut rates = Vec::new();
            let outcome = search(&limits(), |rate| {
                rates.push(rate);
                Ok(Some(fake_step(rate, knee)))
            })
            .expect("search runs");
            let capacity = outcome.capacity_per_s.expect("found");
            let fail = outcome.first_fail_per_s.expect("bracketed");
            assert!(
                capacity <= knee && fail > knee,
                "{knee}: {capacity}..{fail}"
            );
            assert!(
                (fail - capacity) as f64 <= 0.05 * capacity as f64 + 1.0,
                "{knee}: {capacity}..{fail}"
            );
            assert!(
                outcome.steps.len() <= 25,
                "{knee}: {} steps",
                outcome.steps.len()
            );
            assert_eq!(rates[0], 1000);
        }
    }

    #[test]
    fn ramps_down_when_the_start_rate_fails() {
        let outcome = search(&limits(), |rate| Ok(Some(fake_step(rate, 300)))).expect("runs");
        let capacity = outcome.capacity_per_s.expect("found");
        assert!((285..=300).contains(&capacity), "{capacity}");
        assert_eq!(outcome.steps[0].target_per_s, 1000);
        assert_eq!(outcome.steps[1].target_per_s, 500);
    }

    #[test]
    fn the_downward_ramp_stops_at_the_minimum_rate() {
        let mut high_floor = limits();
        high_floor.min_rate_per_s = 200;
        let outcome = search(&high_floor, |rate| Ok(Some(fake_step(rate, 0)))).expect("runs");
        let rates: Vec<u64> = outcome.steps.iter().map(|s| s.target_per_s).collect();
        assert_eq!(rates, [1000, 500, 250]);
        assert_eq!(outcome.capacity_per_s, None);
        assert!(answer_line(&outcome).starts_with("capacity: below 250 msg/s"));
    }

    #[test]
    fn stops_at_max_rate_and_on_budget() {
        let mut small = limits();
        small.max_rate_per_s = 5_000;
        let outcome = search(&small, |rate| Ok(Some(fake_step(rate, u64::MAX)))).expect("runs");
        assert_eq!(outcome.capacity_per_s, Some(5_000));
        assert_eq!(outcome.first_fail_per_s, None);
        assert!(answer_line(&outcome).starts_with("capacity: at least 5,000 msg/s"));

        let mut budget = 3;
        let outcome = search(&limits(), |rate| {
            if budget == 0 {
                return Ok(None);
            }
            budget -= 1;
            Ok(Some(fake_step(rate, 1_000_000)))
        })
        .expect("runs");
        assert_eq!(outcome.steps.len(), 3);
        assert_eq!(outcome.capacity_per_s, Some(4_000));
        assert!(outcome.stopped_because.contains("budget"));
    }

    #[test]
    fn judge_requires_slo_rate_and_validity() {
        let slo = Slo::parse("p99<=1ms").expect("valid");
        let good = serde_json::json!({
            "latency_us": {"p99": 800.0}, "errors": {"total": 0},
            "throughput": {"messages_per_s": 9950.0}, "valid": true});
        assert_eq!(judge(&slo, 10_000, &good), (true, vec![]));
        let mut slow = good.clone();
        slow["throughput"]["messages_per_s"] = serde_json::json!(9800.0);
        let (pass, reasons) = judge(&slo, 10_000, &slow);
        assert!(
            !pass && reasons[0].contains("98.0% of the target"),
            "{reasons:?}"
        );
        let mut invalid = good.clone();
        invalid["valid"] = serde_json::json!(false);
        invalid["invalid_reasons"] = serde_json::json!(["schedule lag"]);
        let (pass, reasons) = judge(&slo, 10_000, &invalid);
        assert!(!pass && reasons[0].contains("schedule lag"), "{reasons:?}");
        let mut ratio = good.clone();
        ratio["throughput"]["achieved_ratio"] = serde_json::json!(0.5);
        assert!(!judge(&slo, 10_000, &ratio).0);
        let mut starved = good.clone();
        starved["connections"] = serde_json::json!({"starved": 14});
        let (pass, reasons) = judge(&slo, 10_000, &starved);
        assert!(
            !pass && reasons[0].starts_with("14 connections starved"),
            "{reasons:?}"
        );
    }
}
