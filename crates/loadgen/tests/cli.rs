//! The binary and the CLI entry point: exit codes, summary text, the JSON report against the
//! schema file.

mod common;

use common::{Behavior, TestServer, closed_port, loadgen_bin, read_json, run_expecting};

fn schema_validator() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/loadgen-report.schema.json"
    );
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("the schema file is a valid JSON Schema")
}

fn assert_valid(instance: &serde_json::Value) {
    let validator = schema_validator();
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "report does not match the schema: {errors:#?}"
    );
}

#[test]
fn json_report_validates_against_the_schema() {
    let server = TestServer::start(Behavior::Echo);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    run_expecting(
        loadgen_bin()
            .args([
                "--target",
                &server.target(),
                "--connections",
                "4",
                "--messages",
                "500",
            ])
            .args(["--warmup", "100ms", "--json"])
            .arg(&json),
        0,
    );
    let value: serde_json::Value = read_json(&json);
    assert_valid(&value);
    assert_eq!(value["schema"], "echolab.loadgen/1");
    assert_eq!(value["messages"]["verified"], 500);
    for kind in ["refused", "reset", "eof", "timeout", "corrupt"] {
        assert_eq!(value["errors"]["by_kind"][kind], 0, "{kind}");
    }
    // Round trip through the library type.
    let report: loadgen::Report = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(report.latency_histogram().unwrap().len(), 500);
    // The loadgen's CPU, split into user and system time.
    let cost = &report.loadgen;
    assert!(cost.utime_s >= 0.0 && cost.stime_s >= 0.0, "{cost:?}");
    assert!(
        (cost.utime_s + cost.stime_s - cost.cpu_s).abs() < 1e-6,
        "{cost:?}"
    );
    // `invalid_kinds` takes the kinds loadgen names, and only those.
    let mut typed = value.clone();
    typed["valid"] = serde_json::json!(false);
    typed["invalid_reasons"] = serde_json::json!(["only 20 latency samples (fewer than 100)"]);
    typed["invalid_kinds"] = serde_json::json!(["few_samples"]);
    assert_valid(&typed);
    typed["invalid_kinds"] = serde_json::json!(["slow"]);
    assert!(!schema_validator().is_valid(&typed));
    // The schema is strict: an unknown key is rejected (so new keys must be documented).
    let mut extra = value;
    extra["surprise"] = serde_json::json!(1);
    assert!(!schema_validator().is_valid(&extra));

    // An open-loop report (with `schedule`, loop lag and `held_back`) validates too.
    let open = dir.path().join("open.json");
    run_expecting(
        loadgen_bin()
            .args(["--target", &server.target(), "--connections", "2"])
            .args(["--rate", "400", "--duration", "500ms", "--warmup", "0s"])
            .arg("--json")
            .arg(&open),
        0,
    );
    let value: serde_json::Value = read_json(&open);
    assert_valid(&value);
    for key in [
        "loop_p99_lag_us",
        "loop_max_lag_us",
        "loop_mean_lag_us",
        "held_back",
    ] {
        assert!(
            value["schedule"].get(key).is_some(),
            "schedule.{key}: {value}"
        );
    }
}

#[test]
fn corrupt_echo_exits_1_and_still_writes_the_report() {
    let server = TestServer::start(Behavior::CorruptAt(64 * 7 + 3));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = run_expecting(
        loadgen_bin()
            .args([
                "--target",
                &server.target(),
                "--connections",
                "1",
                "--messages",
                "20",
            ])
            .args(["--warmup", "0s", "--quiet", "--json"])
            .arg(&json),
        1,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("corrupt 1"), "{stdout}");
    assert!(stdout.contains("connection 0 message 7 byte 3"), "{stdout}");
    let value: serde_json::Value = read_json(&json);
    assert_valid(&value);
    assert_eq!(value["errors"]["by_kind"]["corrupt"], 1);
    let s = &value["errors"]["samples"][0];
    assert_eq!(
        (s["kind"].as_str(), s["connection"].as_u64()),
        (Some("corrupt"), Some(0))
    );
    assert_eq!(
        (s["message"].as_u64(), s["offset"].as_u64()),
        (Some(7), Some(3))
    );
}

#[test]
fn corrupt_within_max_errors_exits_0() {
    let server = TestServer::start(Behavior::CorruptAt(64 * 7 + 3));
    run_expecting(
        loadgen_bin()
            .args([
                "--target",
                &server.target(),
                "--connections",
                "1",
                "--messages",
                "20",
            ])
            .args(["--warmup", "0s", "--max-errors", "1"]),
        0,
    );
}

#[test]
fn refused_target_exits_1() {
    let addr = closed_port();
    let out = run_expecting(
        loadgen_bin().args([
            "--target",
            &addr.to_string(),
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ]),
        1,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("refused 16"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not be reached"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["--connections", "3"],
        vec!["--target", "127.0.0.1:1", "--duration", "soon"],
        vec![
            "--target",
            "127.0.0.1:1",
            "--duration",
            "1s",
            "--messages",
            "5",
        ],
        vec!["--target", "127.0.0.1:1", "--size", "0"],
        vec!["--target", "127.0.0.1:1", "--slo", "p99 fast"],
        vec![
            "--target",
            "127.0.0.1:1",
            "--source-addrs",
            "127.0.0.9-127.0.0.2",
        ],
        vec![
            "--target",
            "127.0.0.1:1",
            "--source-addrs",
            "not-an-address",
        ],
        vec!["--target", "127.0.0.1:1", "--source-addrs", "::1"],
        vec!["--target", "[::1]:1", "--source-addrs", "127.0.0.2"],
        vec![
            "--target",
            "127.0.0.1:1",
            "--rate",
            "100",
            "--rate-steps",
            "100,200",
        ],
        vec![
            "--target",
            "127.0.0.1:1",
            "--rate-steps",
            "100",
            "--messages",
            "5",
        ],
        vec!["--target", "127.0.0.1:1", "--rate-steps", "100,0"],
        vec![
            "--target",
            "127.0.0.1:1",
            "--steps-from",
            "-",
            "--rate",
            "5",
        ],
        vec![
            "--target",
            "127.0.0.1:1",
            "--steps-from",
            "-",
            "--rate-steps",
            "5",
        ],
        vec!["--target", "127.0.0.1:1", "--timing", "fast"],
        vec!["--bogus"],
    ] {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = loadgen::cli::main_with(
            std::iter::once("loadgen").chain(args.iter().copied()),
            &mut out,
            &mut err,
        );
        assert_eq!(code, 2, "{args:?}: {}", String::from_utf8_lossy(&err));
        assert!(!err.is_empty(), "{args:?} printed no message");
    }
}

#[test]
fn summary_lists_every_required_figure() {
    let server = TestServer::start(Behavior::Echo);
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = loadgen::cli::main_with(
        [
            "loadgen",
            "--target",
            &server.target(),
            "--messages",
            "300",
            "--warmup",
            "0s",
            "--connections",
            "3",
            "--size",
            "128",
            "--quiet",
        ],
        &mut out,
        &mut err,
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert!(err.is_empty(), "stderr must stay empty when not a terminal");
    let text = String::from_utf8(out).unwrap();
    for needle in [
        "3 connections",
        "128-byte messages",
        "duration ",
        "300 verified of 300 sent",
        "messages/s",
        "MiB/s sent",
        "MiB/s received",
        "min ",
        "p50 ",
        "p90 ",
        "p99 ",
        "p99.9 ",
        "max ",
        "errors        0 (refused 0, reset 0, eof 0, timeout 0, short 0, corrupt 0",
    ] {
        assert!(text.contains(needle), "summary lacks {needle:?}:\n{text}");
    }
}

#[test]
fn merge_subcommand_adds_reports_and_refuses_mismatches() {
    let server = TestServer::start(Behavior::Echo);
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, size: &str, messages: &str| {
        let path = dir.path().join(name);
        run_expecting(
            loadgen_bin()
                .args([
                    "--target",
                    &server.target(),
                    "--connections",
                    "2",
                    "--warmup",
                    "0s",
                ])
                .args(["--size", size, "--messages", messages, "--json"])
                .arg(&path),
            0,
        );
        path
    };
    let a = run("a.json", "64", "300");
    let b = run("b.json", "64", "500");
    let c = run("c.json", "32", "100");
    let all = dir.path().join("all.json");
    run_expecting(
        loadgen_bin()
            .arg("merge")
            .arg(&a)
            .arg(&b)
            .arg("-o")
            .arg(&all),
        0,
    );
    let value: serde_json::Value = read_json(&all);
    assert_valid(&value);
    let merged: loadgen::Report = serde_json::from_value(value).unwrap();
    assert_eq!(merged.messages.verified, 800);
    assert_eq!(merged.latency_histogram().unwrap().len(), 800);
    assert_eq!(merged.connections.opened, 4);

    let out = run_expecting(
        loadgen_bin()
            .arg("merge")
            .arg(&a)
            .arg(&c)
            .arg("-o")
            .arg(&all),
        1,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("different message sizes"));
}

#[test]
fn baseline_blocking_subcommand_prints_its_result() {
    let server = TestServer::start(Behavior::Echo);
    let out = run_expecting(
        loadgen_bin()
            .args([
                "baseline-blocking",
                "--target",
                &server.target(),
                "--connections",
                "4",
            ])
            .args(["--duration", "300ms", "--warmup", "100ms"]),
        0,
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        line["result"]["messages_verified"].as_u64().unwrap() > 0,
        "{line}"
    );
    assert_eq!(line["result"]["errors"], 0);
    assert_eq!(line["config"]["connections"], 4);
}

#[test]
fn sigint_ends_the_run_early_and_still_reports() {
    let server = TestServer::start(Behavior::Echo);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let child = loadgen_bin()
        .args([
            "--target",
            &server.target(),
            "--connections",
            "2",
            "--duration",
            "60s",
        ])
        .args(["--warmup", "0s", "--json"])
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Ready signal: both connections accepted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.accepted.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "loadgen never connected"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let started = std::time::Instant::now();
    // SAFETY: kill(2) on the PID of the child we started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("verified of"), "{stdout}");
    let report: loadgen::Report = read_json(&json);
    assert!(report.duration_s < 30.0, "{}", report.duration_s);
    assert_eq!(report.errors.total, 0);
}

#[test]
fn a_failed_run_with_an_slo_exits_1_not_3() {
    let addr = closed_port();
    run_expecting(
        loadgen_bin()
            .args(["--target", &addr.to_string(), "--connections", "2"])
            .args(["--duration", "300ms", "--warmup", "0s", "--slo", "p99<=10s"]),
        1,
    );
}

/// Reports written before timing modes, steps and work existed (the committed reference run)
/// still load, validate against the schema and merge.
#[test]
fn reference_reports_still_load_validate_and_merge() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../results/reference/bench-all/trials"
    );
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".loadgen.json"))
        .collect();
    paths.sort();
    assert!(paths.len() > 10, "{} reports", paths.len());
    for path in &paths {
        let value: serde_json::Value = read_json(path);
        assert_valid(&value);
        let report: loadgen::Report = serde_json::from_value(value).unwrap();
        assert!(report.timing.is_none() && report.steps.is_empty());
        assert_eq!(report.loadgen.work_s, 0.0, "a key it never had reads as 0");
    }
    let (a, b) = paths
        .iter()
        .map(|p| read_json::<loadgen::Report>(p))
        .filter(|r| r.config.connections == 16 && r.config.depth.is_none())
        .fold((None, None), |(a, b), r| match (a, b) {
            (None, _) => (Some(r), None),
            (Some(a), None) => (Some(a), Some(r)),
            done => done,
        });
    let merged = loadgen::merge::merge_reports(&[a.unwrap(), b.unwrap()]).unwrap();
    assert_valid(&serde_json::to_value(&merged).unwrap());
}

#[test]
fn the_timing_mode_is_recorded_and_printed() {
    let server = TestServer::start(Behavior::Echo);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("sleep.json");
    let out = run_expecting(
        loadgen_bin()
            .args(["--target", &server.target(), "--connections", "2"])
            .args(["--rate", "400", "--duration", "300ms", "--warmup", "0s"])
            .args(["--timing", "sleep", "--json"])
            .arg(&json),
        0,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("timing        sleep: --timing sleep was given"),
        "{stdout}"
    );
    assert!(stdout.contains("loop lag µs"), "{stdout}");
    let value: serde_json::Value = read_json(&json);
    assert_valid(&value);
    assert_eq!(value["config"]["timing"], "sleep");
    assert_eq!(value["timing"]["mode"], "sleep");
    assert_eq!(value["timing"]["wake_early_us"], 100);
    assert!(value["histograms"]["loop_lag_us"].is_string());
    assert!(value["schedule"]["loop_lag_us"]["p99"].is_u64());

    // Precise in closed loop busy-polls: time spent polling with nothing to do is counted apart
    // and is not work.
    let json = dir.path().join("precise.json");
    run_expecting(
        loadgen_bin()
            .args(["--target", &server.target(), "--connections", "1"])
            .args(["--messages", "2000", "--warmup", "0s", "--threads", "1"])
            .args(["--timing", "precise", "--json"])
            .arg(&json),
        0,
    );
    let report: loadgen::Report = read_json(&json);
    let timing = report.timing.expect("timing");
    assert_eq!(timing.mode, loadgen::TimingMode::Precise);
    let l = report.loadgen;
    assert!(l.spin_s > 0.0, "{l:?}");
    assert!(l.work_s <= l.cpu_s && l.work_s > 0.0, "{l:?}");
    assert!(
        (l.work_s + l.spin_s - l.cpu_s).abs() <= 0.05 * l.cpu_s + 0.002,
        "{l:?}"
    );
    assert!(!l.saturated, "spinning is not saturation: {l:?}");
}

#[test]
fn a_stepped_report_validates_against_the_schema() {
    let server = TestServer::start(Behavior::Echo);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("steps.json");
    let out = loadgen_bin()
        .args(["--target", &server.target(), "--connections", "2"])
        .args(["--rate-steps", "400,800", "--step-duration", "300ms"])
        .args(["--step-settle", "100ms", "--warmup", "100ms"])
        .args(["--slo", "p99<=10s", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("open loop in 2 steps"), "{stdout}");
    assert!(
        stdout.contains("800 msg/s for 0.30 s: achieved"),
        "{stdout}"
    );
    let value: serde_json::Value = read_json(&json);
    assert_valid(&value);
    assert_eq!(value["steps"].as_array().unwrap().len(), 2);
    // Latency far below 10 s: each step meets the SLO exactly when it is valid (a loop made
    // late by a loaded machine makes a step invalid, and an invalid step misses any SLO).
    for step in value["steps"].as_array().unwrap() {
        let index = step["index"].as_u64().unwrap();
        let met = step["valid"].as_bool().unwrap();
        assert_eq!(step["slo_met"], met, "{step}");
        let line = format!(
            "SLO step {index} ({} msg/s): {}",
            step["target_per_s"].as_f64().unwrap(),
            if met { "met" } else { "NOT MET" }
        );
        assert!(stdout.contains(&line), "{line}: {stdout}");
    }
    let valid = value["valid"].as_bool().unwrap();
    assert_eq!(
        out.status.code(),
        Some(if valid { 0 } else { 3 }),
        "{stdout}"
    );
    assert_eq!(value["config"]["rate_steps"][1]["rate_per_s"], 800.0);
    assert_eq!(value["config"]["step_settle_ms"], 100);
    // A step's kinds, and the run's `step` kind, validate too; an unknown kind does not.
    let mut typed = value;
    typed["valid"] = serde_json::json!(false);
    typed["invalid_reasons"] = serde_json::json!(["step 1 (800 msg/s): late"]);
    typed["invalid_kinds"] = serde_json::json!(["step"]);
    typed["steps"][1]["valid"] = serde_json::json!(false);
    typed["steps"][1]["invalid_reasons"] = serde_json::json!(["late"]);
    typed["steps"][1]["invalid_kinds"] = serde_json::json!(["late"]);
    assert_valid(&typed);
    typed["steps"][1]["invalid_kinds"] = serde_json::json!(["lazy"]);
    assert!(!schema_validator().is_valid(&typed));
}

/// Reads lines from a child's stdout on a thread, so a test can wait for one with a deadline.
fn line_reader(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `--steps-from -`: each step starts when its line comes and its result is a JSON line on
/// stdout as soon as it ends, so a program can choose the next step from the last result.
#[test]
fn steps_from_stdin_are_steered_one_at_a_time() {
    use std::io::Write;
    use std::time::Duration;
    let server = TestServer::start(Behavior::Echo);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("steered.json");
    let mut child = loadgen_bin()
        .args(["--target", &server.target(), "--connections", "2"])
        .args([
            "--steps-from",
            "-",
            "--warmup",
            "100ms",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = line_reader(child.stdout.take().unwrap());
    let next_step = |lines: &std::sync::mpsc::Receiver<String>| -> loadgen::StepReport {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a step line within 30 s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    writeln!(stdin, "300 300ms").unwrap();
    let first = next_step(&lines);
    assert_eq!((first.index, first.target_per_s), (0, 300.0));
    assert_eq!(first.messages.sent, 90);
    // Nothing more comes until the next line does.
    assert!(lines.recv_timeout(Duration::from_millis(300)).is_err());
    writeln!(stdin, "# comment, then a blank line\n\n600 200ms").unwrap();
    let second = next_step(&lines);
    assert_eq!((second.index, second.target_per_s), (1, 600.0));
    assert_eq!(second.messages.sent, 120);
    assert_eq!(second.settle_ms, 250);
    assert!(second.start_unix_s > first.start_unix_s + first.duration_s);
    drop(stdin);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines.iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("open loop in 2 steps")),
        "{rest:?}"
    );
    let report: loadgen::Report = read_json(&json);
    assert_eq!(report.steps.len(), 2);
    assert_eq!(report.messages.sent, 210);
    assert_eq!(server.accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn a_bad_steps_line_ends_the_run_after_the_steps_before_it() {
    let server = TestServer::start(Behavior::Echo);
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.txt");
    std::fs::write(&steps, "300 200ms\n# fine\n\nfast 1s\n400 200ms\n").unwrap();
    let json = dir.path().join("r.json");
    let out = run_expecting(
        loadgen_bin()
            .args(["--target", &server.target(), "--connections", "2"])
            .args(["--warmup", "0s", "--steps-from"])
            .arg(&steps)
            .arg("--json")
            .arg(&json),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains("\"fast\""), "{stderr}");
    let report: loadgen::Report = read_json(&json);
    assert_eq!(report.steps.len(), 1);
    assert!(!report.valid);
    assert!(
        report
            .invalid_reasons
            .iter()
            .any(|r| r.contains("--steps-from line 4")),
        "{:?}",
        report.invalid_reasons
    );
    assert!(
        report
            .invalid_kinds
            .contains(&loadgen::validity::InvalidKind::StepsInput),
        "{:?}",
        report.invalid_kinds
    );
    // An input with no step at all is an error before anything runs.
    std::fs::write(&steps, "# nothing\n").unwrap();
    let out = run_expecting(
        loadgen_bin()
            .args(["--target", &server.target(), "--steps-from"])
            .arg(&steps),
        1,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("gave no step"));
}
