//! *Compute*: "which strategy for which workload" — a verdict per row of the matrix.
//!
//! A row is a group of cells that differ only in their server (same workload, connections and
//! size, see `Cell::group`). Each cell gets the row's figure of merit (the workload's own:
//! messages/s, connections/s, bytes/s, or p99 latency; see `workload::Merit`) per trial, the
//! median and its order-statistic interval, and a status ([`cell_status`]). [`judge`] then
//! applies the rule:
//!
//! 1. Only a clean cell (every trial valid, no errors, no starved connection, none failed) can
//!    win. Starved, erroring or failed cells are out of the race (the server did not do the job).
//! 2. A cell whose figure is unknown — loadgen-bound (saturated, behind its schedule) or
//!    otherwise invalid — may be better than measured: no one wins beside it.
//! 3. Every compared interval needs ≥ [`MIN_COVERAGE_FOR_WINNER`] coverage (5 trials).
//! 4. The best clean cell wins when its interval overlaps no other clean cell's.
//!
//! Every row also gets one line of why from the measured figures ([`why_line`]). Pure functions
//! over records; `present::matrix` draws the result, `matrix.json` stores it.

use std::collections::BTreeMap;

use loadgen::validity::InvalidKind;

use crate::record::matrix::{CellStatus, MatrixCell, MatrixFile, MatrixRow, compact};
use crate::record::plan::BenchPlan;
use crate::record::summary::CellSummary;
use crate::record::trial::{Cell, TrialRecord};
use crate::stats::{self, Interval};
pub use crate::summary::MIN_COVERAGE_FOR_WINNER;
use crate::workload::{Merit, Workload};

/// The workload a cell is judged by: its named workload, or for the cell flags' unnamed
/// matrix, messages/s (closed loop) or p99 (open loop, `--rate`).
pub fn workload_of(plan: &BenchPlan, cell: &Cell) -> Workload {
    plan.workload_of(cell).cloned().unwrap_or_else(|| Workload {
        name: String::new(),
        connections: plan.connections.clone(),
        sizes_bytes: plan.sizes_bytes.clone(),
        depth: plan.depth,
        rate_per_s: plan.rate_per_s,
        messages_per_connection: None,
        source_addrs: None,
        merit: if plan.rate_per_s.is_some() {
            Merit::P99Us
        } else {
            Merit::MessagesPerS
        },
    })
}

/// The matrix of a bench run: one row per group of cells, in the order of `summaries`.
/// `connect_p99_us` holds the median connect p99 per cell where the reports had one.
pub fn matrix(
    plan: &BenchPlan,
    summaries: &[CellSummary],
    records: &[TrialRecord],
    connect_p99_us: &[(Cell, f64)],
) -> MatrixFile {
    let mut servers: Vec<String> = Vec::new();
    let mut groups: Vec<Vec<&CellSummary>> = Vec::new();
    for summary in summaries {
        if !servers.contains(&summary.cell.server) {
            servers.push(summary.cell.server.clone());
        }
        match groups
            .iter_mut()
            .find(|g| g[0].cell.group() == summary.cell.group())
        {
            Some(group) => group.push(summary),
            None => groups.push(vec![summary]),
        }
    }
    let rows = groups
        .into_iter()
        .map(|group| {
            let first = &group[0].cell;
            let workload = workload_of(plan, first);
            let mut cells: Vec<MatrixCell> = group
                .iter()
                .map(|summary| {
                    let of_cell: Vec<&TrialRecord> =
                        records.iter().filter(|r| r.cell == summary.cell).collect();
                    let connect = connect_p99_us
                        .iter()
                        .find(|(cell, _)| *cell == summary.cell)
                        .map(|(_, us)| *us);
                    matrix_cell(&workload, summary, &of_cell, connect)
                })
                .collect();
            let verdict = judge(workload.merit, &mut cells);
            MatrixRow {
                workload: first.workload.clone(),
                connections: first.connections,
                size_bytes: first.size_bytes,
                merit: workload.merit,
                unit: workload.merit.unit().into(),
                higher_is_better: workload.merit.higher_is_better(),
                winner: verdict.winner.map(|i| cells[i].server.clone()),
                confidence: verdict.confidence,
                no_winner: verdict.no_winner,
                why: why_line(workload.merit, first.connections, &cells),
                cells,
            }
        })
        .collect();
    MatrixFile::new(servers, rows)
}

/// One cell of a row: its figure per trial, their median and interval, its status and reasons.
pub fn matrix_cell(
    workload: &Workload,
    summary: &CellSummary,
    records: &[&TrialRecord],
    connect_p99_us: Option<f64>,
) -> MatrixCell {
    let values: Vec<f64> = records
        .iter()
        .filter_map(|r| r.figures.as_ref())
        .map(|f| workload.figure(f.messages_per_s, f.p99_us, summary.cell.size_bytes))
        .filter(|v| v.is_finite())
        .collect();
    let ci = stats::median_ci(&values);
    let (status, reasons) = cell_status(summary, records);
    MatrixCell {
        server: summary.cell.server.clone(),
        figure: (!values.is_empty()).then(|| stats::median(&values)),
        interval: (values.len() >= 2).then_some(ci.interval),
        coverage: ci.coverage,
        trials: values.len(),
        status,
        reasons,
        server_peak_rss_kib: summary.server_peak_rss_kib,
        server_cpu_per_message_us: summary.server_cpu_per_message_us,
        server_workers: summary.server_workers,
        connect_p99_us,
    }
}

/// The status of a cell (the most telling one) and every reason it is not clean: loadgen's own
/// `invalid_reasons` in its words (each distinct one, with how many trials said it), starved
/// connections, errors, failed trials.
pub fn cell_status(summary: &CellSummary, records: &[&TrialRecord]) -> (CellStatus, Vec<String>) {
    let total = records.len();
    let mut reasons = Vec::new();
    // Distinct invalid reasons, keyed by their words before any figure (`…: busy 97%`).
    let mut invalid: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut loadgen_bound = false;
    for figures in records.iter().filter_map(|r| r.figures.as_ref()) {
        if figures.valid != Some(false) {
            continue;
        }
        loadgen_bound |= figures.saturated == Some(true);
        loadgen_bound |= figures.kinds().is_some_and(|kinds| {
            kinds
                .iter()
                .any(|kind| matches!(kind, InvalidKind::Saturated | InvalidKind::Late))
        });
        for reason in &figures.invalid_reasons {
            let key = reason.split(':').next().unwrap_or(reason).to_string();
            invalid.entry(key).or_insert_with(|| (reason.clone(), 0)).1 += 1;
        }
    }
    for (reason, count) in invalid.into_values() {
        reasons.push(format!("{reason} ({count} of {total} trials)"));
    }
    if let Some(starved) = summary.starved_connections.filter(|&n| n > 0) {
        reasons.push(format!(
            "{starved} of {} connections starved (no echo for longer than the stall threshold)",
            summary.cell.connections
        ));
    }
    if summary.errors > 0 {
        reasons.push(format!("{} errors", summary.errors));
    }
    let mut instrument_failed = false;
    for failure in records.iter().filter_map(|r| r.failure.as_ref()) {
        instrument_failed |= failure.is_instrument();
        let text = format!("trial failed: {failure}");
        if !reasons.contains(&text) {
            reasons.push(text);
        }
    }
    let status = if instrument_failed {
        CellStatus::Invalid
    } else if summary.trials == 0 || summary.failed_trials > 0 {
        CellStatus::Failed
    } else if summary.starved_connections.unwrap_or(0) > 0 {
        CellStatus::Starved
    } else if summary.errors > 0 {
        CellStatus::Errors
    } else if summary.invalid_trials > 0 {
        if loadgen_bound {
            CellStatus::LoadgenBound
        } else {
            CellStatus::Invalid
        }
    } else {
        CellStatus::Judged
    };
    (status, reasons)
}

/// A row's verdict: the winner's index and the confidence, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub winner: Option<usize>,
    pub confidence: Option<f64>,
    pub no_winner: Option<String>,
}

impl Verdict {
    fn none(reason: String) -> Self {
        Self {
            winner: None,
            confidence: None,
            no_winner: Some(reason),
        }
    }
}

/// Applies the rule of this module to one row and marks the winner's status.
pub fn judge(merit: Merit, cells: &mut [MatrixCell]) -> Verdict {
    if cells.len() < 2 {
        return Verdict::none("only one server in the comparison".into());
    }
    let blockers: Vec<&MatrixCell> = cells.iter().filter(|c| c.status.blocks_verdict()).collect();
    if !blockers.is_empty() {
        let first_reason = blockers
            .iter()
            .find_map(|c| c.reasons.first())
            .map_or(String::new(), |r| format!(": {r}"));
        return Verdict::none(format!(
            "{} {} could be better than measured{first_reason}",
            blockers[0].status.word(),
            names(&blockers)
        ));
    }
    let clean: Vec<usize> = (0..cells.len())
        .filter(|&i| cells[i].status == CellStatus::Judged && cells[i].figure.is_some())
        .collect();
    let Some(&best) = clean
        .iter()
        .max_by(|&&a, &&b| compare(merit, cells[a].figure, cells[b].figure))
    else {
        let all: Vec<&MatrixCell> = cells.iter().collect();
        return Verdict::none(format!("no cell could be judged ({})", statuses(&all)));
    };
    let weakest = clean
        .iter()
        .map(|&i| cells[i].coverage)
        .fold(f64::INFINITY, f64::min);
    if weakest < MIN_COVERAGE_FOR_WINNER {
        let fewest = clean.iter().map(|&i| cells[i].trials).min().unwrap_or(0);
        return Verdict::none(format!(
            "too few trials: {fewest} per cell (intervals of {:.0}% coverage); a verdict needs 5 (≥ {:.0}%)",
            (weakest * 100.0).floor(),
            MIN_COVERAGE_FOR_WINNER * 100.0
        ));
    }
    let interval_of = |i: usize| cells[i].interval;
    // The overlapping cell named is the runner-up: the best figure after the best.
    let runner_up = clean
        .iter()
        .copied()
        .filter(|&i| i != best)
        .filter(|&i| match (interval_of(best), interval_of(i)) {
            (Some(a), Some(b)) => a.overlaps(&b),
            _ => true,
        })
        .max_by(|&a, &b| compare(merit, cells[a].figure, cells[b].figure));
    if let Some(other) = runner_up {
        let show = |i: usize| {
            let range = interval_of(i).map_or("-".into(), |r: Interval| {
                format!("{}–{}", compact(r.low), compact(r.high))
            });
            format!("{} {range}", cells[i].server)
        };
        return Verdict::none(format!(
            "intervals overlap: {} and {} {}",
            show(best),
            show(other),
            merit.unit()
        ));
    }
    cells[best].status = CellStatus::Winner;
    Verdict {
        winner: Some(best),
        confidence: Some(weakest),
        no_winner: None,
    }
}

/// Orders two figures so that the better one is greater (by the merit's direction).
fn compare(merit: Merit, a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    let order = a.unwrap_or(f64::NAN).total_cmp(&b.unwrap_or(f64::NAN));
    if merit.higher_is_better() {
        order
    } else {
        order.reverse()
    }
}

/// `thread, event-loop`.
fn names(cells: &[&MatrixCell]) -> String {
    cells
        .iter()
        .map(|c| c.server.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `starved: pool, iterative; loadgen-bound: thread`.
fn statuses(cells: &[&MatrixCell]) -> String {
    let mut by_status: Vec<(CellStatus, Vec<&MatrixCell>)> = Vec::new();
    for cell in cells {
        match by_status.iter_mut().find(|(s, _)| *s == cell.status) {
            Some((_, list)) => list.push(cell),
            None => by_status.push((cell.status, vec![cell])),
        }
    }
    by_status
        .iter()
        .map(|(status, list)| format!("{}: {}", status.word(), names(list)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One line of why from the measured figures: the best two cells by the row's figure (with
/// their status when not judged), and beside them what the workload is about — server memory
/// for open-loop (keep-alive) rows, connect latency for churn, server CPU per message otherwise
/// — and how many connections starved where some did.
pub fn why_line(merit: Merit, connections: u32, cells: &[MatrixCell]) -> String {
    let mut ranked: Vec<&MatrixCell> = cells.iter().filter(|c| c.figure.is_some()).collect();
    ranked.sort_by(|a, b| compare(merit, b.figure, a.figure));
    let Some(first) = ranked.first() else {
        return "nothing was measured".into();
    };
    let tag = |c: &MatrixCell| match c.status {
        CellStatus::Winner | CellStatus::Judged => String::new(),
        other => format!(" ({})", other.word()),
    };
    let figure = |c: &MatrixCell| {
        let value = c.figure.unwrap_or(f64::NAN);
        match merit {
            Merit::P99Us => format!("p99 {} µs", compact(value)),
            _ => format!("{} {}", compact(value), merit.unit()),
        }
    };
    let mut line = format!("{} {}{}", first.server, figure(first), tag(first));
    let second = ranked.get(1);
    if let Some(second) = second {
        line.push_str(&format!(
            " vs {} {}{}",
            second.server,
            figure(second),
            tag(second)
        ));
        if let (Some(a), Some(b)) = (first.figure, second.figure)
            && merit.higher_is_better()
            && b > 0.0
        {
            line.push_str(&format!(" ({:.2}×)", a / b));
        }
    }
    let pair = |value: &dyn Fn(&MatrixCell) -> Option<String>| -> Option<String> {
        let a = value(first)?;
        match second.and_then(|s| value(s)) {
            Some(b) => Some(format!("{a} vs {b}")),
            None => Some(a),
        }
    };
    let extra = match merit {
        Merit::P99Us => pair(&|c| {
            c.server_peak_rss_kib
                .map(|kib| format!("{:.1} MiB", kib as f64 / 1024.0))
        })
        .map(|p| format!("server peak RSS {p} at {connections} connections")),
        Merit::ConnectionsPerS => {
            pair(&|c| c.connect_p99_us.map(compact)).map(|p| format!("connect p99 {p} µs"))
        }
        _ => pair(&|c| c.server_cpu_per_message_us.map(|us| format!("{us:.2}")))
            .map(|p| format!("server CPU {p} µs/msg")),
    };
    if let Some(extra) = extra {
        line.push_str("; ");
        line.push_str(&extra);
    }
    let starved: Vec<String> = cells
        .iter()
        .filter(|c| c.status == CellStatus::Starved)
        .map(|c| c.server.clone())
        .collect();
    if !starved.is_empty() {
        line.push_str(&format!("; starved: {}", starved.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::fixtures::record;
    use crate::summary::summarize;

    fn cell(server: &str) -> Cell {
        Cell {
            server: server.into(),
            connections: 16,
            size_bytes: 64,
            workload: Some("pingpong".into()),
        }
    }

    fn plan() -> BenchPlan {
        let mut plan = BenchPlan::one_cell(
            16,
            64,
            std::time::Duration::from_secs(1),
            std::time::Duration::from_millis(300),
            &crate::flags::Xtask::try_parse_from(["cargo xtask", "bench"])
                .map(|x| match x.command {
                    crate::flags::Command::Bench(b) => b.run,
                    _ => unreachable!("bench parses as bench"),
                })
                .expect("parses"),
        );
        plan.workloads = crate::workload::select(
            Some(&["pingpong".to_string(), "keepalive".to_string()]),
            &Default::default(),
        )
        .expect("valid");
        plan
    }

    use clap::Parser;

    /// Five trials per server at `rate + trial`, p99 `p99 + trial`, each record passed through
    /// `spoil` (to make it invalid, starved, …).
    fn records(
        servers: &[(&str, f64, f64)],
        spoil: &dyn Fn(&str, &mut TrialRecord),
    ) -> Vec<TrialRecord> {
        let mut all = Vec::new();
        for trial in 0..5u32 {
            for (server, rate, p99) in servers {
                let mut r = record(
                    cell(server),
                    trial,
                    rate + trial as f64,
                    p99 + trial as f64,
                    0,
                );
                spoil(server, &mut r);
                all.push(r);
            }
        }
        all
    }

    fn row(servers: &[(&str, f64, f64)], spoil: &dyn Fn(&str, &mut TrialRecord)) -> MatrixRow {
        let cells: Vec<Cell> = servers.iter().map(|(s, _, _)| cell(s)).collect();
        let records = records(servers, spoil);
        let summaries = summarize(&cells, &records);
        matrix(&plan(), &summaries, &records, &[]).rows.remove(0)
    }

    fn saturated(target: &'static str) -> impl Fn(&str, &mut TrialRecord) {
        move |server, r| {
            if server == target
                && let Some(f) = r.figures.as_mut()
            {
                f.valid = Some(false);
                f.saturated = Some(true);
                f.invalid_reasons = vec![
                    "the load generator was saturated: its busiest thread was busy 97% of the time"
                        .into(),
                ];
            }
        }
    }

    #[test]
    fn a_clean_cell_whose_interval_clears_the_others_wins() {
        let row = row(&[("slow", 100.0, 50.0), ("fast", 200.0, 50.0)], &|_, _| {});
        assert_eq!(row.winner.as_deref(), Some("fast"), "{row:?}");
        assert_eq!(row.confidence, Some(0.9375));
        assert_eq!(row.cells[1].status, CellStatus::Winner);
        assert_eq!(row.cells[0].status, CellStatus::Judged);
        assert!(
            row.why
                .starts_with("fast 202 msg/s vs slow 102 msg/s (1.98×)"),
            "{}",
            row.why
        );
        assert!(
            row.verdict_text().starts_with("fast (intervals of 93%"),
            "{}",
            row.verdict_text()
        );
    }

    /// Trials of `target` invalid with `reason` of `kind`, the loadgen not saturated.
    fn invalid(
        target: &'static str,
        reason: &'static str,
        kind: InvalidKind,
    ) -> impl Fn(&str, &mut TrialRecord) {
        move |server, r| {
            if server == target
                && let Some(f) = r.figures.as_mut()
            {
                f.valid = Some(false);
                f.saturated = Some(false);
                f.invalid_reasons = vec![reason.into()];
                f.invalid_kinds = vec![kind];
            }
        }
    }

    #[test]
    fn the_kinds_say_whether_the_loadgen_bound_a_cell() {
        let servers = [("slow", 100.0, 50.0), ("fast", 200.0, 50.0)];
        // A late loop, whatever the words: the loadgen's limit.
        let late = row(
            &servers,
            &invalid("fast", "the loop was 90 µs late", InvalidKind::Late),
        );
        assert_eq!(late.cells[1].status, CellStatus::LoadgenBound, "{late:?}");
        // Too few samples, worded like the loadgen: not its limit.
        let few = row(
            &servers,
            &invalid(
                "fast",
                "the load generator took 40 samples",
                InvalidKind::FewSamples,
            ),
        );
        assert_ne!(few.cells[1].status, CellStatus::LoadgenBound, "{few:?}");
    }

    #[test]
    fn a_loadgen_bound_cell_never_wins_and_blocks_a_verdict() {
        // The saturated cell measured the most, and a clean slower one would clear the rest.
        let row = row(
            &[
                ("slow", 100.0, 50.0),
                ("mid", 200.0, 50.0),
                ("bound", 300.0, 50.0),
            ],
            &saturated("bound"),
        );
        assert_eq!(row.winner, None, "{row:?}");
        assert_eq!(row.cells[2].status, CellStatus::LoadgenBound);
        let reason = row.no_winner.clone().expect("a reason");
        assert!(reason.starts_with("loadgen-bound bound could be better than measured: the load generator was saturated: its busiest thread was busy 97% of the time (5 of 5 trials)"), "{reason}");
        assert!(
            row.why.contains("bound 302 msg/s (loadgen-bound)"),
            "{}",
            row.why
        );
    }

    #[test]
    fn a_starved_cell_never_wins_but_does_not_block() {
        let starve = |server: &str, r: &mut TrialRecord| {
            if server == "pool"
                && let Some(f) = r.figures.as_mut()
            {
                f.starved = Some(15);
            }
        };
        let row = row(
            &[
                ("pool", 900.0, 50.0),
                ("thread", 200.0, 50.0),
                ("iterative", 100.0, 50.0),
            ],
            &starve,
        );
        assert_eq!(row.cells[0].status, CellStatus::Starved);
        assert_eq!(row.winner.as_deref(), Some("thread"), "{row:?}");
        assert!(row.cells[0].reasons[0].starts_with("15 of 16 connections starved"));
        assert!(row.why.ends_with("; starved: pool"), "{}", row.why);
        // Only starved cells: nothing to judge.
        let all_starved = |_: &str, r: &mut TrialRecord| {
            if let Some(f) = r.figures.as_mut() {
                f.starved = Some(3);
            }
        };
        let row = self::row(
            &[("pool", 900.0, 50.0), ("iterative", 100.0, 50.0)],
            &all_starved,
        );
        assert_eq!(row.winner, None);
        assert_eq!(
            row.no_winner.as_deref(),
            Some("no cell could be judged (starved: pool, iterative)")
        );
    }

    #[test]
    fn overlapping_intervals_and_few_trials_name_no_winner() {
        let row = row(&[("a", 100.0, 50.0), ("b", 102.0, 50.0)], &|_, _| {});
        assert_eq!(row.winner, None);
        assert_eq!(
            row.no_winner.as_deref(),
            Some("intervals overlap: b 102–106 and a 100–104 msg/s")
        );
        // Three trials: 75% intervals, never a verdict however far apart.
        let cells = vec![cell("slow"), cell("fast")];
        let records: Vec<TrialRecord> =
            records(&[("slow", 100.0, 50.0), ("fast", 200.0, 50.0)], &|_, _| {})
                .into_iter()
                .filter(|r| r.trial < 3)
                .collect();
        let summaries = summarize(&cells, &records);
        let row = matrix(&plan(), &summaries, &records, &[]).rows.remove(0);
        assert_eq!(row.winner, None);
        assert!(
            row.no_winner.as_deref().is_some_and(
                |r| r.starts_with("too few trials: 3 per cell (intervals of 75% coverage)")
            ),
            "{row:?}"
        );
    }

    #[test]
    fn latency_workloads_are_won_by_the_lowest_p99_with_memory_in_the_why() {
        let keepalive = |server: &str| Cell {
            workload: Some("keepalive".into()),
            connections: 1000,
            ..cell(server)
        };
        let cells = vec![keepalive("thread"), keepalive("event-loop")];
        let mut records = Vec::new();
        for trial in 0..5u32 {
            let mut thread = record(cells[0].clone(), trial, 20_000.0, 470.0 + trial as f64, 0);
            thread.server_peak_rss_kib = Some(23_040);
            let mut event_loop = record(cells[1].clone(), trial, 20_000.0, 203.0 + trial as f64, 0);
            event_loop.server_peak_rss_kib = Some(3_789);
            records.extend([thread, event_loop]);
        }
        let summaries = summarize(&cells, &records);
        let row = matrix(&plan(), &summaries, &records, &[]).rows.remove(0);
        assert_eq!(row.merit, Merit::P99Us);
        assert_eq!(row.winner.as_deref(), Some("event-loop"), "{row:?}");
        assert_eq!(
            row.why,
            "event-loop p99 205 µs vs thread p99 472 µs; server peak RSS 3.7 MiB vs 22.5 MiB at 1000 connections"
        );
    }

    #[test]
    fn rows_follow_the_workload_not_just_connections_and_size() {
        let pingpong = cell("a");
        let other = Cell {
            workload: Some("keepalive".into()),
            ..cell("a")
        };
        let cells = vec![pingpong, other];
        let records: Vec<TrialRecord> = cells
            .iter()
            .flat_map(|c| (0..5).map(|t| record(c.clone(), t, 100.0, 50.0, 0)))
            .collect();
        let summaries = summarize(&cells, &records);
        let file = matrix(&plan(), &summaries, &records, &[]);
        assert_eq!(file.rows.len(), 2);
        assert_eq!(file.rows[0].label(), "pingpong c=16 64B");
        assert_eq!(file.rows[1].label(), "keepalive c=16 64B");
        assert_eq!(
            file.rows[0].no_winner.as_deref(),
            Some("only one server in the comparison")
        );
        assert_eq!(file.servers, ["a"]);
    }
}
