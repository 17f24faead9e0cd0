//! `trials.json` (`echolab.xtask.trials/1`): the cells of a run and one [`TrialRecord`] per
//! trial, rewritten after every trial so a crash loses at most the trial that was running.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::loadgen_report::ReportFigures;
use super::{RunFile, same_words};

/// One cell of the bench matrix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cell {
    /// A strategy name (`pool`) or an external server's name.
    pub server: String,
    pub connections: u32,
    pub size_bytes: u32,
    /// The named workload (`pingpong`, `keepalive`, …; see `workload`) the cell belongs to;
    /// absent for cells from the cell flags alone and in files from before workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

impl Cell {
    /// A file-name-safe id, e.g. `pool-c16-s64`, or `pool-churn-c16-s64` in a workload.
    pub fn id(&self) -> String {
        let safe = |text: &str| -> String {
            text.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let workload = self
            .workload
            .as_deref()
            .map_or(String::new(), |w| format!("-{}", safe(w)));
        format!(
            "{}{workload}-c{}-s{}",
            safe(&self.server),
            self.connections,
            self.size_bytes
        )
    }

    /// How a cell is named in progress lines: `pool c=16 64B`, `pool churn c=16 64B`.
    pub fn label(&self) -> String {
        match &self.workload {
            Some(workload) => format!(
                "{} {workload} c={} {}B",
                self.server, self.connections, self.size_bytes
            ),
            None => format!(
                "{} c={} {}B",
                self.server, self.connections, self.size_bytes
            ),
        }
    }

    /// The cells a verdict compares with each other: same workload, connections and size.
    pub fn group(&self) -> (Option<&str>, u32, u32) {
        (self.workload.as_deref(), self.connections, self.size_bytes)
    }
}

/// Why a trial produced no figures. Written to `trials.json` as its sentence (the `failure`
/// key), and read back into the variant whose sentence it is (see [`TrialFailure::from`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum TrialFailure {
    /// The server did not start or never became ready (the whole error chain).
    ServerStart(String),
    /// loadgen outlived its window (plus a grace period) and was killed.
    LoadgenTimeout { timeout: Duration, log: String },
    /// loadgen ended without writing its report.
    LoadgenNoReport { status: String, log: String },
    /// loadgen's report could not be read or lacks a required key.
    ReportUnreadable(String),
    /// Read back from a file: free text (a start error, a report that did not parse) keeps its
    /// words but not its kind.
    Other(String),
}

impl TrialFailure {
    /// True when the instrument failed (loadgen hung, crashed or wrote a report xtask cannot
    /// read): the trial then says nothing about the server.
    pub fn is_instrument(&self) -> bool {
        matches!(
            self,
            Self::LoadgenTimeout { .. } | Self::LoadgenNoReport { .. } | Self::ReportUnreadable(_)
        )
    }
}

impl std::fmt::Display for TrialFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ServerStart(text) | Self::ReportUnreadable(text) | Self::Other(text) => {
                f.write_str(text)
            }
            Self::LoadgenTimeout { timeout, log } => write!(
                f,
                "loadgen did not finish within {}; killed (log: {log})",
                humantime::format_duration(*timeout)
            ),
            Self::LoadgenNoReport { status, log } => {
                write!(
                    f,
                    "loadgen exited with {status} and wrote no report (log: {log})"
                )
            }
        }
    }
}

impl From<String> for TrialFailure {
    /// The variant whose sentence `text` is, or [`TrialFailure::Other`].
    fn from(text: String) -> Self {
        let timeout = || {
            let rest = text.strip_prefix("loadgen did not finish within ")?;
            let (within, rest) = rest.split_once("; killed (log: ")?;
            let log = rest.strip_suffix(')')?.to_string();
            let timeout = humantime::parse_duration(within).ok()?;
            same_words(Self::LoadgenTimeout { timeout, log }, &text)
        };
        let no_report = || {
            let rest = text.strip_prefix("loadgen exited with ")?;
            let (status, rest) = rest.split_once(" and wrote no report (log: ")?;
            let log = rest.strip_suffix(')')?.to_string();
            let status = status.to_string();
            same_words(Self::LoadgenNoReport { status, log }, &text)
        };
        timeout()
            .or_else(no_report)
            .unwrap_or_else(|| Self::Other(text.clone()))
    }
}

impl From<TrialFailure> for String {
    fn from(failure: TrialFailure) -> Self {
        failure.to_string()
    }
}

/// Everything recorded about one trial (one line of `trials.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Position in the run's (shuffled) order, from 0.
    pub order: usize,
    pub cell: Cell,
    /// Trial number within the cell, from 0.
    pub trial: u32,
    /// Paths relative to the run directory.
    pub loadgen_json: String,
    pub loadgen_log: String,
    pub server_log: String,
    pub server_stats_json: Option<String>,
    pub loadgen_exit_code: Option<i32>,
    pub figures: Option<ReportFigures>,
    /// Server CPU (user+system, every thread) between the samples taken at the measured
    /// window's start and end, seconds.
    pub server_cpu_s: Option<f64>,
    /// The server's CPU share of that window over the messages per second loadgen measured in
    /// it: CPU µs per echoed message.
    pub server_cpu_per_message_us: Option<f64>,
    /// Server CPU over wall time in the window (1.0 = one CPU busy throughout).
    #[serde(default)]
    pub server_cpu_share: Option<f64>,
    /// (Server CPU + time its threads waited for a CPU) over wall time in the window: how much
    /// of the window the server had work (1.0 for one thread that never went idle).
    #[serde(default)]
    pub server_runnable_share: Option<f64>,
    /// Server peak RSS (`VmHWM`) at the end of the trial, KiB.
    pub server_peak_rss_kib: Option<u64>,
    /// Worker threads / loops the server reported (`workers` of its `--stats-json`); built-in
    /// strategies only. Shows when pinning shrank a default pool to one worker.
    #[serde(default)]
    pub server_workers: Option<u64>,
    /// Why the trial produced no figures (server failed to start, loadgen crashed, …).
    pub failure: Option<TrialFailure>,
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

/// The file name inside a run directory.
pub const TRIALS_FILE: &str = "trials.json";

impl TrialsFile {
    /// A file of this schema.
    pub fn new(seed: u64, cells: Vec<Cell>, trials: Vec<TrialRecord>) -> Self {
        Self {
            schema: TRIALS_SCHEMA.into(),
            seed,
            cells,
            trials,
        }
    }
}

impl RunFile for TrialsFile {
    const FILE: &'static str = TRIALS_FILE;
    const SCHEMA: &'static str = TRIALS_SCHEMA;

    fn schema(&self) -> &str {
        &self.schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_their_words_and_their_kind() {
        let failures = [
            TrialFailure::ServerStart(
                "server pool exited (exit status: 1) before it was ready".into(),
            ),
            TrialFailure::LoadgenTimeout {
                timeout: Duration::from_millis(31_300),
                log: "trials/000-pool-c1-s64-t0.loadgen.log".into(),
            },
            TrialFailure::LoadgenNoReport {
                status: "signal: 9 (SIGKILL)".into(),
                log: "trials/001-x-c1-s64-t0.loadgen.log".into(),
            },
            TrialFailure::ReportUnreadable(
                "loadgen report has no number at /latency_us/p99".into(),
            ),
        ];
        let texts: Vec<String> = failures.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts[1],
            "loadgen did not finish within 31s 300ms; killed (log: trials/000-pool-c1-s64-t0.loadgen.log)"
        );
        assert_eq!(
            texts[2],
            "loadgen exited with signal: 9 (SIGKILL) and wrote no report (log: trials/001-x-c1-s64-t0.loadgen.log)"
        );
        for (failure, text) in failures.iter().zip(&texts) {
            // The JSON is the sentence itself, and it reads back to the same words.
            let json = serde_json::to_value(failure).expect("serializes");
            assert_eq!(json, serde_json::Value::String(text.clone()));
            let back: TrialFailure = serde_json::from_value(json).expect("parses");
            assert_eq!(back.to_string(), *text);
        }
        // The loadgen's own failures are recognised again; free text keeps only its words.
        assert_eq!(TrialFailure::from(texts[1].clone()), failures[1]);
        assert_eq!(TrialFailure::from(texts[2].clone()), failures[2]);
        assert_eq!(
            TrialFailure::from(texts[0].clone()),
            TrialFailure::Other(texts[0].clone())
        );
        assert!(failures[1].is_instrument() && failures[2].is_instrument());
        assert!(failures[3].is_instrument() && !failures[0].is_instrument());
    }
}
