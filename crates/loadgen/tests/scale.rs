//! 10,000 concurrent connections from one loadgen process (2 threads) against the echo-server's
//! `event-loop` strategy in a separate process (the open-files limit is per process): the test
//! re-executes its own binary, selecting itself, to run the server as a child process. The small
//! mio echo server in `common/mio_echo.rs` (used by the `vs_blocking` bench) is checked here too.

mod common;
#[path = "common/mio_echo.rs"]
mod mio_echo;

use common::config;
use echo_server::{Config as ServerConfig, Server, Strategy};
use mio_echo::{bind, serve};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

const CHILD_ENV: &str = "LOADGEN_TEST_ECHO_CHILD";
/// Kills the child server (by its PID, through its handle) when the test ends, however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's part of `ten_thousand_connections_from_two_threads`: the event-loop echo server,
/// until killed. Never returns.
fn serve_as_child() -> ! {
    loadgen::run::raise_nofile_limit(15_000).unwrap();
    let strategy = Strategy::from_name("event-loop").expect("echo-server has event-loop");
    let mut config = ServerConfig::loopback(strategy);
    config.max_connections = 12_000;
    config.backlog = 8192;
    let server = Server::start(config).expect("server starts");
    println!("listening on {}", server.local_addr());
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}

/// The mio echo server of the bench serves pipelined large messages correctly.
#[test]
fn mio_echo_test_server() {
    let listener = bind();
    let addr = listener.local_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        serve(listener, move || {
            stop2.load(std::sync::atomic::Ordering::SeqCst)
        })
    });
    let mut c = config(&addr.to_string());
    c.connections = 50;
    c.messages = Some(5_000);
    c.size_bytes = 70_000;
    c.depth = Some(2);
    let r = loadgen::run(&c).unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    server.join().unwrap().expect("the test server's loop");
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!(r.messages.verified, 5_000);
}

/// The server runs in a child process: this test's own binary, re-executed with `CHILD_ENV` set
/// and this test selected, so that the child runs `serve_as_child` instead of the test.
#[test]
fn ten_thousand_connections_from_two_threads() {
    if std::env::var_os(CHILD_ENV).is_some() {
        serve_as_child();
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ten_thousand_connections_from_two_threads",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().unwrap();
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            // libtest may print "test NAME ... " on the same line first.
            l.split_once("listening on ")
                .map(|(_, addr)| addr.trim().to_string())
        })
        .expect("the child server reports its address");

    let mut c = loadgen::Config::new(addr);
    c.connections = 10_000;
    c.threads = 2;
    // Every connection must complete a round trip inside the window: at 10,000 connections one
    // round is 10,000 echoes, which a machine busy with other work (a parallel build) has taken
    // about 2 s to do; a 5 s window keeps that a correctness check, not a speed test.
    c.warmup_ms = 3_000;
    c.duration_ms = Some(5_000);
    c.timeout_ms = 20_000;
    // Spread the 10,000 local ports over several loopback source addresses, so that this test
    // does not eat the shared ephemeral port range of 127.0.0.1 (TIME_WAIT lasts 60 s).
    c.source_addrs = vec!["127.0.0.2-127.0.0.9".into()];
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors.samples);
    assert_eq!(r.connections.opened, 10_000);
    // Messages in flight at the end of the window are sent but not counted as verified.
    assert!(r.messages.verified <= r.messages.sent, "{:?}", r.messages);
    assert!(
        r.messages.sent - r.messages.verified <= 10_000,
        "{:?}",
        r.messages
    );
    assert!(r.connections.min_messages > 0, "{:?}", r.connections);
    assert_eq!(r.loadgen.threads, 2);
}
