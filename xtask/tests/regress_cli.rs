//! `cargo xtask regress` both ways, on port 0 with short trials: a server against itself is
//! not `slower` (exit 0), a server that sleeps 2 ms before every echo is `slower` (exit 1); bad
//! input (an unknown git ref, a bad threshold, an unknown strategy …) exits 2 before anything runs.

mod common;

use std::sync::Mutex;

use common::{binaries, fixture_echo, read_json, run_to_exit, xtask, xtask_run};

/// The regress runs of this file take turns: three paired measurements at once on two cores
/// would mostly measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `regress` with short trials and `extra`, asserts it exits with `code` and wrote a
/// consistent `regress.json`; returns its stdout and stderr.
fn regress(extra: &[&str], code: i32) -> (String, String) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let out = tempfile::tempdir().expect("temp dir");
    let mut argv: Vec<&str> = vec![
        "regress",
        "--duration",
        "400ms",
        "--warmup",
        "100ms",
        "--connections",
        "4",
    ];
    argv.extend(extra);
    let outputs = run_to_exit(&mut xtask_run(argv, out.path()), code);
    let file = read_json(&out.path().join("regress.json"));
    assert_eq!(file["schema"], "echolab.xtask.regress/1");
    let pairs = file["estimate"]["pairs"].as_u64().expect("pairs");
    assert_eq!(
        file["trials"].as_array().map(Vec::len),
        Some(2 * pairs as usize)
    );
    assert!(out.path().join("index.html").exists());
    outputs
}

#[test]
fn a_server_against_itself_is_not_slower() {
    let server = format!(
        "{} --addr 127.0.0.1:{{port}} --strategy thread",
        binaries().echo_server.display()
    );
    let (stdout, _) = regress(
        &[
            "--trials",
            "6",
            "--threshold",
            "10%",
            "--baseline-server",
            &server,
            "--candidate-server",
            &server,
        ],
        0,
    );
    assert!(
        stdout.contains("verdict: no change") || stdout.contains("verdict: faster"),
        "{stdout}"
    );
}

#[test]
fn a_server_that_sleeps_per_message_is_slower() {
    let (stdout, stderr) = regress(
        &[
            "--trials",
            "6",
            "--baseline-server",
            &fixture_echo("0ms"),
            "--candidate-server",
            &fixture_echo("2ms"),
        ],
        1,
    );
    assert!(stdout.contains("verdict: slower"), "{stdout}");
    assert!(
        stderr.contains("slower than the baseline beyond the 5.0% threshold"),
        "{stderr}"
    );
}

#[test]
fn the_p99_metric_sees_the_sleep_too() {
    // p99 is noisier than throughput on a shared machine: more pairs and a longer sleep.
    regress(
        &[
            "--trials",
            "6",
            "--metric",
            "p99",
            "--baseline-server",
            &fixture_echo("0ms"),
            "--candidate-server",
            // p99 of an unloaded echo reaches a few ms on a busy 2-core machine (seen: 2.7 ms
            // while other builds ran), so the sleep must stand well clear of that noise.
            &fixture_echo("20ms"),
        ],
        1,
    );
}

#[test]
fn unknown_git_ref_and_bad_threshold_exit_2() {
    for (args, says) in [
        (
            vec!["regress", "--baseline", "no-such-ref-7f3a9c"],
            "\"no-such-ref-7f3a9c\" is not a commit",
        ),
        (
            vec!["regress", "--baseline", "HEAD", "--threshold", "lots"],
            "--threshold \"lots\": expected e.g. 5% or 0.05",
        ),
        (
            vec!["regress", "--baseline-server", "x {port}"],
            "--baseline-server and --candidate-server go together",
        ),
        (
            vec!["regress", "--baseline", "HEAD", "--trials", "3"],
            "at least 6 pairs",
        ),
        (
            vec!["regress", "--baseline", "HEAD", "--strategy", "fibers"],
            "unknown strategy \"fibers\"; known: iterative,",
        ),
    ] {
        let (_, stderr) = run_to_exit(&mut xtask(&args), 2);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
