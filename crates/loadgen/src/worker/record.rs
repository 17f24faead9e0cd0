//! What one thread measures, and the rules of what counts: the latency, service-time, connect
//! and lag histograms, the message and byte counters, errors with their first samples, the
//! one-second interval histograms handed to the coordinator, the live counters, and each
//! connection slot's progress (for fairness and starvation). Pure apart from the channel and the
//! atomics it publishes to: the time is an argument.
//!
//! The rules: a message intended before the window (warm-up) records nothing. A measured message
//! records its latency (intended send time → last byte verified) and its service time (first
//! byte written → last byte verified) whenever it completes, even after the window; it counts as
//! verified (throughput, fairness) only when it completes inside the window. Bytes count inside
//! the window.

use super::schedule::Issue;
use super::stream::Pending;
use super::{INTERVAL_NS, IntervalReport, Window};
use crate::errors::{ErrorKind, ErrorSample, MAX_SAMPLES};
use crate::stats::{LiveCounters, SlotStats, ThreadResult, new_histogram, record_ns_as_us};
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};

/// Where in the stream an error happened (fields that do not apply are `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ErrorAt {
    /// Message sequence number on the connection.
    pub message: Option<u64>,
    /// Byte offset within that message.
    pub offset: Option<u64>,
    /// The byte sent and the byte received (corruption).
    pub bytes: Option<(u8, u8)>,
}

impl ErrorAt {
    /// At message `message`; the byte within it is not known.
    pub fn message(message: u64) -> ErrorAt {
        ErrorAt {
            message: Some(message),
            ..ErrorAt::default()
        }
    }

    /// At byte `offset` of message `message`.
    pub fn byte(message: u64, offset: u64) -> ErrorAt {
        ErrorAt {
            message: Some(message),
            offset: Some(offset),
            bytes: None,
        }
    }
}

/// One connection slot's progress: verified messages and its longest stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotProgress {
    /// Measured messages verified inside the window.
    pub messages_verified: u64,
    /// The last verified echo (the window's start before the first).
    pub last_progress_ns: u64,
    /// Longest time inside the window with a message outstanding and no echo.
    pub max_gap_ns: u64,
}

impl SlotProgress {
    pub fn new(window: &Window) -> SlotProgress {
        SlotProgress {
            messages_verified: 0,
            last_progress_ns: window.measure_start_ns,
            max_gap_ns: 0,
        }
    }

    /// Extends the longest stall to `now` (clamped to the window) for a message outstanding since
    /// `outstanding_since_ns` without an echo. A stall runs from the later of the last echo and
    /// the message's intended time (an idle connection is not stalled).
    pub fn note_gap(&mut self, now: u64, outstanding_since_ns: u64, window: &Window) {
        let until = window.measure_end_ns.map_or(now, |end| now.min(end));
        let since = self
            .last_progress_ns
            .max(outstanding_since_ns)
            .max(window.measure_start_ns);
        self.max_gap_ns = self.max_gap_ns.max(until.saturating_sub(since));
    }

    /// A message intended at `intended_ns` was echoed in full at `now`. Noted for warm-up
    /// messages too: one issued in the warm-up and held by the server into the window (a pool
    /// with fewer workers than connections) is exactly a starved connection.
    #[inline]
    pub fn echoed(&mut self, now: u64, intended_ns: u64, window: &Window) {
        self.note_gap(now, intended_ns, window);
        self.last_progress_ns = now;
    }

    /// Whether a message outstanding since `intended_ns` has now gone longer than `stall_ns`
    /// without an echo, inside the window.
    pub fn stalled(&self, now: u64, intended_ns: u64, stall_ns: u64, window: &Window) -> bool {
        window.measuring(now)
            && now.saturating_sub(
                self.last_progress_ns
                    .max(intended_ns)
                    .max(window.measure_start_ns),
            ) > stall_ns
    }
}

/// Records what one thread measures (its [`ThreadResult`]), and publishes interval histograms
/// and live counters as it goes.
pub(crate) struct Recorder {
    thread: usize,
    window: Window,
    open_loop: bool,
    result: ThreadResult,
    interval: Histogram<u64>,
    interval_index: u64,
    intervals: Sender<IntervalReport>,
    recycled: Receiver<Histogram<u64>>,
    live: Arc<LiveCounters>,
    /// Messages verified in the window so far, published to `live` at housekeeping.
    live_verified: u64,
}

impl Recorder {
    /// A recorder for thread `thread` with `slots` connection slots.
    pub fn new(
        thread: usize,
        slots: usize,
        window: Window,
        open_loop: bool,
        live: Arc<LiveCounters>,
        intervals: Sender<IntervalReport>,
        recycled: Receiver<Histogram<u64>>,
    ) -> Recorder {
        Recorder {
            thread,
            window,
            open_loop,
            result: ThreadResult::new(slots),
            interval: new_histogram(),
            interval_index: 0,
            intervals,
            recycled,
            live,
            live_verified: 0,
        }
    }

    /// What has been recorded so far.
    #[cfg(test)]
    pub fn result(&self) -> &ThreadResult {
        &self.result
    }

    #[inline]
    pub fn measuring(&self, now: u64) -> bool {
        self.window.measuring(now)
    }

    /// A message was issued: whose fault its lateness was.
    #[inline]
    pub fn issued(&mut self, issue: &Issue) {
        if issue.held_back {
            self.result.held_back += 1;
        }
        if let Some(lag) = issue.loop_lag_ns {
            record_ns_as_us(&mut self.result.loop_lag, lag);
        }
    }

    /// The first byte of message `p` was written at `now`.
    #[inline]
    pub fn first_byte_sent(&mut self, p: &Pending, now: u64) {
        if p.measured {
            self.result.messages_sent += 1;
            if self.open_loop {
                record_ns_as_us(
                    &mut self.result.schedule_lag,
                    now.saturating_sub(p.intended_ns),
                );
            }
        }
    }

    #[inline]
    pub fn bytes_sent(&mut self, n: usize, now: u64) {
        if self.measuring(now) {
            self.result.bytes_sent += n as u64;
        }
    }

    #[inline]
    pub fn bytes_received(&mut self, n: usize, now: u64) {
        if self.measuring(now) {
            self.result.bytes_received += n as u64;
        }
    }

    /// Message `p` was verified in full at `now`. True when it counts as verified in the window.
    #[inline]
    pub fn completed(&mut self, p: &Pending, now: u64) -> bool {
        if !p.measured {
            return false;
        }
        let latency_ns = now.saturating_sub(p.intended_ns);
        record_ns_as_us(&mut self.result.latency, latency_ns);
        record_ns_as_us(&mut self.result.service, now.saturating_sub(p.sent_ns));
        let index = now.saturating_sub(self.window.measure_start_ns) / INTERVAL_NS;
        if index != self.interval_index {
            self.flush_intervals(now, false);
        }
        record_ns_as_us(&mut self.interval, latency_ns);
        // Throughput and fairness count only echoes that complete inside the window: one that
        // arrives during the post-window drain was not served within the window (its latency,
        // wait included, is in the histogram above all the same).
        if self.measuring(now) {
            self.result.messages_verified += 1;
            self.live_verified += 1;
            self.result.last_echo_ns = now;
            return true;
        }
        false
    }

    /// A connection opened after `connect_ns`.
    pub fn connected(&mut self, connect_ns: u64) {
        self.result.ever_connected = true;
        self.result.opened += 1;
        record_ns_as_us(&mut self.result.connect, connect_ns);
    }

    /// Whether any connection opened so far.
    pub fn ever_connected(&self) -> bool {
        self.result.ever_connected
    }

    /// Counts an error of `kind` on `connection` and keeps a sample of the first few.
    pub fn error(
        &mut self,
        kind: ErrorKind,
        connection: u64,
        at: ErrorAt,
        now: u64,
        detail: impl FnOnce() -> String,
    ) {
        self.result.errors[kind.index()] += 1;
        self.live.errors.fetch_add(1, Ordering::Relaxed);
        if self.result.samples.len() < MAX_SAMPLES {
            self.result.samples.push(ErrorSample {
                kind,
                connection: Some(connection),
                message: at.message,
                offset: at.offset,
                expected: at.bytes.map(|b| b.0),
                got: at.bytes.map(|b| b.1),
                at_s: now as f64 / 1e9,
                detail: detail(),
            });
        }
    }

    /// Sends the interval histograms that ended before `now` (all of them when `last`).
    pub fn flush_intervals(&mut self, now: u64, last: bool) {
        if now < self.window.measure_start_ns {
            return;
        }
        let current = (now - self.window.measure_start_ns) / INTERVAL_NS;
        while self.interval_index < current || (last && self.interval_index == current) {
            let fresh = match self.recycled.try_recv() {
                Ok(mut h) => {
                    h.reset();
                    h
                }
                // Only the first interval or two: the coordinator has not handed one back yet.
                Err(_) => new_histogram(),
            };
            let latency = std::mem::replace(&mut self.interval, fresh);
            let _ = self.intervals.send(IntervalReport {
                thread: self.thread,
                index: self.interval_index,
                latency,
            });
            self.interval_index += 1;
        }
    }

    /// Publishes the live counters: verified so far, and connections starved right now.
    pub fn publish(&self, starved_now: Option<u64>) {
        self.live
            .verified
            .store(self.live_verified, Ordering::Relaxed);
        if let Some(starved) = starved_now {
            self.live.starved_now.store(starved, Ordering::Relaxed);
        }
    }

    /// The thread's result at `end_ns`: the last intervals sent, every slot's progress, and its
    /// CPU (`cpu_ns`) over the wall time it measured (`wall_ns`).
    pub fn finish(
        mut self,
        end_ns: u64,
        slots: impl Iterator<Item = SlotStats>,
        cpu_ns: u64,
        wall_ns: u64,
    ) -> ThreadResult {
        self.flush_intervals(end_ns, true);
        self.publish(None);
        for (out, slot) in self.result.slots.iter_mut().zip(slots) {
            *out = slot;
        }
        let mut result = self.result;
        result.finished_ns = end_ns;
        result.cpu_ns = cpu_ns;
        result.wall_ns = wall_ns;
        // Over at least the planned window: a thread whose connections all failed at once was
        // not busy for the run, however briefly it spun.
        let planned_ns = self
            .window
            .measure_end_ns
            .map_or(0, |end| end - self.window.measure_start_ns);
        let busy_wall_ns = wall_ns.max(planned_ns);
        result.max_busy_fraction = if busy_wall_ns > 0 {
            (cpu_ns as f64 / busy_wall_ns as f64).min(1.0)
        } else {
            0.0
        };
        result
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::mpsc;

    pub(crate) const MS: u64 = 1_000_000;

    /// A recorder for one thread over `window`, with the coordinator's ends of its channels.
    pub(crate) fn recorder(
        window: Window,
        open_loop: bool,
    ) -> (
        Recorder,
        mpsc::Receiver<IntervalReport>,
        mpsc::Sender<Histogram<u64>>,
    ) {
        let (tx, rx) = mpsc::channel();
        let (back_tx, back_rx) = mpsc::channel();
        let live = Arc::new(LiveCounters::default());
        let rec = Recorder::new(0, 1, window, open_loop, live, tx, back_rx);
        (rec, rx, back_tx)
    }

    fn window(start_ms: u64, end_ms: Option<u64>) -> Window {
        Window {
            measure_start_ns: start_ms * MS,
            measure_end_ns: end_ms.map(|e| e * MS),
        }
    }

    fn pending(intended_ms: u64, sent_ms: u64, measured: bool) -> Pending {
        Pending {
            intended_ns: intended_ms * MS,
            sent_ns: sent_ms * MS,
            measured,
        }
    }

    #[test]
    fn error_samples_keep_the_first_few_and_count_all() {
        let (mut rec, _rx, _back) = recorder(window(0, Some(1_000)), false);
        for i in 0..(MAX_SAMPLES as u64 + 5) {
            rec.error(ErrorKind::Corrupt, i, ErrorAt::byte(i, 3), i * MS, || {
                format!("sample {i}")
            });
        }
        let r = rec.result();
        assert_eq!(r.errors[ErrorKind::Corrupt.index()], MAX_SAMPLES as u64 + 5);
        assert_eq!(r.samples.len(), MAX_SAMPLES);
        let last = &r.samples[MAX_SAMPLES - 1];
        assert_eq!(last.connection, Some(MAX_SAMPLES as u64 - 1));
        assert_eq!(last.offset, Some(3));
        assert_eq!(last.detail, format!("sample {}", MAX_SAMPLES - 1));
        assert_eq!(
            rec.live.errors.load(Ordering::Relaxed),
            MAX_SAMPLES as u64 + 5
        );
    }

    #[test]
    fn completions_fill_one_interval_histogram_per_second_of_the_window() {
        let (mut rec, rx, back) = recorder(window(500, None), false);
        // Warm-up messages record nothing; measured ones land in the interval of their echo.
        assert!(!rec.completed(&pending(100, 100, false), 200 * MS));
        assert!(rec.completed(&pending(600, 650, true), 700 * MS));
        assert!(rx.try_recv().is_err(), "the first second is still open");
        // The next echo is two seconds into the window: the first two intervals go out, the
        // second one empty.
        assert!(rec.completed(&pending(1_500, 1_500, true), 2_700 * MS));
        let first = rx.try_recv().unwrap();
        assert_eq!((first.index, first.latency.len()), (0, 1));
        assert!(first.latency.equivalent(first.latency.max(), 100_000));
        let second = rx.try_recv().unwrap();
        assert_eq!((second.index, second.latency.len()), (1, 0));
        back.send(first.latency).unwrap();
        let result = rec.finish(2_800 * MS, std::iter::empty(), 0, 0);
        let third = rx.try_recv().unwrap();
        assert_eq!((third.index, third.latency.len()), (2, 1));
        assert!(third.latency.equivalent(third.latency.max(), 1_200_000));
        assert!(rx.try_recv().is_err());
        assert_eq!(result.latency.len(), 2);
        assert!(result.service.equivalent(result.service.min(), 50_000));
        assert_eq!(result.messages_verified, 2);
        assert_eq!(result.last_echo_ns, 2_700 * MS);
    }

    #[test]
    fn a_stall_counts_from_the_later_of_the_last_echo_and_the_intended_time_inside_the_window() {
        let w = window(100, Some(1_000));
        let mut p = SlotProgress::new(&w);
        // Issued in the warm-up, echoed at 400 ms: stalled from the window's start.
        p.echoed(400 * MS, 50 * MS, &w);
        assert_eq!(p.max_gap_ns, 300 * MS);
        // Idle until 700 ms, then 50 ms for the next echo.
        p.echoed(750 * MS, 700 * MS, &w);
        assert_eq!(p.max_gap_ns, 300 * MS);
        assert!(!p.stalled(900 * MS, 800 * MS, 100 * MS, &w));
        assert!(p.stalled(901 * MS, 800 * MS, 100 * MS, &w));
        assert!(
            !p.stalled(1_500 * MS, 800 * MS, 100 * MS, &w),
            "after the window"
        );
        // An echo in the warm-up, then a message held across the window's start: its stall
        // counts from the start.
        let mut q = SlotProgress::new(&w);
        q.echoed(60 * MS, 10 * MS, &w);
        assert_eq!(q.max_gap_ns, 0);
        q.echoed(130 * MS, 70 * MS, &w);
        assert_eq!(q.max_gap_ns, 30 * MS);
        // Abandoned at 2 s: the stall is clamped to the window's end (200 ms, not 1.2 s).
        let mut q = SlotProgress::new(&w);
        q.note_gap(2_000 * MS, 800 * MS, &w);
        assert_eq!(q.max_gap_ns, 200 * MS);
    }

    #[test]
    fn the_busy_fraction_is_over_at_least_the_planned_window() {
        let (rec, _rx, _back) = recorder(window(1_000, Some(3_000)), false);
        let r = rec.finish(1_100 * MS, std::iter::empty(), 100 * MS, 100 * MS);
        assert!(
            (r.max_busy_fraction - 0.05).abs() < 1e-9,
            "{}",
            r.max_busy_fraction
        );
        let (rec, _rx, _back) = recorder(window(0, None), false);
        let r = rec.finish(10 * MS, std::iter::empty(), 30 * MS, 20 * MS);
        assert_eq!(r.max_busy_fraction, 1.0, "capped against clock rounding");
    }
}
