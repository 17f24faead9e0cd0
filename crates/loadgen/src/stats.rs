//! What the client threads record (histograms, counters, per-connection progress) and the pure
//! functions that merge and summarise it: percentiles, fairness, starvation.

use crate::errors::{ErrorKind, ErrorSample};
use hdrhistogram::Histogram;
use std::sync::atomic::AtomicU64;

/// Highest value the latency histograms hold: one hour in microseconds.
pub const HISTOGRAM_MAX_US: u64 = 3_600_000_000;
/// Significant decimal digits of every histogram.
pub const HISTOGRAM_SIGFIG: u8 = 3;

/// An empty microsecond histogram (1 µs .. 1 h, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// Records a duration in nanoseconds as whole microseconds (rounded, at least 1).
#[inline]
pub fn record_ns_as_us(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(((ns + 500) / 1000).max(1));
}

/// Counters a thread updates as it goes, read by the live display.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Messages verified in the measured window.
    pub verified: AtomicU64,
    /// Errors of any kind.
    pub errors: AtomicU64,
    /// Connections without a verified echo for longer than the stall threshold, right now.
    pub starved_now: AtomicU64,
}

/// Progress of one connection slot.
#[derive(Debug, Clone, Default)]
pub struct SlotStats {
    /// Global slot index.
    pub slot: usize,
    /// Messages verified in the measured window.
    pub messages: u64,
    /// Longest time inside the measured window with a message outstanding and no verified
    /// echo (from the later of the last echo and the outstanding message's intended time).
    pub max_gap_ns: u64,
}

/// Everything one client thread measured.
#[derive(Debug, Clone)]
pub struct ThreadResult {
    /// Latency: intended send time → last byte verified (µs).
    pub latency: Histogram<u64>,
    /// Service time: actual send → last byte verified (µs).
    pub service: Histogram<u64>,
    /// Connect time (µs).
    pub connect: Histogram<u64>,
    /// Open loop: actual first-byte write minus intended send time (µs); includes waiting for
    /// the server (the `--depth` cap, socket backpressure, a reconnect).
    pub schedule_lag: Histogram<u64>,
    /// Open loop: the loop's own lateness (µs), taken when a message's first byte is written:
    /// the write minus the moment the message could have gone out, i.e. the later of its
    /// intended time and the moment the connection could take another message (the cap freed,
    /// the connection opened, a full socket buffer took bytes again). Waiting for the server is
    /// not in it.
    pub loop_lag: Histogram<u64>,
    /// Open loop: measured messages whose intended time came while the connection could not
    /// take them (the `--depth` cap was full, or it was connecting).
    pub held_back: u64,
    /// Measured messages whose first byte was written.
    pub messages_sent: u64,
    /// Measured messages verified in full.
    pub messages_verified: u64,
    /// Bytes written during the measured window.
    pub bytes_sent: u64,
    /// Bytes received during the measured window.
    pub bytes_received: u64,
    /// Errors by `ErrorKind::index()`.
    pub errors: [u64; ErrorKind::ALL.len()],
    /// The first errors, in time order.
    pub samples: Vec<ErrorSample>,
    /// Connections established.
    pub opened: u64,
    /// Whether any connect succeeded.
    pub ever_connected: bool,
    /// Per slot progress.
    pub slots: Vec<SlotStats>,
    /// When the thread finished (ns since the run's base).
    pub finished_ns: u64,
    /// When the last measured message was verified (ns since the run's base; 0 if none).
    pub last_echo_ns: u64,
    /// CPU time of the thread during the measured window.
    pub cpu_ns: u64,
    /// Time the thread spent spin-waiting (polling with nothing to do until a send was due, or
    /// for an echo) during the measured window: CPU time that is not work.
    pub spin_ns: u64,
    /// The part of `cpu_ns` spent in user space (the rest was in the kernel).
    pub user_cpu_ns: u64,
    /// Wall time of the thread during the measured window.
    pub wall_ns: u64,
    /// The busiest thread's CPU time over its wall time during the measured window (capped at
    /// 1 against clock rounding): one saturated thread limits the load even when others idle.
    pub max_busy_fraction: f64,
    /// The busiest thread's work (CPU time minus spin-waiting) over its wall time: what says
    /// whether the loadgen, not its timing, was the limit.
    pub max_work_fraction: f64,
}

impl ThreadResult {
    /// An empty result for `slots` connection slots.
    pub fn new(slots: usize) -> Self {
        ThreadResult {
            latency: new_histogram(),
            service: new_histogram(),
            connect: new_histogram(),
            schedule_lag: new_histogram(),
            loop_lag: new_histogram(),
            held_back: 0,
            messages_sent: 0,
            messages_verified: 0,
            bytes_sent: 0,
            bytes_received: 0,
            errors: [0; ErrorKind::ALL.len()],
            samples: Vec::new(),
            opened: 0,
            ever_connected: false,
            slots: vec![SlotStats::default(); slots],
            finished_ns: 0,
            last_echo_ns: 0,
            cpu_ns: 0,
            spin_ns: 0,
            user_cpu_ns: 0,
            wall_ns: 0,
            max_busy_fraction: 0.0,
            max_work_fraction: 0.0,
        }
    }

    /// Adds `other` into `self` (histograms added exactly; samples kept in time order).
    pub fn merge(&mut self, other: &ThreadResult) {
        let add = |a: &mut Histogram<u64>, b: &Histogram<u64>| {
            // Same bounds on both sides, so adding cannot fail.
            let _ = a.add(b);
        };
        add(&mut self.latency, &other.latency);
        add(&mut self.service, &other.service);
        add(&mut self.connect, &other.connect);
        add(&mut self.schedule_lag, &other.schedule_lag);
        add(&mut self.loop_lag, &other.loop_lag);
        self.held_back += other.held_back;
        self.messages_sent += other.messages_sent;
        self.messages_verified += other.messages_verified;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        for (a, b) in self.errors.iter_mut().zip(other.errors.iter()) {
            *a += b;
        }
        self.samples.extend(other.samples.iter().cloned());
        self.samples.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        self.samples.truncate(crate::errors::MAX_SAMPLES);
        self.opened += other.opened;
        self.ever_connected |= other.ever_connected;
        self.slots.extend(other.slots.iter().cloned());
        self.finished_ns = self.finished_ns.max(other.finished_ns);
        self.last_echo_ns = self.last_echo_ns.max(other.last_echo_ns);
        self.cpu_ns += other.cpu_ns;
        self.spin_ns += other.spin_ns;
        self.user_cpu_ns += other.user_cpu_ns;
        self.wall_ns += other.wall_ns;
        self.max_busy_fraction = self.max_busy_fraction.max(other.max_busy_fraction);
        self.max_work_fraction = self.max_work_fraction.max(other.max_work_fraction);
    }
}

impl ThreadResult {
    /// CPU time that was work, not spin-waiting (ns).
    pub fn work_ns(&self) -> u64 {
        self.cpu_ns.saturating_sub(self.spin_ns)
    }
}

/// Jain's fairness index of `xs`: (Σx)² / (n·Σx²); 1 when all are equal, 1/n when one gets all.
/// An empty list or all zeros counts as perfectly fair (1.0) only when there is nothing to share;
/// all-zero traffic yields 0.
pub fn jain_fairness(xs: &[u64]) -> f64 {
    if xs.is_empty() {
        return 1.0;
    }
    let sum: f64 = xs.iter().map(|&x| x as f64).sum();
    let sum_sq: f64 = xs.iter().map(|&x| (x as f64) * (x as f64)).sum();
    if sum_sq == 0.0 {
        return 0.0;
    }
    sum * sum / (xs.len() as f64 * sum_sq)
}

/// The median of `xs` (lower middle for even lengths); the default (0) for an empty list.
/// Incomparable values (NaN) sort as equal.
pub fn median<T: Copy + Default + PartialOrd>(xs: &[T]) -> T {
    if xs.is_empty() {
        return T::default();
    }
    let mut sorted = xs.to_vec();
    sorted.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    sorted[(sorted.len() - 1) / 2]
}

/// CPU time (user + system, `getrusage(RUSAGE_THREAD)`) of the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    ThreadCpu::now().total_ns()
}

/// The CPU time of the calling thread so far, split into user and system (kernel) time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreadCpu {
    /// Time in user space (`ru_utime`), ns.
    pub user_ns: u64,
    /// Time in the kernel on the thread's behalf (`ru_stime`), ns.
    pub system_ns: u64,
}

impl ThreadCpu {
    /// `getrusage(RUSAGE_THREAD)` now (zero if it fails).
    pub fn now() -> ThreadCpu {
        // SAFETY: rusage is plain old data that getrusage fills for the calling thread.
        unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            if libc::getrusage(libc::RUSAGE_THREAD, &mut ru) != 0 {
                return ThreadCpu::default();
            }
            let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
            ThreadCpu {
                user_ns: ns(ru.ru_utime),
                system_ns: ns(ru.ru_stime),
            }
        }
    }

    /// User plus system time, ns.
    pub fn total_ns(&self) -> u64 {
        self.user_ns + self.system_ns
    }

    /// The time spent since `earlier` (each part saturating at 0).
    pub fn since(&self, earlier: ThreadCpu) -> ThreadCpu {
        ThreadCpu {
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            system_ns: self.system_ns.saturating_sub(earlier.system_ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_index_of_equal_and_skewed_shares() {
        assert!((jain_fairness(&[5, 5, 5, 5]) - 1.0).abs() < 1e-12);
        assert!((jain_fairness(&[8, 0, 0, 0]) - 0.25).abs() < 1e-12);
        assert_eq!(jain_fairness(&[0, 0]), 0.0);
    }

    #[test]
    fn median_of_odd_and_even_lists() {
        assert_eq!(median(&[3, 1, 2]), 2);
        assert_eq!(median(&[4, 1, 3, 2]), 2);
        assert_eq!(median::<u64>(&[]), 0);
        assert_eq!(median(&[2.5, 0.5, 1.5]), 1.5);
    }

    #[test]
    fn thread_cpu_splits_user_and_system_time() {
        let start = ThreadCpu::now();
        // Some user-space work and some system calls.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        for _ in 0..2_000 {
            let _ = std::fs::metadata("/");
        }
        std::hint::black_box(x);
        let spent = ThreadCpu::now().since(start);
        assert_eq!(spent.total_ns(), spent.user_ns + spent.system_ns);
        let later = ThreadCpu::now();
        assert!(later.user_ns >= start.user_ns && later.system_ns >= start.system_ns);
        assert!(later.total_ns() >= thread_cpu_ns().min(later.total_ns()));
        assert_eq!(
            start.since(later),
            ThreadCpu::default(),
            "saturates, never wraps"
        );
    }

    #[test]
    fn rounding_to_microseconds() {
        let mut h = new_histogram();
        record_ns_as_us(&mut h, 100);
        record_ns_as_us(&mut h, 1_499);
        record_ns_as_us(&mut h, 1_500);
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 2);
        assert_eq!(h.len(), 3);
    }
}
