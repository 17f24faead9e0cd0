//! The bench summary as tables, one [`Exporter`] per format (hyperfine's export shape):
//! [`TerminalTable`] (aligned text), [`MarkdownTable`] (`summary.md`), [`CsvTable`]
//! (`summary.csv`), [`JsonSummary`] (`summary.json`), and `HtmlTable` (the table of
//! `index.html`, in the `html` module beside this one). Each writes to any `Write`, so tests
//! read them from a `Vec<u8>`.

use std::io::{self, Write};
use std::path::Path;

use anyhow::Result;

use super::format::{format_count, format_cpu, format_rss, format_us};
use super::text::{cost_name, verdict_line};
use crate::record::calibration::CalibrationFile;
use crate::record::regress::{RegressFile, Verdict};
use crate::record::summary::CellSummary;
use crate::record::write_atomic;
use crate::stats::median;

/// One output format of the summary.
pub trait Exporter {
    /// Writes the whole summary.
    fn export(&self, summaries: &[CellSummary], out: &mut dyn Write) -> io::Result<()>;
}

pub(super) fn table_rows(summaries: &[CellSummary]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let (mut header, mut rows) = cell_rows(summaries);
    // Named workloads: the workload is part of the cell, so it gets a column of its own.
    if summaries.iter().any(|s| s.cell.workload.is_some()) {
        header.insert(1, WORKLOAD_COLUMN);
        for (row, summary) in rows.iter_mut().zip(summaries) {
            row.insert(1, summary.cell.workload.clone().unwrap_or_default());
        }
    }
    (header, rows)
}

/// The heading of the workload column (left-aligned like the server's).
const WORKLOAD_COLUMN: &str = "workload";

fn cell_rows(summaries: &[CellSummary]) -> (Vec<&'static str>, Vec<Vec<String>>) {
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
            if s.no_star_because.is_some() {
                note.push_str(" fastest median, no star (below)");
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

pub(super) const WINNER_NOTE: &str = "* fastest for its workload, connection count and size, with an \
     interval of ≥ 90% coverage that overlaps no other's";

/// One line per group whose highest median may not have the star, saying why.
pub(super) fn no_star_notes(summaries: &[CellSummary]) -> Vec<String> {
    summaries
        .iter()
        .filter_map(|s| {
            s.no_star_because.as_ref().map(|why| {
                format!(
                    "no star at {}{} connections, {} B: the highest median, {}, had {why}",
                    s.cell
                        .workload
                        .as_deref()
                        .map_or(String::new(), |w| format!("{w}, ")),
                    s.cell.connections,
                    s.cell.size_bytes,
                    s.cell.server
                )
            })
        })
        .collect()
}

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
        let left_aligned = |column: usize| {
            column == 0 || column == header.len() - 1 || header[column] == WORKLOAD_COLUMN
        };
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
        write_notes(summaries, out, "")
    }
}

/// The notes under a table: the winner's mark, why a fastest cell has no star, the interval's
/// coverage; each line after `before` (a blank line between paragraphs in Markdown).
fn write_notes(summaries: &[CellSummary], out: &mut dyn Write, before: &str) -> io::Result<()> {
    if summaries.iter().any(|s| s.winner) {
        writeln!(out, "{before}{WINNER_NOTE}")?;
    }
    for note in no_star_notes(summaries) {
        writeln!(out, "{before}{note}")?;
    }
    writeln!(out, "{before}{COVERAGE_NOTE}")
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
                if column == 0 || column == header.len() - 1 || header[column] == WORKLOAD_COLUMN {
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
        write_notes(summaries, out, "\n")
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

/// The summary as pretty JSON, a top-level array of [`CellSummary`] (`summary.json`).
#[derive(Debug, Default)]
pub struct JsonSummary;

impl Exporter for JsonSummary {
    fn export(&self, summaries: &[CellSummary], out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, summaries)?;
        writeln!(out)
    }
}

/// The summary files of a bench run directory and the exporter that writes each.
pub const SUMMARY_FILES: [(&str, &dyn Exporter); 3] = [
    ("summary.md", &MarkdownTable),
    ("summary.csv", &CsvTable),
    ("summary.json", &JsonSummary),
];

/// Writes `summary.md`, `summary.csv` and `summary.json` into the run directory.
pub fn write_summaries(run_dir: &Path, summaries: &[CellSummary]) -> Result<()> {
    for (name, exporter) in SUMMARY_FILES {
        write_atomic(&run_dir.join(name), &export_to_vec(exporter, summaries))?;
    }
    Ok(())
}

/// What `exporter` writes for `summaries`, as bytes.
pub fn export_to_vec(exporter: &dyn Exporter, summaries: &[CellSummary]) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = exporter.export(summaries, &mut bytes);
    bytes
}

/// The verdict of a regress run as Markdown (`summary.md`; the perf-gate workflow appends it
/// to the job's step summary): a headline, a table of the looks, and the design.
pub fn regress_markdown(file: &RegressFile) -> String {
    let headline = match file.verdict {
        Some(Verdict::Slower) => "❌ **slower**",
        Some(Verdict::Faster) => "✅ **faster**",
        Some(Verdict::NoChange) => "✅ **no change**",
        Some(Verdict::Inconclusive) => {
            "⚠️ **inconclusive** (exit 3): undecided when the pairs or the time ran out"
        }
        None => "⏳ no verdict yet",
    };
    let mut out = format!(
        "### regress: {} vs {} ({})\n\n{headline}\n\n`{}`\n\n",
        file.candidate.server.name,
        file.baseline.server.name,
        cost_name(file.metric),
        verdict_line(file)
    );
    if !file.looks.is_empty() {
        out.push_str(
            "| pairs | change | interval | smallest detectable rise | look says |\n|---:|---:|---:|---:|---|\n",
        );
        for look in &file.looks {
            out.push_str(&format!("| {} |\n", look.cells().join(" | ")));
        }
    }
    if let Some(design) = &file.design {
        out.push_str(&format!(
            "\nDesign: at most {:.0}% false alarms over up to {} looks ({:.3}% per side of each \
             interval), a rise of {:.1}% caught with ≥ {:.0}% power where the noise allows; \
             `slower` needs an estimate ≥ {:.1}%. {} pairs run, {} excluded.\n",
            design.false_alarm * 100.0,
            design.looks_planned,
            design.alpha_per_look * 100.0,
            file.threshold * 100.0,
            design.power * 100.0,
            design.floor * 100.0,
            file.pairs_run(),
            file.excluded_pairs.len()
        ));
    }
    out
}

/// The calibration's table (`calibration.md`): per condition, how the regress runs ended,
/// their false-alarm or detection rate, and their median pairs, time and detectable rise.
pub fn calibration_markdown(file: &CalibrationFile) -> String {
    let mut out = format!(
        "Fixture: {} echo server, {} µs CPU per message at the regress load; regress flags: `{}`\n\n",
        file.strategy,
        file.base_cpu_per_message_us
            .map_or("-".into(), |us| format!("{us:.3}")),
        if file.regress_args.is_empty() {
            "(defaults)".to_string()
        } else {
            file.regress_args.join(" ")
        }
    );
    out.push_str(
        "| candidate | extra CPU per 64 B | runs | slower | no change | faster | inconclusive | rate of `slower` | median pairs | median time | median detectable rise |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for condition in &file.conditions {
        let runs = condition.runs.len();
        let of = |pick: &dyn Fn(&crate::record::calibration::CalibrationRun) -> Option<f64>| {
            median(&condition.runs.iter().filter_map(pick).collect::<Vec<_>>())
        };
        let slower = condition.count(Verdict::Slower);
        out.push_str(&format!(
            "| {} | {} ns | {runs} | {slower} | {} | {} | {} | {} | {} | {} s | {} |\n",
            if condition.rise == 0.0 {
                "itself".to_string()
            } else {
                format!("itself +{:.0}%", condition.rise * 100.0)
            },
            condition.cost_per_64_bytes_ns,
            condition.count(Verdict::NoChange),
            condition.count(Verdict::Faster),
            condition.count(Verdict::Inconclusive),
            if runs == 0 {
                "-".to_string()
            } else {
                format!(
                    "{:.0}% ({})",
                    slower as f64 / runs as f64 * 100.0,
                    if condition.rise == 0.0 {
                        "false alarms"
                    } else {
                        "detected"
                    }
                )
            },
            format_count(of(&|run| Some(run.pairs_run as f64))),
            format_count(of(&|run| Some(run.seconds))),
            match of(&|run| run.minimum_detectable) {
                detectable if detectable.is_finite() => format!("{:.1}%", detectable * 100.0),
                _ => "-".to_string(),
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::fixtures::{cell, fixed_summaries, record};
    use crate::summary::summarize;

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
    fn named_workloads_get_a_column_of_their_own() {
        let mut summaries = fixed_summaries();
        summaries[0].cell.workload = Some("churn".into());
        let text = String::from_utf8(export_to_vec(&TerminalTable, &summaries)).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("server     workload  conns"), "{text}");
        assert!(lines[1].starts_with("iterative  churn        16"), "{text}");
        let markdown = String::from_utf8(export_to_vec(&MarkdownTable, &summaries)).expect("utf-8");
        assert!(
            markdown.contains("| iterative | churn | 16 | 64 |"),
            "{markdown}"
        );
        assert!(markdown.contains("| pool |  | 16 | 64 |"), "{markdown}");
        // Without workloads the table is as it always was.
        let plain =
            String::from_utf8(export_to_vec(&TerminalTable, &fixed_summaries())).expect("utf-8");
        assert!(!plain.contains("workload"), "{plain}");
    }
}
