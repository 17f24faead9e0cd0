//! The full configuration of a run: what the CLI parses into and what the JSON report echoes
//! back under `config`, so a report says exactly how it was produced.
//!
//! Durations are stored in milliseconds (`*_ms`), sizes in bytes (`*_bytes`); the CLI accepts
//! humantime text (`500ms`, `3s`, `2m`). Build one with `Config::new(target)` and adjust fields.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How the arrival times of an open-loop schedule are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced sends.
    #[default]
    Uniform,
    /// Exponentially distributed gaps (a Poisson process).
    Poisson,
}

/// Everything a run needs. `loadgen::run(&config)` measures; the output paths are used by the CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Address of the echo server (`host:port`).
    pub target: String,
    /// Concurrent connections (connection slots in churn mode).
    pub connections: usize,
    /// Client threads; each drives its share of the connections in one poll loop.
    pub threads: usize,
    /// Bytes per message.
    pub size_bytes: usize,
    /// Measured window length (ignored when `messages` is set).
    pub duration_ms: Option<u64>,
    /// Measured messages in total (split evenly over the connections); bounds the run by count.
    pub messages: Option<u64>,
    /// Warm-up before the measured window: run, not recorded.
    pub warmup_ms: u64,
    /// Closed loop: messages in flight per connection (pipelining). Open loop: the cap on messages
    /// in flight per connection (`None` = no cap, sends always go out on schedule).
    pub depth: Option<u32>,
    /// Open loop: total messages per second across all connections (`None` = closed loop).
    pub rate_per_s: Option<f64>,
    /// Open loop: arrival process of the intended send times.
    pub arrival: Arrival,
    /// Churn: connect, this many echoes, close, reconnect (`None` = persistent connections).
    pub messages_per_connection: Option<u64>,
    /// Source addresses to bind before connecting, spread round-robin over new connections.
    pub source_addrs: Vec<String>,
    /// Bytes per write call (`None` = as much as the socket takes).
    pub write_chunk_bytes: Option<usize>,
    /// A message with no complete echo within this time is a `timeout` error.
    pub timeout_ms: u64,
    /// A connection with no verified echo for longer than this, inside the window, is `starved`.
    pub stall_threshold_ms: u64,
    /// Errors tolerated before the exit code becomes 1.
    pub max_errors: u64,
    /// Service-level objective clauses, e.g. `p99<=1ms,errors=0` (checked after the run).
    pub slo: Option<String>,
    /// Wait until this UNIX time (seconds) before connecting.
    pub start_at_unix_s: Option<f64>,
    /// Write the JSON report here.
    pub json: Option<PathBuf>,
    /// Write the HdrHistogram percentile distribution (.hgrm) here.
    pub hgrm: Option<PathBuf>,
    /// Write an HdrHistogram interval log (.hlog, 1 s intervals) here.
    pub hlog: Option<PathBuf>,
    /// No live progress display.
    pub quiet: bool,
}

impl Config {
    /// A closed-loop configuration with the CLI's defaults against `target`.
    pub fn new(target: impl Into<String>) -> Self {
        Config {
            target: target.into(),
            connections: 16,
            threads: default_threads(),
            size_bytes: 64,
            duration_ms: Some(5_000),
            messages: None,
            warmup_ms: 1_000,
            depth: None,
            rate_per_s: None,
            arrival: Arrival::Uniform,
            messages_per_connection: None,
            source_addrs: Vec::new(),
            write_chunk_bytes: None,
            timeout_ms: 5_000,
            stall_threshold_ms: 1_000,
            max_errors: 0,
            slo: None,
            start_at_unix_s: None,
            json: None,
            hgrm: None,
            hlog: None,
            quiet: false,
        }
    }

    /// Whether the run follows an open-loop schedule (`--rate`).
    pub fn open_loop(&self) -> bool {
        self.rate_per_s.is_some()
    }

    /// Messages a connection may have in flight: `depth` (default 1) in closed loop; in open loop
    /// `depth` if given, else unbounded.
    pub fn max_in_flight(&self) -> usize {
        match (self.open_loop(), self.depth) {
            (_, Some(d)) => d.max(1) as usize,
            (false, None) => 1,
            (true, None) => usize::MAX,
        }
    }

    /// Checks the combination of options; the message is meant for a user.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if self.size_bytes == 0 {
            return Err("--size must be at least 1 byte".into());
        }
        if self.duration_ms.is_none() && self.messages.is_none() {
            return Err("give --duration or --messages".into());
        }
        if self.messages == Some(0) {
            return Err("--messages must be at least 1".into());
        }
        if self.depth == Some(0) {
            return Err("--depth must be at least 1".into());
        }
        if let Some(rate) = self.rate_per_s
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err("--rate must be a positive number of messages per second".into());
        }
        if self.messages_per_connection == Some(0) {
            return Err("--messages-per-connection must be at least 1".into());
        }
        if self.write_chunk_bytes == Some(0) {
            return Err("--write-chunk must be at least 1 byte".into());
        }
        if self.timeout_ms == 0 {
            return Err("--timeout must be more than 0".into());
        }
        Ok(())
    }
}

/// One client thread per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
