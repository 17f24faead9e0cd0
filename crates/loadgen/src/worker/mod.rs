//! One client thread: a mio poll loop over its share of nonblocking connections.
//!
//! The thread is split so that the rules that decide the figures can be read and tested without
//! sockets. The pure parts take the time as an argument (nanoseconds since the run's base
//! instant), so unit tests drive them with a fake clock:
//!
//! - [`schedule`]: when each message is meant to go out (closed loop: `--depth` in flight; open
//!   loop: uniform or Poisson intended send times), whether it may go out now, and whose fault a
//!   late send is (held back by the server, or the loop's own lag).
//! - [`stream`]: the byte stream of a connection: which message and offset a byte belongs to, the
//!   payload to write next, verification of what comes back, the exact place of a corrupt byte.
//! - [`record`]: what a thread measures: histograms, counters, error samples, interval
//!   histograms, per-connection progress.
//! - [`session`]: one connection's messages, joining the three: issued, written, echoed,
//!   abandoned. The coordinated-omission rules are pinned here by scripted tests.
//!
//! The OS plumbing reads the clock and owns the sockets:
//!
//! - [`conn`]: a connection's life over a real socket (connect, churn, drain, errors) and its
//!   socket options;
//! - [`poll`]: the poll loop itself, housekeeping, and the reads and writes that feed a session;
//! - [`timer`]: the open-loop timerfd that wakes the loop at the next intended send time;
//! - [`splice`]: the thread's pipe that sends large payloads from the table without a copy.
//!
//! The hot path records into per-thread histograms and counters only; nothing is allocated per
//! message (payloads of 16 KiB and more go from the process's payload table into the socket
//! through a per-thread pipe, without a copy; from 1 KiB with `writev` straight from the table;
//! smaller ones through a per-thread send buffer; echoes are read into a per-thread receive
//! buffer and compared with the table).
//! Try it: `cargo test -p loadgen --lib worker`.

mod conn;
mod poll;
mod record;
mod schedule;
mod session;
mod splice;
mod stream;
mod timer;

pub(crate) use poll::run_worker;

use crate::config::Config;
use crate::stats::LiveCounters;
use hdrhistogram::Histogram;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

/// Length of one interval histogram.
pub(crate) const INTERVAL_NS: u64 = 1_000_000_000;

/// The measured window of a run (nanoseconds since the run's base): warm-up before it, the drain
/// after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub measure_start_ns: u64,
    /// `None` for a run bounded by `--messages`.
    pub measure_end_ns: Option<u64>,
}

impl Window {
    /// Whether `now` is inside the measured window.
    #[inline]
    pub fn measuring(&self, now: u64) -> bool {
        now >= self.measure_start_ns && self.measure_end_ns.is_none_or(|end| now < end)
    }
}

/// Timing shared by all threads of a run (nanoseconds since `base`).
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    pub base: Instant,
    pub window: Window,
}

impl Timing {
    /// The clock: nanoseconds since the run's base instant.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// A finished interval histogram from one thread.
pub(crate) struct IntervalReport {
    /// The sending thread: the coordinator hands the histogram back to it for reuse.
    pub thread: usize,
    pub index: u64,
    pub latency: Histogram<u64>,
}

/// Everything a worker needs to start.
pub(crate) struct WorkerSetup {
    pub thread: usize,
    pub config: Arc<Config>,
    pub target: SocketAddr,
    pub source_addrs: Arc<Vec<IpAddr>>,
    pub slots: Vec<usize>,
    pub timing: Timing,
    pub live: Arc<LiveCounters>,
    pub stop: Arc<AtomicBool>,
    pub intervals: Sender<IntervalReport>,
    /// Interval histograms the coordinator has added up, handed back to be reset and reused
    /// (so that no ~188 KB histogram is allocated per second per thread).
    pub recycled: Receiver<Histogram<u64>>,
}
