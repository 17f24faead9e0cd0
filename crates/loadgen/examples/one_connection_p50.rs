//! loadgen's latency at one connection against a minimal blocking write-then-read client's
//! (issue 6: loadgen's p50 within 10% of it), against the same server in the same run.
//!
//! The minimal client is the floor a measuring client can reach: one `TcpStream` with
//! `TCP_NODELAY`, `write_all` of 64 bytes then `read_exact` of 64, timed with `Instant` and
//! recorded into the same kind of histogram with the same rounding as loadgen (whole µs), with no
//! verification, poll loop or bookkeeping. loadgen runs with one connection, one thread, closed
//! loop, depth 1, and verifies every byte. Trials alternate which client goes first.
//!
//! Server: an in-process `echo_server` (`event-loop` by default, or `P50_SERVER=<strategy>`)
//! pinned to core 0 with the clients on core 1 (like `cargo xtask bench`), or any running echo
//! server with `P50_TARGET=127.0.0.1:PORT` (then nothing is pinned here; use `taskset`).
//! `P50_TRIALS` (default 5) and `P50_SECONDS` (default 2) set the trials and their length.
//!
//! Try: `cargo run --release -p loadgen --example one_connection_p50`.

#[path = "../tests/common/bench_env.rs"]
mod bench_env;

use bench_env::{env_or, pin_to_cores};
use echo_server::{Config as ServerConfig, Server, Strategy};
use loadgen::stats::{new_histogram, record_ns_as_us};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The minimal client: (p50 µs, mean µs, messages) over `window` after `warmup`.
fn minimal_blocking(
    target: &str,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<(f64, f64, u64)> {
    let mut stream = TcpStream::connect(target)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let message = [0x5au8; 64];
    let mut echo = [0u8; 64];
    let mut histogram = new_histogram();
    let start = Instant::now();
    let (window_start, window_end) = (start + warmup, start + warmup + window);
    loop {
        let sent = Instant::now();
        if sent >= window_end {
            break;
        }
        stream.write_all(&message)?;
        stream.read_exact(&mut echo)?;
        if sent >= window_start {
            record_ns_as_us(&mut histogram, sent.elapsed().as_nanos() as u64);
        }
    }
    Ok((
        histogram.value_at_quantile(0.5) as f64,
        histogram.mean(),
        histogram.len(),
    ))
}

fn main() -> anyhow::Result<()> {
    let trials: usize = env_or("P50_TRIALS", 5);
    let seconds: u64 = env_or("P50_SECONDS", 2);
    let cores = loadgen::config::default_threads();
    let (server, target, placement) = match std::env::var("P50_TARGET") {
        Ok(target) => (None, target, "external server, not pinned here".to_string()),
        Err(_) => {
            let name = std::env::var("P50_SERVER").unwrap_or_else(|_| "event-loop".into());
            let strategy = Strategy::from_name(&name)
                .ok_or_else(|| anyhow::anyhow!("unknown strategy {name:?}"))?;
            let pinned = cores >= 2 && pin_to_cores(&[0]);
            let server = Server::start(ServerConfig::loopback(strategy))?;
            let pinned = pinned && pin_to_cores(&[1]);
            let target = server.local_addr().to_string();
            let placement = if pinned {
                format!("in-process {name}, server on core 0, clients on core 1")
            } else {
                format!("in-process {name}, not pinned")
            };
            (Some(server), target, placement)
        }
    };
    println!(
        "one_connection_p50: 1 connection, 64 B, closed loop depth 1, {seconds} s per trial, \
         {trials} trials, {placement}, target {target}"
    );
    println!(
        "{:<6} {:<18} {:>8} {:>9} {:>10} {:>11}",
        "trial", "client", "p50 µs", "mean µs", "messages", "CPU µs/msg"
    );
    let warmup = Duration::from_millis(500);
    let window = Duration::from_secs(seconds);
    let (mut ours, mut minimal, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for trial in 0..trials {
        let mut pair = [0.0f64; 2];
        for which in if trial % 2 == 0 { [0, 1] } else { [1, 0] } {
            if which == 0 {
                let mut c = loadgen::Config::new(target.clone());
                c.connections = 1;
                c.threads = 1;
                c.depth = Some(1);
                c.warmup_ms = warmup.as_millis() as u64;
                c.duration_ms = Some(window.as_millis() as u64);
                c.quiet = true;
                let r = loadgen::run(&c)?;
                anyhow::ensure!(r.errors.total == 0, "loadgen errors: {:?}", r.errors);
                println!(
                    "{:<6} {:<18} {:>8} {:>9.1} {:>10} {:>11.2}",
                    trial + 1,
                    "loadgen",
                    r.latency_us.p50,
                    r.latency_us.mean,
                    r.messages.verified,
                    r.loadgen.cpu_per_message_us
                );
                pair[0] = r.latency_us.p50 as f64;
                ours.push(pair[0]);
            } else {
                let (p50, mean, n) = minimal_blocking(&target, warmup, window)?;
                println!(
                    "{:<6} {:<18} {:>8} {:>9.1} {:>10} {:>11}",
                    trial + 1,
                    "minimal blocking",
                    p50,
                    mean,
                    n,
                    "-"
                );
                pair[1] = p50;
                minimal.push(p50);
            }
        }
        ratios.push(pair[0] / pair[1]);
    }
    if let Some(server) = server {
        server.shutdown();
    }
    let (a, b, r) = (median(&mut ours), median(&mut minimal), median(&mut ratios));
    println!(
        "median p50: loadgen {a:.0} µs, minimal blocking {b:.0} µs; median of paired ratios \
         {r:.3} ({})",
        if r <= 1.10 {
            "within the 10% goal"
        } else {
            "OUTSIDE the 10% goal"
        }
    );
    Ok(())
}
