//! Load shapes and outputs of issue 4: churn, source addresses, chunked writes, pipelining,
//! timeouts, .hgrm/.hlog files, --slo exit codes, --start-at, merge, validity.

mod common;

use common::{Behavior, TestServer, config, loadgen_bin, read_json, run_expecting};
use loadgen::ErrorKind;

#[test]
fn churn_reconnects_and_times_connects() {
    let server = TestServer::start(Behavior::Echo);
    let mut c = config(&server.target());
    c.connections = 4;
    c.messages = Some(200);
    c.messages_per_connection = Some(10);
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!(r.messages.verified, 200);
    assert_eq!(r.connections.opened, 20);
    assert_eq!(r.connect_us.count, 20);
    assert!(r.connect_us.min >= 1);
    assert_eq!(
        server.accepted.load(std::sync::atomic::Ordering::SeqCst),
        20
    );
}

#[test]
fn source_addresses_spread_connections() {
    let server = TestServer::start(Behavior::Echo);
    let mut c = config(&server.target());
    c.connections = 6;
    c.messages = Some(60);
    c.messages_per_connection = Some(5);
    c.source_addrs = vec!["127.0.0.2-127.0.0.4".into()];
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!(r.messages.verified, 60);
    assert_eq!(r.connections.opened, 12);
    // The server saw the connections come from the three source addresses, evenly.
    let peers = server.peers.lock().unwrap().clone();
    let mut distinct: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct,
        ["127.0.0.2", "127.0.0.3", "127.0.0.4"],
        "{peers:?}"
    );
    for ip in &distinct {
        let n = peers.iter().filter(|p| &p.to_string() == ip).count();
        assert_eq!(n, 4, "{ip}: {peers:?}");
    }
}

#[test]
fn unusable_source_address_is_addr_not_available_with_the_fix() {
    let server = TestServer::start(Behavior::Echo);
    let mut c = config(&server.target());
    c.connections = 2;
    // TEST-NET-1 is never a local address, so bind(2) fails before any packet is sent.
    c.source_addrs = vec!["192.0.2.1".into()];
    let r = loadgen::run(&c).unwrap();
    assert_eq!(
        r.errors.count(ErrorKind::AddrNotAvailable),
        2,
        "{:?}",
        r.errors
    );
    assert!(r.errors.samples[0].detail.contains("--source-addrs"));
    assert!(r.unreachable());
}

#[test]
fn one_byte_writes_and_deep_pipelines_verify() {
    let server = TestServer::start(Behavior::Echo);
    let mut c = config(&server.target());
    c.size_bytes = 300;
    c.messages = Some(400);
    c.write_chunk_bytes = Some(1);
    c.depth = Some(8);
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!(r.messages.verified, 400);
    assert_eq!(r.bytes.sent, 400 * 300);
    // One-byte writes with TCP_NODELAY reach the server in many more reads than there are
    // messages (whole-message writes would arrive in at most about one read per message).
    let reads = server.reads.load(std::sync::atomic::Ordering::SeqCst);
    assert!(reads > 2 * 400, "{reads} reads for 400 messages");
}

#[test]
fn a_server_that_never_answers_is_a_timeout() {
    let server = TestServer::start(Behavior::Pause {
        period_ms: 60_000,
        pause_ms: 59_999,
    });
    let mut c = config(&server.target());
    c.connections = 2;
    c.messages = Some(10);
    c.timeout_ms = 300;
    let started = std::time::Instant::now();
    let r = loadgen::run(&c).unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(r.errors.count(ErrorKind::Timeout), 2, "{:?}", r.errors);
    let s = &r.errors.samples[0];
    assert_eq!((s.message, s.offset), (Some(0), Some(0)));
    assert!(!r.valid);
}

#[test]
fn too_few_samples_make_the_run_invalid() {
    let server = TestServer::start(Behavior::Echo);
    let mut c = config(&server.target());
    c.messages = Some(20);
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0);
    assert!(!r.valid);
    assert!(
        r.invalid_reasons
            .iter()
            .any(|s| s.contains("20 latency samples")),
        "{:?}",
        r.invalid_reasons
    );
    // (A run this short can also find the loadgen's thread busy: only this kind is certain.)
    assert!(
        r.invalid_kinds
            .contains(&loadgen::validity::InvalidKind::FewSamples),
        "{:?}",
        r.invalid_kinds
    );
}

#[test]
fn hgrm_and_hlog_files_are_readable() {
    let server = TestServer::start(Behavior::Echo);
    let dir = tempfile::tempdir().unwrap();
    let hgrm = dir.path().join("l.hgrm");
    let hlog = dir.path().join("l.hlog");
    let json = dir.path().join("r.json");
    run_expecting(
        loadgen_bin()
            .args([
                "--target",
                &server.target(),
                "--connections",
                "2",
                "--duration",
                "2500ms",
            ])
            .args(["--warmup", "0s", "--rate", "400", "--hgrm"])
            .arg(&hgrm)
            .arg("--hlog")
            .arg(&hlog)
            .arg("--json")
            .arg(&json),
        0,
    );
    let text = std::fs::read_to_string(&hgrm).unwrap();
    assert!(
        text.contains("Percentile") && text.contains("Total count    =         1000"),
        "{text}"
    );
    // .hgrm values are milliseconds: its max is the report's max µs / 1000.
    let report: loadgen::Report = read_json(&json);
    let max_ms: f64 = text
        .split("#[Max     =")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|t| t.trim().parse().ok())
        .expect("a Max line");
    let expected_ms = report.latency_us.max as f64 / 1000.0;
    assert!(
        (max_ms - expected_ms).abs() <= 0.0011,
        "hgrm max {max_ms} ms, report max {} µs",
        report.latency_us.max
    );

    let log = std::fs::read(&hlog).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("#[StartTime: ") && text.contains("#[BaseTime: "),
        "{text}"
    );
    let mut total = 0u64;
    let mut intervals = 0;
    let mut starts = Vec::new();
    for item in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&log) {
        if let Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(h)) = item {
            let hist = loadgen::report::decode_histogram(h.encoded_histogram()).unwrap();
            total += hist.len();
            intervals += 1;
            starts.push(h.start_timestamp().as_secs_f64());
            assert_eq!(h.duration().as_secs_f64(), 1.0);
        }
    }
    assert_eq!(
        total, 1000,
        "every verified message is in exactly one interval"
    );
    assert!(
        (3..=4).contains(&intervals),
        "{intervals} intervals: {text}"
    );
    assert_eq!(starts[..3], [0.0, 1.0, 2.0]);
}

#[test]
fn slo_exit_codes() {
    let server = TestServer::start(Behavior::Echo);
    let run = |slo: &str, code: i32| {
        run_expecting(
            loadgen_bin()
                .args([
                    "--target",
                    &server.target(),
                    "--connections",
                    "2",
                    "--messages",
                    "400",
                ])
                .args(["--warmup", "0s", "--slo", slo]),
            code,
        )
    };
    let met = run("p99<=10s,errors=0", 0);
    assert!(String::from_utf8_lossy(&met.stdout).contains("SLO p99<=10s met"));
    let unmet = run("p99<=1ns,errors=0", 3);
    let stdout = String::from_utf8_lossy(&unmet.stdout);
    assert!(stdout.contains("SLO p99<=1ns NOT MET"), "{stdout}");
    assert!(stdout.contains("SLO errors=0 met"), "{stdout}");
    let bad = run("p99 under 1ms", 2);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad --slo"));
    // An invalid run (too few samples) misses any SLO.
    let few = run_expecting(
        loadgen_bin()
            .args([
                "--target",
                &server.target(),
                "--messages",
                "10",
                "--warmup",
                "0s",
            ])
            .args(["--slo", "p99<=10s"]),
        3,
    );
    assert!(String::from_utf8_lossy(&few.stdout).contains("not valid"));
}

#[test]
fn start_at_waits_for_the_given_time() {
    let server = TestServer::start(Behavior::Echo);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut c = config(&server.target());
    c.messages = Some(100);
    c.start_at_unix_s = Some(now + 0.7);
    let r = loadgen::run(&c).unwrap();
    assert!(
        r.env.start_unix_s >= now + 0.7,
        "{} < {}",
        r.env.start_unix_s,
        now + 0.7
    );
    assert_eq!(r.messages.verified, 100);
}

#[test]
fn nofile_limit_failure_says_what_is_needed() {
    let err = loadgen::run::raise_nofile_limit(u64::MAX / 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("open files are needed"), "{err}");
    assert!(err.contains("hard limit"), "{err}");
}
