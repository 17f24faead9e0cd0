//! `cargo xtask regress`: a performance-regression gate with known error rates on a noisy
//! machine.
//!
//! How: the baseline is a git ref built in a temporary worktree (with its own cached target
//! dir, `target/xtask-regress`), the candidate is the working tree; both run the same strategy
//! and are measured by the *same* loadgen (the candidate's). A pair measures both sides — by
//! default at the same time ([`Pairing::Simultaneous`]: both servers on the server CPUs, each
//! with its own loadgen, in one window, so whatever the machine does meanwhile hits both), or
//! one after the other in ABBA order. Each usable pair gives a ratio (below 1 = slower) of the
//! compared metric: by default the server's CPU time per message, which a neighbour that takes
//! the CPU away does not change. The pairs are judged by the sequential design of
//! [`gate::Design`] after 10, 20, 30, … of them: `slower` (exit 1), `faster`, `no change`, or,
//! when the pairs or the `--budget` run out undecided, `inconclusive` (exit 3). Every verdict
//! states the smallest rise the run could have detected. `--baseline-server/--candidate-server`
//! compare any two server commands the same way.
//!
//! `regress.json` is rewritten after every pair, so a crash loses at most one pair.
//!
//! Try it: `cargo xtask regress --baseline HEAD` (the tree against itself: no change).

pub mod baseline;
pub mod calibrate;
pub mod gate;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use self::baseline::{build_baseline, resolve_ref};
use self::gate::{
    Design, FALSE_ALARM, FIRST_LOOK, Judgement, LOOK_EVERY, Measured, POWER, PairOutcome,
    baseline_first, judge_pair, metric_value, parse_threshold,
};
use crate::error::{Inconclusive, input_error};
use crate::flags::{Pairing, RegressArgs};
use crate::interrupt;
use crate::present;
use crate::present::text::{metric_name, regress_trial_line, verdict_line};
use crate::record::RunFile;
use crate::record::manifest::{Manifest, create_run_dir};
use crate::record::plan::{BenchPlan, ServerEntry};
use crate::record::regress::{
    Change, Contender, DesignRecord, Look, REGRESS_SCHEMA, RegressFile, RegressTrial, Side, Verdict,
};
use crate::record::trial::{Cell, TrialRecord};
use crate::shell::{self, Binaries, command_output};
use crate::stats::{Interval, RatioEstimate};
use crate::trial::server::{builtin_strategy, parse_server_spec, preflight, workers_for};
use crate::trial::{KeepAwake, Pinning, TrialRunner, TrialSpec, run_together};

/// `cargo xtask regress`.
pub fn run(args: &RegressArgs) -> Result<()> {
    let root = shell::project_root();
    let inputs = Inputs::from_args(args, &root)?;
    let sides = Sides::prepare(&root, args, &inputs)?;
    let run_dir = create_run_dir(&root, "regress", args.run.out.as_deref())?;
    let plan = regress_plan(args, &inputs);
    let design = Design {
        threshold: inputs.threshold,
        max_pairs: args.trials as usize,
    };
    Manifest::collect(
        "regress",
        serde_json::json!({"baseline": sides.baseline, "candidate": sides.candidate,
            "metric": args.metric, "pairing": args.pairing, "threshold": inputs.threshold,
            "budget_s": args.budget.as_secs_f64(), "plan": plan}),
        &root,
    )
    .write(&run_dir)?;
    std::fs::create_dir_all(run_dir.join("trials"))?;
    let pinning = Pinning::new(plan.pin);
    let awake = KeepAwake::start(plan.keep_awake, &pinning)?;
    sides.preflight(&plan, &run_dir, &pinning)?;
    announce(args, &inputs, &design, &run_dir);
    let pairs = PairRunner {
        plan: &plan,
        run_dir: &run_dir,
        pinning: &pinning,
        sides: &sides,
        args,
    };
    let mut file = sides.empty_file(args, &design, &plan);
    let stopped_because = run_pairs(&pairs, &design, args.budget, &mut file, &run_dir)?;
    drop(awake);
    conclude(file, &design, stopped_because, &run_dir, args)
}

/// The validated flags: nothing has been built or started yet, and bad input is an
/// [`crate::error::InputError`] (exit 2).
struct Inputs {
    threshold: f64,
    /// `--baseline-server` and `--candidate-server`, when given.
    external: Option<(ServerEntry, ServerEntry)>,
    /// The strategy both built sides run.
    strategy: ServerEntry,
    /// `--baseline REF` resolved (none with external servers).
    baseline_commit: Option<String>,
}

impl Inputs {
    fn from_args(args: &RegressArgs, root: &Path) -> Result<Self> {
        let threshold = parse_threshold(&args.threshold)?;
        if threshold == 0.0 {
            return Err(input_error("--threshold must be more than 0%"));
        }
        if (args.trials as usize) < FIRST_LOOK {
            return Err(input_error(format!(
                "--trials must be at least {FIRST_LOOK} pairs: the first look needs them for an \
                 interval that holds without assuming a distribution"
            )));
        }
        if args.connections == 0 || args.depth == 0 || args.size == 0 {
            return Err(input_error(
                "--connections, --depth and --size must be at least 1",
            ));
        }
        if args.duration.is_zero() || args.budget.is_zero() {
            return Err(input_error("--duration and --budget must be more than 0"));
        }
        let external = match (&args.baseline_server, &args.candidate_server) {
            (Some(baseline), Some(candidate)) => Some((
                parse_server_spec(&format!("baseline={baseline}"))?,
                parse_server_spec(&format!("candidate={candidate}"))?,
            )),
            (None, None) => None,
            _ => {
                return Err(input_error(
                    "--baseline-server and --candidate-server go together",
                ));
            }
        };
        if external.is_none() && args.baseline.is_none() {
            return Err(input_error(
                "give --baseline REF, or --baseline-server and --candidate-server",
            ));
        }
        let strategy = builtin_strategy(&args.strategy)?;
        let baseline_commit = match (&external, &args.baseline) {
            (None, Some(git_ref)) => Some(resolve_ref(root, git_ref)?),
            _ => None,
        };
        Ok(Self {
            threshold,
            external,
            strategy,
            baseline_commit,
        })
    }
}

/// The plan every trial runs: one cell, the flags' depth, and a worker per connection for a
/// bounded built-in strategy (pool, rayon), so that no connection waits for a worker.
fn regress_plan(args: &RegressArgs, inputs: &Inputs) -> BenchPlan {
    let mut plan = BenchPlan {
        trials: args.trials,
        depth: Some(args.depth),
        ..BenchPlan::one_cell(
            args.connections,
            args.size,
            args.duration,
            args.warmup,
            &args.run,
        )
    };
    if inputs.external.is_none()
        && let Some(workers) = workers_for(
            &inputs.strategy.name,
            true,
            &plan.server_args,
            args.connections,
        )
    {
        plan.server_args
            .extend(["--workers".to_string(), workers.to_string()]);
    }
    plan
}

/// Says on stderr what will run, how it is judged, and where it goes.
fn announce(args: &RegressArgs, inputs: &Inputs, design: &Design, run_dir: &Path) {
    eprintln!(
        "regress: up to {} pairs ({}) of {} + {} warm-up, {} connections × depth {}, metric {}, \
         threshold {:.1}%, budget {}; looks after {FIRST_LOOK}, {}, … usable pairs, each \
         interval {:.2}%; run directory {}",
        design.max_pairs,
        match args.pairing {
            Pairing::Simultaneous => "both sides at once",
            Pairing::Sequential => "one side after the other, ABBA",
        },
        humantime::format_duration(args.duration),
        humantime::format_duration(args.warmup),
        args.connections,
        args.depth,
        metric_name(args.metric),
        inputs.threshold * 100.0,
        humantime::format_duration(args.budget),
        FIRST_LOOK + LOOK_EVERY,
        (1.0 - 2.0 * design.alpha_per_look()) * 100.0,
        run_dir.display()
    );
}

/// The two sides and the binaries each runs with: its own server, and the same loadgen (the
/// candidate's) measuring both.
struct Sides {
    baseline: Contender,
    candidate: Contender,
    baseline_binaries: Binaries,
    candidate_binaries: Binaries,
}

impl Sides {
    /// Builds the working tree (and, for `--baseline REF`, the baseline in a worktree).
    fn prepare(root: &Path, args: &RegressArgs, inputs: &Inputs) -> Result<Self> {
        let candidate_binaries = shell::binaries(root, &args.run.build, None)?;
        let (baseline_servers, baseline, candidate) = match &inputs.external {
            Some((baseline, candidate)) => (
                candidate_binaries.echo_server.clone(),
                Contender {
                    label: Side::Baseline,
                    git_ref: None,
                    commit: None,
                    server: baseline.clone(),
                },
                Contender {
                    label: Side::Candidate,
                    git_ref: None,
                    commit: None,
                    server: candidate.clone(),
                },
            ),
            None => {
                let commit = inputs.baseline_commit.clone().context("baseline commit")?;
                let built = build_baseline(root, &commit, args.run.build.build_profile)?;
                (
                    built.echo_server,
                    Contender {
                        label: Side::Baseline,
                        git_ref: args.baseline.clone(),
                        commit: Some(commit),
                        server: inputs.strategy.clone(),
                    },
                    Contender {
                        label: Side::Candidate,
                        git_ref: Some("working tree".into()),
                        commit: command_output("git", &["rev-parse", "HEAD"], root),
                        server: inputs.strategy.clone(),
                    },
                )
            }
        };
        Ok(Self {
            baseline,
            candidate,
            baseline_binaries: Binaries {
                echo_server: baseline_servers,
                loadgen: candidate_binaries.loadgen.clone(),
            },
            candidate_binaries,
        })
    }

    /// What runs on `side`, and with which binaries.
    fn get(&self, side: Side) -> (&Contender, &Binaries) {
        match side {
            Side::Baseline => (&self.baseline, &self.baseline_binaries),
            Side::Candidate => (&self.candidate, &self.candidate_binaries),
        }
    }

    /// Checks that both sides' servers start before any trial runs.
    fn preflight(&self, plan: &BenchPlan, run_dir: &Path, pinning: &Pinning) -> Result<()> {
        for side in [Side::Baseline, Side::Candidate] {
            let (contender, binaries) = self.get(side);
            let side_plan = BenchPlan {
                servers: vec![contender.server.clone()],
                ..plan.clone()
            };
            preflight(&side_plan, binaries, run_dir, pinning)
                .with_context(|| format!("{side} server"))?;
        }
        Ok(())
    }

    /// `regress.json` before the first pair: the settings and no trials.
    fn empty_file(&self, args: &RegressArgs, design: &Design, plan: &BenchPlan) -> RegressFile {
        RegressFile {
            schema: REGRESS_SCHEMA.into(),
            baseline: self.baseline.clone(),
            candidate: self.candidate.clone(),
            metric: args.metric,
            threshold: design.threshold,
            connections: args.connections,
            depth: Some(args.depth),
            size_bytes: args.size,
            duration_ms: plan.duration_ms,
            pairing: Some(args.pairing),
            design: Some(DesignRecord {
                false_alarm: FALSE_ALARM,
                power: POWER,
                floor: design.floor(),
                first_look: FIRST_LOOK,
                look_every: LOOK_EVERY,
                looks_planned: design.looks(),
                alpha_per_look: design.alpha_per_look(),
                max_pairs: design.max_pairs,
                budget_s: args.budget.as_secs_f64(),
            }),
            trials: Vec::new(),
            ratios: Vec::new(),
            excluded_pairs: Vec::new(),
            candidate_failures: Vec::new(),
            estimate: None,
            verdict: None,
            looks: Vec::new(),
            change: None,
            minimum_detectable_effect: None,
            stopped_because: None,
        }
    }
}

/// Which side runs first in pair `pair` (ABBA; for simultaneous pairs, which starts first).
fn sides_in_order(pair: usize) -> [Side; 2] {
    if baseline_first(pair) {
        [Side::Baseline, Side::Candidate]
    } else {
        [Side::Candidate, Side::Baseline]
    }
}

/// Runs pairs until a look decides, the pairs run out, the budget would be overrun by another
/// pair, or the candidate fails; returns why it stopped. `regress.json` is rewritten after
/// every pair.
fn run_pairs(
    pairs: &PairRunner,
    design: &Design,
    budget: Duration,
    file: &mut RegressFile,
    run_dir: &Path,
) -> Result<String> {
    let started = Instant::now();
    let mut longest_pair = Duration::ZERO;
    for pair in 0..design.max_pairs {
        if pair > 0 && started.elapsed() + longest_pair > budget {
            return Ok(format!(
                "the budget of {} left no time for another pair after {pair}",
                humantime::format_duration(budget)
            ));
        }
        let pair_started = Instant::now();
        let outcome = pairs.run_pair(pair, &mut file.trials)?;
        longest_pair = longest_pair.max(pair_started.elapsed());
        record_outcome(file, &outcome);
        if !file.candidate_failures.is_empty() {
            file.write(run_dir)?;
            return Ok("the candidate failed".into());
        }
        let usable = file.ratios.len();
        if outcome.ratio.is_some() && design.is_look(usable) {
            let judgement = look(design, file);
            file.write(run_dir)?;
            if let Some(verdict) = judgement.decision {
                return Ok(format!("{verdict} at the look after {usable} usable pairs"));
            }
        } else {
            file.write(run_dir)?;
        }
    }
    Ok(format!("all {} pairs ran", design.max_pairs))
}

/// Takes a look at the usable pairs: judges them and records the look in the file.
fn look(design: &Design, file: &mut RegressFile) -> Judgement {
    let slowdowns: Vec<f64> = file.ratios.iter().map(|ratio| -ratio.ln()).collect();
    let judgement = design.judge(&slowdowns);
    let look = Look {
        pairs: slowdowns.len(),
        change: Change {
            estimate: judgement.shift.estimate.exp_m1(),
            low: judgement.shift.ci.low.exp_m1(),
            high: judgement.shift.ci.high.exp_m1(),
            confidence: 1.0 - 2.0 * design.alpha_per_look(),
        },
        minimum_detectable: judgement.minimum_detectable,
        verdict: judgement.decision,
    };
    let [pairs, change, interval, detectable, says] = look.cells();
    eprintln!(
        "  look at {pairs} pairs: change {change} ({interval}), detectable {detectable}: {says}"
    );
    file.looks.push(look);
    judgement
}

/// Runs the pairs of one regress run.
struct PairRunner<'a> {
    plan: &'a BenchPlan,
    run_dir: &'a Path,
    pinning: &'a Pinning,
    sides: &'a Sides,
    args: &'a RegressArgs,
}

impl PairRunner<'_> {
    /// Runs pair `pair` (both sides, at once or ABBA), appends its two trials to `trials` and
    /// judges it.
    fn run_pair(&self, pair: usize, trials: &mut Vec<RegressTrial>) -> Result<PairOutcome> {
        interrupt::check()?;
        let order = sides_in_order(pair);
        let records: Vec<(Side, TrialRecord)> = match self.args.pairing {
            Pairing::Simultaneous => {
                let runners = order.map(|side| self.runner(side));
                let cells = order.map(|side| self.cell(side));
                let specs: Vec<TrialSpec> = (0..2)
                    .map(|index| TrialSpec {
                        runner: &runners[index],
                        order: 2 * pair + index,
                        cell: &cells[index],
                        trial: pair as u32,
                        server: &self.sides.get(order[index]).0.server,
                    })
                    .collect();
                order.into_iter().zip(run_together(&specs)?).collect()
            }
            Pairing::Sequential => {
                let mut records = Vec::with_capacity(2);
                for (index, side) in order.into_iter().enumerate() {
                    interrupt::check()?;
                    let record = self.runner(side).run_trial(
                        2 * pair + index,
                        &self.cell(side),
                        pair as u32,
                        &self.sides.get(side).0.server,
                    )?;
                    records.push((side, record));
                }
                records
            }
        };
        let metric = self.args.metric;
        let mut measured: [Option<(&TrialRecord, Measured)>; 2] = [None, None];
        for (side, record) in &records {
            let figures = record.figures.as_ref().with_context(|| {
                format!(
                    "{side} trial {pair} failed: {}",
                    record
                        .failure
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )
            })?;
            let side_measured = Measured {
                figures,
                cpu_per_message_us: record.server_cpu_per_message_us,
            };
            let trial = RegressTrial {
                pair,
                side: *side,
                value: metric_value(metric, &side_measured).unwrap_or(f64::NAN),
                errors: figures.errors_total,
                valid: figures.valid,
                report: record.loadgen_json.clone(),
                cpu_per_message_us: record.server_cpu_per_message_us,
                cpu_share: record.server_cpu_share,
                runnable_share: record.server_runnable_share,
            };
            eprintln!("{}", regress_trial_line(metric, &trial));
            if figures.valid == Some(false) {
                eprintln!(
                    "  note: {side} pair {pair}: loadgen says: {}",
                    figures.invalid_reasons.join("; ")
                );
            }
            trials.push(trial);
            measured[usize::from(*side == Side::Candidate)] = Some((record, side_measured));
        }
        let [Some((_, baseline)), Some((_, candidate))] = &measured else {
            bail!("pair {pair} lacks a side");
        };
        Ok(judge_pair(metric, pair, baseline, candidate))
    }

    /// The trial runner of `side`: the shared plan with that side's binaries.
    fn runner(&self, side: Side) -> TrialRunner<'_> {
        TrialRunner {
            plan: self.plan,
            binaries: self.sides.get(side).1,
            run_dir: self.run_dir,
            pinning: self.pinning,
        }
    }

    /// The cell a trial of `side` is filed under.
    fn cell(&self, side: Side) -> Cell {
        Cell {
            server: side.as_str().into(),
            connections: self.args.connections,
            size_bytes: self.args.size,
            workload: None,
        }
    }
}

/// Adds what a pair contributes to the file (and says why it is excluded or fails the gate).
fn record_outcome(file: &mut RegressFile, outcome: &PairOutcome) {
    if let Some(ratio) = outcome.ratio {
        file.ratios.push(ratio);
    }
    if let Some(why) = outcome.excluded_line() {
        eprintln!("  excluded {why}");
        file.excluded_pairs.push(why);
    }
    if let Some(failure) = outcome.candidate_failure_line() {
        eprintln!("  gate: {failure}");
        file.candidate_failures.push(failure);
    }
}

/// The verdict: the last look's (one more look if the pairs ran out between looks), or
/// `inconclusive`; written into `regress.json`, `index.html` and `--bmf`, printed, and turned
/// into the exit code (1 for a failing candidate or `slower`, 3 for `inconclusive`).
fn conclude(
    mut file: RegressFile,
    design: &Design,
    mut stopped_because: String,
    run_dir: &Path,
    args: &RegressArgs,
) -> Result<()> {
    let usable = file.ratios.len();
    let looked_last = file.looks.last().is_some_and(|look| look.pairs == usable);
    if !looked_last && usable >= FIRST_LOOK && file.candidate_failures.is_empty() {
        look(design, &mut file);
    }
    let verdict = match file.looks.last().filter(|look| look.pairs == usable) {
        Some(last) => {
            let change = last.change;
            file.estimate = Some(RatioEstimate {
                ratio: 1.0 / (1.0 + change.estimate),
                ci: Interval {
                    low: 1.0 / (1.0 + change.high),
                    high: 1.0 / (1.0 + change.low),
                },
                pairs: usable,
            });
            file.change = Some(change);
            file.minimum_detectable_effect = Some(last.minimum_detectable);
            last.verdict.unwrap_or(Verdict::Inconclusive)
        }
        None => {
            if file.candidate_failures.is_empty() {
                stopped_because = format!(
                    "{stopped_because}; only {usable} of {} pairs were usable, {FIRST_LOOK} are \
                     needed ({}). For pool or rayon with more connections than workers, raise \
                     --server-args '--workers N'",
                    file.pairs_run(),
                    file.excluded_pairs.join(" | ")
                );
            }
            Verdict::Inconclusive
        }
    };
    file.verdict = Some(verdict);
    file.stopped_because = Some(stopped_because.clone());
    file.write(run_dir)?;
    present::regress_run(run_dir, &file)?;
    if let Some(path) = &args.bmf {
        present::bmf::write_regress(path, &file, run_dir)?;
    }
    println!("{}", verdict_line(&file));
    println!("run directory: {}", run_dir.display());
    if !file.candidate_failures.is_empty() {
        bail!(
            "the candidate fails the gate: an echo server must not err or go silent ({})",
            file.candidate_failures.join(" | ")
        );
    }
    match verdict {
        Verdict::Slower => bail!(
            "the candidate is slower than the baseline: significantly, and by at least half the \
             {:.1}% threshold",
            file.threshold * 100.0
        ),
        Verdict::Inconclusive => Err(anyhow::Error::new(Inconclusive(format!(
            "inconclusive: {stopped_because}; more pairs (--trials, --budget) or a quieter \
             machine would decide"
        )))),
        Verdict::Faster | Verdict::NoChange => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_alternate_which_side_runs_first() {
        let order: Vec<[Side; 2]> = (0..3).map(sides_in_order).collect();
        assert_eq!(
            order,
            [
                [Side::Baseline, Side::Candidate],
                [Side::Candidate, Side::Baseline],
                [Side::Baseline, Side::Candidate],
            ]
        );
    }
}
