//! `cargo xtask bench`: compare server strategies (and any external echo server) on one
//! machine, with interleaved trials so that drift spreads evenly over the cells.
//!
//! How: build release binaries, check that every server starts, then run each trial (see
//! [`crate::trial`]: a fresh server on port 0 pinned to its own cores, loadgen pinned to the
//! others, the server's CPU time and peak RSS from `/proc`) in a shuffled round-robin order
//! (each round runs every cell once, seed printed), rewriting `trials.json` after each. Finally
//! summarize per cell (see [`crate::summary`]), write the summaries, plots and `index.html`
//! (see [`crate::present`]) and print the table.
//!
//! Try it: `cargo xtask bench --smoke`, or
//! `cargo xtask bench --strategies pool --server socat='socat TCP-LISTEN:{port},fork,reuseaddr PIPE'`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::input_error;
use crate::flags::BenchArgs;
use crate::interrupt;
use crate::present;
use crate::present::progress::Progress;
use crate::present::table::{TerminalTable, export_to_vec, write_summaries};
use crate::present::text::trial_line;
use crate::record::RunFile;
use crate::record::manifest::{Manifest, create_run_dir};
use crate::record::matrix::{MatrixFile, connect_p99_by_cell};
use crate::record::plan::{BenchPlan, ServerEntry};
use crate::record::summary::CellSummary;
use crate::record::trial::{Cell, TrialRecord, TrialsFile};
use crate::shell::{self, Binaries};
use crate::summary::summarize;
use crate::trial::server::{
    KNOWN_STRATEGIES, check_threads_against_server_args, drop_unstartable_strategies,
    parse_server_spec, parse_strategy_item, preflight, resolve_strategies,
};
use crate::trial::{KeepAwake, Pinning, TrialRunner};
use crate::verdict;
use crate::workload::{self, CellFlags, Workload};

/// The strategies compared when `--strategies` is not given: the pool story. `pool:16` serves
/// 16 connections at once and starves the rest; `reactor-pool:2` serves any number with two
/// workers; `iterative` and `thread` are the two classic ends.
pub const DEFAULT_STRATEGIES: [&str; 4] = ["iterative", "thread", "pool:16", "reactor-pool:2"];

/// The strategies `--workloads all` compares when `--strategies` is not given: the default set
/// and the two nonblocking designs (`rayon` tells `pool`'s story and `uring` `event-loop`'s on
/// loopback; `--strategies all` adds them), so the full matrix stays within 6 minutes.
pub const ALL_WORKLOADS_STRATEGIES: [&str; 6] = [
    "iterative",
    "thread",
    "pool:16",
    "reactor-pool:2",
    "event-loop",
    "async",
];

/// Measured time per trial of a workload run (the default run and `--workloads`): 5 trials of
/// every cell stay within 90 s for the default run and 6 minutes for `--workloads all` on 2
/// cores. Cell flags alone keep 1 s.
pub const WORKLOAD_DURATION: Duration = Duration::from_millis(600);
/// Warm-up per trial of a workload run (1,000 keep-alive connections connect within it).
pub const WORKLOAD_WARMUP: Duration = Duration::from_millis(300);

/// Validates flags into a plan (no processes started); bad input is an [`crate::InputError`].
pub fn plan_from_args(args: &BenchArgs) -> Result<BenchPlan> {
    let mut servers = Vec::new();
    let mut all_strategies = false;
    let requested: Vec<String> = match &args.strategies {
        Some(list) => list.iter().map(|s| s.trim().to_string()).collect(),
        None if args.servers.is_empty() && workload::is_all(args.workloads.as_deref()) => {
            ALL_WORKLOADS_STRATEGIES
                .iter()
                .map(|s| s.to_string())
                .collect()
        }
        None if args.servers.is_empty() => {
            DEFAULT_STRATEGIES.iter().map(|s| s.to_string()).collect()
        }
        None => vec![],
    };
    for item in requested {
        match item.as_str() {
            "all" => all_strategies = true,
            "none" | "" => {}
            item => {
                let entry = parse_strategy_item(item)?;
                match servers.iter().find(|s: &&ServerEntry| s.name == entry.name) {
                    None => servers.push(entry),
                    Some(same) if *same == entry => {}
                    Some(_) => {
                        return Err(input_error(format!(
                            "--strategies names {} twice with different thread counts; a strategy runs once per bench (compare counts in two runs)",
                            entry.name
                        )));
                    }
                }
            }
        }
    }
    for spec in &args.servers {
        let entry = parse_server_spec(spec)?;
        if servers.iter().any(|s| s.name == entry.name) || KNOWN_STRATEGIES.contains(&&*entry.name)
        {
            return Err(input_error(format!(
                "--server name {:?} is already used (strategies and servers need distinct names)",
                entry.name
            )));
        }
        servers.push(entry);
    }
    check_threads_against_server_args(&servers, &args.run.server_args())?;
    if servers.is_empty() && !all_strategies {
        return Err(input_error(
            "nothing to compare: no strategies and no --server",
        ));
    }
    let cell_flags = CellFlags {
        connections: args.connections.clone(),
        sizes_bytes: args.sizes.clone(),
        depth: args.depth,
        rate_per_s: args.rate,
    };
    let workloads = workload::select(args.workloads.as_deref(), &cell_flags)?;
    let (connections, sizes_bytes) = if workloads.is_empty() {
        (
            args.connections.clone().unwrap_or_else(|| vec![1, 16, 128]),
            args.sizes.clone().unwrap_or_else(|| vec![64]),
        )
    } else {
        let union = |of: &dyn Fn(&Workload) -> &[u32]| {
            let mut all: Vec<u32> = workloads.iter().flat_map(|w| of(w).to_vec()).collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        (union(&|w| &w.connections), union(&|w| &w.sizes_bytes))
    };
    if connections.is_empty() || connections.contains(&0) {
        return Err(input_error("--connections: every count must be at least 1"));
    }
    if sizes_bytes.is_empty() || sizes_bytes.contains(&0) {
        return Err(input_error("--sizes: every size must be at least 1 byte"));
    }
    if args.depth == Some(0) || args.rate == Some(0) || args.trials == Some(0) {
        return Err(input_error(
            "--depth, --rate and --trials must be at least 1",
        ));
    }
    let (trials, duration, warmup) = if args.smoke {
        (1, Duration::from_millis(500), Duration::from_millis(200))
    } else if !workloads.is_empty() {
        // Workload matrices are wide: the default run must stay within 90 s, `all` within 6 min.
        (5, WORKLOAD_DURATION, WORKLOAD_WARMUP)
    } else {
        (5, Duration::from_millis(1000), Duration::from_millis(300))
    };
    let duration = args.duration.unwrap_or(duration);
    if duration.is_zero() {
        return Err(input_error("--duration must be more than 0"));
    }
    Ok(BenchPlan {
        servers,
        all_strategies,
        connections,
        sizes_bytes,
        depth: args.depth,
        rate_per_s: args.rate,
        trials: args.trials.unwrap_or(trials),
        duration_ms: duration.as_millis() as u64,
        warmup_ms: args.warmup.unwrap_or(warmup).as_millis() as u64,
        pin: !args.run.no_pin,
        keep_awake: args.run.keep_awake,
        seed: args.seed.unwrap_or_else(rand::random),
        ready_timeout_ms: args.run.ready_timeout.as_millis() as u64,
        server_args: args.run.server_args(),
        workloads,
    })
}

/// The matrix, grouped by workload (in the plan's order), then size, then connections, then
/// server (the table's order).
pub fn cells(plan: &BenchPlan) -> Vec<Cell> {
    let mut cells = Vec::new();
    let unnamed = [None];
    let named: Vec<Option<&Workload>> = plan.workloads.iter().map(Some).collect();
    let groups = if named.is_empty() {
        &unnamed[..]
    } else {
        &named[..]
    };
    for workload in groups {
        let (sizes, connection_counts) = match workload {
            Some(w) => (&w.sizes_bytes, &w.connections),
            None => (&plan.sizes_bytes, &plan.connections),
        };
        for &size_bytes in sizes {
            for &connections in connection_counts {
                for server in &plan.servers {
                    cells.push(Cell {
                        server: server.name.clone(),
                        connections,
                        size_bytes,
                        workload: workload.map(|w| w.name.clone()),
                    });
                }
            }
        }
    }
    cells
}

/// Trial order: `trials` rounds, each running every cell once in a freshly shuffled order.
/// Returns (cell index, trial number); the same seed gives the same order.
pub fn schedule(cell_count: usize, trials: u32, seed: u64) -> Vec<(usize, u32)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order = Vec::with_capacity(cell_count * trials as usize);
    for trial in 0..trials {
        let mut round: Vec<usize> = (0..cell_count).collect();
        round.shuffle(&mut rng);
        order.extend(round.into_iter().map(|cell| (cell, trial)));
    }
    order
}

/// `cargo xtask bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let mut plan = plan_from_args(args)?;
    let root = shell::project_root();
    let binaries = shell::binaries(&root, &args.run.build, None)?;
    resolve_strategies(&mut plan, &binaries)?;
    let run_dir = create_run_dir(&root, "bench", args.run.out.as_deref())?;
    if plan.all_strategies {
        drop_unstartable_strategies(&mut plan, &binaries, &run_dir)?;
    }
    let (summaries, matrix) = run_plan(&plan, &binaries, &run_dir, &root)?;
    if let Some(path) = &args.bmf {
        crate::present::bmf::write_bench(path, &summaries, &TrialsFile::read(&run_dir)?)?;
    }
    println!();
    print!(
        "{}",
        String::from_utf8_lossy(&export_to_vec(&TerminalTable, &summaries))
    );
    println!();
    print!("{}", present::matrix::terminal(&matrix));
    println!("\nrun directory: {}", run_dir.display());
    let failed: usize = summaries.iter().map(|s| s.failed_trials).sum();
    if failed > 0 {
        bail!(
            "{failed} trial(s) failed; see the FAILED lines above and the logs in {}",
            run_dir.join("trials").display()
        );
    }
    Ok(())
}

/// Runs a validated plan into `run_dir` and returns the per-cell summaries and the matrix:
/// the manifest, the start checks, every trial in the shuffled order (`trials.json` rewritten
/// after each), then the summaries, the matrix, plots and `index.html`.
pub fn run_plan(
    plan: &BenchPlan,
    binaries: &Binaries,
    run_dir: &Path,
    root: &Path,
) -> Result<(Vec<CellSummary>, MatrixFile)> {
    let pinning = Pinning::new(plan.pin);
    let awake = KeepAwake::start(plan.keep_awake, &pinning)?;
    write_manifest(plan, binaries, run_dir, root, &pinning)?;
    std::fs::create_dir_all(run_dir.join("trials"))?;
    let cells = cells(plan);
    let order = schedule(cells.len(), plan.trials, plan.seed);
    announce(plan, &cells, order.len(), run_dir, &pinning);
    preflight(plan, binaries, run_dir, &pinning)?;
    let runner = TrialRunner {
        plan,
        binaries,
        run_dir,
        pinning: &pinning,
    };
    let records = run_trials(&runner, &cells, &order)?;
    drop(awake);
    let summaries = summarize(&cells, &records);
    write_summaries(run_dir, &summaries)?;
    let matrix = verdict::matrix(
        plan,
        &summaries,
        &records,
        &connect_p99_by_cell(run_dir, &records),
    );
    let trials_file = TrialsFile::new(plan.seed, cells, records);
    if let Err(error) = present::bench_run(run_dir, &trials_file, &summaries, &matrix) {
        eprintln!("warning: plots not drawn: {error:#}");
    }
    Ok((summaries, matrix))
}

/// Writes `manifest.json` with the plan, the binaries' versions and the pinning.
fn write_manifest(
    plan: &BenchPlan,
    binaries: &Binaries,
    run_dir: &Path,
    root: &Path,
    pinning: &Pinning,
) -> Result<()> {
    let mut manifest = Manifest::collect("bench", serde_json::to_value(plan)?, root);
    let version_of =
        |binary: &Path| shell::command_output(&binary.display().to_string(), &["--version"], root);
    manifest.versions.echo_server = version_of(&binaries.echo_server);
    manifest.versions.loadgen = version_of(&binaries.loadgen);
    manifest.server_cpus = pinning.server.clone();
    manifest.loadgen_cpus = pinning.loadgen.clone();
    manifest.write(run_dir)
}

/// Says on stderr what will run, in which order (the seed), where, and for how long.
fn announce(plan: &BenchPlan, cells: &[Cell], runs: usize, run_dir: &Path, pinning: &Pinning) {
    let per_trial = plan.warmup() + plan.duration();
    eprintln!(
        "bench: {} cells × {} trials = {} runs of {} + {} warm-up; order seed {} (--seed {} repeats it); pinning: {}",
        cells.len(),
        plan.trials,
        runs,
        humantime::format_duration(plan.duration()),
        humantime::format_duration(plan.warmup()),
        plan.seed,
        plan.seed,
        match (&pinning.server, &pinning.loadgen) {
            (Some(server), Some(loadgen)) => format!(
                "server on CPUs {server:?}, loadgen on {loadgen:?} (strategies sized by cores see {} there; \
                 --server-args '--workers N' or --no-pin to change)",
                server.len()
            ),
            _ => "off".into(),
        }
    );
    eprintln!("run directory: {}", run_dir.display());
    eprintln!(
        "about {} in total",
        humantime::format_duration(Duration::from_secs(
            // Starting and stopping a server and loadgen takes about 0.2 s per trial.
            ((per_trial.as_secs_f64() + 0.2) * runs as f64 * 1.05).ceil() as u64
        ))
    );
}

/// Runs every trial of `order` (cell index, trial number), rewriting `trials.json` after each.
fn run_trials(
    runner: &TrialRunner,
    cells: &[Cell],
    order: &[(usize, u32)],
) -> Result<Vec<TrialRecord>> {
    let plan = runner.plan;
    let progress = Progress::new(order.len() as u64);
    let started = Instant::now();
    let mut records = Vec::with_capacity(order.len());
    for (step, &(cell_index, trial)) in order.iter().enumerate() {
        interrupt::check()?;
        let cell = &cells[cell_index];
        let server = plan
            .servers
            .iter()
            .find(|s| s.name == cell.server)
            .context("cell without server")?;
        progress.start(format!("{} trial {trial}", cell.label()));
        let record = runner.run_trial(step, cell, trial, server)?;
        progress.finish_step(trial_line(step + 1, order.len(), &record));
        records.push(record);
        TrialsFile::new(plan.seed, cells.to_vec(), records.clone()).write(runner.run_dir)?;
    }
    drop(progress);
    eprintln!(
        "{} trials in {}",
        records.len(),
        humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
    );
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trial::loadgen_args;
    use clap::Parser;

    fn bench_args(extra: &[&str]) -> BenchArgs {
        let mut argv = vec!["cargo xtask", "bench"];
        argv.extend_from_slice(extra);
        match crate::flags::Xtask::parse_from(argv).command {
            crate::flags::Command::Bench(args) => *args,
            other => panic!("not bench: {other:?}"),
        }
    }

    #[test]
    fn default_plan_is_the_short_workload_matrix() {
        let plan = plan_from_args(&bench_args(&[])).expect("valid");
        let names: Vec<&str> = plan.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["iterative", "thread", "pool", "reactor-pool"]);
        let threads: Vec<Option<u32>> = plan.servers.iter().map(|s| s.threads).collect();
        assert_eq!(threads, [None, None, Some(16), Some(2)]);
        let workloads: Vec<&str> = plan.workloads.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(workloads, crate::workload::DEFAULT_WORKLOADS);
        assert!(workloads.len() >= 3, "issue 13: at least three workloads");
        // Five trials: the fewest whose interval of the median has ≥ 90% coverage.
        assert_eq!(plan.trials, 5);
        let cells = cells(&plan);
        assert_eq!(cells.len(), workloads.len() * names.len());
        assert!(cells.iter().all(|c| c.workload.is_some()));
        // The measured time stays well inside the 90 s budget (server starts come on top).
        let total_ms = (plan.duration_ms + plan.warmup_ms) * (cells.len() as u64) * 5;
        assert!(total_ms <= 70_000, "{total_ms}");
    }

    #[test]
    fn cell_flags_alone_keep_todays_matrix_and_combine_with_workloads() {
        let plan = plan_from_args(&bench_args(&["--connections", "1,16,128"])).expect("valid");
        assert!(plan.workloads.is_empty());
        assert_eq!(plan.connections, [1, 16, 128]);
        assert_eq!(plan.sizes_bytes, [64]);
        let unnamed = cells(&plan);
        assert_eq!(unnamed.len(), 12);
        assert!(unnamed.iter().all(|c| c.workload.is_none()));
        assert_eq!(unnamed[0].id(), "iterative-c1-s64");
        assert_eq!(
            (plan.trials, plan.duration_ms, plan.warmup_ms),
            (5, 1000, 300)
        );
        // With --workloads the cell flags replace that parameter in each named workload.
        let plan = plan_from_args(&bench_args(&[
            "--workloads",
            "pingpong,bulk",
            "--connections",
            "2",
            "--strategies",
            "pool",
        ]))
        .expect("valid");
        let ids: Vec<String> = cells(&plan).iter().map(Cell::id).collect();
        assert_eq!(ids, ["pool-pingpong-c2-s64", "pool-bulk-c2-s65536"]);
        assert_eq!(plan.sizes_bytes, [64, 65536]);
        // `--workloads all` runs every preset's full cells.
        let plan = plan_from_args(&bench_args(&["--workloads", "all"])).expect("valid");
        assert_eq!(plan.workloads.len(), crate::workload::PRESETS.len());
        // … against the default strategies and the event loops, unless --strategies says
        // otherwise.
        let names: Vec<&str> = plan.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "iterative",
                "thread",
                "pool",
                "reactor-pool",
                "event-loop",
                "async"
            ]
        );
        assert_eq!(
            (plan.trials, plan.duration_ms, plan.warmup_ms),
            (5, 600, 300)
        );
        let plan = plan_from_args(&bench_args(&["--workloads", "all", "--strategies", "pool"]))
            .expect("valid");
        assert!(!plan.all_strategies && plan.servers.len() == 1);
        assert!(plan.connections.contains(&128) && plan.connections.contains(&1000));
    }

    #[test]
    fn smoke_plan_is_short() {
        let plan = plan_from_args(&bench_args(&["--smoke"])).expect("valid");
        let trials = cells(&plan).len() as u64 * plan.trials as u64;
        assert!((plan.duration_ms + plan.warmup_ms) * trials < 10_000);
    }

    #[test]
    fn unknown_strategy_is_an_input_error() {
        let error = plan_from_args(&bench_args(&["--strategies", "pool,fibers"]))
            .expect_err("fibers is unknown");
        assert_eq!(crate::exit_code(&error), 2);
        assert!(error.to_string().contains("fibers"), "{error}");
    }

    #[test]
    fn server_specs_parse_and_validate() {
        let entry = parse_server_spec("socat=socat TCP-LISTEN:{port},fork PIPE").expect("valid");
        assert_eq!(entry.name, "socat");
        assert_eq!(
            entry.command.as_deref(),
            Some("socat TCP-LISTEN:{port},fork PIPE")
        );
        assert!(parse_server_spec("no-equals-sign").is_err());
        assert!(parse_server_spec("x=cmd without port").is_err());
        assert!(plan_from_args(&bench_args(&["--server", "pool=foo {port}"])).is_err());
        let plan = plan_from_args(&bench_args(&["--server", "c=./srv {port}"])).expect("valid");
        assert_eq!(plan.servers.len(), 1, "only the external server");
    }

    #[test]
    fn schedule_runs_every_cell_once_per_round_and_is_seeded() {
        let order = schedule(9, 3, 1234);
        assert_eq!(order.len(), 27);
        for (round, chunk) in order.chunks(9).enumerate() {
            let mut seen: Vec<usize> = chunk.iter().map(|&(cell, _)| cell).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..9).collect::<Vec<_>>());
            assert!(chunk.iter().all(|&(_, trial)| trial == round as u32));
        }
        assert_eq!(order, schedule(9, 3, 1234));
        assert_ne!(
            order,
            schedule(9, 3, 4321),
            "a different seed shuffles differently"
        );
        let identity: Vec<(usize, u32)> =
            (0..3).flat_map(|t| (0..9).map(move |c| (c, t))).collect();
        assert_ne!(order, identity, "the order is shuffled");
    }

    #[test]
    fn loadgen_arguments_follow_the_contract() {
        let mut plan = plan_from_args(&bench_args(&["--depth", "4"])).expect("valid");
        plan.rate_per_s = Some(1000);
        let cell = &cells(&plan)[0];
        let args = loadgen_args(
            &plan,
            cell,
            "127.0.0.1:5000".parse().expect("addr"),
            Path::new("/tmp/x.json"),
            Some(1),
        );
        let joined = args.join(" ");
        assert!(joined.starts_with("--target 127.0.0.1:5000 --connections 1 --size 64 --duration 1000ms --warmup 300ms --json /tmp/x.json --quiet"), "{joined}");
        assert!(
            joined.ends_with("--threads 1 --depth 4 --rate 1000"),
            "{joined}"
        );
        // A workload's cells get the workload's flags (and not the plan-wide ones).
        let plan = plan_from_args(&bench_args(&["--workloads", "keepalive,churn"])).expect("valid");
        let args_of = |cell: &Cell| {
            loadgen_args(
                &plan,
                cell,
                "127.0.0.1:5000".parse().expect("addr"),
                Path::new("/tmp/x.json"),
                Some(1),
            )
            .join(" ")
        };
        let cells = cells(&plan);
        let keepalive = args_of(&cells[0]);
        assert!(
            keepalive.contains("--connections 1000 --size 64"),
            "{keepalive}"
        );
        assert!(
            keepalive.ends_with("--threads 1 --rate 20000"),
            "{keepalive}"
        );
        let churn = args_of(cells.last().expect("cells"));
        assert!(
            churn.ends_with(
                "--threads 1 --messages-per-connection 1 --source-addrs 127.0.0.2-127.0.0.254"
            ),
            "{churn}"
        );
    }
}
