//! One row of a bench summary ([`CellSummary`]): what `summary.json` holds (a top-level array)
//! and what every summary exporter (`present::table`) renders. Computed by `summarize` (the
//! `summary` module, above this layer).

use serde::{Deserialize, Serialize};

use super::trial::Cell;
use crate::stats::Interval;

/// One row of the summary table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSummary {
    pub cell: Cell,
    /// Trials with a report.
    pub trials: usize,
    pub failed_trials: usize,
    /// Trials whose loadgen said `valid: false`.
    pub invalid_trials: usize,
    /// Most connections starved in any trial (loadgen `connections.starved`).
    #[serde(default)]
    pub starved_connections: Option<u64>,
    pub messages_per_s_median: f64,
    pub messages_per_s_spread_percent: f64,
    /// Order-statistic (sign-test) interval of the median. The name is kept for compatibility;
    /// its real coverage is `messages_per_s_ci_coverage` (75% at 3 trials, 87.5% at 4, 93.75%
    /// at 5, at least 95% from 6).
    pub messages_per_s_ci95: Interval,
    /// Coverage (0..=1) of `messages_per_s_ci95`; 0 in summaries written before it existed.
    #[serde(default)]
    pub messages_per_s_ci_coverage: f64,
    /// Medians over trials of each trial's percentile.
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    pub server_cpu_per_message_us: Option<f64>,
    pub server_peak_rss_kib: Option<u64>,
    /// Most workers the server reported in any trial (built-in strategies).
    #[serde(default)]
    pub server_workers: Option<u64>,
    /// Highest median for its (connections, size) and its interval overlaps no other's.
    pub winner: bool,
    /// Set on the cell with the highest median of its group when it may not have the star:
    /// why (its trials were invalid, it starved connections, …), so the table can say so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_star_because: Option<String>,
}
