//! *Present*: everything a person reads — tables, one-line texts, SVG plots, `index.html` —
//! rendered from records, never measured here.
//!
//! One module per kind of output: [`format`](mod@format) (how numbers look), [`table`] (the bench summary,
//! one `Exporter` per format: terminal, Markdown, CSV, JSON; HTML in [`html`]; the regress
//! verdict table), [`text`] (the lines commands print), [`matrix`] (which strategy for which workload, in every
//! format), [`plot`] (SVG), [`html`]
//! (`index.html`), [`bmf`] (Bencher Metric Format), [`progress`] (the progress bar). The functions below draw a whole run directory; `cargo xtask report` calls the same.
//!
//! Layer: presentation depends on records (and `stats`, `flags`, and `summary` in tests) only;
//! no command and nothing that starts a process is imported here.

pub mod bmf;
pub mod format;
pub mod html;
pub mod matrix;
pub mod plot;
pub mod progress;
pub mod table;
pub mod text;

use std::path::Path;

use anyhow::Result;

use crate::record::capacity::CapacityFile;
use crate::record::matrix::MatrixFile;
use crate::record::regress::RegressFile;
use crate::record::summary::CellSummary;
use crate::record::trial::TrialsFile;

/// Draws every plot and `index.html` of a bench run directory from its records (the matrix
/// first, see [`matrix`]); returns the plots' file names.
pub fn bench_run(
    run_dir: &Path,
    trials: &TrialsFile,
    summaries: &[CellSummary],
    matrix: &MatrixFile,
) -> Result<Vec<String>> {
    matrix::write_matrix_files(run_dir, summaries, matrix)?;
    let mut images = vec!["matrix.svg".to_string()];
    images.extend(plot::bench_plots(run_dir, trials, summaries)?);
    let image_refs: Vec<&str> = images.iter().map(String::as_str).collect();
    html::bench_index(run_dir, summaries, &matrix::html(matrix), &image_refs)?;
    Ok(images)
}

/// Draws `capacity.svg` and `index.html` of a capacity run directory.
pub fn capacity_run(run_dir: &Path, file: &CapacityFile) -> Result<()> {
    plot::capacity_plot(run_dir, file)?;
    html::capacity_index(run_dir, file)
}

/// Writes `summary.md` (the verdict table) and `index.html` of a regress run directory.
pub fn regress_run(run_dir: &Path, file: &RegressFile) -> Result<()> {
    crate::record::write_atomic(
        &run_dir.join("summary.md"),
        table::regress_markdown(file).as_bytes(),
    )?;
    html::regress_index(run_dir, file)
}
