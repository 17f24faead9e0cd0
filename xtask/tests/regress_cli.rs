//! `cargo xtask regress` both ways, on port 0 with short trials: a server against itself is
//! not `slower` (exit 0), a server that sleeps 2 ms before every echo is `slower` (exit 1); bad
//! input (an unknown git ref, a bad threshold) exits 2 before anything runs.

mod common;

use std::process::Output;
use std::sync::Mutex;

use common::{binaries, fixture_echo, read_json, xtask, xtask_run};

/// The regress runs of this file take turns: three paired measurements at once on two cores
/// would mostly measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn regress(extra: &[String]) -> Output {
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
    argv.extend(extra.iter().map(String::as_str));
    let output = xtask_run(argv, out.path()).output().expect("runs");
    if output.status.code() != Some(2) {
        let file = read_json(&out.path().join("regress.json"));
        assert_eq!(file["schema"], "echolab.xtask.regress/1");
        let pairs = file["estimate"]["pairs"].as_u64().expect("pairs");
        assert_eq!(
            file["trials"].as_array().map(Vec::len),
            Some(2 * pairs as usize)
        );
        assert!(out.path().join("index.html").exists());
    }
    output
}

#[test]
fn a_server_against_itself_is_not_slower() {
    let server = format!(
        "{} --addr 127.0.0.1:{{port}} --strategy thread",
        binaries().echo_server.display()
    );
    let output = regress(&[
        "--trials".into(),
        "6".into(),
        "--threshold".into(),
        "10%".into(),
        "--baseline-server".into(),
        server.clone(),
        "--candidate-server".into(),
        server,
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("verdict: no change") || stdout.contains("verdict: faster"),
        "{stdout}"
    );
}

#[test]
fn a_server_that_sleeps_per_message_is_slower() {
    let output = regress(&[
        "--trials".into(),
        "6".into(),
        "--baseline-server".into(),
        fixture_echo("0ms"),
        "--candidate-server".into(),
        fixture_echo("2ms"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("verdict: slower"), "{stdout}");
    assert!(
        stderr.contains("slower than the baseline beyond the 5.0% threshold"),
        "{stderr}"
    );
}

#[test]
fn the_p99_metric_sees_the_sleep_too() {
    // p99 is noisier than throughput on a shared machine: more pairs and a longer sleep.
    let output = regress(&[
        "--trials".into(),
        "6".into(),
        "--metric".into(),
        "p99".into(),
        "--baseline-server".into(),
        fixture_echo("0ms"),
        "--candidate-server".into(),
        // p99 of an unloaded echo reaches a few ms on a busy 2-core machine (seen: 2.7 ms while
        // other builds ran), so the sleep must stand well clear of that noise.
        fixture_echo("20ms"),
    ]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn unknown_git_ref_and_bad_threshold_exit_2() {
    let output = xtask(["regress", "--baseline", "no-such-ref-7f3a9c"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"no-such-ref-7f3a9c\" is not a commit"),
        "{stderr}"
    );

    let output = xtask(["regress", "--baseline", "HEAD", "--threshold", "lots"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));

    let output = xtask(["regress", "--baseline-server", "x {port}"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));

    let output = xtask(["regress", "--baseline", "HEAD", "--trials", "3"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 6 pairs"));
}
