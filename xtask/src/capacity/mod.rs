//! `cargo xtask capacity`: the highest open-loop rate a server holds within an SLO.
//!
//! How: one server (pinned to its cores) and one loadgen (pinned to the others) for the whole
//! search, over one set of connections: the loadgen is steered step by step through its
//! standard input (`--steps-from -`, see [`crate::trial::steered`]), and each step's result
//! comes back as it ends. The search ([`search::Search`], pure) ramps by doubling from
//! `--start-rate` until a rate fails, then bisects between the highest pass and the lowest
//! failure until the bracket is within `--precision-percent`. A step passes when the SLO holds on
//! corrected latency, errors stay within it (0 by default), and the achieved rate is within 1% of
//! the target; it counts only when the loadgen says its measurement is valid (not saturated, its
//! own lateness not material): a step the loadgen could not measure honestly is no vote
//! ([`slo::judge_step`]). A rate's verdict needs `--retries` + 1 agreeing measurements, so one
//! noisy step cannot move the bracket. The answer names what limited it: the server's knee, the
//! loadgen's limit (a lower bound), an SLO unreachable even at the lowest rate (and why), the
//! maximum rate, or the budget. Everything ends within `--budget`.
//!
//! `--target HOST:PORT` measures a server that is already running (on this host or another);
//! the server's CPU and memory are then not measured (`server_figures_unavailable`).
//!
//! The SLO is parsed and checked by loadgen (`loadgen::slo`, the syntax of its `--slo`);
//! [`slo::CapacitySlo`] keeps the upper bounds a search can use and the record `capacity.json`
//! holds, which is rewritten after every step.
//!
//! Try it: `cargo xtask capacity --strategy event-loop --slo 'p99<=1ms'`.

pub mod search;
pub mod slo;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;

use self::search::{Next, Search, SearchOutcome, StopReason};
use self::slo::{CapacitySlo, judge_step, steered_step};
use crate::error::input_error;
use crate::flags::CapacityArgs;
use crate::interrupt;
use crate::present;
use crate::present::text::{CapacityAnswer, step_line, unmeasured_line};
use crate::record::RunFile;
use crate::record::capacity::{CAPACITY_SCHEMA, CapacityFile, SearchLimits, Step, StepReason};
use crate::record::manifest::{Manifest, create_run_dir};
use crate::record::plan::{BenchPlan, ServerEntry};
use crate::record::trial::TrialFailure;
use crate::shell::{self, Binaries};
pub use crate::trial::server::workers_for;
use crate::trial::server::{
    builtin_strategy, parse_server_spec, resolve_strategies, server_launch,
};
use crate::trial::steered::{SteeredRun, SteeredSpec};
use crate::trial::{KeepAwake, Pinning};

/// The most steps one search takes.
const MAX_STEPS: usize = 60;

/// `cargo xtask capacity`.
pub fn run(args: &CapacityArgs) -> Result<()> {
    let started = Instant::now();
    let slo = CapacitySlo::parse(&args.slo)?;
    let (server, target) = server_from_args(args)?;
    let root = shell::project_root();
    let binaries = shell::binaries(&root, &args.run.build, None)?;
    let (plan, workers_added) = step_plan(args, &server, target.is_some(), &binaries)?;
    let run_dir = create_run_dir(&root, "capacity", args.run.out.as_deref())?;
    let limits = search_limits(args);
    let pinning = Pinning::new(plan.pin);
    let awake = KeepAwake::start(plan.keep_awake, &pinning)?;
    let config = serde_json::json!({"server": server, "target": target, "slo": slo.record,
        "limits": limits, "connections": args.connections, "size_bytes": args.size,
        "duration_ms": plan.duration_ms, "warmup_ms": plan.warmup_ms,
        "settle_ms": args.settle.as_millis() as u64, "retries": args.retries,
        "timing": args.timing.as_str(), "pin": plan.pin, "keep_awake": plan.keep_awake,
        "server_args": plan.server_args, "workers_added": workers_added});
    let mut manifest = Manifest::collect("capacity", config, &root);
    manifest.server_cpus = pinning.server.clone();
    manifest.loadgen_cpus = pinning.loadgen.clone();
    manifest.write(&run_dir)?;
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
    let launch = match target {
        Some(_) => None,
        None => Some(server_launch(&server, &binaries, None, &plan.server_args)?),
    };
    let mut steered = SteeredRun::start(&SteeredSpec {
        loadgen: &binaries.loadgen,
        server: launch,
        target: target.clone(),
        pinning: &pinning,
        run_dir: &run_dir,
        connections: args.connections,
        size_bytes: args.size,
        warmup: args.warmup,
        settle: args.settle,
        slo: &slo.record.text,
        timing: args.timing,
        ready_timeout: plan.ready_timeout(),
    })?;

    let mut record = CapacityFile {
        schema: CAPACITY_SCHEMA.into(),
        server: server.clone(),
        slo: slo.record.clone(),
        connections: args.connections,
        size_bytes: args.size,
        duration_ms: plan.duration_ms,
        warmup_ms: plan.warmup_ms,
        limits: limits.clone(),
        capacity_per_s: None,
        first_fail_per_s: None,
        stopped_because: "the search is running".into(),
        confirmed: None,
        loadgen_limit_per_s: None,
        server_args: plan.server_args.clone(),
        workers_added,
        steps: Vec::new(),
        limiting_factor: None,
        target: target.clone(),
        settle_ms: Some(args.settle.as_millis() as u64),
        retries: Some(args.retries),
        server_cpu_s: None,
        server_peak_rss_kib: None,
        server_figures_unavailable: target.as_ref().map(|_| {
            "the server runs outside xtask (--target), so its CPU and memory are not measured"
                .to_string()
        }),
        loadgen_timing: None,
        elapsed_s: None,
        dips: Vec::new(),
        unmeasured_per_s: Vec::new(),
    };
    let mut search = Search::new(&limits, args.retries);
    let mut attempts: HashMap<u64, u32> = HashMap::new();
    while let Next::Measure(rate) = search.next() {
        interrupt::check()?;
        let step_cost = steered.step_time(args.duration) + Duration::from_millis(200);
        if started.elapsed() + step_cost > args.budget {
            search.out_of_time();
            break;
        }
        let attempt = attempts.entry(rate).or_default();
        *attempt += 1;
        let cpus_before = loadgen::timing::read_cpu_times();
        let mut step = match steered.step(rate, args.duration) {
            Ok(report) => {
                let (verdict, reasons) = judge_step(&slo, &report);
                search.record(verdict);
                steered_step(&report, *attempt, verdict, reasons, "loadgen.json")
            }
            Err(error) if interrupt::caused(&error) => return Err(error),
            Err(error) => {
                search.loadgen_failed();
                let mut step = Step::failed(
                    rate,
                    StepReason::TrialFailed(TrialFailure::Other(format!("{error:#}"))),
                );
                step.attempt = *attempt;
                step
            }
        };
        // Only where the loadgen has CPUs of its own: unpinned, it shares them with the server.
        step.loadgen_steal_ms = pinning.loadgen.as_ref().and_then(|cpus| {
            loadgen::timing::steal_ms(cpus, &cpus_before, &loadgen::timing::read_cpu_times())
        });
        eprintln!("{}", step_line(&step));
        record.steps.push(step);
        // A crash or an interrupt loses at most the step that was running.
        record.write(&run_dir)?;
    }
    let end = steered.finish()?;
    drop(awake);
    let outcome = search.outcome();
    settle_record(&mut record, &outcome);
    record.server_cpu_s = end.server_cpu_s;
    record.server_peak_rss_kib = end.server_peak_rss_kib;
    record.loadgen_timing = loadgen_timing(&steered_report_path(&run_dir));
    record.elapsed_s = Some(started.elapsed().as_secs_f64());
    record.write(&run_dir)?;
    present::capacity_run(&run_dir, &record)?;
    println!("{}", CapacityAnswer::of(&record));
    if let Some(line) = unmeasured_line(&record) {
        println!("{line}");
    }
    match (&record.server_figures_unavailable, record.server_cpu_s) {
        (Some(why), _) => println!("server CPU and memory: unavailable ({why})"),
        (None, Some(cpu)) => println!(
            "server CPU {cpu:.2} s over the search, peak memory {}",
            record
                .server_peak_rss_kib
                .map_or("unknown".into(), |kib| format!(
                    "{:.1} MiB",
                    kib as f64 / 1024.0
                ))
        ),
        (None, None) => {}
    }
    if let Some(status) = end.loadgen_status
        && !matches!(status.code(), Some(0 | 3))
    {
        eprintln!("warning: loadgen exited with {status} (log: loadgen.log)");
    }
    println!("run directory: {}", run_dir.display());
    Ok(())
}

/// The answer of the search, into the record.
fn settle_record(record: &mut CapacityFile, outcome: &SearchOutcome) {
    record.capacity_per_s = outcome.capacity_per_s;
    record.first_fail_per_s = outcome.first_fail_per_s;
    record.loadgen_limit_per_s = outcome.loadgen_limit_per_s;
    record.confirmed = outcome
        .capacity_per_s
        .map(|_| outcome.passes_at_capacity >= 2);
    record.limiting_factor = Some(outcome.limiting_factor().as_str().to_string());
    record.dips = outcome.dips.clone();
    record.unmeasured_per_s = outcome.unmeasured.clone();
    record.stopped_because = outcome.stopped_because();
    // Unreachable at the lowest rate: say why it failed there.
    if let StopReason::FailsAtLowest(rate) = outcome.stopped
        && let Some(last) = record
            .steps
            .iter()
            .rev()
            .find(|s| s.target_per_s == rate && !s.pass)
    {
        let reasons: Vec<String> = last.reasons.iter().map(ToString::to_string).collect();
        record.stopped_because = format!("{} ({})", record.stopped_because, reasons.join("; "));
    }
}

/// The run's loadgen report.
fn steered_report_path(run_dir: &std::path::Path) -> std::path::PathBuf {
    run_dir.join("loadgen.json")
}

/// `timing` of the loadgen report, if it wrote one.
fn loadgen_timing(report: &std::path::Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(report).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("timing").cloned()
}

/// The built-in strategy measured when no `--strategy`, `--server` or `--target` is given: the
/// server's own default.
pub const DEFAULT_STRATEGY: &str = "reactor-pool";

/// The server to measure (`--strategy`, default [`DEFAULT_STRATEGY`], `--server`, or `--target`, which is
/// returned beside it), after checking the flags that must be at least 1.
fn server_from_args(args: &CapacityArgs) -> Result<(ServerEntry, Option<String>)> {
    let (server, target) = match (&args.strategy, &args.server, &args.target) {
        (Some(_), Some(_), _) => {
            return Err(input_error("give --strategy or --server, not both"));
        }
        (_, _, Some(target)) => {
            // A clear error now rather than a loadgen that cannot connect later.
            loadgen::run::resolve(target).map_err(|e| input_error(format!("--target: {e:#}")))?;
            (
                ServerEntry {
                    name: target.clone(),
                    command: None,
                    threads: None,
                },
                Some(target.clone()),
            )
        }
        (None, Some(command), None) => (parse_server_spec(&format!("server={command}"))?, None),
        (strategy, None, None) => (
            builtin_strategy(strategy.as_deref().unwrap_or(DEFAULT_STRATEGY))?,
            None,
        ),
    };
    if args.connections == 0 || args.size == 0 || args.start_rate == 0 {
        return Err(input_error(
            "--connections, --size and --start-rate must be at least 1",
        ));
    }
    Ok((server, target))
}

/// The plan of the run (connections, sizes, durations, pinning, server arguments), and the
/// `--workers N` added for a strategy that serves at most N connections at once (see
/// [`workers_for`]). With `--target` no server is started, so none is resolved.
fn step_plan(
    args: &CapacityArgs,
    server: &ServerEntry,
    external_target: bool,
    binaries: &Binaries,
) -> Result<(BenchPlan, Option<u32>)> {
    let mut plan = BenchPlan::one_cell(
        args.connections,
        args.size,
        args.duration,
        args.warmup,
        &args.run,
    );
    if external_target {
        return Ok((plan, None));
    }
    plan.servers = vec![server.clone()];
    resolve_strategies(&mut plan, binaries)?;
    let workers_added = workers_for(
        &server.name,
        server.is_builtin(),
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
    Ok((plan, workers_added))
}

/// The search's limits from the flags.
fn search_limits(args: &CapacityArgs) -> SearchLimits {
    // At least 100 latency samples per step, or the loadgen rightly calls the step invalid.
    let min_rate_per_s = (100.0 / args.duration.as_secs_f64().max(0.001)).ceil() as u64;
    SearchLimits {
        start_rate_per_s: args.start_rate,
        min_rate_per_s,
        max_rate_per_s: args.max_rate,
        precision: args.precision_percent / 100.0,
        max_steps: MAX_STEPS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity_args(argv: &[&str]) -> CapacityArgs {
        use clap::Parser;
        let argv = [&["cargo xtask", "capacity", "--slo", "p99<=1ms"], argv].concat();
        match crate::flags::Xtask::try_parse_from(argv)
            .expect("parses")
            .command
        {
            crate::flags::Command::Capacity(args) => *args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_default_strategy_is_the_servers_default() {
        let (server, target) = server_from_args(&capacity_args(&[])).unwrap();
        assert_eq!((server.name.as_str(), target), ("reactor-pool", None));
        assert!(server.is_builtin());
        assert!(crate::trial::server::KNOWN_STRATEGIES.contains(&DEFAULT_STRATEGY));
        let (server, _) = server_from_args(&capacity_args(&["--strategy", "event-loop"])).unwrap();
        assert_eq!(server.name, "event-loop");
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
}
