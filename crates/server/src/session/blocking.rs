//! The echo session for the blocking strategies (`iterative`, `thread`, `pool`, `rayon`): read
//! up to the buffer, write all of it back, until the peer ends its side; then close. One
//! function, shared by every blocking strategy, so they differ only in how connections reach it.
//! (The nonblocking strategies share the state machine in `nonblocking.rs`.)
//!
//! Per connection the memory is one buffer of `--buffer-size` bytes, whatever the message size.
//! Timeouts use the socket options (`SO_RCVTIMEO`, `SO_SNDTIMEO`): no extra thread or timer.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crate::core::registry::Conn;
use crate::core::shared::Shared;
use crate::core::stats::{ErrorKind, Outcome};

/// Serves one accepted connection to the end and counts how it ended. A panic inside the session
/// is caught here: it ends this connection only.
pub fn run(conn: Conn, shared: &Shared) {
    let mut totals = ByteTotals::default();
    let outcome = match catch_unwind(AssertUnwindSafe(|| {
        serve(conn.stream(), conn.accepted_at(), shared, &mut totals)
    })) {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failed(ErrorKind::Panic),
    };
    conn.finish(outcome, totals.bytes_in, totals.bytes_out);
}

/// Bytes moved by one session; added to the shared counters once, when it ends.
#[derive(Debug, Default)]
struct ByteTotals {
    bytes_in: u64,
    bytes_out: u64,
}

fn serve(
    mut stream: &TcpStream,
    accepted_at: Instant,
    shared: &Shared,
    totals: &mut ByteTotals,
) -> Outcome {
    let config = &shared.config;
    if let Err(err) = prepare(stream, config.write_timeout) {
        return Outcome::Failed(ErrorKind::of(&err));
    }
    // Idle time runs from accept, so time spent waiting in a queue counts. A connection whose
    // allowance is used up still gets a 1 ms read: bytes already waiting are never "idle".
    let first_wait = config
        .idle_timeout
        .saturating_sub(accepted_at.elapsed())
        .max(Duration::from_millis(1));
    if let Err(err) = stream.set_read_timeout(Some(first_wait)) {
        return Outcome::Failed(ErrorKind::of(&err));
    }
    let mut full_timeout_set = first_wait == config.idle_timeout;

    let mut buffer = vec![0u8; config.buffer_size];
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => return Outcome::Completed,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if is_timeout(&err) => return Outcome::TimedOut,
            Err(err) => return Outcome::Failed(ErrorKind::of(&err)),
        };
        totals.bytes_in += n as u64;
        config.check_panic_trigger(&buffer[..n]);
        match stream.write_all(&buffer[..n]) {
            Ok(()) => totals.bytes_out += n as u64,
            Err(err) if is_timeout(&err) => return Outcome::TimedOut,
            Err(err) => return Outcome::Failed(ErrorKind::of(&err)),
        }
        if !full_timeout_set {
            if let Err(err) = stream.set_read_timeout(Some(config.idle_timeout)) {
                return Outcome::Failed(ErrorKind::of(&err));
            }
            full_timeout_set = true;
        }
    }
}

/// No Nagle delay, and the write timeout. (Accepted sockets are blocking already: on Linux
/// `accept(2)` does not pass the listener's `O_NONBLOCK` on; a test in `server.rs` checks it.)
fn prepare(stream: &TcpStream, write_timeout: Duration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(write_timeout))
}

/// `SO_RCVTIMEO`/`SO_SNDTIMEO` expiry shows up as `WouldBlock` (EAGAIN) on Linux.
fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
