//! `calibration.json` (`echolab.xtask.calibration/1`): what `cargo xtask calibrate` measured —
//! the calibration fixture's base CPU per message, and per condition (the server against
//! itself, or against itself with an injected extra cost) the verdict of every regress run.
//! Rewritten after every run.

use serde::{Deserialize, Serialize};

use super::RunFile;
use super::regress::Verdict;

/// Schema id of `calibration.json`.
pub const CALIBRATION_SCHEMA: &str = "echolab.xtask.calibration/1";

/// One regress run of a calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRun {
    /// Its run directory, relative to the calibration's.
    pub dir: String,
    /// `None` when the run ended without a verdict (an error; see its directory).
    pub verdict: Option<Verdict>,
    /// Pairs run, and usable pairs at the last look.
    pub pairs_run: usize,
    pub pairs_used: usize,
    /// The estimated change of the compared cost, and the smallest detectable rise (fractions).
    pub change: Option<f64>,
    pub minimum_detectable: Option<f64>,
    /// Wall time of the run, seconds.
    pub seconds: f64,
}

/// One condition: the candidate's injected rise (0 = the server against itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// The rise of the server's CPU per message injected, as a fraction of the base.
    pub rise: f64,
    /// The extra CPU work per 64 bytes that injects it (`--calibration-cost`), ns.
    pub cost_per_64_bytes_ns: u64,
    pub runs: Vec<CalibrationRun>,
}

impl Condition {
    /// How many runs ended with `verdict`.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.runs
            .iter()
            .filter(|run| run.verdict == Some(verdict))
            .count()
    }
}

/// The file `calibration.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalibrationFile {
    pub schema: String,
    /// The fixture's strategy (`event-loop` in files written before `--strategy`).
    #[serde(default = "event_loop")]
    pub strategy: String,
    /// The regress flags every run used (besides the two servers and `--out`).
    pub regress_args: Vec<String>,
    /// The plain fixture's CPU µs per message, from the first same-against-same run.
    pub base_cpu_per_message_us: Option<f64>,
    pub conditions: Vec<Condition>,
    /// Every usable pair's slowdown (`ln(cost ratio)`) of the same-against-same runs: the
    /// measured noise the gate's simulation test draws from.
    pub same_slowdowns: Vec<f64>,
}

/// The fixture of calibrations written before `calibrate --strategy`.
fn event_loop() -> String {
    "event-loop".into()
}

impl RunFile for CalibrationFile {
    const FILE: &'static str = "calibration.json";
    const SCHEMA: &'static str = CALIBRATION_SCHEMA;

    fn schema(&self) -> &str {
        &self.schema
    }
}
