//! The baseline loadgen is measured against: a thread-per-connection blocking client (the design
//! of rust_echo_bench), closed loop, one message in flight per connection, with the same
//! deterministic payloads and the same byte-for-byte verification, so the comparison is about
//! the I/O design only. `loadgen baseline-blocking …` runs it from the command line; the
//! `vs_blocking` bench (`cargo bench -p loadgen --bench vs_blocking`) runs both against the
//! same server in one run.

use crate::payload;
use crate::stats::thread_cpu_ns;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the blocking client does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineConfig {
    /// Echo server address.
    pub target: String,
    /// Connections, one OS thread each.
    pub connections: usize,
    /// Bytes per message.
    pub size_bytes: usize,
    /// Warm-up (not counted).
    pub warmup_ms: u64,
    /// Measured window.
    pub duration_ms: u64,
}

/// What the blocking client measured.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BaselineResult {
    /// Messages verified in the window.
    pub messages_verified: u64,
    /// Verified messages per second.
    pub messages_per_s: f64,
    /// CPU time of the client threads in the window (getrusage per thread).
    pub cpu_s: f64,
    /// CPU per verified message, µs.
    pub cpu_per_message_us: f64,
    /// Connections that failed (connect, I/O or a corrupt echo).
    pub errors: u64,
}

#[derive(Default)]
struct ThreadTotals {
    verified: u64,
    cpu_ns: u64,
    error: bool,
}

/// Runs the thread-per-connection blocking client.
pub fn run_blocking(config: &BaselineConfig) -> anyhow::Result<BaselineResult> {
    let target: SocketAddr = config
        .target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", config.target))?
        .next()
        .context("target resolves to no address")?;
    crate::run::raise_nofile_limit(config.connections as u64 + 64)?;
    let start = Instant::now();
    let window_start = start + Duration::from_millis(config.warmup_ms);
    let window_end = window_start + Duration::from_millis(config.duration_ms);
    let stop = Arc::new(AtomicBool::new(false));
    let size = config.size_bytes;
    let mut handles = Vec::new();
    for id in 0..config.connections {
        let stop = stop.clone();
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || client(id as u64, target, size, window_start, window_end, &stop))
            .context("spawning a client thread")?;
        handles.push(handle);
    }
    std::thread::sleep(window_end.saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::SeqCst);
    let mut verified = 0;
    let mut cpu_ns = 0;
    let mut errors = 0;
    for h in handles {
        let t = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        verified += t.verified;
        cpu_ns += t.cpu_ns;
        errors += u64::from(t.error);
    }
    let secs = config.duration_ms as f64 / 1000.0;
    let cpu_s = cpu_ns as f64 / 1e9;
    Ok(BaselineResult {
        messages_verified: verified,
        messages_per_s: verified as f64 / secs,
        cpu_s,
        cpu_per_message_us: if verified > 0 {
            cpu_s * 1e6 / verified as f64
        } else {
            0.0
        },
        errors,
    })
}

fn client(
    id: u64,
    target: SocketAddr,
    size: usize,
    window_start: Instant,
    window_end: Instant,
    stop: &AtomicBool,
) -> ThreadTotals {
    let mut totals = ThreadTotals::default();
    let Ok(mut stream) = TcpStream::connect(target) else {
        totals.error = true;
        return totals;
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut out = vec![0u8; size];
    let mut back = vec![0u8; size];
    let mut cpu_at_start = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let sent_at = Instant::now();
        if cpu_at_start.is_none() && sent_at >= window_start {
            cpu_at_start = Some(thread_cpu_ns());
        }
        payload::fill_message(id, seq, 0, &mut out);
        if stream.write_all(&out).is_err() || stream.read_exact(&mut back).is_err() {
            totals.error = true;
            break;
        }
        if payload::verify_message(id, seq, 0, &back).is_err() {
            totals.error = true;
            break;
        }
        if sent_at >= window_start && sent_at < window_end {
            totals.verified += 1;
        }
        seq += 1;
    }
    totals.cpu_ns = cpu_at_start.map_or(0, |c| thread_cpu_ns().saturating_sub(c));
    totals
}
