//! The send schedule: when each message of a connection is meant to go out, whether it may go
//! out now, and whether its lateness is the server's doing. Pure: the time is an argument.
//!
//! Closed loop keeps `--depth` messages in flight per connection (default 1); a message's
//! intended send time is the moment it is issued. Open loop (`--rate`, or each step of a stepped
//! run) gives every connection its own arrival schedule at `rate / connections`: evenly spaced,
//! with the connections' phases spread over one interval so that they do not send in bursts, or
//! with exponential gaps (a Poisson process) drawn from a per-connection xorshift. Each step of
//! the [`Timeline`] starts its connections' schedules afresh at its start. A message is issued
//! when its intended time has come and the connection can take it (`--depth`, if given, caps the
//! messages in flight; `--messages` and `--messages-per-connection` bound the count).
//!
//! Coordinated omission: latency always counts from the intended time, whatever delayed the
//! send. A message is *held back* when its intended time came while the connection could not
//! take it (connecting, or the cap full): the server's doing. The schedule remembers when the
//! connection last became able to take a message ([`SendSchedule::unblocked_ns`]); the loop's own
//! lateness (*loop lag*) is measured when the message's first byte is written, from the later of
//! its intended time and that moment (see `record`). Neither is recorded for messages intended
//! outside a measured window (warm-up, a step's settle).

use super::Window;
use super::timeline::{Step, Timeline};
use crate::config::{Arrival, Config};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What every connection of a run may send, and when (one per thread; read-only but for the
/// timeline, which grows when steps are read as the run goes).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// The steps: rates and measured windows.
    pub timeline: Timeline,
    /// The whole measured span ([`Timeline::window`]).
    pub window: Window,
    /// Open loop: arrival process of the intended send times.
    pub arrival: Arrival,
    /// Connection slots of the whole run (all threads).
    pub connections: u64,
    /// Messages a connection may have in flight ([`Config::max_in_flight`]).
    pub max_in_flight: usize,
    /// `--messages`: measured messages of the whole run, split evenly over the slots.
    pub messages: Option<u64>,
    /// `--messages-per-connection` (churn).
    pub messages_per_connection: Option<u64>,
}

/// One connection slot's schedule (kept across churn reconnects).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SendSchedule {
    /// Measured messages this slot may still issue (`--messages`).
    pub quota: Option<u64>,
    /// Open loop: the intended send time of the next message.
    pub next_intended_ns: u64,
    /// The slot (all threads).
    slot: u64,
    /// Open loop: the step whose schedule `next_intended_ns` belongs to.
    step: usize,
    /// Open loop, uniform: this slot's offset within one interval of the step.
    phase_ns: u64,
    /// Open loop: messages of the step scheduled so far.
    scheduled: u64,
    /// Open loop, Poisson: xorshift state.
    rng: u64,
    /// When the connection last became able to take another message (it opened, the cap on
    /// messages in flight freed a place, or a full socket buffer took bytes again): a message due
    /// before that was held back by the server, not by the loop.
    pub unblocked_ns: u64,
    /// Open loop: the due time this slot is queued under in the [`DueQueue`], if any.
    queued_ns: Option<u64>,
}

/// What may be done next on a connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Next {
    /// Issue a message now.
    Issue(Issue),
    /// Open loop: the next message is not due before this time.
    Wait(u64),
    /// Nothing now: the cap is full, the count is reached, the window is over, or (steps read
    /// as the run goes) the next step has not come yet.
    Nothing,
}

/// A message the schedule lets go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Issue {
    /// Intended send time: latency is counted from here.
    pub intended_ns: u64,
    /// Intended inside a measured window: recorded.
    pub measured: bool,
    /// Open loop, measured: its intended time came while the connection could not take it.
    pub held_back: bool,
}

/// How a connection that has nothing in flight and may issue nothing more ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The slot is done (window over, or its `--messages` share sent).
    Last,
    /// Churn: `--messages-per-connection` reached; close and connect again.
    Churn,
}

impl Plan {
    /// The plan of a run configured by `config` over `timeline`.
    pub fn new(config: &Config, timeline: Timeline) -> Plan {
        Plan {
            window: timeline.window(),
            timeline,
            arrival: config.arrival,
            connections: config.connections as u64,
            max_in_flight: config.max_in_flight(),
            messages: config.messages,
            messages_per_connection: config.messages_per_connection,
        }
    }

    /// Replaces the timeline (steps read as the run goes added one, or the input ended).
    pub fn set_timeline(&mut self, timeline: Timeline) {
        self.window = timeline.window();
        self.timeline = timeline;
    }

    /// Whether this is an open loop (`--rate`, steps).
    #[inline]
    pub fn is_open_loop(&self) -> bool {
        self.timeline.open_loop()
    }

    /// Open loop: mean time between two intended send times of one connection in `step`.
    fn interval_ns(&self, step: &Step) -> f64 {
        match step.rate_per_s {
            Some(rate) if rate > 0.0 => 1e9 * self.connections as f64 / rate,
            _ => 0.0,
        }
    }

    /// The starting schedule of connection slot `slot`.
    pub fn schedule(&self, slot: usize) -> SendSchedule {
        let quota = self.messages.map(|n| {
            let base = n / self.connections;
            base + u64::from((slot as u64) < n % self.connections)
        });
        let mut schedule = SendSchedule {
            quota,
            next_intended_ns: 0,
            slot: slot as u64,
            step: 0,
            phase_ns: 0,
            scheduled: 0,
            rng: (slot as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            unblocked_ns: 0,
            queued_ns: None,
        };
        if self.is_open_loop() {
            self.enter_step(&mut schedule, 0);
        }
        schedule
    }

    /// Starts slot `s`'s schedule of step `k` (which must be known) at the step's start.
    fn enter_step(&self, s: &mut SendSchedule, k: usize) {
        let step = *self.timeline.get(k).expect("entering a known step");
        let interval = self.interval_ns(&step);
        s.step = k;
        s.scheduled = 0;
        // Spread the phases so that connections do not send in bursts.
        s.phase_ns = (interval * s.slot as f64 / self.connections as f64) as u64;
        s.next_intended_ns = step.start_ns
            + match self.arrival {
                Arrival::Uniform => s.phase_ns,
                Arrival::Poisson => s.exp_gap_ns(interval),
            };
    }

    /// Open loop: moves `s` past the end of its step into the next known one. False when its
    /// step is over and the next one is not known (yet).
    fn in_current_step(&self, s: &mut SendSchedule) -> bool {
        loop {
            let step = self.timeline.get(s.step).expect("the slot's step is known");
            if step
                .measure_end_ns
                .is_none_or(|end| s.next_intended_ns < end)
            {
                return true;
            }
            if self.timeline.get(s.step + 1).is_none() {
                return false;
            }
            self.enter_step(s, s.step + 1);
        }
    }

    /// What connection `s` may do at `now` with `in_flight` messages outstanding and `issued`
    /// messages issued on its current connection. An [`Issue`] is taken: the schedule moves on.
    #[inline]
    pub fn next(&self, s: &mut SendSchedule, in_flight: usize, issued: u64, now: u64) -> Next {
        if in_flight >= self.max_in_flight || s.quota == Some(0) {
            return Next::Nothing;
        }
        if let Some(m) = self.messages_per_connection
            && issued >= m
        {
            return Next::Nothing;
        }
        let (intended_ns, measured) = if self.is_open_loop() {
            if !self.in_current_step(s) {
                return Next::Nothing;
            }
            let intended = s.next_intended_ns;
            if intended > now {
                return Next::Wait(intended);
            }
            let step = *self.timeline.get(s.step).expect("the slot's step is known");
            let interval = self.interval_ns(&step);
            s.scheduled += 1;
            s.next_intended_ns = match self.arrival {
                Arrival::Uniform => {
                    step.start_ns + s.phase_ns + (interval * s.scheduled as f64) as u64
                }
                Arrival::Poisson => intended + s.exp_gap_ns(interval),
            };
            (intended, intended >= step.measure_start_ns)
        } else {
            if self.window.measure_end_ns.is_some_and(|end| now >= end) {
                return Next::Nothing;
            }
            (now, now >= self.window.measure_start_ns)
        };
        if measured && let Some(q) = s.quota.as_mut() {
            *q -= 1;
        }
        // Due while the connection could not take it: the server held it back.
        let held_back = measured && self.is_open_loop() && s.unblocked_ns > intended_ns;
        Next::Issue(Issue {
            intended_ns,
            measured,
            held_back,
        })
    }

    /// No more messages will be issued for this slot (on this or any later connection).
    pub fn window_over(&self, s: &SendSchedule, now: u64) -> bool {
        if s.quota == Some(0) {
            return true;
        }
        if self.is_open_loop() {
            let Some(step) = self.timeline.get(s.step) else {
                return true;
            };
            let past_its_step = step
                .measure_end_ns
                .is_some_and(|end| s.next_intended_ns >= end);
            past_its_step && self.timeline.get(s.step + 1).is_none() && self.timeline.closed()
        } else {
            self.window.measure_end_ns.is_some_and(|end| now >= end)
        }
    }

    /// For a connection with nothing in flight: whether it ends now, and how.
    pub fn ending(&self, s: &SendSchedule, issued: u64, now: u64) -> Option<Ending> {
        if self.window_over(s, now) {
            return Some(Ending::Last);
        }
        match self.messages_per_connection {
            Some(m) if issued >= m => Some(Ending::Churn),
            _ => None,
        }
    }
}

impl SendSchedule {
    /// The connection can take another message from `now` on (it opened, the cap freed, or the
    /// socket took bytes again).
    #[inline]
    pub fn unblocked(&mut self, now: u64) {
        self.unblocked_ns = now;
    }

    /// Takes the queued wake-up at `due`; false when it is stale (a newer one replaced it, or the
    /// slot finished).
    pub fn take_wake(&mut self, due: u64) -> bool {
        if self.queued_ns != Some(due) {
            return false;
        }
        self.queued_ns = None;
        true
    }

    /// Forgets any queued wake-up (the slot is done).
    pub fn cancel_wake(&mut self) {
        self.queued_ns = None;
    }

    /// One exponential gap with mean `mean_ns`, from the slot's xorshift.
    fn exp_gap_ns(&mut self, mean_ns: f64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let u = ((self.rng >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        (-u.ln() * mean_ns) as u64
    }
}

/// Open loop: the connections waiting for their next intended send time, earliest first, so
/// that the loop sleeps until exactly then and touches only the connections whose time came.
#[derive(Debug, Default)]
pub(crate) struct DueQueue {
    heap: BinaryHeap<Reverse<(u64, usize)>>,
}

impl DueQueue {
    pub fn with_capacity(connections: usize) -> DueQueue {
        DueQueue {
            heap: BinaryHeap::with_capacity(connections),
        }
    }

    /// Queues connection `index` (whose schedule is `s`) to be woken at `due`, once per due time.
    #[inline]
    pub fn wake_at(&mut self, s: &mut SendSchedule, due: u64, index: usize) {
        if s.queued_ns != Some(due) {
            s.queued_ns = Some(due);
            self.heap.push(Reverse((due, index)));
        }
    }

    /// The earliest queued due time.
    pub fn earliest(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }

    /// Removes and returns the earliest entry due by `now` (`(due, index)`); check it with
    /// [`SendSchedule::take_wake`].
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, usize)> {
        match self.heap.peek() {
            Some(&Reverse((due, index))) if due <= now => {
                self.heap.pop();
                Some((due, index))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn plan(rate: Option<f64>, connections: usize, arrival: Arrival) -> Plan {
        let mut c = Config::new("127.0.0.1:7");
        c.connections = connections;
        c.rate_per_s = rate;
        c.arrival = arrival;
        c.warmup_ms = 0;
        c.duration_ms = Some(1_000);
        Plan::new(&c, Timeline::new(&c, None))
    }

    /// Takes every message `s` may issue at `now` (with nothing in flight); their intended times.
    fn take_all(plan: &Plan, s: &mut SendSchedule, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while let Next::Issue(i) = plan.next(s, 0, out.len() as u64, now) {
            out.push(i.intended_ns);
        }
        out
    }

    #[test]
    fn uniform_intended_times_are_evenly_spaced_with_phases_spread_over_the_slots() {
        // 4 connections at 400/s: each sends every 10 ms, the slots 2.5 ms apart.
        let p = plan(Some(400.0), 4, Arrival::Uniform);
        for slot in 0..4u64 {
            let phase = slot * 2_500_000;
            let mut s = p.schedule(slot as usize);
            // A loop that first looks at 35 ms issues everything due by then (a time equal to
            // now is due), and then waits for the next one.
            let due: Vec<u64> = (0..4)
                .map(|k| phase + k * 10 * MS)
                .filter(|&t| t <= 35 * MS)
                .collect();
            assert_eq!(take_all(&p, &mut s, 35 * MS), due, "slot {slot}");
            let next = phase + due.len() as u64 * 10 * MS;
            assert_eq!(
                p.next(&mut s, 0, 0, 35 * MS),
                Next::Wait(next),
                "slot {slot}"
            );
        }
    }

    #[test]
    fn poisson_gaps_are_exponential_with_the_per_connection_mean() {
        let p = plan(Some(1_000.0), 1, Arrival::Poisson);
        let mut s = p.schedule(0);
        let times = take_all(&p, &mut s, 999 * MS);
        // 1 ms mean gap over ~1 s: about 1,000 arrivals, irregularly spaced.
        let n = times.len() as f64;
        assert!((900.0..1_100.0).contains(&n), "{n} arrivals");
        let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<u64>() as f64 / gaps.len() as f64;
        assert!(
            (0.9 * MS as f64..1.1 * MS as f64).contains(&mean),
            "mean gap {mean}"
        );
        // Exponential: about e^-1 of the gaps exceed the mean, and some exceed 3x the mean.
        let above = gaps.iter().filter(|&&g| g as f64 > mean).count() as f64 / gaps.len() as f64;
        assert!((0.30..0.44).contains(&above), "{above} above the mean");
        assert!(gaps.iter().any(|&g| g > 3 * MS));
        // A pure function of the slot: the same schedule every run.
        assert_eq!(take_all(&p, &mut p.schedule(0), 999 * MS), times);
    }

    #[test]
    fn closed_loop_issues_at_now_up_to_the_depth() {
        let mut p = plan(None, 2, Arrival::Uniform);
        p.max_in_flight = 3;
        let mut s = p.schedule(1);
        let at = |p: &Plan, s: &mut SendSchedule, in_flight| p.next(s, in_flight, 0, 7 * MS);
        for in_flight in 0..3 {
            assert_eq!(
                at(&p, &mut s, in_flight),
                Next::Issue(Issue {
                    intended_ns: 7 * MS,
                    measured: true,
                    held_back: false,
                })
            );
        }
        assert_eq!(at(&p, &mut s, 3), Next::Nothing);
        // After the window nothing more is issued, and the slot is over.
        assert_eq!(p.next(&mut s, 0, 0, 1_000 * MS), Next::Nothing);
        assert!(!p.window_over(&s, 999 * MS));
        assert!(p.window_over(&s, 1_000 * MS));
    }

    #[test]
    fn messages_split_evenly_over_the_slots_and_bound_each() {
        let mut p = plan(None, 4, Arrival::Uniform);
        p.messages = Some(10);
        let quotas: Vec<Option<u64>> = (0..4).map(|slot| p.schedule(slot).quota).collect();
        assert_eq!(quotas, [Some(3), Some(3), Some(2), Some(2)]);
        let mut s = p.schedule(3);
        assert!(matches!(p.next(&mut s, 0, 0, 0), Next::Issue(_)));
        assert!(matches!(p.next(&mut s, 0, 1, 0), Next::Issue(_)));
        assert_eq!(p.next(&mut s, 0, 2, 0), Next::Nothing);
        assert!(p.window_over(&s, 0));
        assert_eq!(p.ending(&s, 2, 0), Some(Ending::Last));
    }

    #[test]
    fn warm_up_messages_are_not_measured_and_do_not_use_the_quota() {
        let mut p = plan(None, 1, Arrival::Uniform);
        p.messages = Some(2);
        p.window.measure_start_ns = 100 * MS;
        p.window.measure_end_ns = None;
        let mut s = p.schedule(0);
        let warm = Issue {
            intended_ns: 50 * MS,
            measured: false,
            held_back: false,
        };
        assert_eq!(p.next(&mut s, 0, 0, 50 * MS), Next::Issue(warm));
        assert_eq!(s.quota, Some(2));
        for issued in 1..3 {
            let Next::Issue(i) = p.next(&mut s, 0, issued, 150 * MS) else {
                panic!("message {issued} is not issued");
            };
            assert!(i.measured);
        }
        assert_eq!(p.next(&mut s, 0, 3, 150 * MS), Next::Nothing);
        assert!(p.window_over(&s, 150 * MS));
    }

    #[test]
    fn churn_ends_a_connection_after_its_messages_and_the_slot_after_the_window() {
        let mut p = plan(None, 1, Arrival::Uniform);
        p.messages_per_connection = Some(2);
        let s = p.schedule(0);
        assert_eq!(p.ending(&s, 1, 5 * MS), None);
        assert_eq!(p.ending(&s, 2, 5 * MS), Some(Ending::Churn));
        assert_eq!(p.ending(&s, 1, 1_000 * MS), Some(Ending::Last));
    }

    #[test]
    fn open_loop_window_ends_with_the_last_intended_time_inside_it() {
        let p = plan(Some(1.0), 1, Arrival::Uniform);
        let mut s = p.schedule(0);
        // One message a second: the one intended at 0 s goes; the next (1 s) is past the end.
        assert!(!p.window_over(&s, 0));
        assert_eq!(take_all(&p, &mut s, 5_000 * MS), [0]);
        assert!(
            p.window_over(&s, 0),
            "decided by the next intended time, not the clock"
        );
    }

    /// Two connections stepping from 100/s (1 s measured after a 500 ms warm-up) to 400/s
    /// (settle 100 ms, then 500 ms measured).
    fn stepped() -> Plan {
        let mut c = Config::new("127.0.0.1:7");
        c.connections = 2;
        c.warmup_ms = 500;
        c.step_settle_ms = 100;
        c.duration_ms = None;
        c.rate_steps = vec![
            crate::config::RateStep {
                rate_per_s: 100.0,
                duration_ms: 1_000,
            },
            crate::config::RateStep {
                rate_per_s: 400.0,
                duration_ms: 500,
            },
        ];
        Plan::new(&c, Timeline::new(&c, None))
    }

    #[test]
    fn each_step_restarts_the_schedule_at_its_rate_and_measures_only_its_window() {
        let p = stepped();
        let mut s = p.schedule(1);
        let mut issued = Vec::new();
        while let Next::Issue(i) = p.next(&mut s, 0, issued.len() as u64, 10_000 * MS) {
            issued.push((i.intended_ns / 100_000, i.measured));
        }
        // Step 0: every 20 ms from 10 ms (slot 1's phase), measured from 500 ms on; step 1 from
        // 1,500 ms: every 5 ms from 1,502.5 ms, measured from 1,600 ms to 2,100 ms.
        let step0: Vec<(u64, bool)> = (0..75)
            .map(|k| (100 + k * 200, 100 + k * 200 >= 5_000))
            .collect();
        let step1: Vec<(u64, bool)> = (0..120)
            .map(|k| (15_025 + k * 50, 15_025 + k * 50 >= 16_000))
            .collect();
        assert_eq!(issued, [step0, step1].concat());
        assert!(p.window_over(&s, 10_000 * MS));
        assert_eq!(p.next(&mut s, 0, 0, 10_000 * MS), Next::Nothing);
    }

    #[test]
    fn a_slot_waits_for_a_step_not_yet_read_and_goes_on_when_it_comes() {
        let mut c = Config::new("127.0.0.1:7");
        c.connections = 1;
        c.warmup_ms = 0;
        c.steps_from = Some("-".into());
        let first = crate::config::RateStep {
            rate_per_s: 10.0,
            duration_ms: 1_000,
        };
        let mut p = Plan::new(&c, Timeline::new(&c, Some(first)));
        let mut s = p.schedule(0);
        assert_eq!(take_all(&p, &mut s, 5_000 * MS).len(), 10);
        // Its step is over and no other has come: nothing to do, but not over either.
        assert_eq!(p.next(&mut s, 0, 10, 5_000 * MS), Next::Nothing);
        assert!(!p.window_over(&s, 5_000 * MS));
        // A step arrives at 5 s: it starts a margin later.
        let mut t = p.timeline.clone();
        t.push(
            crate::config::RateStep {
                rate_per_s: 20.0,
                duration_ms: 500,
            },
            Some(5_000 * MS),
            0,
        );
        p.set_timeline(t);
        let start = 5_000 * MS + super::super::timeline::PUBLISH_MARGIN_NS;
        assert_eq!(p.next(&mut s, 0, 10, 5_000 * MS), Next::Wait(start));
        // 20/s over its settle (250 ms) and window (500 ms).
        assert_eq!(take_all(&p, &mut s, 9_000 * MS).len(), 15);
        // The input ended: the slot is over.
        let mut t = p.timeline.clone();
        t.close();
        p.set_timeline(t);
        assert!(p.window_over(&s, 9_000 * MS));
    }

    #[test]
    fn a_message_due_while_the_connection_could_not_take_it_is_held_back() {
        let p = plan(Some(100.0), 1, Arrival::Uniform);
        let mut s = p.schedule(0);
        // Due at 0 and 10 ms; the connection opened only at 5 ms.
        s.unblocked(5 * MS);
        let issues: Vec<bool> = (0..2)
            .map(|_| match p.next(&mut s, 0, 0, 20 * MS) {
                Next::Issue(i) => i.held_back,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(issues, [true, false]);
    }

    #[test]
    fn the_due_queue_wakes_each_slot_once_per_due_time_and_skips_stale_entries() {
        let p = plan(Some(100.0), 2, Arrival::Uniform);
        let (mut a, mut b) = (p.schedule(0), p.schedule(1));
        let mut q = DueQueue::with_capacity(2);
        q.wake_at(&mut b, 5 * MS, 1);
        q.wake_at(&mut b, 5 * MS, 1);
        q.wake_at(&mut a, 10 * MS, 0);
        assert_eq!(q.earliest(), Some(5 * MS));
        assert_eq!(q.pop_due(4 * MS), None);
        assert_eq!(q.pop_due(20 * MS), Some((5 * MS, 1)));
        assert!(b.take_wake(5 * MS));
        // The duplicate was never queued: the next entry is slot 0's.
        assert_eq!(q.pop_due(20 * MS), Some((10 * MS, 0)));
        a.cancel_wake();
        assert!(!a.take_wake(10 * MS), "a finished slot's wake-up is stale");
        assert_eq!(q.pop_due(20 * MS), None);
    }
}
