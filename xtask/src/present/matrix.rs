//! "Which strategy for which workload": the matrix of a bench run (`record::matrix`) as the
//! terminal shows it ([`terminal`]), as a section of `summary.md` ([`markdown`]), as columns of
//! `summary.csv` ([`csv_with_judgement`]), as a table of `index.html` ([`html`]) and as
//! `matrix.svg` ([`svg`]). Rows are workloads (at a connection count and size), columns are
//! servers; a cell shows the row's figure of merit, `*` for the winner, or why it was not judged.
//! [`write_matrix_files`] writes all the files of a run directory.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use super::html::html_escape;
use super::table::{CsvTable, MarkdownTable, export_to_vec};
use crate::record::matrix::{CellStatus, MatrixCell, MatrixFile, MatrixRow, compact};
use crate::record::summary::CellSummary;
use crate::record::{RunFile, write_atomic};

const TITLE: &str = "Which strategy for which workload";

const LEGEND: &str = "Each row compares the servers on the workload's own figure (higher msg/s, \
     conn/s or MB/s; lower p99 for open-loop rows). * = the winner: a clean cell whose interval \
     clears every other clean cell's. Only clean cells are judged: starved, errors and failed \
     cells cannot win; a loadgen-bound or invalid cell may be better than measured, so no one \
     wins beside it.";

/// `213k*`, `18.0k starved`, `-`: what a cell shows.
pub fn cell_text(cell: &MatrixCell) -> String {
    let figure = cell.figure.map_or("-".to_string(), compact);
    match cell.status {
        CellStatus::Winner => format!("{figure} *"),
        CellStatus::Judged => figure,
        other => format!("{figure} {}", other.word()),
    }
}

/// The cell of `server` in `row`, if it ran there.
fn cell_of<'a>(row: &'a MatrixRow, server: &str) -> Option<&'a MatrixCell> {
    row.cells.iter().find(|c| c.server == server)
}

/// Row label with its unit: `pingpong c=16 64B (msg/s)`.
fn row_label(row: &MatrixRow) -> String {
    format!("{} ({})", row.label(), row.unit)
}

/// Every cell that could not be judged, with its reasons: `(row label, server, reasons)`.
pub fn unjudged(matrix: &MatrixFile) -> Vec<(String, String, String)> {
    let mut list = Vec::new();
    for row in &matrix.rows {
        for cell in &row.cells {
            if !matches!(cell.status, CellStatus::Winner | CellStatus::Judged) {
                list.push((
                    row.label(),
                    format!("{} ({})", cell.server, cell.status.word()),
                    cell.reasons.join("; "),
                ));
            }
        }
    }
    list
}

/// The matrix as aligned text for the terminal, each row followed by its verdict and why.
pub fn terminal(matrix: &MatrixFile) -> String {
    let mut header = vec!["workload (figure)".to_string()];
    header.extend(matrix.servers.iter().map(|s| matrix.heading(s)));
    let rows: Vec<Vec<String>> = matrix
        .rows
        .iter()
        .map(|row| {
            let mut line = vec![row_label(row)];
            line.extend(
                matrix
                    .servers
                    .iter()
                    .map(|s| cell_of(row, s).map_or(String::new(), cell_text)),
            );
            line
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            rows.iter()
                .chain([&header])
                .map(|r| r[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let render = |cells: &[String]| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(column, text)| {
                format!(
                    "{text}{}",
                    " ".repeat(widths[column] - text.chars().count())
                )
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = format!("{TITLE}\n{}\n", render(&header));
    for (row, cells) in matrix.rows.iter().zip(&rows) {
        let _ = writeln!(out, "{}", render(cells));
        let _ = writeln!(out, "  verdict: {}", row.verdict_text());
        let _ = writeln!(out, "  why: {}", row.why);
    }
    let _ = writeln!(out, "{LEGEND}");
    out
}

/// The matrix as a Markdown section (appended to `summary.md`), with the cells that could not
/// be judged and why.
pub fn markdown(matrix: &MatrixFile) -> String {
    let escape = |text: &str| text.replace('|', "\\|");
    let mut out = format!("\n## {TITLE}\n\n| workload | figure |");
    for server in &matrix.servers {
        let _ = write!(out, " {} |", escape(&matrix.heading(server)));
    }
    out.push_str(" verdict | why |\n|---|---|");
    for _ in &matrix.servers {
        out.push_str("---:|");
    }
    out.push_str("---|---|\n");
    for row in &matrix.rows {
        let _ = write!(out, "| {} | {} |", escape(&row.label()), row.unit);
        for server in &matrix.servers {
            let _ = write!(
                out,
                " {} |",
                cell_of(row, server).map_or(String::new(), cell_text)
            );
        }
        let _ = writeln!(
            out,
            " {} | {} |",
            escape(&row.verdict_text()),
            escape(&row.why)
        );
    }
    let _ = writeln!(out, "\n{LEGEND}");
    let unjudged = unjudged(matrix);
    if !unjudged.is_empty() {
        out.push_str("\nCells not judged, and why (in the words of their loadgen reports):\n\n");
        for (row, server, reasons) in unjudged {
            let _ = writeln!(out, "- {row}, {server}: {reasons}");
        }
    }
    out
}

/// `summary.csv` with two more columns per cell: `workload` (empty for the unnamed matrix) and
/// `judgement` (`winner`, `judged`, or the status and reasons of a cell not judged).
pub fn csv_with_judgement(summaries: &[CellSummary], matrix: &MatrixFile) -> String {
    let csv = String::from_utf8_lossy(&export_to_vec(&CsvTable, summaries)).into_owned();
    let quote = |text: &str| {
        if text.contains([',', '"', '\n']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    let mut lines = csv.lines();
    if let Some(header) = lines.next() {
        let _ = writeln!(out, "{header},workload,judgement");
    }
    for (line, summary) in lines.zip(summaries) {
        let judgement = matrix
            .rows
            .iter()
            .filter(|row| {
                (row.workload.as_deref(), row.connections, row.size_bytes) == summary.cell.group()
            })
            .find_map(|row| cell_of(row, &summary.cell.server))
            .map_or(String::new(), |cell| match cell.status {
                CellStatus::Winner | CellStatus::Judged => cell.status.word().to_string(),
                other => format!("{}: {}", other.word(), cell.reasons.join("; ")),
            });
        let _ = writeln!(
            out,
            "{line},{},{}",
            quote(summary.cell.workload.as_deref().unwrap_or("")),
            quote(&judgement)
        );
    }
    out
}

/// Background colour of a cell by status (HTML and SVG).
fn status_color(status: CellStatus) -> (u8, u8, u8) {
    match status {
        CellStatus::Winner => (183, 230, 183),
        CellStatus::Judged => (245, 245, 245),
        CellStatus::LoadgenBound | CellStatus::Invalid => (255, 226, 170),
        CellStatus::Starved | CellStatus::Errors | CellStatus::Failed => (244, 190, 190),
    }
}

/// The matrix as an HTML section of `index.html`: cells coloured by status, the reasons on
/// hover and in a list below.
pub fn html(matrix: &MatrixFile) -> String {
    let mut out = format!("<h2>{TITLE}</h2>\n<table class=\"matrix\"><tr><th>workload</th>");
    for server in &matrix.servers {
        let _ = write!(out, "<th>{}</th>", html_escape(&matrix.heading(server)));
    }
    out.push_str("<th>verdict</th><th>why</th></tr>\n");
    for row in &matrix.rows {
        let _ = write!(out, "<tr><td>{}</td>", html_escape(&row_label(row)));
        for server in &matrix.servers {
            match cell_of(row, server) {
                Some(cell) => {
                    let (r, g, b) = status_color(cell.status);
                    let _ = write!(
                        out,
                        "<td style=\"background:rgb({r},{g},{b})\" title=\"{}\">{}</td>",
                        html_escape(&cell.reasons.join("; ")),
                        html_escape(&cell_text(cell))
                    );
                }
                None => out.push_str("<td></td>"),
            }
        }
        let _ = writeln!(
            out,
            "<td style=\"text-align:left\">{}</td><td style=\"text-align:left\">{}</td></tr>",
            html_escape(&row.verdict_text()),
            html_escape(&row.why)
        );
    }
    let _ = writeln!(out, "</table>\n<p>{}</p>", html_escape(LEGEND));
    let unjudged = unjudged(matrix);
    if !unjudged.is_empty() {
        out.push_str("<p>Cells not judged, and why:</p>\n<ul>\n");
        for (row, server, reasons) in unjudged {
            let _ = writeln!(
                out,
                "<li>{}, {}: {}</li>",
                html_escape(&row),
                html_escape(&server),
                html_escape(&reasons)
            );
        }
        out.push_str("</ul>\n");
    }
    out
}

/// `matrix.svg`: the grid of rows × servers, each cell coloured by status with its figure.
pub fn svg(path: &Path, matrix: &MatrixFile) -> Result<()> {
    const LABEL_WIDTH: i32 = 300;
    const CELL_WIDTH: i32 = 130;
    const ROW_HEIGHT: i32 = 34;
    const TOP: i32 = 70;
    const VERDICT_WIDTH: i32 = 170;
    let width = LABEL_WIDTH + CELL_WIDTH * matrix.servers.len().max(1) as i32 + VERDICT_WIDTH;
    let height = TOP + ROW_HEIGHT * matrix.rows.len() as i32 + 60;
    let root = SVGBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Debug| anyhow::anyhow!("drawing matrix.svg: {e:?}");
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let text = |size: u32| ("sans-serif", size).into_font().color(&BLACK);
    root.draw(&Text::new(TITLE, (10, 12), text(22)))
        .map_err(|e| fail(&e))?;
    for (column, server) in matrix.servers.iter().enumerate() {
        let x = LABEL_WIDTH + CELL_WIDTH * column as i32 + 6;
        root.draw(&Text::new(matrix.heading(server), (x, TOP - 24), text(15)))
            .map_err(|e| fail(&e))?;
    }
    let verdict_x = LABEL_WIDTH + CELL_WIDTH * matrix.servers.len() as i32 + 10;
    root.draw(&Text::new("verdict", (verdict_x, TOP - 24), text(15)))
        .map_err(|e| fail(&e))?;
    for (index, row) in matrix.rows.iter().enumerate() {
        let y = TOP + ROW_HEIGHT * index as i32;
        root.draw(&Text::new(row_label(row), (10, y + 9), text(15)))
            .map_err(|e| fail(&e))?;
        for (column, server) in matrix.servers.iter().enumerate() {
            let Some(cell) = cell_of(row, server) else {
                continue;
            };
            let x = LABEL_WIDTH + CELL_WIDTH * column as i32;
            let (r, g, b) = status_color(cell.status);
            root.draw(&Rectangle::new(
                [(x + 1, y + 1), (x + CELL_WIDTH - 1, y + ROW_HEIGHT - 1)],
                RGBColor(r, g, b).filled(),
            ))
            .map_err(|e| fail(&e))?;
            root.draw(&Text::new(cell_text(cell), (x + 6, y + 9), text(14)))
                .map_err(|e| fail(&e))?;
        }
        let verdict = row
            .winner
            .as_ref()
            .map_or("no winner".to_string(), |w| format!("{w} wins"));
        root.draw(&Text::new(verdict, (verdict_x, y + 9), text(14)))
            .map_err(|e| fail(&e))?;
    }
    let legend_y = TOP + ROW_HEIGHT * matrix.rows.len() as i32 + 12;
    let mut x = 10;
    for (status, words) in [
        (CellStatus::Winner, "* winner"),
        (CellStatus::Judged, "judged"),
        (
            CellStatus::LoadgenBound,
            "loadgen-bound / invalid: no verdict beside it",
        ),
        (CellStatus::Starved, "starved / errors / failed: cannot win"),
    ] {
        let (r, g, b) = status_color(status);
        root.draw(&Rectangle::new(
            [(x, legend_y), (x + 14, legend_y + 14)],
            RGBColor(r, g, b).filled(),
        ))
        .map_err(|e| fail(&e))?;
        root.draw(&Text::new(words, (x + 20, legend_y), text(13)))
            .map_err(|e| fail(&e))?;
        x += 40 + 7 * words.len() as i32;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// Writes `matrix.json` and `matrix.svg`, adds the matrix to `summary.md` and the judgement
/// columns to `summary.csv` (after `write_summaries` wrote them).
pub fn write_matrix_files(
    run_dir: &Path,
    summaries: &[CellSummary],
    matrix: &MatrixFile,
) -> Result<()> {
    matrix.write(run_dir)?;
    let mut md = String::from_utf8_lossy(&export_to_vec(&MarkdownTable, summaries)).into_owned();
    md.push_str(&markdown(matrix));
    write_atomic(&run_dir.join("summary.md"), md.as_bytes())?;
    write_atomic(
        &run_dir.join("summary.csv"),
        csv_with_judgement(summaries, matrix).as_bytes(),
    )?;
    svg(&run_dir.join("matrix.svg"), matrix)
}
