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
    // A server that sleeps 1 ms per echo on 4 connections holds at most ~4,000 msg/s, so a
    // ramp from 500/s finds its limit within a few steps whatever the machine's speed.
    let server = fixture_echo("1ms");
    let (stdout, _) = run_to_exit(
        &mut xtask_run(
            [
                "capacity",
                "--slo",
                "p99<=50ms",
                "--connections",
                "4",
                "--start-rate",
                "500",
                "--precision-percent",
                "25",
                "--duration",
                "700ms",
                "--warmup",
                "200ms",
                "--budget",
                "40s",
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
    assert_eq!(steps[0]["target_per_s"], 500);
    let capacity = file["capacity_per_s"].as_u64();
    let first_fail = file["first_fail_per_s"].as_u64();
    assert!(
        first_fail.is_some(),
        "a 1 ms-per-echo server must fail somewhere: {stdout}"
    );
    // A real answer, not "every step failed": 4 connections × 1 ms per echo hold at most
    // 4,000 msg/s, and a ramp from 500/s passes at least once even on a loaded machine.
    let capacity = capacity.unwrap_or_else(|| panic!("no capacity found: {stdout}"));
    let first_fail = first_fail.expect("checked above");
    assert!(capacity < first_fail, "{stdout}");
    assert!(
        (150..=4_100).contains(&capacity),
        "implausible capacity {capacity} for 4 × 1 ms: {stdout}"
    );
    // The reported rate was measured once more, and that confirmation passed.
    let confirmations: Vec<&serde_json::Value> =
        steps.iter().filter(|s| s["confirm"] == true).collect();
    assert_eq!(confirmations.len(), 1, "{stdout}");
    assert_eq!(file["confirmed"], confirmations[0]["pass"]);
    if file["confirmed"] == true {
        assert_eq!(confirmations[0]["target_per_s"].as_u64(), Some(capacity));
    }
    for step in steps {
        assert_eq!(
            step["pass"].as_bool(),
            Some(step["reasons"].as_array().is_some_and(Vec::is_empty))
        );
        // Every step report was read and judged by loadgen's SLO check.
        assert!(
            !step["reasons"].to_string().contains("not a loadgen report"),
            "{step}"
        );
    }
    assert!(
        steps.iter().any(|s| s["latency_us"]["p99"].is_number()),
        "{stdout}"
    );
    assert_eq!(file["slo"]["text"], "p99<=50ms");
    assert_eq!(file["slo"]["latency"][0]["key"], "p99");
    assert_eq!(file["slo"]["latency"][0]["limit_us"], 50_000.0);
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
