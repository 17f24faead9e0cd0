//! Per-cell summaries of bench trials and their presentation.
//!
//! *Compute*: [`summarize`] turns trial records into one [`CellSummary`] per cell (median,
//! spread, an order-statistic interval of the median with its real coverage, latency, errors,
//! server CPU and memory) and marks a winner per (connections, size) only where intervals of at
//! least [`MIN_COVERAGE_FOR_WINNER`] coverage do not overlap. *Present*: one [`Exporter`] per
//! format — [`TerminalTable`], [`MarkdownTable`], [`CsvTable`] — each writing to any `Write`.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::loadgen_report::ReportFigures;
use crate::stats::{self, Interval};

/// One cell of the bench matrix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cell {
    /// A strategy name (`pool`) or an external server's name.
    pub server: String,
    pub connections: u32,
    pub size_bytes: u32,
}

impl Cell {
    /// A file-name-safe id, e.g. `pool-c16-s64`.
    pub fn id(&self) -> String {
        let server: String = self
            .server
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{server}-c{}-s{}", self.connections, self.size_bytes)
    }
}

/// Everything recorded about one trial (one line of `trials.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Position in the run's (shuffled) order, from 0.
    pub order: usize,
    pub cell: Cell,
    /// Trial number within the cell, from 0.
    pub trial: u32,
    /// Paths relative to the run directory.
    pub loadgen_json: String,
    pub loadgen_log: String,
    pub server_log: String,
    pub server_stats_json: Option<String>,
    pub loadgen_exit_code: Option<i32>,
    pub figures: Option<ReportFigures>,
    /// Server CPU (user+system) during the measured window, seconds.
    pub server_cpu_s: Option<f64>,
    pub server_cpu_per_message_us: Option<f64>,
    /// Server peak RSS (`VmHWM`) at the end of the trial, KiB.
    pub server_peak_rss_kib: Option<u64>,
    /// Worker threads / loops the server reported (`workers` of its `--stats-json`); built-in
    /// strategies only. Shows when pinning shrank a default pool to one worker.
    #[serde(default)]
    pub server_workers: Option<u64>,
    /// Why the trial produced no figures (server failed to start, loadgen crashed, …).
    pub failure: Option<String>,
}

/// One row of the summary table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSummary {
    pub cell: Cell,
    /// Trials with a report.
    pub trials: usize,
    pub failed_trials: usize,
    /// Trials whose loadgen said `valid: false`.
    pub invalid_trials: usize,
    /// Most connections starved in any trial (loadgen `connections.starved`).
    #[serde(default)]
    pub starved_connections: Option<u64>,
    pub messages_per_s_median: f64,
    pub messages_per_s_spread_percent: f64,
    /// Order-statistic (sign-test) interval of the median. The name is kept for compatibility;
    /// its real coverage is `messages_per_s_ci_coverage` (75% at 3 trials, 87.5% at 4, 93.75%
    /// at 5, at least 95% from 6).
    pub messages_per_s_ci95: Interval,
    /// Coverage (0..=1) of `messages_per_s_ci95`; 0 in summaries written before it existed.
    #[serde(default)]
    pub messages_per_s_ci_coverage: f64,
    /// Medians over trials of each trial's percentile.
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    pub server_cpu_per_message_us: Option<f64>,
    pub server_peak_rss_kib: Option<u64>,
    /// Most workers the server reported in any trial (built-in strategies).
    #[serde(default)]
    pub server_workers: Option<u64>,
    /// Highest median for its (connections, size) and its interval overlaps no other's.
    pub winner: bool,
}

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
            }
        })
        .collect();
    mark_winners(&mut summaries);
    summaries
}

/// Intervals with less coverage than this (fewer than 5 trials) are too weak to name a winner:
/// at 3 trials two identical servers would get a "winner" about one time in ten.
pub const MIN_COVERAGE_FOR_WINNER: f64 = 0.90;

/// Marks, per (connections, size), the cell with the highest median as winner when its
/// interval overlaps no other cell's interval in that group and every interval there has at
/// least [`MIN_COVERAGE_FOR_WINNER`] coverage. Only a clean cell (no failed or invalid trial, no
/// errors, no starved connection) can win.
pub fn mark_winners(summaries: &mut [CellSummary]) {
    let groups: Vec<(u32, u32)> = summaries
        .iter()
        .map(|s| (s.cell.connections, s.cell.size_bytes))
        .collect();
    for group in &groups {
        let members: Vec<usize> = (0..summaries.len())
            .filter(|&i| (summaries[i].cell.connections, summaries[i].cell.size_bytes) == *group)
            .filter(|&i| summaries[i].trials > 0)
            .collect();
        if members.len() < 2
            || members
                .iter()
                .any(|&i| summaries[i].messages_per_s_ci_coverage < MIN_COVERAGE_FOR_WINNER)
        {
            continue;
        }
        // A cell with failed or invalid trials, errors or starved connections measured
        // something other than an echo server doing its job: it may not win.
        let Some(&best) =
            members
                .iter()
                .filter(|&&i| is_clean(&summaries[i]))
                .max_by(|&&a, &&b| {
                    summaries[a]
                        .messages_per_s_median
                        .total_cmp(&summaries[b].messages_per_s_median)
                })
        else {
            continue;
        };
        let separated = members.iter().filter(|&&i| i != best).all(|&i| {
            !summaries[best]
                .messages_per_s_ci95
                .overlaps(&summaries[i].messages_per_s_ci95)
        });
        summaries[best].winner = separated;
    }
}

/// True when every trial of the cell produced a valid, error-free report with no starved
/// connection.
fn is_clean(summary: &CellSummary) -> bool {
    summary.failed_trials == 0
        && summary.invalid_trials == 0
        && summary.errors == 0
        && summary.starved_connections.unwrap_or(0) == 0
}

/// One output format of the summary.
pub trait Exporter {
    /// Writes the whole summary.
    fn export(&self, summaries: &[CellSummary], out: &mut dyn Write) -> io::Result<()>;
}

/// `123,456` for a rate; `-` for NaN.
pub fn format_count(value: f64) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// Latency in µs: one decimal below 100, whole numbers above; `-` for NaN.
pub fn format_us(value: f64) -> String {
    if !value.is_finite() {
        "-".into()
    } else if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

fn format_rss(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0))
}

fn format_cpu(us: Option<f64>) -> String {
    us.map_or("-".into(), |us| format!("{us:.2}"))
}

fn table_rows(summaries: &[CellSummary]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "server",
        "conns",
        "size",
        "msg/s (median)",
        "spread",
        "CI of median (cover.)",
        "p50 µs",
        "p99 µs",
        "errors",
        "cpu µs/msg",
        "peak RSS",
        "",
    ];
    let rows = summaries
        .iter()
        .map(|s| {
            let mut note = String::new();
            if s.winner {
                note.push('*');
            }
            if s.failed_trials > 0 {
                note.push_str(&format!(" {} failed", s.failed_trials));
            }
            if s.invalid_trials > 0 {
                note.push_str(&format!(" {} invalid", s.invalid_trials));
            }
            if let Some(starved) = s.starved_connections.filter(|&n| n > 0) {
                note.push_str(&format!(" {starved} starved"));
            }
            vec![
                // 0 means "not a worker-pool strategy" (iterative, thread): nothing to show.
                match s.server_workers.filter(|&workers| workers > 0) {
                    Some(workers) => format!("{} (w={workers})", s.cell.server),
                    None => s.cell.server.clone(),
                },
                s.cell.connections.to_string(),
                s.cell.size_bytes.to_string(),
                format_count(s.messages_per_s_median),
                if s.trials >= 2 && s.messages_per_s_spread_percent.is_finite() {
                    format!("{:.1}%", s.messages_per_s_spread_percent)
                } else {
                    "-".into()
                },
                if s.trials > 1 {
                    format!(
                        "{}–{} ({:.0}%)",
                        format_count(s.messages_per_s_ci95.low),
                        format_count(s.messages_per_s_ci95.high),
                        (s.messages_per_s_ci_coverage * 100.0).floor()
                    )
                } else {
                    "-".into()
                },
                format_us(s.p50_us),
                format_us(s.p99_us),
                s.errors.to_string(),
                format_cpu(s.server_cpu_per_message_us),
                format_rss(s.server_peak_rss_kib),
                note.trim().to_string(),
            ]
        })
        .collect();
    (header, rows)
}

const WINNER_NOTE: &str = "* fastest for its connection count and size, with an interval of \
     ≥ 90% coverage that overlaps no other's";

const COVERAGE_NOTE: &str = "CI of median: order-statistic (sign-test) interval; its coverage \
     is 75% at 3 trials, 87.5% at 4, 93.75% at 5, ≥ 95% from 6; winners need ≥ 90%";

/// Aligned plain-text table for the terminal.
#[derive(Debug, Default)]
pub struct TerminalTable;

impl Exporter for TerminalTable {
    fn export(&self, summaries: &[CellSummary], out: &mut dyn Write) -> io::Result<()> {
        let (header, rows) = table_rows(summaries);
        let widths: Vec<usize> = (0..header.len())
            .map(|column| {
                rows.iter()
                    .map(|row| row[column].chars().count())
                    .chain([header[column].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let left_aligned = |column: usize| column == 0 || column == header.len() - 1;
        let render = |cells: Vec<String>| -> String {
            let line: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(column, text)| {
                    let pad = " ".repeat(widths[column] - text.chars().count());
                    if left_aligned(column) {
                        format!("{text}{pad}")
                    } else {
                        format!("{pad}{text}")
                    }
                })
                .collect();
            line.join("  ").trim_end().to_string()
        };
        writeln!(
            out,
            "{}",
            render(header.iter().map(|h| h.to_string()).collect())
        )?;
        for row in rows {
            writeln!(out, "{}", render(row))?;
        }
        if summaries.iter().any(|s| s.winner) {
            writeln!(out, "{WINNER_NOTE}")?;
        }
        writeln!(out, "{COVERAGE_NOTE}")?;
        Ok(())
    }
}

/// GitHub-flavoured Markdown table (`summary.md`).
#[derive(Debug, Default)]
pub struct MarkdownTable;

impl Exporter for MarkdownTable {
    fn export(&self, summaries: &[CellSummary], out: &mut dyn Write) -> io::Result<()> {
        let (header, rows) = table_rows(summaries);
        writeln!(out, "| {} |", header.join(" | "))?;
        let rule: Vec<&str> = (0..header.len())
            .map(|column| {
                if column == 0 || column == header.len() - 1 {
                    "---"
                } else {
                    "---:"
                }
            })
            .collect();
        writeln!(out, "|{}|", rule.join("|"))?;
        for row in rows {
            writeln!(out, "| {} |", row.join(" | "))?;
        }
        if summaries.iter().any(|s| s.winner) {
            writeln!(out, "\n{WINNER_NOTE}")?;
        }
        writeln!(out, "\n{COVERAGE_NOTE}")?;
        Ok(())
    }
}

/// Machine-readable CSV (`summary.csv`), plain numbers, one row per cell.
#[derive(Debug, Default)]
pub struct CsvTable;

impl Exporter for CsvTable {
    fn export(&self, summaries: &[CellSummary], out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "server,connections,size_bytes,trials,failed_trials,invalid_trials,messages_per_s_median,\
             messages_per_s_spread_percent,messages_per_s_ci95_low,messages_per_s_ci95_high,\
             messages_per_s_ci_coverage,p50_us,p99_us,errors,server_cpu_per_message_us,server_peak_rss_kib,winner"
        )?;
        let optional = |value: Option<f64>| value.map_or(String::new(), |v| format!("{v:.3}"));
        for s in summaries {
            let server = if s.cell.server.contains([',', '"']) {
                format!("\"{}\"", s.cell.server.replace('"', "\"\""))
            } else {
                s.cell.server.clone()
            };
            writeln!(
                out,
                "{server},{},{},{},{},{},{:.1},{:.2},{:.1},{:.1},{:.4},{:.1},{:.1},{},{},{},{}",
                s.cell.connections,
                s.cell.size_bytes,
                s.trials,
                s.failed_trials,
                s.invalid_trials,
                s.messages_per_s_median,
                s.messages_per_s_spread_percent,
                s.messages_per_s_ci95.low,
                s.messages_per_s_ci95.high,
                s.messages_per_s_ci_coverage,
                s.p50_us,
                s.p99_us,
                s.errors,
                optional(s.server_cpu_per_message_us),
                s.server_peak_rss_kib
                    .map_or(String::new(), |k| k.to_string()),
                s.winner
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(server: &str, connections: u32) -> Cell {
        Cell {
            server: server.into(),
            connections,
            size_bytes: 64,
        }
    }

    fn record(cell: Cell, trial: u32, rate: f64, p99: f64, errors: u64) -> TrialRecord {
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
                saturated: None,
                achieved_ratio: None,
                target_per_s: None,
                starved: None,
            }),
            server_cpu_s: Some(0.5),
            server_cpu_per_message_us: Some(rate / 10_000.0),
            server_peak_rss_kib: Some(2048 + trial as u64),
            server_workers: None,
            failure: None,
        }
    }

    fn fixed_summaries() -> Vec<CellSummary> {
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
                r.failure = Some("server exited".into());
            }),
        ];
        for (what, spoil) in spoilers {
            let mut records = clean(6);
            // The fast cell's sixth trial is bad; five good ones remain for its interval.
            spoil(&mut records[11]);
            let summaries = summarize(&cells, &records);
            assert!(!summaries[1].winner, "{what}: {summaries:?}");
        }
    }

    #[test]
    fn failed_trials_are_counted_not_averaged() {
        let cells = vec![cell("pool", 1)];
        let mut failed = record(cells[0].clone(), 1, 0.0, 0.0, 0);
        failed.figures = None;
        failed.failure = Some("server exited".into());
        let records = vec![record(cells[0].clone(), 0, 500.0, 10.0, 0), failed];
        let summaries = summarize(&cells, &records);
        assert_eq!(summaries[0].trials, 1);
        assert_eq!(summaries[0].failed_trials, 1);
        assert_eq!(summaries[0].messages_per_s_median, 500.0);
    }

    #[test]
    fn terminal_table_is_aligned_and_complete() {
        let mut out = Vec::new();
        TerminalTable
            .export(&fixed_summaries(), &mut out)
            .expect("writes to a Vec");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[4].contains("75% at 3 trials"), "{text}");
        assert!(lines[2].contains("(75%)"), "{text}");
        assert!(lines[0].starts_with("server"), "{text}");
        assert!(lines[0].contains("msg/s (median)") && lines[0].contains("p99 µs"));
        assert!(lines[1].starts_with("iterative"));
        assert!(lines[2].starts_with("pool") && lines[2].contains("305"));
        // Right-aligned numeric columns end at the same character position.
        let end_of = |line: &str, needle: &str| {
            line.char_indices()
                .find(|(i, _)| line[*i..].starts_with(needle))
                .map(|(i, _)| line[..i].chars().count() + needle.chars().count())
        };
        assert_eq!(end_of(lines[0], "conns"), end_of(lines[1], " 16"));
        assert_eq!(end_of(lines[1], " 16"), end_of(lines[2], " 16"));
    }

    #[test]
    fn markdown_and_csv_have_one_row_per_cell() {
        let summaries = fixed_summaries();
        let mut markdown = Vec::new();
        MarkdownTable
            .export(&summaries, &mut markdown)
            .expect("writes");
        let markdown = String::from_utf8(markdown).expect("utf-8");
        assert_eq!(markdown.lines().filter(|l| l.starts_with('|')).count(), 5);
        assert!(markdown.contains("| pool | 16 | 64 | 305 |"), "{markdown}");

        let mut csv = Vec::new();
        CsvTable.export(&summaries, &mut csv).expect("writes");
        let csv = String::from_utf8(csv).expect("utf-8");
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4);
        let columns = lines[0].split(',').count();
        assert!(
            lines.iter().all(|l| l.split(',').count() == columns),
            "{csv}"
        );
        assert!(
            lines[1].starts_with("iterative,16,64,3,0,0,100.0,20.00,"),
            "{csv}"
        );
    }

    #[test]
    fn the_table_shows_the_servers_real_worker_count() {
        let cells = vec![cell("pool", 16)];
        let mut records = vec![record(cells[0].clone(), 0, 100.0, 10.0, 0)];
        records[0].server_workers = Some(1);
        let summaries = summarize(&cells, &records);
        assert_eq!(summaries[0].server_workers, Some(1));
        let mut out = Vec::new();
        TerminalTable.export(&summaries, &mut out).expect("writes");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("pool (w=1)")),
            "{text}"
        );
        // Strategies without a pool report 0 workers: shown without a count.
        records[0].server_workers = Some(0);
        let mut out = Vec::new();
        TerminalTable
            .export(&summarize(&cells, &records), &mut out)
            .expect("writes");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(!text.contains("(w=0)"), "{text}");
    }

    #[test]
    fn counts_are_grouped() {
        assert_eq!(format_count(1_234_567.4), "1,234,567");
        assert_eq!(format_count(999.0), "999");
        assert_eq!(format_count(f64::NAN), "-");
        assert_eq!(format_us(12.345), "12.3");
        assert_eq!(format_us(1234.4), "1234");
    }
}
