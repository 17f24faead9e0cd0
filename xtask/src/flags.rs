//! Command-line flags of every xtask command, in one place (clap derive).
//!
//! Durations are written as in every echolab CLI: `500ms`, `3s`, `2m`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `cargo xtask`: echolab's benchmark orchestration.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
pub struct Xtask {
    #[command(subcommand)]
    pub command: Command,
}

/// One subcommand per job.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare server strategies: interleaved trials, a table, a run directory.
    Bench(Box<BenchArgs>),
    /// Highest open-loop rate that meets an SLO (ramp, then bisection).
    Capacity(Box<CapacityArgs>),
    /// Performance-regression gate: baseline git ref vs working tree, paired trials, a verdict.
    Regress(Box<RegressArgs>),
    /// The regression gate's error rates on this machine: a fixture server against itself and
    /// against itself with a known extra CPU cost per message.
    Calibrate(Box<CalibrateArgs>),
    /// Redraw summaries, plots and index.html of a run directory from its stored JSON.
    Report {
        /// A run directory (results/runs/<stamp>-<command>).
        run_dir: PathBuf,
    },
    /// Combine loadgen reports from many hosts exactly (histograms added, not averaged).
    Merge {
        /// loadgen JSON reports.
        #[arg(required = true, num_args = 2..)]
        reports: Vec<PathBuf>,
        /// Where to write the merged report.
        #[arg(short, long)]
        output: PathBuf,
    },
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

/// Flags every measuring command (`bench`, `capacity`, `regress`) shares: how the servers
/// are started, where the run directory goes and how the binaries are obtained.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Run options")]
pub struct RunArgs {
    /// Extra arguments for every built-in strategy's server, e.g. '--workers 4 --queue 64'.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub server_args: Option<String>,
    /// Do not pin server and loadgen to separate cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Keep the server's CPUs out of idle while it is measured: an idle-priority spinner
    /// (SCHED_IDLE) on each, preempted by the server as soon as it wakes (and given about 0.3%
    /// of a CPU the server keeps busy). Takes the CPUs' wake-up time
    /// (large on virtual machines) out of low-rate latencies and out of the loadgen's timing;
    /// recorded in the manifest as `keep_awake`.
    #[arg(long, conflicts_with = "no_pin")]
    pub keep_awake: bool,
    /// Run directory (default: results/runs/<UTC stamp>-<command>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// How long a server may take to print `listening on` (or accept, for an external server).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub ready_timeout: Duration,
    #[command(flatten)]
    pub build: BuildArgs,
}

impl RunArgs {
    /// `--server-args` split on whitespace.
    pub fn server_args(&self) -> Vec<String> {
        self.server_args
            .as_deref()
            .map(|text| text.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    }
}

/// Flags of `cargo xtask bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Built-in strategies to compare, comma separated, or `all` (default:
    /// iterative,thread,pool:16,reactor-pool:2; `NAME:N` runs a pool with N workers, an event
    /// loop with N loops; `none` to compare only `--server`s).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub strategies: Option<Vec<String>>,
    /// An external echo server, `NAME='CMD … {port}'`; `{port}` becomes a free loopback port.
    #[arg(long = "server", value_name = "NAME='CMD … {port}'")]
    pub servers: Vec<String>,
    /// Named workloads, comma separated: pingpong, pipelined, keepalive, churn, bulk, or all
    /// (default: pingpong,keepalive,churn in short form; cell flags alone: one unnamed matrix).
    /// Cell flags given with it replace that parameter in every named workload.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub workloads: Option<Vec<String>>,
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
    /// Trials per cell (default 5, the fewest whose interval reaches 90% coverage; 1 with --smoke).
    #[arg(long)]
    pub trials: Option<u32>,
    /// Measured time per trial (default 1s; 500ms with --smoke).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up per trial, run but not recorded (default 300ms; 200ms with --smoke).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// A few seconds for CI: one short trial per cell.
    #[arg(long)]
    pub smoke: bool,
    /// Seed for the shuffled trial order (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write the summary in Bencher Metric Format (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub bmf: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
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
    /// Read at most this many bytes at a time (the message size makes the delay per message).
    #[arg(long, default_value_t = 16 * 1024)]
    pub buffer_size: usize,
}

/// Flags of `cargo xtask capacity`.
#[derive(Debug, Clone, Args)]
pub struct CapacityArgs {
    /// Built-in strategy to measure (default: reactor-pool, the server's default).
    #[arg(long)]
    pub strategy: Option<String>,
    /// Or an external server command with `{port}`.
    #[arg(long, value_name = "'CMD … {port}'")]
    pub server: Option<String>,
    /// Or a server that is already running (on this host or another): xtask starts none, so
    /// the server's CPU and memory are not measured.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["strategy", "server", "keep_awake"])]
    pub target: Option<String>,
    /// The SLO in loadgen's `--slo` syntax, upper bounds only: 'p99<=1ms' or
    /// 'p99<=1ms,p999<=5ms,errors=0' (no errors clause: none tolerated).
    #[arg(long)]
    pub slo: String,
    /// Connections the open-loop load is spread over.
    #[arg(long, default_value_t = 16)]
    pub connections: u32,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// First rate of the doubling ramp, messages/s.
    #[arg(long, default_value_t = 2000)]
    pub start_rate: u64,
    /// Highest rate tried, messages/s.
    #[arg(long, default_value_t = 4_000_000)]
    pub max_rate: u64,
    /// Stop bisecting when the bracket is within this many percent.
    #[arg(long, default_value_t = 5.0)]
    pub precision_percent: f64,
    /// Measured time per step.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub duration: Duration,
    /// Warm-up before the first step (the connections open once for the whole search).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub warmup: Duration,
    /// Time each later step runs at its rate, unrecorded, before it is measured.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "250ms")]
    pub settle: Duration,
    /// How the loadgen times its sends (loadgen `--timing`): auto spins where it is pinned to
    /// cores of its own, sleeps otherwise.
    #[arg(long, value_enum, default_value_t = loadgen::TimingMode::Auto)]
    pub timing: loadgen::TimingMode,
    /// A rate's verdict needs this many agreeing measurements beyond the first (default: two
    /// of at most three), so one noisy step cannot move the bracket; a pass with every latency
    /// at most half its limit counts as agreed at once.
    #[arg(long, default_value_t = 1)]
    pub retries: u32,
    /// Total time for the search; it reports the bracket found when this runs out.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "110s")]
    pub budget: Duration,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What `regress` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The server's CPU time per echoed message (lower is better): what the server's own work
    /// costs, whatever else runs on the machine.
    Cpu,
    /// Messages per second (higher is better).
    Throughput,
    /// 99th percentile latency (lower is better).
    P99,
}

/// How the two sides of a `regress` pair are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pairing {
    /// Both servers at once, on the same server CPUs, each with its own loadgen, in the same
    /// window: whatever the machine does meanwhile hits both alike.
    Simultaneous,
    /// One after the other in ABBA order (baseline, candidate; candidate, baseline; …).
    Sequential,
}

/// Flags of `cargo xtask regress`.
#[derive(Debug, Clone, Args)]
pub struct RegressArgs {
    /// Git ref of the baseline (built in a temporary worktree).
    #[arg(long, value_name = "REF")]
    pub baseline: Option<String>,
    /// The rise in the candidate's cost the gate must catch (5% or 0.05): with the default
    /// design it says `slower` for a rise this large at least 95% of the time, and for an
    /// unchanged candidate at most 1% of the time. `slower` needs an estimate of at least half
    /// of it.
    #[arg(long, default_value = "5%")]
    pub threshold: String,
    /// The most pairs (each measures baseline and candidate once); the gate looks at the pairs
    /// after 10, 20, 30, … and stops as soon as it can decide. At least 10.
    #[arg(long, default_value_t = 60)]
    pub trials: u32,
    /// Measuring time after which the gate stops adding pairs: undecided by then, the verdict
    /// is `inconclusive` (exit 3).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "150s")]
    pub budget: Duration,
    /// The compared metric.
    #[arg(long, value_enum, default_value_t = Metric::Cpu)]
    pub metric: Metric,
    /// How a pair is measured.
    #[arg(long, value_enum, default_value_t = Pairing::Simultaneous)]
    pub pairing: Pairing,
    /// Strategy both sides run (bounded ones, pool and rayon, get a worker per connection
    /// unless --server-args sets --workers). The default follows the server's own default
    /// (docs/perf-gate.md: measured for the gate).
    #[arg(long, default_value = DEFAULT_GATE_STRATEGY)]
    pub strategy: String,
    /// Compare two server commands instead of two builds: baseline `CMD … {port}`.
    #[arg(long, value_name = "'CMD … {port}'")]
    pub baseline_server: Option<String>,
    /// Candidate `CMD … {port}` (with --baseline-server).
    #[arg(long, value_name = "'CMD … {port}'")]
    pub candidate_server: Option<String>,
    /// Connections per trial (docs/perf-gate.md says why 16).
    #[arg(long, default_value_t = 16)]
    pub connections: u32,
    /// Messages in flight per connection (loadgen `--depth`; 1 = ping-pong on each).
    #[arg(long, default_value_t = 1)]
    pub depth: u32,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Measured time per trial.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub duration: Duration,
    /// Warm-up per trial.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "300ms")]
    pub warmup: Duration,
    /// Also write the result in Bencher Metric Format (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub bmf: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of `cargo xtask calibrate`.
#[derive(Debug, Clone, Args)]
pub struct CalibrateArgs {
    /// Rounds: each runs every condition (the server against itself, and each rise) once.
    #[arg(long, default_value_t = 10)]
    pub runs: u32,
    /// Rises of the server's CPU per message to inject, as fractions of its measured cost.
    #[arg(long, value_delimiter = ',', default_value = "3%,5%,10%")]
    pub rises: Vec<String>,
    /// Flags for every regress run (its defaults otherwise), e.g. '--duration 500ms --budget 60s'.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub regress_args: Option<String>,
    /// The fixture's strategy: the built server with one that serves the nonblocking session
    /// (where `--calibration-cost` works): reactor-pool, event-loop, async or uring.
    #[arg(long, default_value = DEFAULT_GATE_STRATEGY)]
    pub strategy: String,
    #[command(flatten)]
    pub run: RunArgs,
}

/// The strategy `regress` and `calibrate` run by default: the server's own default.
pub const DEFAULT_GATE_STRATEGY: &str = "reactor-pool";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measuring_commands_share_the_run_flags() {
        for command in ["bench", "capacity", "regress"] {
            let mut argv = vec!["cargo xtask", command];
            if command == "capacity" {
                argv.extend(["--slo", "p99<=1ms"]);
            }
            argv.extend([
                "--server-args",
                "--workers 4 --queue 64",
                "--no-pin",
                "--out",
                "somewhere",
                "--ready-timeout",
                "3s",
                "--build-profile",
                "dev",
            ]);
            let run = run_flags(&argv);
            assert_eq!(run.server_args(), ["--workers", "4", "--queue", "64"]);
            assert!(run.no_pin, "{command}");
            assert_eq!(run.out, Some(PathBuf::from("somewhere")));
            assert_eq!(run.ready_timeout, Duration::from_secs(3));
            assert_eq!(run.build.build_profile, BuildProfile::Dev);
            assert_eq!(run.build.bin_dir, None);
        }
        let defaults = Xtask::try_parse_from(["cargo xtask", "regress"]).expect("parses");
        let Command::Regress(args) = defaults.command else {
            panic!("not regress");
        };
        assert!(args.run.server_args().is_empty() && !args.run.no_pin);
        assert_eq!(args.run.ready_timeout, Duration::from_secs(10));
        assert_eq!(args.run.build.build_profile, BuildProfile::Release);
        assert!(!args.run.keep_awake);
    }

    /// The run flags of a measuring command's command line.
    fn run_flags(argv: &[&str]) -> RunArgs {
        match Xtask::try_parse_from(argv).expect("parses").command {
            Command::Bench(args) => args.run,
            Command::Capacity(args) => args.run,
            Command::Regress(args) => args.run,
            other => panic!("{argv:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn keep_awake_is_a_run_flag_that_needs_pinning_and_a_server_xtask_starts() {
        for command in ["bench", "capacity", "regress"] {
            let mut argv = vec!["cargo xtask", command, "--keep-awake"];
            if command == "capacity" {
                argv.extend(["--slo", "p99<=1ms"]);
            }
            let run = run_flags(&argv);
            assert!(run.keep_awake, "{command}");
            argv.push("--no-pin");
            assert!(Xtask::try_parse_from(&argv).is_err(), "{command} --no-pin");
        }
        let external = [
            "cargo xtask",
            "capacity",
            "--slo",
            "p99<=1ms",
            "--target",
            "127.0.0.1:7",
            "--keep-awake",
        ];
        assert!(Xtask::try_parse_from(external).is_err());
    }
}
