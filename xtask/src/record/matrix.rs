//! `matrix.json` (`echolab.xtask.matrix/1`): "which strategy for which workload" — one row per
//! compared group of cells (workload, connections, size), each with its verdict (a winner with
//! the coverage of the intervals that cleared, or "no winner" and why), one line of why from
//! the measured figures, and every server's cell with its figure of merit and whether it could
//! be judged (and if not, why, in the words of its loadgen reports). Computed by the `verdict`
//! module (above this layer); `summary.json` stays the per-cell array it always was.

use serde::{Deserialize, Serialize};

use super::RunFile;
use crate::stats::Interval;
use crate::workload::Merit;

/// Schema id of `matrix.json`.
pub const MATRIX_SCHEMA: &str = "echolab.xtask.matrix/1";

/// Whether a cell could take part in its row's verdict, and if not, why (most telling first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// The row's winner.
    Winner,
    /// Clean and compared, not the winner.
    Judged,
    /// The server never started, or every trial failed for the server's sake: out of the race.
    Failed,
    /// Connections waited without an echo (e.g. a pool with fewer workers than connections):
    /// the server did not do the job, so the cell never wins.
    Starved,
    /// The server answered with errors: never wins.
    Errors,
    /// loadgen said its own error was material (saturated, fell behind its schedule): the
    /// server may be faster than measured, so no one wins beside it.
    LoadgenBound,
    /// loadgen marked the trials invalid for another reason (too few samples, …) or loadgen
    /// itself failed: nothing can be said, so no one wins beside it.
    Invalid,
}

impl CellStatus {
    /// True for cells whose real figure is unknown: no winner can be named beside them.
    pub fn blocks_verdict(self) -> bool {
        matches!(self, CellStatus::LoadgenBound | CellStatus::Invalid)
    }

    /// The short word the matrix prints.
    pub fn word(self) -> &'static str {
        match self {
            CellStatus::Winner => "winner",
            CellStatus::Judged => "judged",
            CellStatus::Failed => "failed",
            CellStatus::Starved => "starved",
            CellStatus::Errors => "errors",
            CellStatus::LoadgenBound => "loadgen-bound",
            CellStatus::Invalid => "invalid",
        }
    }
}

/// One server's cell in a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixCell {
    pub server: String,
    /// Median over trials of the row's figure of merit; null without a measured trial.
    pub figure: Option<f64>,
    /// Order-statistic interval of that median (null with fewer than 2 trials).
    pub interval: Option<Interval>,
    /// Its coverage, 0..1.
    pub coverage: f64,
    pub trials: usize,
    pub status: CellStatus,
    /// Why the cell is not judged: loadgen's `invalid_reasons` (each distinct one, with how many
    /// trials said it), starved connections, errors, failures. Empty for judged cells.
    pub reasons: Vec<String>,
    pub server_peak_rss_kib: Option<u64>,
    pub server_cpu_per_message_us: Option<f64>,
    /// Most workers the server reported (built-in strategies).
    pub server_workers: Option<u64>,
    /// Median connect p99 (churn), µs.
    pub connect_p99_us: Option<f64>,
}

/// One row: a workload at one connection count and size, and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixRow {
    /// The named workload; null for the cell flags' unnamed matrix.
    pub workload: Option<String>,
    pub connections: u32,
    pub size_bytes: u32,
    /// The figure compared: `messages_per_s`, `connections_per_s`, `bytes_per_s` (in MB/s) or
    /// `p99_us`.
    pub merit: Merit,
    pub unit: String,
    pub higher_is_better: bool,
    /// The winning server, when there is one.
    pub winner: Option<String>,
    /// The least coverage among the intervals that cleared each other (the confidence of the
    /// verdict), when there is a winner.
    pub confidence: Option<f64>,
    /// Why there is no winner, when there is none.
    pub no_winner: Option<String>,
    /// One line of why, from the measured figures.
    pub why: String,
    pub cells: Vec<MatrixCell>,
}

impl MatrixRow {
    /// `pingpong c=16 64B` (or `c=16 64B` for the unnamed matrix).
    pub fn label(&self) -> String {
        let cell = format!("c={} {}B", self.connections, self.size_bytes);
        match &self.workload {
            Some(workload) => format!("{workload} {cell}"),
            None => cell,
        }
    }

    /// The verdict in words: `event-loop (93% intervals clear)` or `no winner: …`.
    pub fn verdict_text(&self) -> String {
        match (&self.winner, self.confidence, &self.no_winner) {
            (Some(winner), Some(confidence), _) => format!(
                "{winner} (intervals of {:.0}% coverage clear every other)",
                (confidence * 100.0).floor()
            ),
            (Some(winner), None, _) => winner.clone(),
            (None, _, Some(reason)) => format!("no winner: {reason}"),
            (None, _, None) => "no winner".into(),
        }
    }
}

/// The file `matrix.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixFile {
    pub schema: String,
    /// Servers in the order of the columns.
    pub servers: Vec<String>,
    pub rows: Vec<MatrixRow>,
}

impl MatrixFile {
    /// A column's heading: the server, with its worker count where it has a pool (`pool (w=16)`),
    /// as in the summary table.
    pub fn heading(&self, server: &str) -> String {
        let workers = self
            .rows
            .iter()
            .flat_map(|row| &row.cells)
            .filter(|cell| cell.server == server)
            .filter_map(|cell| cell.server_workers)
            .max()
            .filter(|&workers| workers > 0);
        match workers {
            Some(workers) => format!("{server} (w={workers})"),
            None => server.to_string(),
        }
    }

    /// A file of this schema.
    pub fn new(servers: Vec<String>, rows: Vec<MatrixRow>) -> Self {
        Self {
            schema: MATRIX_SCHEMA.into(),
            servers,
            rows,
        }
    }
}

impl RunFile for MatrixFile {
    const FILE: &'static str = "matrix.json";
    const SCHEMA: &'static str = MATRIX_SCHEMA;

    fn schema(&self) -> &str {
        &self.schema
    }
}

/// A figure in a few significant digits: `213k`, `18.2k`, `1310`, `203`, `51.5`.
pub fn compact(value: f64) -> String {
    let magnitude = value.abs();
    if !value.is_finite() {
        "-".into()
    } else if magnitude >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if magnitude >= 1e5 {
        format!("{:.0}k", value / 1e3)
    } else if magnitude >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// The median over trials of each cell's connect p99 (`connect_us.p99` of its loadgen
/// reports, µs), for cells whose reports have one; reports that cannot be read are passed over.
pub fn connect_p99_by_cell(
    run_dir: &std::path::Path,
    records: &[super::trial::TrialRecord],
) -> Vec<(super::trial::Cell, f64)> {
    let mut by_cell: Vec<(super::trial::Cell, Vec<f64>)> = Vec::new();
    for record in records.iter().filter(|r| r.figures.is_some()) {
        let Some(p99) = super::loadgen_report::read_report(&run_dir.join(&record.loadgen_json))
            .ok()
            .and_then(|report| report.pointer("/connect_us/p99")?.as_f64())
        else {
            continue;
        };
        match by_cell.iter_mut().find(|(cell, _)| *cell == record.cell) {
            Some((_, values)) => values.push(p99),
            None => by_cell.push((record.cell.clone(), vec![p99])),
        }
    }
    by_cell
        .into_iter()
        .map(|(cell, values)| (cell, crate::stats::median(&values)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_figures() {
        assert_eq!(compact(213_456.0), "213k");
        assert_eq!(compact(18_234.0), "18.2k");
        assert_eq!(compact(1310.4), "1310");
        assert_eq!(compact(51.54), "51.5");
        assert_eq!(compact(2_500_000.0), "2.50M");
    }
}
