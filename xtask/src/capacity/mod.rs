//! `cargo xtask capacity`: the highest open-loop rate a server holds within an SLO.
//!
//! How: loadgen in open loop (`--rate R`, latency corrected for coordinated omission) against a
//! fresh server per step; a doubling ramp from `--start-rate` until a step fails, then bisection
//! between the last pass and the first failure until the bracket is within `--precision`. A step
//! passes when the SLO holds on corrected latency, errors stay within it (0 by default), the
//! achieved rate is within 1% of the target, and the loadgen says its measurement is valid (not
//! saturated, no schedule lag). The search itself is a pure function over a `measure` closure
//! ([`search::search`]) so it is tested with a fake server; everything ends within `--budget`.
//! The SLO is parsed and checked by loadgen (`loadgen::slo`, the syntax of its `--slo`);
//! [`slo::CapacitySlo`] keeps the upper bounds a search can use and the record `capacity.json`
//! holds.
//!
//! Try it: `cargo xtask capacity --strategy pool --slo 'p99<=1ms'`.

pub mod search;
pub mod slo;

use std::time::{Duration, Instant};

use anyhow::Result;

use self::search::{search, settle};
use self::slo::{CapacitySlo, step_from_record};
use crate::error::input_error;
use crate::flags::CapacityArgs;
use crate::interrupt;
use crate::present;
use crate::present::text::{CapacityAnswer, step_line};
use crate::record::RunFile;
use crate::record::capacity::{CAPACITY_SCHEMA, CapacityFile, SearchLimits, Step};
use crate::record::manifest::{Manifest, create_run_dir};
use crate::record::plan::{BenchPlan, ServerEntry};
use crate::record::trial::Cell;
use crate::shell::{self, Binaries};
pub use crate::trial::server::workers_for;
use crate::trial::server::{builtin_strategy, parse_server_spec, preflight, resolve_strategies};
use crate::trial::{Pinning, TrialRunner};

/// The most steps one search takes.
const MAX_STEPS: usize = 40;

/// `cargo xtask capacity`.
pub fn run(args: &CapacityArgs) -> Result<()> {
    let slo = CapacitySlo::parse(&args.slo)?;
    let server = server_from_args(args)?;
    let root = shell::project_root();
    let binaries = shell::binaries(&root, &args.run.build, None)?;
    let (plan, workers_added) = step_plan(args, &server, &binaries)?;
    let run_dir = create_run_dir(&root, "capacity", args.run.out.as_deref())?;
    let limits = search_limits(args);
    let pinning = Pinning::new(plan.pin);
    let config = serde_json::json!({"server": server, "slo": slo.record, "limits": limits,
        "connections": args.connections, "size_bytes": args.size,
        "duration_ms": plan.duration_ms, "warmup_ms": plan.warmup_ms, "pin": plan.pin,
        "server_args": plan.server_args, "workers_added": workers_added});
    let mut manifest = Manifest::collect("capacity", config, &root);
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
    preflight(&plan, &binaries, &run_dir, &pinning)?;

    let budget = Budget {
        started: Instant::now(),
        total: args.budget,
        step_cost: plan.warmup() + plan.duration() + Duration::from_millis(300),
    };
    let mut steps = Stepper {
        runner: TrialRunner {
            plan: &plan,
            binaries: &binaries,
            run_dir: &run_dir,
            pinning: &pinning,
        },
        slo: &slo,
        server: &server,
        cell: Cell {
            server: server.name.clone(),
            connections: args.connections,
            size_bytes: args.size,
        },
        order: 0,
        taken: Vec::new(),
    };
    let mut outcome = search(&limits, |rate| {
        steps.measure_with_retries(rate, args.retries, &budget)
    })?;
    let confirmed = steps.confirm(outcome.capacity_per_s)?;
    let loadgen_limit_per_s = settle(&mut outcome, &steps.taken);

    let file = CapacityFile {
        schema: CAPACITY_SCHEMA.into(),
        server: server.clone(),
        slo: slo.record.clone(),
        connections: args.connections,
        size_bytes: args.size,
        duration_ms: plan.duration_ms,
        warmup_ms: plan.warmup_ms,
        limits,
        capacity_per_s: outcome.capacity_per_s,
        first_fail_per_s: outcome.first_fail_per_s,
        stopped_because: outcome.stopped_because(),
        confirmed,
        loadgen_limit_per_s,
        server_args: plan.server_args.clone(),
        workers_added,
        steps: steps.taken,
    };
    file.write(&run_dir)?;
    present::capacity_run(&run_dir, &file)?;
    println!("{}", CapacityAnswer::of(&file));
    println!("run directory: {}", run_dir.display());
    Ok(())
}

/// The server to measure (`--strategy`, default `pool`, or `--server`), after checking the
/// flags that must be at least 1.
fn server_from_args(args: &CapacityArgs) -> Result<ServerEntry> {
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
    Ok(server)
}

/// The plan every step runs (each sets its own rate), and the `--workers N` added for a strategy
/// that serves at most N connections at once (see [`workers_for`]).
fn step_plan(
    args: &CapacityArgs,
    server: &ServerEntry,
    binaries: &Binaries,
) -> Result<(BenchPlan, Option<u32>)> {
    let mut plan = BenchPlan::one_cell(
        args.connections,
        args.size,
        args.duration,
        args.warmup,
        &args.run,
    );
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

/// `--budget`: a step starts only when it can end within it.
struct Budget {
    started: Instant,
    total: Duration,
    /// What one step takes: warm-up, window and the server's start and stop.
    step_cost: Duration,
}

impl Budget {
    fn allows_a_step(&self) -> bool {
        self.started.elapsed() + self.step_cost <= self.total
    }
}

/// The steps of one search: each is one trial at a set rate, judged against the SLO.
struct Stepper<'a> {
    runner: TrialRunner<'a>,
    slo: &'a CapacitySlo,
    server: &'a ServerEntry,
    /// The one cell every step measures.
    cell: Cell,
    /// The next trial's position in the run.
    order: usize,
    /// Every step measured, in order (retries and the confirmation included).
    taken: Vec<Step>,
}

impl Stepper<'_> {
    /// Measures `rate` once (trial number `trial` of that rate).
    fn measure(&mut self, rate: u64, trial: u32) -> Result<Step> {
        let plan = BenchPlan {
            rate_per_s: Some(rate),
            ..self.runner.plan.clone()
        };
        let runner = TrialRunner {
            plan: &plan,
            ..self.runner
        };
        let record = runner.run_trial(self.order, &self.cell, trial, self.server)?;
        self.order += 1;
        step_from_record(self.slo, rate, &record, runner.run_dir)
    }

    /// One step of the search. Interference on a shared machine only ever adds latency, so a
    /// failed step is measured again (`--retries`) and passes if any attempt passes. `None`
    /// when the budget leaves no time for even one attempt.
    fn measure_with_retries(
        &mut self,
        rate: u64,
        retries: u32,
        budget: &Budget,
    ) -> Result<Option<Step>> {
        let mut last = None;
        for attempt in 1..=1 + retries {
            interrupt::check()?;
            if !budget.allows_a_step() {
                break;
            }
            let mut step = self.measure(rate, attempt - 1)?;
            step.attempt = attempt;
            eprintln!("{}", step_line(&step));
            self.taken.push(step.clone());
            let passed = step.pass;
            last = Some(step);
            if passed {
                break;
            }
        }
        Ok(last)
    }

    /// Retries let a rate pass on its luckiest attempt, which biases the answer upward: the
    /// final passing rate is measured once more and must pass again. Whether it did (`None`:
    /// nothing passed, nothing to confirm).
    fn confirm(&mut self, capacity_per_s: Option<u64>) -> Result<Option<bool>> {
        let Some(rate) = capacity_per_s else {
            return Ok(None);
        };
        interrupt::check()?;
        let mut step = self.measure(rate, 0)?;
        step.confirm = true;
        eprintln!("{} (confirmation)", step_line(&step));
        let passed = step.pass;
        self.taken.push(step);
        Ok(Some(passed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
