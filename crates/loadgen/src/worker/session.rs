//! One connection slot's messages: its [`SendSchedule`], its [`Stream`] and its
//! [`SlotProgress`], moved together by what happens on the socket: the connection opened,
//! messages are due, bytes were written, bytes came back, the connection closed. Pure: the OS
//! plumbing (`poll`, `conn`) reads the clock and the socket and calls in with the time; the unit
//! tests below do the same with a fake clock and a perfect (or stalling) echo.
//!
//! The coordinated-omission rules live in the schedule and the recorder; the tests here pin them
//! down end to end, one message at a time: latency from the intended send time, service time from
//! the first byte written, held-back messages (the server's fault) against the loop's own lag
//! (taken when a message's first byte is written), the depth cap, and the warm-up.

use super::Window;
use super::record::{Recorder, SlotProgress};
use super::schedule::{Next, Plan, SendSchedule};
use super::stream::{Fault, Pending, Stream};

/// One connection slot's send schedule, byte stream and progress.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The slot's index in its thread's list (per-step counts are kept by it).
    pub index: usize,
    pub schedule: SendSchedule,
    pub stream: Stream,
    pub progress: SlotProgress,
    /// A write left bytes unsent because the socket buffer was full: when it takes bytes again
    /// the connection is unblocked (what waits until then was held back by the server).
    pub write_blocked: bool,
}

impl Session {
    /// Slot `slot` of `plan`, at `index` in its thread's list, with `size_bytes` messages; its
    /// first connection id is the slot.
    pub fn new(plan: &Plan, index: usize, slot: usize, size_bytes: u64) -> Session {
        Session {
            index,
            schedule: plan.schedule(slot),
            stream: Stream::new(size_bytes, slot as u64, plan.max_in_flight.min(64)),
            progress: SlotProgress::new(&plan.window),
            write_blocked: false,
        }
    }

    /// The connection opened at `now`: from now on it can take messages, so one due before now
    /// was held back.
    pub fn opened(&mut self, now: u64) {
        self.schedule.unblocked(now);
    }

    /// Issues every message the plan lets go out at `now`. Returns the time the next message is
    /// due when that is still to come (open loop), for the loop to wake up then.
    #[inline]
    pub fn issue_due(&mut self, plan: &Plan, rec: &mut Recorder, now: u64) -> Option<u64> {
        loop {
            let in_flight = self.stream.in_flight();
            match plan.next(&mut self.schedule, in_flight, self.stream.issued(), now) {
                Next::Issue(issue) => {
                    rec.issued(&issue);
                    self.stream.issue(Pending {
                        intended_ns: issue.intended_ns,
                        sent_ns: 0,
                        measured: issue.measured,
                    });
                }
                Next::Wait(due) => return Some(due),
                Next::Nothing => return None,
            }
        }
    }

    /// `written` bytes of the stream went out in a write call made at `started` that returned at
    /// `now`. The loop lag of a message whose first byte was among them runs to `started`.
    #[inline]
    pub fn wrote(&mut self, written: usize, started: u64, now: u64, rec: &mut Recorder) {
        let unblocked = self.schedule.unblocked_ns;
        self.stream.wrote(written, now, |p| {
            rec.first_byte_sent(p, started.min(now), unblocked, now)
        });
        rec.bytes_sent(written, now);
    }

    /// The socket takes bytes again at `now` after a write found it full.
    #[inline]
    pub fn writable(&mut self, now: u64) {
        if self.write_blocked {
            self.write_blocked = false;
            self.schedule.unblocked(now);
        }
    }

    /// `data` came back at `now`: verified, and every message completed by it recorded. (Count
    /// the bytes with [`Recorder::bytes_received`] first.)
    #[inline]
    pub fn received(
        &mut self,
        data: &[u8],
        now: u64,
        plan: &Plan,
        rec: &mut Recorder,
    ) -> Result<(), Fault> {
        let schedule = &mut self.schedule;
        let progress = &mut self.progress;
        let index = self.index;
        self.stream.verify(data, |p, in_flight| {
            if in_flight >= plan.max_in_flight {
                // The cap was full: the connection can take another message from now on.
                schedule.unblocked(now);
            }
            progress.echoed(now, p.intended_ns, &plan.window);
            if rec.completed(&p, now, index) {
                progress.messages_verified += 1;
            }
        })
    }

    /// The connection closed at `now` with its messages in flight unanswered: their wait counts
    /// as a stall. Returns how many were abandoned.
    pub fn abandon(&mut self, now: u64, window: &Window) -> usize {
        if let Some(front) = self.stream.front() {
            let since = front.intended_ns;
            self.progress.note_gap(now, since, window);
        }
        let abandoned = self.stream.in_flight();
        self.stream.abandon();
        self.write_blocked = false;
        abandoned
    }

    /// Since when the oldest message in flight has waited for its echo (for `--timeout`): its
    /// first byte written, or before that its intended time but not before the connect began.
    pub fn echo_wait_since(&self, connect_started_ns: u64) -> Option<u64> {
        self.stream.front().map(|front| {
            if front.sent_ns != 0 {
                front.sent_ns
            } else {
                front.intended_ns.max(connect_started_ns)
            }
        })
    }

    /// Whether the slot has gone longer than `stall_ns` without an echo at `now`, with a message
    /// outstanding, inside the window.
    pub fn stalled(&self, now: u64, stall_ns: u64, window: &Window) -> bool {
        self.stream.front().is_some_and(|front| {
            self.progress
                .stalled(now, front.intended_ns, stall_ns, window)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::{MS, recorder};
    use super::super::timeline::Timeline;
    use super::*;
    use crate::config::{Arrival, Config};
    use crate::payload::Mismatch;
    use crate::report::{BuildInputs, Report};
    use crate::stats::ThreadResult;
    use hdrhistogram::Histogram;

    /// One connection against a scripted echo server, driven by a fake clock in milliseconds.
    /// `wire` holds the bytes written and not yet echoed, in order.
    struct Script {
        plan: Plan,
        rec: Recorder,
        session: Session,
        wire: Vec<u8>,
        /// The earliest wake-up the session asked for.
        wake_at: Option<u64>,
    }

    impl Script {
        /// One connection of 64-byte messages: `rate` messages per second (open loop) or closed
        /// loop, `depth` as `--depth`, a window from `warmup_ms` to `warmup_ms + 10 s`.
        fn new(rate: Option<f64>, depth: Option<u32>, warmup_ms: u64) -> Script {
            let mut c = Config::new("127.0.0.1:7");
            c.connections = 1;
            c.size_bytes = 64;
            c.rate_per_s = rate;
            c.depth = depth;
            c.arrival = Arrival::Uniform;
            c.warmup_ms = warmup_ms;
            c.duration_ms = Some(10_000);
            let timeline = Timeline::new(&c, None);
            let plan = Plan::new(&c, timeline.clone());
            let (rec, _, _) = recorder(timeline);
            let mut session = Session::new(&plan, 0, 0, 64);
            session.opened(0);
            Script {
                plan,
                rec,
                session,
                wire: Vec::new(),
                wake_at: None,
            }
        }

        /// The loop runs at `ms`: issues what is due and writes all of it.
        fn pump(&mut self, ms: u64) -> &mut Self {
            self.wake_at = self.session.issue_due(&self.plan, &mut self.rec, ms * MS);
            let mut buf = [0u8; 4096];
            loop {
                let n = self.session.stream.fill_unsent(&mut buf);
                if n == 0 {
                    break;
                }
                self.wire.extend_from_slice(&buf[..n]);
                self.session.wrote(n, ms * MS, ms * MS, &mut self.rec);
            }
            self
        }

        /// The loop runs at `ms` but writes nothing yet (e.g. the socket buffer is full).
        fn issue_only(&mut self, ms: u64) -> &mut Self {
            self.wake_at = self.session.issue_due(&self.plan, &mut self.rec, ms * MS);
            self
        }

        /// Writes what was issued, at `ms`.
        fn write(&mut self, ms: u64) -> &mut Self {
            let mut buf = [0u8; 4096];
            let n = self.session.stream.fill_unsent(&mut buf);
            self.wire.extend_from_slice(&buf[..n]);
            self.session.wrote(n, ms * MS, ms * MS, &mut self.rec);
            self
        }

        /// The server echoes the next `messages` messages at `ms`; then the loop pumps.
        fn echo(&mut self, ms: u64, messages: usize) -> &mut Self {
            let n = messages * 64;
            let data: Vec<u8> = self.wire.drain(..n).collect();
            self.rec.bytes_received(n, ms * MS);
            self.session
                .received(&data, ms * MS, &self.plan, &mut self.rec)
                .unwrap();
            self.pump(ms)
        }

        fn result(&self) -> &ThreadResult {
            self.rec.result()
        }
    }

    /// The values (µs, rounded to the histogram's precision) recorded in `h`, in order.
    fn values_ms(h: &Histogram<u64>) -> Vec<u64> {
        let mut out = Vec::new();
        for v in h.iter_recorded() {
            for _ in 0..v.count_at_value() {
                out.push((v.value_iterated_to() + 500) / 1_000);
            }
        }
        out
    }

    #[test]
    fn on_time_latency_equals_service_time() {
        let mut s = Script::new(Some(100.0), None, 0);
        s.pump(0).echo(2, 1);
        assert_eq!(s.wake_at, Some(10 * MS), "the next message is due at 10 ms");
        s.pump(9);
        assert_eq!(
            s.session.stream.in_flight(),
            0,
            "nothing goes out before it is due"
        );
        s.pump(10).echo(13, 1);
        let r = s.result();
        assert_eq!(values_ms(&r.latency), [2, 3]);
        assert_eq!(values_ms(&r.service), [2, 3]);
        assert_eq!(values_ms(&r.loop_lag), [0, 0]);
        assert_eq!(values_ms(&r.schedule_lag), [0, 0]);
        assert_eq!(
            (r.messages_sent, r.messages_verified, r.held_back),
            (2, 2, 0)
        );
        assert_eq!(s.session.progress.messages_verified, 2);
    }

    #[test]
    fn late_sends_count_latency_from_the_intended_time_and_service_from_the_send() {
        // Due at 0, 10 and 20 ms; the loop wakes up only at 25 ms and writes at 26 ms.
        let mut s = Script::new(Some(100.0), None, 0);
        s.issue_only(25);
        assert_eq!(s.session.stream.in_flight(), 3);
        s.write(26).echo(27, 3);
        let r = s.result();
        assert_eq!(values_ms(&r.latency), [7, 17, 27]);
        assert_eq!(values_ms(&r.service), [1, 1, 1]);
        // The lateness is the loop's own, up to the first byte written: 26, 16 and 6 ms after
        // each could have gone out.
        assert_eq!(values_ms(&r.loop_lag), [6, 16, 26]);
        assert_eq!(values_ms(&r.schedule_lag), [6, 16, 26]);
        assert_eq!(r.held_back, 0);
    }

    #[test]
    fn a_stalled_connection_holds_messages_back_and_they_accumulate_latency() {
        // One in flight at most; the server sits on message 0 until 50 ms, while messages fall
        // due at 10, 20, 30 and 40 ms.
        let mut s = Script::new(Some(100.0), Some(1), 0);
        s.pump(0);
        for ms in [10, 20, 30, 40] {
            s.pump(ms);
            assert_eq!(s.session.stream.in_flight(), 1, "the cap holds at {ms} ms");
            assert_eq!(s.wake_at, None, "no wake-up while the cap is full");
        }
        assert!(s.session.stalled(40 * MS, 30 * MS, &s.plan.window));
        // Then it answers each message 1 ms after it is sent.
        for ms in 50..=54 {
            s.echo(ms, 1);
        }
        let r = s.result();
        assert_eq!(values_ms(&r.latency), [14, 23, 32, 41, 50]);
        // The service time hides the stall (it is what a closed-loop tool would report)...
        assert_eq!(values_ms(&r.service), [1, 1, 1, 1, 50]);
        // ... and the loop was on time: each message went out as soon as the cap freed. The
        // ones due at 10 to 50 ms all came due while the cap was full: held back.
        assert_eq!(values_ms(&r.loop_lag), [0; 6]);
        assert_eq!(r.held_back, 5);
        assert_eq!(s.session.progress.max_gap_ns, 50 * MS);
        assert!(!s.session.stalled(54 * MS, 30 * MS, &s.plan.window));
    }

    #[test]
    fn the_depth_cap_bounds_messages_in_flight() {
        // Closed loop, depth 4: four at once, intended when issued; one more per echo.
        let mut s = Script::new(None, Some(4), 0);
        s.pump(0);
        assert_eq!(s.session.stream.in_flight(), 4);
        s.echo(3, 1);
        assert_eq!(s.session.stream.in_flight(), 4);
        s.echo(5, 3);
        s.echo(9, 4);
        let r = s.result();
        // Intended at 0 (four), 3 and 5 ms (three); echoed at 3, 5, 5, 5, 9, 9, 9, 9 ms.
        assert_eq!(values_ms(&r.latency), [3, 4, 4, 4, 5, 5, 5, 6]);
        assert_eq!(
            r.loop_lag.len(),
            0,
            "closed loop has no schedule to be late for"
        );
        assert_eq!(r.held_back, 0);

        // Open loop, depth 2, server silent: two go out on time, the rest wait for the cap.
        let mut s = Script::new(Some(100.0), Some(2), 0);
        s.pump(0).pump(10).pump(35);
        assert_eq!(s.session.stream.in_flight(), 2);
        assert_eq!(s.result().messages_sent, 2);
        s.echo(36, 1);
        assert_eq!(
            s.session.stream.in_flight(),
            2,
            "one more: the one due at 20 ms"
        );
        assert_eq!(s.result().held_back, 1);
    }

    /// 400 messages at 50/s (one every 20 ms); every 50th is written `late_ms` after its
    /// intended time by a loop that woke up late; the server answers each `service_ms` after
    /// it was written. Events run in time order.
    fn late_loop_run(late_ms: u64, service_ms: u64) -> ThreadResult {
        let mut s = Script::new(Some(50.0), None, 0);
        let mut events: Vec<(u64, bool)> = Vec::new();
        for k in 0..400u64 {
            let sent = k * 20 + if k % 50 == 0 { late_ms } else { 0 };
            events.push((sent, true));
            events.push((sent + service_ms, false));
        }
        events.sort_by_key(|&(ms, is_send)| (ms, !is_send));
        for (ms, is_send) in events {
            if is_send {
                s.pump(ms);
            } else {
                s.echo(ms, 1);
            }
        }
        s.result().clone()
    }

    #[test]
    fn a_late_loop_is_reported_and_makes_the_run_invalid() {
        // A fast server (1 ms): 2% of the messages 2 ms late puts the loop lag p99 at 2 ms,
        // far above 5% of the 3 ms latency p99.
        let r = late_loop_run(2, 1);
        assert_eq!(
            values_ms(&r.loop_lag),
            [[0; 392].as_slice(), &[2; 8]].concat()
        );
        let report = build(&r, Some(50.0));
        let schedule = report.schedule.unwrap();
        assert_eq!(schedule.loop_lag_us.p99, 2_000);
        assert!((3_000..=3_003).contains(&report.latency_us.p99));
        assert!(schedule.behind, "{schedule:?}");
        assert!(!report.valid);
        assert!(
            report
                .invalid_reasons
                .iter()
                .any(|r| r.contains("fell behind its open-loop schedule")
                    && r.contains("2000 µs late at p99")),
            "{:?}",
            report.invalid_reasons
        );
        // Late is not saturated: the loadgen's work was small.
        assert!(!report.loadgen.saturated, "{:?}", report.loadgen);

        // The same lateness inside the latency of a slow server (50 ms): 2 ms is within 5% of
        // the p99 (52 ms), so the figures stand.
        let r = late_loop_run(2, 50);
        let report = build(&r, Some(50.0));
        assert_eq!(report.schedule.unwrap().loop_lag_us.p99, 2_000);
        assert!(!report.schedule.unwrap().behind);
        assert!(report.valid, "{:?}", report.invalid_reasons);

        // A server that takes 12 ms with a loop on time: valid, no loop lag.
        let r = late_loop_run(0, 12);
        assert_eq!(values_ms(&r.loop_lag), [0; 400]);
        assert_eq!(values_ms(&r.latency), [12; 400]);
        let report = build(&r, Some(50.0));
        assert!(!report.schedule.unwrap().behind);
        assert!(report.valid, "{:?}", report.invalid_reasons);
    }

    #[test]
    fn a_full_socket_buffer_holds_messages_back_and_the_loop_lag_counts_from_when_it_drains() {
        // Due at 0 and 10 ms; the socket took nothing at 0 ms and became writable at 30 ms;
        // the loop wrote at 30.5 ms.
        let mut s = Script::new(Some(100.0), None, 0);
        s.issue_only(0);
        s.session.write_blocked = true;
        s.issue_only(10);
        s.session.writable(30 * MS);
        let mut buf = [0u8; 4096];
        let n = s.session.stream.fill_unsent(&mut buf);
        s.wire.extend_from_slice(&buf[..n]);
        s.session.wrote(n, 30 * MS + 500_000, 31 * MS, &mut s.rec);
        let lags: Vec<u64> = s
            .result()
            .loop_lag
            .iter_recorded()
            .map(|v| v.value_iterated_to())
            .collect();
        assert_eq!(lags, [500], "500 µs each, counted from 30 ms");
        assert_eq!(s.result().loop_lag.len(), 2);
        // The send lag still shows the wait for the server.
        assert_eq!(values_ms(&s.result().schedule_lag), [21, 31]);
    }

    fn build(r: &ThreadResult, rate: Option<f64>) -> Report {
        let mut config = Config::new("127.0.0.1:7");
        config.connections = 1;
        config.rate_per_s = rate;
        let mut r = r.clone();
        r.opened = 1;
        let inputs = BuildInputs {
            threads: 1,
            duration_s: 10.0,
            cpu_s: 0.1,
            ..BuildInputs::default()
        };
        Report::build(&config, crate::env::capture(), &r, inputs).unwrap()
    }

    #[test]
    fn warm_up_messages_are_sent_and_verified_but_not_recorded() {
        // Warm-up until 100 ms; one message every 40 ms. The server holds the first four until
        // 130 ms.
        let mut s = Script::new(Some(25.0), None, 100);
        s.pump(0).pump(40).pump(80).pump(120).echo(130, 4);
        s.pump(160).echo(170, 1);
        let r = s.result();
        // Intended at 0, 40 and 80 ms: warm-up, nothing recorded. At 120 and 160 ms: measured.
        assert_eq!(values_ms(&r.latency), [10, 10]);
        assert_eq!(values_ms(&r.loop_lag), [0, 0]);
        assert_eq!((r.messages_sent, r.messages_verified), (2, 2));
        assert_eq!(s.session.progress.messages_verified, 2);
        // The warm-up message held into the window is a stall from the window's start.
        assert_eq!(s.session.progress.max_gap_ns, 30 * MS);
        assert_eq!(r.bytes_sent, 2 * 64, "bytes written from 100 ms on");
        assert_eq!(r.bytes_received, 5 * 64, "bytes received from 100 ms on");
    }

    #[test]
    fn echoes_after_the_window_record_latency_but_do_not_count_as_verified() {
        let mut s = Script::new(None, None, 0);
        s.pump(9_990).echo(10_005, 1);
        let r = s.result();
        assert_eq!(values_ms(&r.latency), [15]);
        assert_eq!(r.messages_verified, 0);
        assert_eq!(s.session.progress.messages_verified, 0);
        // Nothing more goes out after the window.
        assert_eq!(s.session.stream.in_flight(), 0);
        assert_eq!(r.messages_sent, 1);
    }

    #[test]
    fn a_timeout_waits_from_the_first_byte_written_or_else_the_intended_time() {
        let mut s = Script::new(Some(100.0), None, 0);
        assert_eq!(s.session.echo_wait_since(0), None);
        s.issue_only(3);
        assert_eq!(
            s.session.echo_wait_since(MS),
            Some(MS),
            "not before the connect"
        );
        assert_eq!(s.session.echo_wait_since(0), Some(0));
        s.write(4);
        assert_eq!(s.session.echo_wait_since(0), Some(4 * MS));
        s.session.abandon(30 * MS, &s.plan.window);
        assert_eq!(s.session.stream.in_flight(), 0);
        assert_eq!(
            s.session.progress.max_gap_ns,
            30 * MS,
            "an abandoned message is a stall"
        );
    }

    #[test]
    fn a_corrupt_echo_is_a_fault_at_its_message_and_nothing_after_it_completes() {
        let mut s = Script::new(None, Some(3), 0);
        s.pump(0);
        s.wire[64 + 17] ^= 1;
        let data: Vec<u8> = s.wire.drain(..).collect();
        let fault = s
            .session
            .received(&data, MS, &s.plan, &mut s.rec)
            .unwrap_err();
        assert!(
            matches!(
                fault,
                Fault::Corrupt {
                    message: 1,
                    mismatch: Mismatch { offset: 17, .. },
                }
            ),
            "{fault:?}"
        );
        assert_eq!(s.result().messages_verified, 1);
        assert_eq!(s.session.stream.in_flight(), 2);
    }
}
