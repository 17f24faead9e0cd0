//! Coordinated omission: a test server pauses all echoing for S ms every P ms. Messages whose
//! intended send time falls t ms into a pause complete about S - t ms late, so the fraction of
//! latencies above x is (S - x) / P: p99 = S - 0.01 P, p95 = S - 0.05 P. Open loop measures that
//! whether sends go out on time or are held back (one in flight per connection); the service
//! time hides the stall when sends are held back; a closed loop hides it altogether.

mod common;

use common::{Behavior, TestServer};

// Long pauses keep scheduling noise of a loaded machine (a few ms) small against the margin.
const PERIOD_MS: u64 = 1500;
const PAUSE_MS: u64 = 300;

fn expected_us(q: f64) -> f64 {
    (PAUSE_MS as f64 - (1.0 - q) * PERIOD_MS as f64) * 1000.0
}

fn assert_within(actual_us: u64, expected_us: f64, tolerance: f64, what: &str) {
    let ratio = actual_us as f64 / expected_us;
    assert!(
        (1.0 - tolerance..=1.0 + tolerance).contains(&ratio),
        "{what}: {actual_us} µs, expected {expected_us:.0} µs ±{:.0}%",
        tolerance * 100.0
    );
}

fn config(target: &str) -> loadgen::Config {
    let mut c = loadgen::Config::new(target);
    c.connections = 4;
    c.threads = 2;
    c.warmup_ms = 0;
    c.duration_ms = Some(3 * PERIOD_MS);
    c.quiet = true;
    c
}

#[test]
fn open_loop_corrects_coordinated_omission() {
    let server = TestServer::start(Behavior::Pause {
        period_ms: PERIOD_MS,
        pause_ms: PAUSE_MS,
    });

    // Sends on schedule (no cap on messages in flight): corrected latency and service time
    // both see the stall.
    let mut c = config(&server.target());
    c.rate_per_s = Some(2000.0);
    let on_time = loadgen::run(&c).unwrap();
    assert_eq!(on_time.errors.total, 0, "{:?}", on_time.errors);
    assert_within(
        on_time.latency_us.p99,
        expected_us(0.99),
        0.2,
        "on time: latency p99",
    );
    assert_within(
        on_time.latency_us.p95,
        expected_us(0.95),
        0.2,
        "on time: latency p95",
    );
    assert_within(
        on_time.service_time_us.p99,
        on_time.latency_us.p99 as f64,
        0.2,
        "on time: service p99 agrees with latency p99",
    );
    let ratio = on_time.throughput.achieved_ratio.unwrap();
    assert!(ratio > 0.9, "achieved ratio {ratio}");
    let on_time_lag = on_time.schedule.expect("open loop reports its schedule");
    assert_eq!(on_time.throughput.target_per_s, Some(2000.0));

    // Sends held back (one in flight per connection, like closed-loop tools): the corrected
    // latency still sees the stall; the service time hides it.
    c.depth = Some(1);
    let held = loadgen::run(&c).unwrap();
    assert_eq!(held.errors.total, 0, "{:?}", held.errors);
    assert_within(
        held.latency_us.p99,
        expected_us(0.99),
        0.2,
        "held back: latency p99",
    );
    assert!(
        (held.service_time_us.p99 as f64) < expected_us(0.99) / 2.0,
        "held back: service p99 {} should hide the stall",
        held.service_time_us.p99
    );
    let held_lag = held.schedule.expect("schedule");
    assert!(
        held_lag.max_lag_us > PAUSE_MS * 1000 / 2,
        "held-back sends lag their schedule by about the pause: {held_lag:?}"
    );
    assert!(
        on_time_lag.p99_lag_us < held_lag.p99_lag_us / 2,
        "sends on time lag far less than held-back ones: {on_time_lag:?} vs {held_lag:?}"
    );
    // Held back by the server, not late by the loadgen's fault: the run is valid, the loadgen
    // not saturated, and the lag sits in the send lag and `held_back`, not in the loop lag.
    assert!(held_lag.held_back > 0, "{held_lag:?}");
    assert!(!held_lag.behind, "{held_lag:?}");
    assert!(!held.loadgen.saturated, "{:?}", held.loadgen);
    assert!(held.valid, "{:?}", held.invalid_reasons);
    assert!(
        held_lag.loop_p99_lag_us < held_lag.p99_lag_us,
        "loop lag excludes the wait for the server: {held_lag:?}"
    );
    assert!(!on_time_lag.behind, "{on_time_lag:?}");
    assert!(on_time.valid, "{:?}", on_time.invalid_reasons);

    eprintln!(
        "on time: latency p95 {} p99 {}, service p99 {}; held back: latency p99 {}, service p99 {}",
        on_time.latency_us.p95,
        on_time.latency_us.p99,
        on_time.service_time_us.p99,
        held.latency_us.p99,
        held.service_time_us.p99
    );
    // Closed loop against the same server: the stall all but disappears from p99.
    let mut closed = config(&server.target());
    closed.depth = Some(1);
    let closed = loadgen::run(&closed).unwrap();
    assert_eq!(closed.errors.total, 0, "{:?}", closed.errors);
    assert!(closed.schedule.is_none());
    assert!(
        (closed.latency_us.p99 as f64) < expected_us(0.99) / 2.0,
        "closed loop p99 {} µs hides the stall (corrected: {} µs)",
        closed.latency_us.p99,
        on_time.latency_us.p99
    );
    assert!(closed.latency_us.max as f64 > PAUSE_MS as f64 * 1000.0 * 0.5);
}

#[test]
fn poisson_arrivals_reach_the_target_rate() {
    let server = TestServer::start(Behavior::Echo);
    let mut c = config(&server.target());
    c.duration_ms = Some(1000);
    c.rate_per_s = Some(1000.0);
    c.arrival = loadgen::Arrival::Poisson;
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    // 1000 expected; a Poisson count has sd ≈ 32, so 800..1200 is over six sigma.
    assert!(
        (800..=1200).contains(&r.messages.sent),
        "{} messages",
        r.messages.sent
    );
    // An echo that completes after the window is not counted: at most one per connection.
    assert!(
        r.messages.verified <= r.messages.sent && r.messages.verified + 4 >= r.messages.sent,
        "{:?}",
        r.messages
    );
}

#[test]
fn uniform_rate_sends_exactly_the_scheduled_messages() {
    let server = TestServer::start(Behavior::Echo);
    let mut c = config(&server.target());
    c.duration_ms = Some(1000);
    c.rate_per_s = Some(400.0);
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!(r.messages.sent, 400);
    assert_eq!(r.latency_us.count, 400);
    // The last message of each connection is due 2.5 ms or more before the window ends; on a
    // loaded machine its echo may complete after the end and is then not counted.
    assert!(r.messages.verified >= 396, "{:?}", r.messages);
    let ratio = r.throughput.achieved_ratio.unwrap();
    assert!((0.99..=1.0 + 1e-9).contains(&ratio), "achieved {ratio}");
}

#[test]
fn a_refused_target_does_not_blame_the_loadgen() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut c = config(&addr.to_string());
    c.duration_ms = Some(500);
    c.rate_per_s = Some(1000.0);
    let r = loadgen::run(&c).unwrap();
    assert!(r.unreachable());
    let s = r.schedule.expect("open loop reports its schedule");
    assert!(!s.behind, "{s:?}");
    assert!(!r.loadgen.saturated, "{:?}", r.loadgen);
    assert!(
        (0.0..=1.05).contains(&r.loadgen.busy_fraction),
        "{:?}",
        r.loadgen
    );
    assert!(
        r.invalid_reasons.iter().all(|x| !x.contains("fell behind")),
        "{:?}",
        r.invalid_reasons
    );
}

/// At 20 messages/s over 40 connections each connection sends one message every 2 s: it is idle
/// between echoes, and idle is not starved (only time with a message outstanding counts).
#[test]
fn idle_connections_at_a_low_rate_are_not_starved() {
    let server = TestServer::start(Behavior::Echo);
    let mut c = config(&server.target());
    c.connections = 40;
    c.duration_ms = Some(2_500);
    c.rate_per_s = Some(20.0);
    c.stall_threshold_ms = 1_000;
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!(r.connections.opened, 40);
    assert_eq!(r.connections.starved, 0, "{:?}", r.connections);
    let mut out = Vec::new();
    loadgen::summary::write_summary(&r, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("without any echo"), "{text}");
}
