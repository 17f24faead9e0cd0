//! Command-line flags of every xtask command, in one place (clap derive).
//!
//! Durations are written as in every echolab CLI: `500ms`, `3s`, `2m`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `cargo xtask`: echolab's benchmark orchestration.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
pub struct Xtask {
    #[command(subcommand)]
    pub command: Command,
}

/// One subcommand per job.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare server strategies: interleaved trials, a table, a run directory.
    Bench(Box<BenchArgs>),
    /// Test fixture: a thread-per-connection echo server that can sleep per message.
    #[command(hide = true)]
    FixtureEcho(FixtureArgs),
}

/// How xtask obtains the `echo-server` and `loadgen` binaries.
#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// Use prebuilt `echo-server` and `loadgen` from this directory instead of building them.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Cargo profile to build the binaries with (dev is for quick tests, not for measuring).
    #[arg(long, value_enum, default_value_t = BuildProfile::Release)]
    pub build_profile: BuildProfile,
}

/// The cargo profile used for the measured binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuildProfile {
    Release,
    Dev,
}

/// Flags of `cargo xtask bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Built-in strategies to compare, comma separated, or `all` (default: iterative,thread,pool;
    /// `none` to compare only `--server`s).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub strategies: Option<Vec<String>>,
    /// An external echo server, `NAME='CMD … {port}'`; `{port}` becomes a free loopback port.
    #[arg(long = "server", value_name = "NAME='CMD … {port}'")]
    pub servers: Vec<String>,
    /// Connection counts (default: 1,16,128).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub connections: Option<Vec<u32>>,
    /// Message sizes in bytes (default: 64).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub sizes: Option<Vec<u32>>,
    /// Messages in flight per connection (loadgen `--depth`).
    #[arg(long)]
    pub depth: Option<u32>,
    /// Open-loop total rate in messages/s (loadgen `--rate`); closed loop when absent.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Trials per cell (default 3; 1 with --smoke).
    #[arg(long)]
    pub trials: Option<u32>,
    /// Measured time per trial (default 1500ms; 500ms with --smoke).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up per trial, run but not recorded (default 500ms; 200ms with --smoke).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Do not pin server and loadgen to separate cores.
    #[arg(long)]
    pub no_pin: bool,
    /// A few seconds for CI: one short trial per cell.
    #[arg(long)]
    pub smoke: bool,
    /// Run directory (default: results/runs/<UTC stamp>-bench).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Seed for the shuffled trial order (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// How long a server may take to print `listening on` (or accept, for `--server`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub ready_timeout: Duration,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// Flags of the hidden `fixture-echo` test server.
#[derive(Debug, Clone, Args)]
pub struct FixtureArgs {
    /// Port on 127.0.0.1 (0 = any free one; the real one is printed).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Sleep this long before echoing each read (a deliberately slow server).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0ms")]
    pub delay: Duration,
}
