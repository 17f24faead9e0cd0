//! `capacity.json` (`echolab.xtask.capacity/1`): the server, the SLO, the search limits, every
//! measured [`Step`] with its [`StepReason`]s, and the answer.

use serde::{Deserialize, Serialize};

use super::plan::ServerEntry;
use super::trial::TrialFailure;
use super::{RunFile, same_words};

/// Schema id of `capacity.json`.
pub const CAPACITY_SCHEMA: &str = "echolab.xtask.capacity/1";

/// The file name inside a run directory.
pub const CAPACITY_FILE: &str = "capacity.json";

/// The result of one step of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub target_per_s: u64,
    /// 1 for the first measurement of this rate, 2 for its retry (see `--retries`).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    pub achieved_per_s: f64,
    /// `latency_us` of the report (corrected latency): p50, p90, p99, p999, max …
    pub latency_us: serde_json::Value,
    /// `service_time_us` of the report, when the loadgen records it.
    pub service_time_us: Option<serde_json::Value>,
    pub errors: u64,
    pub valid: Option<bool>,
    pub pass: bool,
    /// Why it failed (empty when it passed).
    pub reasons: Vec<StepReason>,
    /// The loadgen report, relative to the run directory.
    pub report: Option<String>,
    /// True for the single re-measurement of the final passing rate (searches before steered
    /// steps; a steered search measures a rate again until its measurements agree, see
    /// `attempt`).
    #[serde(default)]
    pub confirm: bool,
    /// The step's index in the run's one loadgen report (`report`'s `steps[]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen_step: Option<usize>,
    /// The loadgen's loop lag p99 in the step (µs): its own timing error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_lag_p99_us: Option<u64>,
    /// The busiest loadgen thread's work fraction in the step (saturated above 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_fraction: Option<f64>,
    /// What the step counted as: `pass`, `fail` (the server missed the SLO) or `no vote` (the
    /// loadgen could not measure it honestly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_as: Option<String>,
    /// Steal time on the loadgen's CPUs while the step ran (ms, from `/proc/stat`): how long the
    /// hypervisor kept them from running. What makes a loop late while it has little work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen_steal_ms: Option<f64>,
}

fn first_attempt() -> u32 {
    1
}

impl Step {
    /// A step that produced no judgeable report, for `reason`.
    pub fn failed(target_per_s: u64, reason: StepReason) -> Self {
        Self {
            target_per_s,
            attempt: 1,
            achieved_per_s: 0.0,
            latency_us: serde_json::Value::Null,
            service_time_us: None,
            errors: 0,
            valid: None,
            pass: false,
            reasons: vec![reason],
            report: None,
            confirm: false,
            loadgen_step: None,
            loop_lag_p99_us: None,
            work_fraction: None,
            counted_as: None,
            loadgen_steal_ms: None,
        }
    }

    /// True when a failed step failed only because of the instrument (every reason is the
    /// loadgen's): it says nothing about the server except "at least this fast".
    pub fn instrument_limited(&self) -> bool {
        !self.pass && !self.reasons.is_empty() && self.reasons.iter().all(StepReason::is_instrument)
    }
}

/// Why a capacity step failed. Written to `capacity.json` as its sentence (an entry of
/// `reasons`), and read back into the variant whose sentence it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum StepReason {
    /// An SLO clause that did not hold: loadgen's own line for it (`SLO p99<=1ms NOT MET: …`).
    SloNotMet(String),
    /// The loadgen achieved less than 99% of the target rate (`ratio` of it).
    BelowTarget { achieved_per_s: f64, ratio: f64 },
    /// The loadgen said its own measurement is not valid, for these reasons.
    LoadgenInvalid(Vec<String>),
    /// Connections that verified no message in the window.
    Starved(u64),
    /// The loadgen used all its CPU: the rate was its limit, not the server's.
    LoadgenSaturated,
    /// The trial produced no report (see [`TrialFailure`]).
    TrialFailed(TrialFailure),
    /// The trial recorded no failure, yet its report is missing.
    NoReport,
    /// The report is not a loadgen report this xtask can judge.
    ReportMismatch { report: String, error: String },
}

impl StepReason {
    /// True when the reason is the instrument's (loadgen invalid, saturated or failed), not the
    /// server's.
    pub fn is_instrument(&self) -> bool {
        match self {
            Self::LoadgenInvalid(_) | Self::LoadgenSaturated => true,
            Self::TrialFailed(failure) => failure.is_instrument(),
            Self::SloNotMet(_)
            | Self::BelowTarget { .. }
            | Self::Starved(_)
            | Self::NoReport
            | Self::ReportMismatch { .. } => false,
        }
    }
}

const INVALID_PREFIX: &str = "loadgen marked the run invalid: ";
const MISMATCH_SEPARATOR: &str = " is not a loadgen report of this version: ";

impl std::fmt::Display for StepReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SloNotMet(line) => f.write_str(line),
            Self::BelowTarget {
                achieved_per_s,
                ratio,
            } => write!(
                f,
                "achieved {achieved_per_s:.0}/s is {:.1}% of the target",
                ratio * 100.0
            ),
            Self::LoadgenInvalid(reasons) => write!(f, "{INVALID_PREFIX}{}", reasons.join("; ")),
            Self::Starved(count) => write!(
                f,
                "{count} connections starved (the server serves fewer connections at once than \
                 it was given; for pool/rayon try --server-args '--workers N')"
            ),
            Self::LoadgenSaturated => f.write_str("loadgen saturated"),
            Self::TrialFailed(failure) => failure.fmt(f),
            Self::NoReport => f.write_str("no report"),
            Self::ReportMismatch { report, error } => {
                write!(f, "{report}{MISMATCH_SEPARATOR}{error}")
            }
        }
    }
}

impl From<String> for StepReason {
    /// The variant whose sentence `text` is; any other text is a trial's failure.
    fn from(text: String) -> Self {
        let below_target = || {
            let rest = text.strip_prefix("achieved ")?;
            let (achieved, rest) = rest.split_once("/s is ")?;
            let percent = rest.strip_suffix("% of the target")?;
            let candidate = Self::BelowTarget {
                achieved_per_s: achieved.parse().ok()?,
                ratio: percent.parse::<f64>().ok()? / 100.0,
            };
            same_words(candidate, &text)
        };
        let starved = || {
            let (count, _) = text.split_once(" connections starved (")?;
            same_words(Self::Starved(count.parse().ok()?), &text)
        };
        let mismatch = || {
            let (report, error) = text.split_once(MISMATCH_SEPARATOR)?;
            Some(Self::ReportMismatch {
                report: report.to_string(),
                error: error.to_string(),
            })
        };
        if text == "loadgen saturated" {
            Self::LoadgenSaturated
        } else if text == "no report" {
            Self::NoReport
        } else if let Some(reasons) = text.strip_prefix(INVALID_PREFIX) {
            Self::LoadgenInvalid(reasons.split("; ").map(String::from).collect())
        } else if text.starts_with("SLO ") && text.contains(" NOT MET") {
            Self::SloNotMet(text)
        } else {
            below_target()
                .or_else(starved)
                .or_else(mismatch)
                .unwrap_or_else(|| Self::TrialFailed(TrialFailure::from(text)))
        }
    }
}

impl From<StepReason> for String {
    fn from(reason: StepReason) -> Self {
        reason.to_string()
    }
}

/// One latency bound of the SLO, as `capacity.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyLimit {
    /// Key under `latency_us` in the loadgen report (`p99`, `p999`, `max` …).
    pub key: String,
    pub limit_us: f64,
}

/// The SLO as `capacity.json` records it (`text`, `latency`, `max_errors`; results/README.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloRecord {
    /// The text as given.
    pub text: String,
    pub latency: Vec<LatencyLimit>,
    pub max_errors: u64,
}

/// Limits of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchLimits {
    pub start_rate_per_s: u64,
    /// Lowest rate the downward ramp tries (below it a step has too few samples to judge).
    #[serde(default)]
    pub min_rate_per_s: u64,
    pub max_rate_per_s: u64,
    /// Stop bisecting when (fail − pass) / pass is at most this.
    pub precision: f64,
    pub max_steps: usize,
}

/// The file `capacity.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityFile {
    pub schema: String,
    pub server: ServerEntry,
    pub slo: SloRecord,
    pub connections: u32,
    pub size_bytes: u32,
    pub duration_ms: u64,
    pub warmup_ms: u64,
    pub limits: SearchLimits,
    pub capacity_per_s: Option<u64>,
    pub first_fail_per_s: Option<u64>,
    pub stopped_because: String,
    /// Whether the re-measurement of the final passing rate passed (null: nothing to confirm).
    #[serde(default)]
    pub confirmed: Option<bool>,
    /// Set when the first failing rate failed only because the loadgen was invalid or
    /// saturated: the capacity is then a lower bound ("at least").
    #[serde(default)]
    pub loadgen_limit_per_s: Option<u64>,
    /// The server arguments xtask passed (`--server-args`, plus `--workers N` when it added
    /// that).
    #[serde(default)]
    pub server_args: Vec<String>,
    /// `--workers N` that xtask added for a strategy serving at most N connections at once.
    #[serde(default)]
    pub workers_added: Option<u32>,
    pub steps: Vec<Step>,
    /// What limited the answer: `server` (its knee), `loadgen` (the capacity is at least the
    /// answer), `slo-unreachable` (even the lowest rate failed), `max-rate`, `budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limiting_factor: Option<String>,
    /// `--target HOST:PORT`: the server measured was already running there (xtask started
    /// none, so its CPU and memory are unavailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Time each step after the first ran at its rate before it was measured (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_ms: Option<u64>,
    /// Agreeing measurements beyond the first a rate's verdict needed (`--retries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The server's CPU time over the whole search (s), when xtask started the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    /// The server's peak resident memory (KiB), when xtask started the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_peak_rss_kib: Option<u64>,
    /// Why the server's CPU and memory are not given, when they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_figures_unavailable: Option<String>,
    /// How the loadgen timed its sends (its report's `timing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen_timing: Option<serde_json::Value>,
    /// Wall time of the whole search, server start to stop (s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_s: Option<f64>,
    /// Rates that failed below a higher one that passed: latency fell as the load rose (an
    /// idle server is slow to wake), so they were not taken as the knee.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dips: Vec<u64>,
    /// Rates the ramp left unmeasured: the loadgen's loop lost its CPU at each while it had
    /// little work and nothing had passed yet, so the ramp went on above them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmeasured_per_s: Vec<u64>,
}

impl RunFile for CapacityFile {
    const FILE: &'static str = CAPACITY_FILE;
    const SCHEMA: &'static str = CAPACITY_SCHEMA;

    fn schema(&self) -> &str {
        &self.schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_keep_their_words_and_their_kind() {
        let reasons = [
            StepReason::SloNotMet(
                "SLO p99<=1ms NOT MET: measured 1500.0 µs, limit <= 1000.0 µs".into(),
            ),
            StepReason::BelowTarget {
                achieved_per_s: 9800.0,
                ratio: 0.98,
            },
            StepReason::LoadgenInvalid(vec!["schedule lag".into(), "too few samples".into()]),
            StepReason::Starved(14),
            StepReason::LoadgenSaturated,
            StepReason::TrialFailed(TrialFailure::LoadgenNoReport {
                status: "no status".into(),
                log: "trials/003-server-c4-s64-t0.loadgen.log".into(),
            }),
            StepReason::NoReport,
            StepReason::ReportMismatch {
                report: "trials/001-server-c4-s64-t0.loadgen.json".into(),
                error: "missing field `schema`".into(),
            },
        ];
        let texts: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        // Today's words, exactly.
        assert_eq!(texts[1], "achieved 9800/s is 98.0% of the target");
        assert_eq!(
            texts[2],
            "loadgen marked the run invalid: schedule lag; too few samples"
        );
        assert!(texts[3].starts_with("14 connections starved (the server serves fewer"));
        assert_eq!(texts[4], "loadgen saturated");
        for (reason, text) in reasons.iter().zip(&texts) {
            let json = serde_json::to_value(reason).expect("serializes");
            assert_eq!(json, serde_json::Value::String(text.clone()));
            let back: StepReason = serde_json::from_value(json).expect("parses");
            assert_eq!(back, *reason, "{text}");
            assert_eq!(back.is_instrument(), reason.is_instrument(), "{text}");
        }
        let instrument: Vec<bool> = reasons.iter().map(StepReason::is_instrument).collect();
        assert_eq!(
            instrument,
            [false, false, true, false, true, true, false, false]
        );
        // Words no variant knows (a server that did not start) are a trial failure, verbatim.
        let start = "server x exited (exit status: 1) before it was ready".to_string();
        assert_eq!(
            StepReason::from(start.clone()),
            StepReason::TrialFailed(TrialFailure::Other(start))
        );
    }

    /// A `capacity.json` as xtask wrote it before reasons were enums (steps trimmed).
    const WRITTEN_BEFORE: &str = r#"{
  "schema": "echolab.xtask.capacity/1",
  "server": {"name": "server", "command": "./fixture-echo --port {port} --delay 1ms"},
  "slo": {"text": "p99<=50ms", "latency": [{"key": "p99", "limit_us": 50000.0}], "max_errors": 0},
  "connections": 4, "size_bytes": 64, "duration_ms": 700, "warmup_ms": 200,
  "limits": {"start_rate_per_s": 500, "min_rate_per_s": 143, "max_rate_per_s": 4000000,
             "precision": 0.25, "max_steps": 40},
  "capacity_per_s": 3500, "first_fail_per_s": 4000, "stopped_because": "bracket within 25%",
  "confirmed": true, "loadgen_limit_per_s": null, "server_args": [], "workers_added": null,
  "steps": [
    {"target_per_s": 4000, "attempt": 1, "achieved_per_s": 3537.1428571428573,
     "latency_us": {"p50": 54527, "p99": 88767}, "service_time_us": {"p99": 88703},
     "errors": 0, "valid": true, "pass": false,
     "reasons": ["SLO p99<=50ms NOT MET: measured 88767.0 µs, limit <= 50000.0 µs",
                 "achieved 3537/s is 88.4% of the target"],
     "report": "trials/003-server-c4-s64-t0.loadgen.json", "confirm": false},
    {"target_per_s": 3500, "attempt": 1, "achieved_per_s": 3495.714285714286,
     "latency_us": {"p50": 1121, "p99": 4271}, "service_time_us": {"p99": 4043},
     "errors": 0, "valid": true, "pass": true, "reasons": [],
     "report": "trials/007-server-c4-s64-t0.loadgen.json", "confirm": true}
  ]
}"#;

    #[test]
    fn a_file_written_before_reads_back_to_the_same_json() {
        let before: serde_json::Value = serde_json::from_str(WRITTEN_BEFORE).expect("json");
        let file: CapacityFile = serde_json::from_str(WRITTEN_BEFORE).expect("reads");
        assert!(matches!(file.steps[0].reasons[0], StepReason::SloNotMet(_)));
        assert!(matches!(
            file.steps[0].reasons[1],
            StepReason::BelowTarget { .. }
        ));
        assert!(!file.steps[0].instrument_limited());
        assert_eq!(serde_json::to_value(&file).expect("writes"), before);
    }

    #[test]
    fn rates_left_unmeasured_and_a_steps_steal_are_written_and_read_back() {
        let mut file: CapacityFile = serde_json::from_str(WRITTEN_BEFORE).expect("reads");
        assert_eq!(crate::present::text::unmeasured_line(&file), None);
        file.unmeasured_per_s = vec![2_000, 4_000];
        let line = crate::present::text::unmeasured_line(&file).expect("a line");
        assert!(
            line.starts_with("not measured: 2,000, 4,000 msg/s ("),
            "{line}"
        );
        file.steps[0].loadgen_steal_ms = Some(230.0);
        let json = serde_json::to_value(&file).expect("writes");
        assert_eq!(json["unmeasured_per_s"], serde_json::json!([2_000, 4_000]));
        assert_eq!(
            json["steps"][0]["loadgen_steal_ms"],
            serde_json::json!(230.0)
        );
        assert!(json["steps"][1].get("loadgen_steal_ms").is_none());
        let back: CapacityFile = serde_json::from_value(json).expect("reads back");
        assert_eq!(back.unmeasured_per_s, [2_000, 4_000]);
        assert_eq!(back.steps[0].loadgen_steal_ms, Some(230.0));
    }
}
