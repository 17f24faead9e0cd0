//! Service-level objectives: `p99<=1ms,p999<=5ms,errors=0`.
//!
//! The same syntax as loadgen's `--slo`. Latency clauses name a percentile key of the loadgen
//! report's `latency_us` (`p50 p90 p99 p999 p9999 max mean`, also written `p99.9`, `p99.99`) and
//! a duration (`500us`, `1ms`, `2s`); `errors=N` or `errors<=N` bounds `errors.total` (0 when
//! not given, since capacity never counts a rate that loses messages).

use serde::{Deserialize, Serialize};

use crate::input_error;

/// One latency bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyClause {
    /// Key under `latency_us` in the loadgen report (`p99`, `p999`, `max` …).
    pub key: String,
    pub limit_us: f64,
}

/// A parsed SLO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// The text as given.
    pub text: String,
    pub latency: Vec<LatencyClause>,
    pub max_errors: u64,
}

fn percentile_key(name: &str) -> Option<&'static str> {
    Some(match name {
        "p50" | "median" => "p50",
        "p90" => "p90",
        "p99" => "p99",
        "p999" | "p99.9" => "p999",
        "p9999" | "p99.99" => "p9999",
        "max" => "max",
        "mean" => "mean",
        _ => return None,
    })
}

impl Slo {
    /// Parses the clause list; bad syntax is an input error (exit 2) naming the clause.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut slo = Slo {
            text: text.trim().to_string(),
            latency: Vec::new(),
            max_errors: 0,
        };
        let bad = |clause: &str, why: &str| {
            input_error(format!(
                "SLO clause {clause:?}: {why} (expected e.g. 'p99<=1ms,p999<=5ms,errors=0')"
            ))
        };
        for clause in text.split(',').map(str::trim) {
            if clause.is_empty() {
                continue;
            }
            let (name, value) = clause
                .split_once("<=")
                .or_else(|| clause.split_once('='))
                .ok_or_else(|| bad(clause, "no '<=' or '='"))?;
            let (name, value) = (name.trim(), value.trim());
            if name == "errors" {
                slo.max_errors = value
                    .parse()
                    .map_err(|_| bad(clause, "errors needs a whole number"))?;
                continue;
            }
            let key = percentile_key(name).ok_or_else(|| {
                bad(
                    clause,
                    "unknown metric; use p50 p90 p99 p999 p9999 max mean or errors",
                )
            })?;
            let limit = humantime::parse_duration(value)
                .map_err(|_| bad(clause, "the limit must be a duration such as 1ms or 500us"))?;
            slo.latency.push(LatencyClause {
                key: key.to_string(),
                limit_us: limit.as_secs_f64() * 1e6,
            });
        }
        if slo.latency.is_empty() {
            return Err(input_error(format!(
                "SLO {text:?} has no latency clause (e.g. 'p99<=1ms')"
            )));
        }
        Ok(slo)
    }

    /// The clauses `report` breaks, in words; empty when it meets them all.
    pub fn violations(&self, report: &serde_json::Value) -> Vec<String> {
        let mut broken = Vec::new();
        for clause in &self.latency {
            match report
                .pointer(&format!("/latency_us/{}", clause.key))
                .and_then(serde_json::Value::as_f64)
            {
                Some(value) if value <= clause.limit_us => {}
                Some(value) => broken.push(format!(
                    "{} {:.0}us > {:.0}us",
                    clause.key, value, clause.limit_us
                )),
                None => broken.push(format!("report has no latency_us.{}", clause.key)),
            }
        }
        let errors = report
            .pointer("/errors/total")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(u64::MAX);
        if errors > self.max_errors {
            broken.push(format!("errors {errors} > {}", self.max_errors));
        }
        broken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_clauses_and_units() {
        let slo = Slo::parse("p99<=1ms, p99.9<=5ms,errors=2,max<=250us").expect("valid");
        assert_eq!(
            slo.latency,
            vec![
                LatencyClause {
                    key: "p99".into(),
                    limit_us: 1000.0
                },
                LatencyClause {
                    key: "p999".into(),
                    limit_us: 5000.0
                },
                LatencyClause {
                    key: "max".into(),
                    limit_us: 250.0
                },
            ]
        );
        assert_eq!(slo.max_errors, 2);
        assert_eq!(Slo::parse("p50<=2s").expect("valid").max_errors, 0);
    }

    #[test]
    fn rejects_nonsense_as_input_errors() {
        for bad in [
            "p99",
            "p98<=1ms",
            "p99<=fast",
            "errors=some",
            "errors=0",
            "",
        ] {
            let error = Slo::parse(bad).expect_err(bad);
            assert_eq!(crate::exit_code(&error), 2, "{bad}: {error}");
        }
    }

    #[test]
    fn violations_name_the_broken_clause() {
        let slo = Slo::parse("p99<=1ms,p999<=5ms").expect("valid");
        let good =
            serde_json::json!({"latency_us": {"p99": 900, "p999": 4000}, "errors": {"total": 0}});
        assert!(slo.violations(&good).is_empty());
        let bad =
            serde_json::json!({"latency_us": {"p99": 1500, "p999": 4000}, "errors": {"total": 3}});
        let broken = slo.violations(&bad);
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(broken[0].starts_with("p99 1500us > 1000us"), "{broken:?}");
        assert!(broken[1].starts_with("errors 3 > 0"), "{broken:?}");
    }
}
