//! `cargo xtask regress`: a performance-regression gate that holds on a noisy machine.
//!
//! How: the baseline is a git ref built in a temporary worktree (with its own cached target
//! dir, `target/xtask-regress`), the candidate is the working tree; both run the same strategy
//! and are measured by the *same* loadgen (the candidate's), in paired trials in ABBA order
//! (A B, B A, A B, …) so drift hits both sides equally. Each pair gives a ratio
//! candidate/baseline (for `p99`, baseline/candidate, so below 1 always means slower); the
//! estimate is their median with a distribution-free 95% interval (sign test: order statistics
//! of the ratios), so a trial that stalled on a shared machine moves neither. Verdict: `slower`
//! when the whole interval lies below 1 − threshold (exit 1), `faster` when it lies above
//! 1 + threshold, `no change` otherwise. `--baseline-server/--candidate-server` compare any two
//! server commands the same way.
//!
//! `regress.json` is rewritten after every pair, so a crash loses at most one pair.
//!
//! Try it: `cargo xtask regress --baseline HEAD` (the tree against itself: no change).

pub mod baseline;
pub mod gate;

use std::path::Path;

use anyhow::{Context, Result, bail};

use self::baseline::{build_baseline, resolve_ref};
use self::gate::{PairOutcome, baseline_first, judge_pair, metric_value, parse_threshold, verdict};
use crate::error::input_error;
use crate::flags::RegressArgs;
use crate::interrupt;
use crate::present;
use crate::present::text::{metric_name, regress_trial_line, verdict_line};
use crate::record::RunFile;
use crate::record::loadgen_report::ReportFigures;
use crate::record::manifest::{Manifest, create_run_dir};
use crate::record::plan::{BenchPlan, ServerEntry};
use crate::record::regress::{Contender, REGRESS_SCHEMA, RegressFile, RegressTrial, Side, Verdict};
use crate::record::trial::Cell;
use crate::shell::{self, Binaries, command_output};
use crate::stats::paired_ratio_median;
use crate::trial::server::{builtin_strategy, parse_server_spec, preflight};
use crate::trial::{Pinning, TrialRunner};

/// The fewest pairs whose sign-test interval reaches 95% without assuming a distribution.
const MIN_PAIRS: usize = 6;

/// `cargo xtask regress`.
pub fn run(args: &RegressArgs) -> Result<()> {
    let root = shell::project_root();
    let inputs = Inputs::from_args(args, &root)?;
    let sides = Sides::prepare(&root, args, &inputs)?;
    let run_dir = create_run_dir(&root, "regress", args.run.out.as_deref())?;
    let plan = BenchPlan {
        trials: args.trials,
        ..BenchPlan::one_cell(
            args.connections,
            args.size,
            args.duration,
            args.warmup,
            &args.run,
        )
    };
    Manifest::collect(
        "regress",
        serde_json::json!({"baseline": sides.baseline, "candidate": sides.candidate,
            "metric": args.metric, "threshold": inputs.threshold, "plan": plan}),
        &root,
    )
    .write(&run_dir)?;
    std::fs::create_dir_all(run_dir.join("trials"))?;
    let pinning = Pinning::new(plan.pin);
    sides.preflight(&plan, &run_dir, &pinning)?;
    eprintln!(
        "regress: {} pairs (ABBA) of {} + {} warm-up, metric {}, threshold {:.1}%; run directory {}",
        args.trials,
        humantime::format_duration(args.duration),
        humantime::format_duration(args.warmup),
        metric_name(args.metric),
        inputs.threshold * 100.0,
        run_dir.display()
    );
    let pairs = PairRunner {
        plan: &plan,
        run_dir: &run_dir,
        pinning: &pinning,
        sides: &sides,
        args,
    };
    let mut file = sides.empty_file(args, inputs.threshold, &plan);
    for pair in 0..args.trials as usize {
        let outcome = pairs.run_pair(pair, &mut file.trials)?;
        record_outcome(&mut file, &outcome);
        file.write(&run_dir)?;
    }
    conclude(file, &run_dir)
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
        if (args.trials as usize) < MIN_PAIRS {
            return Err(input_error(
                "--trials must be at least 6 pairs: fewer cannot give a 95% interval without \
                 assuming a distribution (10 or more tolerate a stalled trial)",
            ));
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
    fn empty_file(&self, args: &RegressArgs, threshold: f64, plan: &BenchPlan) -> RegressFile {
        RegressFile {
            schema: REGRESS_SCHEMA.into(),
            baseline: self.baseline.clone(),
            candidate: self.candidate.clone(),
            metric: args.metric,
            threshold,
            connections: args.connections,
            size_bytes: args.size,
            duration_ms: plan.duration_ms,
            trials: Vec::new(),
            ratios: Vec::new(),
            excluded_pairs: Vec::new(),
            candidate_failures: Vec::new(),
            estimate: None,
            verdict: None,
        }
    }
}

/// Which side runs first in pair `pair` (ABBA), and which second.
fn sides_in_order(pair: usize) -> [Side; 2] {
    if baseline_first(pair) {
        [Side::Baseline, Side::Candidate]
    } else {
        [Side::Candidate, Side::Baseline]
    }
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
    /// Runs pair `pair` (both sides, ABBA), appends its two trials to `trials` and judges it.
    fn run_pair(&self, pair: usize, trials: &mut Vec<RegressTrial>) -> Result<PairOutcome> {
        let metric = self.args.metric;
        let mut figures: [Option<ReportFigures>; 2] = [None, None];
        for (index, side) in sides_in_order(pair).into_iter().enumerate() {
            interrupt::check()?;
            let (side_figures, report) = self.run_side(pair, 2 * pair + index, side)?;
            let trial = RegressTrial {
                pair,
                side,
                value: metric_value(metric, &side_figures),
                errors: side_figures.errors_total,
                valid: side_figures.valid,
                report,
            };
            eprintln!("{}", regress_trial_line(metric, &trial));
            if side_figures.valid == Some(false) {
                eprintln!(
                    "  note: {side} pair {pair}: loadgen says: {}",
                    side_figures.invalid_reasons.join("; ")
                );
            }
            trials.push(trial);
            figures[usize::from(side == Side::Candidate)] = Some(side_figures);
        }
        let [Some(baseline), Some(candidate)] = &figures else {
            bail!("pair {pair} lacks a side");
        };
        Ok(judge_pair(metric, pair, baseline, candidate))
    }

    /// One trial of `side`: its figures and its report (relative to the run directory). A
    /// trial without figures ends the run: a gate cannot judge a side it could not measure.
    fn run_side(&self, pair: usize, order: usize, side: Side) -> Result<(ReportFigures, String)> {
        let (contender, binaries) = self.sides.get(side);
        let runner = TrialRunner {
            plan: self.plan,
            binaries,
            run_dir: self.run_dir,
            pinning: self.pinning,
        };
        let cell = Cell {
            server: side.as_str().into(),
            connections: self.args.connections,
            size_bytes: self.args.size,
            workload: None,
        };
        let record = runner.run_trial(order, &cell, pair as u32, &contender.server)?;
        let figures = record.figures.clone().with_context(|| {
            format!(
                "{side} trial {pair} failed: {}",
                record
                    .failure
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )
        })?;
        Ok((figures, record.loadgen_json))
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

/// The estimate and the verdict over every usable pair: written into `regress.json` and
/// `index.html`, printed, and turned into the exit code (1 for a failing candidate or
/// `slower`).
fn conclude(mut file: RegressFile, run_dir: &Path) -> Result<()> {
    if file.ratios.len() < MIN_PAIRS && file.candidate_failures.is_empty() {
        bail!(
            "only {} of {} pairs gave a valid measurement on both sides ({}); no verdict. For pool or rayon with \
             more connections than workers, raise --server-args '--workers N' or lower --connections",
            file.ratios.len(),
            file.pairs_run(),
            file.excluded_pairs.join(" | ")
        );
    }
    let estimate = paired_ratio_median(&file.ratios);
    let verdict = verdict(&estimate, file.threshold);
    file.estimate = Some(estimate);
    file.verdict = Some(verdict);
    file.write(run_dir)?;
    present::regress_run(run_dir, &file)?;
    println!("{}", verdict_line(&file));
    println!("run directory: {}", run_dir.display());
    if !file.candidate_failures.is_empty() {
        bail!(
            "the candidate fails the gate: an echo server must not err or go silent ({})",
            file.candidate_failures.join(" | ")
        );
    }
    if verdict == Verdict::Slower {
        bail!(
            "the candidate is slower than the baseline beyond the {:.1}% threshold with 95% confidence",
            file.threshold * 100.0
        );
    }
    Ok(())
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
