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
//! Try it: `cargo xtask regress --baseline HEAD` (the tree against itself: no change).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::bench::{
    BenchPlan, Pinning, ServerEntry, TrialRunner, builtin_strategy, parse_server_spec,
};
use crate::flags::{Metric, RegressArgs};
use crate::loadgen_report::ReportFigures;
use crate::manifest::{Manifest, create_run_dir, write_json};
use crate::shell::{self, Binaries, command_output};
use crate::stats::{RatioEstimate, paired_ratio_median};
use crate::summary::Cell;
use crate::{input_error, interrupt};

/// The gate's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Slower,
    Faster,
    NoChange,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Slower => "slower",
            Verdict::Faster => "faster",
            Verdict::NoChange => "no change",
        })
    }
}

/// Slower/faster only when the whole interval lies beyond the threshold.
pub fn verdict(estimate: &RatioEstimate, threshold: f64) -> Verdict {
    if estimate.ci.high < 1.0 - threshold {
        Verdict::Slower
    } else if estimate.ci.low > 1.0 + threshold {
        Verdict::Faster
    } else {
        Verdict::NoChange
    }
}

/// Parses `5%` or `0.05` into a fraction.
pub fn parse_threshold(text: &str) -> Result<f64> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| input_error(format!("--threshold {text:?}: expected e.g. 5% or 0.05")))?;
    if !(0.0..1.0).contains(&value) {
        return Err(input_error(format!(
            "--threshold {text:?} must be between 0% and 100%"
        )));
    }
    Ok(value)
}

/// What one pair contributes: a ratio for the estimate, or why it is excluded; and whether the
/// candidate failed outright (errors or nothing verified), which fails the gate by itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PairOutcome {
    pub ratio: Option<f64>,
    pub excluded: Option<String>,
    pub candidate_failure: Option<String>,
}

/// Judges one pair. A pair is excluded when either side's loadgen said `valid: false` (its
/// numbers cannot be trusted), either side verified nothing, or the baseline had errors. A
/// candidate with errors or nothing verified fails the gate whatever the ratios say: an echo
/// server that drops or corrupts messages is broken, not merely slow.
pub fn judge_pair(
    metric: Metric,
    pair: usize,
    baseline: &ReportFigures,
    candidate: &ReportFigures,
) -> PairOutcome {
    let mut problems = Vec::new();
    for (label, figures) in [("baseline", baseline), ("candidate", candidate)] {
        if figures.messages_verified == 0 {
            problems.push(format!("{label} verified no messages"));
        } else if figures.valid == Some(false) {
            problems.push(format!(
                "{label} measurement invalid ({})",
                figures.invalid_reasons.join("; ")
            ));
        }
    }
    if baseline.errors_total > 0 {
        problems.push(format!("baseline had {} errors", baseline.errors_total));
    }
    let candidate_failure = if candidate.errors_total > 0 {
        Some(format!(
            "pair {pair}: candidate had {} errors",
            candidate.errors_total
        ))
    } else if candidate.messages_verified == 0 {
        Some(format!("pair {pair}: candidate verified no messages"))
    } else {
        None
    };
    if problems.is_empty() {
        PairOutcome {
            ratio: Some(pair_ratio(
                metric,
                metric_value(metric, baseline),
                metric_value(metric, candidate),
            )),
            excluded: None,
            candidate_failure,
        }
    } else {
        PairOutcome {
            ratio: None,
            excluded: Some(format!("pair {pair}: {}", problems.join("; "))),
            candidate_failure,
        }
    }
}

/// ABBA order: for pair i, which side runs first (`true` = baseline first).
pub fn baseline_first(pair: usize) -> bool {
    pair.is_multiple_of(2)
}

/// The "speed" ratio of one pair: candidate over baseline for throughput, baseline over
/// candidate for p99 (lower latency is faster). Below 1 means the candidate is slower.
pub fn pair_ratio(metric: Metric, baseline: f64, candidate: f64) -> f64 {
    match metric {
        Metric::Throughput => candidate / baseline,
        Metric::P99 => baseline / candidate,
    }
}

/// The compared value of one trial. A side that verified nothing is not dropped (a server that
/// stops answering is the worst regression): its throughput counts as one message in the window,
/// its p99 as the whole window.
pub fn metric_value(metric: Metric, figures: &ReportFigures) -> f64 {
    let window_s = figures.duration_s.max(1e-3);
    match metric {
        Metric::Throughput if figures.messages_verified == 0 => 1.0 / window_s,
        Metric::Throughput => figures.messages_per_s,
        Metric::P99 if figures.messages_verified == 0 => window_s * 1e6,
        Metric::P99 => figures.p99_us,
    }
}

/// One measured trial.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegressTrial {
    pub pair: usize,
    pub side: String,
    pub value: f64,
    pub errors: u64,
    /// The loadgen's `valid` (false: its numbers cannot be trusted; the pair is excluded).
    #[serde(default)]
    pub valid: Option<bool>,
    pub report: String,
}

/// The file `regress.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegressFile {
    pub schema: String,
    pub baseline: Side,
    pub candidate: Side,
    pub metric: Metric,
    pub threshold: f64,
    pub connections: u32,
    pub size_bytes: u32,
    pub duration_ms: u64,
    pub trials: Vec<RegressTrial>,
    /// Per usable pair, candidate vs baseline (below 1 = slower).
    pub ratios: Vec<f64>,
    /// Pairs left out of the estimate, and why (either side invalid or verified nothing, or
    /// the baseline had errors).
    #[serde(default)]
    pub excluded_pairs: Vec<String>,
    /// Why the candidate fails the gate regardless of the ratios (errors, nothing verified).
    #[serde(default)]
    pub candidate_failures: Vec<String>,
    pub estimate: RatioEstimate,
    pub verdict: Verdict,
}

/// One side of the comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Side {
    pub label: String,
    pub git_ref: Option<String>,
    pub commit: Option<String>,
    pub server: ServerEntry,
}

/// Schema id of `regress.json`.
pub const REGRESS_SCHEMA: &str = "echolab.xtask.regress/1";

/// A git worktree removed again on drop.
struct Worktree {
    root: PathBuf,
    path: PathBuf,
}

impl Drop for Worktree {
    fn drop(&mut self) {
        let _ = Command::new("git")
            .args(["worktree", "remove", "--force"])
            .arg(&self.path)
            .current_dir(&self.root)
            .status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Resolves REF to a commit id; an unknown ref is an input error.
pub fn resolve_ref(root: &Path, git_ref: &str) -> Result<String> {
    command_output(
        "git",
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{git_ref}^{{commit}}"),
        ],
        root,
    )
    .filter(|commit| !commit.is_empty())
    .ok_or_else(|| {
        input_error(format!(
            "--baseline {git_ref:?} is not a commit in this repository"
        ))
    })
}

/// Checks `commit` out in a fresh temporary worktree (detached), removed again on drop.
fn checkout_worktree(root: &Path, commit: &str) -> Result<Worktree> {
    // A regress killed hard (a second Ctrl-C, SIGKILL) leaves a registered worktree whose
    // directory may be gone; prune those records first so they never pile up.
    let _ = Command::new("git")
        .args(["worktree", "prune"])
        .current_dir(root)
        .status();
    let path = std::env::temp_dir().join(format!(
        "echolab-baseline-{}-{}",
        &commit[..commit.len().min(12)],
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&path);
    eprintln!("$ git worktree add --detach {} {commit}", path.display());
    let status = Command::new("git")
        .args(["worktree", "add", "--detach", "--quiet"])
        .arg(&path)
        .arg(commit)
        .current_dir(root)
        .status()
        .context("running git worktree add")?;
    if !status.success() {
        bail!("git worktree add failed for {commit}");
    }
    Ok(Worktree {
        root: root.to_path_buf(),
        path,
    })
}

/// Builds the binaries of `commit` in a temporary worktree with a cached target dir.
fn build_baseline(root: &Path, commit: &str, args: &RegressArgs) -> Result<Binaries> {
    let worktree = checkout_worktree(root, commit)?;
    let target = root.join("target").join("xtask-regress");
    let built = shell::build_binaries(&worktree.path, args.run.build.build_profile, Some(&target))?;
    // Keep copies outside the worktree's lifetime (the target dir is shared and cached).
    let keep = target.join(format!("bin-{}", &commit[..commit.len().min(12)]));
    std::fs::create_dir_all(&keep)?;
    let echo_server = keep.join("echo-server");
    let loadgen = keep.join("loadgen");
    std::fs::copy(&built.echo_server, &echo_server).context("keeping baseline echo-server")?;
    std::fs::copy(&built.loadgen, &loadgen).context("keeping baseline loadgen")?;
    drop(worktree);
    Ok(Binaries {
        echo_server,
        loadgen,
    })
}

/// `cargo xtask regress`.
pub fn run(args: &RegressArgs) -> Result<()> {
    let threshold = parse_threshold(&args.threshold)?;
    if args.trials < 6 {
        return Err(input_error(
            "--trials must be at least 6 pairs: fewer cannot give a 95% interval without assuming \
             a distribution (10 or more tolerate a stalled trial)",
        ));
    }
    let root = shell::project_root();
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
        (None, Some(git_ref)) => Some(resolve_ref(&root, git_ref)?),
        _ => None,
    };
    let candidate_binaries = shell::binaries(&root, &args.run.build, None)?;
    let (baseline_binaries, baseline, candidate) = match external {
        Some((baseline, candidate)) => (
            candidate_binaries.clone(),
            Side {
                label: "baseline".into(),
                git_ref: None,
                commit: None,
                server: baseline,
            },
            Side {
                label: "candidate".into(),
                git_ref: None,
                commit: None,
                server: candidate,
            },
        ),
        None => {
            let commit = baseline_commit.clone().context("baseline commit")?;
            let built = build_baseline(&root, &commit, args)?;
            (
                built,
                Side {
                    label: "baseline".into(),
                    git_ref: args.baseline.clone(),
                    commit: Some(commit),
                    server: strategy.clone(),
                },
                Side {
                    label: "candidate".into(),
                    git_ref: Some("working tree".into()),
                    commit: command_output("git", &["rev-parse", "HEAD"], &root),
                    server: strategy,
                },
            )
        }
    };
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
        serde_json::json!({"baseline": baseline, "candidate": candidate, "metric": args.metric,
            "threshold": threshold, "plan": plan}),
        &root,
    )
    .write(&run_dir)?;
    std::fs::create_dir_all(run_dir.join("trials"))?;
    let pinning = Pinning::new(plan.pin);
    // The same loadgen (the candidate's) measures both sides.
    let baseline_side_binaries = Binaries {
        echo_server: baseline_binaries.echo_server.clone(),
        loadgen: candidate_binaries.loadgen.clone(),
    };
    for (side, binaries) in [
        (&baseline, &baseline_side_binaries),
        (&candidate, &candidate_binaries),
    ] {
        let mut side_plan = plan.clone();
        side_plan.servers = vec![side.server.clone()];
        crate::bench::preflight(&side_plan, binaries, &run_dir, &pinning)
            .with_context(|| format!("{} server", side.label))?;
    }
    eprintln!(
        "regress: {} pairs (ABBA) of {} + {} warm-up, metric {}, threshold {:.1}%; run directory {}",
        args.trials,
        humantime::format_duration(args.duration),
        humantime::format_duration(args.warmup),
        match args.metric {
            Metric::Throughput => "throughput",
            Metric::P99 => "p99",
        },
        threshold * 100.0,
        run_dir.display()
    );
    let mut trials = Vec::new();
    let mut ratios = Vec::new();
    let mut excluded_pairs = Vec::new();
    let mut candidate_failures = Vec::new();
    let mut order = 0;
    for pair in 0..args.trials as usize {
        let sides = if baseline_first(pair) {
            [
                (&baseline, &baseline_side_binaries),
                (&candidate, &candidate_binaries),
            ]
        } else {
            [
                (&candidate, &candidate_binaries),
                (&baseline, &baseline_side_binaries),
            ]
        };
        let mut pair_figures: [Option<ReportFigures>; 2] = [None, None];
        for (side, binaries) in sides {
            interrupt::check()?;
            let runner = TrialRunner {
                plan: &plan,
                binaries,
                run_dir: &run_dir,
                pinning: &pinning,
            };
            let cell = Cell {
                server: side.label.clone(),
                connections: args.connections,
                size_bytes: args.size,
            };
            let record = runner.run_trial(order, &cell, pair as u32, &side.server)?;
            order += 1;
            let figures = record.figures.clone().with_context(|| {
                format!(
                    "{} trial {pair} failed: {}",
                    side.label,
                    record.failure.clone().unwrap_or_default()
                )
            })?;
            let value = metric_value(args.metric, &figures);
            eprintln!(
                "  pair {pair} {:<9} {:>12} {}  errors {}",
                side.label,
                match args.metric {
                    Metric::Throughput => crate::summary::format_count(value),
                    Metric::P99 => crate::summary::format_us(value),
                },
                match args.metric {
                    Metric::Throughput => "msg/s",
                    Metric::P99 => "µs p99",
                },
                figures.errors_total
            );
            if figures.valid == Some(false) {
                eprintln!(
                    "  note: {} pair {pair}: loadgen says: {}",
                    side.label,
                    figures.invalid_reasons.join("; ")
                );
            }
            trials.push(RegressTrial {
                pair,
                side: side.label.clone(),
                value,
                errors: figures.errors_total,
                valid: figures.valid,
                report: record.loadgen_json.clone(),
            });
            pair_figures[usize::from(side.label == "candidate")] = Some(figures);
        }
        let [Some(baseline_figures), Some(candidate_figures)] = &pair_figures else {
            bail!("pair {pair} lacks a side");
        };
        let outcome = judge_pair(args.metric, pair, baseline_figures, candidate_figures);
        if let Some(ratio) = outcome.ratio {
            ratios.push(ratio);
        }
        if let Some(why) = outcome.excluded {
            eprintln!("  excluded {why}");
            excluded_pairs.push(why);
        }
        if let Some(failure) = outcome.candidate_failure {
            eprintln!("  gate: {failure}");
            candidate_failures.push(failure);
        }
    }
    if ratios.len() < 6 && candidate_failures.is_empty() {
        bail!(
            "only {} of {} pairs gave a valid measurement on both sides ({}); no verdict. For pool or rayon with \
             more connections than workers, raise --server-args '--workers N' or lower --connections",
            ratios.len(),
            args.trials,
            excluded_pairs.join(" | ")
        );
    }
    let estimate = paired_ratio_median(&ratios);
    let verdict = verdict(&estimate, threshold);
    let file = RegressFile {
        schema: REGRESS_SCHEMA.into(),
        baseline,
        candidate,
        metric: args.metric,
        threshold,
        connections: args.connections,
        size_bytes: args.size,
        duration_ms: plan.duration_ms,
        trials,
        ratios,
        excluded_pairs,
        candidate_failures,
        estimate,
        verdict,
    };
    write_json(&run_dir.join("regress.json"), &file)?;
    write_regress_index(&run_dir)?;
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
            threshold * 100.0
        );
    }
    Ok(())
}

/// `verdict: slower (candidate/baseline 0.52, 95% CI 0.50–0.55; threshold 5%)`.
/// Excluded pairs (invalid measurements) are counted in the line.
pub fn verdict_line(file: &RegressFile) -> String {
    format!(
        "verdict: {} (candidate/baseline {} median {:.3}, 95% CI {:.3}–{:.3} over {} pairs{}; threshold {:.1}%)",
        file.verdict,
        match file.metric {
            Metric::Throughput => "throughput",
            Metric::P99 => "speed by p99",
        },
        file.estimate.ratio,
        file.estimate.ci.low,
        file.estimate.ci.high,
        file.estimate.pairs,
        if file.excluded_pairs.is_empty() {
            String::new()
        } else {
            format!(", {} excluded", file.excluded_pairs.len())
        },
        file.threshold * 100.0
    )
}

/// Writes `index.html` of a regress run directory from `regress.json`.
pub fn write_regress_index(run_dir: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(run_dir.join("regress.json")).context("reading regress.json")?;
    let file: RegressFile = serde_json::from_str(&text).context("parsing regress.json")?;
    let mut body = format!(
        "<p><b>{}</b></p>\n<table><tr><th>pair</th><th>side</th><th>value</th><th>errors</th></tr>",
        crate::report::html_escape(&verdict_line(&file))
    );
    for trial in &file.trials {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td></tr>",
            trial.pair, trial.side, trial.value, trial.errors
        ));
    }
    body.push_str("</table>");
    crate::report::write_index(run_dir, "echolab regress", &body, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_worktree_is_checked_out_and_removed() {
        let root = crate::shell::project_root();
        let commit = resolve_ref(&root, "HEAD").expect("HEAD resolves");
        assert_eq!(commit.len(), 40);
        assert_eq!(
            crate::exit_code(&resolve_ref(&root, "no-such-ref-9c1d").expect_err("unknown")),
            2
        );
        let worktree = checkout_worktree(&root, &commit).expect("worktree");
        let path = worktree.path.clone();
        assert!(path.join("Cargo.toml").is_file());
        assert!(path.join("crates/server/Cargo.toml").is_file());
        let checked_out = command_output("git", &["rev-parse", "HEAD"], &path);
        assert_eq!(checked_out.as_deref(), Some(commit.as_str()));
        drop(worktree);
        assert!(!path.exists(), "the worktree is removed again");
        let listed = command_output("git", &["worktree", "list"], &root).unwrap_or_default();
        assert!(!listed.contains(&path.display().to_string()), "{listed}");
    }

    #[test]
    fn thresholds_parse() {
        assert_eq!(parse_threshold("5%").expect("valid"), 0.05);
        assert_eq!(parse_threshold("0.1").expect("valid"), 0.1);
        assert_eq!(
            crate::exit_code(&parse_threshold("fast").expect_err("bad")),
            2
        );
        assert!(parse_threshold("150%").is_err());
    }

    #[test]
    fn abba_alternates() {
        let order: Vec<bool> = (0..4).map(baseline_first).collect();
        assert_eq!(order, [true, false, true, false]);
    }

    #[test]
    fn ratios_point_the_same_way_for_both_metrics() {
        // Candidate with half the throughput, or twice the p99: both are ratio 0.5 (slower).
        assert_eq!(pair_ratio(Metric::Throughput, 1000.0, 500.0), 0.5);
        assert_eq!(pair_ratio(Metric::P99, 100.0, 200.0), 0.5);
    }

    #[test]
    fn verdicts_on_fixed_ratios() {
        let slower = paired_ratio_median(&[0.50, 0.52, 0.49, 0.51, 0.5, 0.53]);
        assert_eq!(verdict(&slower, 0.05), Verdict::Slower);
        let same = paired_ratio_median(&[0.98, 1.03, 1.01, 0.99, 1.0, 0.97]);
        assert_eq!(verdict(&same, 0.05), Verdict::NoChange);
        let faster = paired_ratio_median(&[1.5, 1.55, 1.48, 1.52, 1.6, 1.49]);
        assert_eq!(verdict(&faster, 0.05), Verdict::Faster);
        // Slower by 8% but too noisy to be sure it is beyond 5%: no verdict of slower.
        let noisy = paired_ratio_median(&[0.80, 1.05, 0.90, 0.93, 0.91, 0.94]);
        assert_eq!(verdict(&noisy, 0.05), Verdict::NoChange);
        // One stalled pair among ten does not hide a clear slowdown.
        let stalled =
            paired_ratio_median(&[0.5, 0.52, 0.49, 40.0, 0.51, 0.5, 0.48, 0.53, 0.5, 0.47]);
        assert_eq!(verdict(&stalled, 0.05), Verdict::Slower);
    }

    #[test]
    fn invalid_pairs_are_excluded_and_candidate_errors_fail() {
        let figures = |rate: f64, valid: Option<bool>, errors: u64| ReportFigures {
            messages_per_s: rate,
            messages_verified: 1000,
            duration_s: 1.0,
            p50_us: 10.0,
            p90_us: 10.0,
            p99_us: 10.0,
            p999_us: 10.0,
            max_us: 10.0,
            errors_total: errors,
            valid,
            invalid_reasons: vec!["loadgen saturated".into()],
            saturated: None,
            achieved_ratio: None,
            target_per_s: None,
            starved: None,
        };
        let good = judge_pair(
            Metric::Throughput,
            0,
            &figures(1000.0, Some(true), 0),
            &figures(500.0, None, 0),
        );
        assert_eq!(good.ratio, Some(0.5));
        assert_eq!(good.excluded, None);
        assert_eq!(good.candidate_failure, None);
        for (baseline, candidate) in [
            (
                figures(1000.0, Some(false), 0),
                figures(500.0, Some(true), 0),
            ),
            (
                figures(1000.0, Some(true), 0),
                figures(500.0, Some(false), 0),
            ),
            (
                figures(1000.0, Some(true), 2),
                figures(500.0, Some(true), 0),
            ),
        ] {
            let outcome = judge_pair(Metric::Throughput, 3, &baseline, &candidate);
            assert_eq!(outcome.ratio, None, "{outcome:?}");
            assert!(
                outcome
                    .excluded
                    .as_deref()
                    .is_some_and(|why| why.starts_with("pair 3: ")),
                "{outcome:?}"
            );
        }
        let erring = judge_pair(
            Metric::P99,
            1,
            &figures(1000.0, Some(true), 0),
            &figures(1000.0, Some(true), 7),
        );
        assert_eq!(erring.ratio, Some(1.0));
        assert_eq!(
            erring.candidate_failure.as_deref(),
            Some("pair 1: candidate had 7 errors")
        );
        let mut silent = figures(0.0, Some(false), 0);
        silent.messages_verified = 0;
        let dead = judge_pair(Metric::Throughput, 2, &figures(1000.0, None, 0), &silent);
        assert_eq!(dead.ratio, None);
        assert_eq!(
            dead.candidate_failure.as_deref(),
            Some("pair 2: candidate verified no messages")
        );
    }

    #[test]
    fn a_side_that_answered_nothing_still_counts() {
        let figures = |verified: u64, rate: f64, p99: f64| ReportFigures {
            messages_per_s: rate,
            messages_verified: verified,
            duration_s: 2.0,
            p50_us: p99,
            p90_us: p99,
            p99_us: p99,
            p999_us: p99,
            max_us: p99,
            errors_total: 0,
            valid: Some(verified > 100),
            invalid_reasons: vec![],
            saturated: None,
            achieved_ratio: None,
            target_per_s: None,
            starved: None,
        };
        assert_eq!(metric_value(Metric::Throughput, &figures(0, 0.0, 0.0)), 0.5);
        assert_eq!(metric_value(Metric::P99, &figures(0, 0.0, 0.0)), 2e6);
        assert_eq!(
            metric_value(Metric::Throughput, &figures(5000, 2500.0, 90.0)),
            2500.0
        );
        assert_eq!(
            metric_value(Metric::P99, &figures(5000, 2500.0, 90.0)),
            90.0
        );
    }
}
