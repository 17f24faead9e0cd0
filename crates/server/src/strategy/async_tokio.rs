//! `async`: a tokio multi-threaded runtime with `--workers` threads and a task per connection.
//!
//! The session is the nonblocking state machine every readiness-driven strategy shares
//! (`session/nonblocking.rs`), driven by tokio's readiness instead of a poll loop: the same
//! clocks (idle time from accept or the last echo completed; the write timeout while output is
//! pending), the same memory rule (a task waits holding no buffer, reads into its runtime
//! thread's scratch buffer and echoes at once; only bytes the socket did not take are kept, and
//! reading pauses meanwhile) and the same fairness turn (a task that used its turn yields to the
//! thread's other tasks). One timer per connection follows the session's deadline and is re-armed
//! only when it fires early or the deadline moved earlier, so a message costs no timer update.
//!
//! Try it: `cargo run -p echo-server -- --addr 127.0.0.1:0 --strategy async --workers 2`.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use super::live::LiveSessions;
use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::registry::Conn;
use crate::core::shared::{Dispatch, Shared};
use crate::core::stats::{ErrorKind, Outcome};
use crate::session::nonblocking::{Session, Step, failed};

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
    let conn = match conn.map_stream(|stream| {
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
    let mut session = Session::new(conn.accepted_at());
    let outcome = match CatchUnwind(pin!(serve(conn.stream(), &mut session, shared))).await {
        Ok(outcome) => outcome,
        Err(()) => Outcome::Failed(ErrorKind::Panic),
    };
    session.finish(conn, outcome);
}

thread_local! {
    /// Each runtime thread's read buffer, shared by the tasks it runs: a task holds no buffer
    /// while its connection is idle.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The session state machine's turn on this runtime thread's scratch buffer.
fn turn(session: &mut Session, stream: &TcpStream, config: &Config, deadline: bool) -> Step {
    SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < config.buffer_size {
            scratch.resize(config.buffer_size, 0);
        }
        let scratch = &mut scratch[..config.buffer_size];
        let now = std::time::Instant::now();
        if deadline {
            session.on_deadline(Tokio(stream), scratch, now, config)
        } else {
            session.advance(Tokio(stream), scratch, now, config)
        }
    })
}

async fn serve(stream: &TcpStream, session: &mut Session, shared: &Shared) -> Outcome {
    let config = &shared.config;
    // One timer for the session's deadline (idle, or write while output is pending), re-armed
    // only when it fires before the session expired or when the deadline moved earlier (output
    // backed up): a message costs no timer update, so the steady state allocates nothing.
    let mut timer = pin!(tokio::time::sleep_until(session.deadline(config).into()));
    let mut deadline_passed = false;
    loop {
        match turn(session, stream, config, deadline_passed) {
            Step::Close(outcome) => return outcome,
            Step::Yield => {
                // Its fair share of this turn is used: let the thread's other tasks run.
                tokio::task::yield_now().await;
                continue;
            }
            Step::Wait => {}
        }
        let deadline = tokio::time::Instant::from_std(session.deadline(config));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        // Writable while output is pending (reading pauses meanwhile), readable otherwise.
        let interest = if session.pending().is_some() {
            Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        deadline_passed = tokio::select! {
            biased;
            ready = stream.ready(interest) => match ready {
                Ok(_) => false,
                Err(err) => return failed(&err),
            },
            () = timer.as_mut() => {
                let now = std::time::Instant::now();
                if !session.expired(now, config) {
                    // Activity since the timer was armed: wait for the rest of the allowance.
                    timer.as_mut().reset(session.deadline(config).into());
                    continue;
                }
                true
            }
        };
    }
}

/// The tokio stream as the state machine's `Read + Write`: nonblocking reads and writes through
/// tokio, so that `WouldBlock` clears tokio's readiness and the next wait is for a new event.
#[derive(Clone, Copy)]
struct Tokio<'a>(&'a TcpStream);

impl io::Read for Tokio<'_> {
    /// Also forgets the read readiness after a short read (fewer bytes than `buf` holds: the
    /// socket was drained), so the next wait is for the next edge instead of returning at once
    /// for a read that fails with EAGAIN: one `recvfrom` per message less (tokio's own
    /// `poll_read` does the same on Linux). `try_io` clears the readiness only when no new event
    /// arrived since it was observed, and never the read-closed state, so no wake-up is lost.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut short = None;
        let result = self.0.try_io(Interest::READABLE, || {
            let n = (&*socket2::SockRef::from(self.0)).read(buf)?;
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
}

impl io::Write for Tokio<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
