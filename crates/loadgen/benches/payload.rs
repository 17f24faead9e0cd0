//! What the payload table's size costs: the memory traffic of one message through the loadgen,
//! for tables from 64 KiB to 16 MiB, in one run.
//!
//! Per message, as in a run: its bytes are copied out of the table into a ring of "socket
//! buffers" (the kernel's send copy; 4 MiB, like 16 connections' worth of in-flight data), copied
//! back into a page-aligned receive buffer (the kernel's receive copy), and verified against the
//! table (`payload::Pattern::verify`, a `memcmp`). Messages cycle over 16 connections, each with
//! its own sequence numbers, so block starts are spread over the table as in a run; pinned to the
//! last core. Prints ns
//! per message and GB/s of payload for each table size and message size (best and worst of the
//! rounds), and what each size gives up in detection (the chance that two blocks start at the
//! same place).
//!
//! Run: `cargo bench -p loadgen --bench payload`. Environment: `PAYLOAD_BENCH_ROUNDS` (default
//! 3), `PAYLOAD_BENCH_MS` (default 300, per table size, message size and round).

#[path = "../tests/common/bench_env.rs"]
mod bench_env;

use bench_env::{env_or, pin_to_cores};
use loadgen::payload::{BLOCK_BYTES, Pattern, TABLE_BYTES, TABLE_SEED};
use std::time::{Duration, Instant};

const RING_BYTES: usize = 4 << 20;
const CONNECTIONS: u64 = 16;

/// Runs messages of `size` bytes for about `budget`; ns per message.
fn run(pattern: &Pattern, size: usize, budget: Duration, ring: &mut [u8], recv: &mut [u8]) -> f64 {
    let mut seq = [0u64; CONNECTIONS as usize];
    let mut at = 0usize;
    let mut messages = 0u64;
    let started = Instant::now();
    while started.elapsed() < budget {
        for _ in 0..64 {
            let c = messages % CONNECTIONS;
            let s = seq[c as usize];
            let mut offset = 0usize;
            while offset < size {
                let n = (size - offset).min(recv.len());
                if at + n > ring.len() {
                    at = 0;
                }
                let wire = &mut ring[at..at + n];
                pattern.fill(c, s, offset as u64, wire);
                recv[..n].copy_from_slice(wire);
                let verdict = pattern.verify(c, s, offset as u64, &recv[..n]);
                assert!(verdict.is_ok(), "{verdict:?}");
                at += n.next_multiple_of(64);
                offset += n;
            }
            seq[c as usize] = s + 1;
            messages += 1;
        }
    }
    started.elapsed().as_nanos() as f64 / messages as f64
}

fn main() {
    let rounds: usize = env_or("PAYLOAD_BENCH_ROUNDS", 3);
    // One core throughout, as the loadgen thread would be (the last one: xtask pins servers to 0).
    let last = loadgen::config::default_threads().saturating_sub(1);
    pin_to_cores(&[last]);
    let budget = Duration::from_millis(env_or("PAYLOAD_BENCH_MS", 300));
    let tables = [
        64usize << 10,
        128 << 10,
        256 << 10,
        512 << 10,
        1 << 20,
        2 << 20,
        4 << 20,
        16 << 20,
    ];
    let sizes = [64usize, 4096, 65536];
    let patterns: Vec<Pattern> = tables
        .iter()
        .map(|&t| Pattern::new(t, BLOCK_BYTES.min(t), TABLE_SEED))
        .collect();
    let mut ring = vec![0u8; RING_BYTES];
    let mut recv = vec![0u8; 256 << 10];
    println!(
        "payload: send copy + receive copy + verify per message, {CONNECTIONS} connections, \
         {rounds} rounds of {} ms per cell; the loadgen uses {} KiB",
        budget.as_millis(),
        TABLE_BYTES >> 10
    );
    // results[table][size] = ns per message of each round
    let mut results = vec![vec![Vec::new(); sizes.len()]; tables.len()];
    for _ in 0..rounds {
        for (t, pattern) in patterns.iter().enumerate() {
            for (i, &size) in sizes.iter().enumerate() {
                results[t][i].push(run(pattern, size, budget, &mut ring, &mut recv));
            }
        }
    }
    print!("{:>10} {:>12}", "table", "P(collide)");
    for size in sizes {
        print!(" {:>26}", format!("{size} B: ns/msg (GB/s)"));
    }
    println!();
    for (t, pattern) in patterns.iter().enumerate() {
        print!(
            "{:>7} KiB {:>12.1e}",
            tables[t] >> 10,
            1.0 / pattern.start_positions() as f64
        );
        for (i, &size) in sizes.iter().enumerate() {
            let r = &results[t][i];
            let best = r.iter().copied().fold(f64::INFINITY, f64::min);
            let worst = r.iter().copied().fold(0.0, f64::max);
            print!(
                " {:>26}",
                format!("{best:.0}–{worst:.0} ({:.1})", size as f64 / best)
            );
        }
        println!();
    }
}
