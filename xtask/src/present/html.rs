//! `index.html` of a run directory: the title, the manifest's facts, the command's own body
//! (the bench table, the capacity answer and steps, the regress verdict and trials), the plots
//! and links to the files. Relative paths only, so the page opens from disk.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use anyhow::{Context, Result};

use super::format::{format_count, format_us};
use super::table::{Exporter, WINNER_NOTE, export_to_vec, no_star_notes, table_rows};
use super::text::{CapacityAnswer, unmeasured_line, verdict_line};
use crate::record::capacity::CapacityFile;
use crate::record::manifest::Manifest;
use crate::record::regress::{RegressFile, Verdict};
use crate::record::summary::CellSummary;

/// Escapes text for HTML.
pub fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes `index.html`: title, manifest facts, the given body, and the images (relative paths,
/// so the page opens from disk).
pub fn write_index(run_dir: &Path, title: &str, body: &str, images: &[&str]) -> Result<()> {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{0}</title>\n<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left}}pre{{background:#f4f4f4;padding:8px;overflow-x:auto}}img{{max-width:100%}}</style></head><body>\n<h1>{0}</h1>\n",
        html_escape(title)
    );
    if let Ok(manifest) = Manifest::read(run_dir) {
        let _ = write!(
            html,
            "<p>{} on <b>{}</b> ({} cores, Linux {}), commit {}{}, started {}.</p>\n<pre>{}</pre>\n",
            html_escape(&manifest.command),
            html_escape(&manifest.host),
            manifest.cores,
            html_escape(&manifest.kernel),
            html_escape(manifest.git_commit.as_deref().unwrap_or("unknown")),
            if manifest.git_dirty == Some(true) {
                " (dirty)"
            } else {
                ""
            },
            html_escape(&manifest.started_at),
            html_escape(&manifest.command_line.join(" "))
        );
    }
    html.push_str(body);
    for image in images {
        if run_dir.join(image).exists() {
            let _ = write!(
                html,
                "\n<p><img src=\"{0}\" alt=\"{0}\"></p>",
                html_escape(image)
            );
        }
    }
    html.push_str("\n<p>Files: <a href=\"manifest.json\">manifest.json</a>");
    for file in [
        "summary.md",
        "summary.csv",
        "matrix.json",
        "trials.json",
        "capacity.json",
        "regress.json",
    ] {
        if run_dir.join(file).exists() {
            let _ = write!(html, ", <a href=\"{file}\">{file}</a>");
        }
    }
    html.push_str("</p>\n</body></html>\n");
    std::fs::write(run_dir.join("index.html"), html).context("writing index.html")
}

/// The table of `index.html`: a header row, one row per cell, and the winner note when a cell
/// won.
#[derive(Debug, Default)]
pub struct HtmlTable;

impl Exporter for HtmlTable {
    fn export(&self, summaries: &[CellSummary], out: &mut dyn io::Write) -> io::Result<()> {
        let (header, rows) = table_rows(summaries);
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        writeln!(out, "<table>")?;
        for (tag, row) in std::iter::once(("th", header)).chain(rows.into_iter().map(|r| ("td", r)))
        {
            write!(out, "<tr>")?;
            for cell in row {
                write!(out, "<{tag}>{}</{tag}>", html_escape(&cell))?;
            }
            writeln!(out, "</tr>")?;
        }
        writeln!(out, "</table>")?;
        if summaries.iter().any(|s| s.winner) {
            writeln!(out, "<p>{}.</p>", html_escape(WINNER_NOTE))?;
        }
        for note in no_star_notes(summaries) {
            writeln!(out, "<p>{}.</p>", html_escape(&note))?;
        }
        Ok(())
    }
}

/// `index.html` of a bench run: `before` (the matrix), the summary table and the plots.
pub fn bench_index(
    run_dir: &Path,
    summaries: &[CellSummary],
    before: &str,
    images: &[&str],
) -> Result<()> {
    let table = String::from_utf8_lossy(&export_to_vec(&HtmlTable, summaries)).into_owned();
    let body = format!("{before}<h2>Every cell</h2>\n{table}");
    write_index(run_dir, "echolab bench", &body, images)
}

/// `index.html` of a capacity run: the answer, every step, and `capacity.svg`.
pub fn capacity_index(run_dir: &Path, file: &CapacityFile) -> Result<()> {
    write_index(
        run_dir,
        &format!("capacity of {}", file.server.name),
        &format!(
            "<p><b>{}</b></p>{}{}",
            html_escape(&CapacityAnswer::of(file).to_string()),
            unmeasured_line(file)
                .map(|line| format!("<p>{}</p>", html_escape(&line)))
                .unwrap_or_default(),
            capacity_steps_html(file)
        ),
        &["capacity.svg"],
    )
}

fn capacity_steps_html(file: &CapacityFile) -> String {
    let mut html = String::from(
        "<table><tr><th>target msg/s</th><th>achieved msg/s</th><th>p50 µs</th><th>p99 µs</th><th>errors</th><th>loop lag p99 µs</th><th>result</th></tr>",
    );
    for step in &file.steps {
        let latency = |key: &str| {
            step.latency_us
                .get(key)
                .and_then(serde_json::Value::as_f64)
                .map_or("-".into(), format_us)
        };
        let reasons: Vec<String> = step.reasons.iter().map(ToString::to_string).collect();
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            format_count(step.target_per_s as f64),
            format_count(step.achieved_per_s),
            latency("p50"),
            latency("p99"),
            step.errors,
            step.loop_lag_p99_us
                .map_or("-".into(), |lag| format_us(lag as f64)),
            match (step.pass, step.counted_as.as_deref()) {
                (true, _) if step.valid == Some(false) => super::text::LATE_PASS.to_string(),
                (true, _) => "pass".to_string(),
                (false, Some("no vote")) => {
                    html_escape(&format!("no vote: {}", reasons.join("; ")))
                }
                (false, _) => html_escape(&format!("fail: {}", reasons.join("; "))),
            }
        );
    }
    html.push_str("</table>");
    html
}

/// `index.html` of a regress run: the verdict (or why there is none yet), the looks, and
/// every trial.
pub fn regress_index(run_dir: &Path, file: &RegressFile) -> Result<()> {
    let mut body = format!("<p><b>{}</b></p>\n", html_escape(&verdict_line(file)));
    if file.verdict == Some(Verdict::Inconclusive) {
        body.push_str(
            "<p>⚠️ inconclusive (exit 3): the pairs or the time ran out before the interval could \
             decide; more pairs (<code>--trials</code>, <code>--budget</code>) or a quieter machine \
             would.</p>\n",
        );
    }
    if !file.looks.is_empty() {
        body.push_str(
            "<table><tr><th>pairs</th><th>change</th><th>interval</th><th>smallest detectable rise</th><th>look says</th></tr>",
        );
        for look in &file.looks {
            body.push_str("<tr>");
            for cell in look.cells() {
                let _ = write!(body, "<td>{cell}</td>");
            }
            body.push_str("</tr>");
        }
        body.push_str("</table>\n");
    }
    body.push_str(
        "<table><tr><th>pair</th><th>side</th><th>value</th><th>errors</th><th>CPU µs/msg</th><th>CPU share</th></tr>",
    );
    for trial in &file.trials {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            trial.pair,
            trial.side,
            trial.value,
            trial.errors,
            trial
                .cpu_per_message_us
                .map_or("-".into(), |cpu| format!("{cpu:.3}")),
            trial
                .cpu_share
                .map_or("-".into(), |share| format!("{:.0}%", share * 100.0))
        );
    }
    body.push_str("</table>");
    write_index(run_dir, "echolab regress", &body, &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::table::MarkdownTable;
    use crate::summary::fixtures::{cell, fixed_summaries, record};
    use crate::summary::summarize;

    #[test]
    fn the_html_table_has_the_markdown_tables_cells() {
        let cells = vec![cell("slow", 1), cell("fast", 1)];
        let records: Vec<_> = (0..5)
            .flat_map(|t| {
                [
                    record(cells[0].clone(), t, 100.0 + t as f64, 10.0, 0),
                    record(cells[1].clone(), t, 200.0 + t as f64, 10.0, 0),
                ]
            })
            .collect();
        for summaries in [fixed_summaries(), summarize(&cells, &records)] {
            let markdown =
                String::from_utf8(export_to_vec(&MarkdownTable, &summaries)).expect("utf-8");
            let html = String::from_utf8(export_to_vec(&HtmlTable, &summaries)).expect("utf-8");
            let markdown_rows: Vec<Vec<String>> = markdown
                .lines()
                .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
                .map(|l| {
                    l.trim_matches('|')
                        .split(" | ")
                        .map(|c| html_escape(c.trim()))
                        .collect()
                })
                .collect();
            let html_rows: Vec<Vec<String>> = html
                .lines()
                .filter(|l| l.starts_with("<tr>"))
                .map(|l| {
                    let inner = l
                        .strip_prefix("<tr>")
                        .and_then(|l| l.strip_suffix("</tr>"))
                        .unwrap_or_default()
                        .replace("td>", "th>");
                    inner
                        .split("</th>")
                        .filter_map(|c| c.strip_prefix("<th>"))
                        .map(String::from)
                        .collect()
                })
                .collect();
            assert_eq!(html_rows, markdown_rows, "{html}");
            assert!(html.starts_with("<table>\n<tr><th>server</th>"), "{html}");
            assert_eq!(
                html.contains("<p>* fastest"),
                summaries.iter().any(|s| s.winner),
                "{html}"
            );
        }
    }
}
