//! The session hot path of every strategy makes no heap allocation per message (issue 6).
//!
//! A counting global allocator counts every allocation in this test process (server threads and
//! client alike). On one established connection, after warm-up, the count over 10,000 echoes
//! must not exceed the count over 1,000 echoes by more than a small constant: an allocation per
//! message would add at least 9,000. One `#[test]` runs all strategies in turn, so no other test
//! in this binary allocates meanwhile. The client itself allocates nothing per message (fixed
//! buffers, `write_all`/`read_exact` on a std `TcpStream`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use echo_server::{Config, Server, Strategy};

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

/// Allocations made while `messages` 64-byte echoes go through `stream`.
fn allocations_during(stream: &mut TcpStream, messages: usize) -> u64 {
    let mut message = [0u8; 64];
    let mut echo = [0u8; 64];
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for i in 0..messages {
        message[..8].copy_from_slice(&(i as u64).to_le_bytes());
        stream.write_all(&message).expect("write");
        stream.read_exact(&mut echo).expect("read echo");
        assert_eq!(echo, message, "echo {i}");
    }
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn no_heap_allocation_per_message_in_any_strategy() {
    // The counter sees allocations (else every comparison below would pass vacuously).
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    drop(std::hint::black_box(Box::new(0u64)));
    assert!(
        ALLOCATIONS.load(Ordering::SeqCst) > before,
        "the allocator is not counting"
    );

    let mut report = Vec::new();
    for &strategy in Strategy::ALL {
        let server = Server::start(Config::loopback(strategy)).expect("server starts");
        let mut stream = TcpStream::connect(server.local_addr()).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        allocations_during(&mut stream, 1_000); // warm-up: buffers, timers, lazy statics
        let per_1k = allocations_during(&mut stream, 1_000);
        let per_10k = allocations_during(&mut stream, 10_000);
        report.push(format!(
            "{strategy}: {per_1k} per 1,000, {per_10k} per 10,000"
        ));
        stream.shutdown(Shutdown::Write).expect("half-close");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("EOF");
        drop(server.shutdown());
        assert!(
            per_10k <= per_1k + 50,
            "{strategy} allocates per message: {per_1k} allocations over 1,000 echoes, \
             {per_10k} over 10,000"
        );
    }
    eprintln!("{}", report.join("\n"));
}
