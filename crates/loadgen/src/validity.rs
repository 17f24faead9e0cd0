//! When a measurement cannot be trusted (`valid: false`), and why, in plain words: the rules
//! shared by a run's report, each step of a stepped run, and `merge`. Pure functions of what was
//! measured.
//!
//! - Too few samples: fewer than [`MIN_VALID_SAMPLES`] latencies.
//! - The loadgen was the bottleneck: its busiest thread *worked* more than
//!   [`SATURATED_WORK_FRACTION`] of the wall time. Work is CPU time minus spin-waiting, so a
//!   precise loop that spins between sends is not "saturated" for it (`loadgen.saturated`).
//! - The loadgen's own lateness is material (`schedule.behind`): the loop lag at a judged
//!   percentile is above the larger of [`LATE_FLOOR_US`] and [`LATE_FRACTION`] of the latency at
//!   the same percentile. Judged are p99, and every percentile an `--slo` bounds (p50 … p99.99):
//!   a figure is only reported as the server's when the instrument's error inside it is small.
//!   Why these numbers: the loop lag adds to the corrected latency of the messages it delays, so
//!   at 5% the figure is off by at most about that much; 20 µs is what a spinning loop on a
//!   2-vCPU virtual machine kept at p99 in every run (host preemption alone reaches 100 µs at
//!   the maximum), so a floor below it would reject runs whose timing was as good as this
//!   hardware allows.

use crate::slo::{Metric, parse_slo};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// What kind of problem an invalid reason is (`invalid_kinds`, beside `invalid_reasons` in a
/// report and each step), for programs that act on it: `late` and `saturated` are the
/// instrument's limits, the others say the figures are missing or incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidKind {
    /// No connection to the target could be established.
    NoConnection,
    /// Fewer than [`MIN_VALID_SAMPLES`] latency samples.
    FewSamples,
    /// The loadgen's busiest thread worked more than [`SATURATED_WORK_FRACTION`] of the time.
    Saturated,
    /// The loop's own lateness is material next to the latency (`schedule.behind`).
    Late,
    /// A step of the run was invalid (run level only; the step says why).
    Step,
    /// `--steps-from` failed; the run ended after the steps before it.
    StepsInput,
}

/// Why a measurement is not valid: each reason in plain words, and the distinct kinds of them
/// (empty: valid).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Invalidity {
    pub kinds: Vec<InvalidKind>,
    pub reasons: Vec<String>,
}

impl Invalidity {
    /// Adds a reason of `kind`.
    pub fn push(&mut self, kind: InvalidKind, reason: String) {
        add_kind(&mut self.kinds, kind);
        self.reasons.push(reason);
    }

    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// Adds `kind` to `kinds` unless it is there.
pub fn add_kind(kinds: &mut Vec<InvalidKind>, kind: InvalidKind) {
    if !kinds.contains(&kind) {
        kinds.push(kind);
    }
}

/// The kinds of a measurement's invalid reasons: `kinds` as written, or, for a report from
/// before `invalid_kinds` (invalid, with reasons and no kinds), the kinds its reasons' words
/// name — `None` when one of them is not worded as loadgen words it, so a reader knows it
/// cannot tell.
pub fn kinds_of(kinds: &[InvalidKind], reasons: &[String]) -> Option<Vec<InvalidKind>> {
    if !kinds.is_empty() || reasons.is_empty() {
        return Some(kinds.to_vec());
    }
    let mut read = Vec::new();
    for reason in reasons {
        add_kind(&mut read, kind_of_words(reason)?);
    }
    Some(read)
}

/// The kind of an invalid reason worded as [`invalidity`] and the run's own reasons word it.
fn kind_of_words(reason: &str) -> Option<InvalidKind> {
    let kind = if reason.starts_with("no connection to the target") {
        InvalidKind::NoConnection
    } else if reason.starts_with("only ") && reason.contains(" latency samples") {
        InvalidKind::FewSamples
    } else if reason.starts_with("the load generator was saturated") {
        InvalidKind::Saturated
    } else if reason.starts_with(LATE_REASON_START) {
        InvalidKind::Late
    } else if reason.starts_with("step ") {
        InvalidKind::Step
    } else if reason.starts_with("--steps-from ") {
        InvalidKind::StepsInput
    } else {
        return None;
    };
    Some(kind)
}

/// Fewer latency samples than this make a run `valid: false`.
pub const MIN_VALID_SAMPLES: u64 = 100;
/// A busiest-thread work fraction above this makes the loadgen `saturated`.
pub const SATURATED_WORK_FRACTION: f64 = 0.9;
/// Loop lag allowed at a judged percentile however small the latency (µs).
pub const LATE_FLOOR_US: u64 = 20;
/// Loop lag allowed at a judged percentile as a fraction of the latency there.
pub const LATE_FRACTION: f64 = 0.05;

/// A percentile the loop's lateness is judged at: its report key and quantile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// Key in `latency_us` (`p99`, `p999` …).
    pub key: &'static str,
    /// Quantile (0.99 …).
    pub quantile: f64,
}

const PERCENTILES: [Judged; 6] = [
    Judged {
        key: "p50",
        quantile: 0.50,
    },
    Judged {
        key: "p90",
        quantile: 0.90,
    },
    Judged {
        key: "p95",
        quantile: 0.95,
    },
    Judged {
        key: "p99",
        quantile: 0.99,
    },
    Judged {
        key: "p999",
        quantile: 0.999,
    },
    Judged {
        key: "p9999",
        quantile: 0.9999,
    },
];

/// The percentiles to judge the loop's lateness at: p99, and the percentiles `slo` bounds.
pub fn judged_percentiles(slo: Option<&str>) -> Vec<Judged> {
    let bounded: Vec<&'static str> = slo
        .and_then(|text| parse_slo(text).ok())
        .map(|slo| {
            slo.clauses
                .iter()
                .filter_map(|c| match c.metric {
                    Metric::Latency(key) => Some(key),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    PERCENTILES
        .into_iter()
        .filter(|p| p.key == "p99" || bounded.contains(&p.key))
        .collect()
}

/// How the invalid reason of a late loop begins ([`Lateness::reason`]): a reader that must tell
/// lateness from the other reasons matches on it.
pub const LATE_REASON_START: &str = "the load generator fell behind its open-loop schedule";

/// The loop's lateness at a percentile where it exceeded what is allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lateness {
    /// Where.
    pub at: Judged,
    /// Loop lag at that percentile (µs).
    pub loop_lag_us: u64,
    /// Latency at that percentile (µs).
    pub latency_us: u64,
    /// What was allowed (µs).
    pub allowed_us: u64,
}

impl Lateness {
    /// The invalid reason, in plain words.
    pub fn reason(&self) -> String {
        let name = percentile_name(self.at.key);
        format!(
            "{LATE_REASON_START}: its loop wrote messages {} µs late at {name} \
             (schedule.loop_lag_us), more than the {} µs allowed (the larger of {LATE_FLOOR_US} µs and {:.0}% of the {name} latency, {} µs), so its own lateness \
             is material in the latency figures; give it cores that nothing else runs on (pinned, \
             --timing precise) or lower the rate",
            self.loop_lag_us,
            self.allowed_us,
            LATE_FRACTION * 100.0,
            self.latency_us
        )
    }
}

/// `p99.9` for `p999`.
fn percentile_name(key: &str) -> String {
    match key {
        "p999" => "p99.9".into(),
        "p9999" => "p99.99".into(),
        other => other.into(),
    }
}

/// What the loop lag may be at a percentile whose latency is `latency_us`.
pub fn allowed_lag_us(latency_us: u64) -> u64 {
    LATE_FLOOR_US.max((latency_us as f64 * LATE_FRACTION) as u64)
}

/// The first judged percentile at which the loop lag exceeds what is allowed (the loop fell
/// behind: `schedule.behind`), or `None`.
pub fn late_loop(
    loop_lag: &Histogram<u64>,
    latency: &Histogram<u64>,
    judged: &[Judged],
) -> Option<Lateness> {
    if loop_lag.is_empty() {
        return None;
    }
    judged.iter().find_map(|&at| {
        let loop_lag_us = loop_lag.value_at_quantile(at.quantile);
        let latency_us = latency.value_at_quantile(at.quantile);
        let allowed_us = allowed_lag_us(latency_us);
        (loop_lag_us > allowed_us).then_some(Lateness {
            at,
            loop_lag_us,
            latency_us,
            allowed_us,
        })
    })
}

/// What a stretch of measurement (a run, or one step) is judged by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence<'a> {
    /// Connections opened (0: the target was unreachable).
    pub opened: u64,
    /// Latency samples.
    pub samples: u64,
    /// The busiest thread's work over wall time.
    pub work_fraction: f64,
    /// The loop fell behind.
    pub late: Option<&'a Lateness>,
}

/// Every reason the measurement is not valid, with its kind (empty: valid).
pub fn invalidity(e: &Evidence<'_>) -> Invalidity {
    let mut invalid = Invalidity::default();
    if e.opened == 0 {
        invalid.push(
            InvalidKind::NoConnection,
            "no connection to the target could be established".into(),
        );
    }
    if e.samples < MIN_VALID_SAMPLES {
        invalid.push(
            InvalidKind::FewSamples,
            format!(
                "only {} latency samples (fewer than {MIN_VALID_SAMPLES})",
                e.samples
            ),
        );
    }
    if saturated(e.work_fraction) {
        invalid.push(
            InvalidKind::Saturated,
            format!(
                "the load generator was saturated: its busiest thread worked {:.0}% of the time \
                 (spin-waiting excluded)",
                e.work_fraction * 100.0
            ),
        );
    }
    if let Some(late) = e.late {
        invalid.push(InvalidKind::Late, late.reason());
    }
    invalid
}

/// Whether a busiest-thread work fraction means the loadgen was the bottleneck.
pub fn saturated(work_fraction: f64) -> bool {
    work_fraction > SATURATED_WORK_FRACTION
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    fn histogram(values: &[(u64, u64)]) -> Histogram<u64> {
        let mut h = new_histogram();
        for &(value, count) in values {
            h.record_n(value, count).unwrap();
        }
        h
    }

    #[test]
    fn lateness_is_judged_against_the_latency_at_the_same_percentile() {
        let p99 = judged_percentiles(None);
        assert_eq!(p99.iter().map(|j| j.key).collect::<Vec<_>>(), ["p99"]);
        // Latency p99 1 ms: 50 µs of loop lag is allowed, 51 is not.
        let latency = histogram(&[(100, 980), (1_000, 20)]);
        let ok = histogram(&[(2, 980), (50, 20)]);
        assert_eq!(late_loop(&ok, &latency, &p99), None);
        let late = histogram(&[(2, 980), (51, 20)]);
        let l = late_loop(&late, &latency, &p99).expect("late");
        assert_eq!((l.loop_lag_us, l.latency_us, l.allowed_us), (51, 1_000, 50));
        assert!(l.reason().contains("51 µs late at p99"), "{}", l.reason());
        assert!(l.reason().contains("fell behind its open-loop schedule"));
        // A small latency: the 20 µs floor.
        let fast = histogram(&[(60, 1_000)]);
        assert_eq!(late_loop(&histogram(&[(20, 1_000)]), &fast, &p99), None);
        assert!(late_loop(&histogram(&[(21, 1_000)]), &fast, &p99).is_some());
        // A slow server (p99 285 ms): a loop late by 10 ms still leaves the figure standing.
        let stalled = histogram(&[(1_000, 900), (285_000, 100)]);
        assert_eq!(
            late_loop(&histogram(&[(10_000, 1_000)]), &stalled, &p99),
            None
        );
        // No loop lag recorded (closed loop): never late.
        assert_eq!(late_loop(&new_histogram(), &latency, &p99), None);
    }

    #[test]
    fn an_slo_on_p999_is_judged_at_p999_too() {
        let judged = judged_percentiles(Some("p99<=1ms,p99.9<=5ms,errors=0"));
        assert_eq!(
            judged.iter().map(|j| j.key).collect::<Vec<_>>(),
            ["p99", "p999"]
        );
        // Fine at p99, 300 µs late at p99.9 against a 2 ms latency there (100 µs allowed).
        let latency = histogram(&[(100, 9_980), (2_000, 20)]);
        let lag = histogram(&[(1, 9_985), (300, 15)]);
        let l = late_loop(&lag, &latency, &judged).expect("late at p99.9");
        assert_eq!(l.at.key, "p999");
        assert!(l.reason().contains("late at p99.9"), "{}", l.reason());
        assert_eq!(late_loop(&lag, &latency, &judged_percentiles(None)), None);
        // An unparsable SLO (rejected elsewhere) judges p99 only.
        assert_eq!(judged_percentiles(Some("nonsense")).len(), 1);
    }

    #[test]
    fn reasons_say_each_problem_once() {
        let late = Lateness {
            at: PERCENTILES[3],
            loop_lag_us: 400,
            latency_us: 500,
            allowed_us: 25,
        };
        let fine = Evidence {
            opened: 4,
            samples: 1_000,
            work_fraction: 0.5,
            late: None,
        };
        assert!(invalidity(&fine).is_empty());
        let invalid = invalidity(&Evidence {
            opened: 0,
            samples: 3,
            work_fraction: 0.95,
            late: Some(&late),
        });
        let all = &invalid.reasons;
        assert_eq!(all.len(), 4, "{all:?}");
        assert!(all[2].contains("saturated") && all[2].contains("95%"));
        assert!(all[3].contains("400 µs late"));
        assert_eq!(
            invalid.kinds,
            [
                InvalidKind::NoConnection,
                InvalidKind::FewSamples,
                InvalidKind::Saturated,
                InvalidKind::Late
            ]
        );
        // Only late: one kind, and it is written as the report says it.
        let only_late = invalidity(&Evidence {
            late: Some(&late),
            ..fine
        });
        assert_eq!(only_late.kinds, [InvalidKind::Late]);
        assert_eq!(
            serde_json::to_value(&only_late.kinds).expect("json"),
            serde_json::json!(["late"])
        );
        // A report from before the kinds: its words name them, each once; a reason worded
        // otherwise leaves them unknown; kinds as written are taken as they are.
        assert_eq!(kinds_of(&[], all), Some(invalid.kinds.clone()));
        let twice = [only_late.reasons[0].clone(), only_late.reasons[0].clone()];
        assert_eq!(kinds_of(&[], &twice), Some(vec![InvalidKind::Late]));
        let step = "step 1 (800 msg/s): late".to_string();
        let input = "--steps-from line 4: bad".to_string();
        assert_eq!(
            kinds_of(&[], &[step, input]),
            Some(vec![InvalidKind::Step, InvalidKind::StepsInput])
        );
        assert_eq!(kinds_of(&[], &["the moon was full".into()]), None);
        assert_eq!(
            kinds_of(&[InvalidKind::Saturated], &["worded anyhow".into()]),
            Some(vec![InvalidKind::Saturated])
        );
        assert_eq!(kinds_of(&[], &[]), Some(vec![]));
        assert!(saturated(0.91) && !saturated(0.9));
    }
}
