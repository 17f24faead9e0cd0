//! The capacity search as a pure state machine: it says which rate to measure next
//! ([`Search::next`]), takes the verdict of each measurement ([`Search::record`]), and ends with
//! the bracket and what limited it ([`Search::outcome`]). Tested on synthetic verdicts, noise
//! included; `capacity` feeds it real steps of one steered loadgen.
//!
//! The path: a doubling ramp from the start rate while rates pass (halving while the start rate
//! fails), then bisection between the highest passing and the lowest failing rate until the
//! bracket is within the precision.
//!
//! Latency need not grow with load: at low rates an idle CPU (the server's, on a virtual
//! machine) is slow to wake for each message, and the latency *falls* as the load rises and
//! keeps it awake. So a failure in the ramp is taken as the knee only when the rates above it
//! fail too: one doubling above once a rate has passed, up to three while none has (the search
//! starts low). A rate above that passes shows the failure was such a dip; the ramp goes on from
//! there (`dips` in the outcome). Bisection happens inside a bracket whose upper edge was
//! confirmed that way.
//!
//! What keeps a noisy step from moving the bracket: a rate's verdict needs `retries + 1`
//! agreeing measurements (default two of at most three). A pass whose every latency bound held
//! with room to spare (at most half the limit) counts as all of them: far below the knee the
//! latency does not come near the limit by chance. Measurements the loadgen could not make
//! honestly (saturated, its loop late, or it failed) are no vote at all: the SLO is judged only
//! on valid steps (a step whose only fault is its loop's lateness still votes *pass* when the
//! SLO held with that lateness inside its latency: see `slo::judge_step`). When no votes keep
//! coming at one rate (`retries + 1` times saturated; two more for a late loop or a failed
//! step, which a busy host causes by chance, and for a saturated one at a rate that passed once
//! there — the loadgen can offer it, and a slow spell of the host saturated it; four more again
//! when the loop was late while it had little work, the CPU taken from it), the loadgen cannot
//! measure that rate:
//! - above a pass, saturated or late: that rate is the bracket's upper edge, and bisection
//!   narrows it like a failure's, so the answer — a lower bound set by the loadgen, not by the
//!   server — repeats within the precision; a late loop's limit (it had work to spare, so a
//!   spell of the host may have made it late) is measured once more when the bracket is
//!   narrow, and if it now gets a verdict the search goes on from there;
//! - while the ramp is going up, interrupted (after two more, not six): the rate is left
//!   unmeasured (`unmeasured`) and the ramp goes on above it, up to three rates in all, or,
//!   while nothing has passed, as one of the looks above a failure that waits for
//!   confirmation (once a rate has passed, the one look above a failure is waited out) — on a
//!   virtual machine an idle server's CPU that wakes for each message at low rates can take
//!   the loadgen's CPU with it, before or after a lower rate passed; going down, a rate left so
//!   is not measured again; when the ramp cannot skip any more, the lowest rate it left
//!   unmeasured above the last pass (or the rate it stopped at, if lower) is the loadgen's
//!   limit;
//! - otherwise, while a failure waits to be confirmed from above, the rate confirms it (the
//!   knee is below what the loadgen can offer); else the search stops there with the loadgen's
//!   limit.

use crate::record::capacity::SearchLimits;

/// Why the loadgen could not measure a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrument {
    /// Its busiest thread worked more than 90% of the time.
    Saturated,
    /// Its loop's own lateness was material next to the latency it measured.
    Late,
    /// Its loop was late while it had little work to do (its busiest thread worked less than
    /// [`INTERRUPTED_BELOW_WORK`] of the time): the CPU was taken from it for a spell (the host,
    /// other work), which says nothing about how much load it can offer.
    Interrupted,
    /// It produced no usable result (died, hung, too few samples).
    Failed,
}

impl Instrument {
    fn words(self) -> &'static str {
        match self {
            Self::Saturated => "the loadgen was saturated",
            Self::Late => "the loadgen's loop could not keep its schedule",
            Self::Interrupted => {
                "the loadgen's loop lost its CPU for spells while it had little to do"
            }
            Self::Failed => "the loadgen could not measure it",
        }
    }
}

/// What one measurement says about its rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A valid measurement that met the SLO; `clear` when every latency bound held with half
    /// its limit to spare.
    Pass { clear: bool },
    /// A valid measurement in which the server missed the SLO (latency, errors, achieved rate,
    /// starved connections).
    Fail,
    /// The loadgen's measurement is not to be trusted: no vote.
    Instrument(Instrument),
}

/// Why the search stopped (`stopped_because` in `capacity.json`, in these words).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopReason {
    StepLimitInRamp,
    BudgetInRamp,
    ReachedMaxRate,
    /// Even the lowest rate of the downward ramp (this one) failed.
    FailsAtLowest(u64),
    /// The bracket is within `precision` (a fraction).
    Bracketed {
        precision: f64,
    },
    StepLimitInBisection,
    BudgetInBisection,
    /// The loadgen could not measure this rate, again and again.
    LoadgenLimit(u64, Instrument),
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::StepLimitInRamp => f.write_str("step limit reached during the ramp"),
            Self::BudgetInRamp => f.write_str("time budget spent during the ramp"),
            Self::ReachedMaxRate => f.write_str("reached --max-rate without failing"),
            Self::FailsAtLowest(rate) => write!(f, "even {rate} msg/s fails the SLO"),
            Self::Bracketed { precision } => write!(f, "bracket within {:.0}%", precision * 100.0),
            Self::StepLimitInBisection => f.write_str("step limit reached during bisection"),
            Self::BudgetInBisection => f.write_str("time budget spent during bisection"),
            Self::LoadgenLimit(rate, what) => write!(f, "{} at {rate} msg/s", what.words()),
        }
    }
}

/// What limited the answer (`limiting_factor` in `capacity.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitingFactor {
    /// The server's knee: a rate the server failed, just above one it passed.
    Server,
    /// The loadgen could not offer or measure more: the capacity is at least the answer.
    Loadgen,
    /// Even the lowest rate failed: the SLO cannot be met by this server here.
    SloUnreachable,
    /// `--max-rate` passed.
    MaxRate,
    /// The time budget or step limit ended the search before a bracket.
    Budget,
}

impl LimitingFactor {
    /// The word in `capacity.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Loadgen => "loadgen",
            Self::SloUnreachable => "slo-unreachable",
            Self::MaxRate => "max-rate",
            Self::Budget => "budget",
        }
    }
}

/// Where the capacity lies.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutcome {
    /// The highest rate decided as passing (`None` when none was).
    pub capacity_per_s: Option<u64>,
    /// The lowest rate decided as failing by the server (`None` when none was).
    pub first_fail_per_s: Option<u64>,
    /// Why the search stopped.
    pub stopped: StopReason,
    /// Set when the loadgen could not measure a rate: the capacity is a lower bound.
    pub loadgen_limit_per_s: Option<u64>,
    /// Passing measurements at the capacity (two or more: confirmed by a re-measurement; a clear
    /// pass is decided by one).
    pub passes_at_capacity: u32,
    /// Rates that failed below one that passed (latency fell as load rose).
    pub dips: Vec<u64>,
    /// Rates the ramp left unmeasured: the loadgen's loop lost its CPU at each while it had
    /// little to do.
    pub unmeasured: Vec<u64>,
    /// Measurements taken.
    pub measurements: usize,
}

impl SearchOutcome {
    /// Why the search stopped, in the words of `capacity.json`'s `stopped_because`.
    pub fn stopped_because(&self) -> String {
        self.stopped.to_string()
    }

    /// What limited the answer.
    pub fn limiting_factor(&self) -> LimitingFactor {
        match self.stopped {
            StopReason::LoadgenLimit(..) => LimitingFactor::Loadgen,
            StopReason::FailsAtLowest(_) => LimitingFactor::SloUnreachable,
            StopReason::ReachedMaxRate => LimitingFactor::MaxRate,
            StopReason::Bracketed { .. } => LimitingFactor::Server,
            StopReason::StepLimitInBisection | StopReason::BudgetInBisection
                if self.loadgen_limit_per_s.is_some() =>
            {
                LimitingFactor::Loadgen
            }
            StopReason::StepLimitInBisection | StopReason::BudgetInBisection
                if self.first_fail_per_s.is_some() =>
            {
                LimitingFactor::Server
            }
            _ => LimitingFactor::Budget,
        }
    }
}

/// Where the search is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Doubling while rates pass.
    Up,
    /// Halving while rates fail (the start rate failed).
    Down,
    /// Between the highest pass and the lowest failure.
    Bisect,
}

/// Doublings above a failure that must fail too before it is the knee: while no rate has
/// passed, and once one has. The first is also how many rates in a row the ramp leaves
/// unmeasured (the loop interrupted at each) before it gives up.
const LOOK_ABOVE_BEFORE_A_PASS: u32 = 3;
const LOOK_ABOVE_AFTER_A_PASS: u32 = 1;
/// Late or failed steps at one rate tolerated beyond `retries + 1` (and saturated ones at a
/// rate that passed once).
const EXTRA_PATIENCE: u32 = 2;
/// Steps at one rate whose loop was late while it had little work, tolerated beyond that: such
/// spells (seen: 4-6 s on a 2-vCPU VM) pass, and waiting them out costs a few seconds.
const INTERRUPTED_PATIENCE: u32 = 4;
/// A late step whose loadgen worked less than this fraction of the time was interrupted.
pub const INTERRUPTED_BELOW_WORK: f64 = 0.5;

/// The votes at the rate being decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    /// Votes for a pass (a clear pass is all the votes a verdict needs).
    passes: u32,
    /// Measurements that passed.
    passed: u32,
    fails: u32,
    no_votes: u32,
    last_instrument: Option<Instrument>,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Measure this rate.
    Measure(u64),
    /// The search is over ([`Search::outcome`]).
    Done,
}

/// The search in progress.
#[derive(Debug, Clone)]
pub struct Search {
    limits: SearchLimits,
    /// Agreeing measurements a verdict needs.
    need: u32,
    phase: Phase,
    rate: u64,
    tally: Tally,
    pass: Option<u64>,
    fail: Option<u64>,
    passes_at_pass: u32,
    measurements: usize,
    stopped: Option<StopReason>,
    /// The lowest of the failures in a row in the ramp that wait for confirmation from above.
    pending_fail: Option<u64>,
    /// Doublings above `pending_fail` measured so far.
    looked_above: u32,
    dips: Vec<u64>,
    /// The lowest rate above a pass that the loadgen could not measure, and why: the upper edge
    /// of the bracket when no failure of the server lies below it.
    limit: Option<(u64, Instrument)>,
    /// Rates the ramp left unmeasured (the loop interrupted at each while it had little to do).
    unmeasured: Vec<u64>,
    /// Whether a late loop's limit was measured once more after the bisection below it.
    limit_retried: bool,
}

impl Search {
    /// A search within `limits` whose verdicts need `retries + 1` agreeing measurements.
    pub fn new(limits: &SearchLimits, retries: u32) -> Search {
        Search {
            limits: limits.clone(),
            need: retries + 1,
            phase: Phase::Up,
            rate: limits.start_rate_per_s.max(1),
            tally: Tally::default(),
            pass: None,
            fail: None,
            passes_at_pass: 0,
            measurements: 0,
            stopped: None,
            pending_fail: None,
            looked_above: 0,
            dips: Vec::new(),
            limit: None,
            unmeasured: Vec::new(),
            limit_retried: false,
        }
    }

    /// The next rate to measure, or `Done`.
    pub fn next(&self) -> Next {
        match self.stopped {
            Some(_) => Next::Done,
            None => Next::Measure(self.rate),
        }
    }

    /// The verdict of a measurement of the rate [`Self::next`] named.
    pub fn record(&mut self, verdict: Verdict) {
        if self.stopped.is_some() {
            return;
        }
        self.measurements += 1;
        match verdict {
            Verdict::Pass { clear } => {
                self.tally.passes += if clear { self.need } else { 1 };
                self.tally.passed += 1;
            }
            Verdict::Fail => self.tally.fails += 1,
            Verdict::Instrument(what) => {
                self.tally.no_votes += 1;
                self.tally.last_instrument = Some(what);
            }
        }
        let what = self.tally.last_instrument.unwrap_or(Instrument::Failed);
        let patience = match what {
            // A rate that passed once is within what the loadgen can offer: its saturated
            // steps are the host's spell, and get a late loop's patience.
            Instrument::Saturated if self.tally.passed == 0 => self.need,
            Instrument::Saturated | Instrument::Late | Instrument::Failed => {
                self.need + EXTRA_PATIENCE
            }
            // Where the ramp can move on above such a rate, it does so sooner.
            Instrument::Interrupted if self.may_skip() => self.need + EXTRA_PATIENCE,
            Instrument::Interrupted => self.need + EXTRA_PATIENCE + INTERRUPTED_PATIENCE,
        };
        if self.tally.passes >= self.need {
            self.decided(true);
        } else if self.tally.fails >= self.need {
            self.decided(false);
        } else if self.tally.no_votes >= patience {
            self.tally = Tally::default();
            if what == Instrument::Interrupted && self.may_skip() {
                self.skip();
            } else if self.pending_fail.is_some() {
                // Above a failure waiting for confirmation: the knee is below what the loadgen
                // can offer.
                self.confirm_pending();
            } else {
                self.cannot_measure(what);
            }
        }
        if self.stopped.is_none() && self.measurements >= self.limits.max_steps {
            self.stopped = Some(if self.phase == Phase::Bisect {
                StopReason::StepLimitInBisection
            } else {
                StopReason::StepLimitInRamp
            });
        }
    }

    /// No time is left for another measurement.
    pub fn out_of_time(&mut self) {
        if self.stopped.is_none() {
            self.stopped = Some(if self.phase == Phase::Bisect {
                StopReason::BudgetInBisection
            } else {
                StopReason::BudgetInRamp
            });
        }
    }

    /// The loadgen stopped working at the current rate (it exited or hung): nothing more can
    /// be measured.
    pub fn loadgen_failed(&mut self) {
        self.pending_fail = None;
        if self.stopped.is_none() {
            self.stopped = Some(StopReason::LoadgenLimit(self.rate, Instrument::Failed));
        }
    }

    /// Whether the ramp may leave the current rate unmeasured if its loop keeps being
    /// interrupted: the ramp is going up (below the maximum), and fewer than
    /// [`LOOK_ABOVE_BEFORE_A_PASS`] rates were left so — or, above a failure that waits for
    /// confirmation, a look above it is left (this one counted: three while nothing has
    /// passed, none beyond the one once a rate has).
    fn may_skip(&self) -> bool {
        let (skipped, allowed) = match (self.pending_fail, self.pass) {
            (Some(_), Some(_)) => (self.looked_above, LOOK_ABOVE_AFTER_A_PASS),
            (Some(_), None) => (self.looked_above, LOOK_ABOVE_BEFORE_A_PASS),
            (None, _) => (self.unmeasured.len() as u32, LOOK_ABOVE_BEFORE_A_PASS),
        };
        self.phase == Phase::Up && skipped < allowed && self.rate < self.limits.max_rate_per_s
    }

    /// Leaves the current rate unmeasured and goes on above it (a look above a waiting failure
    /// counts as one).
    fn skip(&mut self) {
        if self.pending_fail.is_some() {
            self.looked_above += 1;
        }
        self.unmeasured.push(self.rate);
        self.rate = self.rate.saturating_mul(2).min(self.limits.max_rate_per_s);
    }

    /// The loadgen could not measure the current rate, again and again (and no failure waits
    /// above a pass, nor can the ramp skip it): below a pass nothing is known of the server;
    /// above one, the bracket's upper edge is the loadgen's and bisection narrows it like a
    /// failure's, so that the lower bound repeats within the precision.
    fn cannot_measure(&mut self, what: Instrument) {
        let rate = self.rate;
        // Rates left unmeasured just below, above the last pass, could not be measured either.
        let rate = match (what, self.pass) {
            (Instrument::Interrupted, Some(pass)) => self
                .unmeasured
                .iter()
                .copied()
                .filter(|&skipped| skipped > pass)
                .min()
                .map_or(rate, |skipped| skipped.min(rate)),
            _ => rate,
        };
        match self.pass {
            Some(pass)
                if rate > pass && matches!(what, Instrument::Saturated | Instrument::Late) =>
            {
                if self.limit.is_none_or(|(lowest, _)| rate < lowest) {
                    self.limit = Some((rate, what));
                }
                self.phase = Phase::Bisect;
                self.bisect();
            }
            _ => self.stopped = Some(StopReason::LoadgenLimit(rate, what)),
        }
    }

    /// The rate being decided now got its verdict.
    fn decided(&mut self, passed: bool) {
        let rate = self.rate;
        let passes = self.tally.passed;
        self.tally = Tally::default();
        if self.phase == Phase::Bisect {
            // A verdict at or above the loadgen's limit (measured again) replaces it.
            if self.limit.is_some_and(|(limit, _)| rate >= limit) {
                self.limit = None;
            }
            if passed {
                self.pass = Some(rate);
                self.passes_at_pass = passes;
            } else {
                self.fail = Some(rate);
            }
            if self.fail.is_none() && self.limit.is_none() {
                // Nothing above the pass is known any more: ramp on.
                self.phase = Phase::Up;
                self.up_from(rate);
            } else {
                self.bisect();
            }
            return;
        }
        if passed {
            if let Some(failed) = self.pending_fail.take() {
                // The failures below were a dip: latency fell as the load rose.
                self.dips.push(failed);
                self.looked_above = 0;
                self.fail = None;
                self.phase = Phase::Up;
            }
            self.pass = Some(rate);
            self.passes_at_pass = passes;
            match self.phase {
                Phase::Up => self.up_from(rate),
                // Ramping down from a confirmed failure: bisect up to it.
                _ => {
                    self.phase = Phase::Bisect;
                    self.bisect();
                }
            }
            return;
        }
        if self.phase == Phase::Down {
            self.fail = Some(rate);
            self.ramp_down(rate);
            return;
        }
        // A failure in the upward ramp: look above it before taking it as the knee.
        self.pending_fail.get_or_insert(rate);
        let looks = if self.pass.is_some() {
            LOOK_ABOVE_AFTER_A_PASS
        } else {
            LOOK_ABOVE_BEFORE_A_PASS
        };
        if self.looked_above < looks && rate < self.limits.max_rate_per_s {
            self.looked_above += 1;
            self.rate = rate.saturating_mul(2).min(self.limits.max_rate_per_s);
        } else {
            self.confirm_pending();
        }
    }

    /// The failure waiting above a pass (or the start) is the knee: bisect below it, or ramp
    /// down when nothing has passed.
    fn confirm_pending(&mut self) {
        let Some(failed) = self.pending_fail.take() else {
            return;
        };
        self.looked_above = 0;
        self.fail = Some(failed);
        if self.pass.is_some() {
            self.phase = Phase::Bisect;
            self.bisect();
        } else {
            self.phase = Phase::Down;
            self.ramp_down(failed);
        }
    }

    /// Nothing has passed and `failed` failed: halve, unless that goes below the minimum.
    fn ramp_down(&mut self, failed: u64) {
        if failed / 2 < self.limits.min_rate_per_s.max(1) {
            self.stopped = Some(StopReason::FailsAtLowest(failed));
        } else if self.unmeasured.contains(&(failed / 2)) {
            // Measured already, in vain: what lies below the failure is not known.
            self.stopped = Some(StopReason::LoadgenLimit(
                failed / 2,
                Instrument::Interrupted,
            ));
        } else {
            self.rate = failed / 2;
        }
    }

    /// The ramp's next rate above a passing `rate` (the end at `--max-rate`).
    fn up_from(&mut self, rate: u64) {
        if rate >= self.limits.max_rate_per_s {
            self.stopped = Some(StopReason::ReachedMaxRate);
        } else {
            self.rate = rate.saturating_mul(2).min(self.limits.max_rate_per_s);
        }
    }

    /// The middle of the bracket next, or the end when it is narrow enough. Its upper edge is
    /// the lowest failure of the server or the lowest rate the loadgen could not measure,
    /// whichever is lower; the end names that one.
    fn bisect(&mut self) {
        let Some(low) = self.pass else {
            return;
        };
        let high = match (self.fail, self.limit) {
            (Some(fail), Some((limit, _))) => fail.min(limit),
            (Some(fail), None) => fail,
            (None, Some((limit, _))) => limit,
            (None, None) => return,
        };
        if high <= low
            || (high - low) as f64 <= self.limits.precision * low as f64
            || high - low <= 1
        {
            // A limit set by a late loop (not a saturated one: it had work to spare) is measured
            // once more at the end: the spell that made it late may be over.
            if let Some((limit, Instrument::Late)) = self.limit
                && limit <= high
                && !self.limit_retried
            {
                self.limit_retried = true;
                self.rate = limit;
                return;
            }
            self.stopped = Some(match self.limit {
                Some((limit, what)) if limit <= high => StopReason::LoadgenLimit(limit, what),
                _ => StopReason::Bracketed {
                    precision: self.limits.precision,
                },
            });
        } else {
            self.rate = low + (high - low) / 2;
        }
    }

    /// The answer so far.
    pub fn outcome(&self) -> SearchOutcome {
        let stopped = self.stopped.unwrap_or(StopReason::BudgetInRamp);
        SearchOutcome {
            capacity_per_s: self.pass,
            // A failure still waiting for its confirmation from above is the best bound known.
            first_fail_per_s: self.fail.or(self.pending_fail),
            stopped,
            loadgen_limit_per_s: match stopped {
                StopReason::LoadgenLimit(rate, _) => Some(rate),
                // Out of steps or time while bisecting below the loadgen's limit.
                _ => self
                    .limit
                    .filter(|(limit, _)| self.fail.is_none_or(|fail| *limit < fail))
                    .map(|(limit, _)| limit),
            },
            passes_at_capacity: if self.pass.is_some() {
                self.passes_at_pass
            } else {
                0
            },
            dips: self.dips.clone(),
            unmeasured: self.unmeasured.clone(),
            measurements: self.measurements,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::text::CapacityAnswer;

    fn limits() -> SearchLimits {
        SearchLimits {
            start_rate_per_s: 1000,
            min_rate_per_s: 100,
            max_rate_per_s: 10_000_000,
            precision: 0.05,
            max_steps: 60,
        }
    }

    /// Runs a search whose measurements come from `measure(rate, attempt)`; returns the outcome
    /// and every rate measured.
    fn run(
        retries: u32,
        mut measure: impl FnMut(u64, u32) -> Verdict,
    ) -> (SearchOutcome, Vec<u64>) {
        let mut search = Search::new(&limits(), retries);
        let mut rates = Vec::new();
        let mut attempts = std::collections::HashMap::<u64, u32>::new();
        while let Next::Measure(rate) = search.next() {
            let attempt = attempts.entry(rate).or_default();
            rates.push(rate);
            search.record(measure(rate, *attempt));
            *attempt += 1;
            assert!(rates.len() < 200, "the search does not end: {rates:?}");
        }
        (search.outcome(), rates)
    }

    /// A server whose knee is at `knee`: a clear pass far below it, a narrow pass just below
    /// it, a failure above it.
    fn server(knee: u64) -> impl Fn(u64) -> Verdict {
        move |rate| {
            if rate * 2 <= knee {
                Verdict::Pass { clear: true }
            } else if rate <= knee {
                Verdict::Pass { clear: false }
            } else {
                Verdict::Fail
            }
        }
    }

    /// How many times `rate` was measured.
    fn times(rates: &[u64], rate: u64) -> usize {
        rates.iter().filter(|&&r| r == rate).count()
    }

    /// A clear pass at every rate.
    const CLEAR: fn(u64) -> Verdict = |_| Verdict::Pass { clear: true };

    /// Measurements of `truth` below `from`; from there on, the loadgen cannot measure
    /// (`what`).
    fn beyond(
        from: u64,
        what: Instrument,
        truth: &impl Fn(u64) -> Verdict,
    ) -> impl Fn(u64, u32) -> Verdict + '_ {
        move |rate, _| {
            if rate >= from {
                Verdict::Instrument(what)
            } else {
                truth(rate)
            }
        }
    }

    fn answer(outcome: &SearchOutcome) -> String {
        CapacityAnswer {
            capacity_per_s: outcome.capacity_per_s,
            first_fail_per_s: outcome.first_fail_per_s,
            loadgen_limit_per_s: outcome.loadgen_limit_per_s,
            stopped_because: &outcome.stopped_because(),
            limiting_factor: Some(outcome.limiting_factor().as_str()),
        }
        .to_string()
    }

    #[test]
    fn finds_the_knee_within_precision_and_names_the_server() {
        for knee in [1_000, 3_000, 37_000, 123_456, 999_999] {
            let truth = server(knee);
            let (outcome, rates) = run(1, |rate, _| truth(rate));
            let capacity = outcome.capacity_per_s.expect("found");
            let fail = outcome.first_fail_per_s.expect("bracketed");
            assert!(
                capacity <= knee && fail > knee,
                "{knee}: {capacity}..{fail}"
            );
            assert!(
                (fail - capacity) as f64 <= 0.05 * capacity as f64 + 1.0,
                "{knee}: {capacity}..{fail}"
            );
            assert_eq!(outcome.limiting_factor(), LimitingFactor::Server);
            assert_eq!(rates[0], 1000);
            // Clear passes are measured once; near the knee every verdict took two.
            assert!(rates.len() <= 30, "{knee}: {} measurements", rates.len());
            assert!(outcome.passes_at_capacity >= 1, "{outcome:?}");
        }
    }

    #[test]
    fn one_noisy_measurement_does_not_move_the_bracket() {
        // Knee at 37,000. Noise: the first measurement of 16,000 and of 32,000 fails (a busy
        // neighbour), and the first of 40,000 passes by luck.
        let truth = server(37_000);
        let noisy = |rate: u64, attempt: u32| match (rate, attempt) {
            (16_000 | 32_000, 0) => Verdict::Fail,
            (40_000, 0) => Verdict::Pass { clear: false },
            _ => truth(rate),
        };
        let (quiet, _) = run(1, |rate, _| truth(rate));
        let (noisy, rates) = run(1, noisy);
        assert_eq!(noisy.capacity_per_s, quiet.capacity_per_s, "{rates:?}");
        assert_eq!(noisy.first_fail_per_s, quiet.first_fail_per_s, "{rates:?}");
        // Without a second vote the same noise moves the answer.
        let (single, _) = run(0, |rate, attempt| match (rate, attempt) {
            (32_000, 0) => Verdict::Fail,
            _ => truth(rate),
        });
        assert_ne!(single.capacity_per_s, quiet.capacity_per_s);
    }

    #[test]
    fn the_loadgens_own_limit_is_no_vote_and_ends_the_search_as_a_lower_bound() {
        // The server would hold 500k; the loadgen saturates from 100k on. The ramp's 128,000
        // is beyond it; bisection narrows the lower bound to within the precision of 100k.
        let truth = server(500_000);
        let (outcome, rates) = run(1, beyond(100_000, Instrument::Saturated, &truth));
        assert_eq!(outcome.capacity_per_s, Some(96_000), "{rates:?}");
        assert_eq!(
            outcome.first_fail_per_s, None,
            "never a failure of the server"
        );
        assert_eq!(outcome.loadgen_limit_per_s, Some(100_000));
        assert_eq!(outcome.limiting_factor(), LimitingFactor::Loadgen);
        assert_eq!(
            &rates[rates.len() - 9..],
            [
                128_000, 128_000, 96_000, 112_000, 112_000, 104_000, 104_000, 100_000, 100_000
            ]
        );
        assert_eq!(
            outcome.stopped_because(),
            "the loadgen was saturated at 100000 msg/s"
        );
        assert_eq!(
            answer(&outcome),
            "capacity: at least 96,000 msg/s (loadgen limit reached at 100,000; the loadgen was \
             saturated at 100000 msg/s)"
        );
        // Wherever the loadgen's limit lies, the lower bound is within the precision below it:
        // two runs on a loadgen whose limit moves a little agree within it too.
        for limit in [30_000, 64_001, 70_000, 99_999, 250_000] {
            let (outcome, rates) = run(1, beyond(limit, Instrument::Late, &truth));
            let capacity = outcome.capacity_per_s.expect("a pass");
            let edge = outcome.loadgen_limit_per_s.expect("the loadgen's limit");
            assert!(capacity < limit && edge >= limit, "{limit}: {rates:?}");
            assert!(
                (edge - capacity) as f64 <= 0.05 * capacity as f64,
                "{limit}: {capacity}..{edge}"
            );
            assert_eq!(outcome.limiting_factor(), LimitingFactor::Loadgen);
        }
        // A failure of the server inside that bracket still makes it the server's knee.
        let (outcome, _) = run(1, beyond(100_000, Instrument::Saturated, &server(85_000)));
        let capacity = outcome.capacity_per_s.expect("found");
        assert!((80_750..=85_000).contains(&capacity), "{capacity}");
        assert_eq!(outcome.limiting_factor(), LimitingFactor::Server);
        assert_eq!(outcome.loadgen_limit_per_s, None);
        // A late loop once is retried and then counts like any measurement.
        let truth = server(37_000);
        let (late_once, _) = run(1, |rate, attempt| match (rate, attempt) {
            (32_000, 0) => Verdict::Instrument(Instrument::Late),
            _ => truth(rate),
        });
        let (quiet, _) = run(1, |rate, _| truth(rate));
        assert_eq!(late_once.capacity_per_s, quiet.capacity_per_s);
        assert_eq!(late_once.limiting_factor(), LimitingFactor::Server);
    }

    #[test]
    fn latency_that_falls_as_load_rises_is_a_dip_not_the_knee() {
        // Fails below 5,000 (an idle server wakes slowly) and above 37,000 (its knee).
        let truth = server(37_000);
        let (outcome, rates) = run(1, |rate, _| {
            if rate < 5_000 {
                Verdict::Fail
            } else {
                truth(rate)
            }
        });
        let capacity = outcome.capacity_per_s.expect("found");
        assert!(
            (35_000..=37_000).contains(&capacity),
            "{capacity}: {rates:?}"
        );
        assert_eq!(outcome.dips, [1_000]);
        assert_eq!(outcome.limiting_factor(), LimitingFactor::Server);
        assert_eq!(&rates[..7], [1000, 1000, 2000, 2000, 4000, 4000, 8000]);
        // The knee is confirmed one doubling above: 64,000 fails, and so does 128,000.
        assert!(rates.contains(&128_000), "{rates:?}");
        // A dip after a pass: 2,000 passes, 4,000 fails, 8,000 passes again.
        let (outcome, _) = run(1, |rate, _| {
            if rate == 4_000 {
                Verdict::Fail
            } else {
                truth(rate)
            }
        });
        assert_eq!(outcome.dips, [4_000]);
        assert!(outcome.capacity_per_s.unwrap() >= 35_000);
    }

    #[test]
    fn a_knee_whose_double_the_loadgen_cannot_offer_is_still_the_servers() {
        let truth = server(37_000);
        let (outcome, rates) = run(1, beyond(100_000, Instrument::Saturated, &truth));
        assert_eq!(
            outcome.limiting_factor(),
            LimitingFactor::Server,
            "{rates:?}"
        );
        assert_eq!(outcome.loadgen_limit_per_s, None);
        assert!(outcome.capacity_per_s.unwrap() >= 35_000);
        // A late loop gets more patience than a saturated one before it ends the search (four
        // measurements, and four more when its limit is measured once more at the end).
        let (outcome, rates) = run(1, beyond(16_000, Instrument::Late, &CLEAR));
        assert_eq!(times(&rates, 16_000), 4 + 4);
        assert_eq!(
            outcome.stopped,
            StopReason::LoadgenLimit(16_000, Instrument::Late)
        );
        // A loop that lost its CPU while it had little to do, above a pass: after four such
        // steps the ramp leaves the rate unmeasured and goes on, and finds what it would have
        // found without the spell.
        let truth = server(37_000);
        let (spell, rates) = run(1, |rate, attempt| match (rate, attempt) {
            (4_000, 0..5) => Verdict::Instrument(Instrument::Interrupted),
            _ => truth(rate),
        });
        assert_eq!(times(&rates, 4_000), 4, "{rates:?}");
        assert_eq!(spell.unmeasured, [4_000]);
        let (quiet, _) = run(1, |rate, _| truth(rate));
        assert_eq!(spell.capacity_per_s, quiet.capacity_per_s);
        assert_eq!(spell.limiting_factor(), LimitingFactor::Server);
        // One at every rate from 16,000 on still stops the search: three rates left
        // unmeasured, the fourth given the full patience (eight), and the loadgen's limit is
        // the lowest of them, just above the last pass.
        let (outcome, rates) = run(1, beyond(16_000, Instrument::Interrupted, &CLEAR));
        assert_eq!(outcome.unmeasured, [16_000, 32_000, 64_000]);
        assert_eq!(times(&rates, 128_000), 8, "{rates:?}");
        assert_eq!(
            outcome.stopped,
            StopReason::LoadgenLimit(16_000, Instrument::Interrupted)
        );
        assert_eq!(outcome.capacity_per_s, Some(8_000));
        assert_eq!(outcome.loadgen_limit_per_s, Some(16_000));
    }

    #[test]
    fn a_rate_that_passed_once_is_not_given_up_after_two_saturated_steps() {
        // Seen: at 64,000 msg/s a pass, then a late step and a saturated one (a slow spell of
        // the host), and 64,000 became the loadgen's limit. A pass there shows the loadgen can
        // offer it: the rate gets a late loop's patience, and its second pass decides it.
        let truth = server(500_000);
        let spell = |rate: u64, attempt: u32| match (rate, attempt) {
            (64_000, 0 | 3) => Verdict::Pass { clear: false },
            (64_000, 1) => Verdict::Instrument(Instrument::Late),
            (64_000, 2) => Verdict::Instrument(Instrument::Saturated),
            _ if rate >= 100_000 => Verdict::Instrument(Instrument::Saturated),
            _ => truth(rate),
        };
        let (outcome, rates) = run(1, spell);
        assert_eq!(times(&rates, 64_000), 4, "{rates:?}");
        let capacity = outcome.capacity_per_s.expect("found");
        assert!((95_000..100_000).contains(&capacity), "{rates:?}");
        assert_eq!(outcome.loadgen_limit_per_s, Some(100_000));
        // Passed once, then saturated at every try: four no votes, and it is the limit.
        let (outcome, rates) = run(1, |rate, attempt| match (rate, attempt) {
            (64_000, 0) => Verdict::Pass { clear: false },
            _ if rate >= 64_000 => Verdict::Instrument(Instrument::Saturated),
            _ => truth(rate),
        });
        assert_eq!(times(&rates, 64_000), 1 + 4, "{rates:?}");
        assert_eq!(outcome.loadgen_limit_per_s, Some(64_000), "{rates:?}");
        // Without a pass, two saturated steps still end it.
        let (outcome, rates) = run(1, beyond(64_000, Instrument::Saturated, &truth));
        assert_eq!(times(&rates, 64_000), 2);
        assert_eq!(outcome.loadgen_limit_per_s, Some(64_000), "{rates:?}");
    }

    #[test]
    fn the_loadgens_limit_is_not_above_a_rate_it_could_not_measure() {
        // 2,000 passes, 4,000 is left unmeasured, 8,000 and 16,000 fail; bisecting, 3,500 is
        // interrupted at every try: the loadgen's limit is 3,500, not the 4,000 above it.
        let (outcome, rates) = run(1, |rate, _| match rate {
            3_500 | 4_000 => Verdict::Instrument(Instrument::Interrupted),
            r if r >= 5_000 => Verdict::Fail,
            _ => Verdict::Pass { clear: true },
        });
        assert_eq!(outcome.unmeasured, [4_000], "{rates:?}");
        assert_eq!(outcome.loadgen_limit_per_s, Some(3_500), "{outcome:?}");
        assert!(outcome.capacity_per_s.is_some_and(|c| c < 3_500));
    }

    #[test]
    fn one_look_above_a_failure_once_a_rate_passed_even_when_interrupted() {
        // 1,000 passes, 2,000 fails; the one look above it (4,000) is interrupted at every try:
        // it is waited out there, not skipped to 8,000, and the failure is the knee.
        let (outcome, rates) = run(1, |rate, _| match rate {
            1_000 => Verdict::Pass { clear: true },
            2_000 => Verdict::Fail,
            r if r >= 4_000 => Verdict::Instrument(Instrument::Interrupted),
            _ => Verdict::Pass { clear: false },
        });
        assert!(!rates.contains(&8_000), "{rates:?}");
        assert_eq!(outcome.first_fail_per_s, Some(2_000));
        assert!(outcome.unmeasured.is_empty(), "{outcome:?}");
        assert_eq!(outcome.limiting_factor(), LimitingFactor::Server);
    }

    #[test]
    fn a_low_rate_where_the_loop_loses_its_cpu_above_a_pass_does_not_end_the_search() {
        // Seen: 2,000 msg/s passed, then eight steps at 4,000 in a row had the loop late by
        // milliseconds while it worked a few percent of the time (the idle server's vCPU woken
        // for every message), and the search stopped with "at least 2,000". The server holds
        // 90,000; the loadgen saturates from 96,000.
        let truth = server(90_000);
        let (outcome, rates) = run(1, |rate, _| match rate {
            4_000 => Verdict::Instrument(Instrument::Interrupted),
            _ if rate >= 96_000 => Verdict::Instrument(Instrument::Saturated),
            _ => truth(rate),
        });
        assert_eq!(outcome.unmeasured, [4_000], "{rates:?}");
        let capacity = outcome.capacity_per_s.expect("found");
        assert!((85_000..=90_000).contains(&capacity), "{rates:?}");
        assert_eq!(outcome.limiting_factor(), LimitingFactor::Server);
        // Bisection never goes back to it.
        assert_eq!(times(&rates, 4_000), 4);
    }

    #[test]
    fn rates_where_the_idle_loop_loses_its_cpu_are_left_unmeasured_below_the_first_pass() {
        // The low rates cannot be measured (on a VM an idle server's vCPU, woken for every
        // message, takes the loadgen's with it); from 4,000 on they can. The search goes on
        // above them and finds the knee as if they had been measured.
        let truth = server(37_000);
        let (outcome, rates) = run(1, |rate, _| {
            if rate < 4_000 {
                Verdict::Instrument(Instrument::Interrupted)
            } else {
                truth(rate)
            }
        });
        let (quiet, _) = run(1, |rate, _| truth(rate));
        assert_eq!(outcome.capacity_per_s, quiet.capacity_per_s, "{rates:?}");
        assert_eq!(outcome.limiting_factor(), LimitingFactor::Server);
        assert_eq!(outcome.unmeasured, [1_000, 2_000]);
        // Four no votes at each (two more than a verdict needs), not eight.
        assert_eq!(
            &rates[..9],
            [1000, 1000, 1000, 1000, 2000, 2000, 2000, 2000, 4000]
        );
        // Three such rates in a row; the fourth gets the full patience (eight), then the search
        // stops with the loadgen's limit.
        let (outcome, rates) = run(1, |_, _| Verdict::Instrument(Instrument::Interrupted));
        assert_eq!(outcome.unmeasured, [1_000, 2_000, 4_000]);
        assert_eq!(
            outcome.stopped,
            StopReason::LoadgenLimit(8_000, Instrument::Interrupted)
        );
        assert_eq!(rates.len(), 4 + 4 + 4 + 8);
        assert_eq!(outcome.capacity_per_s, None);
        // A rate above them that fails is a failure like any: looked above, then confirmed;
        // the way down does not measure the rate left unmeasured again, and the answer is the
        // loadgen's: nothing below the failure could be measured.
        let (outcome, rates) = run(1, |rate, _| {
            if rate < 2_000 {
                Verdict::Instrument(Instrument::Interrupted)
            } else {
                Verdict::Fail
            }
        });
        assert_eq!(outcome.capacity_per_s, None);
        assert_eq!(outcome.first_fail_per_s, Some(2_000));
        assert_eq!(
            outcome.stopped,
            StopReason::LoadgenLimit(1_000, Instrument::Interrupted)
        );
        assert_eq!(outcome.limiting_factor(), LimitingFactor::Loadgen);
        assert_eq!(times(&rates, 1_000), 4, "{rates:?}");
        assert_eq!(
            answer(&outcome),
            "capacity: unknown (it fails at 2,000 msg/s; below, the loadgen could not measure \
             1,000: the loadgen's loop lost its CPU for spells while it had little to do at 1000 \
             msg/s)"
        );
        // Above a failure that waits for confirmation, an interrupted rate is one look above:
        // the ramp goes on, and the failure below turns out to be a dip.
        let truth = server(37_000);
        let (outcome, rates) = run(1, |rate, _| match rate {
            1_000 => Verdict::Fail,
            2_000 => Verdict::Instrument(Instrument::Interrupted),
            _ => truth(rate),
        });
        let capacity = outcome.capacity_per_s.expect("found");
        assert!((35_000..=37_000).contains(&capacity), "{rates:?}");
        assert_eq!(outcome.dips, [1_000]);
        assert_eq!(outcome.unmeasured, [2_000]);
        assert_eq!(outcome.limiting_factor(), LimitingFactor::Server);
        // Going down (nothing passed, the start rate failed), interrupted steps get the full
        // patience: the search does not skip there.
        let (outcome, rates) = run(1, |rate, _| {
            if rate >= 1_000 {
                Verdict::Fail
            } else {
                Verdict::Instrument(Instrument::Interrupted)
            }
        });
        assert_eq!(times(&rates, 500), 8, "{rates:?}");
        assert_eq!(
            outcome.stopped,
            StopReason::LoadgenLimit(500, Instrument::Interrupted)
        );
        assert!(outcome.unmeasured.is_empty());
    }

    #[test]
    fn a_late_loops_limit_is_measured_once_more_and_a_spell_that_ended_does_not_stop_the_search() {
        // The server holds 500k; the loadgen saturates from 200k; a spell makes the loop late
        // at 128k for its first four measurements (while the ramp first gets there).
        let truth = server(500_000);
        let (outcome, rates) = run(1, |rate, attempt| match (rate, attempt) {
            (128_000, 0..4) => Verdict::Instrument(Instrument::Late),
            (200_000.., _) => Verdict::Instrument(Instrument::Saturated),
            _ => truth(rate),
        });
        let capacity = outcome.capacity_per_s.expect("found");
        assert!(
            (190_000..200_000).contains(&capacity),
            "{capacity}: {rates:?}"
        );
        assert_eq!(
            outcome.stopped,
            StopReason::LoadgenLimit(outcome.loadgen_limit_per_s.unwrap(), Instrument::Saturated)
        );
        // 128k: four late, then bisection below it, then once more — a pass — and the ramp
        // goes on to 256k.
        let at_128k: Vec<usize> = (0..rates.len()).filter(|&i| rates[i] == 128_000).collect();
        assert_eq!(at_128k.len(), 5, "{rates:?}");
        assert_eq!(rates[at_128k[4] + 1], 256_000, "{rates:?}");
        // A spell that lasts: the limit stays, measured once more (four late again), and the
        // answer is the same as without the second look.
        let (outcome, rates) = run(1, beyond(128_000, Instrument::Late, &truth));
        assert_eq!(times(&rates, 128_000), 8, "{rates:?}");
        assert_eq!(
            outcome.stopped,
            StopReason::LoadgenLimit(128_000, Instrument::Late)
        );
        assert!(outcome.capacity_per_s.unwrap() >= 121_000);
        // A saturated loadgen's limit is not measured again: it had no work to spare.
        let (_, rates) = run(1, beyond(128_000, Instrument::Saturated, &truth));
        assert_eq!(times(&rates, 128_000), 2, "{rates:?}");
        // A failure of the server when the limit is measured again brackets the knee there.
        let (outcome, _) = run(1, |rate, attempt| match (rate, attempt) {
            (128_000, 0..4) => Verdict::Instrument(Instrument::Late),
            (128_000.., _) => Verdict::Fail,
            _ => truth(rate),
        });
        assert_eq!(outcome.first_fail_per_s, Some(128_000));
        assert_eq!(outcome.limiting_factor(), LimitingFactor::Server);
    }

    #[test]
    fn out_of_steps_or_time_while_bisecting_toward_the_loadgens_limit_names_the_loadgen() {
        // The budget runs out right after the first rate above the limit.
        let mut search = Search::new(&limits(), 1);
        let measure = beyond(100_000, Instrument::Saturated, &CLEAR);
        while let Next::Measure(rate) = search.next() {
            search.record(measure(rate, 0));
            if search.limit.is_some() {
                search.out_of_time();
            }
        }
        let outcome = search.outcome();
        assert_eq!(outcome.stopped, StopReason::BudgetInBisection);
        assert_eq!(outcome.capacity_per_s, Some(64_000));
        assert_eq!(outcome.loadgen_limit_per_s, Some(128_000));
        assert_eq!(outcome.limiting_factor(), LimitingFactor::Loadgen);
        // The step limit is kept exactly, whatever the last measurement decided.
        for max_steps in 7..16 {
            let mut few = limits();
            few.max_steps = max_steps;
            let mut search = Search::new(&few, 1);
            let mut taken = 0;
            while let Next::Measure(rate) = search.next() {
                taken += 1;
                search.record(measure(rate, 0));
            }
            assert!(taken <= max_steps, "{max_steps}: {taken}");
        }
    }

    #[test]
    fn an_slo_unreachable_at_the_lowest_rate_says_so() {
        let (outcome, rates) = run(1, |_, _| Verdict::Fail);
        // Three doublings above the start fail too, then down to the lowest rate.
        assert_eq!(
            rates,
            [
                1000, 1000, 2000, 2000, 4000, 4000, 8000, 8000, 500, 500, 250, 250, 125, 125
            ]
        );
        assert_eq!(outcome.capacity_per_s, None);
        assert_eq!(outcome.stopped, StopReason::FailsAtLowest(125));
        assert_eq!(outcome.limiting_factor(), LimitingFactor::SloUnreachable);
        assert!(answer(&outcome).starts_with("capacity: below 125 msg/s"));
        // The start rate fails, a lower one passes: bisect between them.
        let (outcome, _) = run(1, |rate, _| server(300)(rate));
        let capacity = outcome.capacity_per_s.expect("found");
        assert!((285..=300).contains(&capacity), "{capacity}");
    }

    #[test]
    fn stops_at_max_rate_on_budget_and_at_the_step_limit() {
        let mut small = limits();
        small.max_rate_per_s = 5_000;
        let mut search = Search::new(&small, 1);
        while let Next::Measure(_) = search.next() {
            search.record(Verdict::Pass { clear: true });
        }
        let outcome = search.outcome();
        assert_eq!(outcome.capacity_per_s, Some(5_000));
        assert_eq!(outcome.limiting_factor(), LimitingFactor::MaxRate);

        let mut search = Search::new(&limits(), 1);
        for _ in 0..3 {
            search.record(Verdict::Pass { clear: true });
        }
        search.out_of_time();
        assert_eq!(search.next(), Next::Done);
        let outcome = search.outcome();
        assert_eq!(outcome.capacity_per_s, Some(4_000));
        assert_eq!(outcome.stopped, StopReason::BudgetInRamp);
        assert_eq!(outcome.limiting_factor(), LimitingFactor::Budget);
        assert_eq!(
            outcome.stopped_because(),
            "time budget spent during the ramp"
        );

        let mut few = limits();
        few.max_steps = 4;
        let mut search = Search::new(&few, 1);
        while let Next::Measure(_) = search.next() {
            search.record(Verdict::Pass { clear: false });
        }
        assert_eq!(search.outcome().measurements, 4);
        assert_eq!(search.outcome().stopped, StopReason::StepLimitInRamp);
    }

    #[test]
    fn stop_reasons_say_the_words_capacity_json_has_always_had() {
        let words: Vec<String> = [
            StopReason::StepLimitInRamp,
            StopReason::BudgetInRamp,
            StopReason::ReachedMaxRate,
            StopReason::FailsAtLowest(250),
            StopReason::Bracketed { precision: 0.05 },
            StopReason::StepLimitInBisection,
            StopReason::BudgetInBisection,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            words,
            [
                "step limit reached during the ramp",
                "time budget spent during the ramp",
                "reached --max-rate without failing",
                "even 250 msg/s fails the SLO",
                "bracket within 5%",
                "step limit reached during bisection",
                "time budget spent during bisection",
            ]
        );
    }
}
