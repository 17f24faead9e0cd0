//! Starting and stopping a server, the top layer: bind, the accept loop shared by every strategy,
//! and the drain.
//!
//! The accept loop owns the admission rules, so they hold the same way for every strategy:
//! `--max-connections` (beyond it, new connections are closed at once and counted `rejected`) and
//! running out of descriptors (EMFILE/ENFILE: back off 100 ms, log at most once a second, keep
//! serving what is open). Strategies only decide how an admitted connection is served.
//!
//! Shutdown: `stop()` ends the listen at once through its own descriptor of the listening socket
//! (new clients are refused, even while the acceptor is busy in a session or blocked on a full
//! queue), waits for an admission in progress (the accept gate), and only then starts the drain
//! clock, so every admitted connection gets the whole `--drain-timeout`.
//!
//! Try it: `cargo run -p echo-server -- --addr 127.0.0.1:0 --strategy pool`, then Ctrl-C.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::shared::{Dispatch, RateLimitedLog, Shared};
use crate::core::stats::{ErrorKind, Stats};
use crate::strategy;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// How long the acceptor waits before trying again when descriptors run out.
const DESCRIPTOR_BACKOFF: Duration = Duration::from_millis(100);
/// After the drain timeout cut the open connections, how long their sessions get to notice.
const CUT_GRACE: Duration = Duration::from_secs(2);

/// A running server. Dropping it (or calling [`Server::shutdown`]) stops accepting, drains open
/// sessions up to the drain timeout, closes the rest and joins every thread.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    /// The listening socket's second descriptor (see `start`), closed by `stop()`.
    listener_for_stop: Option<TcpListener>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds, starts the strategy and the accept loop, and returns once connections are accepted.
    pub fn start(config: Config) -> Result<Server, Error> {
        config.validate()?;
        let config_addr = config.addr;
        let listener = bind(config.addr, config.backlog)?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config_addr,
            source,
        })?;
        let poll = Poll::new().map_err(|e| Error::io("creating the accept poller", e))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER).map_err(|e| Error::io("creating a waker", e))?,
        );
        poll.registry()
            .register(
                &mut SourceFd(&listener.as_raw_fd()),
                LISTENER,
                Interest::READABLE,
            )
            .map_err(|source| Error::Bind {
                addr: config_addr,
                source,
            })?;

        let shared = Arc::new(Shared::new(config));
        // A second descriptor of the listening socket, so that `stop()` can close it (refuse new
        // connections) even while the acceptor is busy in a session (`iterative`) or blocked
        // handing a connection over (`pool --overflow block`).
        let listener_for_stop = listener.try_clone().map_err(|source| Error::Bind {
            addr: config_addr,
            source,
        })?;
        let dispatch = strategy::start(&shared)?;
        let acceptor_shared = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("acceptor".into())
            .spawn(move || accept_loop(poll, listener, dispatch, &acceptor_shared))
            .map_err(|e| Error::io("spawning the acceptor thread", e))?;
        Ok(Server {
            local_addr,
            shared,
            waker,
            listener_for_stop: Some(listener_for_stop),
            acceptor: Some(acceptor),
        })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.snapshot()
    }

    /// Stops accepting, lets open sessions finish up to the drain timeout, closes the rest,
    /// joins every thread and returns the final counters.
    pub fn shutdown(mut self) -> Stats {
        self.stop();
        self.snapshot()
    }

    fn snapshot(&self) -> Stats {
        let config = &self.shared.config;
        let workers = if config.strategy.uses_workers() {
            config.workers
        } else if config.strategy.uses_loops() {
            config.loops
        } else {
            0
        };
        self.shared
            .counters
            .snapshot(config.strategy.name(), workers)
    }

    fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.begin_stopping();
        if let Err(err) = self.waker.wake() {
            eprintln!("echo-server: could not wake the acceptor: {err}");
        }
        // Stop listening now, whatever the acceptor is doing: shutdown(2) of a listening socket
        // ends the listen (new clients are refused; ones in the backlog are reset, never
        // accepted); dropping our descriptor alone would leave the acceptor's open.
        if let Some(listener) = self.listener_for_stop.take()
            && let Err(err) = socket2::SockRef::from(&listener).shutdown(std::net::Shutdown::Read)
        {
            eprintln!("echo-server: could not close the listener: {err}");
        }
        // Wait for an admission in progress; after this no connection joins the registry.
        self.shared.close_accept_gate();
        let deadline = Instant::now() + self.shared.config.drain_timeout;
        while !self.shared.registry.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let cut = self.shared.registry.shutdown_all();
        if cut > 0 {
            eprintln!(
                "echo-server: drain timeout ({:?}) reached, closing {cut} open connection(s)",
                self.shared.config.drain_timeout
            );
        }
        // Cut sessions end promptly (reads see EOF, writes fail) and count themselves
        // `drain_closed` (`Conn::finish`); wait for them and for the strategy's threads (joined
        // by the acceptor), so that the final counters include them. Cutting again is harmless
        // and covers any connection registered after the first cut.
        let cut_deadline = Instant::now() + CUT_GRACE;
        while (!self.shared.registry.is_empty() || !acceptor.is_finished())
            && Instant::now() < cut_deadline
        {
            self.shared.registry.shutdown_all();
            std::thread::sleep(Duration::from_millis(5));
        }
        if acceptor.join().is_err() {
            eprintln!("echo-server: the acceptor thread panicked");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates the listening socket: `SO_REUSEADDR` (restarts while old connections sit in
/// TIME_WAIT), the given backlog, nonblocking for the poller.
fn bind(addr: SocketAddr, backlog: i32) -> Result<TcpListener, Error> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| Error::Bind { addr, source: e })?;
    socket
        .set_reuse_address(true)
        .map_err(|e| Error::Bind { addr, source: e })?;
    socket.bind(&addr.into()).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => Error::AddrInUse(addr),
        _ => Error::Bind { addr, source: e },
    })?;
    socket
        .listen(backlog)
        .map_err(|e| Error::Bind { addr, source: e })?;
    socket
        .set_nonblocking(true)
        .map_err(|e| Error::Bind { addr, source: e })?;
    Ok(socket.into())
}

/// Accepts until shutdown; admits or rejects each connection and hands it to the strategy.
fn accept_loop(
    mut poll: Poll,
    listener: TcpListener,
    mut dispatch: Box<dyn Dispatch>,
    shared: &Shared,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = &shared.counters;
    let mut events = Events::with_capacity(64);
    let mut backing_off = false; // after EMFILE/ENFILE or another accept failure
    let mut accept_log = RateLimitedLog::default();

    'serve: while !shared.stopping() {
        let timeout = backing_off.then_some(DESCRIPTOR_BACKOFF);
        if let Err(err) = poll.poll(&mut events, timeout) {
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("echo-server: accept poller failed, no longer accepting: {err}");
            break;
        }
        // Drain the accept queue: the poller is edge-triggered.
        loop {
            let gate = shared.accept_gate();
            if !*gate || shared.stopping() {
                break 'serve;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    backing_off = false;
                    counters.accepted.fetch_add(1, Relaxed);
                    if counters.open_now() >= shared.config.max_connections as u64
                        || !dispatch.has_room()
                    {
                        counters.rejected.fetch_add(1, Relaxed);
                        drop(stream);
                        continue;
                    }
                    let conn = shared
                        .registry
                        .admit(stream, peer, Instant::now(), counters);
                    drop(gate);
                    dispatch.dispatch(conn);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    backing_off = false; // nothing waits: any failure episode is over
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // `stop()` ended the listen under us (EINVAL): not an accept failure.
                Err(_) if shared.stopping() => break 'serve,
                // The connection was reset while in the backlog: that one is gone; go on.
                Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => {
                    counters.error(ErrorKind::Accept);
                }
                Err(err) => {
                    // Out of descriptors (EMFILE/ENFILE) or anything else (ENOBUFS, ENOMEM...):
                    // back off and retry every 100 ms, serving what is open; counted once per
                    // episode (until an accept works again), logged at most once a second.
                    let out_of_descriptors = is_backing_off(&err);
                    if !backing_off {
                        counters.error(if out_of_descriptors {
                            ErrorKind::Descriptors
                        } else {
                            ErrorKind::Accept
                        });
                    }
                    backing_off = true;
                    accept_log.log(|| {
                        if out_of_descriptors {
                            format!(
                                "out of file descriptors on accept ({err}); serving open \
                                 connections, retrying every {DESCRIPTOR_BACKOFF:?}"
                            )
                        } else {
                            format!("accept failed ({err}); retrying every {DESCRIPTOR_BACKOFF:?}")
                        }
                    });
                    break;
                }
            }
        }
    }
    drop(listener); // (`stop()` already ended the listen through its own descriptor)
    dispatch.finish();
}

fn is_backing_off(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocking sessions rely on this: a socket accepted from the nonblocking listener is
    /// blocking (Linux's `accept(2)` does not inherit `O_NONBLOCK`).
    #[test]
    fn accepted_sockets_are_blocking() -> io::Result<()> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 16).map_err(io::Error::other)?;
        let _client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let accepted = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(err)
                    if err.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(err) => return Err(err),
            }
        };
        // SAFETY: fcntl(F_GETFL) on an open descriptor.
        let flags = unsafe { libc::fcntl(accepted.as_raw_fd(), libc::F_GETFL) };
        assert!(flags >= 0);
        assert_eq!(
            flags & libc::O_NONBLOCK,
            0,
            "accepted socket is nonblocking"
        );
        Ok(())
    }
}
