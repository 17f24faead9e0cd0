//! The run's timeline: the warm-up and one measured window, or, in a stepped run, one step after
//! another over the same connections. Pure: times are nanoseconds since the run's base.
//!
//! Every run has at least one [`Step`]. A step's rate takes over at `start_ns`; from then until
//! `measure_start_ns` it *settles* (run, not recorded); its measured window is
//! `measure_start_ns..measure_end_ns`. The first step settles in the warm-up (its `start_ns` is
//! the run's start), each later one for `--step-settle` after the previous step's end (or, when
//! steps are read as the run goes, after it arrived, whichever is later). A message belongs to the
//! step of its *intended* send time, and is measured when that time is inside the step's window.
//!
//! A timeline read from `--steps-from` grows while the run goes ([`Timeline::push`]) and is
//! [`Timeline::close`]d at the end of the input; every other timeline is complete from the start.

use super::Window;
use crate::config::{Config, RateStep};

/// When a step read while the run goes may start at the earliest: time for every client thread
/// to see it (they look at least every 10 ms) before its first intended send.
pub(crate) const PUBLISH_MARGIN_NS: u64 = 20_000_000;

/// One step of the timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Step {
    /// When this step's schedule starts (its settle begins).
    pub start_ns: u64,
    /// Start of the measured window.
    pub measure_start_ns: u64,
    /// End of the measured window; `None` for a run bounded by `--messages`.
    pub measure_end_ns: Option<u64>,
    /// Open loop: messages per second over all connections; `None` in closed loop.
    pub rate_per_s: Option<f64>,
}

impl Step {
    /// Whether `t` is inside the measured window.
    #[inline]
    pub fn measures(&self, t: u64) -> bool {
        t >= self.measure_start_ns && self.measure_end_ns.is_none_or(|end| t < end)
    }

    /// Length of the measured window in nanoseconds (`None`: open-ended).
    pub fn measured_ns(&self) -> Option<u64> {
        self.measure_end_ns.map(|end| end - self.measure_start_ns)
    }
}

/// The steps of a run (at least one).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Timeline {
    steps: Vec<Step>,
    /// No step will be added.
    closed: bool,
    /// A stepped run (`--rate-steps`, `--steps-from`): each step is reported on its own.
    stepped: bool,
    /// Settle time of each step after the first.
    settle_ns: u64,
}

impl Timeline {
    /// The timeline of `config`, complete unless it reads its steps as it goes (then only the
    /// first step, `first`, is known).
    pub fn new(config: &Config, first: Option<RateStep>) -> Timeline {
        let warmup_ns = config.warmup_ms * 1_000_000;
        let settle_ns = config.step_settle_ms * 1_000_000;
        let stepped = config.stepped();
        let steps: Vec<RateStep> = if config.steps_from.is_some() {
            first.into_iter().collect()
        } else {
            config.rate_steps.clone()
        };
        if steps.is_empty() {
            let measure_end_ns = match (config.messages, config.duration_ms) {
                (None, Some(d)) => Some(warmup_ns + d * 1_000_000),
                _ => None,
            };
            return Timeline {
                steps: vec![Step {
                    start_ns: 0,
                    measure_start_ns: warmup_ns,
                    measure_end_ns,
                    rate_per_s: config.rate_per_s,
                }],
                closed: true,
                stepped,
                settle_ns,
            };
        }
        let mut timeline = Timeline {
            steps: Vec::with_capacity(steps.len()),
            closed: false,
            stepped,
            settle_ns,
        };
        for step in steps {
            timeline.push(step, None, warmup_ns);
        }
        timeline.closed = config.steps_from.is_none();
        timeline
    }

    /// Adds `step`: it starts at the end of the last step, or, for a step that `arrived_ns` while
    /// the run goes, [`PUBLISH_MARGIN_NS`] after it arrived when that is later. The first step
    /// starts at 0 and settles for `warmup_ns`.
    pub fn push(&mut self, step: RateStep, arrived_ns: Option<u64>, warmup_ns: u64) {
        let (start_ns, settle_ns) = match self.steps.last() {
            None => (0, warmup_ns),
            Some(last) => (
                last.measure_end_ns
                    .unwrap_or(last.measure_start_ns)
                    .max(arrived_ns.map_or(0, |at| at + PUBLISH_MARGIN_NS)),
                self.settle_ns,
            ),
        };
        let measure_start_ns = start_ns + settle_ns;
        self.steps.push(Step {
            start_ns,
            measure_start_ns,
            measure_end_ns: Some(measure_start_ns + step.duration_ms * 1_000_000),
            rate_per_s: Some(step.rate_per_s),
        });
    }

    /// No more steps will come.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Whether no more steps will come.
    #[inline]
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Whether each step is reported on its own.
    #[inline]
    pub fn stepped(&self) -> bool {
        self.stepped
    }

    /// Step `k`, if it is known yet.
    #[inline]
    pub fn get(&self, k: usize) -> Option<&Step> {
        self.steps.get(k)
    }

    /// Steps known so far.
    #[inline]
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// The first step.
    #[inline]
    pub fn first(&self) -> &Step {
        &self.steps[0]
    }

    /// Whether the run is an open loop (its steps have rates).
    #[inline]
    pub fn open_loop(&self) -> bool {
        self.first().rate_per_s.is_some()
    }

    /// The whole measured span: from the first step's window to the last one's end (open while
    /// steps may still come).
    pub fn window(&self) -> Window {
        let last = self.steps[self.steps.len() - 1];
        Window {
            measure_start_ns: self.first().measure_start_ns,
            measure_end_ns: if self.closed {
                last.measure_end_ns
            } else {
                None
            },
        }
    }

    /// The step whose measured window holds `t`, if any (not during warm-up and settles).
    #[inline]
    pub fn step_of(&self, t: u64) -> Option<usize> {
        // Few steps, and recent ones are asked for most: search from the end.
        self.steps
            .iter()
            .rposition(|s| t >= s.measure_start_ns)
            .filter(|&k| self.steps[k].measures(t))
    }

    /// Whether `t` is inside some step's measured window.
    #[inline]
    pub fn measuring(&self, t: u64) -> bool {
        self.step_of(t).is_some()
    }

    /// The next window start or end after `now`, if one is known.
    pub fn next_edge(&self, now: u64) -> Option<u64> {
        self.steps
            .iter()
            .flat_map(|s| [Some(s.measure_start_ns), s.measure_end_ns])
            .flatten()
            .find(|&t| t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn step(rate: f64, ms: u64) -> RateStep {
        RateStep {
            rate_per_s: rate,
            duration_ms: ms,
        }
    }

    #[test]
    fn a_plain_run_is_one_step_after_the_warm_up() {
        let mut c = Config::new("127.0.0.1:7");
        c.warmup_ms = 500;
        c.duration_ms = Some(2_000);
        c.rate_per_s = Some(1_000.0);
        let t = Timeline::new(&c, None);
        assert_eq!((t.len(), t.closed(), t.stepped()), (1, true, false));
        assert_eq!(
            *t.first(),
            Step {
                start_ns: 0,
                measure_start_ns: 500 * MS,
                measure_end_ns: Some(2_500 * MS),
                rate_per_s: Some(1_000.0),
            }
        );
        assert_eq!(t.window().measure_end_ns, Some(2_500 * MS));
        assert_eq!(t.step_of(499 * MS), None);
        assert_eq!(t.step_of(500 * MS), Some(0));
        assert_eq!(t.step_of(2_500 * MS), None);
        // --messages: no end.
        c.messages = Some(10);
        let t = Timeline::new(&c, None);
        assert_eq!(t.first().measure_end_ns, None);
        assert!(t.measuring(99_000 * MS));
    }

    #[test]
    fn rate_steps_follow_each_other_with_a_settle_between() {
        let mut c = Config::new("127.0.0.1:7");
        c.warmup_ms = 1_000;
        c.step_settle_ms = 200;
        c.duration_ms = None;
        c.rate_steps = vec![step(100.0, 2_000), step(200.0, 1_000), step(400.0, 1_000)];
        let t = Timeline::new(&c, None);
        assert!(t.closed() && t.stepped());
        let spans: Vec<(u64, u64, Option<u64>)> = (0..t.len())
            .map(|k| {
                let s = t.get(k).unwrap();
                (
                    s.start_ns / MS,
                    s.measure_start_ns / MS,
                    s.measure_end_ns.map(|e| e / MS),
                )
            })
            .collect();
        assert_eq!(
            spans,
            [
                (0, 1_000, Some(3_000)),
                (3_000, 3_200, Some(4_200)),
                (4_200, 4_400, Some(5_400))
            ]
        );
        assert_eq!(t.step_of(3_100 * MS), None, "settling is not measured");
        assert_eq!(t.step_of(3_200 * MS), Some(1));
        assert_eq!(t.window().measure_start_ns, 1_000 * MS);
        assert_eq!(t.window().measure_end_ns, Some(5_400 * MS));
        assert_eq!(t.next_edge(3_000 * MS), Some(3_200 * MS));
        assert_eq!(t.next_edge(5_400 * MS), None);
    }

    #[test]
    fn steps_read_as_the_run_goes_start_no_earlier_than_they_arrive() {
        let mut c = Config::new("127.0.0.1:7");
        c.warmup_ms = 500;
        c.step_settle_ms = 100;
        c.steps_from = Some("-".into());
        let mut t = Timeline::new(&c, Some(step(1_000.0, 1_000)));
        assert!(!t.closed() && t.stepped());
        assert_eq!(t.window().measure_end_ns, None, "open while steps may come");
        // Arrived before the first step ended: it follows at once.
        t.push(step(2_000.0, 1_000), Some(1_200 * MS), 0);
        assert_eq!(t.get(1).unwrap().start_ns, 1_500 * MS);
        // Arrived 300 ms after the second step ended: it starts a margin later.
        t.push(step(4_000.0, 500), Some(2_900 * MS), 0);
        let third = *t.get(2).unwrap();
        assert_eq!(third.start_ns, 2_900 * MS + PUBLISH_MARGIN_NS);
        assert_eq!(third.measure_start_ns, third.start_ns + 100 * MS);
        t.close();
        assert_eq!(t.window().measure_end_ns, third.measure_end_ns);
    }
}
