//! The hot path allocates nothing per message: a run of 20,000 messages makes about as many heap
//! allocations as a run of 2,000 (a counting global allocator tells).

mod common;

use common::{Behavior, TestServer, config};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// The counters are global: the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // `vec![0; n]` comes here, not through `alloc`.
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_for(target: &str, messages: u64, depth: u32, rate: Option<f64>) -> u64 {
    let mut c = config(target);
    c.rate_per_s = rate;
    c.connections = 4;
    c.threads = 2;
    c.messages = Some(messages);
    c.depth = Some(depth);
    c.size_bytes = 200;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let r = loadgen::run(&c).unwrap();
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!(r.messages.verified, messages);
    after - before
}

#[test]
fn allocations_do_not_grow_with_messages() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start(Behavior::Echo);
    for (depth, rate) in [(1, None), (4, None), (8, Some(40_000.0))] {
        // Warm up whatever is allocated once per process.
        allocations_for(&server.target(), 100, depth, rate);
        let small = allocations_for(&server.target(), 2_000, depth, rate);
        let large = allocations_for(&server.target(), 20_000, depth, rate);
        eprintln!(
            "depth {depth} rate {rate:?}: {small} allocations for 2,000 messages, {large} for 20,000"
        );
        // The test server allocates too (a thread and a buffer per connection), and a longer
        // run may cross a one-second interval boundary (one histogram per thread); 18,000 more
        // messages must not add anything near one allocation each.
        assert!(
            large < small + 200,
            "depth {depth} rate {rate:?}: {small} allocations for 2,000 messages, {large} for 20,000"
        );
    }
}

fn bytes_for(target: &str, duration_ms: u64) -> u64 {
    let mut c = config(target);
    c.connections = 4;
    c.threads = 2;
    c.messages = None;
    c.duration_ms = Some(duration_ms);
    c.rate_per_s = Some(200.0);
    let before = BYTES.load(Ordering::Relaxed);
    let r = loadgen::run(&c).unwrap();
    let after = BYTES.load(Ordering::Relaxed);
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    after - before
}

/// Interval histograms (~188 KB each) are reused, not allocated every second by every thread
/// and by the coordinator: three more seconds add far less than one histogram's worth.
#[test]
fn interval_histograms_are_reused() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start(Behavior::Echo);
    let short = bytes_for(&server.target(), 1_100);
    let long = bytes_for(&server.target(), 4_100);
    eprintln!("{short} bytes allocated in 1.1 s, {long} in 4.1 s");
    assert!(
        long < short + 100_000,
        "{short} bytes allocated in 1.1 s, {long} in 4.1 s"
    );
}

/// Allocations and bytes allocated by a closed-loop run of `messages` messages of `size_bytes`
/// over 16 connections.
fn allocated_for(target: &str, size_bytes: usize, messages: u64) -> (u64, u64) {
    let mut c = config(target);
    c.connections = 16;
    c.threads = 2;
    c.size_bytes = size_bytes;
    c.messages = Some(messages);
    c.timeout_ms = 20_000;
    let (allocations, bytes) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let r = loadgen::run(&c).unwrap();
    let after = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!(r.messages.verified, messages);
    (after.0 - allocations, after.1 - bytes)
}

/// 1 MiB messages on 16 connections: memory is bounded by buffers of fixed size (the payload
/// table, one send and one receive buffer per thread), not by the message size or count: a run
/// of 1 MiB messages allocates no more than a run of 64-byte ones, and five times the messages
/// add nothing.
#[test]
fn one_mib_messages_use_the_memory_of_small_ones() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start(Behavior::Echo);
    let mib = 1 << 20;
    allocated_for(&server.target(), mib, 16);
    let small = allocated_for(&server.target(), 64, 32);
    let large = allocated_for(&server.target(), mib, 32);
    let more = allocated_for(&server.target(), mib, 160);
    eprintln!(
        "(allocations, bytes): 32 × 64 B {small:?}, 32 × 1 MiB {large:?}, 160 × 1 MiB {more:?}"
    );
    // The test server allocates a 16 KiB buffer per connection; loadgen's histograms and
    // buffers are the same whatever the message size.
    assert!(large.1 < small.1 + 1_000_000, "{small:?} {large:?}");
    assert!(more.0 < large.0 + 200, "{large:?} {more:?}");
    assert!(more.1 < large.1 + 1_000_000, "{large:?} {more:?}");
}
