//! The capacity search as a pure function over a `measure` closure, so it is tested with a
//! fake server: a doubling ramp from the start rate until a step fails (halving while the
//! start rate fails), then bisection between the last pass and the first failure until the
//! bracket is within the precision ([`search`]); then the answer after the confirmation of the
//! final passing rate, and whether the loadgen, not the server, set the limit ([`settle`]).

use anyhow::{Result, bail};

use crate::record::capacity::{SearchLimits, Step};

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
        }
    }
}

/// Where the capacity lies.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutcome {
    /// The highest passing rate (`None` when even the lowest rate tried failed).
    pub capacity_per_s: Option<u64>,
    /// The lowest failing rate (`None` when the ramp reached its maximum or budget first).
    pub first_fail_per_s: Option<u64>,
    pub steps: Vec<Step>,
    /// Why the search stopped.
    pub stopped: StopReason,
    /// The rate whose confirmation failed (set by [`settle`]).
    pub unconfirmed_per_s: Option<u64>,
}

impl SearchOutcome {
    /// Why the search stopped, in the words of `capacity.json`'s `stopped_because`.
    pub fn stopped_because(&self) -> String {
        match self.unconfirmed_per_s {
            Some(rate) => format!("{}; {rate} msg/s failed its confirmation", self.stopped),
            None => self.stopped.to_string(),
        }
    }
}

/// Ramp (doubling) then bisection. `measure(rate)` runs one step; `Ok(None)` from it means
/// "no time left" and ends the search with the bracket found so far.
pub fn search(
    limits: &SearchLimits,
    mut measure: impl FnMut(u64) -> Result<Option<Step>>,
) -> Result<SearchOutcome> {
    let mut steps: Vec<Step> = Vec::new();
    let mut pass: Option<u64> = None;
    let mut fail: Option<u64> = None;
    let mut rate = limits.start_rate_per_s.max(1);
    let stopped;
    // Ramp: up by doubling while passing; down by halving while the start rate fails.
    loop {
        if steps.len() >= limits.max_steps {
            return Ok(finish(pass, fail, steps, StopReason::StepLimitInRamp));
        }
        let Some(step) = measure(rate)? else {
            return Ok(finish(pass, fail, steps, StopReason::BudgetInRamp));
        };
        let passed = step.pass;
        steps.push(step);
        if passed {
            pass = Some(rate);
            if fail.is_some() {
                break;
            }
            if rate >= limits.max_rate_per_s {
                return Ok(finish(pass, fail, steps, StopReason::ReachedMaxRate));
            }
            rate = (rate.saturating_mul(2)).min(limits.max_rate_per_s);
        } else {
            fail = Some(rate);
            if pass.is_some() {
                break;
            }
            if rate / 2 < limits.min_rate_per_s.max(1) {
                return Ok(finish(pass, fail, steps, StopReason::FailsAtLowest(rate)));
            }
            rate /= 2;
        }
    }
    // Bisection between the last pass and the first failure.
    loop {
        let (Some(low), Some(high)) = (pass, fail) else {
            bail!("bisection without a bracket");
        };
        if (high - low) as f64 <= limits.precision * low as f64 || high - low <= 1 {
            stopped = StopReason::Bracketed {
                precision: limits.precision,
            };
            break;
        }
        if steps.len() >= limits.max_steps {
            stopped = StopReason::StepLimitInBisection;
            break;
        }
        let middle = low + (high - low) / 2;
        let Some(step) = measure(middle)? else {
            stopped = StopReason::BudgetInBisection;
            break;
        };
        if step.pass {
            pass = Some(middle);
        } else {
            fail = Some(middle);
        }
        steps.push(step);
    }
    Ok(finish(pass, fail, steps, stopped))
}

fn finish(
    pass: Option<u64>,
    fail: Option<u64>,
    steps: Vec<Step>,
    stopped: StopReason,
) -> SearchOutcome {
    SearchOutcome {
        capacity_per_s: pass,
        first_fail_per_s: fail,
        steps,
        stopped,
        unconfirmed_per_s: None,
    }
}

/// The answer after the search: a failed confirmation moves the capacity down to the highest
/// other passing rate below it (and makes it the first failure); a first failure that was the
/// loadgen's own (every step at that rate [`Step::instrument_limited`]) becomes the returned
/// `loadgen_limit_per_s`.
pub fn settle(outcome: &mut SearchOutcome, steps: &[Step]) -> Option<u64> {
    if let Some(confirm) = steps.iter().find(|step| step.confirm)
        && !confirm.pass
    {
        let unconfirmed = confirm.target_per_s;
        outcome.capacity_per_s = steps
            .iter()
            .filter(|step| step.pass && !step.confirm && step.target_per_s < unconfirmed)
            .map(|step| step.target_per_s)
            .max();
        outcome.first_fail_per_s = Some(
            outcome
                .first_fail_per_s
                .map_or(unconfirmed, |fail| fail.min(unconfirmed)),
        );
        outcome.unconfirmed_per_s = Some(unconfirmed);
    }
    let fail = outcome.first_fail_per_s?;
    let at_fail: Vec<&Step> = steps
        .iter()
        .filter(|step| step.target_per_s == fail)
        .collect();
    (!at_fail.is_empty() && at_fail.iter().all(|step| step.instrument_limited())).then_some(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::text::CapacityAnswer;
    use crate::record::capacity::StepReason;

    /// The answer line for an outcome, as `capacity` prints it.
    fn answer_line(outcome: &SearchOutcome, loadgen_limit_per_s: Option<u64>) -> String {
        CapacityAnswer {
            capacity_per_s: outcome.capacity_per_s,
            first_fail_per_s: outcome.first_fail_per_s,
            loadgen_limit_per_s,
            stopped_because: &outcome.stopped_because(),
        }
        .to_string()
    }

    fn fake_step(rate: u64, knee: u64) -> Step {
        Step {
            target_per_s: rate,
            attempt: 1,
            achieved_per_s: rate.min(knee) as f64,
            latency_us: serde_json::json!({"p99": if rate <= knee { 200.0 } else { 5000.0 }}),
            service_time_us: None,
            errors: 0,
            valid: Some(true),
            pass: rate <= knee,
            reasons: vec![],
            report: None,
            confirm: false,
        }
    }

    /// A search that bracketed the capacity between `pass` and `fail` (within 25%).
    fn bracketed(pass: u64, fail: u64) -> SearchOutcome {
        SearchOutcome {
            capacity_per_s: Some(pass),
            first_fail_per_s: Some(fail),
            steps: vec![],
            stopped: StopReason::Bracketed { precision: 0.25 },
            unconfirmed_per_s: None,
        }
    }

    fn limits() -> SearchLimits {
        SearchLimits {
            start_rate_per_s: 1000,
            min_rate_per_s: 1,
            max_rate_per_s: 10_000_000,
            precision: 0.05,
            max_steps: 40,
        }
    }

    #[test]
    fn finds_the_knee_within_precision() {
        for knee in [1_000, 3_000, 37_000, 123_456, 999_999] {
            let mut rates = Vec::new();
            let outcome = search(&limits(), |rate| {
                rates.push(rate);
                Ok(Some(fake_step(rate, knee)))
            })
            .expect("search runs");
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
            assert!(
                outcome.steps.len() <= 25,
                "{knee}: {} steps",
                outcome.steps.len()
            );
            assert_eq!(rates[0], 1000);
        }
    }

    #[test]
    fn ramps_down_when_the_start_rate_fails() {
        let outcome = search(&limits(), |rate| Ok(Some(fake_step(rate, 300)))).expect("runs");
        let capacity = outcome.capacity_per_s.expect("found");
        assert!((285..=300).contains(&capacity), "{capacity}");
        assert_eq!(outcome.steps[0].target_per_s, 1000);
        assert_eq!(outcome.steps[1].target_per_s, 500);
    }

    #[test]
    fn the_downward_ramp_stops_at_the_minimum_rate() {
        let mut high_floor = limits();
        high_floor.min_rate_per_s = 200;
        let outcome = search(&high_floor, |rate| Ok(Some(fake_step(rate, 0)))).expect("runs");
        let rates: Vec<u64> = outcome.steps.iter().map(|s| s.target_per_s).collect();
        assert_eq!(rates, [1000, 500, 250]);
        assert_eq!(outcome.capacity_per_s, None);
        assert!(answer_line(&outcome, None).starts_with("capacity: below 250 msg/s"));
    }

    #[test]
    fn stops_at_max_rate_and_on_budget() {
        let mut small = limits();
        small.max_rate_per_s = 5_000;
        let outcome = search(&small, |rate| Ok(Some(fake_step(rate, u64::MAX)))).expect("runs");
        assert_eq!(outcome.capacity_per_s, Some(5_000));
        assert_eq!(outcome.first_fail_per_s, None);
        assert!(answer_line(&outcome, None).starts_with("capacity: at least 5,000 msg/s"));

        let mut budget = 3;
        let outcome = search(&limits(), |rate| {
            if budget == 0 {
                return Ok(None);
            }
            budget -= 1;
            Ok(Some(fake_step(rate, 1_000_000)))
        })
        .expect("runs");
        assert_eq!(outcome.steps.len(), 3);
        assert_eq!(outcome.capacity_per_s, Some(4_000));
        assert_eq!(outcome.stopped, StopReason::BudgetInRamp);
        assert_eq!(
            outcome.stopped_because(),
            "time budget spent during the ramp"
        );
    }

    #[test]
    fn a_failed_confirmation_lowers_the_capacity() {
        let mut steps: Vec<Step> = [500, 1000, 2000, 1500]
            .into_iter()
            .map(|rate| fake_step(rate, 1500))
            .collect();
        let mut outcome = bracketed(1500, 2000);
        let mut confirm = fake_step(1500, 1000);
        confirm.confirm = true;
        confirm.reasons = vec![StepReason::SloNotMet("SLO p99<=1ms NOT MET".into())];
        steps.push(confirm);
        assert_eq!(settle(&mut outcome, &steps), None);
        assert_eq!(outcome.capacity_per_s, Some(1000));
        assert_eq!(outcome.first_fail_per_s, Some(1500));
        assert_eq!(
            outcome.stopped_because(),
            "bracket within 25%; 1500 msg/s failed its confirmation"
        );
        // A passing confirmation changes nothing.
        let mut outcome = bracketed(1500, 2000);
        let last = steps.len() - 1;
        steps[last] = fake_step(1500, 1500);
        steps[last].confirm = true;
        assert_eq!(settle(&mut outcome, &steps), None);
        assert_eq!(outcome.capacity_per_s, Some(1500));
    }

    #[test]
    fn a_loadgen_limit_makes_the_answer_a_lower_bound() {
        let mut fail = fake_step(4000, 2000);
        fail.reasons = vec![StepReason::LoadgenSaturated];
        let steps = vec![fake_step(2000, 2000), fail];
        let mut outcome = bracketed(2000, 4000);
        let limit = settle(&mut outcome, &steps);
        assert_eq!(limit, Some(4000));
        assert_eq!(
            answer_line(&outcome, limit),
            "capacity: at least 2,000 msg/s (loadgen limit reached at 4,000)"
        );
        // A failure of the server's own (latency) is a real bracket.
        let mut fail = fake_step(4000, 2000);
        fail.reasons = vec![
            StepReason::SloNotMet("SLO p99<=1ms NOT MET".into()),
            StepReason::LoadgenSaturated,
        ];
        assert_eq!(settle(&mut outcome, &[fake_step(2000, 2000), fail]), None);
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
