//! One client thread: a mio poll loop over its share of nonblocking connections.
//!
//! The thread is split so that the rules that decide the figures can be read and tested without
//! sockets. The pure parts take the time as an argument (nanoseconds since the run's base
//! instant), so unit tests drive them with a fake clock:
//!
//! - [`timeline`]: the warm-up and the measured window, or the steps of a stepped run, each with
//!   its rate, settle and window;
//! - [`schedule`]: when each message is meant to go out (closed loop: `--depth` in flight; open
//!   loop: uniform or Poisson intended send times, step by step), whether it may go out now, and
//!   whether the server held it back.
//! - [`stream`]: the byte stream of a connection: which message and offset a byte belongs to, the
//!   payload to write next, verification of what comes back, the exact place of a corrupt byte.
//! - [`record`]: what a thread measures: histograms, counters, error samples, interval
//!   histograms, each step's results, per-connection progress, the loop lag of each message at
//!   its first byte written.
//! - [`session`]: one connection's messages, joining the three: issued, written, echoed,
//!   abandoned. The coordinated-omission rules are pinned here by scripted tests.
//!
//! The OS plumbing reads the clock and owns the sockets:
//!
//! - [`conn`]: a connection's life over a real socket (connect, churn, drain, errors) and its
//!   socket options;
//! - [`poll`]: the poll loop itself, housekeeping, and the reads and writes that feed a session;
//!   it spins or sleeps as [`timer::WaitPolicy`] says and counts the time spent spin-waiting;
//! - [`timer`]: how the loop waits (pure), and the open-loop timerfd that wakes it shortly before
//!   the next intended send time;
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
mod timeline;
mod timer;

pub(crate) use poll::run_worker;
pub(crate) use timeline::Timeline;
pub(crate) use timer::WaitPolicy;

use crate::config::{Config, RateStep};
use crate::stats::{LiveCounters, ThreadResult};
use hdrhistogram::Histogram;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
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

/// The clock shared by all threads of a run (nanoseconds since `base`).
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    pub base: Instant,
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

/// What a client thread sends the coordinator while it runs.
pub(crate) enum FromWorker {
    /// A finished one-second interval histogram.
    Interval(IntervalReport),
    /// Stepped runs: what the thread measured in step `step`, once the step's window has ended
    /// and its messages are in.
    Step {
        step: usize,
        result: Box<ThreadResult>,
    },
}

/// Steps read while the run goes (`--steps-from`): the timeline, shared by the reader that adds
/// to it and the client threads that follow it (they look at its version every loop).
#[derive(Debug)]
pub(crate) struct StepFeed {
    version: AtomicU64,
    timeline: Mutex<Timeline>,
    warmup_ns: u64,
}

impl StepFeed {
    pub fn new(timeline: Timeline, warmup_ns: u64) -> StepFeed {
        StepFeed {
            version: AtomicU64::new(0),
            timeline: Mutex::new(timeline),
            warmup_ns,
        }
    }

    /// Changes so far: a thread whose copy is older takes a [`Self::snapshot`].
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The version and the timeline now.
    pub fn snapshot(&self) -> (u64, Timeline) {
        let timeline = self.lock().clone();
        (self.version(), timeline)
    }

    /// Adds a step that arrived at `now`.
    pub fn push(&self, step: RateStep, now: u64) {
        self.lock().push(step, Some(now), self.warmup_ns);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The input ended: no more steps.
    pub fn close(&self) {
        self.lock().close();
        self.version.fetch_add(1, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Timeline> {
        self.timeline.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Everything a worker needs to start.
pub(crate) struct WorkerSetup {
    pub thread: usize,
    pub config: Arc<Config>,
    pub target: SocketAddr,
    pub source_addrs: Arc<Vec<IpAddr>>,
    pub slots: Vec<usize>,
    pub timing: Timing,
    /// The timeline at the start.
    pub timeline: Timeline,
    /// Steps read as the run goes.
    pub feed: Option<Arc<StepFeed>>,
    /// How the thread waits (`--timing`).
    pub wait: WaitPolicy,
    pub live: Arc<LiveCounters>,
    pub stop: Arc<AtomicBool>,
    pub to_coordinator: Sender<FromWorker>,
    /// Interval histograms the coordinator has added up, handed back to be reset and reused
    /// (so that no ~188 KB histogram is allocated per second per thread).
    pub recycled: Receiver<Histogram<u64>>,
}
