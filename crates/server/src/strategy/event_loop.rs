//! `event-loop`: nonblocking sockets on `--loops` poll loops (mio over epoll, edge-triggered),
//! each owning its connections. The acceptor hands admitted connections to the loops in turn
//! through a channel and a `mio::Waker`.
//!
//! Per message a loop makes the same system calls as the C reference (`epoll_wait` shared by a
//! batch of ready connections, one `read`, one `write`): sockets are registered once for both
//! directions (edge-triggered, so no `epoll_ctl` to switch interest), and a read shorter than the
//! scratch buffer means the socket is drained, so no extra read just to see `EAGAIN`.
//! Connections hold no buffer while idle (see `nonblocking.rs`). Deadlines (idle, write) are
//! checked by a scan of the loop's connections a few times per timeout, which the poll timeout
//! wakes for; thousands of idle connections cost one comparison each per scan.
//!
//! Try it: `cargo run -p echo-server -- --addr 127.0.0.1:0 --strategy event-loop --loops 2`.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpStream;
use mio::{Events, Poll, Token, Waker};
use slab::Slab;

use super::loops::{self, Incoming, LoopHandle, LoopThreads};
use crate::core::error::Error;
use crate::core::registry::Conn;
use crate::core::shared::Shared;
use crate::core::stats::{ErrorKind, Outcome};
use crate::session::nonblocking::{Session, Step, scan_period};

const WAKER: Token = Token(usize::MAX);
/// Readiness events taken per `epoll_wait`.
const EVENTS_PER_POLL: usize = 1024;

/// The acceptor's side: one channel and waker per loop, used in turn.
pub type EventLoop = LoopThreads<Arc<Waker>>;

/// Starts the poll loops.
pub fn start(shared: &Arc<Shared>) -> Result<EventLoop, Error> {
    let loops = (0..shared.config.loops)
        .map(|i| {
            let poll = Poll::new().map_err(|e| Error::io("creating a poll loop", e))?;
            let waker = Arc::new(
                Waker::new(poll.registry(), WAKER)
                    .map_err(|e| Error::io("creating a loop waker", e))?,
            );
            let (incoming, receiver) = crossbeam_channel::unbounded();
            let shared = Arc::clone(shared);
            let thread = std::thread::Builder::new()
                .name(format!("event-loop-{i}"))
                .spawn(move || Loop::new(poll, receiver, shared).run())
                .map_err(|e| Error::io("spawning a poll loop", e))?;
            Ok(LoopHandle {
                incoming,
                waker,
                thread,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(LoopThreads::new(loops, shared))
}

/// One connection on a loop: the admitted socket and its session state.
struct Entry {
    conn: Conn<TcpStream>,
    session: Session,
}

/// One poll loop thread.
struct Loop {
    poll: Poll,
    incoming: Incoming,
    conns: Slab<Entry>,
    /// The loop's one read buffer, shared by all its connections.
    scratch: Vec<u8>,
    /// Connections that yielded while still readable: served again after the next poll.
    again: Vec<usize>,
    again_next: Vec<usize>,
    /// Keys the deadline scan found expired (kept to reuse its capacity).
    expired: Vec<usize>,
    shared: Arc<Shared>,
    scan_every: Duration,
}

impl Loop {
    fn new(poll: Poll, incoming: Receiver<Conn>, shared: Arc<Shared>) -> Self {
        let config = &shared.config;
        let scan_every = scan_period(config);
        Loop {
            poll,
            incoming: Incoming::new(incoming),
            conns: Slab::new(),
            scratch: vec![0; config.buffer_size],
            again: Vec::new(),
            again_next: Vec::new(),
            expired: Vec::new(),
            scan_every,
            shared,
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        let mut next_scan = Instant::now() + self.scan_every;
        while self.incoming.accepting() || !self.conns.is_empty() {
            let timeout = if self.again.is_empty() {
                next_scan.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("echo-server: a poll loop failed, closing its connections: {err}");
                break;
            }
            let now = Instant::now();
            for event in events.iter() {
                if event.token() == WAKER {
                    self.take_incoming();
                    continue;
                }
                let key = event.token().0;
                if let Some(entry) = self.conns.get_mut(key)
                    && (event.is_read_closed() || event.is_error())
                {
                    entry.session.mark_read_closed();
                }
                self.advance(key, now);
            }
            let mut again = std::mem::take(&mut self.again);
            for key in again.drain(..) {
                self.advance(key, now);
            }
            // Before the swap: a connection the scan finds with bytes waiting and that yields
            // goes into `again_next` like any other, so the next poll does not block.
            if now >= next_scan {
                self.close_expired(now);
                next_scan = now + self.scan_every;
            }
            // Keep both vectors' capacity: no allocation per round.
            std::mem::swap(&mut self.again, &mut self.again_next);
            self.again_next = again;
        }
        // Only reached with connections left if the poller failed: close them, counted.
        for entry in self.conns.drain() {
            entry
                .session
                .finish(entry.conn, Outcome::Failed(ErrorKind::Io));
        }
    }

    /// Registers the connections the acceptor sent; notices when it stopped.
    fn take_incoming(&mut self) {
        while let Some(conn) = self.incoming.take() {
            self.register(conn);
        }
    }

    fn register(&mut self, conn: Conn) {
        let slot = self.conns.vacant_entry();
        let token = Token(slot.key());
        let counters = &self.shared.counters;
        if let Some(conn) = loops::register(conn, self.poll.registry(), token, counters) {
            let session = Session::new(conn.accepted_at());
            slot.insert(Entry { conn, session });
        }
    }

    /// Lets one connection make progress; closes it when its session is over. A panic in the
    /// session ends this connection only.
    fn advance(&mut self, key: usize, now: Instant) {
        self.turn(key, now, Turn::Ready);
    }

    /// One turn of a connection's session (`Session::advance`, or `Session::on_deadline` for one
    /// the deadline scan found expired), inside `catch_unwind`; acts on the step it returns.
    fn turn(&mut self, key: usize, now: Instant, turn: Turn) {
        let Some(entry) = self.conns.get_mut(key) else {
            return; // closed earlier in this round
        };
        let config = &self.shared.config;
        let scratch = &mut self.scratch;
        let step = catch_unwind(AssertUnwindSafe(|| {
            let (session, stream) = (&mut entry.session, entry.conn.stream());
            match turn {
                Turn::Ready => session.advance(stream, scratch, now, config),
                Turn::Deadline => session.on_deadline(stream, scratch, now, config),
            }
        }))
        .unwrap_or(Step::Close(Outcome::Failed(ErrorKind::Panic)));
        match step {
            Step::Wait => {}
            Step::Yield => self.again_next.push(key),
            Step::Close(outcome) => self.close(key, outcome),
        }
    }

    fn close(&mut self, key: usize, outcome: Outcome) {
        if let Some(entry) = self.conns.try_remove(key) {
            entry.session.finish(entry.conn, outcome);
            // Dropping the entry deregisters the connection and closes the socket, which also
            // removes it from the epoll set.
        }
    }

    /// Closes connections whose idle or write deadline has passed (counted `timed_out`); an idle
    /// one with bytes waiting is served instead (`Session::on_deadline`).
    fn close_expired(&mut self, now: Instant) {
        let config = &self.shared.config;
        let mut expired = std::mem::take(&mut self.expired);
        expired.extend(
            self.conns
                .iter()
                .filter(|(_, entry)| entry.session.expired(now, config))
                .map(|(key, _)| key),
        );
        for key in expired.drain(..) {
            self.turn(key, now, Turn::Deadline);
        }
        self.expired = expired;
    }
}

/// Why a connection gets a turn: readiness ([`Session::advance`]) or its deadline passed
/// ([`Session::on_deadline`]).
#[derive(Clone, Copy)]
enum Turn {
    Ready,
    Deadline,
}
