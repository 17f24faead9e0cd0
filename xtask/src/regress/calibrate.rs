//! `cargo xtask calibrate`: measures the gate's own error rates on this machine.
//!
//! The fixture is the built `echo-server --strategy reactor-pool` (`--strategy` picks another
//! that serves the nonblocking session); a slower candidate is the same
//! binary with the hidden `--calibration-cost` (extra CPU work per 64 bytes received, so the
//! only difference is a known cost per message). First the plain server runs against itself
//! once, which also gives its CPU per message at the regress load (the base); then, round after
//! round, every condition runs once: the server against itself, and against itself made
//! `rise` × base slower for each `--rises`. Each run is a full `regress` with the given
//! `--regress-args` (its defaults otherwise) in its own directory; the verdicts are counted:
//! `slower` against itself is a false alarm, `slower` against an injected rise a detection.
//! `calibration.json` and `calibration.md` are rewritten after every run.
//!
//! Try it: `cargo xtask calibrate --runs 10 --rises 5%` (20 runs, about 10 minutes), or
//! `cargo xtask calibrate --runs 3 --regress-args '--duration 500ms'` for a quick look.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;

use super::gate::parse_threshold;
use crate::error::input_error;
use crate::flags::{CalibrateArgs, Command, RegressArgs, RunArgs, Xtask};
use crate::interrupt;
use crate::present::table::calibration_markdown;
use crate::record::calibration::{CALIBRATION_SCHEMA, CalibrationFile, CalibrationRun, Condition};
use crate::record::manifest::create_run_dir;
use crate::record::regress::RegressFile;
use crate::record::{RunFile, write_atomic};
use crate::shell;
use crate::stats::median;

/// The strategies that serve the nonblocking session, where `--calibration-cost` is spent.
const CALIBRATION_STRATEGIES: [&str; 4] = ["reactor-pool", "event-loop", "async", "uring"];

/// `cargo xtask calibrate`.
pub fn run(args: &CalibrateArgs) -> Result<()> {
    let rises = parse_rises(&args.rises)?;
    if !CALIBRATION_STRATEGIES.contains(&args.strategy.as_str()) {
        return Err(input_error(format!(
            "--strategy {:?}: the calibration cost lives in the nonblocking session; use one of {}",
            args.strategy,
            CALIBRATION_STRATEGIES.join(", ")
        )));
    }
    if args.runs == 0 {
        return Err(input_error("--runs must be at least 1"));
    }
    let mut extra: Vec<String> = args
        .regress_args
        .as_deref()
        .map(|text| text.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    forward_run_flags(&args.run, &mut extra);
    // Checks the flags before anything is built.
    regress_args(
        &extra,
        "x {port}",
        "x {port}",
        Path::new("."),
        Path::new("."),
    )?;
    let root = shell::project_root();
    let binaries = shell::binaries(&root, &args.run.build, None)?;
    let bin_dir = binaries
        .echo_server
        .parent()
        .context("echo-server has no directory")?
        .to_path_buf();
    let dir = create_run_dir(&root, "calibrate", args.run.out.as_deref())?;
    let plain = format!(
        "{} --addr 127.0.0.1:{{port}} --strategy {}",
        shell::quote(&binaries.echo_server.display().to_string()),
        args.strategy
    );
    let mut file = CalibrationFile {
        schema: CALIBRATION_SCHEMA.into(),
        strategy: args.strategy.clone(),
        regress_args: extra.clone(),
        base_cpu_per_message_us: None,
        conditions: std::iter::once(0.0)
            .chain(rises)
            .map(|rise| Condition {
                rise,
                cost_per_64_bytes_ns: 0,
                runs: Vec::new(),
            })
            .collect(),
        same_slowdowns: Vec::new(),
    };
    eprintln!(
        "calibrate: {} rounds of {} regress runs (the fixture against itself{}); directory {}",
        args.runs,
        file.conditions.len(),
        file.conditions[1..]
            .iter()
            .map(|c| format!(", +{:.0}%", c.rise * 100.0))
            .collect::<String>(),
        dir.display()
    );
    for round in 0..args.runs as usize {
        for index in 0..file.conditions.len() {
            interrupt::check()?;
            let condition = &file.conditions[index];
            let candidate = if condition.rise == 0.0 {
                plain.clone()
            } else {
                let base = file
                    .base_cpu_per_message_us
                    .context("no base CPU per message")?;
                let size = size_bytes(&extra)?;
                let cost_ns = (condition.rise * base * 1000.0 * 64.0 / f64::from(size)).round();
                file.conditions[index].cost_per_64_bytes_ns = cost_ns as u64;
                format!("{plain} --calibration-cost {cost_ns}ns")
            };
            let name = format!("{}-{round:02}", condition_name(file.conditions[index].rise));
            let out = dir.join(&name);
            let regress = regress_args(&extra, &plain, &candidate, &bin_dir, &out)?;
            eprintln!("\n== calibrate: {name} ==");
            let started = Instant::now();
            if let Err(error) = super::run(&regress)
                && interrupt::caused(&error)
            {
                return Err(error);
            }
            let seconds = started.elapsed().as_secs_f64();
            let result = RegressFile::read(&out).ok();
            if index == 0 {
                note_same_run(&mut file, result.as_ref())?;
            }
            file.conditions[index]
                .runs
                .push(calibration_run(&name, result.as_ref(), seconds));
            file.write(&dir)?;
            write_atomic(
                &dir.join("calibration.md"),
                calibration_markdown(&file).as_bytes(),
            )?;
        }
    }
    println!("\n{}", calibration_markdown(&file));
    println!("directory: {}", dir.display());
    Ok(())
}

/// `same`, `plus5pct`: the directory name of a condition's runs.
fn condition_name(rise: f64) -> String {
    if rise == 0.0 {
        "same".into()
    } else {
        format!("plus{}pct", (rise * 100.0).round())
    }
}

/// Parses `3%,5%,10%` into fractions (each above 0).
fn parse_rises(rises: &[String]) -> Result<Vec<f64>> {
    rises
        .iter()
        .map(|text| {
            let rise = parse_threshold(text)?;
            if rise == 0.0 {
                return Err(input_error("--rises: every rise must be above 0%"));
            }
            Ok(rise)
        })
        .collect()
}

/// The run flags given to `calibrate` itself that shape each regress run's measurement
/// (`--no-pin`, `--keep-awake`), added to its regress flags unless they are there already.
fn forward_run_flags(run: &RunArgs, extra: &mut Vec<String>) {
    for (given, flag) in [(run.no_pin, "--no-pin"), (run.keep_awake, "--keep-awake")] {
        if given && !extra.iter().any(|arg| arg == flag) {
            extra.push(flag.into());
        }
    }
}

/// The regress flags of one run: `extra`, the two servers, the binaries and the directory.
fn regress_args(
    extra: &[String],
    baseline: &str,
    candidate: &str,
    bin_dir: &Path,
    out: &Path,
) -> Result<RegressArgs> {
    for flag in [
        "--baseline",
        "--baseline-server",
        "--candidate-server",
        "--out",
    ] {
        if extra
            .iter()
            .any(|arg| arg == flag || arg.starts_with(&format!("{flag}=")))
        {
            return Err(input_error(format!(
                "--regress-args may not set {flag}: calibrate chooses it"
            )));
        }
    }
    let mut argv: Vec<String> = vec!["cargo xtask".into(), "regress".into()];
    argv.extend(extra.iter().cloned());
    argv.extend([
        "--baseline-server".into(),
        baseline.into(),
        "--candidate-server".into(),
        candidate.into(),
        "--bin-dir".into(),
        bin_dir.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ]);
    match Xtask::try_parse_from(&argv) {
        Ok(Xtask {
            command: Command::Regress(args),
        }) => Ok(*args),
        Ok(_) => bail!("--regress-args did not parse as regress flags"),
        Err(error) => Err(input_error(format!("--regress-args: {error}"))),
    }
}

/// The message size the runs use (`--size` in the regress flags, or regress's default).
fn size_bytes(extra: &[String]) -> Result<u32> {
    let args = regress_args(
        extra,
        "x {port}",
        "x {port}",
        Path::new("."),
        Path::new("."),
    )?;
    Ok(args.size)
}

/// Takes what a same-against-same run adds: the base CPU per message (from the first) and
/// its pairs' slowdowns.
fn note_same_run(file: &mut CalibrationFile, result: Option<&RegressFile>) -> Result<()> {
    let Some(result) = result else {
        return Ok(());
    };
    if file.base_cpu_per_message_us.is_none() {
        let cpu: Vec<f64> = result
            .trials
            .iter()
            .filter_map(|trial| trial.cpu_per_message_us)
            .collect();
        if cpu.is_empty() {
            bail!("the first run measured no server CPU per message: cannot size the rises");
        }
        file.base_cpu_per_message_us = Some(median(&cpu));
    }
    file.same_slowdowns
        .extend(result.ratios.iter().map(|ratio| -ratio.ln()));
    Ok(())
}

/// What a calibration keeps of one regress run.
fn calibration_run(name: &str, result: Option<&RegressFile>, seconds: f64) -> CalibrationRun {
    CalibrationRun {
        dir: name.to_string(),
        verdict: result.and_then(|r| r.verdict),
        pairs_run: result.map_or(0, RegressFile::pairs_run),
        pairs_used: result.map_or(0, |r| r.ratios.len()),
        change: result.and_then(|r| r.change).map(|c| c.estimate),
        minimum_detectable: result.and_then(|r| r.minimum_detectable_effect),
        seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rises_and_regress_flags_are_checked() {
        assert_eq!(
            parse_rises(&["3%".into(), "0.1".into()]).expect("valid"),
            [0.03, 0.1]
        );
        assert!(parse_rises(&["0%".into()]).is_err());
        let args = regress_args(
            &[
                "--duration".into(),
                "500ms".into(),
                "--size".into(),
                "128".into(),
            ],
            "a {port}",
            "b {port}",
            Path::new("/bin"),
            Path::new("/out"),
        )
        .expect("valid");
        assert_eq!(args.size, 128);
        assert_eq!(args.candidate_server.as_deref(), Some("b {port}"));
        for bad in ["--out", "--baseline-server"] {
            let error = regress_args(
                &[bad.into(), "x".into()],
                "a",
                "b",
                Path::new("."),
                Path::new("."),
            )
            .expect_err("calibrate sets it");
            assert_eq!(crate::exit_code(&error), 2);
        }
        let error = regress_args(
            &["--no-such".into()],
            "a",
            "b",
            Path::new("."),
            Path::new("."),
        )
        .expect_err("unknown flag");
        assert_eq!(crate::exit_code(&error), 2);
        assert_eq!(condition_name(0.0), "same");
        assert_eq!(condition_name(0.05), "plus5pct");
    }

    #[test]
    fn calibrates_own_run_flags_reach_every_regress_run() {
        let parsed =
            Xtask::try_parse_from(["cargo xtask", "calibrate", "--keep-awake"]).expect("parses");
        let Command::Calibrate(args) = parsed.command else {
            panic!("not calibrate");
        };
        let mut extra = vec!["--duration".to_string(), "500ms".to_string()];
        forward_run_flags(&args.run, &mut extra);
        assert_eq!(extra, ["--duration", "500ms", "--keep-awake"]);
        // Given in both places: once.
        forward_run_flags(&args.run, &mut extra);
        let regress = regress_args(&extra, "a", "b", Path::new("."), Path::new("."))
            .expect("parses as regress flags");
        assert!(regress.run.keep_awake && !regress.run.no_pin);
        let parsed =
            Xtask::try_parse_from(["cargo xtask", "calibrate", "--no-pin"]).expect("parses");
        let Command::Calibrate(args) = parsed.command else {
            panic!("not calibrate");
        };
        let mut extra = Vec::new();
        forward_run_flags(&args.run, &mut extra);
        assert_eq!(extra, ["--no-pin"]);
    }
}
