//! The `echo-server` command line: flags (clap derive), the run (start, print the listening line,
//! wait for SIGINT/SIGTERM, drain, report), and exit codes: 0 after a clean shutdown, 1 when the
//! server cannot start (address in use, ...), 2 for bad flags (clap's usage error).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::core::config::{CalibrationCost, Config, Overflow, Strategy};
use crate::server::Server;

/// A TCP echo server with interchangeable concurrency strategies, built to be measured.
///
/// Prints `listening on ADDR` as its first stdout line once it accepts connections. On SIGINT or
/// SIGTERM it stops accepting, lets open sessions finish (up to --drain-timeout), prints its final
/// counters to stderr, writes them to --stats-json if given, and exits 0.
///
/// Every default below is `Config::default()`'s (one source; a test ties them).
#[derive(Debug, Parser)]
#[command(name = "echo-server", version)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the real one is printed).
    #[arg(long, default_value_t = defaults().addr)]
    pub addr: SocketAddr,
    /// How connections are served.
    #[arg(long, value_enum, default_value_t = defaults().strategy)]
    pub strategy: Strategy,
    /// Worker threads for `pool`, `reactor-pool`, `rayon` and `async` [default: number of cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Poll loops (threads) for `event-loop` and `uring` [default: number of cores].
    #[arg(long)]
    pub loops: Option<usize>,
    /// Bound of the pool's queue of accepted connections (and of reactor-pool's queue of ready
    /// connections).
    #[arg(long, default_value_t = defaults().queue)]
    pub queue: usize,
    /// What the pool's acceptor does when the queue is full.
    #[arg(long, value_enum, default_value_t = defaults().overflow)]
    pub overflow: Overflow,
    /// Read buffer in bytes: the most a session reads at once. The blocking strategies hold one
    /// per connection; the nonblocking ones one per thread, and per connection only while a
    /// write is pending.
    #[arg(long, default_value_t = defaults().buffer_size)]
    pub buffer_size: usize,
    /// Fairness budget of event-loop, reactor-pool and async: reads (each up to --buffer-size
    /// bytes) one connection gets per turn before its thread serves the next ready one.
    #[arg(long, default_value_t = defaults().reads_per_turn)]
    pub reads_per_turn: usize,
    /// Close a connection that sends nothing for this long (e.g. 500ms, 30s, 2m).
    #[arg(long, value_parser = parse_duration, default_value_t = defaults().idle_timeout.into())]
    pub idle_timeout: humantime::Duration,
    /// Close a connection whose peer stops reading for this long.
    #[arg(long, value_parser = parse_duration, default_value_t = defaults().write_timeout.into())]
    pub write_timeout: humantime::Duration,
    /// On SIGINT/SIGTERM, how long open sessions may go on before they are closed.
    #[arg(long, value_parser = parse_duration, default_value_t = defaults().drain_timeout.into())]
    pub drain_timeout: humantime::Duration,
    /// Beyond this many open connections, new ones are closed at once and counted `rejected`
    /// (accepting never pauses, so the backlog never fills with clients nobody will serve).
    #[arg(long, default_value_t = defaults().max_connections)]
    pub max_connections: usize,
    /// listen(2) backlog.
    #[arg(long, default_value_t = defaults().backlog)]
    pub backlog: i32,
    /// Write the final counters as JSON (schema echolab.server-stats/1) to this file.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// Log each connection that ends in an error or a timeout to stderr, with the peer's address
    /// and the kind (otherwise they are only counted). Also on with ECHO_SERVER_LOG=debug.
    #[arg(short, long)]
    pub verbose: bool,
    /// Calibration fixture (hidden): extra CPU work per 64 bytes received, e.g. 200ns, so that
    /// this server differs from the plain one only by a known cost per message. Nonblocking
    /// strategies only.
    #[arg(long, hide = true, value_parser = parse_duration)]
    pub calibration_cost: Option<humantime::Duration>,
}

/// The defaults of every flag.
fn defaults() -> Config {
    Config::default()
}

/// Parses durations written as `500ms`, `3s`, `2m` (what every echolab CLI accepts).
pub fn parse_duration(text: &str) -> Result<humantime::Duration, String> {
    text.parse::<humantime::Duration>()
        .map_err(|e| format!("`{text}` is not a duration like 500ms, 3s or 2m ({e})"))
}

impl Args {
    /// The configuration these flags ask for: `Config::default()` with each flag's value.
    pub fn config(&self) -> Config {
        let defaults = Config::default();
        Config {
            addr: self.addr,
            strategy: self.strategy,
            workers: self.workers.unwrap_or(defaults.workers),
            loops: self.loops.unwrap_or(defaults.loops),
            queue: self.queue,
            overflow: self.overflow,
            buffer_size: self.buffer_size,
            reads_per_turn: self.reads_per_turn,
            idle_timeout: self.idle_timeout.into(),
            write_timeout: self.write_timeout.into(),
            drain_timeout: self.drain_timeout.into(),
            max_connections: self.max_connections,
            backlog: self.backlog,
            log_connections: self.verbose
                || std::env::var("ECHO_SERVER_LOG").is_ok_and(|level| level == "debug"),
            panic_trigger: None,
            calibration_cost: self
                .calibration_cost
                .map(|cost| CalibrationCost::measure(cost.into())),
        }
    }
}

/// Runs the server until SIGINT/SIGTERM; returns after the drain with the counters reported.
pub fn run(args: &Args) -> anyhow::Result<()> {
    // Register the handlers before announcing the address: a signal sent right after the
    // listening line must reach the drain, not kill the process.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    raise_descriptor_limit();
    let server = Server::start(args.config())?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", server.local_addr()).context("writing to stdout")?;
        stdout.flush().context("flushing stdout")?;
    }
    let signal = signals.forever().next();
    eprintln!(
        "echo-server: {} received, draining (up to {:?})",
        signal.map_or_else(|| "end of signals".to_string(), signal_name),
        args.drain_timeout.to_string()
    );
    let stats = server.shutdown();
    // Formatted first and written at once, so the counters reach stderr in one piece.
    let mut report = Vec::new();
    stats
        .write_human(&mut report)
        .context("formatting the final counters")?;
    std::io::stderr()
        .write_all(&report)
        .context("writing the final counters")?;
    if let Some(path) = &args.stats_json {
        let json = serde_json::to_string_pretty(&stats).context("serializing the counters")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the counters to {}", path.display()))?;
    }
    Ok(())
}

/// Raises the soft open-files limit to the hard one (as nginx and most servers do): the default
/// soft limit (often 1024) would cap connections far below `--max-connections`.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                eprintln!(
                    "echo-server: could not raise the open-files limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        SIGINT => "SIGINT".into(),
        SIGTERM => "SIGTERM".into(),
        other => format!("signal {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults are `Config::default()`'s: no flag given, the same configuration.
    #[test]
    fn no_flags_give_config_default() {
        let config = Args::parse_from(["echo-server"]).config();
        let expected = Config {
            // The one value that does not come from a flag's default.
            log_connections: config.log_connections,
            ..Config::default()
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn durations_parse_and_bad_ones_say_how_to_write_them() {
        let args = Args::parse_from([
            "echo-server",
            "--idle-timeout",
            "1m",
            "--write-timeout",
            "250ms",
        ]);
        let config = args.config();
        assert_eq!(config.idle_timeout, std::time::Duration::from_secs(60));
        assert_eq!(config.write_timeout, std::time::Duration::from_millis(250));
        let err = Args::try_parse_from(["echo-server", "--idle-timeout", "soon"]).unwrap_err();
        assert!(err.to_string().contains("500ms, 3s or 2m"), "{err}");
    }
}
