//! `cargo xtask capacity`: the highest open-loop rate a server holds within an SLO.
//!
//! How: loadgen in open loop (`--rate R`, latency corrected for coordinated omission) against a
//! fresh server per step; a doubling ramp from `--start-rate` until a step fails, then bisection
//! between the last pass and the first failure until the bracket is within `--precision`. A step
//! passes when the SLO holds on corrected latency, errors stay within it (0 by default), the
//! achieved rate is within 1% of the target, and the loadgen says its measurement is valid (not
//! saturated, no schedule lag). The search itself is a pure function over a `measure` closure
//! ([`search`]) so it is tested with a fake server; everything ends within `--budget`.
//! The SLO is parsed and checked by loadgen (`loadgen::slo`, the syntax of its `--slo`);
//! [`CapacitySlo`] keeps the upper bounds a search can use and the record `capacity.json` holds.
//!
//! Try it: `cargo xtask capacity --strategy pool --slo 'p99<=1ms'`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use loadgen::Report;
use loadgen::slo::{Clause, Metric, Op, check, parse_slo};
use serde::{Deserialize, Serialize};

use crate::bench::{
    BenchPlan, Pinning, ServerEntry, TrialRunner, builtin_strategy, parse_server_spec,
};
use crate::flags::CapacityArgs;
use crate::loadgen_report::read_report;
use crate::manifest::{Manifest, create_run_dir, write_json};
use crate::shell;
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
    /// True for the single re-measurement of the final passing rate (see [`settle`]).
    #[serde(default)]
    pub confirm: bool,
}

/// True when a failed step failed only because of the instrument (loadgen invalid or
/// saturated): it says nothing about the server except "at least this fast".
pub fn instrument_limited(step: &Step) -> bool {
    !step.pass
        && !step.reasons.is_empty()
        && step
            .reasons
            .iter()
            .all(|reason| reason.starts_with("loadgen "))
}

/// The answer after the search: a failed confirmation moves the capacity down to the highest
/// other passing rate below it (and makes it the first failure); a first failure that was the
/// loadgen's own becomes `loadgen_limit_per_s`.
pub fn settle(outcome: &mut SearchOutcome, steps: &[Step]) -> Option<u64> {
    if let Some(confirm) = steps.iter().find(|step| step.confirm)
        && !confirm.pass
    {
        let unconfirmed = confirm.target_per_s;
        outcome.capacity_per_s = steps
            .iter()
            .filter(|step| step.pass && !step.confirm && step.target_per_s < unconfirmed)
            .map(|step| step.target_per_s)
            .max();
        outcome.first_fail_per_s = Some(
            outcome
                .first_fail_per_s
                .map_or(unconfirmed, |fail| fail.min(unconfirmed)),
        );
        outcome.stopped_because = format!(
            "{}; {unconfirmed} msg/s failed its confirmation",
            outcome.stopped_because
        );
    }
    let fail = outcome.first_fail_per_s?;
    let at_fail: Vec<&Step> = steps
        .iter()
        .filter(|step| step.target_per_s == fail)
        .collect();
    (!at_fail.is_empty() && at_fail.iter().all(|step| instrument_limited(step))).then_some(fail)
}

fn first_attempt() -> u32 {
    1
}

/// One latency bound of the SLO, as `capacity.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyLimit {
    /// Key under `latency_us` in the loadgen report (`p99`, `p999`, `max` …).
    pub key: String,
    pub limit_us: f64,
}

/// The SLO as `capacity.json` records it (`text`, `latency`, `max_errors`; results/README.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloRecord {
    /// The text as given.
    pub text: String,
    pub latency: Vec<LatencyLimit>,
    pub max_errors: u64,
}

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

/// Judges one report against the SLO (`loadgen::slo::check`) and the 1%-of-target rule.
pub fn judge(slo: &CapacitySlo, target_per_s: u64, report: &Report) -> (bool, Vec<String>) {
    // One line per clause, then one for an invalid run (said below, with its reasons).
    let verdict = check(&slo.slo, report);
    let mut reasons: Vec<String> = verdict
        .lines
        .into_iter()
        .take(slo.slo.clauses.len())
        .filter(|line| line.contains("NOT MET"))
        .collect();
    let achieved = report.throughput.messages_per_s;
    let ratio = report
        .throughput
        .achieved_ratio
        .unwrap_or(achieved / target_per_s as f64);
    if ratio < MIN_ACHIEVED_RATIO {
        reasons.push(format!(
            "achieved {achieved:.0}/s is {:.1}% of the target",
            ratio * 100.0
        ));
    }
    if !report.valid {
        reasons.push(format!(
            "loadgen marked the run invalid: {}",
            report.invalid_reasons.join("; ")
        ));
    }
    let starved = report.connections.starved;
    if starved > 0 {
        reasons.push(format!(
            "{starved} connections starved (the server serves fewer connections at once than it \
             was given; for pool/rayon try --server-args '--workers N')"
        ));
    }
    if report.loadgen.saturated {
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
    pub slo: SloRecord,
    pub connections: u32,
    pub size_bytes: u32,
    pub duration_ms: u64,
    pub warmup_ms: u64,
    pub limits: SearchLimits,
    pub capacity_per_s: Option<u64>,
    pub first_fail_per_s: Option<u64>,
    pub stopped_because: String,
    /// Whether the re-measurement of the final passing rate passed (null: nothing to confirm).
    #[serde(default)]
    pub confirmed: Option<bool>,
    /// Set when the first failing rate failed only because the loadgen was invalid or
    /// saturated: the capacity is then a lower bound ("at least").
    #[serde(default)]
    pub loadgen_limit_per_s: Option<u64>,
    /// The server arguments xtask passed (`--server-args`, plus `--workers N` when it added
    /// that; see [`workers_for`]).
    #[serde(default)]
    pub server_args: Vec<String>,
    /// `--workers N` that xtask added for a strategy serving at most N connections at once.
    #[serde(default)]
    pub workers_added: Option<u32>,
    pub steps: Vec<Step>,
}

/// Strategies that serve at most `--workers` connections at once: with fewer workers than
/// connections the rest starve, and capacity would measure starvation, not the server.
pub const BOUNDED_STRATEGIES: [&str; 2] = ["pool", "rayon"];

/// `Some(connections)` when the built-in `strategy` serves at most W connections at once and
/// `server_args` sets no `--workers`: the worker count capacity should pass.
pub fn workers_for(
    strategy: &str,
    builtin: bool,
    server_args: &[String],
    connections: u32,
) -> Option<u32> {
    let has_workers = server_args
        .iter()
        .any(|arg| arg == "--workers" || arg.starts_with("--workers="));
    (builtin && BOUNDED_STRATEGIES.contains(&strategy) && !has_workers).then_some(connections)
}

/// Schema id of `capacity.json`.
pub const CAPACITY_SCHEMA: &str = "echolab.xtask.capacity/1";

/// The one-line answer.
pub fn answer_line(outcome: &SearchOutcome, loadgen_limit_per_s: Option<u64>) -> String {
    if let (Some(pass), Some(limit)) = (outcome.capacity_per_s, loadgen_limit_per_s) {
        return format!(
            "capacity: at least {} msg/s (loadgen limit reached at {})",
            crate::summary::format_count(pass as f64),
            crate::summary::format_count(limit as f64)
        );
    }
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
    let slo = CapacitySlo::parse(&args.slo)?;
    let server = match (&args.strategy, &args.server) {
        (Some(_), Some(_)) => return Err(input_error("give --strategy or --server, not both")),
        (None, Some(command)) => parse_server_spec(&format!("server={command}"))?,
        (strategy, None) => builtin_strategy(strategy.as_deref().unwrap_or("pool"))?,
    };
    if args.connections == 0 || args.size == 0 || args.start_rate == 0 {
        return Err(input_error(
            "--connections, --size and --start-rate must be at least 1",
        ));
    }
    let root = shell::project_root();
    let binaries = shell::binaries(&root, &args.run.build, None)?;
    let mut plan = BenchPlan::one_cell(
        args.connections,
        args.size,
        args.duration,
        args.warmup,
        &args.run,
    );
    plan.servers = vec![server.clone()];
    crate::bench::resolve_strategies(&mut plan, &binaries)?;
    let workers_added = workers_for(
        &server.name,
        server.command.is_none(),
        &plan.server_args,
        args.connections,
    );
    if let Some(workers) = workers_added {
        plan.server_args
            .extend(["--workers".to_string(), workers.to_string()]);
        eprintln!(
            "capacity: passing --workers {workers} to {} so it can serve all {} connections \
             at once (give --server-args '--workers N' to choose)",
            server.name, args.connections
        );
    }
    let run_dir = create_run_dir(&root, "capacity", args.run.out.as_deref())?;
    // At least 100 latency samples per step, or the loadgen rightly calls the step invalid.
    let min_rate_per_s = (100.0 / args.duration.as_secs_f64().max(0.001)).ceil() as u64;
    let limits = SearchLimits {
        start_rate_per_s: args.start_rate,
        min_rate_per_s,
        max_rate_per_s: args.max_rate,
        precision: args.precision_percent / 100.0,
        max_steps: 40,
    };
    let mut manifest = Manifest::collect(
        "capacity",
        serde_json::json!({"server": server, "slo": slo.record, "limits": limits,
            "connections": args.connections, "size_bytes": args.size,
            "duration_ms": plan.duration_ms, "warmup_ms": plan.warmup_ms, "pin": plan.pin,
            "server_args": plan.server_args, "workers_added": workers_added}),
        &root,
    );
    let pinning = Pinning::new(plan.pin);
    manifest.server_cpus = pinning.server.clone();
    manifest.loadgen_cpus = pinning.loadgen.clone();
    manifest.write(&run_dir)?;
    std::fs::create_dir_all(run_dir.join("trials"))?;
    eprintln!(
        "capacity of {} at SLO {:?} ({} connections, {} B): ramp from {}/s, budget {}; run directory {}",
        server.name,
        slo.record.text,
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
    let mut outcome = outcome;
    // Retries let a rate pass on its luckiest attempt, which biases the answer upward: the
    // final passing rate is measured once more and must pass again.
    let mut confirmed = None;
    if let Some(rate) = outcome.capacity_per_s {
        interrupt::check()?;
        let mut step_plan = plan.clone();
        step_plan.rate_per_s = Some(rate);
        let runner = TrialRunner {
            plan: &step_plan,
            binaries: &binaries,
            run_dir: &run_dir,
            pinning: &pinning,
        };
        let record = runner.run_trial(order, &cell, 0, &server)?;
        let mut step = step_from_record(&slo, rate, &record, &run_dir)?;
        step.confirm = true;
        eprintln!("{} (confirmation)", step_line(&step));
        confirmed = Some(step.pass);
        every_step.push(step);
    }
    let loadgen_limit_per_s = settle(&mut outcome, &every_step);
    let file = CapacityFile {
        schema: CAPACITY_SCHEMA.into(),
        server,
        slo: slo.record,
        connections: args.connections,
        size_bytes: args.size,
        duration_ms: plan.duration_ms,
        warmup_ms: plan.warmup_ms,
        limits,
        capacity_per_s: outcome.capacity_per_s,
        first_fail_per_s: outcome.first_fail_per_s,
        stopped_because: outcome.stopped_because.clone(),
        confirmed,
        loadgen_limit_per_s,
        server_args: plan.server_args.clone(),
        workers_added,
        steps: every_step,
    };
    write_json(&run_dir.join("capacity.json"), &file)?;
    crate::report::draw_capacity(&run_dir, &file)?;
    println!("{}", answer_line(&outcome, loadgen_limit_per_s));
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

/// Turns one trial record into a judged step.
pub fn step_from_record(
    slo: &CapacitySlo,
    rate: u64,
    record: &crate::summary::TrialRecord,
    run_dir: &Path,
) -> Result<Step> {
    let failed = |reason: String| Step {
        target_per_s: rate,
        attempt: 1,
        achieved_per_s: 0.0,
        latency_us: serde_json::Value::Null,
        service_time_us: None,
        errors: 0,
        valid: None,
        pass: false,
        reasons: vec![reason],
        report: None,
        confirm: false,
    };
    let report_path = run_dir.join(&record.loadgen_json);
    if let Some(failure) = &record.failure {
        return Ok(failed(failure.clone()));
    }
    if !report_path.exists() {
        return Ok(failed("no report".into()));
    }
    let json = read_report(&report_path).context("reading step report")?;
    let report: Report = match serde_json::from_value(json.clone()) {
        Ok(report) => report,
        Err(error) => {
            return Ok(failed(format!(
                "{} is not a loadgen report of this version: {error}",
                record.loadgen_json
            )));
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
            confirm: false,
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
        assert!(answer_line(&outcome, None).starts_with("capacity: below 250 msg/s"));
    }

    #[test]
    fn stops_at_max_rate_and_on_budget() {
        let mut small = limits();
        small.max_rate_per_s = 5_000;
        let outcome = search(&small, |rate| Ok(Some(fake_step(rate, u64::MAX)))).expect("runs");
        assert_eq!(outcome.capacity_per_s, Some(5_000));
        assert_eq!(outcome.first_fail_per_s, None);
        assert!(answer_line(&outcome, None).starts_with("capacity: at least 5,000 msg/s"));

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
        assert!(
            !pass && reasons[0].contains("98.0% of the target"),
            "{reasons:?}"
        );
        let mut invalid = report();
        invalid.valid = false;
        invalid.invalid_reasons = vec!["schedule lag".into()];
        let (pass, reasons) = judge(&slo, 10_000, &invalid);
        assert_eq!(reasons.len(), 1, "said once: {reasons:?}");
        assert!(!pass && reasons[0].contains("schedule lag"), "{reasons:?}");
        let mut ratio = report();
        ratio.throughput.achieved_ratio = Some(0.5);
        assert!(!judge(&slo, 10_000, &ratio).0);
        let mut starved = report();
        starved.connections.starved = 14;
        let (pass, reasons) = judge(&slo, 10_000, &starved);
        assert!(
            !pass && reasons[0].starts_with("14 connections starved"),
            "{reasons:?}"
        );
        let mut saturated = report();
        saturated.loadgen.saturated = true;
        assert_eq!(judge(&slo, 10_000, &saturated).1, ["loadgen saturated"]);
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
        assert!(
            reasons[0].contains("p99<=1ms") && reasons[0].contains("1500"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].contains("errors<=1") && reasons[1].contains('3'),
            "{reasons:?}"
        );
        // errors=1 is an upper bound here (not loadgen's "exactly"): no errors also passes.
        let slo = CapacitySlo::parse("p99<=1ms,errors=1").expect("valid");
        assert!(judge(&slo, 10_000, &report()).0);
        // Without an errors clause a single error fails the step.
        let slo = CapacitySlo::parse("p99<=1ms").expect("valid");
        let mut one_error = report();
        one_error.errors.total = 1;
        let (pass, reasons) = judge(&slo, 10_000, &one_error);
        assert!(!pass && reasons[0].contains("errors<=0"), "{reasons:?}");
    }

    #[test]
    fn bounded_strategies_get_a_worker_per_connection() {
        let none: Vec<String> = vec![];
        assert_eq!(workers_for("pool", true, &none, 16), Some(16));
        assert_eq!(workers_for("rayon", true, &none, 4), Some(4));
        assert_eq!(workers_for("thread", true, &none, 16), None);
        assert_eq!(workers_for("pool", false, &none, 16), None);
        let given = vec!["--workers".to_string(), "2".to_string()];
        assert_eq!(workers_for("pool", true, &given, 16), None);
        assert_eq!(
            workers_for("pool", true, &["--workers=3".to_string()], 16),
            None
        );
    }

    #[test]
    fn a_failed_confirmation_lowers_the_capacity() {
        let mut steps: Vec<Step> = [500, 1000, 2000, 1500]
            .into_iter()
            .map(|rate| fake_step(rate, 1500))
            .collect();
        let mut outcome = SearchOutcome {
            capacity_per_s: Some(1500),
            first_fail_per_s: Some(2000),
            steps: vec![],
            stopped_because: "bracket within 25%".into(),
        };
        let mut confirm = fake_step(1500, 1000);
        confirm.confirm = true;
        confirm.reasons = vec!["p99 NOT MET".into()];
        steps.push(confirm);
        assert_eq!(settle(&mut outcome, &steps), None);
        assert_eq!(outcome.capacity_per_s, Some(1000));
        assert_eq!(outcome.first_fail_per_s, Some(1500));
        assert!(outcome.stopped_because.contains("failed its confirmation"));
        // A passing confirmation changes nothing.
        let mut outcome = SearchOutcome {
            capacity_per_s: Some(1500),
            first_fail_per_s: Some(2000),
            steps: vec![],
            stopped_because: "bracket within 25%".into(),
        };
        let last = steps.len() - 1;
        steps[last] = fake_step(1500, 1500);
        steps[last].confirm = true;
        assert_eq!(settle(&mut outcome, &steps), None);
        assert_eq!(outcome.capacity_per_s, Some(1500));
    }

    #[test]
    fn a_loadgen_limit_makes_the_answer_a_lower_bound() {
        let mut fail = fake_step(4000, 2000);
        fail.reasons = vec!["loadgen saturated".into()];
        let steps = vec![fake_step(2000, 2000), fail];
        let mut outcome = SearchOutcome {
            capacity_per_s: Some(2000),
            first_fail_per_s: Some(4000),
            steps: vec![],
            stopped_because: "bracket within 25%".into(),
        };
        let limit = settle(&mut outcome, &steps);
        assert_eq!(limit, Some(4000));
        assert_eq!(
            answer_line(&outcome, limit),
            "capacity: at least 2,000 msg/s (loadgen limit reached at 4,000)"
        );
        // A failure of the server's own (latency) is a real bracket.
        let mut fail = fake_step(4000, 2000);
        fail.reasons = vec!["p99 NOT MET".into(), "loadgen saturated".into()];
        assert_eq!(settle(&mut outcome, &[fake_step(2000, 2000), fail]), None);
    }
}
