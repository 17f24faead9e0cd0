//! Server counters: how a session ends ([`Outcome`], [`ErrorKind`]), the live atomics that every
//! strategy updates, and the `Stats` snapshot printed at exit and written by `--stats-json`
//! (schema `echolab.server-stats/1`, documented in `results/README.md`).
//!
//! Sessions count bytes locally and add them once when they end, so the hot path touches no shared
//! cache line per message.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The peer ended its side and every byte was echoed.
    Completed,
    /// Idle or write timeout.
    TimedOut,
    /// The connection failed; the kind is counted.
    Failed(ErrorKind),
}

/// Why a connection ended badly. Each kind is counted on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The peer reset the connection (ECONNRESET, EPIPE).
    Reset,
    /// A session panicked; the panic was caught and only that connection ended.
    Panic,
    /// `accept(2)` failed for a reason other than running out of descriptors.
    Accept,
    /// Out of file descriptors on accept (EMFILE/ENFILE).
    Descriptors,
    /// Any other I/O error on a connection.
    Io,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Reset,
        ErrorKind::Panic,
        ErrorKind::Accept,
        ErrorKind::Descriptors,
        ErrorKind::Io,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Reset => "reset",
            ErrorKind::Panic => "panic",
            ErrorKind::Accept => "accept",
            ErrorKind::Descriptors => "descriptors",
            ErrorKind::Io => "io",
        }
    }

    /// Classifies an I/O error from a connection.
    pub fn of(err: &io::Error) -> ErrorKind {
        match err.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => ErrorKind::Reset,
            _ => ErrorKind::Io,
        }
    }
}

/// Live counters shared by the acceptor and every session.
#[derive(Debug)]
pub struct Counters {
    started: Instant,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub completed: AtomicU64,
    pub timed_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub open: AtomicU64,
    pub peak_open: AtomicU64,
    /// Connections still open when the drain timeout ran out, closed by the server.
    pub drain_closed: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            started: Instant::now(),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            open: AtomicU64::new(0),
            peak_open: AtomicU64::new(0),
            drain_closed: AtomicU64::new(0),
            errors: Default::default(),
        }
    }
}

impl Counters {
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// Counts how a session ended.
    pub fn count_outcome(&self, outcome: Outcome) {
        match outcome {
            Outcome::Completed => self.completed.fetch_add(1, Relaxed),
            Outcome::TimedOut => self.timed_out.fetch_add(1, Relaxed),
            Outcome::Failed(kind) => self.errors[kind as usize].fetch_add(1, Relaxed),
        };
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].load(Relaxed)
    }

    /// A connection was admitted (past the limits) and is now open.
    pub fn admitted(&self) {
        let now = self.open.fetch_add(1, Relaxed) + 1;
        self.peak_open.fetch_max(now, Relaxed);
    }

    /// An open connection was closed (whatever the reason).
    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    pub fn open_now(&self) -> u64 {
        self.open.load(Relaxed)
    }

    pub fn add_bytes(&self, bytes_in: u64, bytes_out: u64) {
        if bytes_in > 0 {
            self.bytes_in.fetch_add(bytes_in, Relaxed);
        }
        if bytes_out > 0 {
            self.bytes_out.fetch_add(bytes_out, Relaxed);
        }
    }

    /// A consistent-enough snapshot (each counter is read once, relaxed).
    pub fn snapshot(&self, strategy: &str, workers: usize) -> Stats {
        let errors_by_kind: BTreeMap<String, u64> = ErrorKind::ALL
            .iter()
            .map(|&k| (k.name().to_string(), self.errors(k)))
            .collect();
        Stats {
            schema: STATS_SCHEMA.to_string(),
            strategy: strategy.to_string(),
            workers: workers as u64,
            accepted: self.accepted.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            completed: self.completed.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            errors: errors_by_kind.values().sum(),
            errors_by_kind,
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            open_connections: self.open.load(Relaxed),
            peak_open_connections: self.peak_open.load(Relaxed),
            drain_closed: self.drain_closed.load(Relaxed),
            uptime_s: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// Schema id of the `--stats-json` file.
pub const STATS_SCHEMA: &str = "echolab.server-stats/1";

/// The server's counters at one moment; what `--stats-json` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub schema: String,
    pub strategy: String,
    pub workers: u64,
    /// Connections accepted (including those later rejected by a limit).
    pub accepted: u64,
    /// Connections closed at once by `--max-connections` or `--overflow reject`.
    pub rejected: u64,
    /// Sessions that ended cleanly: the peer ended its side and every byte was echoed.
    pub completed: u64,
    /// Sessions closed by the idle or write timeout.
    pub timed_out: u64,
    /// Sum of `errors_by_kind`.
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Connections open when the snapshot was taken.
    pub open_connections: u64,
    pub peak_open_connections: u64,
    /// Connections cut because the drain timeout ran out at shutdown.
    pub drain_closed: u64,
    pub uptime_s: f64,
}

impl Stats {
    /// One line per counter, for stderr at exit.
    pub fn write_human(&self, out: &mut impl io::Write) -> io::Result<()> {
        writeln!(
            out,
            "final counters ({} strategy, {} workers, up {:.1}s):",
            self.strategy, self.workers, self.uptime_s
        )?;
        writeln!(out, "  accepted   {}", self.accepted)?;
        writeln!(out, "  rejected   {}", self.rejected)?;
        writeln!(out, "  completed  {}", self.completed)?;
        writeln!(out, "  timed out  {}", self.timed_out)?;
        let kinds: Vec<String> = self
            .errors_by_kind
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if kinds.is_empty() {
            writeln!(out, "  errors     0")?;
        } else {
            writeln!(out, "  errors     {} ({})", self.errors, kinds.join(", "))?;
        }
        writeln!(out, "  bytes in   {}", self.bytes_in)?;
        writeln!(out, "  bytes out  {}", self.bytes_out)?;
        writeln!(out, "  peak open  {}", self.peak_open_connections)?;
        writeln!(out, "  cut at drain {}", self.drain_closed)
    }
}
