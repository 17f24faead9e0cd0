//! `regress.json` (`echolab.xtask.regress/1`): the two sides, every trial, the per-pair ratios,
//! the excluded pairs, the sequential design and each look the gate took, the estimate and the
//! [`Verdict`]. Written after every pair, so a crash loses at most the pair that was running;
//! `estimate` and `verdict` appear when the run ends (keys are only ever added: files written
//! before the sequential gate still read).

use serde::{Deserialize, Serialize};

use super::RunFile;
use super::plan::ServerEntry;
use crate::flags::{Metric, Pairing};
use crate::stats::RatioEstimate;

/// Schema id of `regress.json`.
pub const REGRESS_SCHEMA: &str = "echolab.xtask.regress/1";

/// The file name inside a run directory.
pub const REGRESS_FILE: &str = "regress.json";

/// Which side of the comparison: serialized as `baseline` / `candidate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Baseline,
    Candidate,
}

impl Side {
    /// The side's name, as files and output spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Baseline => "baseline",
            Side::Candidate => "candidate",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The gate's answer: `slower`, `faster`, `no_change`, `inconclusive` in the file; `no change`
/// in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Slower,
    Faster,
    NoChange,
    /// The pairs or the time ran out before the interval could decide (exit 3).
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Slower => "slower",
            Verdict::Faster => "faster",
            Verdict::NoChange => "no change",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// The sequential design a run used (see `regress::gate`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DesignRecord {
    /// The chance of `slower` for a candidate that is not slower, over all looks.
    pub false_alarm: f64,
    /// The power the minimum detectable change is stated at.
    pub power: f64,
    /// The least estimated rise that may be called slower (a fraction).
    pub floor: f64,
    /// Usable pairs at the first look, and between looks.
    pub first_look: usize,
    pub look_every: usize,
    /// Looks planned for `max_pairs`; each side of each look's interval errs with at most
    /// `alpha_per_look` (= false_alarm / looks_planned).
    pub looks_planned: usize,
    pub alpha_per_look: f64,
    /// `--trials`: the most pairs.
    pub max_pairs: usize,
    /// `--budget`: measuring time after which no pair is started, seconds.
    pub budget_s: f64,
}

/// A change of the compared cost (CPU per message, 1 / throughput or p99) as fractions:
/// 0.05 = the candidate costs 5% more.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The Hodges–Lehmann estimate.
    pub estimate: f64,
    /// Its signed-rank interval, of confidence `confidence` (1 − 2·alpha_per_look).
    pub low: f64,
    pub high: f64,
    pub confidence: f64,
}

/// One look of the sequential gate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Look {
    /// Usable pairs at this look.
    pub pairs: usize,
    pub change: Change,
    /// The smallest rise these pairs catch with `power` at their noise (a fraction).
    pub minimum_detectable: f64,
    /// What the look decided; absent when it asked for more pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

impl Look {
    /// The look as the terminal, `index.html` and `summary.md` show it: pairs, change,
    /// interval (with its confidence), smallest detectable rise, what it decided.
    pub fn cells(&self) -> [String; 5] {
        [
            self.pairs.to_string(),
            format!("{:+.2}%", self.change.estimate * 100.0),
            format!(
                "{:+.2}% … {:+.2}% ({:.2}%)",
                self.change.low * 100.0,
                self.change.high * 100.0,
                self.change.confidence * 100.0
            ),
            format!("{:.1}%", self.minimum_detectable * 100.0),
            self.verdict
                .map_or("more pairs".to_string(), |v| v.to_string()),
        ]
    }
}

/// What runs on one side of the comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contender {
    pub label: Side,
    pub git_ref: Option<String>,
    pub commit: Option<String>,
    pub server: ServerEntry,
}

/// One measured trial.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegressTrial {
    pub pair: usize,
    pub side: Side,
    /// The compared figure (NaN, written as null, when it was not measured).
    #[serde(with = "nan_as_null")]
    pub value: f64,
    pub errors: u64,
    /// The loadgen's `valid` (false: its numbers cannot be trusted; the pair is excluded).
    #[serde(default)]
    pub valid: Option<bool>,
    pub report: String,
    /// The server's CPU µs per message and its CPU and runnable shares of the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_per_message_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runnable_share: Option<f64>,
}

/// A float that may be NaN, written as `null` (JSON has no NaN) and read back as NaN.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            serializer.serialize_f64(*value)
        } else {
            serializer.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
    }
}

/// The file `regress.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegressFile {
    pub schema: String,
    pub baseline: Contender,
    pub candidate: Contender,
    pub metric: Metric,
    pub threshold: f64,
    pub connections: u32,
    /// Messages in flight per connection (absent in files from before `--depth`: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    pub size_bytes: u32,
    pub duration_ms: u64,
    /// How pairs were measured (absent in files from before: one after the other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing: Option<Pairing>,
    /// The sequential design (absent in files from before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub design: Option<DesignRecord>,
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
    /// Absent while the pairs run (and when the run ended without a verdict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<RatioEstimate>,
    /// Absent while the pairs run (and when the run ended without a verdict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Every look the gate took, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub looks: Vec<Look>,
    /// The estimated change of the compared cost at the last look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// The smallest rise this run would have caught with the design's power, at its observed
    /// pair-to-pair noise (a fraction; at the last look).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_detectable_effect: Option<f64>,
    /// Why the run stopped (a look decided, the pairs or the budget ran out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_because: Option<String>,
}

impl RegressFile {
    /// Pairs with at least one trial recorded.
    pub fn pairs_run(&self) -> usize {
        self.trials.iter().map(|t| t.pair + 1).max().unwrap_or(0)
    }
}

impl RunFile for RegressFile {
    const FILE: &'static str = REGRESS_FILE;
    const SCHEMA: &'static str = REGRESS_SCHEMA;

    fn schema(&self) -> &str {
        &self.schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished `regress.json` as xtask wrote it before sides were enums (trials trimmed).
    const WRITTEN_BEFORE: &str = r#"{
  "schema": "echolab.xtask.regress/1",
  "baseline": {"label": "baseline", "git_ref": null, "commit": null,
               "server": {"name": "baseline", "command": "./fixture-echo --port {port}"}},
  "candidate": {"label": "candidate", "git_ref": "working tree", "commit": null,
                "server": {"name": "pool", "command": null}},
  "metric": "throughput", "threshold": 0.05, "connections": 4, "size_bytes": 64,
  "duration_ms": 400,
  "trials": [
    {"pair": 0, "side": "baseline", "value": 12510.0, "errors": 0, "valid": true,
     "report": "trials/000-baseline-c4-s64-t0.loadgen.json"},
    {"pair": 0, "side": "candidate", "value": 940.0, "errors": 0, "valid": true,
     "report": "trials/001-candidate-c4-s64-t0.loadgen.json"}
  ],
  "ratios": [0.07513988808952837],
  "excluded_pairs": ["pair 2: baseline measurement invalid (loadgen saturated)"],
  "candidate_failures": [],
  "estimate": {"ratio": 0.0766, "ci": {"low": 0.0751, "high": 0.0796}, "pairs": 6},
  "verdict": "no_change"
}"#;

    #[test]
    fn a_finished_file_reads_back_to_the_same_json() {
        let before: serde_json::Value = serde_json::from_str(WRITTEN_BEFORE).expect("json");
        let file: RegressFile = serde_json::from_str(WRITTEN_BEFORE).expect("reads");
        assert_eq!(file.trials[1].side, Side::Candidate);
        assert_eq!(file.verdict, Some(Verdict::NoChange));
        assert_eq!(file.pairs_run(), 1);
        assert_eq!(serde_json::to_value(&file).expect("writes"), before);
    }

    #[test]
    fn a_file_of_a_run_still_going_has_no_estimate_and_no_verdict() {
        let mut file: RegressFile = serde_json::from_str(WRITTEN_BEFORE).expect("reads");
        file.estimate = None;
        file.verdict = None;
        let json = serde_json::to_value(&file).expect("writes");
        let keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            !keys.contains(&"estimate") && !keys.contains(&"verdict"),
            "{keys:?}"
        );
        let back: RegressFile = serde_json::from_value(json).expect("reads back");
        assert_eq!((back.estimate, back.verdict), (None, None));
        assert_eq!(back.trials.len(), 2);
    }

    #[test]
    fn verdicts_and_sides_keep_their_words() {
        for (verdict, json, words) in [
            (Verdict::Slower, "slower", "slower"),
            (Verdict::Faster, "faster", "faster"),
            (Verdict::NoChange, "no_change", "no change"),
            (Verdict::Inconclusive, "inconclusive", "inconclusive"),
        ] {
            assert_eq!(serde_json::to_value(verdict).expect("writes"), json);
            assert_eq!(verdict.to_string(), words);
        }
        for (side, words) in [(Side::Baseline, "baseline"), (Side::Candidate, "candidate")] {
            assert_eq!(serde_json::to_value(side).expect("writes"), words);
            assert_eq!(side.to_string(), words);
        }
    }
}
