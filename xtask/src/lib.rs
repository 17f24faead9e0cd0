//! echolab's orchestration, `cargo xtask bench|capacity|regress|calibrate|report|merge`.
//!
//! The cargo-xtask pattern: a plain binary crate that drives the workspace's own binaries
//! (`echo-server`, `loadgen`) with visible command lines and records everything needed to
//! reproduce a number (a run directory with a manifest). Split as *measure* ([`trial`], which
//! starts processes through [`shell`]), *compute* ([`stats`], [`summary`], and the pure parts of
//! the commands: [`capacity::search`], [`capacity::slo`], [`regress::gate`]) and *present*
//! ([`present`]: tables, lines, plots, HTML), over one set of *records* ([`record`]: every file
//! a run writes, and its JSON).
//!
//! # Layers
//!
//! Each module imports only from the layers below it (and its own submodules); no two modules
//! import each other, directly or around a circle:
//!
//! | layer | modules | imports from |
//! |---|---|---|
//! | 6. dispatch | this file (`run`, `exit_code`) | every command |
//! | 5. commands | [`bench`](mod@bench), [`capacity`], [`regress`] (and `regress::calibrate`, on `regress`), [`report`], [`merge`], [`fixture`] | 0–4 |
//! | 4. present | [`present`]: `format`; `text`, `plot` (on `format`); `table`, `bmf` (on `format`, `text`); `html` (on `table`, `text`); `matrix` (on `table`, `html`); `progress` | 0, 2 (3 in tests) |
//! | 3. measure | [`trial`]: `pinning`; `server` (on `pinning`); the runner (on both) | 0–2 |
//! | 3. compute | [`summary`]; [`verdict`] (on `summary`'s coverage rule) | 0–2 |
//! | 2. records | [`record`]: `plan` (on `trial`), `loadgen_report`; `trial` (on `loadgen_report`); `summary` (on `trial`); `matrix` (on `trial`, `loadgen_report`); `capacity` (on `trial`, `plan`); `regress` (on `plan`); `calibration` (on `regress`); `manifest` | 0, 1 |
//! | 1. processes, presets | [`shell`]; [`workload`] (the named workloads of `bench`) | 0 |
//! | 0. foundation | [`error`], [`flags`], [`interrupt`], [`stats`] | nothing in the crate |
//!
//! Inside a command, its pure parts — `capacity::search` and `capacity::slo`, `regress::gate`
//! (and `regress::baseline`, git only) — import from layers 0–2 alone, so they are tested
//! without starting a server; the command's `run` strings its named steps together on top of
//! them. Measure and compute (3) do not import each other. To check:
//! `grep -rn 'crate::\|super::' xtask/src` — every hit points down this table.
//!
//! Try it: `cargo xtask bench --smoke`, then open `results/runs/*-bench/summary.md`.

pub mod bench;
pub mod capacity;
pub mod error;
pub mod fixture;
pub mod flags;
pub mod interrupt;
pub mod merge;
pub mod present;
pub mod record;
pub mod regress;
pub mod report;
pub mod shell;
pub mod stats;
pub mod summary;
pub mod trial;
pub mod verdict;
pub mod workload;

use anyhow::Result;

pub use error::{InputError, input_error};

/// Runs one xtask command; `main` maps the result to an exit code with [`exit_code`].
pub fn run(args: flags::Xtask) -> Result<()> {
    // The fixture server keeps the default signal dispositions: SIGTERM ends it at once.
    if !matches!(args.command, flags::Command::FixtureEcho(_)) {
        interrupt::install()?;
    }
    match args.command {
        flags::Command::Bench(bench_args) => bench::run(&bench_args),
        flags::Command::Capacity(capacity_args) => capacity::run(&capacity_args),
        flags::Command::Regress(regress_args) => regress::run(&regress_args),
        flags::Command::Calibrate(calibrate_args) => regress::calibrate::run(&calibrate_args),
        flags::Command::Report { run_dir } => report::run(&run_dir),
        flags::Command::Merge { reports, output } => merge::run(&reports, &output),
        flags::Command::FixtureEcho(fixture_args) => fixture::run(&fixture_args),
    }
}

/// The process exit code for an error: 2 for bad input, 3 for an inconclusive regress run,
/// 130 when interrupted, 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    if error.chain().any(|cause| cause.is::<InputError>()) {
        2
    } else if error.chain().any(|cause| cause.is::<error::Inconclusive>()) {
        error::INCONCLUSIVE_EXIT_CODE
    } else if interrupt::caused(error) {
        130
    } else {
        1
    }
}
