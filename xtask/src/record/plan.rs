//! The validated configuration of a set of trials ([`BenchPlan`], stored as the bench
//! manifest's `config` and inside regress's) and the servers it names ([`ServerEntry`], also
//! the `server` of `capacity.json` and `regress.json`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::trial::Cell;
use crate::flags::RunArgs;
use crate::workload::Workload;

/// One server in the comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerEntry {
    pub name: String,
    /// `None` for a built-in strategy; the command template (with `{port}`) for an external one.
    pub command: Option<String>,
    /// A built-in strategy's thread count from `--strategies NAME:N` (`--workers N`, or `--loops N`
    /// for the event loops); `None`: the server's own default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
}

impl ServerEntry {
    /// A built-in strategy at the server's default thread count.
    pub fn builtin(name: &str) -> ServerEntry {
        ServerEntry {
            name: name.to_string(),
            command: None,
            threads: None,
        }
    }

    /// True for a built-in strategy of `echo-server` (not an external command).
    pub fn is_builtin(&self) -> bool {
        self.command.is_none()
    }
}

/// The full, validated configuration of a bench run (stored in the manifest); `capacity` and
/// `regress` run their trials from one too (see [`BenchPlan::one_cell`]).
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
    /// `--keep-awake`: the server's CPUs were kept out of idle (reports from before it: false).
    #[serde(default)]
    pub keep_awake: bool,
    pub seed: u64,
    pub ready_timeout_ms: u64,
    /// Extra arguments for built-in strategies' servers (`--server-args`).
    #[serde(default)]
    pub server_args: Vec<String>,
    /// The named workloads the cells come from (`--workloads`, or the default set), expanded
    /// with the cell flags; empty when the cell flags alone describe the matrix.
    #[serde(default)]
    pub workloads: Vec<Workload>,
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
            keep_awake: run.keep_awake,
            seed: 0,
            ready_timeout_ms: run.ready_timeout.as_millis() as u64,
            server_args: run.server_args(),
            workloads: vec![],
        }
    }

    /// The workload a cell of this plan belongs to (`None` for cells of the cell flags alone).
    pub fn workload_of(&self, cell: &Cell) -> Option<&Workload> {
        let name = cell.workload.as_deref()?;
        self.workloads.iter().find(|w| w.name == name)
    }

    /// The warm-up as a duration.
    pub fn warmup(&self) -> Duration {
        Duration::from_millis(self.warmup_ms)
    }

    /// The measured window of one trial as a duration.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }

    /// How long a server may take to become ready.
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_millis(self.ready_timeout_ms)
    }
}
