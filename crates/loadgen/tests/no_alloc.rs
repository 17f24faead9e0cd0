//! loadgen's hot path (send, verify, record) makes no heap allocation per message (issue 6).
//!
//! A counting global allocator counts every allocation in this test process: loadgen's client
//! threads, its run loop, and the in-process `echo_server` (the `event-loop` strategy, which
//! echo-server's own `tests/no_alloc.rs` proves allocation-free per message). The same run is
//! made with 1,000 and with 10,000 measured messages over the same number of connections (so
//! setup — threads, connections, histograms, the report — costs the same); an allocation per
//! message would add at least 9,000 to the second count. The difference allowed is a small
//! constant plus a few allocations per one-second interval histogram handed to the run loop
//! (time-based, not message-based; a slower machine makes more of them).
//!
//! Try: `cargo test -p loadgen --test no_alloc -- --nocapture` prints the counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use echo_server::{Config as ServerConfig, Server, Strategy};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Connections (and client threads) of every run: enough that both threads drive several.
const CONNECTIONS: usize = 16;
const THREADS: usize = 2;

/// Allocations made by one whole closed-loop run of `messages` 64-byte messages (depth `depth`)
/// against `target`, and the run's wall time in seconds. Panics unless every message verified.
fn allocations_of_run(target: &str, messages: u64, depth: u32) -> (u64, f64) {
    let mut c = loadgen::Config::new(target);
    c.connections = CONNECTIONS;
    c.threads = THREADS;
    c.warmup_ms = 0;
    c.duration_ms = None;
    c.messages = Some(messages);
    c.size_bytes = 64;
    c.depth = Some(depth);
    c.timeout_ms = 50_000;
    c.quiet = true;
    let started = Instant::now();
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let report = loadgen::run(&c).expect("run completes");
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    let wall_s = started.elapsed().as_secs_f64();
    let _ = std::hint::black_box(&report);
    assert_eq!(report.errors.total, 0, "{:?}", report.errors);
    assert_eq!(report.messages.verified, messages);
    (allocations, wall_s)
}

#[test]
fn no_heap_allocation_per_message_in_loadgen() {
    // The counter sees allocations (else every comparison below would pass vacuously).
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    drop(std::hint::black_box(Box::new(0u64)));
    assert!(
        ALLOCATIONS.load(Ordering::SeqCst) > before,
        "the allocator is not counting"
    );

    let server = Server::start(ServerConfig::loopback(Strategy::EventLoop)).expect("server starts");
    let target = server.local_addr().to_string();
    let mut report = Vec::new();
    for depth in [1u32, 4] {
        allocations_of_run(&target, 1_000, depth); // warm-up: lazy statics, first-use paths
        let (per_1k, _) = allocations_of_run(&target, 1_000, depth);
        let (per_10k, wall_s) = allocations_of_run(&target, 10_000, depth);
        report.push(format!(
            "depth {depth}: {per_1k} allocations over a 1,000-message run, {per_10k} over a \
             10,000-message run ({wall_s:.2} s)"
        ));
        // One interval histogram (a few allocations) per thread per started second of the run.
        let per_interval_slack = 16 * THREADS as u64 * (wall_s.ceil() as u64 + 1);
        assert!(
            per_10k <= per_1k + 200 + per_interval_slack,
            "loadgen allocates per message at depth {depth}: {per_1k} allocations in a \
             1,000-message run, {per_10k} in a 10,000-message run ({wall_s:.2} s)"
        );
    }
    drop(server.shutdown());
    eprintln!("{}", report.join("\n"));
}
