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

/// How a client thread waits for its next send (open loop) or its next echo (closed loop).
///
/// An idle virtual CPU can take from 50 µs to several milliseconds to wake up, and in open loop
/// that lateness lands in the corrected latency. `precise` never sleeps through a send: it spins
/// (polling its sockets with a zero timeout) across short gaps and while messages are in flight,
/// and sleeps only across gaps longer than 2 ms, waking 2 ms early; in closed loop it busy-polls.
/// `sleep` blocks in the poll (timer slack 1 ns) until 100 µs before the next send and spins the
/// rest. `auto` picks `precise` only when the loadgen's threads have cores of their own (see
/// [`crate::timing::choose`]), since spinning must not take a server's core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum TimingMode {
    /// `precise` where the loadgen has cores of its own, `sleep` otherwise.
    #[default]
    Auto,
    /// Spin across short gaps and while messages are in flight; busy-poll in closed loop.
    Precise,
    /// Sleep until shortly before each send; block in the poll in closed loop.
    Sleep,
}

impl TimingMode {
    /// The mode's name as written on the command line and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            TimingMode::Auto => "auto",
            TimingMode::Precise => "precise",
            TimingMode::Sleep => "sleep",
        }
    }
}

/// One step of a stepped open-loop run (`--rate-steps`, `--steps-from`): a rate held for a
/// measured duration, after a settle time that is run but not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateStep {
    /// Messages per second in total over all connections.
    pub rate_per_s: f64,
    /// Length of the step's measured window.
    pub duration_ms: u64,
}

impl RateStep {
    /// Parses one line of `--steps-from`: `RATE DURATION`, e.g. `20000 2s` (the duration in
    /// humantime syntax). `None` for a blank line or a `#` comment.
    pub fn parse_line(line: &str) -> Option<Result<RateStep, String>> {
        let text = line.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            return None;
        }
        let mut words = text.split_whitespace();
        let (Some(rate), Some(duration), None) = (words.next(), words.next(), words.next()) else {
            return Some(Err(format!(
                "{text:?} is not `RATE DURATION` (e.g. `20000 2s`)"
            )));
        };
        let rate_per_s = match rate.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => r,
            _ => {
                return Some(Err(format!(
                    "{rate:?} is not a positive number of messages per second"
                )));
            }
        };
        let duration_ms = match humantime::parse_duration(duration) {
            Ok(d) if d.as_millis() > 0 => d.as_millis() as u64,
            _ => {
                return Some(Err(format!(
                    "{duration:?} is not a duration of at least 1ms (e.g. 500ms, 2s)"
                )));
            }
        };
        Some(Ok(RateStep {
            rate_per_s,
            duration_ms,
        }))
    }
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
    /// How client threads wait for the next send or echo (`--timing`); the mode that ran, and
    /// why, is in the report's `timing`.
    #[serde(default)]
    pub timing: TimingMode,
    /// Open loop in steps (`--rate-steps`): each rate for its duration over the same
    /// connections, one after the other. Empty for a run at one `rate_per_s` (or closed loop).
    #[serde(default)]
    pub rate_steps: Vec<RateStep>,
    /// Stepped runs: time after each rate change (from the second step on) that is run but not
    /// recorded, so queues settle at the new rate. The first step settles in the warm-up.
    #[serde(default = "default_step_settle_ms")]
    pub step_settle_ms: u64,
    /// Stepped runs steered as they go: read `RATE DURATION` lines from this file (`-`: standard
    /// input), one step per line; end of input ends the run after the last step.
    #[serde(default)]
    pub steps_from: Option<PathBuf>,
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
            timing: TimingMode::Auto,
            rate_steps: Vec::new(),
            step_settle_ms: default_step_settle_ms(),
            steps_from: None,
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

    /// Whether the run follows an open-loop schedule (`--rate`, `--rate-steps`, `--steps-from`).
    pub fn open_loop(&self) -> bool {
        self.rate_per_s.is_some() || self.stepped()
    }

    /// Whether the run is in steps (`--rate-steps` or `--steps-from`): the report then has
    /// `steps[]`.
    pub fn stepped(&self) -> bool {
        !self.rate_steps.is_empty() || self.steps_from.is_some()
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
        if self.duration_ms.is_none() && self.messages.is_none() && !self.stepped() {
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
        if self.stepped() {
            if self.rate_per_s.is_some() {
                return Err("give --rate or steps (--rate-steps, --steps-from), not both".into());
            }
            if !self.rate_steps.is_empty() && self.steps_from.is_some() {
                return Err("give --rate-steps or --steps-from, not both".into());
            }
            if self.messages.is_some() {
                return Err("steps are bounded by their durations: drop --messages".into());
            }
        }
        for step in &self.rate_steps {
            if !(step.rate_per_s.is_finite() && step.rate_per_s > 0.0) {
                return Err("every --rate-steps rate must be a positive number".into());
            }
            if step.duration_ms == 0 {
                return Err("--step-duration must be at least 1ms".into());
            }
        }
        Ok(())
    }
}

fn default_step_settle_ms() -> u64 {
    250
}

/// One client thread per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
