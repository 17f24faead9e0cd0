//! loadgen against faithful and faulty in-test echo servers, through the library API.

mod common;

use common::{Behavior, TestServer, config};
use loadgen::ErrorKind;

#[test]
fn messages_bound_verifies_every_message_without_errors() {
    let server = TestServer::start(Behavior::Echo);
    let mut c = config(&server.target());
    c.connections = 8;
    c.messages = Some(5_001);
    c.size_bytes = 100;
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!(r.messages.sent, 5_001);
    assert_eq!(r.messages.verified, r.messages.sent);
    assert_eq!(r.bytes.sent, 5_001 * 100);
    assert_eq!(r.bytes.received, 5_001 * 100);
    assert_eq!(r.connections.opened, 8);
    assert_eq!(r.latency_us.count, 5_001);
    assert!(r.latency_us.min >= 1 && r.latency_us.min <= r.latency_us.p50);
    assert!(r.latency_us.p50 <= r.latency_us.p99 && r.latency_us.p99 <= r.latency_us.max);
    assert_eq!(r.latency_histogram().unwrap().len(), 5_001);
    assert!(r.throughput.messages_per_s > 0.0);
    assert_eq!(r.connections.min_messages + 1, r.connections.max_messages);
    let busy = r.loadgen.busy_fraction;
    assert!((0.0..=1.05).contains(&busy), "busy {busy}");
}

#[test]
fn duration_bound_with_warmup_and_large_messages() {
    let server = TestServer::start(Behavior::Echo);
    let mut c = config(&server.target());
    c.messages = None;
    c.duration_ms = Some(500);
    c.warmup_ms = 200;
    c.size_bytes = 100_000;
    c.depth = Some(3);
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert!(r.messages.verified > 0);
    // Messages still in flight when the window ends were sent in it but are not counted as
    // verified (their echoes complete after it): at most depth × connections of them.
    assert!(r.messages.verified <= r.messages.sent, "{:?}", r.messages);
    assert!(
        r.messages.sent - r.messages.verified <= 3 * c.connections as u64,
        "{:?}",
        r.messages
    );
    assert!((r.duration_s - 0.5).abs() < 1e-9);
}

#[test]
fn one_flipped_byte_is_one_corrupt_error_at_the_right_place() {
    let size = 64u64;
    let at = 10 * size + 37; // message 10, offset 37
    let server = TestServer::start(Behavior::CorruptAt(at));
    let mut c = config(&server.target());
    c.connections = 1;
    c.threads = 1;
    c.messages = Some(50);
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 1, "{:?}", r.errors);
    assert_eq!(r.errors.count(ErrorKind::Corrupt), 1);
    let s = &r.errors.samples[0];
    assert_eq!(s.kind, ErrorKind::Corrupt);
    assert_eq!(s.connection, Some(0));
    assert_eq!(s.message, Some(10));
    assert_eq!(s.offset, Some(37));
    assert_eq!(s.expected.zip(s.got).map(|(e, g)| e ^ g), Some(0x01));
    assert_eq!(r.messages.verified, 10);
}

#[test]
fn a_lost_byte_is_corrupt_where_the_shifted_echo_first_differs() {
    let size = 64u64;
    let at = 7 * size + 20; // message 7, offset 20
    let server = TestServer::start(Behavior::DropAt(at));
    let mut c = config(&server.target());
    c.connections = 1;
    c.threads = 1;
    c.messages = Some(30);
    c.timeout_ms = 2_000;
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.count(ErrorKind::Corrupt), 1, "{:?}", r.errors);
    let s = &r.errors.samples[0];
    // Byte o of the echo is byte o + 1 of the message from offset 20 on: the first wrong byte
    // is the first o ≥ 20 where those differ (20 itself unless two neighbours are equal).
    let p = loadgen::payload::pattern();
    let first = (20..size - 1)
        .find(|&o| p.byte_at(0, 7, o + 1) != p.byte_at(0, 7, o))
        .unwrap();
    assert!(first < 28, "{first}");
    assert_eq!(
        (s.connection, s.message, s.offset),
        (Some(0), Some(7), Some(first))
    );
    assert_eq!(s.expected, Some(p.byte_at(0, 7, first)));
    assert_eq!(s.got, Some(p.byte_at(0, 7, first + 1)));
    assert_eq!(r.messages.verified, 7);
}

#[test]
fn a_flipped_byte_in_1_mib_messages_on_16_connections_is_located_exactly() {
    let size = 1u64 << 20;
    // Message 2 of every connection, 700,001 bytes in: inside its eleventh 64 KiB block.
    let at = 2 * size + 700_001;
    let server = TestServer::start(Behavior::CorruptAt(at));
    let mut c = config(&server.target());
    c.size_bytes = size as usize;
    c.connections = 16;
    c.messages = Some(16 * 4);
    c.timeout_ms = 20_000;
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.count(ErrorKind::Corrupt), 16, "{:?}", r.errors);
    assert_eq!(r.errors.total, 16, "{:?}", r.errors);
    assert_eq!(
        r.messages.verified,
        16 * 2,
        "messages 0 and 1 of each connection"
    );
    for s in &r.errors.samples {
        assert_eq!((s.message, s.offset), (Some(2), Some(700_001)), "{s:?}");
        assert_eq!(s.expected.zip(s.got).map(|(e, g)| e ^ g), Some(0x01));
    }
}

#[test]
fn corruption_is_attributed_to_each_connection() {
    let server = TestServer::start(Behavior::CorruptAt(3 * 32 + 5));
    let mut c = config(&server.target());
    c.size_bytes = 32;
    c.connections = 4;
    c.messages = Some(40);
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.count(ErrorKind::Corrupt), 4, "{:?}", r.errors);
    let mut conns: Vec<u64> = r
        .errors
        .samples
        .iter()
        .filter_map(|s| s.connection)
        .collect();
    conns.sort_unstable();
    assert_eq!(conns, [0, 1, 2, 3]);
    for s in &r.errors.samples {
        assert_eq!((s.message, s.offset), (Some(3), Some(5)));
    }
}

#[test]
fn refused_target_is_a_refused_error_and_unreachable() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut c = config(&addr.to_string());
    c.connections = 3;
    let r = loadgen::run(&c).unwrap();
    assert!(r.unreachable());
    assert_eq!(r.errors.count(ErrorKind::Refused), 3, "{:?}", r.errors);
    assert_eq!(r.errors.total, 3);
    assert!(!r.valid);
}

#[test]
fn server_closing_early_is_eof_or_short() {
    let server = TestServer::start(Behavior::CloseAfter(5 * 64 + 10));
    let mut c = config(&server.target());
    c.connections = 1;
    c.threads = 1;
    c.messages = Some(20);
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.count(ErrorKind::Short), 1, "{:?}", r.errors);
    assert_eq!(r.errors.samples[0].message, Some(5));
    assert_eq!(r.errors.samples[0].offset, Some(10));
    let server = TestServer::start(Behavior::CloseAfter(5 * 64));
    let r = loadgen::run(&config(&server.target()).clone()).unwrap();
    assert!(r.errors.count(ErrorKind::Eof) >= 1, "{:?}", r.errors);
}

#[test]
fn fewer_messages_than_connections_opens_only_the_slots_with_work() {
    let server = TestServer::start(Behavior::Echo);
    let mut c = config(&server.target());
    c.connections = 6;
    c.messages = Some(3);
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!(r.messages.verified, 3);
    assert_eq!(r.connections.opened, 3);
    assert_eq!(
        (r.connections.min_messages, r.connections.max_messages),
        (0, 1)
    );
}

#[test]
fn bytes_after_the_last_echo_are_corrupt() {
    let server = TestServer::start(Behavior::GarbageAtEof(b"junk"));
    let mut c = config(&server.target());
    c.connections = 2;
    c.messages = Some(40);
    c.timeout_ms = 20_000;
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.messages.verified, 40);
    assert_eq!(r.errors.count(ErrorKind::Corrupt), 2, "{:?}", r.errors);
    assert_eq!(r.errors.total, 2, "{:?}", r.errors);
    let s = &r.errors.samples[0];
    assert!(
        s.detail.contains("extra bytes after the last echo"),
        "{}",
        s.detail
    );
    assert_eq!(s.message, Some(20));
    // A faithful server closes on our half-close: no error, and no wait for the drain timeout.
    let server = TestServer::start(Behavior::Echo);
    c.target = server.target();
    let started = std::time::Instant::now();
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// The server holds every echo until 1.5 s after it started, inside the 2 s warm-up; the
/// window after it is served at once. Warm-up messages are not recorded, so no latency in the
/// report comes near the hold.
#[test]
fn warmup_messages_are_not_recorded() {
    let server = TestServer::start(Behavior::HoldUntil { until_ms: 1_500 });
    let mut c = config(&server.target());
    c.connections = 2;
    c.messages = None;
    c.warmup_ms = 2_000;
    c.duration_ms = Some(500);
    c.timeout_ms = 20_000;
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert!(r.messages.verified > 0, "{:?}", r.messages);
    // Warm-up messages waited up to 1.5 s; window messages are answered at once.
    assert!(
        r.latency_us.max < 1_000_000,
        "max latency {} µs: a warm-up message was recorded",
        r.latency_us.max
    );
}

/// A server that does not close on the client's half-close: the drain gives up after at most
/// 1 s without an error, and a `--messages` run's duration still ends at the last echo.
#[test]
fn a_server_that_ignores_the_half_close_is_no_error_and_no_longer_run() {
    let server = TestServer::start(Behavior::LingerAfterEof { ms: 5_000 });
    let mut c = config(&server.target());
    c.connections = 2;
    c.messages = Some(200);
    let started = std::time::Instant::now();
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!(r.messages.verified, 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    assert!(r.duration_s < 0.9, "duration {} s", r.duration_s);
}
