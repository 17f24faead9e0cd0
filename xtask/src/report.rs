//! `cargo xtask report RUN_DIR`: redraws a run directory's summaries, plots and `index.html`
//! from the JSON records inside it, so a run can be looked at again (or after a change to the
//! presentation) without measuring anything.
//!
//! Bench runs get `summary.{md,csv,json}`, `matrix.json`, `matrix.svg`, `throughput.svg`, `latency_c<N>.svg`,
//! `cpu_per_message.svg` and `index.html` (see [`crate::present`]); capacity runs
//! `capacity.svg` and `index.html`; regress runs `summary.md` and `index.html`.
//! Try it: `cargo xtask report results/runs/<stamp>-bench`.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::present;
use crate::present::table::{TerminalTable, export_to_vec, write_summaries};
use crate::record::RunFile;
use crate::record::capacity::CapacityFile;
use crate::record::manifest::Manifest;
use crate::record::matrix::connect_p99_by_cell;
use crate::record::plan::BenchPlan;
use crate::record::regress::RegressFile;
use crate::record::trial::TrialsFile;
use crate::summary::summarize;
use crate::verdict;

/// `cargo xtask report RUN_DIR`: redraws summaries, plots and index from the stored JSON.
pub fn run(run_dir: &Path) -> Result<()> {
    let manifest = Manifest::read(run_dir)?;
    match manifest.command.as_str() {
        "bench" => {
            let trials = TrialsFile::read(run_dir)?;
            let summaries = summarize(&trials.cells, &trials.trials);
            write_summaries(run_dir, &summaries)?;
            let plan: BenchPlan = serde_json::from_value(manifest.config.clone())
                .context("manifest.json: config is not a bench plan")?;
            let matrix = verdict::matrix(
                &plan,
                &summaries,
                &trials.trials,
                &connect_p99_by_cell(run_dir, &trials.trials),
            );
            let images = present::bench_run(run_dir, &trials, &summaries, &matrix)?;
            print!(
                "{}",
                String::from_utf8_lossy(&export_to_vec(&TerminalTable, &summaries))
            );
            println!();
            print!("{}", present::matrix::terminal(&matrix));
            eprintln!(
                "redrew {} and index.html in {}",
                images.join(", "),
                run_dir.display()
            );
        }
        "capacity" => {
            present::capacity_run(run_dir, &CapacityFile::read(run_dir)?)?;
            eprintln!(
                "redrew capacity.svg and index.html in {}",
                run_dir.display()
            );
        }
        "regress" => {
            present::regress_run(run_dir, &RegressFile::read(run_dir)?)?;
            eprintln!("redrew summary.md and index.html in {}", run_dir.display());
        }
        other => bail!("{}: unknown run kind {other:?}", run_dir.display()),
    }
    Ok(())
}
