//! What one thread measures, and the rules of what counts: the latency, service-time, connect
//! and lag histograms, the message and byte counters, errors with their first samples, the
//! one-second interval histograms and (stepped runs) each step's results handed to the
//! coordinator, the live counters, and each connection slot's progress (for fairness and
//! starvation). Pure apart from the channel and the atomics it publishes to: the time is an
//! argument.
//!
//! The rules: a message intended outside a measured window (warm-up, a step's settle) records
//! nothing. A measured message records its latency (intended send time → last byte verified) and
//! its service time (first byte written → last byte verified) whenever it completes, even after
//! the window; it counts as verified (throughput, fairness) only when it completes inside the
//! window of its step. Bytes count inside measured windows. A step of a stepped run counts its
//! own throughput as every echo completed inside its window. The loop lag of an open-loop message
//! is taken when its first byte is written: the write minus the later of its intended time and
//! the moment its connection could take it (see `schedule`). In a stepped run every message
//! counts in the step of its intended send time, and each step's results go to the coordinator
//! once its window has ended and its last message is in (see [`Recorder::hand_over_steps`]).

use super::schedule::Issue;
use super::stream::Pending;
use super::timeline::Timeline;
use super::{FromWorker, INTERVAL_NS, IntervalReport, Window};
use crate::errors::{ErrorKind, ErrorSample, MAX_SAMPLES};
use crate::stats::{
    LiveCounters, SlotStats, ThreadCpu, ThreadResult, new_histogram, record_ns_as_us,
};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
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

/// Records what one thread measures (its [`ThreadResult`]), and publishes interval histograms,
/// step results and live counters as it goes.
pub(crate) struct Recorder {
    thread: usize,
    timeline: Timeline,
    result: ThreadResult,
    /// The slot of each of this thread's connections (by index).
    slot_ids: Vec<usize>,
    /// Stepped runs: the results of steps not yet handed over, oldest first, by step index.
    steps: VecDeque<(usize, ThreadResult)>,
    /// Stepped runs: the next step to hand over.
    next_step_out: usize,
    /// Stepped runs: window edges passed so far (start and end of each step, in order).
    edges_passed: usize,
    /// CPU, spin and clock at the last window start passed (for the step's own cost).
    step_cost_start: (ThreadCpu, u64, u64),
    /// CPU, spin and clock when the (first) measured window started.
    window_cost_start: Option<(ThreadCpu, u64, u64)>,
    /// Messages issued and not yet verified or abandoned, on all connections.
    in_flight: u64,
    interval: Histogram<u64>,
    interval_index: u64,
    to_coordinator: Sender<FromWorker>,
    recycled: Receiver<Histogram<u64>>,
    live: Arc<LiveCounters>,
    /// Messages verified in the window so far, published to `live` at housekeeping.
    live_verified: u64,
}

impl Recorder {
    /// A recorder for thread `thread`, whose connections are the slots `slot_ids`.
    pub fn new(
        thread: usize,
        slot_ids: &[usize],
        timeline: Timeline,
        live: Arc<LiveCounters>,
        to_coordinator: Sender<FromWorker>,
        recycled: Receiver<Histogram<u64>>,
    ) -> Recorder {
        Recorder {
            thread,
            timeline,
            result: ThreadResult::new(slot_ids.len()),
            slot_ids: slot_ids.to_vec(),
            steps: VecDeque::new(),
            next_step_out: 0,
            edges_passed: 0,
            step_cost_start: (ThreadCpu::default(), 0, 0),
            window_cost_start: None,
            in_flight: 0,
            interval: new_histogram(),
            interval_index: 0,
            to_coordinator,
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

    /// The timeline grew (a step was read) or was closed.
    pub fn set_timeline(&mut self, timeline: Timeline) {
        self.timeline = timeline;
    }

    fn window(&self) -> Window {
        self.timeline.window()
    }

    /// Whether `now` is inside a measured window.
    #[inline]
    pub fn measuring(&self, now: u64) -> bool {
        self.timeline.measuring(now)
    }

    /// Messages issued and not yet verified or abandoned.
    #[inline]
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Stepped runs: the results of step `k` (created on first use). `None` when the run is not
    /// stepped or the step was already handed over.
    #[inline]
    fn step_mut(&mut self, k: usize) -> Option<&mut ThreadResult> {
        if !self.timeline.stepped() || k < self.next_step_out {
            return None;
        }
        let position = match self.steps.iter().position(|(index, _)| *index == k) {
            Some(p) => p,
            None => {
                let mut fresh = ThreadResult::new(0);
                fresh.slots = self
                    .slot_ids
                    .iter()
                    .map(|&slot| SlotStats {
                        slot,
                        ..SlotStats::default()
                    })
                    .collect();
                let at = self.steps.partition_point(|(index, _)| *index < k);
                self.steps.insert(at, (k, fresh));
                at
            }
        };
        Some(&mut self.steps[position].1)
    }

    /// The step results a message intended at `intended_ns` counts in (stepped runs).
    #[inline]
    fn step_of_message(&mut self, intended_ns: u64) -> Option<&mut ThreadResult> {
        if !self.timeline.stepped() {
            return None;
        }
        let k = self.timeline.step_of(intended_ns)?;
        self.step_mut(k)
    }

    /// The step results an event at `now` counts in (stepped runs): the step whose measured
    /// window holds it.
    #[inline]
    fn step_at(&mut self, now: u64) -> Option<&mut ThreadResult> {
        self.step_of_message(now)
    }

    /// A message was issued: whether the server held it back.
    #[inline]
    pub fn issued(&mut self, issue: &Issue) {
        self.in_flight += 1;
        if issue.held_back {
            self.result.held_back += 1;
            if let Some(step) = self.step_of_message(issue.intended_ns) {
                step.held_back += 1;
            }
        }
    }

    /// The first byte of message `p` was written by a write call made at `started` that returned
    /// at `now`; the connection could take messages from `unblocked_ns` on.
    #[inline]
    pub fn first_byte_sent(&mut self, p: &Pending, started: u64, unblocked_ns: u64, now: u64) {
        if !p.measured {
            return;
        }
        let open_loop = self.timeline.open_loop();
        let schedule_lag = now.saturating_sub(p.intended_ns);
        let loop_lag = started.saturating_sub(p.intended_ns.max(unblocked_ns));
        let record = |r: &mut ThreadResult| {
            r.messages_sent += 1;
            if open_loop {
                record_ns_as_us(&mut r.schedule_lag, schedule_lag);
                record_ns_as_us(&mut r.loop_lag, loop_lag);
            }
        };
        record(&mut self.result);
        if let Some(step) = self.step_of_message(p.intended_ns) {
            record(step);
        }
    }

    #[inline]
    pub fn bytes_sent(&mut self, n: usize, now: u64) {
        if self.measuring(now) {
            self.result.bytes_sent += n as u64;
            if let Some(step) = self.step_at(now) {
                step.bytes_sent += n as u64;
            }
        }
    }

    #[inline]
    pub fn bytes_received(&mut self, n: usize, now: u64) {
        if self.measuring(now) {
            self.result.bytes_received += n as u64;
            if let Some(step) = self.step_at(now) {
                step.bytes_received += n as u64;
            }
        }
    }

    /// Message `p` of the connection at `index` was verified in full at `now`. True when it
    /// counts as verified (in the window of its step).
    #[inline]
    pub fn completed(&mut self, p: &Pending, now: u64, index: usize) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        // Stepped runs: a step's throughput is every echo completed inside its window, whichever
        // message it was (one intended in the settle, or earlier, too): completions lag their
        // sends by the latency, so counting only the window's own messages would fall short by
        // latency / window however fast the server kept up.
        if let Some(r) = self.timeline.step_of(now).and_then(|k| self.step_mut(k)) {
            r.messages_verified += 1;
            r.last_echo_ns = now;
            if let Some(slot) = r.slots.get_mut(index) {
                slot.messages += 1;
            }
        }
        if !p.measured {
            return false;
        }
        let latency_ns = now.saturating_sub(p.intended_ns);
        let service_ns = now.saturating_sub(p.sent_ns);
        record_ns_as_us(&mut self.result.latency, latency_ns);
        record_ns_as_us(&mut self.result.service, service_ns);
        let window_start = self.window().measure_start_ns;
        let interval = now.saturating_sub(window_start) / INTERVAL_NS;
        if interval != self.interval_index {
            self.flush_intervals(now, false);
        }
        record_ns_as_us(&mut self.interval, latency_ns);
        // Throughput and fairness of the run count only echoes that complete inside the window
        // of their step: one that arrives later (the post-window drain, the next step) was not
        // served within it (its latency, wait included, is in the histogram above all the same).
        let step = self.timeline.step_of(p.intended_ns);
        let verified = step
            .and_then(|k| self.timeline.get(k))
            .is_some_and(|s| s.measures(now));
        if let Some(r) = step.and_then(|k| self.step_mut(k)) {
            record_ns_as_us(&mut r.latency, latency_ns);
            record_ns_as_us(&mut r.service, service_ns);
        }
        if verified {
            self.result.messages_verified += 1;
            self.live_verified += 1;
            self.result.last_echo_ns = now;
        }
        verified
    }

    /// `n` messages in flight were abandoned (their connection closed).
    pub fn abandoned(&mut self, n: usize) {
        self.in_flight = self.in_flight.saturating_sub(n as u64);
    }

    /// A connection opened at `now` after `connect_ns`.
    pub fn connected(&mut self, connect_ns: u64, now: u64) {
        self.result.ever_connected = true;
        self.result.opened += 1;
        record_ns_as_us(&mut self.result.connect, connect_ns);
        if let Some(step) = self.step_at(now) {
            step.opened += 1;
            step.ever_connected = true;
        }
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
        self.live.errors.fetch_add(1, Ordering::Relaxed);
        // Stepped runs: an error counts in the step that was running (settling or measuring).
        let step = self
            .timeline
            .stepped()
            .then(|| {
                (0..self.timeline.len())
                    .rev()
                    .find(|&k| self.timeline.get(k).is_some_and(|s| s.start_ns <= now))
            })
            .flatten();
        let sample = ErrorSample {
            kind,
            connection: Some(connection),
            message: at.message,
            offset: at.offset,
            expected: at.bytes.map(|b| b.0),
            got: at.bytes.map(|b| b.1),
            at_s: now as f64 / 1e9,
            detail: detail(),
        };
        if let Some(r) = step.and_then(|k| self.step_mut(k)) {
            r.errors[kind.index()] += 1;
            if r.samples.len() < MAX_SAMPLES {
                r.samples.push(sample.clone());
            }
        }
        self.result.errors[kind.index()] += 1;
        if self.result.samples.len() < MAX_SAMPLES {
            self.result.samples.push(sample);
        }
    }

    /// Sends the interval histograms that ended before `now` (all of them when `last`).
    pub fn flush_intervals(&mut self, now: u64, last: bool) {
        let window_start = self.window().measure_start_ns;
        if now < window_start {
            return;
        }
        let current = (now - window_start) / INTERVAL_NS;
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
            let _ = self
                .to_coordinator
                .send(FromWorker::Interval(IntervalReport {
                    thread: self.thread,
                    index: self.interval_index,
                    latency,
                }));
            self.interval_index += 1;
        }
    }

    /// Whether the measured window has started (its cost is counted from then).
    #[inline]
    pub fn window_started(&self) -> bool {
        self.window_cost_start.is_some()
    }

    /// The measured window starts at `now`, with the thread's CPU and spin-wait times so far.
    pub fn start_window(&mut self, now: u64, cpu: ThreadCpu, spin_ns: u64) {
        self.window_cost_start.get_or_insert((cpu, spin_ns, now));
    }

    /// Stepped runs: the next window edge (a step's measured start or end) still to pass.
    pub fn next_edge(&self) -> Option<u64> {
        if !self.timeline.stepped() {
            return None;
        }
        let step = self.timeline.get(self.edges_passed / 2)?;
        if self.edges_passed.is_multiple_of(2) {
            Some(step.measure_start_ns)
        } else {
            step.measure_end_ns
        }
    }

    /// Stepped runs: passes the edge returned by [`Self::next_edge`] at `now`, with the thread's
    /// CPU and spin-wait times so far: a step's own cost runs from its window's start to its end.
    pub fn pass_edge(&mut self, now: u64, cpu: ThreadCpu, spin_ns: u64) {
        let k = self.edges_passed / 2;
        if self.edges_passed.is_multiple_of(2) {
            self.step_cost_start = (cpu, spin_ns, now);
            // The step's results exist from its window's start (even when nothing happens in it).
            let _ = self.step_mut(k);
        } else {
            let (cpu0, spin0, t0) = self.step_cost_start;
            if let Some(r) = self.step_mut(k) {
                set_cost(
                    r,
                    cpu.since(cpu0),
                    spin_ns.saturating_sub(spin0),
                    now.saturating_sub(t0),
                );
            }
        }
        self.edges_passed += 1;
    }

    /// Stepped runs: hands over every step whose window has ended by `now` and whose messages are
    /// all in (the oldest message still in flight, if any, was intended at
    /// `oldest_in_flight_ns`, at or after the step's end). `last`: the thread is done, with these
    /// CPU and spin-wait times so far; every step whose window started goes, complete or not.
    pub fn hand_over_steps(
        &mut self,
        now: u64,
        oldest_in_flight_ns: Option<u64>,
        last: Option<(ThreadCpu, u64)>,
    ) {
        if !self.timeline.stepped() {
            return;
        }
        while let Some(step) = self.timeline.get(self.next_step_out).copied() {
            let end = step.measure_end_ns.unwrap_or(u64::MAX);
            let edges_done = self.edges_passed > 2 * self.next_step_out + 1;
            let complete =
                edges_done && now >= end && oldest_in_flight_ns.is_none_or(|oldest| oldest >= end);
            let cut_short = last.is_some() && now >= step.measure_start_ns;
            if !(complete || cut_short) {
                return;
            }
            let k = self.next_step_out;
            let mut result = self
                .steps
                .iter()
                .position(|(index, _)| *index == k)
                .and_then(|p| self.steps.remove(p))
                .map(|(_, r)| r)
                .unwrap_or_else(|| ThreadResult::new(0));
            if !edges_done && let Some((cpu, spin)) = last {
                // Cut short (the run was stopped): its cost runs to now.
                let (cpu0, spin0, t0) = self.step_cost_start;
                let (cpu, spin) = (cpu.since(cpu0), spin.saturating_sub(spin0));
                set_cost(&mut result, cpu, spin, now.saturating_sub(t0));
            }
            result.finished_ns = now;
            let _ = self.to_coordinator.send(FromWorker::Step {
                step: k,
                result: Box::new(result),
            });
            self.next_step_out += 1;
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

    /// The thread's result at `end_ns`: the last intervals and steps sent, every slot's progress,
    /// and its cost over the measured window from the thread's CPU time (`cpu`) and spin-wait
    /// time (`spin_ns`) so far.
    pub fn finish(
        mut self,
        end_ns: u64,
        slots: impl Iterator<Item = SlotStats>,
        cpu: ThreadCpu,
        spin_ns: u64,
    ) -> ThreadResult {
        self.flush_intervals(end_ns, true);
        self.hand_over_steps(end_ns, None, Some((cpu, spin_ns)));
        self.publish(None);
        let (cpu0, spin0, t0) = self.window_cost_start.unwrap_or((cpu, spin_ns, end_ns));
        let (cpu, spin_ns) = (cpu.since(cpu0), spin_ns.saturating_sub(spin0));
        let wall_ns = end_ns.saturating_sub(t0);
        for (out, slot) in self.result.slots.iter_mut().zip(slots) {
            *out = slot;
        }
        let window = self.window();
        let mut result = self.result;
        result.finished_ns = end_ns;
        // Over at least the planned window: a thread whose connections all failed at once was
        // not busy for the run, however briefly it spun.
        let planned_ns = window
            .measure_end_ns
            .map_or(0, |end| end - window.measure_start_ns);
        set_cost(&mut result, cpu, spin_ns, wall_ns.max(planned_ns));
        result.wall_ns = wall_ns;
        result
    }
}

/// Sets the CPU (and its user part), spin and wall times of `r` and the busy and work fractions
/// they make (capped at 1 against clock rounding).
fn set_cost(r: &mut ThreadResult, cpu: ThreadCpu, spin_ns: u64, wall_ns: u64) {
    let cpu_ns = cpu.total_ns();
    r.cpu_ns = cpu_ns;
    r.user_cpu_ns = cpu.user_ns;
    r.spin_ns = spin_ns.min(cpu_ns);
    r.wall_ns = wall_ns;
    let fraction = |ns: u64| {
        if wall_ns > 0 {
            (ns as f64 / wall_ns as f64).min(1.0)
        } else {
            0.0
        }
    };
    r.max_busy_fraction = fraction(cpu_ns);
    r.max_work_fraction = fraction(r.work_ns());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::mpsc;

    pub(crate) const MS: u64 = 1_000_000;

    /// `ns` of CPU time, a quarter of it in the kernel.
    fn cpu(ns: u64) -> ThreadCpu {
        ThreadCpu {
            user_ns: ns - ns / 4,
            system_ns: ns / 4,
        }
    }

    /// A recorder for one thread with one connection (slot 0) over `timeline`, with the
    /// coordinator's ends of its channels.
    pub(crate) fn recorder(
        timeline: Timeline,
    ) -> (
        Recorder,
        mpsc::Receiver<FromWorker>,
        mpsc::Sender<Histogram<u64>>,
    ) {
        let (tx, rx) = mpsc::channel();
        let (back_tx, back_rx) = mpsc::channel();
        let live = Arc::new(LiveCounters::default());
        let rec = Recorder::new(0, &[0], timeline, live, tx, back_rx);
        (rec, rx, back_tx)
    }

    /// One measured window from `start_ms` to `end_ms` (`None`: bounded by a message count), in
    /// open loop (1 msg/s) or closed loop.
    pub(crate) fn timeline(start_ms: u64, end_ms: Option<u64>, open_loop: bool) -> Timeline {
        let mut c = crate::config::Config::new("127.0.0.1:7");
        c.warmup_ms = start_ms;
        c.duration_ms = end_ms.map(|end| end - start_ms);
        c.messages = end_ms.is_none().then_some(1);
        c.rate_per_s = open_loop.then_some(1.0);
        Timeline::new(&c, None)
    }

    fn window(start_ms: u64, end_ms: Option<u64>) -> Window {
        timeline(start_ms, end_ms, false).window()
    }

    /// The next interval histogram sent to the coordinator.
    fn interval(rx: &mpsc::Receiver<FromWorker>) -> Option<IntervalReport> {
        match rx.try_recv().ok()? {
            FromWorker::Interval(r) => Some(r),
            FromWorker::Step { .. } => panic!("a step result from an unstepped run"),
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
        let (mut rec, _rx, _back) = recorder(timeline(0, Some(1_000), false));
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
        let (mut rec, rx, back) = recorder(timeline(500, None, false));
        // Warm-up messages record nothing; measured ones land in the interval of their echo.
        assert!(!rec.completed(&pending(100, 100, false), 200 * MS, 0));
        assert!(rec.completed(&pending(600, 650, true), 700 * MS, 0));
        assert!(rx.try_recv().is_err(), "the first second is still open");
        // The next echo is two seconds into the window: the first two intervals go out, the
        // second one empty.
        assert!(rec.completed(&pending(1_500, 1_500, true), 2_700 * MS, 0));
        let first = interval(&rx).unwrap();
        assert_eq!((first.index, first.latency.len()), (0, 1));
        assert!(first.latency.equivalent(first.latency.max(), 100_000));
        let second = interval(&rx).unwrap();
        assert_eq!((second.index, second.latency.len()), (1, 0));
        back.send(first.latency).unwrap();
        let result = rec.finish(2_800 * MS, std::iter::empty(), cpu(0), 0);
        let third = interval(&rx).unwrap();
        assert_eq!((third.index, third.latency.len()), (2, 1));
        assert!(third.latency.equivalent(third.latency.max(), 1_200_000));
        assert!(rx.try_recv().is_err());
        assert_eq!(result.latency.len(), 2);
        assert!(result.service.equivalent(result.service.min(), 50_000));
        assert_eq!(result.messages_verified, 2);
        assert_eq!(result.last_echo_ns, 2_700 * MS);
    }

    #[test]
    fn loop_lag_runs_from_when_the_message_could_go_to_its_first_byte_written() {
        let (mut rec, _rx, _back) = recorder(timeline(0, Some(1_000), true));
        // Intended at 10 ms, the write began at 10.5 ms and returned at 10.6 ms: 500 µs late.
        rec.first_byte_sent(&pending(10, 0, true), 10_500_000, 0, 10_600_000);
        // Intended at 20 ms, but the connection could only take it from 30 ms (the cap was
        // full): written at 30.01 ms, 10 µs after it could have been.
        rec.first_byte_sent(&pending(20, 0, true), 30_010_000, 30 * MS, 30_020_000);
        // Warm-up (not measured): nothing.
        rec.first_byte_sent(&pending(40, 0, false), 90 * MS, 0, 90 * MS);
        let r = rec.result();
        let lags: Vec<u64> = r
            .loop_lag
            .iter_recorded()
            .map(|v| v.value_iterated_to())
            .collect();
        assert_eq!(lags, [10, 500]);
        // The send lag includes the wait for the server.
        assert_eq!(
            r.schedule_lag.max(),
            r.schedule_lag.highest_equivalent(10_020)
        );
        assert_eq!(r.messages_sent, 2);
    }

    #[test]
    fn in_flight_counts_issued_messages_until_verified_or_abandoned() {
        let (mut rec, _rx, _back) = recorder(timeline(0, Some(1_000), true));
        let issue = Issue {
            intended_ns: 0,
            measured: true,
            held_back: false,
        };
        for _ in 0..3 {
            rec.issued(&issue);
        }
        assert_eq!(rec.in_flight(), 3);
        rec.completed(&pending(0, 0, true), MS, 0);
        assert_eq!(rec.in_flight(), 2);
        rec.abandoned(2);
        assert_eq!(rec.in_flight(), 0);
    }

    /// Two steps: 100–300 ms and 400–600 ms (settle 100 ms), one connection.
    fn two_steps() -> Timeline {
        let mut c = crate::config::Config::new("127.0.0.1:7");
        c.warmup_ms = 100;
        c.step_settle_ms = 100;
        c.duration_ms = None;
        let step = crate::config::RateStep {
            rate_per_s: 100.0,
            duration_ms: 200,
        };
        c.rate_steps = vec![step, step];
        Timeline::new(&c, None)
    }

    fn steps_received(rx: &mpsc::Receiver<FromWorker>) -> Vec<(usize, ThreadResult)> {
        rx.try_iter()
            .filter_map(|m| match m {
                FromWorker::Step { step, result, .. } => Some((step, *result)),
                FromWorker::Interval(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_step_counts_messages_by_their_intended_time_and_goes_out_once_they_are_in() {
        let (mut rec, rx, _back) = recorder(two_steps());
        let issue = |ms| Issue {
            intended_ns: ms * MS,
            measured: true,
            held_back: true,
        };
        // Edges: step 0's window opens at 100 ms.
        assert_eq!(rec.next_edge(), Some(100 * MS));
        rec.pass_edge(100 * MS, cpu(10 * MS), 0);
        rec.issued(&issue(150));
        rec.first_byte_sent(&pending(150, 0, true), 150 * MS, 0, 150 * MS);
        rec.bytes_sent(64, 150 * MS);
        // Intended in step 0 at 290 ms, echoed in the settle (310 ms): latency recorded, not
        // verified (it completed after its step's window).
        rec.issued(&issue(290));
        assert!(rec.completed(&pending(150, 150, true), 160 * MS, 0));
        assert!(!rec.completed(&pending(290, 290, true), 310 * MS, 0));
        // The window ends at 300 ms: 50 ms of CPU, 20 of them spinning, over 200 ms.
        assert_eq!(rec.next_edge(), Some(300 * MS));
        rec.pass_edge(300 * MS, cpu(60 * MS), 20 * MS);
        // Not handed over while a message of step 0 is still in flight.
        rec.hand_over_steps(305 * MS, Some(290 * MS), None);
        assert!(steps_received(&rx).is_empty());
        rec.hand_over_steps(320 * MS, Some(450 * MS), None);
        let steps = steps_received(&rx);
        assert_eq!(steps.len(), 1);
        let (k, r) = &steps[0];
        assert_eq!(*k, 0);
        assert_eq!(
            (r.messages_sent, r.messages_verified, r.held_back),
            (1, 1, 2)
        );
        assert_eq!((r.latency.len(), r.bytes_sent), (2, 64));
        assert_eq!(r.slots[0].messages, 1);
        assert_eq!(
            (r.cpu_ns, r.spin_ns, r.wall_ns),
            (50 * MS, 20 * MS, 200 * MS)
        );
        // The user-space part of the step's CPU: 45 - 7.5 ms.
        assert_eq!(r.user_cpu_ns, 37_500_000);
        assert!(
            (r.max_work_fraction - 0.15).abs() < 1e-9,
            "{}",
            r.max_work_fraction
        );
        assert!((r.max_busy_fraction - 0.25).abs() < 1e-9);
        // Step 1 started but the thread ends early at 450 ms: it goes out with what it has. A
        // message intended in its settle (350 ms) and echoed in its window is in its throughput,
        // not in its latency.
        rec.pass_edge(400 * MS, cpu(70 * MS), 20 * MS);
        assert!(!rec.completed(&pending(350, 350, false), 410 * MS, 0));
        let top = rec.finish(450 * MS, std::iter::empty(), cpu(80 * MS), 25 * MS);
        let steps = steps_received(&rx);
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].0, 1);
        assert_eq!((steps[0].1.cpu_ns, steps[0].1.wall_ns), (10 * MS, 50 * MS));
        assert_eq!(
            (steps[0].1.messages_verified, steps[0].1.latency.len()),
            (1, 0)
        );
        // The whole run: both messages sent, one verified.
        assert_eq!((top.messages_sent, top.messages_verified), (1, 1));
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
        let (mut rec, _rx, _back) = recorder(timeline(1_000, Some(3_000), false));
        rec.start_window(1_000 * MS, cpu(0), 0);
        let r = rec.finish(1_100 * MS, std::iter::empty(), cpu(100 * MS), 40 * MS);
        assert!(
            (r.max_busy_fraction - 0.05).abs() < 1e-9,
            "{}",
            r.max_busy_fraction
        );
        // Spin-waiting is not work.
        assert!(
            (r.max_work_fraction - 0.03).abs() < 1e-9,
            "{}",
            r.max_work_fraction
        );
        assert_eq!(
            (r.cpu_ns, r.spin_ns, r.wall_ns),
            (100 * MS, 40 * MS, 100 * MS)
        );
        let (mut rec, _rx, _back) = recorder(timeline(0, None, false));
        rec.start_window(10 * MS, cpu(0), 0);
        let r = rec.finish(30 * MS, std::iter::empty(), cpu(30 * MS), 0);
        assert_eq!(r.max_busy_fraction, 1.0, "capped against clock rounding");
    }
}
