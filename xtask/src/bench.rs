//! `cargo xtask bench`: compare server strategies (and any external echo server) on one
//! machine, with interleaved trials so that drift spreads evenly over the cells.
//!
//! How: build release binaries, check that every server starts, then for each trial in a
//! shuffled round-robin order (each round runs every cell once, seed printed): start a fresh
//! server on port 0 (pinned to its own cores), run loadgen against it (pinned to the others),
//! sample the server's CPU time and peak RSS from `/proc`, stop the server, and append the record
//! to `trials.json`. Finally summarize per cell (see [`crate::summary`]) and print the table.
//!
//! Try it: `cargo xtask bench --smoke`, or
//! `cargo xtask bench --strategies pool --server socat='socat TCP-LISTEN:{port},fork,reuseaddr PIPE'`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::flags::{BenchArgs, RunArgs};
use crate::loadgen_report::{ReportFigures, read_report};
use crate::manifest::{Manifest, create_run_dir, write_json};
use crate::shell::{self, Binaries, Readiness, ServerLaunch};
use crate::summary::{
    Cell, CellSummary, CsvTable, Exporter, MarkdownTable, TerminalTable, TrialRecord, summarize,
};
use crate::{input_error, interrupt};

/// Every strategy name the server may know (DESIGN.md); `all` picks those the built server lists.
pub const KNOWN_STRATEGIES: [&str; 7] = [
    "iterative",
    "thread",
    "pool",
    "rayon",
    "event-loop",
    "async",
    "uring",
];

/// The strategies compared when `--strategies` is not given (issue 2's matrix).
pub const DEFAULT_STRATEGIES: [&str; 3] = ["iterative", "thread", "pool"];

/// One server in the comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerEntry {
    pub name: String,
    /// `None` for a built-in strategy; the command template (with `{port}`) for an external one.
    pub command: Option<String>,
}

/// The full, validated configuration of a bench run (stored in the manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchPlan {
    pub servers: Vec<ServerEntry>,
    /// True when `--strategies all` asked for every strategy the built server offers.
    pub all_strategies: bool,
    pub connections: Vec<u32>,
    pub sizes_bytes: Vec<u32>,
    pub depth: Option<u32>,
    pub rate_per_s: Option<u64>,
    pub trials: u32,
    pub duration_ms: u64,
    pub warmup_ms: u64,
    pub pin: bool,
    pub seed: u64,
    pub ready_timeout_ms: u64,
    /// Extra arguments for built-in strategies' servers (`--server-args`).
    #[serde(default)]
    pub server_args: Vec<String>,
}

/// Parses `NAME=CMD`.
pub fn parse_server_spec(spec: &str) -> Result<ServerEntry> {
    let Some((name, command)) = spec.split_once('=') else {
        return Err(input_error(format!(
            "--server {spec:?}: expected NAME='CMD … {{port}}'"
        )));
    };
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(input_error(format!(
            "--server {spec:?}: the name before '=' must be one word"
        )));
    }
    if !command.contains("{port}") {
        return Err(input_error(format!(
            "--server {name}: the command must contain {{port}} (xtask substitutes a free port)"
        )));
    }
    Ok(ServerEntry {
        name: name.to_string(),
        command: Some(command.trim().to_string()),
    })
}

/// A built-in strategy as a server entry; an unknown name is an input error listing the known.
pub fn builtin_strategy(name: &str) -> Result<ServerEntry> {
    if !KNOWN_STRATEGIES.contains(&name) {
        return Err(input_error(format!(
            "unknown strategy {name:?}; known: {}",
            KNOWN_STRATEGIES.join(", ")
        )));
    }
    Ok(ServerEntry {
        name: name.to_string(),
        command: None,
    })
}

/// Validates flags into a plan (no processes started); bad input is an [`crate::InputError`].
pub fn plan_from_args(args: &BenchArgs) -> Result<BenchPlan> {
    let mut servers = Vec::new();
    let mut all_strategies = false;
    let requested: Vec<String> = match &args.strategies {
        Some(list) => list.iter().map(|s| s.trim().to_string()).collect(),
        None if args.servers.is_empty() => {
            DEFAULT_STRATEGIES.iter().map(|s| s.to_string()).collect()
        }
        None => vec![],
    };
    for strategy in requested {
        match strategy.as_str() {
            "all" => all_strategies = true,
            "none" | "" => {}
            name if KNOWN_STRATEGIES.contains(&name) => {
                if !servers.iter().any(|s: &ServerEntry| s.name == name) {
                    servers.push(ServerEntry {
                        name: name.to_string(),
                        command: None,
                    });
                }
            }
            unknown => {
                return Err(input_error(format!(
                    "unknown strategy {unknown:?}; known: {}, or all",
                    KNOWN_STRATEGIES.join(", ")
                )));
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
    if servers.is_empty() && !all_strategies {
        return Err(input_error(
            "nothing to compare: no strategies and no --server",
        ));
    }
    let connections = args.connections.clone().unwrap_or_else(|| vec![1, 16, 128]);
    let sizes_bytes = args.sizes.clone().unwrap_or_else(|| vec![64]);
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
        seed: args.seed.unwrap_or_else(rand::random),
        ready_timeout_ms: args.run.ready_timeout.as_millis() as u64,
        server_args: args.run.server_args(),
    })
}

impl BenchPlan {
    /// One cell, closed loop, one trial, no servers yet: what `capacity` and `regress` measure
    /// (they set `servers`, `trials` or `rate_per_s` per step).
    pub fn one_cell(
        connections: u32,
        size_bytes: u32,
        duration: Duration,
        warmup: Duration,
        run: &RunArgs,
    ) -> Self {
        BenchPlan {
            servers: vec![],
            all_strategies: false,
            connections: vec![connections],
            sizes_bytes: vec![size_bytes],
            depth: None,
            rate_per_s: None,
            trials: 1,
            duration_ms: duration.as_millis() as u64,
            warmup_ms: warmup.as_millis() as u64,
            pin: !run.no_pin,
            seed: 0,
            ready_timeout_ms: run.ready_timeout.as_millis() as u64,
            server_args: run.server_args(),
        }
    }
}

/// The matrix, grouped by size, then connections, then server (the table's order).
pub fn cells(plan: &BenchPlan) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &size_bytes in &plan.sizes_bytes {
        for &connections in &plan.connections {
            for server in &plan.servers {
                cells.push(Cell {
                    server: server.name.clone(),
                    connections,
                    size_bytes,
                });
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

/// Strategy names from clap's `[possible values: a, b, c]` (printed for an invalid value).
pub fn possible_values(clap_error: &str) -> Vec<String> {
    clap_error
        .split_once("possible values:")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| {
            list.split(',')
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The strategies the built server offers (asks it with an invalid `--strategy`).
pub fn offered_strategies(echo_server: &Path) -> Result<Vec<String>> {
    let output = std::process::Command::new(echo_server)
        .args(["--strategy", "?"])
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", echo_server.display()))?;
    let offered = possible_values(&String::from_utf8_lossy(&output.stderr));
    if offered.is_empty() {
        bail!(
            "{} --strategy ? did not list its strategies",
            echo_server.display()
        );
    }
    Ok(offered)
}

/// The command line that starts `server` for one trial.
pub fn server_launch(
    server: &ServerEntry,
    binaries: &Binaries,
    stats_json: Option<&Path>,
    extra_args: &[String],
) -> Result<ServerLaunch> {
    match &server.command {
        Some(command) => ServerLaunch::external(&server.name, command),
        None => {
            let mut args: Vec<String> =
                ["--addr", "127.0.0.1:0", "--strategy", server.name.as_str()]
                    .map(String::from)
                    .to_vec();
            if let Some(path) = stats_json {
                args.push("--stats-json".into());
                args.push(path.display().to_string());
            }
            args.extend(extra_args.iter().cloned());
            Ok(ServerLaunch {
                name: server.name.clone(),
                program: binaries.echo_server.clone(),
                args,
                readiness: Readiness::ListenLine,
            })
        }
    }
}

/// loadgen's arguments for one trial.
pub fn loadgen_args(
    plan: &BenchPlan,
    cell: &Cell,
    target: std::net::SocketAddr,
    json: &Path,
    threads: Option<usize>,
) -> Vec<String> {
    let mut args = vec![
        "--target".to_string(),
        target.to_string(),
        "--connections".into(),
        cell.connections.to_string(),
        "--size".into(),
        cell.size_bytes.to_string(),
        "--duration".into(),
        format!("{}ms", plan.duration_ms),
        "--warmup".into(),
        format!("{}ms", plan.warmup_ms),
        "--json".into(),
        json.display().to_string(),
        "--quiet".into(),
    ];
    if let Some(threads) = threads {
        args.extend(["--threads".into(), threads.to_string()]);
    }
    if let Some(depth) = plan.depth {
        args.extend(["--depth".into(), depth.to_string()]);
    }
    if let Some(rate) = plan.rate_per_s {
        args.extend(["--rate".into(), rate.to_string()]);
    }
    args
}

/// Where processes run: (server CPUs, loadgen CPUs), or unpinned.
#[derive(Debug, Clone, Default)]
pub struct Pinning {
    pub server: Option<Vec<usize>>,
    pub loadgen: Option<Vec<usize>>,
}

impl Pinning {
    /// Separate halves of the allowed CPUs when `pin` and there are two or more.
    pub fn new(pin: bool) -> Self {
        match pin
            .then(|| shell::split_cpus(&shell::allowed_cpus()))
            .flatten()
        {
            Some((server, loadgen)) => Self {
                server: Some(server),
                loadgen: Some(loadgen),
            },
            None => Self::default(),
        }
    }
}

/// Progress output: one indicatif bar on a terminal, plain lines otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar over `total` steps when stderr is a terminal.
    pub fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg} (about {eta} left)")
            {
                bar.set_style(style);
            }
            bar
        });
        Self { bar }
    }

    /// Says what runs now.
    pub fn start(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// A finished step with its result line.
    pub fn finish_step(&self, line: String) {
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                bar.inc(1);
            }
            None => eprintln!("{line}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Paths of one trial's files, relative to the run directory.
struct TrialPaths {
    loadgen_json: String,
    loadgen_log: String,
    server_log: String,
    server_stats_json: Option<String>,
}

fn trial_paths(order: usize, cell: &Cell, trial: u32, builtin: bool) -> TrialPaths {
    let stem = format!("trials/{order:03}-{}-t{trial}", cell.id());
    TrialPaths {
        loadgen_json: format!("{stem}.loadgen.json"),
        loadgen_log: format!("{stem}.loadgen.log"),
        server_log: format!("{stem}.server.log"),
        server_stats_json: builtin.then(|| format!("{stem}.server.json")),
    }
}

/// Shared state of one bench run, for running trials.
pub struct TrialRunner<'a> {
    pub plan: &'a BenchPlan,
    pub binaries: &'a Binaries,
    pub run_dir: &'a Path,
    pub pinning: &'a Pinning,
}

impl TrialRunner<'_> {
    /// Runs one trial; failures of the measured processes are recorded in the record, only an
    /// interrupt or an I/O error in xtask itself is an `Err`.
    pub fn run_trial(
        &self,
        order: usize,
        cell: &Cell,
        trial: u32,
        server: &ServerEntry,
    ) -> Result<TrialRecord> {
        let paths = trial_paths(order, cell, trial, server.command.is_none());
        let at = |relative: &str| self.run_dir.join(relative);
        let mut record = TrialRecord {
            order,
            cell: cell.clone(),
            trial,
            loadgen_json: paths.loadgen_json.clone(),
            loadgen_log: paths.loadgen_log.clone(),
            server_log: paths.server_log.clone(),
            server_stats_json: paths.server_stats_json.clone(),
            loadgen_exit_code: None,
            figures: None,
            server_cpu_s: None,
            server_cpu_per_message_us: None,
            server_peak_rss_kib: None,
            server_workers: None,
            failure: None,
        };
        let stats_path = paths.server_stats_json.as_deref().map(at);
        let launch = server_launch(
            server,
            self.binaries,
            stats_path.as_deref(),
            &self.plan.server_args,
        )?;
        let mut running = match shell::start_server(
            &launch,
            self.pinning.server.as_deref(),
            Some(&at(&paths.server_log)),
            Duration::from_millis(self.plan.ready_timeout_ms),
        ) {
            Ok(running) => running,
            Err(error) if interrupt::caused(&error) => return Err(error),
            Err(error) => {
                record.failure = Some(format!("{error:#}"));
                return Ok(record);
            }
        };
        let pid = running.guard.pid();
        let warmup = Duration::from_millis(self.plan.warmup_ms);
        let cpu_at_warmup_end = std::thread::spawn(move || {
            std::thread::sleep(warmup);
            shell::group_cpu_seconds(pid).ok()
        });
        let args = loadgen_args(
            self.plan,
            cell,
            running.addr,
            &at(&paths.loadgen_json),
            self.pinning.loadgen.as_ref().map(Vec::len),
        );
        let timeout = Duration::from_millis(self.plan.warmup_ms + self.plan.duration_ms)
            + Duration::from_secs(30);
        let outcome = shell::run_loadgen(
            &self.binaries.loadgen,
            &args,
            self.pinning.loadgen.as_deref(),
            &at(&paths.loadgen_log),
            timeout,
        )?;
        let cpu_end = shell::group_cpu_seconds(pid).ok();
        record.server_peak_rss_kib = shell::group_peak_rss_kib(pid).ok();
        let (status, killed) = running.guard.stop()?;
        if killed {
            eprintln!(
                "warning: {} did not exit within 5s of SIGTERM; killed",
                running.name
            );
        } else if server.command.is_none() && !status.success() {
            eprintln!(
                "warning: {} exited with {status} after SIGTERM",
                running.name
            );
        }
        record.server_workers = stats_path.as_deref().and_then(server_workers);
        record.loadgen_exit_code = outcome.status.and_then(|status| status.code());
        let report = at(&paths.loadgen_json);
        if outcome.timed_out {
            record.failure = Some(format!(
                "loadgen did not finish within {}; killed (log: {})",
                humantime::format_duration(timeout),
                paths.loadgen_log
            ));
        } else if !report.exists() {
            record.failure = Some(format!(
                "loadgen exited with {} and wrote no report (log: {})",
                outcome
                    .status
                    .map_or("no status".to_string(), |s| s.to_string()),
                paths.loadgen_log
            ));
        } else {
            match read_report(&report).and_then(|json| ReportFigures::from_json(&json)) {
                Ok(figures) => {
                    if let (Ok(Some(start)), Some(end)) = (cpu_at_warmup_end.join(), cpu_end)
                        && figures.messages_verified > 0
                    {
                        record.server_cpu_s = Some(end - start);
                        record.server_cpu_per_message_us =
                            Some((end - start) * 1e6 / figures.messages_verified as f64);
                    }
                    record.figures = Some(figures);
                }
                Err(error) => record.failure = Some(format!("{error:#}")),
            }
        }
        Ok(record)
    }
}

/// The `workers` a built-in server reported in its `--stats-json` file, if it wrote one.
pub fn server_workers(stats_json: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(stats_json).ok()?;
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()?
        .get("workers")?
        .as_u64()
}

/// One line per finished trial.
pub fn trial_line(step: usize, total: usize, record: &TrialRecord) -> String {
    let label = format!(
        "[{:>width$}/{total}] {} c={} {}B t{}",
        step,
        record.cell.server,
        record.cell.connections,
        record.cell.size_bytes,
        record.trial,
        width = total.to_string().len()
    );
    match (&record.figures, &record.failure) {
        (Some(figures), _) => format!(
            "{label}: {} msg/s, p99 {} µs, errors {}{}",
            crate::summary::format_count(figures.messages_per_s),
            crate::summary::format_us(figures.p99_us),
            figures.errors_total,
            match figures.valid {
                Some(false) => format!(" (invalid: {})", figures.invalid_reasons.join("; ")),
                _ => String::new(),
            }
        ),
        (None, Some(failure)) => format!("{label}: FAILED: {failure}"),
        (None, None) => format!("{label}: no result"),
    }
}

/// The file `trials.json`: every trial record so far, rewritten after each trial.
#[derive(Debug, Serialize, Deserialize)]
pub struct TrialsFile {
    pub schema: String,
    pub seed: u64,
    pub cells: Vec<Cell>,
    pub trials: Vec<TrialRecord>,
}

/// Schema id of `trials.json`.
pub const TRIALS_SCHEMA: &str = "echolab.xtask.trials/1";

/// Writes `summary.md`, `summary.csv` and `summary.json` into the run directory.
pub fn write_summaries(run_dir: &Path, summaries: &[CellSummary]) -> Result<()> {
    let mut markdown = Vec::new();
    MarkdownTable.export(summaries, &mut markdown)?;
    std::fs::write(run_dir.join("summary.md"), markdown)?;
    let mut csv = Vec::new();
    CsvTable.export(summaries, &mut csv)?;
    std::fs::write(run_dir.join("summary.csv"), csv)?;
    write_json(&run_dir.join("summary.json"), &summaries)
}

/// Checks that every server starts and listens (and stops it again) before any trial runs,
/// so a broken server command fails the run at once with a clear message.
pub fn preflight(
    plan: &BenchPlan,
    binaries: &Binaries,
    run_dir: &Path,
    pinning: &Pinning,
) -> Result<()> {
    for server in &plan.servers {
        let launch = server_launch(server, binaries, None, &plan.server_args)?;
        let log = run_dir.join(format!("preflight-{}.server.log", server.name));
        let mut running = shell::start_server(
            &launch,
            pinning.server.as_deref(),
            Some(&log),
            Duration::from_millis(plan.ready_timeout_ms),
        )
        .with_context(|| format!("server {} failed its start check", server.name))?;
        running.guard.stop()?;
    }
    Ok(())
}

/// With `--strategies all`: a built-in strategy that cannot start here (e.g. `uring` where the
/// kernel or a sandbox forbids io_uring) is left out with a warning instead of failing the run.
pub fn drop_unstartable_strategies(
    plan: &mut BenchPlan,
    binaries: &Binaries,
    run_dir: &Path,
) -> Result<()> {
    let mut kept = Vec::new();
    for server in plan.servers.drain(..) {
        if server.command.is_some() {
            kept.push(server);
            continue;
        }
        let launch = server_launch(&server, binaries, None, &plan.server_args)?;
        let log = run_dir.join(format!("preflight-{}.server.log", server.name));
        match shell::start_server(
            &launch,
            None,
            Some(&log),
            Duration::from_millis(plan.ready_timeout_ms),
        ) {
            Ok(mut running) => {
                running.guard.stop()?;
                kept.push(server);
            }
            Err(error) if interrupt::caused(&error) => return Err(error),
            Err(error) => eprintln!(
                "warning: leaving out strategy {}: it does not start here: {error:#}",
                server.name
            ),
        }
    }
    plan.servers = kept;
    if plan.servers.is_empty() {
        bail!("no strategy starts on this machine");
    }
    Ok(())
}

/// Resolves `--strategies all` against what the built server offers, and checks that every
/// requested strategy is offered.
pub fn resolve_strategies(plan: &mut BenchPlan, binaries: &Binaries) -> Result<()> {
    if !plan.all_strategies {
        if plan.servers.iter().any(|s| s.command.is_none())
            && let Ok(offered) = offered_strategies(&binaries.echo_server)
        {
            for server in plan.servers.iter().filter(|s| s.command.is_none()) {
                if !offered.contains(&server.name) {
                    return Err(input_error(format!(
                        "this echo-server has no strategy {:?} yet; it offers: {}",
                        server.name,
                        offered.join(", ")
                    )));
                }
            }
        }
        return Ok(());
    }
    let offered = offered_strategies(&binaries.echo_server)?;
    let externals: Vec<ServerEntry> = plan
        .servers
        .drain(..)
        .filter(|s| s.command.is_some())
        .collect();
    plan.servers = offered
        .into_iter()
        .map(|name| ServerEntry {
            name,
            command: None,
        })
        .chain(externals)
        .collect();
    Ok(())
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
    let summaries = run_plan(&plan, &binaries, &run_dir, &root)?;
    let mut table = Vec::new();
    TerminalTable.export(&summaries, &mut table)?;
    println!();
    print!("{}", String::from_utf8_lossy(&table));
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

/// Runs a validated plan into `run_dir` and returns the per-cell summaries.
pub fn run_plan(
    plan: &BenchPlan,
    binaries: &Binaries,
    run_dir: &Path,
    root: &Path,
) -> Result<Vec<CellSummary>> {
    let mut manifest = Manifest::collect("bench", serde_json::to_value(plan)?, root);
    let version_of = |binary: &PathBuf| {
        shell::command_output(&binary.display().to_string(), &["--version"], root)
    };
    manifest.versions.echo_server = version_of(&binaries.echo_server);
    manifest.versions.loadgen = version_of(&binaries.loadgen);
    let pinning = Pinning::new(plan.pin);
    manifest.server_cpus = pinning.server.clone();
    manifest.loadgen_cpus = pinning.loadgen.clone();
    manifest.write(run_dir)?;
    std::fs::create_dir_all(run_dir.join("trials"))?;

    let cells = cells(plan);
    let order = schedule(cells.len(), plan.trials, plan.seed);
    let per_trial = Duration::from_millis(plan.warmup_ms + plan.duration_ms);
    eprintln!(
        "bench: {} cells × {} trials = {} runs of {} + {} warm-up; order seed {} (--seed {} repeats it); pinning: {}",
        cells.len(),
        plan.trials,
        order.len(),
        humantime::format_duration(Duration::from_millis(plan.duration_ms)),
        humantime::format_duration(Duration::from_millis(plan.warmup_ms)),
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
            (per_trial.as_secs_f64() * order.len() as f64 * 1.1).ceil() as u64
        ))
    );
    preflight(plan, binaries, run_dir, &pinning)?;

    let runner = TrialRunner {
        plan,
        binaries,
        run_dir,
        pinning: &pinning,
    };
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
        progress.start(format!(
            "{} c={} {}B trial {}",
            cell.server, cell.connections, cell.size_bytes, trial
        ));
        let record = runner.run_trial(step, cell, trial, server)?;
        progress.finish_step(trial_line(step + 1, order.len(), &record));
        records.push(record);
        write_json(
            &run_dir.join("trials.json"),
            &TrialsFile {
                schema: TRIALS_SCHEMA.into(),
                seed: plan.seed,
                cells: cells.clone(),
                trials: records.clone(),
            },
        )?;
    }
    drop(progress);
    eprintln!(
        "{} trials in {}",
        records.len(),
        humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
    );
    let summaries = summarize(&cells, &records);
    write_summaries(run_dir, &summaries)?;
    let trials_file = TrialsFile {
        schema: TRIALS_SCHEMA.into(),
        seed: plan.seed,
        cells,
        trials: records,
    };
    if let Err(error) = crate::report::draw_bench(run_dir, &trials_file, &summaries) {
        eprintln!("warning: plots not drawn: {error:#}");
    }
    Ok(summaries)
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn default_plan_is_issue_2_matrix() {
        let plan = plan_from_args(&bench_args(&[])).expect("valid");
        let names: Vec<&str> = plan.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["iterative", "thread", "pool"]);
        assert_eq!(plan.connections, [1, 16, 128]);
        assert_eq!(plan.sizes_bytes, [64]);
        // Five trials: the fewest whose interval of the median has ≥ 90% coverage.
        assert_eq!(plan.trials, 5);
        assert_eq!(cells(&plan).len(), 9);
        // About a minute: 45 trials of 1.3 s.
        let total_ms = (plan.duration_ms + plan.warmup_ms) * 45;
        assert!((40_000..=75_000).contains(&total_ms), "{total_ms}");
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
    fn strategies_are_read_from_clap_errors() {
        let error = "error: invalid value '?' for '--strategy <STRATEGY>'\n  [possible values: iterative, thread, pool, event-loop]\n";
        assert_eq!(
            possible_values(error),
            ["iterative", "thread", "pool", "event-loop"]
        );
        assert!(possible_values("no list here").is_empty());
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
    }
}
