//! The command line: flags (clap derive) → [`Config`] → [`crate::run_with`] → summary on stdout,
//! files, and an exit code: 0 ok, 1 errors above `--max-errors` or target unreachable or the run
//! failed, 2 usage, 3 a run that succeeded missed its `--slo`. `main.rs` only calls [`main_with`].

use crate::config::{Arrival, Config, RateStep, TimingMode, default_threads};
use crate::report::StepReport;
use crate::run::{Observer, Progress};
use crate::summary::write_summary;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: errors above `--max-errors`, target unreachable, or the run failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: bad command line.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: an `--slo` clause was not met.
pub const EXIT_SLO: i32 = 3;

/// A verifying TCP echo load generator.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
#[command(subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands besides the default (a run).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add up reports (histograms and counts, exactly) from several loadgens into one.
    Merge {
        /// Reports to merge.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Write the merged report here.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// The baseline loadgen is compared with: a thread-per-connection blocking client
    /// (rust_echo_bench's design), closed loop, every byte verified. Prints one JSON line.
    BaselineBlocking {
        /// Echo server address, HOST:PORT.
        #[arg(long)]
        target: String,
        /// Connections (one OS thread each).
        #[arg(long, default_value_t = 128)]
        connections: usize,
        /// Bytes per message.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Measured window.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        duration: Duration,
        /// Warm-up before measuring.
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        warmup: Duration,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 500ms, 3s, 2m)"))
}

fn duration_ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The flags of a run.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Echo server address, HOST:PORT.
    #[arg(long, required = true)]
    pub target: Option<String>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Client threads [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Length of the measured window (default 5s when --messages is not given).
    #[arg(long, value_parser = parse_duration, conflicts_with_all = ["messages", "rate_steps", "steps_from"])]
    pub duration: Option<Duration>,
    /// Measured messages in total (instead of --duration).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Warm-up before measuring: run, not recorded.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Write the JSON report (schema echolab.loadgen/1) to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Errors tolerated before exiting with 1.
    #[arg(long, default_value_t = 0)]
    pub max_errors: u64,
    /// No live progress display.
    #[arg(long)]
    pub quiet: bool,
    /// Messages in flight per connection (closed loop); with --rate, the cap on them.
    #[arg(long)]
    pub depth: Option<u32>,
    /// Open loop: total messages per second across all connections.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: spacing of intended send times.
    #[arg(long, value_enum, default_value_t = Arrival::Uniform)]
    pub arrival: Arrival,
    /// How client threads wait: precise spins between sends (and busy-polls in closed loop),
    /// sleep blocks until shortly before each send; auto: precise only where the loadgen has
    /// cores of its own (pinned to fewer CPUs than are online, one per thread).
    #[arg(long, value_enum, default_value_t = TimingMode::Auto)]
    pub timing: TimingMode,
    /// Open loop in steps over the same connections: these rates (msg/s, comma-separated),
    /// each for --step-duration; the report has one entry per step in `steps`.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "RATES",
        conflicts_with_all = ["rate", "messages", "steps_from"]
    )]
    pub rate_steps: Vec<f64>,
    /// Measured time of each --rate-steps step.
    #[arg(long, value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    pub step_duration: Duration,
    /// Time each step after the first runs at its rate before it is measured.
    #[arg(long, value_parser = parse_duration, default_value = "250ms", value_name = "DURATION")]
    pub step_settle: Duration,
    /// Open loop in steps read as the run goes: one `RATE DURATION` line per step (e.g.
    /// `20000 2s`) from FILE, or `-` for standard input; each step's result is printed on
    /// stdout as one JSON line as it ends, and the end of the input ends the run.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["rate", "messages"])]
    pub steps_from: Option<PathBuf>,
    /// Churn: connect, M echoes, close, repeat.
    #[arg(long, value_name = "M")]
    pub messages_per_connection: Option<u64>,
    /// Source addresses for new connections, e.g. 127.0.0.2-127.0.0.64 (comma-separated).
    #[arg(long, value_name = "RANGES")]
    pub source_addrs: Vec<String>,
    /// Write each message in pieces of this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub write_chunk: Option<usize>,
    /// A message with no complete echo within this time is a timeout error.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,
    /// A connection without a verified echo for longer than this is counted as starved.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub stall_threshold: Duration,
    /// Service-level objective, e.g. 'p99<=1ms,p999<=5ms,errors=0'; exit 3 when unmet.
    #[arg(long)]
    pub slo: Option<String>,
    /// Wait until this UNIX time (seconds) before starting.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub start_at: Option<f64>,
    /// Write the HdrHistogram percentile distribution (.hgrm) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Write an HdrHistogram interval log (1 s intervals) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<PathBuf>,
}

impl RunArgs {
    /// The configuration these flags describe.
    pub fn to_config(&self) -> Config {
        let mut c = Config::new(self.target.clone().unwrap_or_default());
        c.connections = self.connections;
        c.threads = self.threads.unwrap_or_else(default_threads);
        c.size_bytes = self.size;
        c.messages = self.messages;
        let stepped = !self.rate_steps.is_empty() || self.steps_from.is_some();
        c.duration_ms = match (self.messages, self.duration) {
            (Some(_), _) => None,
            (None, Some(d)) => Some(duration_ms(d)),
            (None, None) if stepped => None,
            (None, None) => Some(5_000),
        };
        c.warmup_ms = duration_ms(self.warmup);
        c.json = self.json.clone();
        c.max_errors = self.max_errors;
        c.quiet = self.quiet;
        c.depth = self.depth;
        c.rate_per_s = self.rate;
        c.arrival = self.arrival;
        c.timing = self.timing;
        c.rate_steps = self
            .rate_steps
            .iter()
            .map(|&rate_per_s| RateStep {
                rate_per_s,
                duration_ms: duration_ms(self.step_duration),
            })
            .collect();
        c.step_settle_ms = duration_ms(self.step_settle);
        c.steps_from = self.steps_from.clone();
        c.messages_per_connection = self.messages_per_connection;
        c.source_addrs = self.source_addrs.clone();
        c.write_chunk_bytes = self.write_chunk;
        c.timeout_ms = duration_ms(self.timeout);
        c.stall_threshold_ms = duration_ms(self.stall_threshold);
        c.slo = self.slo.clone();
        c.start_at_unix_s = self.start_at;
        c.hgrm = self.hgrm.clone();
        c.hlog = self.hlog.clone();
        c
    }
}

static INTERRUPTED: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
    std::sync::OnceLock::new();

/// Makes SIGINT and SIGTERM end a run early (it still reports what it measured) instead of
/// killing the process. The binary calls this; library callers of [`main_with`] may choose not
/// to, so that their own signal handling stays as it was.
pub fn install_signal_handlers() -> anyhow::Result<()> {
    let flag = INTERRUPTED
        .get_or_init(|| std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)))
        .clone();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, flag.clone()).context("installing a signal handler")?;
    }
    Ok(())
}

/// Runs the CLI with `args` (including the program name); returns the exit code.
pub fn main_with(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let text = e.render().to_string();
            if e.use_stderr() {
                let _ = write!(stderr, "{text}");
            } else {
                let _ = write!(stdout, "{text}");
            }
            return code;
        }
    };
    match cli.command {
        Some(Command::Merge { inputs, output }) => {
            match crate::merge::merge_files(&inputs, &output) {
                Ok(report) => {
                    let _ = write_summary(&report, stdout);
                    EXIT_OK
                }
                Err(e) => {
                    let _ = writeln!(stderr, "error: {e:#}");
                    EXIT_FAILED
                }
            }
        }
        Some(Command::BaselineBlocking {
            target,
            connections,
            size,
            duration,
            warmup,
        }) => {
            let config = crate::baseline::BaselineConfig {
                target,
                connections,
                size_bytes: size,
                warmup_ms: duration_ms(warmup),
                duration_ms: duration_ms(duration),
            };
            if connections == 0 || size == 0 || config.duration_ms == 0 {
                let _ = writeln!(stderr, "error: connections, size and duration must be > 0");
                return EXIT_USAGE;
            }
            match crate::baseline::run_blocking(&config) {
                Ok(result) => {
                    let line = serde_json::json!({ "config": config, "result": result });
                    let _ = writeln!(stdout, "{line}");
                    if result.errors > 0 {
                        EXIT_FAILED
                    } else {
                        EXIT_OK
                    }
                }
                Err(e) => {
                    let _ = writeln!(stderr, "error: {e:#}");
                    EXIT_FAILED
                }
            }
        }
        None => run_command(&cli.run, stdout, stderr),
    }
}

fn run_command(args: &RunArgs, stdout: &mut dyn Write, stderr: &mut dyn Write) -> i32 {
    let config = args.to_config();
    if let Err(e) = config.validate() {
        let _ = writeln!(stderr, "error: {e}");
        return EXIT_USAGE;
    }
    // Bad --source-addrs text is a usage error (2), found before anything runs.
    let sources = match crate::run::parse_source_addrs(&config.source_addrs) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(stderr, "error: bad --source-addrs: {e:#}");
            return EXIT_USAGE;
        }
    };
    // A target that does not resolve is left to the run (exit 1); a family mismatch is usage.
    if let Ok(target) = crate::run::resolve(&config.target)
        && let Err(e) = crate::run::check_source_family(target, &sources)
    {
        let _ = writeln!(stderr, "error: {e:#}");
        return EXIT_USAGE;
    }
    let slo = match config.slo.as_deref().map(crate::slo::parse_slo).transpose() {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(stderr, "error: bad --slo: {e}");
            return EXIT_USAGE;
        }
    };
    // Steered runs print each step's result on stdout as one JSON line as it ends.
    let step_lines: Option<&mut dyn Write> = if config.steps_from.is_some() {
        Some(&mut *stdout)
    } else {
        None
    };
    let mut observer = match CliObserver::new(&config, step_lines) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(stderr, "error: {e:#}");
            return EXIT_FAILED;
        }
    };
    let result = crate::run::run_with(&config, &mut observer);
    let hlog_result = observer.finish();
    let steps_input_error = observer.steps_input_error.take();
    drop(observer);
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(stderr, "error: {e:#}");
            return EXIT_FAILED;
        }
    };
    let mut code = EXIT_OK;
    let _ = write_summary(&report, stdout);
    let _ = stdout.flush();
    if let Err(e) = hlog_result {
        let _ = writeln!(stderr, "error: writing --hlog: {e:#}");
        code = EXIT_FAILED;
    }
    if let Some(path) = &config.json
        && let Err(e) = crate::report::write_json(&report, path)
    {
        let _ = writeln!(stderr, "error: {e:#}");
        code = EXIT_FAILED;
    }
    if let Some(path) = &config.hgrm {
        let written = File::create(path)
            .map(BufWriter::new)
            .map_err(anyhow::Error::from)
            .and_then(|mut f| {
                let h = report.latency_histogram()?;
                crate::hgrm::write_hgrm(&h, &mut f)?;
                f.flush()?;
                Ok(())
            });
        if let Err(e) = written {
            let _ = writeln!(stderr, "error: writing {}: {e:#}", path.display());
            code = EXIT_FAILED;
        }
    }
    if report.unreachable() {
        let _ = writeln!(
            stderr,
            "error: target {} could not be reached",
            config.target
        );
        code = EXIT_FAILED;
    } else if report.errors.total > config.max_errors {
        let _ = writeln!(
            stderr,
            "error: {} error(s), more than --max-errors {}",
            report.errors.total, config.max_errors
        );
        code = EXIT_FAILED;
    }
    if let Some(message) = steps_input_error {
        let _ = writeln!(stderr, "error: --steps-from {message}");
        code = EXIT_FAILED;
    }
    if let Some(slo) = slo {
        for step in &report.steps {
            let verdict = crate::slo::check_step(&slo, step);
            let _ = writeln!(
                stdout,
                "SLO step {} ({} msg/s): {}",
                step.index,
                step.target_per_s,
                if verdict.met { "met" } else { "NOT MET" }
            );
        }
        let verdict = crate::slo::check(&slo, &report);
        for line in &verdict.lines {
            let _ = writeln!(stdout, "{line}");
        }
        // 3 only for a run that succeeded: a failed run (1) stays failed, whatever the SLO.
        if !verdict.met && code == EXIT_OK {
            code = EXIT_SLO;
        }
    }
    code
}

/// The CLI's observer: the live progress bar, the `.hlog` writer and (steered runs) one JSON
/// line per step on stdout.
struct CliObserver<'a> {
    /// Set by SIGINT/SIGTERM: end the run early and report what was measured.
    interrupted: std::sync::Arc<std::sync::atomic::AtomicBool>,
    bar: Option<ProgressBar>,
    hlog: Option<crate::hlog::HlogWriter>,
    hlog_error: Option<anyhow::Error>,
    step_lines: Option<&'a mut dyn Write>,
    steps_input_error: Option<String>,
}

impl<'a> CliObserver<'a> {
    fn new(config: &Config, step_lines: Option<&'a mut dyn Write>) -> anyhow::Result<Self> {
        let bar = (!config.quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        let hlog = match &config.hlog {
            Some(path) => Some(crate::hlog::HlogWriter::create(path)?),
            None => None,
        };
        let interrupted = INTERRUPTED
            .get()
            .cloned()
            .unwrap_or_else(|| std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)));
        Ok(CliObserver {
            interrupted,
            bar,
            hlog,
            hlog_error: None,
            step_lines,
            steps_input_error: None,
        })
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(e) = self.hlog_error.take() {
            return Err(e);
        }
        if let Some(h) = self.hlog.take() {
            h.finish()?;
        }
        Ok(())
    }
}

impl Observer for CliObserver<'_> {
    fn should_stop(&mut self) -> bool {
        self.interrupted.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn on_step(&mut self, step: &StepReport) {
        if let Some(out) = self.step_lines.as_mut() {
            // One line per step, flushed at once: whoever steers the run is waiting for it.
            if let Ok(line) = serde_json::to_string(step) {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    }

    fn on_steps_input_error(&mut self, message: &str) {
        self.steps_input_error = Some(message.to_string());
    }

    fn on_progress(&mut self, p: &Progress) {
        let Some(bar) = &self.bar else {
            return;
        };
        let (fraction, phase) = if p.elapsed < p.warmup {
            (0.0, format!("warm-up {:.1}s", p.elapsed.as_secs_f64()))
        } else {
            let measured = p.elapsed - p.warmup;
            match (p.window, p.messages_planned) {
                (Some(w), _) if !w.is_zero() => (
                    measured.as_secs_f64() / w.as_secs_f64(),
                    format!(
                        "{:.1}s/{:.1}s",
                        measured.as_secs_f64().min(w.as_secs_f64()),
                        w.as_secs_f64()
                    ),
                ),
                (_, Some(n)) if n > 0 => (
                    p.verified as f64 / n as f64,
                    format!("{}/{} messages", p.verified, n),
                ),
                _ => (0.0, String::new()),
            }
        };
        bar.set_position((fraction.clamp(0.0, 1.0) * 1000.0) as u64);
        let rate = p
            .last_interval_per_s
            .map(|r| format!("{r:.0} msg/s"))
            .unwrap_or_else(|| "- msg/s".into());
        let p99 = p
            .last_interval_p99_us
            .map(|v| format!("p99 {v} µs"))
            .unwrap_or_else(|| "p99 -".into());
        bar.set_message(format!(
            "{phase}  {rate}  {p99} (last 1s)  errors {}  starved {}",
            p.errors, p.starved_now
        ));
    }

    fn on_interval(
        &mut self,
        start: Duration,
        length: Duration,
        window_start: SystemTime,
        latency: &Histogram<u64>,
    ) {
        if let Some(h) = self.hlog.as_mut()
            && let Err(e) = h.write_interval(start, length, window_start, latency)
        {
            self.hlog_error.get_or_insert(e);
            self.hlog = None;
        }
    }
}
