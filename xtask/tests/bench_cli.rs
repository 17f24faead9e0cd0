//! End-to-end tests of `cargo xtask bench` against the real binaries on 127.0.0.1 port 0:
//! a tiny bench in-process (run directory, manifest parsed back, summaries), and the CLI's
//! failure paths — unknown strategy (exit 2), a server that never listens (exit 1, nothing left
//! running), Ctrl-C during a trial (exit 130, nothing left running).
//!
//! The binaries come from a nested `cargo build -p echo-server -p loadgen` (dev profile: fast to
//! build, and these tests check behaviour, never speed).

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    binaries, fails_and_leaves_no_process, files_ending, fixture_echo, mute_server,
    processes_mentioning, read_json, run_to_exit, xtask, xtask_run,
};
use xtask::bench::run_plan;
use xtask::record::manifest::Manifest;
use xtask::record::plan::{BenchPlan, ServerEntry};
use xtask::shell::project_root;

fn tiny_plan(servers: Vec<ServerEntry>) -> BenchPlan {
    BenchPlan {
        servers,
        all_strategies: false,
        connections: vec![1, 4],
        sizes_bytes: vec![64],
        depth: None,
        rate_per_s: None,
        trials: 2,
        duration_ms: 300,
        warmup_ms: 100,
        pin: true,
        // Where the server can be pinned, its CPUs are kept awake meanwhile (`--keep-awake`).
        keep_awake: xtask::shell::allowed_cpus().len() >= 2,
        seed: 7,
        ready_timeout_ms: 20_000,
        server_args: vec![],
        workloads: vec![],
    }
}

#[test]
fn tiny_bench_writes_a_complete_run_directory() {
    let run_dir = tempfile::tempdir().expect("temp dir");
    let fixture = fixture_echo("0ms");
    let plan = tiny_plan(vec![
        // `pool:3` on the command line: the count reaches the server as --workers 3.
        ServerEntry {
            threads: Some(3),
            ..ServerEntry::builtin("pool")
        },
        ServerEntry {
            name: "fixture".into(),
            command: Some(fixture),
            threads: None,
        },
    ]);
    let (summaries, _) =
        run_plan(&plan, binaries(), run_dir.path(), &project_root()).expect("bench runs");

    assert_eq!(summaries.len(), 4);
    for summary in &summaries {
        assert_eq!(summary.trials, 2, "{summary:?}");
        assert_eq!(summary.failed_trials, 0, "{summary:?}");
        assert_eq!(summary.errors, 0, "{summary:?}");
        assert!(summary.messages_per_s_median > 0.0, "{summary:?}");
        assert!(summary.p99_us >= summary.p50_us, "{summary:?}");
        assert!(summary.server_peak_rss_kib.unwrap_or(0) > 0, "{summary:?}");
        assert!(
            summary.server_cpu_per_message_us.is_some_and(|us| us > 0.0),
            "{summary:?}"
        );
        // Built-in strategies report their real worker count; external servers cannot.
        let expected = (summary.cell.server == "pool").then_some(3);
        assert_eq!(summary.server_workers, expected, "{summary:?}");
    }

    let manifest = Manifest::read(run_dir.path()).expect("manifest parses back");
    assert_eq!(manifest.schema, "echolab.xtask.manifest/1");
    assert_eq!(manifest.command, "bench");
    assert!(manifest.cores >= 1);
    assert!(!manifest.host.is_empty() && !manifest.kernel.is_empty());
    assert!(
        manifest.started_at.ends_with('Z'),
        "{}",
        manifest.started_at
    );
    assert!(!manifest.command_line.is_empty());
    assert_eq!(manifest.config["trials"], 2);
    assert_eq!(manifest.config["seed"], 7);
    assert_eq!(manifest.config["keep_awake"], plan.keep_awake);
    assert!(manifest.versions.echo_server.is_some());
    // Pinned on 2+ cores: both CPU sets recorded, disjoint.
    if manifest.cores >= 2 {
        let server = manifest.server_cpus.clone().expect("server CPUs recorded");
        let loadgen = manifest
            .loadgen_cpus
            .clone()
            .expect("loadgen CPUs recorded");
        assert!(
            server.iter().all(|cpu| !loadgen.contains(cpu)),
            "{manifest:?}"
        );
    }

    let trials_dir = run_dir.path().join("trials");
    let reports = files_ending(&trials_dir, ".loadgen.json");
    assert_eq!(reports.len(), 8, "one loadgen report per trial");
    let trials = read_json(&run_dir.path().join("trials.json"));
    assert_eq!(trials["trials"].as_array().map(Vec::len), Some(8));
    let markdown = std::fs::read_to_string(run_dir.path().join("summary.md")).expect("md");
    assert!(markdown.contains("| pool (w="), "{markdown}");
    assert!(markdown.contains(") | 4 | 64 |"), "{markdown}");
    let csv = std::fs::read_to_string(run_dir.path().join("summary.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 5, "{csv}");
    // The pool server wrote its own counters on SIGTERM.
    let stats = files_ending(&trials_dir, ".server.json");
    assert_eq!(stats.len(), 4, "pool stats JSON per pool trial");

    // `cargo xtask merge` adds two trials' reports exactly.
    let pool_reports: Vec<&std::path::PathBuf> = reports
        .iter()
        .filter(|p| p.to_string_lossy().contains("-pool-c4-"))
        .collect();
    assert_eq!(pool_reports.len(), 2);
    let merged_path = run_dir.path().join("merged.json");
    run_to_exit(
        xtask(["merge"])
            .args(&pool_reports)
            .arg("-o")
            .arg(&merged_path),
        0,
    );
    let (a, b, merged) = (
        read_json(pool_reports[0]),
        read_json(pool_reports[1]),
        read_json(&merged_path),
    );
    let verified = |r: &serde_json::Value| r["messages"]["verified"].as_u64().expect("count");
    assert_eq!(verified(&merged), verified(&a) + verified(&b));
    let p99 = |r: &serde_json::Value| r["latency_us"]["p99"].as_f64().expect("p99");
    assert!(p99(&merged) >= p99(&a).min(p99(&b)) && p99(&merged) <= p99(&a).max(p99(&b)));

    // Plots and index.html were drawn; `report` redraws them from the stored JSON alone.
    for file in [
        "throughput.svg",
        "latency_c1.svg",
        "latency_c4.svg",
        "cpu_per_message.svg",
        "index.html",
    ] {
        let path = run_dir.path().join(file);
        assert!(path.exists(), "{file} missing");
        std::fs::remove_file(&path).expect("removable");
    }
    std::fs::remove_file(run_dir.path().join("summary.md")).expect("removable");
    xtask::report::run(run_dir.path()).expect("report redraws");
    let index = std::fs::read_to_string(run_dir.path().join("index.html")).expect("index.html");
    for needle in [
        "<img src=\"throughput.svg\"",
        "<img src=\"latency_c4.svg\"",
        "<td>pool (w=",
    ] {
        assert!(index.contains(needle), "index.html lacks {needle}");
    }
    let svg = std::fs::read_to_string(run_dir.path().join("throughput.svg")).expect("svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("fixture"),
        "legend names the servers"
    );
    assert_eq!(
        std::fs::read_to_string(run_dir.path().join("summary.md")).expect("redrawn"),
        markdown,
        "the same summary from the stored trials"
    );
}

#[test]
fn unknown_strategy_exits_2_before_building() {
    let (_, stderr) = run_to_exit(
        &mut xtask(["bench", "--strategies", "pool,fibers", "--smoke"]),
        2,
    );
    assert!(stderr.contains("unknown strategy \"fibers\""), "{stderr}");
}

/// The server command forks a grandchild (`sleep … &`) before exec'ing: stopping only the PID
/// xtask started would leave the grandchild running; the whole group must go.
#[test]
fn server_that_never_listens_fails_cleanly() {
    let (mute, marker) = mute_server(7);
    let mute = format!("mute={mute}");
    let started = Instant::now();
    fails_and_leaves_no_process(
        &[
            "bench",
            "--strategies",
            "none",
            "--smoke",
            "--ready-timeout",
            "1s",
            "--server",
            &mute,
        ],
        &marker,
        "mute did not accept connections on 127.0.0.1:",
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn ctrl_c_stops_server_and_loadgen() {
    let out = tempfile::tempdir().expect("temp dir");
    let marker = out.path().display().to_string();
    let mut child = xtask_run(
        [
            "bench",
            "--strategies",
            "pool",
            "--connections",
            "2",
            "--trials",
            "1",
            "--duration",
            "60s",
            "--warmup",
            "0ms",
        ],
        out.path(),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starts");
    let stderr = child.stderr.take().expect("stderr");
    let lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    // Wait until both the server (its --stats-json path) and loadgen (its --json path), which
    // mention the run directory, are running.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = processes_mentioning(&marker);
        if running.len() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "trial never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let status = child.wait().expect("xtask exits");
    let lines = lines.join().expect("reader").join("\n");
    assert_eq!(status.code(), Some(130), "{lines}");
    assert!(lines.contains("interrupted"), "{lines}");
    assert!(
        processes_mentioning(&marker).is_empty(),
        "children left behind: {:?}",
        processes_mentioning(&marker)
    );
}

#[test]
fn bin_dir_must_hold_both_binaries() {
    let empty = tempfile::tempdir().expect("temp dir");
    let (_, stderr) = run_to_exit(
        xtask(["bench", "--smoke", "--bin-dir"]).arg(empty.path()),
        2,
    );
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn all_strategies_are_the_ones_the_server_offers() {
    let out = tempfile::tempdir().expect("temp dir");
    let bmf = out.path().join("bmf.json");
    let (stdout, _) = run_to_exit(
        &mut xtask_run(
            [
                "bench",
                "--bmf",
                &bmf.display().to_string(),
                "--strategies",
                "all",
                "--connections",
                "1",
                "--trials",
                "1",
                "--duration",
                "200ms",
                "--warmup",
                "0ms",
                "--no-pin",
            ],
            out.path(),
        ),
        0,
    );
    let offered = xtask::trial::server::offered_strategies(&binaries().echo_server).expect("lists");
    assert!(offered.len() >= 3, "{offered:?}");
    // `--bmf`: one Bencher benchmark per cell, its throughput a number.
    let bmf = read_json(&bmf);
    for strategy in &offered {
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with(&format!("{strategy} "))),
            "{strategy} missing from\n{stdout}"
        );
        assert!(
            bmf[format!("echolab/bench/{strategy}/c1-s64")]["throughput"]["value"]
                .as_f64()
                .is_some(),
            "{strategy} missing from {bmf}"
        );
    }
    let manifest = Manifest::read(out.path()).expect("manifest");
    assert_eq!(manifest.config["pin"], false);
}

/// Named workloads end to end, briefly: churn and keepalive cells are named after their
/// workload, churn's loadgen gets its source addresses, and the matrix reaches the terminal,
/// `matrix.json`, `summary.md`, `summary.csv` and `index.html` (two trials: too few for a
/// verdict, which the matrix must say).
#[test]
fn named_workloads_reach_every_output() {
    let out = tempfile::tempdir().expect("temp dir");
    let (stdout, _) = run_to_exit(
        &mut xtask_run(
            [
                "bench",
                "--workloads",
                "churn,keepalive",
                "--connections",
                "4",
                "--strategies",
                "event-loop,thread",
                "--trials",
                "2",
                "--duration",
                "200ms",
                "--warmup",
                "100ms",
                "--no-pin",
            ],
            out.path(),
        ),
        0,
    );
    assert!(
        stdout.contains("Which strategy for which workload"),
        "{stdout}"
    );
    assert!(stdout.contains("churn c=4 64B (conn/s)"), "{stdout}");
    assert!(stdout.contains("keepalive c=4 64B (µs p99)"), "{stdout}");
    assert!(
        stdout.contains("verdict: no winner: too few trials"),
        "{stdout}"
    );
    let matrix = read_json(&out.path().join("matrix.json"));
    assert_eq!(matrix["schema"], "echolab.xtask.matrix/1");
    let rows = matrix["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["workload"], "churn");
    assert_eq!(rows[0]["merit"], "connections_per_s");
    assert_eq!(rows[1]["merit"], "p99_us");
    assert_eq!(rows[1]["cells"].as_array().map(Vec::len), Some(2));
    // summary.json is still a top-level array, one entry per cell, the workload in its cell.
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary.as_array().map(Vec::len), Some(4));
    assert_eq!(summary[0]["cell"]["workload"], "churn");
    let churn = files_ending(
        &out.path().join("trials"),
        "-event-loop-churn-c4-s64-t0.loadgen.json",
    );
    assert_eq!(churn.len(), 1, "trial files carry the workload");
    let report = read_json(&churn[0]);
    assert_eq!(report["config"]["messages_per_connection"], 1, "{report}");
    assert!(
        report["config"]["source_addrs"]
            .to_string()
            .contains("127.0.0.2"),
        "{report}"
    );
    let markdown = std::fs::read_to_string(out.path().join("summary.md")).expect("md");
    assert!(
        markdown.contains("## Which strategy for which workload"),
        "{markdown}"
    );
    let csv = std::fs::read_to_string(out.path().join("summary.csv")).expect("csv");
    assert!(
        csv.lines()
            .next()
            .is_some_and(|h| h.ends_with(",workload,judgement")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .skip(1)
            .all(|l| l.contains(",churn,") || l.contains(",keepalive,")),
        "{csv}"
    );
    let index = std::fs::read_to_string(out.path().join("index.html")).expect("index");
    assert!(
        index.contains("<table class=\"matrix\">") && index.contains("<img src=\"matrix.svg\""),
        "{index}"
    );
}

#[test]
fn unknown_workload_exits_2() {
    let (_, stderr) = run_to_exit(
        &mut xtask(["bench", "--workloads", "pingpong,websocket", "--smoke"]),
        2,
    );
    assert!(
        stderr.contains("unknown workload \"websocket\""),
        "{stderr}"
    );
}
