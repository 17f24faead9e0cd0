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
