//! `async`: a tokio multi-threaded runtime with `--workers` threads and a task per connection.
//!
//! The session is the same as everywhere (read up to the buffer, write all of it back, until the
//! peer ends its side) over tokio's I/O, with the same deadlines: the idle timeout runs from
//! accept or the last echo completed (one timer per connection, re-armed only when it fires
//! before the connection has been idle long enough, so a message costs no timer update and the
//! steady state allocates nothing), and a write that makes no progress for
//! `--write-timeout` ends the connection. The memory rule is `event-loop`'s: a task waits for
//! readiness holding no buffer, reads into its runtime thread's scratch buffer and echoes at
//! once; only bytes the socket did not take are kept (in a buffer of the task, allocated the
//! first time a write backs up and reused after), and reading pauses meanwhile.
//!
//! Try it: `cargo run -p echo-server -- --addr 127.0.0.1:0 --strategy async --workers 2`.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use super::{Dispatch, LiveSessions};
use crate::Error;
use crate::registry::Conn;
use crate::server::Shared;
use crate::session::Outcome;
use crate::stats::ErrorKind;

pub struct AsyncTokio {
    runtime: Runtime,
    /// Sessions spawned and not yet ended, so `finish` can wait for them.
    live: LiveSessions,
    shared: Arc<Shared>,
}

impl AsyncTokio {
    pub fn start(shared: &Arc<Shared>) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(shared.config.workers)
            .thread_name("async-worker")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::io("starting the tokio runtime", e))?;
        Ok(AsyncTokio {
            runtime,
            live: LiveSessions::default(),
            shared: Arc::clone(shared),
        })
    }
}

impl Dispatch for AsyncTokio {
    fn dispatch(&mut self, conn: Conn) {
        let shared = Arc::clone(&self.shared);
        let live = self.live.guard();
        self.runtime.spawn(async move {
            let _live = live;
            run(conn, &shared).await;
        });
    }

    /// Waits for the sessions to end (the server's drain cuts those that outlive it), then stops
    /// the runtime.
    fn finish(self: Box<Self>) {
        self.live.wait_for_none(&self.shared);
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Serves one connection to the end and counts how it ended; a panic ends this connection only.
async fn run(conn: Conn, shared: &Shared) {
    let mut conn = match conn.map_stream(|stream| {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        TcpStream::from_std(stream)
    }) {
        Ok(conn) => conn,
        Err(err) => {
            // The connection is already closed (and deregistered).
            shared
                .counters
                .count_outcome(Outcome::Failed(ErrorKind::of(&err)));
            return;
        }
    };
    let mut totals = (0u64, 0u64);
    let outcome = match CatchUnwind(pin!(serve(&mut conn, shared, &mut totals))).await {
        Ok(outcome) => outcome,
        Err(()) => Outcome::Failed(ErrorKind::Panic),
    };
    conn.finish(outcome, totals.0, totals.1);
}

thread_local! {
    /// Each runtime thread's read buffer, shared by the tasks it runs: a task holds no buffer
    /// while its connection is idle.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What one read-and-echo attempt did.
enum Attempt {
    /// Bytes echoed (any the socket did not take are in `pending`).
    Echoed,
    /// Nothing to read after all (stale readiness).
    NothingWaiting,
    Over(Outcome),
}

async fn serve(conn: &mut Conn<TcpStream>, shared: &Shared, totals: &mut (u64, u64)) -> Outcome {
    let config = &shared.config;
    // The idle clock: when the connection was accepted, or the last echo completed. Recorded
    // per message; the timer is re-armed only when it fires early (no timer-wheel update per
    // message).
    let mut idle_since = tokio::time::Instant::from_std(conn.accepted_at());
    let stream = conn.stream_mut();
    // Output the socket did not take at once; empty (no allocation) in the steady state, and
    // its capacity kept once a stall needed it.
    let mut pending: Vec<u8> = Vec::new();
    let mut idle = pin!(tokio::time::sleep_until(idle_since + config.idle_timeout));
    loop {
        let idle_expired = tokio::select! {
            biased;
            ready = stream.readable() => match ready {
                Ok(()) => false,
                Err(err) => return Outcome::Failed(ErrorKind::of(&err)),
            },
            () = idle.as_mut() => {
                let deadline = idle_since + config.idle_timeout;
                if deadline > tokio::time::Instant::now() {
                    // Activity since the timer was armed: wait for the rest of the allowance.
                    idle.as_mut().reset(deadline);
                    continue;
                }
                true
            }
        };
        // Read into the thread's scratch buffer and echo at once; bytes already waiting when
        // the idle timer fires mean the connection is not idle.
        let attempt = SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < config.buffer_size {
                scratch.resize(config.buffer_size, 0);
            }
            let scratch = &mut scratch[..config.buffer_size];
            let n = match try_read_drained(stream, scratch) {
                Ok(0) => return Attempt::Over(Outcome::Completed),
                Ok(n) => n,
                Err(err) if is_retry(&err) => return Attempt::NothingWaiting,
                Err(err) => return Attempt::Over(Outcome::Failed(ErrorKind::of(&err))),
            };
            totals.0 += n as u64;
            let data = &scratch[..n];
            config.check_panic_trigger(data);
            let mut written = 0;
            while written < n {
                match stream.try_write(&data[written..]) {
                    Ok(w) => written += w,
                    Err(err) if is_retry(&err) => break,
                    Err(err) => {
                        // What was written before the failure was sent all the same.
                        totals.1 += written as u64;
                        return Attempt::Over(Outcome::Failed(ErrorKind::of(&err)));
                    }
                }
            }
            totals.1 += written as u64;
            pending.extend_from_slice(&data[written..]);
            Attempt::Echoed
        });
        match attempt {
            Attempt::Over(outcome) => return outcome,
            Attempt::NothingWaiting if idle_expired => return Outcome::TimedOut,
            Attempt::NothingWaiting => continue,
            Attempt::Echoed => {}
        }
        if !pending.is_empty() {
            // Reading pauses until the rest is written (backpressure), then the buffer goes.
            if let Some(outcome) =
                write_all(stream, &pending, config.write_timeout, &mut totals.1).await
            {
                return outcome;
            }
            pending.clear();
        }
        idle_since = tokio::time::Instant::now();
    }
}

/// `try_read` that also forgets the read readiness after a short read (fewer bytes than `buf`
/// holds: the socket was drained), so the next `readable()` waits for the next edge instead of
/// returning at once for a read that fails with EAGAIN: one `recvfrom` per message less (tokio's
/// own `poll_read` does the same on Linux). `try_io` clears the readiness only when no new event
/// arrived since it was observed, and never the read-closed state, so no wake-up is lost.
fn try_read_drained(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut short = None;
    let result = stream.try_io(Interest::READABLE, || {
        let n = (&*socket2::SockRef::from(stream)).read(buf)?;
        if n > 0 && n < buf.len() {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match short {
        Some(n) => Ok(n),
        None => result,
    }
}

fn is_retry(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Writes all of `data`, adding what it writes to `bytes_out` as it goes (so a write that fails
/// part-way still counts what it sent); ends the session when a write makes no progress for
/// `write_timeout`.
async fn write_all(
    stream: &mut TcpStream,
    mut data: &[u8],
    write_timeout: Duration,
    bytes_out: &mut u64,
) -> Option<Outcome> {
    while !data.is_empty() {
        // Fast path without a timer: most writes complete at once.
        match stream.try_write(data) {
            Ok(n) => {
                *bytes_out += n as u64;
                data = &data[n..];
                continue;
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Some(Outcome::Failed(ErrorKind::of(&err))),
        }
        match tokio::time::timeout(write_timeout, stream.write(data)).await {
            Ok(Ok(0)) => return Some(Outcome::Failed(ErrorKind::Io)),
            Ok(Ok(n)) => {
                *bytes_out += n as u64;
                data = &data[n..];
            }
            Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(err)) => return Some(Outcome::Failed(ErrorKind::of(&err))),
            Err(_elapsed) => return Some(Outcome::TimedOut),
        }
    }
    None
}

/// Polls a future inside `catch_unwind`, so a panicking session ends as an outcome.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::pin::Pin::new(&mut *inner).poll(cx)
        })) {
            Ok(std::task::Poll::Ready(value)) => std::task::Poll::Ready(Ok(value)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}
