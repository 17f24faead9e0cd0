//! Server configuration: one `Config` for every strategy, so strategies are compared on equal
//! terms. The binary fills it from flags (`cli.rs`); tests build it directly.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::Error;

/// How accepted connections are served. `echo-server --help` lists these with what each shows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum Strategy {
    /// One thread accepts and serves each connection to the end: one client at a time (baseline).
    Iterative,
    /// A new OS thread per connection: simplest concurrency; shows the cost of spawning.
    Thread,
    /// Acceptor pushes streams into a bounded crossbeam channel; W workers pull and serve them,
    /// a connection each until it ends: at most W connections served at once.
    Pool,
    /// A poller thread hands readable connections through a bounded crossbeam channel to W
    /// workers, a turn each: a fixed pool serving thousands of keep-alive connections.
    ReactorPool,
    /// Acceptor spawns each session onto a rayon pool of W threads: work stealing vs one channel.
    Rayon,
    /// Nonblocking sockets on N mio poll loops: thousands of connections on few threads.
    EventLoop,
    /// Tokio multi-threaded runtime with W threads, a task per connection: the ecosystem's default.
    Async,
    /// io_uring rings on N loops, kernel-chosen buffers: fewer syscalls per message (Linux).
    #[cfg(all(target_os = "linux", feature = "uring"))]
    Uring,
}

impl Strategy {
    /// Every strategy this build knows, in the order tables list them.
    pub const ALL: &'static [Strategy] = &[
        Strategy::Iterative,
        Strategy::Thread,
        Strategy::Pool,
        Strategy::ReactorPool,
        Strategy::Rayon,
        Strategy::EventLoop,
        Strategy::Async,
        #[cfg(all(target_os = "linux", feature = "uring"))]
        Strategy::Uring,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Iterative => "iterative",
            Strategy::Thread => "thread",
            Strategy::Pool => "pool",
            Strategy::ReactorPool => "reactor-pool",
            Strategy::Rayon => "rayon",
            Strategy::EventLoop => "event-loop",
            Strategy::Async => "async",
            #[cfg(all(target_os = "linux", feature = "uring"))]
            Strategy::Uring => "uring",
        }
    }

    /// Whether `--workers` sets this strategy's thread count.
    pub fn uses_workers(self) -> bool {
        matches!(
            self,
            Strategy::Pool | Strategy::ReactorPool | Strategy::Rayon | Strategy::Async
        )
    }

    /// Whether `--loops` sets this strategy's thread count.
    pub fn uses_loops(self) -> bool {
        match self {
            Strategy::EventLoop => true,
            #[cfg(all(target_os = "linux", feature = "uring"))]
            Strategy::Uring => true,
            _ => false,
        }
    }

    /// Whether connections are served by the nonblocking session (`session/nonblocking.rs`).
    pub fn uses_nonblocking_session(self) -> bool {
        !matches!(
            self,
            Strategy::Iterative | Strategy::Thread | Strategy::Pool | Strategy::Rayon
        )
    }

    /// Whether at most `--workers` connections are served at once (the rest wait).
    pub fn serves_at_most_workers(self) -> bool {
        matches!(self, Strategy::Pool | Strategy::Rayon)
    }

    /// Looks a strategy up by its command-line name.
    pub fn from_name(name: &str) -> Option<Strategy> {
        Strategy::ALL.iter().copied().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the pool's acceptor does when the queue is full.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Stop accepting until a worker takes a connection off the queue (backpressure reaches the
    /// listen backlog, then the clients).
    Block,
    /// Close the new connection at once and count it `rejected`.
    Reject,
}

/// Everything a strategy needs to know. `Config::default()` is the CLI's defaults (the one
/// source of them).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address to bind; port 0 picks a free one (read it back from `Server::local_addr`).
    pub addr: SocketAddr,
    pub strategy: Strategy,
    /// Worker threads for `pool`, `reactor-pool`, `rayon` and `async`.
    pub workers: usize,
    /// Poll loops (threads) for `event-loop` and `uring`.
    pub loops: usize,
    /// Bound of the pool's queue of accepted connections, and of `reactor-pool`'s queue of
    /// ready ones.
    pub queue: usize,
    pub overflow: Overflow,
    /// The most a session reads at once. The blocking strategies hold one such buffer per
    /// connection; the nonblocking ones one per thread, and per connection only while output the
    /// socket did not take is pending.
    pub buffer_size: usize,
    /// Fairness budget of the readiness-driven strategies (`event-loop`, `reactor-pool`,
    /// `async`): reads one connection gets per turn (each up to `buffer_size` bytes) before its
    /// thread serves the next ready connection.
    pub reads_per_turn: usize,
    /// A connection that sends nothing for this long is closed and counted `timed_out`.
    pub idle_timeout: Duration,
    /// A write that makes no progress for this long ends the connection (`timed_out`).
    pub write_timeout: Duration,
    /// On shutdown, how long open sessions may go on before they are closed.
    pub drain_timeout: Duration,
    /// Beyond this many open connections, new ones are closed at once and counted `rejected`.
    pub max_connections: usize,
    /// `listen(2)` backlog.
    pub backlog: i32,
    /// Log each connection that ends in an error or a timeout to stderr (peer address and kind);
    /// otherwise they are only counted.
    pub log_connections: bool,
    /// Test hook: a session whose input contains these bytes panics (proves panics are contained).
    #[doc(hidden)]
    pub panic_trigger: Option<Vec<u8>>,
    /// Calibration hook (the hidden `--calibration-cost` flag): a fixed amount of extra CPU work
    /// per 64 bytes received by the nonblocking session, so that a fixture server differs from
    /// the plain one only by a known cost per message (`cargo xtask calibrate` uses it).
    #[doc(hidden)]
    pub calibration_cost: Option<CalibrationCost>,
}

/// Extra CPU work per 64 bytes received: a dependent chain of multiplications whose length was
/// measured at start-up to take `per_64_bytes` on this CPU. Counted in work, not in wall time, so
/// a server that is preempted in the middle still does the same work per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibrationCost {
    /// The CPU time asked for per 64 bytes.
    pub per_64_bytes: Duration,
    /// Loop iterations that take `per_64_bytes` here (the fastest of several measurements, so
    /// a measurement that was preempted does not shrink the work).
    pub iterations_per_64_bytes: u64,
}

impl CalibrationCost {
    /// Measures how many iterations of [`spin`] take `per_64_bytes` on this CPU.
    pub fn measure(per_64_bytes: Duration) -> Self {
        const PROBE_ITERATIONS: u64 = 200_000;
        let fastest = (0..15)
            .map(|_| {
                let started = std::time::Instant::now();
                spin(PROBE_ITERATIONS);
                started.elapsed()
            })
            .min()
            .unwrap_or(Duration::from_millis(1))
            .max(Duration::from_nanos(1));
        let iterations =
            per_64_bytes.as_nanos() * u128::from(PROBE_ITERATIONS) / fastest.as_nanos();
        CalibrationCost {
            per_64_bytes,
            iterations_per_64_bytes: u64::try_from(iterations).unwrap_or(u64::MAX),
        }
    }

    /// Does the work for `bytes` received (pro rata, so it does not depend on how reads batch).
    pub fn spend(&self, bytes: usize) {
        spin(self.iterations_for(bytes));
    }

    /// The iterations [`CalibrationCost::spend`] runs for `bytes`.
    pub fn iterations_for(&self, bytes: usize) -> u64 {
        let iterations = u128::from(self.iterations_per_64_bytes) * bytes as u128 / 64;
        u64::try_from(iterations).unwrap_or(u64::MAX)
    }
}

/// `iterations` dependent multiply-adds the optimizer cannot remove.
fn spin(iterations: u64) {
    let mut x = std::hint::black_box(0x9e37_79b9_7f4a_7c15_u64);
    for _ in 0..iterations {
        x = std::hint::black_box(x.wrapping_mul(0x5851_f42d_4c95_7f2d).wrapping_add(1));
    }
    std::hint::black_box(x);
}

/// Number of cores, the default for worker and loop counts.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 7878)),
            // A fixed pool that serves every connection: with no flags, silent or persistent
            // clients beyond --workers never keep another client waiting (README, "Which
            // strategy?").
            strategy: Strategy::ReactorPool,
            workers: available_cores(),
            loops: available_cores(),
            queue: 1024,
            overflow: Overflow::Block,
            buffer_size: 16 * 1024,
            reads_per_turn: 16,
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            backlog: 1024,
            log_connections: false,
            panic_trigger: None,
            calibration_cost: None,
        }
    }
}

impl Config {
    /// A config on `127.0.0.1:0` with the given strategy: what tests start from.
    pub fn loopback(strategy: Strategy) -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            strategy,
            ..Config::default()
        }
    }

    /// The test hook: panics when `data` contains the configured trigger (never otherwise).
    pub fn check_panic_trigger(&self, data: &[u8]) {
        if let Some(trigger) = &self.panic_trigger
            && data.windows(trigger.len()).any(|w| w == trigger.as_slice())
        {
            panic!("panic trigger received (test hook)");
        }
    }

    /// The calibration hook: spends the configured extra CPU work for `bytes` received.
    pub fn spend_calibration_cost(&self, bytes: usize) {
        if let Some(cost) = &self.calibration_cost {
            cost.spend(bytes);
        }
    }

    /// Checks values that would make the server misbehave rather than fail loudly.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Config(what.to_string()));
        if self.workers == 0 {
            return bad("--workers must be at least 1");
        }
        if self.loops == 0 {
            return bad("--loops must be at least 1");
        }
        if self.queue == 0 {
            return bad("--queue must be at least 1");
        }
        if self.buffer_size == 0 {
            return bad("--buffer-size must be at least 1 byte");
        }
        if self.reads_per_turn == 0 {
            return bad("--reads-per-turn must be at least 1");
        }
        if self.max_connections == 0 {
            return bad("--max-connections must be at least 1");
        }
        if self.idle_timeout.is_zero() || self.write_timeout.is_zero() {
            return bad("timeouts must be longer than zero");
        }
        if self.calibration_cost.is_some() && !self.strategy.uses_nonblocking_session() {
            return bad(
                "--calibration-cost needs a nonblocking strategy (event-loop, async, uring)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time of the calling thread.
    fn thread_cpu() -> Duration {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into `now`.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
    }

    #[test]
    fn the_calibration_cost_is_pro_rata_per_64_bytes() {
        let cost = CalibrationCost {
            per_64_bytes: Duration::from_nanos(200),
            iterations_per_64_bytes: 640,
        };
        assert_eq!(cost.iterations_for(64), 640);
        assert_eq!(cost.iterations_for(16 * 64), 16 * 640);
        assert_eq!(cost.iterations_for(32), 320);
        assert_eq!(cost.iterations_for(0), 0);
    }

    #[test]
    fn the_calibration_cost_is_cpu_work_of_about_the_asked_length() {
        // 20 µs per 64 bytes, 500 × 64 bytes: 10 ms of CPU. Measured in this thread's CPU time,
        // which other load on the machine does not inflate; the bounds are wide because the
        // calibration itself is a measurement.
        let cost = CalibrationCost::measure(Duration::from_micros(20));
        assert!(cost.iterations_per_64_bytes > 0);
        let started = thread_cpu();
        cost.spend(500 * 64);
        let spent = thread_cpu() - started;
        assert!(
            spent > Duration::from_millis(3) && spent < Duration::from_millis(40),
            "{spent:?} for 10 ms asked ({cost:?})"
        );
    }

    #[test]
    fn a_calibration_cost_needs_the_nonblocking_session() {
        let cost = Some(CalibrationCost::measure(Duration::from_nanos(100)));
        for strategy in Strategy::ALL {
            let config = Config {
                calibration_cost: cost,
                ..Config::loopback(*strategy)
            };
            assert_eq!(
                config.validate().is_ok(),
                strategy.uses_nonblocking_session(),
                "{strategy}"
            );
        }
        assert!(Strategy::EventLoop.uses_nonblocking_session());
        assert!(!Strategy::Pool.uses_nonblocking_session());
    }
}
