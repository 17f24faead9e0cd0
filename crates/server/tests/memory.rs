//! Memory per connection at scale (issues 6 and 11): 10,000 persistent connections, each served
//! (one echo) and then idle, cost the `event-loop` and `reactor-pool` servers at most 8 KiB of
//! RSS each; `uring` and `async` keep the same rule (no buffer while idle) and are held to it
//! too. `thread` is reported beside them with its session stack size (a thread and a buffer per
//! connection: the figure the others are compared with), held only to a generous bound.
//!
//! The server runs as a child process (its RSS alone is measured, from `/proc/PID/status`);
//! the client holds the 10,000 sockets in this process. One `#[test]` runs the strategies in
//! turn so that at most 10,000 client sockets are open at once (the descriptor limit is 20,000).
//! Connections end with a reset (SO_LINGER 0) so that 10,000 client ports do not sit in
//! TIME_WAIT on a machine shared with other tests.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use echo_server::Strategy;

mod common;

const CONNECTIONS: usize = 10_000;
const BUDGET_KIB_PER_CONNECTION: u64 = 8;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Raises this process's soft open-files limit to the hard one: the client holds 10,000 sockets.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit),
                0,
                "raising RLIMIT_NOFILE"
            );
        }
    }
    assert!(
        limit.rlim_cur >= CONNECTIONS as u64 + 100,
        "open-files limit {} is below {CONNECTIONS} connections",
        limit.rlim_cur
    );
}

/// RSS growth per connection, in KiB, with `CONNECTIONS` served and idle connections open.
fn rss_per_connection_kib(strategy: Strategy) -> f64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo-server"))
        .args(["--addr", "127.0.0.1:0", "--strategy", strategy.name()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn echo-server");
    let addr = common::listening_addr(&mut BufReader::new(child.stdout.take().expect("stdout")));
    let pid = child.id();
    let _child = KillOnDrop(child);

    // Warm-up: the first connections create what every later one shares (thread stacks,
    // runtime structures), so the baseline includes them.
    let warm: Vec<TcpStream> = (0..16).map(|_| echoed(addr, 0)).collect();
    drop(warm);
    let baseline_kib = rss_kib(pid);
    let streams: Vec<TcpStream> = (0..CONNECTIONS).map(|i| echoed(addr, i)).collect();
    let grown_kib = rss_kib(pid).saturating_sub(baseline_kib);
    for stream in &streams {
        socket2::SockRef::from(stream)
            .set_linger(Some(Duration::ZERO))
            .expect("linger 0");
    }
    drop(streams);
    grown_kib as f64 / CONNECTIONS as f64
}

/// Stops the server child however the test ends (it is killed: its counters are not needed).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A connection that has been served once (so the server has set it up fully) and stays open.
fn echoed(addr: SocketAddr, i: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let message = (i as u64).to_le_bytes();
    stream.write_all(&message).expect("write");
    let mut echo = [0u8; 8];
    stream.read_exact(&mut echo).expect("echo");
    assert_eq!(echo, message, "connection {i}");
    stream
}

#[test]
fn ten_thousand_idle_connections_cost_at_most_8_kib_each() {
    raise_descriptor_limit();
    let strategies = [
        Strategy::ReactorPool,
        Strategy::EventLoop,
        Strategy::Async,
        #[cfg(all(target_os = "linux", feature = "uring"))]
        Strategy::Uring,
    ];
    let mut report = Vec::new();
    for strategy in strategies {
        let per_connection = rss_per_connection_kib(strategy);
        report.push(format!(
            "{strategy}: {per_connection:.2} KiB RSS per connection"
        ));
        assert!(
            per_connection <= BUDGET_KIB_PER_CONNECTION as f64,
            "{strategy}: {per_connection:.2} KiB RSS per connection at {CONNECTIONS} connections \
             (budget {BUDGET_KIB_PER_CONNECTION} KiB)"
        );
    }
    // `thread`, for comparison: a thread (stack) and a buffer per connection. Held only to a
    // generous bound: its stack pages and allocator behaviour vary with the machine.
    let per_connection = rss_per_connection_kib(Strategy::Thread);
    report.push(format!(
        "thread: {per_connection:.2} KiB RSS per connection (session stack {} KiB, buffer {} KiB)",
        echo_server::SESSION_STACK_BYTES / 1024,
        echo_server::Config::default().buffer_size / 1024,
    ));
    eprintln!("{}", report.join("\n"));
    assert!(
        per_connection <= 256.0,
        "thread: {per_connection:.2} KiB RSS per connection"
    );
}
