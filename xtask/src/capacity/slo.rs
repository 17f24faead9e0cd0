//! What a capacity step must meet and whether it did: the SLO in loadgen's `--slo` syntax
//! ([`CapacitySlo`], upper bounds only), the judgement of one step of the steered loadgen against
//! it and the 1%-of-target rule ([`judge_step`]: a vote for the search, or none when the loadgen
//! could not measure honestly, with a typed [`StepReason`] per failed condition), and the record
//! a step becomes ([`steered_step`]).

use anyhow::Result;
use loadgen::StepReport;
use loadgen::slo::{Clause, Metric, Op, check_step, parse_slo};
use loadgen::validity::InvalidKind;

use super::search::{INTERRUPTED_BELOW_WORK, Instrument, Verdict};
use crate::error::input_error;
use crate::record::capacity::{LatencyLimit, SloRecord, Step, StepReason};

/// Required achieved/target ratio for a step to pass.
pub const MIN_ACHIEVED_RATIO: f64 = 0.99;

/// The SLO a capacity step must meet: loadgen's parsed clauses (what [`judge`] checks with
/// `loadgen::slo::check`) and the record written to `capacity.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacitySlo {
    /// Upper bounds only; `errors=N` is held as `errors<=N`, and `errors<=0` is added when the
    /// text bounds no errors (capacity never counts a rate that loses messages).
    pub slo: loadgen::slo::Slo,
    pub record: SloRecord,
}

impl CapacitySlo {
    /// Parses `p99<=1ms,p999<=5ms,errors=0` with loadgen's parser (the syntax of its `--slo`)
    /// and keeps what a capacity search can use: upper bounds on latency (at least one) and on
    /// errors. Anything else is an input error (exit 2) naming the clause.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            input_error(format!(
                "SLO {text:?}: {why} (expected e.g. 'p99<=1ms,p999<=5ms,errors=0')"
            ))
        };
        let parsed = parse_slo(text).map_err(|error| bad(&error.0))?;
        let mut clauses = Vec::new();
        let mut latency = Vec::new();
        let mut max_errors: Option<u64> = None;
        for clause in parsed.clauses {
            match (clause.metric, clause.op) {
                (Metric::Latency(key), Op::Le | Op::Lt) => {
                    latency.push(LatencyLimit {
                        key: key.to_string(),
                        limit_us: clause.limit,
                    });
                    clauses.push(clause);
                }
                (Metric::Errors, op @ (Op::Le | Op::Eq | Op::Lt)) => {
                    if clause.limit.fract() != 0.0 || (op == Op::Lt && clause.limit < 1.0) {
                        return Err(bad(&format!(
                            "clause {:?}: errors needs a whole number (at least 0)",
                            clause.text
                        )));
                    }
                    let max = clause.limit as u64 - u64::from(op == Op::Lt);
                    max_errors = Some(max_errors.map_or(max, |other| other.min(max)));
                    clauses.push(Clause {
                        op: if op == Op::Eq { Op::Le } else { op },
                        ..clause
                    });
                }
                _ => {
                    return Err(bad(&format!(
                        "clause {:?}: capacity needs upper bounds on latency or errors \
                         (p99<=1ms, errors<=N); it sets the rate itself",
                        clause.text
                    )));
                }
            }
        }
        if latency.is_empty() {
            return Err(bad("no latency clause (e.g. 'p99<=1ms')"));
        }
        if max_errors.is_none() {
            clauses.push(Clause {
                metric: Metric::Errors,
                op: Op::Le,
                limit: 0.0,
                text: "errors<=0 (default)".into(),
            });
        }
        Ok(Self {
            slo: loadgen::slo::Slo { clauses },
            record: SloRecord {
                text: text.trim().to_string(),
                latency,
                max_errors: max_errors.unwrap_or(0),
            },
        })
    }
}

/// Judges one step of the steered loadgen: a vote for the rate (pass, or fail by the server)
/// or no vote (the loadgen could not measure it honestly: the SLO is judged only on valid
/// steps), with every reason it did not pass. A failed step fails for each broken SLO clause
/// (loadgen's own check, `loadgen::slo::check_step`), an achieved rate below 99% of the target,
/// and starved connections.
///
/// One invalid step still votes: one whose only fault is its loop's lateness
/// (`schedule.behind`, the loadgen neither saturated nor short of samples) and which met the SLO
/// all the same. Its latency is measured from the intended send times, so the lateness is inside
/// it and only adds to it: the server met the SLO with the instrument's error counted against
/// it. (A failure under the same lateness is no vote: the lateness may be what failed it.)
pub fn judge_step(slo: &CapacitySlo, step: &StepReport) -> (Verdict, Vec<StepReason>) {
    let late_only = !step.valid
        && step.schedule.behind
        && !step.loadgen.saturated
        && step
            .kinds()
            .is_some_and(|kinds| kinds == [InvalidKind::Late]);
    if late_only && let (pass @ Verdict::Pass { .. }, reasons) = judge_valid(slo, step) {
        return (pass, reasons);
    }
    if !step.valid {
        let what = if step.loadgen.saturated {
            Instrument::Saturated
        } else if step.schedule.behind && step.loadgen.work_fraction < INTERRUPTED_BELOW_WORK {
            Instrument::Interrupted
        } else if step.schedule.behind {
            Instrument::Late
        } else {
            Instrument::Failed
        };
        let mut reasons = vec![StepReason::LoadgenInvalid(step.invalid_reasons.clone())];
        if step.loadgen.saturated {
            reasons.push(StepReason::LoadgenSaturated);
        }
        return (Verdict::Instrument(what), reasons);
    }
    judge_valid(slo, step)
}

/// The verdict of a step whose figures stand: pass or fail by the server.
fn judge_valid(slo: &CapacitySlo, step: &StepReport) -> (Verdict, Vec<StepReason>) {
    // One line per clause (an invalid-run line, if any, comes after them).
    let verdict = check_step(&slo.slo, step);
    let mut reasons: Vec<StepReason> = verdict
        .lines
        .into_iter()
        .take(slo.slo.clauses.len())
        .filter(|line| line.contains("NOT MET"))
        .map(StepReason::SloNotMet)
        .collect();
    let achieved = step.throughput.messages_per_s;
    let ratio = step
        .throughput
        .achieved_ratio
        .unwrap_or(achieved / step.target_per_s.max(1.0));
    if ratio < MIN_ACHIEVED_RATIO {
        reasons.push(StepReason::BelowTarget {
            achieved_per_s: achieved,
            ratio,
        });
    }
    if step.connections.starved > 0 {
        reasons.push(StepReason::Starved(step.connections.starved));
    }
    if !reasons.is_empty() {
        return (Verdict::Fail, reasons);
    }
    // Every latency bound held with half its limit to spare: far from the knee.
    let clear = slo.slo.clauses.iter().all(|c| match c.metric {
        Metric::Latency(key) => step.latency_us.get(key) <= c.limit * CLEAR_FRACTION,
        _ => true,
    });
    (Verdict::Pass { clear }, reasons)
}

/// A pass whose latencies are at most this fraction of their limits counts as a clear pass.
pub const CLEAR_FRACTION: f64 = 0.5;

/// The record of one measured step: its figures, what it counted as, and why it did not pass.
pub fn steered_step(
    step: &StepReport,
    attempt: u32,
    verdict: Verdict,
    reasons: Vec<StepReason>,
    report: &str,
) -> Step {
    let counted_as = match verdict {
        Verdict::Pass { .. } => "pass",
        Verdict::Fail => "fail",
        Verdict::Instrument(_) => "no vote",
    };
    Step {
        target_per_s: step.target_per_s as u64,
        attempt,
        achieved_per_s: step.throughput.messages_per_s,
        latency_us: serde_json::to_value(step.latency_us).unwrap_or(serde_json::Value::Null),
        service_time_us: serde_json::to_value(step.service_time_us).ok(),
        errors: step.errors.total,
        valid: Some(step.valid),
        pass: matches!(verdict, Verdict::Pass { .. }),
        reasons,
        report: Some(report.to_string()),
        confirm: false,
        loadgen_step: Some(step.index),
        loop_lag_p99_us: Some(step.schedule.loop_lag_us.p99),
        work_fraction: Some(step.loadgen.work_fraction),
        counted_as: Some(counted_as.into()),
        loadgen_steal_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadgen::report::Percentiles;

    /// A valid step: 9,950 of 10,000 msg/s, p99 800 µs, p999 2 ms, no errors.
    fn step() -> StepReport {
        StepReport {
            index: 3,
            target_per_s: 10_000.0,
            duration_s: 2.0,
            settle_ms: 250,
            start_unix_s: 0.0,
            messages: loadgen::report::Messages {
                sent: 19_900,
                verified: 19_900,
            },
            bytes: loadgen::report::Bytes::default(),
            throughput: loadgen::report::Throughput {
                messages_per_s: 9950.0,
                ..Default::default()
            },
            latency_us: Percentiles {
                p50: 300,
                p99: 800,
                p999: 2000,
                max: 3000,
                ..Default::default()
            },
            service_time_us: Default::default(),
            schedule: Default::default(),
            connections: Default::default(),
            errors: Default::default(),
            loadgen: Default::default(),
            valid: true,
            invalid_reasons: vec![],
            invalid_kinds: vec![],
            slo_met: None,
            histograms: Default::default(),
        }
    }

    #[test]
    fn slo_record_comes_from_loadgens_parser() {
        let slo = CapacitySlo::parse(" p99<=1ms, p99.9<5ms,errors=2,max<=250us").expect("valid");
        assert_eq!(slo.record.text, "p99<=1ms, p99.9<5ms,errors=2,max<=250us");
        let limits: Vec<(&str, f64)> = slo
            .record
            .latency
            .iter()
            .map(|l| (l.key.as_str(), l.limit_us))
            .collect();
        assert_eq!(limits, [("p99", 1000.0), ("p999", 5000.0), ("max", 250.0)]);
        assert_eq!(slo.record.max_errors, 2);
        assert_eq!(
            CapacitySlo::parse("errors<3,p50<=2s")
                .expect("valid")
                .record
                .max_errors,
            2
        );
        // No errors clause: none tolerated, and the checked clauses say so.
        let slo = CapacitySlo::parse("p50<=2s").expect("valid");
        assert_eq!(slo.record.max_errors, 0);
        assert_eq!(slo.slo.clauses.len(), 2);
        let json = serde_json::to_value(&slo.record).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"text": "p50<=2s", "latency": [{"key": "p50", "limit_us": 2e6}],
                               "max_errors": 0})
        );
    }

    #[test]
    fn bad_slos_are_input_errors_naming_the_problem() {
        for (bad, why) in [
            ("p99", "no comparison"),
            ("p98<=1ms", "unknown metric"),
            ("p99<=fast", "p99<=fast"),
            ("errors=some", "not a number"),
            ("errors=0", "no latency clause"),
            ("", "no clauses"),
            ("p99>=1ms", "upper bounds"),
            ("p99<=1ms,rate>=100", "upper bounds"),
            ("p99<=1ms,errors<=1.5", "whole number"),
            ("p99<=1ms,errors<0", "whole number"),
        ] {
            let error = CapacitySlo::parse(bad).expect_err(bad);
            assert_eq!(crate::exit_code(&error), 2, "{bad}: {error}");
            let text = error.to_string();
            assert!(
                text.contains(why) && text.contains("expected e.g."),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn a_step_needs_the_slo_the_rate_and_an_honest_loadgen() {
        let slo = CapacitySlo::parse("p99<=1ms").expect("valid");
        assert_eq!(
            judge_step(&slo, &step()),
            (Verdict::Pass { clear: false }, vec![])
        );
        let mut slow = step();
        slow.throughput.messages_per_s = 9800.0;
        let (verdict, reasons) = judge_step(&slo, &slow);
        assert_eq!(verdict, Verdict::Fail);
        assert_eq!(
            reasons,
            [StepReason::BelowTarget {
                achieved_per_s: 9800.0,
                ratio: 0.98
            }]
        );
        assert!(reasons[0].to_string().contains("98.0% of the target"));
        let mut starved = step();
        starved.connections.starved = 14;
        let (verdict, reasons) = judge_step(&slo, &starved);
        assert_eq!(verdict, Verdict::Fail);
        assert!(reasons[0].to_string().starts_with("14 connections starved"));
        assert!(!reasons[0].is_instrument());
        // The loadgen's own problems are no vote, whatever the latency says.
        let mut saturated = step();
        saturated.valid = false;
        saturated.loadgen.saturated = true;
        saturated.latency_us.p99 = 50_000;
        saturated.invalid_reasons = vec!["the load generator was saturated".into()];
        saturated.invalid_kinds = vec![InvalidKind::Saturated];
        let (verdict, reasons) = judge_step(&slo, &saturated);
        assert_eq!(verdict, Verdict::Instrument(Instrument::Saturated));
        assert!(reasons.iter().all(StepReason::is_instrument), "{reasons:?}");
        let mut late = step();
        late.valid = false;
        late.schedule.behind = true;
        late.loadgen.work_fraction = 0.8;
        late.invalid_reasons = vec![format!(
            "{}: its loop wrote messages 90 µs late",
            loadgen::validity::LATE_REASON_START
        )];
        late.invalid_kinds = vec![InvalidKind::Late];
        // The SLO held with the loop's lateness inside the latency (p99 800 µs): the pass
        // stands, and a clear one is clear.
        assert_eq!(
            judge_step(&slo, &late),
            (Verdict::Pass { clear: false }, vec![])
        );
        // The kinds decide, not the words: a lateness reason worded otherwise is still late,
        // and a report from before `invalid_kinds` is read by its words.
        let mut reworded = late.clone();
        reworded.invalid_reasons = vec!["the loop was 90 µs late".into()];
        assert_eq!(
            judge_step(&slo, &reworded).0,
            Verdict::Pass { clear: false }
        );
        reworded.invalid_kinds.clear();
        assert_eq!(
            judge_step(&slo, &reworded).0,
            Verdict::Instrument(Instrument::Late)
        );
        let mut untyped = late.clone();
        untyped.invalid_kinds.clear();
        assert_eq!(judge_step(&slo, &untyped).0, Verdict::Pass { clear: false });
        late.latency_us.p99 = 450;
        assert_eq!(judge_step(&slo, &late).0, Verdict::Pass { clear: true });
        // Missed with it (the lateness may be what missed it): no vote.
        late.latency_us.p99 = 1_200;
        assert_eq!(
            judge_step(&slo, &late).0,
            Verdict::Instrument(Instrument::Late)
        );
        let mut late_and_short = late.clone();
        late_and_short.latency_us.p99 = 800;
        late_and_short.throughput.messages_per_s = 9_000.0;
        assert_eq!(
            judge_step(&slo, &late_and_short).0,
            Verdict::Instrument(Instrument::Late)
        );
        // Late and saturated, or late and short of samples: no vote, even within the SLO.
        let mut late_and_saturated = late.clone();
        late_and_saturated.latency_us.p99 = 800;
        late_and_saturated.loadgen.saturated = true;
        late_and_saturated.invalid_reasons.push("saturated".into());
        late_and_saturated
            .invalid_kinds
            .push(InvalidKind::Saturated);
        assert_eq!(
            judge_step(&slo, &late_and_saturated).0,
            Verdict::Instrument(Instrument::Saturated)
        );
        let mut late_and_few = late.clone();
        late_and_few.latency_us.p99 = 800;
        late_and_few
            .invalid_reasons
            .push("only 40 latency samples".into());
        late_and_few.invalid_kinds.push(InvalidKind::FewSamples);
        assert_eq!(
            judge_step(&slo, &late_and_few).0,
            Verdict::Instrument(Instrument::Late)
        );
        // Late with little to do: the CPU was taken from it.
        late.loadgen.work_fraction = 0.05;
        assert_eq!(
            judge_step(&slo, &late).0,
            Verdict::Instrument(Instrument::Interrupted)
        );
        let mut few = step();
        few.valid = false;
        few.invalid_reasons = vec!["only 40 latency samples".into()];
        few.invalid_kinds = vec![InvalidKind::FewSamples];
        assert_eq!(
            judge_step(&slo, &few).0,
            Verdict::Instrument(Instrument::Failed)
        );
        // Far below the limits: a clear pass.
        let mut fast = step();
        fast.latency_us.p99 = 400;
        assert_eq!(judge_step(&slo, &fast).0, Verdict::Pass { clear: true });
    }

    #[test]
    fn judge_names_each_broken_clause() {
        let slo = CapacitySlo::parse("p99<=1ms,p999<=5ms,errors<=1").expect("valid");
        let mut bad = step();
        bad.latency_us.p99 = 1500;
        bad.errors.total = 3;
        let (verdict, reasons) = judge_step(&slo, &bad);
        assert_eq!(verdict, Verdict::Fail);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        let texts: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        assert!(
            texts[0].contains("p99<=1ms") && texts[0].contains("1500"),
            "{texts:?}"
        );
        assert!(
            texts[1].contains("errors<=1") && texts[1].contains('3'),
            "{texts:?}"
        );
        // errors=1 is an upper bound here (not loadgen's "exactly"): no errors also passes.
        let slo = CapacitySlo::parse("p99<=1ms,errors=1").expect("valid");
        assert!(matches!(judge_step(&slo, &step()).0, Verdict::Pass { .. }));
        // Without an errors clause a single error fails the step.
        let slo = CapacitySlo::parse("p99<=1ms").expect("valid");
        let mut one_error = step();
        one_error.errors.total = 1;
        let (verdict, reasons) = judge_step(&slo, &one_error);
        assert_eq!(verdict, Verdict::Fail);
        assert!(reasons[0].to_string().contains("errors<=0"), "{reasons:?}");
    }

    #[test]
    fn a_steered_step_records_its_vote_and_the_loadgens_own_figures() {
        let mut s = step();
        s.schedule.loop_lag_us.p99 = 7;
        s.loadgen.work_fraction = 0.42;
        let record = steered_step(&s, 2, Verdict::Fail, vec![], "loadgen.json");
        assert_eq!(record.target_per_s, 10_000);
        assert_eq!(record.attempt, 2);
        assert_eq!(record.loadgen_step, Some(3));
        assert_eq!(record.loop_lag_p99_us, Some(7));
        assert_eq!(record.work_fraction, Some(0.42));
        assert_eq!(record.counted_as.as_deref(), Some("fail"));
        assert_eq!(record.latency_us["p99"], 800);
        assert!(!record.pass);
    }
}
