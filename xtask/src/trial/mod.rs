//! *Measure*: one trial, the unit every measuring command is built from.
//!
//! A trial starts a fresh server on port 0 (pinned to its own cores, see [`pinning`]), runs
//! loadgen against it (pinned to the others) with [`loadgen_args`], samples the server's CPU
//! time (from the end of the warm-up to the end of loadgen) and peak RSS from `/proc`, stops the
//! server and returns a [`TrialRecord`]. `bench` runs many in a shuffled order, `capacity` one
//! per step at a set rate, `regress` two per pair. [`server`] holds what a trial knows about
//! servers: built-in strategies, external commands, their launch lines and start checks.
//! [`steered`] is the other seam: one server and one loadgen for a whole capacity search, the
//! loadgen steered step by step through its standard input.
//!
//! Layer: on `shell` (processes, `/proc`) and `record` (what a trial writes); no statistics and
//! no presentation here.

pub mod pinning;
pub mod server;
pub mod steered;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;

pub use self::pinning::Pinning;
use self::server::server_launch;
use crate::interrupt;
use crate::record::loadgen_report::{ReportFigures, read_report};
use crate::record::plan::{BenchPlan, ServerEntry};
use crate::record::trial::{Cell, TrialFailure, TrialRecord};
use crate::shell::{self, Binaries, LoadgenOutcome, RunningServer, ServerLaunch};

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
        let mut record = empty_record(order, cell, trial, server.is_builtin());
        let stats_path = record.server_stats_json.as_deref().map(|p| self.at(p));
        let launch = server_launch(
            server,
            self.binaries,
            stats_path.as_deref(),
            &self.plan.server_args,
        )?;
        let mut running = match self.start_server(&launch, &record) {
            Ok(running) => running,
            Err(error) if interrupt::caused(&error) => return Err(error),
            Err(error) => {
                record.failure = Some(TrialFailure::ServerStart(format!("{error:#}")));
                return Ok(record);
            }
        };
        let pid = running.guard.pid();
        let cpu_at_warmup_end = sample_cpu_after(pid, self.plan.warmup());
        let timeout = self.plan.warmup() + self.plan.duration() + LOADGEN_GRACE;
        let outcome = self.run_loadgen(cell, &record, running.addr, timeout)?;
        let cpu_end = shell::group_cpu_seconds(pid).ok();
        record.server_peak_rss_kib = shell::group_peak_rss_kib(pid).ok();
        stop_server(&mut running, server)?;
        record.server_workers = stats_path.as_deref().and_then(server_workers);
        record.loadgen_exit_code = outcome.status.and_then(|status| status.code());
        match self.read_figures(&record, &outcome, timeout) {
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
            Err(failure) => record.failure = Some(failure),
        }
        Ok(record)
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

    /// Runs loadgen against `target` (its output into the trial's loadgen log).
    fn run_loadgen(
        &self,
        cell: &Cell,
        record: &TrialRecord,
        target: SocketAddr,
        timeout: Duration,
    ) -> Result<LoadgenOutcome> {
        let args = loadgen_args(
            self.plan,
            cell,
            target,
            &self.at(&record.loadgen_json),
            self.pinning.loadgen.as_ref().map(Vec::len),
        );
        shell::run_loadgen(
            &self.binaries.loadgen,
            &args,
            self.pinning.loadgen.as_deref(),
            &self.at(&record.loadgen_log),
            timeout,
        )
    }

    /// The figures of the trial's loadgen report, or why there are none.
    fn read_figures(
        &self,
        record: &TrialRecord,
        outcome: &LoadgenOutcome,
        timeout: Duration,
    ) -> Result<ReportFigures, TrialFailure> {
        let report = self.at(&record.loadgen_json);
        if outcome.timed_out {
            return Err(TrialFailure::LoadgenTimeout {
                timeout,
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
            .and_then(|json| ReportFigures::from_json(&json))
            .map_err(|error| TrialFailure::ReportUnreadable(format!("{error:#}")))
    }
}

/// The CPU seconds of process group `pid`, sampled `after` from now on a thread of its own.
fn sample_cpu_after(pid: u32, after: Duration) -> JoinHandle<Option<f64>> {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        shell::group_cpu_seconds(pid).ok()
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
