//! Test echo servers (thread per connection, in-process, on 127.0.0.1:0) with deliberate faults:
//! a byte flipped at a known stream offset, or all echoing paused for S ms every P ms. Also the
//! shared steps of the tests: a base run configuration, running the `loadgen` binary and checking
//! its exit code, reading the JSON it wrote.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the test server misbehaves.
#[derive(Debug, Clone, Copy)]
pub enum Behavior {
    /// A faithful echo.
    Echo,
    /// Flip one bit of the byte at this offset of every connection's stream.
    CorruptAt(u64),
    /// Leave the byte at this offset of every connection's stream out of the echo: everything
    /// after it comes back shifted by one.
    DropAt(u64),
    /// Pause all echoing for `pause_ms` at the start of every `period_ms`.
    Pause { period_ms: u64, pause_ms: u64 },
    /// Close every connection after echoing this many bytes.
    CloseAfter(u64),
    /// Echo the first accepted connection at once; every later one only after `hold_ms`.
    HoldLater { hold_ms: u64 },
    /// A faithful echo that writes these bytes after the client's EOF, then closes.
    GarbageAtEof(&'static [u8]),
    /// Hold every echo until `until_ms` after the server started (then echo faithfully).
    HoldUntil { until_ms: u64 },
    /// A faithful echo that keeps the connection open for `ms` after the client's EOF.
    LingerAfterEof { ms: u64 },
}

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub accepted: Arc<AtomicU64>,
    /// Successful reads over all connections.
    pub reads: Arc<AtomicU64>,
    /// The peer address of every accepted connection.
    pub peers: Arc<Mutex<Vec<IpAddr>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(behavior: Behavior) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let reads = Arc::new(AtomicU64::new(0));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let acceptor = {
            let stop = stop.clone();
            let accepted = accepted.clone();
            let reads = reads.clone();
            let peers = peers.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let index = accepted.fetch_add(1, Ordering::SeqCst);
                    if let (Ok(peer), Ok(mut list)) = (stream.peer_addr(), peers.lock()) {
                        list.push(peer.ip());
                    }
                    let reads = reads.clone();
                    std::thread::spawn(move || serve(stream, behavior, start, index, &reads));
                }
            })
        };
        TestServer {
            addr,
            stop,
            accepted,
            reads,
            peers,
            acceptor: Some(acceptor),
        }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn serve(mut stream: TcpStream, behavior: Behavior, start: Instant, index: u64, reads: &AtomicU64) {
    let _ = stream.set_nodelay(true);
    if let Behavior::HoldLater { hold_ms } = behavior
        && index > 0
    {
        std::thread::sleep(Duration::from_millis(hold_ms));
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut pos = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => {
                if let Behavior::GarbageAtEof(junk) = behavior {
                    let _ = stream.write_all(junk);
                }
                if let Behavior::LingerAfterEof { ms } = behavior {
                    std::thread::sleep(Duration::from_millis(ms));
                }
                return;
            }
            Err(_) => return,
            Ok(n) => n,
        };
        reads.fetch_add(1, Ordering::SeqCst);
        match behavior {
            Behavior::Echo
            | Behavior::HoldLater { .. }
            | Behavior::GarbageAtEof(_)
            | Behavior::LingerAfterEof { .. } => {}
            Behavior::HoldUntil { until_ms } => {
                let left = Duration::from_millis(until_ms).saturating_sub(start.elapsed());
                std::thread::sleep(left);
            }
            Behavior::CorruptAt(at) => {
                if at >= pos && at < pos + n as u64 {
                    buf[(at - pos) as usize] ^= 0x01;
                }
            }
            Behavior::Pause {
                period_ms,
                pause_ms,
            } => {
                let now_ms = start.elapsed().as_secs_f64() * 1000.0;
                let into = now_ms % period_ms as f64;
                if into < pause_ms as f64 {
                    std::thread::sleep(Duration::from_secs_f64((pause_ms as f64 - into) / 1000.0));
                }
            }
            Behavior::DropAt(at) => {
                if at >= pos && at < pos + n as u64 {
                    let i = (at - pos) as usize;
                    if stream.write_all(&buf[..i]).is_err()
                        || stream.write_all(&buf[i + 1..n]).is_err()
                    {
                        return;
                    }
                    pos += n as u64;
                    continue;
                }
            }
            Behavior::CloseAfter(limit) => {
                if pos + n as u64 >= limit {
                    let keep = (limit - pos.min(limit)) as usize;
                    let _ = stream.write_all(&buf[..keep]);
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
        pos += n as u64;
    }
}

/// A base configuration for tests: short warm-up, bounded, quiet.
pub fn config(target: &str) -> loadgen::Config {
    let mut c = loadgen::Config::new(target);
    c.connections = 4;
    c.threads = 2;
    c.warmup_ms = 0;
    c.duration_ms = None;
    c.messages = Some(2_000);
    c.quiet = true;
    c
}

/// The `loadgen` binary built for these tests.
pub fn loadgen_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
}

/// Runs `cmd` to its end and asserts its exit code is `code`, showing its stdout and stderr when
/// it is not.
pub fn run_expecting(cmd: &mut Command, code: i32) -> Output {
    let out = cmd.output().expect("the loadgen binary runs");
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Reads and parses a JSON file (a report loadgen wrote) as a `serde_json::Value` or a
/// `loadgen::Report`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// A loopback address on which nothing listens (a port that was bound and let go).
pub fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
}
