//! echolab's orchestration, `cargo xtask bench|capacity|regress|report|merge`.
//!
//! The cargo-xtask pattern: a plain binary crate that drives the workspace's own binaries
//! (`echo-server`, `loadgen`) with visible command lines and records everything needed to
//! reproduce a number (a run directory with a manifest). Split as *measure* (`bench`,
//! `capacity`, `regress`, which start processes through [`shell`]), *compute* ([`stats`],
//! [`summary`], pure functions) and *present* (table/CSV/Markdown exporters, plots, HTML).
//!
//! Try it: `cargo xtask bench --smoke`, then open `results/runs/*-bench/summary.md`.

pub mod bench;
pub mod capacity;
pub mod fixture;
pub mod flags;
pub mod interrupt;
pub mod loadgen_report;
pub mod manifest;
pub mod merge;
pub mod regress;
pub mod report;
pub mod shell;
pub mod stats;
pub mod summary;

use anyhow::Result;

/// Bad input from the user (unknown strategy, malformed flag value, …): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Builds an [`InputError`] wrapped in `anyhow`.
pub fn input_error(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError(message.into()))
}

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
        flags::Command::Report { run_dir } => report::run(&run_dir),
        flags::Command::Merge { reports, output } => merge::run(&reports, &output),
        flags::Command::FixtureEcho(fixture_args) => fixture::run(&fixture_args),
    }
}

/// The process exit code for an error: 2 for bad input, 130 when interrupted, 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    if error.chain().any(|cause| cause.is::<InputError>()) {
        2
    } else if interrupt::caused(error) {
        130
    } else {
        1
    }
}
