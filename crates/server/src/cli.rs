//! The `echo-server` command line: flags (clap derive), the run (start, print the listening line,
//! wait for SIGINT/SIGTERM, drain, report), and exit codes: 0 after a clean shutdown, 1 when the
//! server cannot start (address in use, ...), 2 for bad flags (clap's usage error).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::{Config, Overflow, Strategy, available_cores};
use crate::server::Server;

/// A TCP echo server with interchangeable concurrency strategies, built to be measured.
///
/// Prints `listening on ADDR` as its first stdout line once it accepts connections. On SIGINT or
/// SIGTERM it stops accepting, lets open sessions finish (up to --drain-timeout), prints its final
/// counters to stderr, writes them to --stats-json if given, and exits 0.
#[derive(Debug, Parser)]
#[command(name = "echo-server", version)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the real one is printed).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: SocketAddr,
    /// How connections are served.
    #[arg(long, value_enum, default_value_t = Strategy::Pool)]
    pub strategy: Strategy,
    /// Worker threads for `pool`, `rayon` and `async` [default: number of cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Poll loops (threads) for `event-loop` and `uring` [default: number of cores].
    #[arg(long)]
    pub loops: Option<usize>,
    /// Bound of the pool's queue of accepted connections.
    #[arg(long, default_value_t = 1024)]
    pub queue: usize,
    /// What the pool's acceptor does when the queue is full.
    #[arg(long, value_enum, default_value_t = Overflow::Block)]
    pub overflow: Overflow,
    /// Read buffer in bytes: the most a session reads at once and holds per connection (the
    /// blocking strategies hold one per connection; event-loop, async and uring only while a
    /// write is pending).
    #[arg(long, default_value_t = 16 * 1024)]
    pub buffer_size: usize,
    /// Close a connection that sends nothing for this long (e.g. 500ms, 30s, 2m).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub idle_timeout: Duration,
    /// Close a connection whose peer stops reading for this long.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub write_timeout: Duration,
    /// On SIGINT/SIGTERM, how long open sessions may go on before they are closed.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub drain_timeout: Duration,
    /// Beyond this many open connections, new ones are closed at once and counted `rejected`
    /// (accepting never pauses, so the backlog never fills with clients nobody will serve).
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// listen(2) backlog.
    #[arg(long, default_value_t = 1024)]
    pub backlog: i32,
    /// Write the final counters as JSON (schema echolab.server-stats/1) to this file.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// Log each connection that ends in an error or a timeout to stderr, with the peer's address
    /// and the kind (otherwise they are only counted). Also on with ECHO_SERVER_LOG=debug.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Parses durations written as `500ms`, `3s`, `2m` (what every echolab CLI accepts).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 500ms, 3s or 2m ({e})"))
}

impl Args {
    pub fn config(&self) -> Config {
        Config {
            addr: self.addr,
            strategy: self.strategy,
            workers: self.workers.unwrap_or_else(available_cores),
            loops: self.loops.unwrap_or_else(available_cores),
            queue: self.queue,
            overflow: self.overflow,
            buffer_size: self.buffer_size,
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            drain_timeout: self.drain_timeout,
            max_connections: self.max_connections,
            backlog: self.backlog,
            log_connections: self.verbose
                || std::env::var("ECHO_SERVER_LOG").is_ok_and(|level| level == "debug"),
            panic_trigger: None,
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
        args.drain_timeout
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
