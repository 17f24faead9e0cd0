//! *Measure*: one trial, the unit every measuring command is built from.
//!
//! A trial starts a fresh server on port 0 (pinned to its own cores, see [`pinning`]), runs
//! loadgen against it (pinned to the others) with [`loadgen_args`] and a `--start-at` a moment
//! ahead, samples the server's CPU exactly when loadgen's measured window starts and ends (the
//! warm-up and the window are known from `--start-at`; thread CPU time from `schedstat`, in ns),
//! reads its peak RSS from `/proc`, stops the server and returns a [`TrialRecord`]. `bench` runs
//! many in a shuffled order, `capacity` one per step at a set rate, `regress` two at a time
//! ([`run_together`]: both sides of a pair in the same window). [`server`] holds what a trial
//! knows about servers: built-in strategies, external commands, their launch lines and start
//! checks. [`steered`] is the other seam: one server and one loadgen for a whole capacity
//! search, the loadgen steered step by step through its standard input.
//!
//! Layer: on `shell` (processes, `/proc`) and `record` (what a trial writes); no statistics and
//! no presentation here.

pub mod pinning;
pub mod server;
pub mod steered;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

pub use self::pinning::{KeepAwake, Pinning};
use self::server::server_launch;
use crate::interrupt;
use crate::record::loadgen_report::{ReportFigures, read_report};
use crate::record::plan::{BenchPlan, ServerEntry};
use crate::record::trial::{Cell, TrialFailure, TrialRecord};
use crate::shell::{
    self, Binaries, CpuSample, CpuWindow, LoadgenOutcome, RunningServer, ServerLaunch,
};

/// How long loadgen may outlive its warm-up and window before it is killed.
const LOADGEN_GRACE: Duration = Duration::from_secs(30);

/// loadgen's arguments for one trial.
pub fn loadgen_args(
    plan: &BenchPlan,
    cell: &Cell,
    target: SocketAddr,
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
    if let Some(workload) = plan.workload_of(cell) {
        args.extend(workload.loadgen_flags());
        return args;
    }
    if let Some(depth) = plan.depth {
        args.extend(["--depth".into(), depth.to_string()]);
    }
    if let Some(rate) = plan.rate_per_s {
        args.extend(["--rate".into(), rate.to_string()]);
    }
    args
}

/// The new record of a trial: its files (relative to the run directory) and nothing measured
/// yet. Files are `trials/NNN-<cell>-tK.{loadgen.json,loadgen.log,server.log,server.json}`.
fn empty_record(order: usize, cell: &Cell, trial: u32, builtin: bool) -> TrialRecord {
    let stem = format!("trials/{order:03}-{}-t{trial}", cell.id());
    TrialRecord {
        order,
        cell: cell.clone(),
        trial,
        loadgen_json: format!("{stem}.loadgen.json"),
        loadgen_log: format!("{stem}.loadgen.log"),
        server_log: format!("{stem}.server.log"),
        server_stats_json: builtin.then(|| format!("{stem}.server.json")),
        loadgen_exit_code: None,
        figures: None,
        server_cpu_s: None,
        server_cpu_per_message_us: None,
        server_cpu_share: None,
        server_runnable_share: None,
        server_peak_rss_kib: None,
        server_workers: None,
        failure: None,
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

/// What trials of one run share: the plan, the binaries, the run directory and the pinning.
pub struct TrialRunner<'a> {
    pub plan: &'a BenchPlan,
    pub binaries: &'a Binaries,
    pub run_dir: &'a Path,
    pub pinning: &'a Pinning,
}

/// One trial for [`run_together`]: who runs it, and what.
pub struct TrialSpec<'a> {
    pub runner: &'a TrialRunner<'a>,
    /// Position in the run's order (names its files).
    pub order: usize,
    pub cell: &'a Cell,
    pub trial: u32,
    pub server: &'a ServerEntry,
}

/// How long before loadgen's `--start-at` xtask launches it: time for the process to start.
const START_LEAD: Duration = Duration::from_millis(150);

/// A loadgen that began its run later than this after `--start-at` measured a window the CPU
/// samples missed (by up to that much): the trial keeps its figures but gets no CPU figures.
const LATEST_START: Duration = Duration::from_millis(50);

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
        let spec = TrialSpec {
            runner: self,
            order,
            cell,
            trial,
            server,
        };
        let mut records = run_together(&[spec])?;
        records.pop().context("a trial without a record")
    }

    /// A path relative to the run directory, made absolute.
    fn at(&self, relative: &str) -> PathBuf {
        self.run_dir.join(relative)
    }

    /// Starts the trial's server (its stderr into the trial's server log) and waits until it
    /// is ready.
    fn start_server(&self, launch: &ServerLaunch, record: &TrialRecord) -> Result<RunningServer> {
        shell::start_server(
            launch,
            self.pinning.server.as_deref(),
            Some(&self.at(&record.server_log)),
            self.plan.ready_timeout(),
        )
    }

    /// How long loadgen may run before it is killed.
    fn loadgen_timeout(&self) -> Duration {
        START_LEAD + self.plan.warmup() + self.plan.duration() + LOADGEN_GRACE
    }

    /// Runs loadgen against `target` from `start_at` on (its output into the trial's loadgen
    /// log).
    fn run_loadgen(
        &self,
        cell: &Cell,
        record: &TrialRecord,
        target: SocketAddr,
        start_at: SystemTime,
    ) -> Result<LoadgenOutcome> {
        let mut args = loadgen_args(
            self.plan,
            cell,
            target,
            &self.at(&record.loadgen_json),
            self.pinning.loadgen.as_ref().map(Vec::len),
        );
        args.extend([
            "--start-at".into(),
            format!("{:.6}", unix_seconds(start_at)),
        ]);
        shell::run_loadgen(
            &self.binaries.loadgen,
            &args,
            self.pinning.loadgen.as_deref(),
            &self.at(&record.loadgen_log),
            self.loadgen_timeout(),
        )
    }

    /// The figures of the trial's loadgen report and when loadgen began its run, or why there
    /// are no figures.
    fn read_figures(
        &self,
        record: &TrialRecord,
        outcome: &LoadgenOutcome,
    ) -> Result<(ReportFigures, Option<f64>), TrialFailure> {
        let report = self.at(&record.loadgen_json);
        if outcome.timed_out {
            return Err(TrialFailure::LoadgenTimeout {
                timeout: self.loadgen_timeout(),
                log: record.loadgen_log.clone(),
            });
        }
        if !report.exists() {
            return Err(TrialFailure::LoadgenNoReport {
                status: outcome
                    .status
                    .map_or("no status".to_string(), |s| s.to_string()),
                log: record.loadgen_log.clone(),
            });
        }
        read_report(&report)
            .and_then(|json| {
                let started = json
                    .pointer("/env/start_unix_s")
                    .and_then(serde_json::Value::as_f64);
                Ok((ReportFigures::from_json(&json)?, started))
            })
            .map_err(|error| TrialFailure::ReportUnreadable(format!("{error:#}")))
    }
}

/// Seconds since the UNIX epoch.
fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A trial whose server is up: its record so far, its server and the server's stats file.
struct Started<'a> {
    spec: &'a TrialSpec<'a>,
    record: TrialRecord,
    stats_path: Option<PathBuf>,
    running: Option<RunningServer>,
}

/// Runs the given trials at the same time: every server starts (pinned to its runner's server
/// CPUs), then every loadgen (pinned to the loadgen CPUs) with the same `--start-at`, so that
/// their warm-ups and measured windows coincide; each server's CPU is sampled when its window
/// starts and ends. One trial is the usual case; `regress` runs its pairs two at a time, so
/// that both sides share whatever the machine does meanwhile. Failures of the measured
/// processes are recorded in the records; only an interrupt or an I/O error in xtask itself is
/// an `Err`. The records come back in the order of `specs`.
pub fn run_together(specs: &[TrialSpec]) -> Result<Vec<TrialRecord>> {
    let mut started = Vec::with_capacity(specs.len());
    for spec in specs {
        started.push(start_trial(spec)?);
    }
    let start_at = SystemTime::now() + START_LEAD;
    let windows: Vec<Option<(u32, SystemTime, SystemTime)>> = started
        .iter()
        .map(|trial| {
            let plan = trial.spec.runner.plan;
            let window_start = start_at + plan.warmup();
            trial.running.as_ref().map(|running| {
                (
                    running.guard.pid(),
                    window_start,
                    window_start + plan.duration(),
                )
            })
        })
        .collect();
    let sampler = sample_cpu_windows(windows);
    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> = started
            .iter()
            .map(|trial| {
                trial.running.as_ref().map(|running| {
                    let addr = running.addr;
                    scope.spawn(move || {
                        trial.spec.runner.run_loadgen(
                            trial.spec.cell,
                            &trial.record,
                            addr,
                            start_at,
                        )
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .map(|handle| {
                        handle
                            .join()
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("the loadgen thread panicked")))
                    })
                    .transpose()
            })
            .collect::<Result<Vec<Option<LoadgenOutcome>>>>()
    })?;
    let cpu_windows = sampler.join().unwrap_or_default();
    let mut records = Vec::with_capacity(started.len());
    for (index, (trial, outcome)) in started.into_iter().zip(outcomes).enumerate() {
        let cpu = cpu_windows.get(index).copied().flatten();
        records.push(finish_trial(trial, outcome, cpu, start_at)?);
    }
    Ok(records)
}

/// Starts the server of `spec`; one that does not start is recorded as the trial's failure.
fn start_trial<'a>(spec: &'a TrialSpec<'a>) -> Result<Started<'a>> {
    let runner = spec.runner;
    let record = empty_record(spec.order, spec.cell, spec.trial, spec.server.is_builtin());
    let stats_path = record.server_stats_json.as_deref().map(|p| runner.at(p));
    let launch = server_launch(
        spec.server,
        runner.binaries,
        stats_path.as_deref(),
        &runner.plan.server_args,
    )?;
    let mut started = Started {
        spec,
        record,
        stats_path,
        running: None,
    };
    match runner.start_server(&launch, &started.record) {
        Ok(running) => started.running = Some(running),
        Err(error) if interrupt::caused(&error) => return Err(error),
        Err(error) => {
            started.record.failure = Some(TrialFailure::ServerStart(format!("{error:#}")));
        }
    }
    Ok(started)
}

/// Stops the trial's server and fills in what was measured: the loadgen's figures, and the
/// server's CPU in the window (when loadgen began on time), peak RSS and workers.
fn finish_trial(
    trial: Started,
    outcome: Option<LoadgenOutcome>,
    cpu: Option<CpuWindow>,
    start_at: SystemTime,
) -> Result<TrialRecord> {
    let Started {
        spec,
        mut record,
        stats_path,
        running,
    } = trial;
    let (Some(mut running), Some(outcome)) = (running, outcome) else {
        return Ok(record);
    };
    let pid = running.guard.pid();
    record.server_peak_rss_kib = shell::group_peak_rss_kib(pid).ok();
    stop_server(&mut running, spec.server)?;
    record.server_workers = stats_path.as_deref().and_then(server_workers);
    record.loadgen_exit_code = outcome.status.and_then(|status| status.code());
    match spec.runner.read_figures(&record, &outcome) {
        Ok((figures, started)) => {
            let on_time = started.is_some_and(|started| {
                (started - unix_seconds(start_at)).abs() <= LATEST_START.as_secs_f64()
            });
            if let Some(cpu) = cpu.filter(|_| on_time && figures.messages_per_s > 0.0) {
                record.server_cpu_s = Some(cpu.cpu_s);
                record.server_cpu_share = Some(cpu.cpu_share());
                record.server_runnable_share = Some(cpu.runnable_share());
                record.server_cpu_per_message_us =
                    Some(cpu.cpu_share() / figures.messages_per_s * 1e6);
            }
            record.figures = Some(figures);
        }
        Err(failure) => record.failure = Some(failure),
    }
    Ok(record)
}

/// Samples the CPU of each process group `(pgid, window start, window end)` at its window's
/// start and end, on a thread of its own; the handle yields one window per entry (`None` for
/// an entry without a server or a sample that failed).
fn sample_cpu_windows(
    windows: Vec<Option<(u32, SystemTime, SystemTime)>>,
) -> JoinHandle<Vec<Option<CpuWindow>>> {
    std::thread::spawn(move || {
        // Every instant to sample at, in time order: (when, entry, is it the end).
        let mut instants: Vec<(SystemTime, usize, bool)> = windows
            .iter()
            .enumerate()
            .filter_map(|(index, window)| {
                window.map(|(_, start, end)| [(start, index, false), (end, index, true)])
            })
            .flatten()
            .collect();
        instants.sort_by_key(|&(when, index, is_end)| (when, is_end, index));
        let mut starts = vec![None; windows.len()];
        let mut result = vec![None; windows.len()];
        for (when, index, is_end) in instants {
            if let Ok(wait) = when.duration_since(SystemTime::now()) {
                std::thread::sleep(wait);
            }
            let Some((pgid, _, _)) = windows[index] else {
                continue;
            };
            let sample = shell::group_cpu_sample(pgid).ok();
            if is_end {
                result[index] =
                    starts[index]
                        .zip(sample)
                        .and_then(|(start, end): (CpuSample, CpuSample)| {
                            CpuWindow::between(&start, &end)
                        });
            } else {
                starts[index] = sample;
            }
        }
        result
    })
}

/// Stops the trial's server; a server that needed SIGKILL, or a built-in one that exited badly
/// after SIGTERM, is warned about (its figures still stand).
fn stop_server(running: &mut RunningServer, server: &ServerEntry) -> Result<()> {
    let (status, killed) = running.guard.stop()?;
    if killed {
        eprintln!(
            "warning: {} did not exit within 5s of SIGTERM; killed",
            running.name
        );
    } else if server.is_builtin() && !status.success() {
        eprintln!(
            "warning: {} exited with {status} after SIGTERM",
            running.name
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_files_are_named_after_order_cell_and_trial() {
        let cell = Cell {
            server: "my server".into(),
            connections: 16,
            size_bytes: 64,
            workload: None,
        };
        let record = empty_record(7, &cell, 2, true);
        assert_eq!(
            record.loadgen_json,
            "trials/007-my_server-c16-s64-t2.loadgen.json"
        );
        assert_eq!(
            record.loadgen_log,
            "trials/007-my_server-c16-s64-t2.loadgen.log"
        );
        assert_eq!(
            record.server_log,
            "trials/007-my_server-c16-s64-t2.server.log"
        );
        assert_eq!(
            record.server_stats_json.as_deref(),
            Some("trials/007-my_server-c16-s64-t2.server.json")
        );
        assert_eq!(empty_record(7, &cell, 2, false).server_stats_json, None);
    }
}
