//! *Compute*: per-cell summaries of bench trials.
//!
//! [`summarize`] turns trial records into one [`CellSummary`] per cell (median, spread, an
//! order-statistic interval of the median with its real coverage, latency, errors, server CPU
//! and memory) and marks a winner per (connections, size) only where intervals of at least
//! [`MIN_COVERAGE_FOR_WINNER`] coverage do not overlap. Pure functions over records; the tables
//! that show the result are presentation's (`present::table`, above this layer).

use crate::record::loadgen_report::ReportFigures;
use crate::record::summary::CellSummary;
use crate::record::trial::{Cell, TrialRecord};
use crate::stats;

/// Summarizes `records` per cell, in the order of `cells`.
pub fn summarize(cells: &[Cell], records: &[TrialRecord]) -> Vec<CellSummary> {
    let mut summaries: Vec<CellSummary> = cells
        .iter()
        .map(|cell| {
            let of_cell: Vec<&TrialRecord> = records.iter().filter(|r| &r.cell == cell).collect();
            let figures: Vec<&ReportFigures> =
                of_cell.iter().filter_map(|r| r.figures.as_ref()).collect();
            let throughput: Vec<f64> = figures.iter().map(|f| f.messages_per_s).collect();
            let ci = stats::median_ci(&throughput);
            let cpu: Vec<f64> = of_cell
                .iter()
                .filter_map(|r| r.server_cpu_per_message_us)
                .collect();
            CellSummary {
                cell: cell.clone(),
                trials: figures.len(),
                failed_trials: of_cell.len() - figures.len(),
                invalid_trials: figures.iter().filter(|f| f.valid == Some(false)).count(),
                starved_connections: figures.iter().filter_map(|f| f.starved).max(),
                messages_per_s_median: stats::median(&throughput),
                messages_per_s_spread_percent: stats::spread_percent(&throughput),
                messages_per_s_ci95: ci.interval,
                messages_per_s_ci_coverage: ci.coverage,
                p50_us: stats::median(&figures.iter().map(|f| f.p50_us).collect::<Vec<_>>()),
                p99_us: stats::median(&figures.iter().map(|f| f.p99_us).collect::<Vec<_>>()),
                errors: figures.iter().map(|f| f.errors_total).sum(),
                server_cpu_per_message_us: (!cpu.is_empty()).then(|| stats::median(&cpu)),
                server_peak_rss_kib: of_cell.iter().filter_map(|r| r.server_peak_rss_kib).max(),
                server_workers: of_cell.iter().filter_map(|r| r.server_workers).max(),
                winner: false,
                no_star_because: None,
            }
        })
        .collect();
    mark_winners(&mut summaries);
    summaries
}

/// Intervals with less coverage than this (fewer than 5 trials) are too weak to name a winner:
/// at 3 trials two identical servers would get a "winner" about one time in ten.
pub const MIN_COVERAGE_FOR_WINNER: f64 = 0.90;

/// Marks, per (workload, connections, size) ([`Cell::group`]), the cell with the highest median as winner when its
/// interval overlaps no other cell's interval in that group and every interval there has at
/// least [`MIN_COVERAGE_FOR_WINNER`] coverage. The star means fastest: when the cell with the
/// highest median is not clean (a failed or invalid trial, errors, a starved connection), it
/// measured something other than an echo server doing its job, so nobody gets the star (not
/// the runner-up, which may well be slower than the server the instrument could not measure)
/// and `no_star_because` on that cell says why.
pub fn mark_winners(summaries: &mut [CellSummary]) {
    let groups: Vec<Cell> = summaries.iter().map(|s| s.cell.clone()).collect();
    for group in &groups {
        let members: Vec<usize> = (0..summaries.len())
            .filter(|&i| summaries[i].cell.group() == group.group())
            .filter(|&i| summaries[i].trials > 0)
            .collect();
        let Some(&best) = members.iter().max_by(|&&a, &&b| {
            summaries[a]
                .messages_per_s_median
                .total_cmp(&summaries[b].messages_per_s_median)
        }) else {
            continue;
        };
        if members.len() < 2 {
            continue;
        }
        if let Some(why) = not_clean_because(&summaries[best]) {
            summaries[best].no_star_because = Some(why);
            continue;
        }
        if members
            .iter()
            .any(|&i| summaries[i].messages_per_s_ci_coverage < MIN_COVERAGE_FOR_WINNER)
        {
            continue;
        }
        let separated = members.iter().filter(|&&i| i != best).all(|&i| {
            !summaries[best]
                .messages_per_s_ci95
                .overlaps(&summaries[i].messages_per_s_ci95)
        });
        summaries[best].winner = separated;
    }
}

/// Why a cell's trials are not all valid, error-free reports without a starved connection
/// (`None`: they are).
fn not_clean_because(summary: &CellSummary) -> Option<String> {
    let mut why = Vec::new();
    if summary.failed_trials > 0 {
        why.push(format!("{} failed trial(s)", summary.failed_trials));
    }
    if summary.invalid_trials > 0 {
        why.push(format!(
            "{} invalid trial(s) (loadgen's figures, not the server's)",
            summary.invalid_trials
        ));
    }
    if summary.errors > 0 {
        why.push(format!("{} errors", summary.errors));
    }
    if let Some(starved) = summary.starved_connections.filter(|&n| n > 0) {
        why.push(format!("{starved} starved connection(s)"));
    }
    (!why.is_empty()).then(|| why.join(", "))
}

/// Fixed trial records and summaries for the tests of this module and of the tables.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn cell(server: &str, connections: u32) -> Cell {
        Cell {
            server: server.into(),
            connections,
            size_bytes: 64,
            workload: None,
        }
    }

    pub(crate) fn record(cell: Cell, trial: u32, rate: f64, p99: f64, errors: u64) -> TrialRecord {
        TrialRecord {
            order: 0,
            cell,
            trial,
            loadgen_json: String::new(),
            loadgen_log: String::new(),
            server_log: String::new(),
            server_stats_json: None,
            loadgen_exit_code: Some(0),
            figures: Some(ReportFigures {
                messages_per_s: rate,
                messages_verified: 1000,
                duration_s: 1.0,
                p50_us: p99 / 2.0,
                p90_us: p99,
                p99_us: p99,
                p999_us: p99,
                max_us: p99,
                errors_total: errors,
                valid: None,
                invalid_reasons: vec![],
                invalid_kinds: vec![],
                saturated: None,
                achieved_ratio: None,
                target_per_s: None,
                starved: None,
            }),
            server_cpu_s: Some(0.5),
            server_cpu_per_message_us: Some(rate / 10_000.0),
            server_cpu_share: Some(0.5),
            server_runnable_share: Some(0.6),
            server_peak_rss_kib: Some(2048 + trial as u64),
            server_workers: None,
            failure: None,
        }
    }

    pub(crate) fn fixed_summaries() -> Vec<CellSummary> {
        let cells = vec![cell("iterative", 16), cell("pool", 16), cell("thread", 16)];
        let mut records = Vec::new();
        for (trial, (a, b, c)) in [
            (100.0, 300.0, 290.0),
            (110.0, 310.0, 305.0),
            (90.0, 305.0, 320.0),
        ]
        .into_iter()
        .enumerate()
        {
            records.push(record(cells[0].clone(), trial as u32, a, 50.0, 1));
            records.push(record(cells[1].clone(), trial as u32, b, 150.0, 0));
            records.push(record(cells[2].clone(), trial as u32, c, 250.0, 0));
        }
        summarize(&cells, &records)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{cell, fixed_summaries, record};
    use super::*;
    use crate::record::trial::TrialFailure;
    use crate::stats::Interval;

    #[test]
    fn summary_median_spread_errors_and_no_winner_when_overlapping() {
        let summaries = fixed_summaries();
        assert_eq!(summaries[0].messages_per_s_median, 100.0);
        assert!((summaries[0].messages_per_s_spread_percent - 20.0).abs() < 1e-9);
        assert_eq!(summaries[0].errors, 3);
        assert_eq!(summaries[0].server_peak_rss_kib, Some(2050));
        assert_eq!(summaries[1].messages_per_s_median, 305.0);
        assert_eq!(summaries[2].messages_per_s_median, 305.0);
        // pool and thread overlap, so nobody wins.
        assert!(summaries.iter().all(|s| !s.winner));
    }

    #[test]
    fn winner_marked_only_when_separated() {
        let cells = vec![cell("slow", 1), cell("fast", 1)];
        let mut records = Vec::new();
        for trial in 0..5 {
            records.push(record(
                cells[0].clone(),
                trial,
                100.0 + trial as f64,
                10.0,
                0,
            ));
            records.push(record(
                cells[1].clone(),
                trial,
                200.0 + trial as f64,
                10.0,
                0,
            ));
        }
        let summaries = summarize(&cells, &records);
        assert!(!summaries[0].winner);
        assert!(summaries[1].winner);
        // With four trials per cell (87.5% intervals) there is no winner, however separated.
        let summaries = summarize(&cells, &records[..8]);
        assert!(summaries.iter().all(|s| !s.winner));
        assert_eq!(summaries[0].messages_per_s_ci_coverage, 0.875);
        // Three trials: the interval is the range, 75% coverage, and never a winner.
        let summaries = summarize(&cells, &records[..6]);
        assert_eq!(
            summaries[1].messages_per_s_ci95,
            Interval {
                low: 200.0,
                high: 202.0
            }
        );
        assert_eq!(summaries[1].messages_per_s_ci_coverage, 0.75);
        assert!(summaries.iter().all(|s| !s.winner));
    }

    #[test]
    fn bad_trials_never_win() {
        let cells = vec![cell("slow", 1), cell("fast", 1)];
        let clean = |trial: u32| {
            let mut records = Vec::new();
            for t in 0..trial {
                records.push(record(cells[0].clone(), t, 100.0 + t as f64, 10.0, 0));
                records.push(record(cells[1].clone(), t, 200.0 + t as f64, 10.0, 0));
            }
            records
        };
        assert!(summarize(&cells, &clean(5))[1].winner);
        type Spoil = fn(&mut TrialRecord);
        let spoilers: [(&str, Spoil); 4] = [
            ("errors", |r| {
                if let Some(f) = r.figures.as_mut() {
                    f.errors_total = 3;
                }
            }),
            ("invalid", |r| {
                if let Some(f) = r.figures.as_mut() {
                    f.valid = Some(false);
                }
            }),
            ("starved", |r| {
                if let Some(f) = r.figures.as_mut() {
                    f.starved = Some(1);
                }
            }),
            ("failed", |r| {
                r.figures = None;
                r.failure = Some(TrialFailure::ServerStart("server exited".into()));
            }),
        ];
        for (what, spoil) in spoilers {
            let mut records = clean(6);
            // The fast cell's sixth trial is bad; five good ones remain for its interval.
            spoil(&mut records[11]);
            let summaries = summarize(&cells, &records);
            assert!(!summaries[1].winner, "{what}: {summaries:?}");
            // Nor does the slower one get the star in its place; the table is told why.
            assert!(!summaries[0].winner, "{what}: {summaries:?}");
            assert!(
                summaries[1]
                    .no_star_because
                    .as_deref()
                    .is_some_and(|why| why.contains(what)),
                "{what}: {:?}",
                summaries[1].no_star_because
            );
        }
    }

    #[test]
    fn the_star_never_goes_to_a_slower_server() {
        // The case: at 128 connections the faster server's trials were loadgen-bound
        // (invalid): 197,773 against 148,608 msg/s. The star went to the slower one.
        let cells = vec![cell("slower", 128), cell("faster", 128)];
        let mut records = Vec::new();
        for trial in 0..5 {
            records.push(record(
                cells[0].clone(),
                trial,
                148_608.0 + f64::from(trial),
                10.0,
                0,
            ));
            let mut fast = record(
                cells[1].clone(),
                trial,
                197_773.0 + f64::from(trial),
                10.0,
                0,
            );
            if let Some(figures) = fast.figures.as_mut() {
                figures.valid = Some(false);
            }
            records.push(fast);
        }
        let summaries = summarize(&cells, &records);
        assert!(summaries.iter().all(|s| !s.winner), "{summaries:?}");
        assert!(summaries[1].no_star_because.is_some());
        assert_eq!(summaries[0].no_star_because, None);
        // Random groups: whenever a cell has the star, it has its group's highest median and
        // an interval clear of every other cell's.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        for _ in 0..300 {
            let cells: Vec<Cell> = (0..3).map(|i| cell(&format!("s{i}"), 16)).collect();
            let mut records = Vec::new();
            for (index, c) in cells.iter().enumerate() {
                let center = rand::Rng::random_range(&mut rng, 100.0..200.0);
                let spread = rand::Rng::random_range(&mut rng, 0.0..30.0);
                let invalid = rand::Rng::random_bool(&mut rng, 0.2);
                for trial in 0..5u32 {
                    let rate = center + spread * (f64::from(trial) - 2.0) / 2.0;
                    let mut r = record(c.clone(), trial, rate + index as f64 * 1e-3, 10.0, 0);
                    if let Some(figures) = r.figures.as_mut() {
                        figures.valid = Some(!invalid);
                    }
                    records.push(r);
                }
            }
            let summaries = summarize(&cells, &records);
            for star in summaries.iter().filter(|s| s.winner) {
                for other in summaries.iter().filter(|s| s.cell != star.cell) {
                    assert!(
                        star.messages_per_s_median > other.messages_per_s_median
                            && !star
                                .messages_per_s_ci95
                                .overlaps(&other.messages_per_s_ci95),
                        "{summaries:?}"
                    );
                }
                assert_eq!(star.invalid_trials, 0);
            }
        }
    }

    #[test]
    fn failed_trials_are_counted_not_averaged() {
        let cells = vec![cell("pool", 1)];
        let mut failed = record(cells[0].clone(), 1, 0.0, 0.0, 0);
        failed.figures = None;
        failed.failure = Some(TrialFailure::ServerStart("server exited".into()));
        let records = vec![record(cells[0].clone(), 0, 500.0, 10.0, 0), failed];
        let summaries = summarize(&cells, &records);
        assert_eq!(summaries[0].trials, 1);
        assert_eq!(summaries[0].failed_trials, 1);
        assert_eq!(summaries[0].messages_per_s_median, 500.0);
    }
}
