//! `cargo xtask capacity` against a real server on port 0 (short steps, small budget), and its
//! bad input: an SLO that does not parse and an unknown strategy exit 2 before anything runs.

mod common;

use common::{
    fails_and_leaves_no_process, fixture_echo, mute_server, read_json, run_to_exit, xtask,
    xtask_run,
};

#[test]
fn capacity_finds_a_bracket_and_writes_its_files() {
    let out = tempfile::tempdir().expect("temp dir");
    // A server that sleeps 20 ms per echo on 16 connections holds at most ~800 msg/s, so a
    // ramp from 200/s finds its limit within a few steps whatever the machine's speed. Its
    // latency (20 ms and more) leaves room for the loadgen's own lateness (5% of it); on a
    // machine so loaded that even that is exceeded, the answer must say the loadgen was the
    // limit.
    let server = fixture_echo("20ms");
    let (stdout, _) = run_to_exit(
        &mut xtask_run(
            [
                "capacity",
                "--slo",
                "p99<=300ms",
                "--connections",
                "16",
                "--start-rate",
                "200",
                "--precision-percent",
                "25",
                // 120 latency samples at the first rate: enough for a valid step (100).
                "--duration",
                "600ms",
                "--warmup",
                "200ms",
                "--settle",
                "100ms",
                "--budget",
                "40s",
                "--no-pin",
                "--server",
                &server,
            ],
            out.path(),
        ),
        0,
    );
    assert!(stdout.starts_with("capacity: "), "{stdout}");
    let file = read_json(&out.path().join("capacity.json"));
    assert_eq!(file["schema"], "echolab.xtask.capacity/1");
    let steps = file["steps"].as_array().expect("steps");
    assert!(!steps.is_empty());
    assert_eq!(steps[0]["target_per_s"], 200);
    // One loadgen and one set of connections served every step: its report holds them all,
    // in the order they ran.
    let report = read_json(&out.path().join("loadgen.json"));
    let loadgen_steps = report["steps"].as_array().expect("steps in loadgen.json");
    assert_eq!(loadgen_steps.len(), steps.len(), "{stdout}");
    assert_eq!(report["connections"]["opened"], 16);
    assert_eq!(report["config"]["steps_from"], "-");
    assert_eq!(report["timing"]["mode"], "sleep", "unpinned");
    for (k, step) in steps.iter().enumerate() {
        assert_eq!(step["report"], "loadgen.json");
        assert_eq!(step["loadgen_step"].as_u64(), Some(k as u64));
        assert_eq!(
            step["target_per_s"].as_u64(),
            loadgen_steps[k]["target_per_s"].as_f64().map(|r| r as u64)
        );
        assert_eq!(
            step["pass"].as_bool(),
            Some(step["reasons"].as_array().is_some_and(Vec::is_empty))
        );
        // Every step was judged from loadgen's own step report; one the loadgen could not
        // measure honestly was no vote, for the loadgen's reasons only.
        let counted = step["counted_as"].as_str().unwrap_or("");
        assert!(["pass", "fail", "no vote"].contains(&counted), "{step}");
        if counted == "no vote" {
            assert!(
                step["reasons"][0]
                    .as_str()
                    .is_some_and(|r| r.starts_with("loadgen marked the run invalid")),
                "{step}"
            );
        }
    }
    assert!(stdout.contains("server CPU"), "{stdout}");
    assert!(file["elapsed_s"].as_f64().unwrap() < 40.0);
    let at = |rate: u64, counted: &str| {
        steps
            .iter()
            .filter(|s| s["target_per_s"].as_u64() == Some(rate) && s["counted_as"] == counted)
            .count()
    };
    match file["limiting_factor"].as_str() {
        // The answer expected: the 20 ms-per-echo server is its own limit, bracketed by a rate
        // it passed and one it failed in agreeing measurements.
        Some("server") => {
            let capacity = file["capacity_per_s"].as_u64().expect("a capacity");
            let first_fail = file["first_fail_per_s"].as_u64().expect("a failure");
            assert!(capacity < first_fail, "{stdout}");
            assert!(
                (200..=820).contains(&capacity),
                "implausible capacity {capacity} for 16 × 20 ms: {stdout}"
            );
            assert!(stdout.contains("limited by the server"), "{stdout}");
            assert!(at(capacity, "pass") >= 1, "{stdout}");
            assert!(at(first_fail, "fail") >= 2, "{stdout}");
        }
        // A machine too busy for the loadgen to keep its schedule: then it must say so, and
        // the answer is a lower bound.
        Some("loadgen") => {
            eprintln!("the loadgen could not measure honestly on this machine: {stdout}");
            let limit = file["loadgen_limit_per_s"].as_u64().expect("the rate");
            assert!(at(limit, "no vote") >= 2, "{stdout}");
            assert!(
                stdout.contains(&format!("at {limit} msg/s")) && stdout.contains("the loadgen"),
                "{stdout}"
            );
        }
        other => panic!("limited by {other:?}: {stdout}"),
    }
    assert!(
        steps.iter().any(|s| s["latency_us"]["p99"].is_number()),
        "{stdout}"
    );
    assert_eq!(file["slo"]["text"], "p99<=300ms");
    assert_eq!(file["slo"]["latency"][0]["key"], "p99");
    assert_eq!(file["slo"]["latency"][0]["limit_us"], 300_000.0);
    assert_eq!(file["slo"]["max_errors"], 0);
    assert!(out.path().join("capacity.svg").exists());
    assert!(out.path().join("index.html").exists());

    // `report` redraws the plot and the page from capacity.json alone.
    std::fs::remove_file(out.path().join("capacity.svg")).expect("removable");
    std::fs::remove_file(out.path().join("index.html")).expect("removable");
    let status = xtask(["report"]).arg(out.path()).status().expect("runs");
    assert!(status.success());
    assert!(out.path().join("capacity.svg").exists());
    let index = std::fs::read_to_string(out.path().join("index.html")).expect("index");
    assert!(index.contains("capacity: ") && index.contains("<img src=\"capacity.svg\""));
}

#[test]
fn unparsable_slo_and_unknown_strategy_exit_2() {
    for (args, says) in [
        (
            vec!["capacity", "--slo", "p99 under a millisecond"],
            "has no comparison",
        ),
        (
            vec!["capacity", "--slo", "p99<=soon"],
            "\"soon\" does not start with a number",
        ),
        (
            vec!["capacity", "--slo", "p99<=1ms,rate>=5000"],
            "capacity needs upper bounds",
        ),
        (
            vec!["capacity", "--slo", "p99<=1ms", "--strategy", "fibers"],
            "unknown strategy \"fibers\"",
        ),
    ] {
        let (_, stderr) = run_to_exit(&mut xtask(&args), 2);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        if !args.contains(&"--strategy") {
            assert!(
                stderr.contains("expected e.g. 'p99<=1ms"),
                "{args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn a_server_that_never_listens_fails_and_leaves_no_process() {
    let (mute, marker) = mute_server(9);
    fails_and_leaves_no_process(
        &[
            "capacity",
            "--slo",
            "p99<=1ms",
            "--ready-timeout",
            "1s",
            "--server",
            &mute,
        ],
        &marker,
        "did not accept connections",
    );
}
