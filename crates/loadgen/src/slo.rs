//! Service-level objectives (`--slo 'p99<=1ms,p999<=5ms,errors=0'`): a pure parser and a pure
//! check of a report against the clauses. A run that misses any clause, or is not valid, exits 3.
//!
//! Clauses are `METRIC OP VALUE`, comma-separated. Latency metrics (`min`, `mean`, `p50`, `p90`,
//! `p95`, `p99`, `p999`, `p9999`, `max`) take durations with a unit (`ns`, `us`/`µs`, `ms`, `s`,
//! decimals allowed); `errors` and `rate` (verified messages/s) take plain numbers. Operators:
//! `<=`, `<`, `>=`, `>`, `=`.

use crate::report::{Percentiles, Report, StepReport};
use std::fmt;

/// What a clause measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// A latency statistic of `latency_us` (the key name: `p99`, `max`, …).
    Latency(&'static str),
    /// `errors.total`.
    Errors,
    /// `throughput.messages_per_s`.
    Rate,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<=`
    Le,
    /// `<`
    Lt,
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `=`
    Eq,
}

impl Op {
    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Le => actual <= limit,
            Op::Lt => actual < limit,
            Op::Ge => actual >= limit,
            Op::Gt => actual > limit,
            Op::Eq => actual == limit,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Le => "<=",
            Op::Lt => "<",
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Eq => "=",
        }
    }
}

/// One clause; latency limits are held in microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    /// What is compared.
    pub metric: Metric,
    /// How.
    pub op: Op,
    /// The limit (µs for latency metrics).
    pub limit: f64,
    /// The clause as written.
    pub text: String,
}

/// A parsed `--slo`.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// Every clause must hold.
    pub clauses: Vec<Clause>,
}

/// Why an SLO text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloError(pub String);

impl fmt::Display for SloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SloError {}

const LATENCY_KEYS: [&str; 9] = [
    "min", "mean", "p50", "p90", "p95", "p99", "p999", "p9999", "max",
];

/// Parses `p99<=1ms,p999<=5ms,errors=0`.
pub fn parse_slo(text: &str) -> Result<Slo, SloError> {
    let mut clauses = Vec::new();
    for raw in text.split(',') {
        let clause = raw.trim();
        if clause.is_empty() {
            continue;
        }
        let (pos, op, op_len) = ["<=", ">=", "<", ">", "="]
            .iter()
            .filter_map(|o| clause.find(o).map(|p| (p, *o)))
            .min_by_key(|(p, o)| (*p, std::cmp::Reverse(o.len())))
            .map(|(p, o)| {
                let op = match o {
                    "<=" => Op::Le,
                    ">=" => Op::Ge,
                    "<" => Op::Lt,
                    ">" => Op::Gt,
                    _ => Op::Eq,
                };
                (p, op, o.len())
            })
            .ok_or_else(|| {
                SloError(format!(
                    "clause {clause:?} has no comparison (use <=, <, >=, > or =)"
                ))
            })?;
        let name = clause[..pos].trim().to_ascii_lowercase();
        let value = clause[pos + op_len..].trim();
        let name = match name.as_str() {
            "p99.9" => "p999".to_string(),
            "p99.99" => "p9999".to_string(),
            _ => name,
        };
        let (metric, limit) = if let Some(key) = LATENCY_KEYS.iter().find(|k| **k == name) {
            (
                Metric::Latency(key),
                parse_duration_us(value)
                    .map_err(|e| SloError(format!("clause {clause:?}: {e}")))?,
            )
        } else if name == "errors" {
            (Metric::Errors, parse_number(value, clause)?)
        } else if name == "rate" {
            (Metric::Rate, parse_number(value, clause)?)
        } else {
            return Err(SloError(format!(
                "clause {clause:?}: unknown metric {name:?} (known: {}, errors, rate)",
                LATENCY_KEYS.join(", ")
            )));
        };
        clauses.push(Clause {
            metric,
            op,
            limit,
            text: clause.to_string(),
        });
    }
    if clauses.is_empty() {
        return Err(SloError("no clauses (example: p99<=1ms,errors=0)".into()));
    }
    Ok(Slo { clauses })
}

fn parse_number(value: &str, clause: &str) -> Result<f64, SloError> {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| SloError(format!("clause {clause:?}: {value:?} is not a number")))
}

/// Parses `1ms`, `250us`, `250µs`, `1.5ms`, `2s`, `800ns` into microseconds.
pub fn parse_duration_us(value: &str) -> Result<f64, String> {
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{value:?} needs a unit (ns, us, ms, s)"))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{value:?} does not start with a number"))?;
    let scale = match unit.trim() {
        "ns" => 1e-3,
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        other => return Err(format!("unknown unit {other:?} (use ns, us, ms or s)")),
    };
    Ok(number * scale)
}

/// The outcome of checking a report against an SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// True when every clause holds and the run is valid.
    pub met: bool,
    /// One line per clause (and one for an invalid run), for the summary.
    pub lines: Vec<String>,
}

/// What a verdict is about: a run's or one step's figures.
struct Subject<'a> {
    latency: &'a Percentiles,
    errors: u64,
    messages_per_s: f64,
    valid: bool,
    invalid_reasons: &'a [String],
}

/// Checks `report` against `slo`.
pub fn check(slo: &Slo, report: &Report) -> Verdict {
    check_subject(
        slo,
        &Subject {
            latency: &report.latency_us,
            errors: report.errors.total,
            messages_per_s: report.throughput.messages_per_s,
            valid: report.valid,
            invalid_reasons: &report.invalid_reasons,
        },
    )
}

/// Checks one step of a stepped run against `slo`.
pub fn check_step(slo: &Slo, step: &StepReport) -> Verdict {
    check_subject(
        slo,
        &Subject {
            latency: &step.latency_us,
            errors: step.errors.total,
            messages_per_s: step.throughput.messages_per_s,
            valid: step.valid,
            invalid_reasons: &step.invalid_reasons,
        },
    )
}

fn check_subject(slo: &Slo, report: &Subject<'_>) -> Verdict {
    let mut met = true;
    let mut lines = Vec::new();
    for c in &slo.clauses {
        let actual = match c.metric {
            Metric::Latency(key) => report.latency.get(key),
            Metric::Errors => report.errors as f64,
            Metric::Rate => report.messages_per_s,
        };
        let ok = c.op.holds(actual, c.limit);
        met &= ok;
        let unit = if matches!(c.metric, Metric::Latency(_)) {
            " µs"
        } else {
            ""
        };
        lines.push(format!(
            "SLO {} {}: measured {actual:.1}{unit}, limit {} {:.1}{unit}",
            c.text,
            if ok { "met" } else { "NOT MET" },
            c.op.as_str(),
            c.limit
        ));
    }
    if !report.valid {
        met = false;
        lines.push(format!(
            "SLO NOT MET: the run is not valid ({})",
            report.invalid_reasons.join("; ")
        ));
    }
    Verdict { met, lines }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let slo = parse_slo("p99<=1ms, p999<=5ms,errors=0").unwrap();
        assert_eq!(slo.clauses.len(), 3);
        assert_eq!(slo.clauses[0].metric, Metric::Latency("p99"));
        assert_eq!(slo.clauses[0].op, Op::Le);
        assert_eq!(slo.clauses[0].limit, 1000.0);
        assert_eq!(slo.clauses[1].limit, 5000.0);
        assert_eq!(slo.clauses[2].metric, Metric::Errors);
        assert_eq!(slo.clauses[2].op, Op::Eq);
        assert_eq!(slo.clauses[2].limit, 0.0);
    }

    #[test]
    fn units_aliases_and_operators() {
        let slo = parse_slo("p99.9<1.5ms,max<250us,mean<=800ns,rate>=1000,p50>2s").unwrap();
        let limits: Vec<f64> = slo.clauses.iter().map(|c| c.limit).collect();
        assert_eq!(limits, [1500.0, 250.0, 0.8, 1000.0, 2_000_000.0]);
        assert_eq!(slo.clauses[0].metric, Metric::Latency("p999"));
        assert_eq!(slo.clauses[0].op, Op::Lt);
        assert_eq!(slo.clauses[3].op, Op::Ge);
        assert_eq!(slo.clauses[4].op, Op::Gt);
    }

    #[test]
    fn rejects_bad_text_with_a_reason() {
        for bad in [
            "",
            "p99",
            "p99<=1",
            "p99<=fast",
            "p42<=1ms",
            "errors<=many",
            "p99<=1h",
        ] {
            let err = parse_slo(bad).unwrap_err();
            assert!(!err.0.is_empty(), "{bad}");
        }
        assert!(parse_slo("p99<=1").unwrap_err().0.contains("unit"));
        assert!(
            parse_slo("p42<=1ms")
                .unwrap_err()
                .0
                .contains("unknown metric")
        );
    }
}
