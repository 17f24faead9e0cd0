//! *Measure*, steered: one server and one loadgen for a whole capacity search.
//!
//! `capacity` decides each next rate from the last result, so it needs a loadgen it can steer.
//! loadgen's `--steps-from -` is that seam: it keeps one set of connections open, runs each step
//! (`RATE DURATION`, one line on its standard input) as the line comes, and prints each step's
//! result as one JSON line on its standard output as soon as the step's window has ended and its
//! last echoes are in; the end of its input ends the run, and its `--json` report then holds
//! every step. The loadgen stays a process of its own, pinned apart from the server like every
//! trial's, and could as well run on another host.
//!
//! [`SteeredRun::start`] starts the server (unless it is already running: `--target`) and the
//! loadgen; [`SteeredRun::step`] runs one step; [`SteeredRun::finish`] ends the input, waits for
//! the report, stops the server and says what it cost.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use loadgen::StepReport;

use super::pinning::Pinning;
use crate::interrupt;
use crate::shell::{self, ChildGuard, RunningServer, ServerLaunch};

/// How long a step may take beyond its settle and window: its last echoes may take up to
/// loadgen's `--timeout` (5 s), and the loadgen reports once they are in.
const STEP_GRACE: Duration = Duration::from_secs(15);

/// What a steered run needs.
pub struct SteeredSpec<'a> {
    /// The loadgen binary.
    pub loadgen: &'a Path,
    /// The server to start, or `None` when it already runs at `target`.
    pub server: Option<ServerLaunch>,
    /// `--target HOST:PORT` when no server is started.
    pub target: Option<String>,
    pub pinning: &'a Pinning,
    pub run_dir: &'a Path,
    pub connections: u32,
    pub size_bytes: u32,
    pub warmup: Duration,
    pub settle: Duration,
    /// The SLO text: loadgen judges its own lateness at the percentiles it bounds.
    pub slo: &'a str,
    /// loadgen `--timing`.
    pub timing: loadgen::TimingMode,
    pub ready_timeout: Duration,
}

/// Why a step brought no result.
#[derive(Debug)]
pub enum SteerError {
    /// The loadgen ended (its status) before the step's result came.
    Exited(String),
    /// No result within this time.
    NoAnswer(Duration),
    /// A line that is not a step result.
    Unreadable(String),
}

impl std::fmt::Display for SteerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(status) => write!(
                f,
                "loadgen exited ({status}) before the step's result came (log: loadgen.log)"
            ),
            Self::NoAnswer(after) => write!(
                f,
                "loadgen gave no result within {} (log: loadgen.log)",
                humantime::format_duration(*after)
            ),
            Self::Unreadable(error) => write!(f, "loadgen's step line is unreadable: {error}"),
        }
    }
}

impl std::error::Error for SteerError {}

/// What the run cost, once over.
#[derive(Debug)]
pub struct SteeredEnd {
    /// The loadgen's exit status (0 ok, 3 when a step missed loadgen's view of the SLO).
    pub loadgen_status: Option<ExitStatus>,
    /// The server's CPU time (s), when xtask started it.
    pub server_cpu_s: Option<f64>,
    /// The server's peak resident memory (KiB), when xtask started it.
    pub server_peak_rss_kib: Option<u64>,
}

/// One server and one loadgen, steered step by step.
pub struct SteeredRun {
    server: Option<RunningServer>,
    loadgen: ChildGuard,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    warmup: Duration,
    settle: Duration,
    steps: usize,
    pub report: PathBuf,
}

impl SteeredRun {
    /// Starts the server (pinned to its CPUs; stderr in `server.log`) and the loadgen (pinned
    /// to its own; stderr in `loadgen.log`, its report to `loadgen.json`).
    pub fn start(spec: &SteeredSpec) -> Result<SteeredRun> {
        let server = match &spec.server {
            Some(launch) => Some(shell::start_server(
                launch,
                spec.pinning.server.as_deref(),
                Some(&spec.run_dir.join("server.log")),
                spec.ready_timeout,
            )?),
            None => None,
        };
        let target = match (&server, &spec.target) {
            (Some(running), _) => running.addr.to_string(),
            (None, Some(target)) => target.clone(),
            (None, None) => anyhow::bail!("a steered run needs a server or a target"),
        };
        let report = spec.run_dir.join("loadgen.json");
        let log = spec.run_dir.join("loadgen.log");
        let mut args = vec![
            "--target".to_string(),
            target,
            "--connections".into(),
            spec.connections.to_string(),
            "--size".into(),
            spec.size_bytes.to_string(),
            "--warmup".into(),
            format!("{}ms", spec.warmup.as_millis()),
            "--step-settle".into(),
            format!("{}ms", spec.settle.as_millis()),
            "--steps-from".into(),
            "-".into(),
            "--slo".into(),
            spec.slo.to_string(),
            "--timing".into(),
            spec.timing.as_str().into(),
            "--max-errors".into(),
            u64::MAX.to_string(),
            "--json".into(),
            report.display().to_string(),
            "--quiet".into(),
        ];
        if let Some(cpus) = &spec.pinning.loadgen {
            args.extend(["--threads".into(), cpus.len().to_string()]);
        }
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(spec.loadgen);
        command
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file);
        if let Some(cpus) = &spec.pinning.loadgen {
            shell::pin_command(&mut command, cpus);
        }
        eprintln!("capacity: {}", shell::display_command(spec.loadgen, &args));
        let mut loadgen = ChildGuard::spawn(command, "loadgen", Duration::from_secs(5))?;
        let (stdin, stdout) = loadgen.take_stdio();
        let stdout = stdout.context("loadgen's standard output")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(SteeredRun {
            server,
            loadgen,
            stdin,
            lines,
            warmup: spec.warmup,
            settle: spec.settle,
            steps: 0,
            report,
        })
    }

    /// What the next step takes at most before its window ends: the warm-up for the first, the
    /// settle for every other, then `duration`.
    pub fn step_time(&self, duration: Duration) -> Duration {
        (if self.steps == 0 {
            self.warmup
        } else {
            self.settle
        }) + duration
    }

    /// Runs one step at `rate` for `duration` and waits for its result.
    pub fn step(&mut self, rate: u64, duration: Duration) -> Result<StepReport> {
        let limit = self.step_time(duration) + STEP_GRACE;
        let stdin = self.stdin.as_mut().context("loadgen's input is closed")?;
        let line = format!("{rate} {}ms\n", duration.as_millis());
        if stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .is_err()
        {
            let status = self.loadgen.try_status()?;
            return Err(SteerError::Exited(describe(status)).into());
        }
        self.steps += 1;
        let started = Instant::now();
        loop {
            interrupt::check()?;
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.trim_start().starts_with('{') => {
                    return serde_json::from_str(&line)
                        .map_err(|e| SteerError::Unreadable(format!("{e}: {line}")).into());
                }
                // Nothing else comes before the input ends; skip it if it does.
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() > limit => {
                    return Err(SteerError::NoAnswer(limit).into());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.loadgen.wait_timeout(Duration::from_secs(5))?;
                    return Err(SteerError::Exited(describe(status)).into());
                }
            }
        }
    }

    /// Ends the loadgen's input, waits for it to write its report, and stops the server.
    pub fn finish(mut self) -> Result<SteeredEnd> {
        drop(self.stdin.take());
        let loadgen_status = match self.loadgen.wait_timeout(STEP_GRACE)? {
            Some(status) => Some(status),
            None => {
                eprintln!("warning: loadgen did not end within 15 s of its input's end; stopped");
                Some(self.loadgen.stop()?.0)
            }
        };
        let (mut server_cpu_s, mut server_peak_rss_kib) = (None, None);
        if let Some(mut running) = self.server.take() {
            let pid = running.guard.pid();
            server_cpu_s = shell::group_cpu_seconds(pid).ok();
            server_peak_rss_kib = shell::group_peak_rss_kib(pid).ok();
            let (status, killed) = running.guard.stop()?;
            if killed {
                eprintln!(
                    "warning: {} did not exit within 5s of SIGTERM; killed",
                    running.name
                );
            } else if !status.success() {
                eprintln!(
                    "warning: {} exited with {status} after SIGTERM",
                    running.name
                );
            }
        }
        Ok(SteeredEnd {
            loadgen_status,
            server_cpu_s,
            server_peak_rss_kib,
        })
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    status.map_or("still running".to_string(), |s| s.to_string())
}
