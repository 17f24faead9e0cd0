//! A connection's life over a real socket: idle → connecting → open → draining → done, with
//! churn (`--messages-per-connection`) going round again, errors that end a connection (and
//! retry a churn slot), and the socket options of a new connection.
//!
//! A normal end shuts our write side down and reads to EOF: any byte that still arrives is
//! `corrupt` (more came back than was sent). What the messages on a connection do is the
//! [`Session`]'s business; this module only moves it between connections.

use super::poll::Ctx;
use super::record::ErrorAt;
use super::schedule::Ending;
use super::session::Session;
use super::stream::Fault;
use crate::errors::ErrorKind;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io::{self, Read};
use std::net::SocketAddr;

/// Wait before a churn slot reconnects after a failed connection.
const RETRY_NS: u64 = 10_000_000;
/// Longest wait for the server's EOF after the last echo of a connection.
const DRAIN_MAX_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not connected; (re)connect at `retry_at_ns`.
    Idle,
    Connecting,
    Open,
    /// Every echo is in; our write side is shut down and we read to EOF: any byte that still
    /// arrives is `corrupt` (more came back than was sent).
    Draining,
    Done,
}

/// One connection slot of this thread, and its current socket.
pub(super) struct Conn {
    /// Index in this thread's connection list (the mio token).
    pub index: usize,
    pub slot: usize,
    /// Connections started on this slot; the next one's id is `slot + generation * connections`.
    pub generation: u64,
    pub socket: Option<TcpStream>,
    pub phase: Phase,
    pub retry_at_ns: u64,
    /// Draining: give up waiting for the server's EOF at this time.
    pub drain_deadline_ns: u64,
    /// Draining: connect again (churn) rather than finish once the EOF came.
    pub reconnect_after_drain: bool,
    pub connect_started_ns: u64,
    pub session: Session,
}

impl Conn {
    /// Slot `slot` at `index` in this thread's list, not connected yet (done at once when it has
    /// no messages to send).
    pub fn new(index: usize, slot: usize, session: Session) -> Conn {
        let phase = if session.schedule.quota == Some(0) {
            Phase::Done
        } else {
            Phase::Idle
        };
        Conn {
            index,
            slot,
            generation: 0,
            socket: None,
            phase,
            retry_at_ns: 0,
            drain_deadline_ns: 0,
            reconnect_after_drain: false,
            connect_started_ns: 0,
            session,
        }
    }
}

impl Ctx {
    /// Records an error, keeps a sample, and ends the connection (churn slots retry later).
    pub(super) fn fail(
        &mut self,
        registry: &Registry,
        conn: &mut Conn,
        now: u64,
        kind: ErrorKind,
        at: ErrorAt,
        detail: impl FnOnce() -> String,
    ) {
        let connection = conn.session.stream.connection();
        self.rec.error(kind, connection, at, now, detail);
        self.close(registry, conn, now);
        let churn = self.plan.messages_per_connection.is_some();
        if churn && self.rec.ever_connected() && !self.plan.window_over(&conn.session.schedule, now)
        {
            conn.phase = Phase::Idle;
            conn.retry_at_ns = now + RETRY_NS;
        } else {
            self.finish(registry, conn, now);
        }
    }

    /// [`Self::fail`] for an I/O error `e` of a `what` call (`read`, `write`) at `message`.
    pub(super) fn fail_io(
        &mut self,
        registry: &Registry,
        conn: &mut Conn,
        now: u64,
        what: &str,
        message: u64,
        e: io::Error,
    ) {
        let kind = ErrorKind::from_io(&e);
        let at = ErrorAt::message(message);
        self.fail(registry, conn, now, kind, at, || format!("{what}: {e}"));
    }

    /// [`Self::fail`] with what the echo got wrong.
    pub(super) fn fail_with(&mut self, registry: &Registry, conn: &mut Conn, now: u64, f: Fault) {
        let connection = conn.session.stream.connection();
        self.fail(registry, conn, now, f.kind(), f.at(), || {
            f.describe(connection)
        });
    }

    fn close(&mut self, registry: &Registry, conn: &mut Conn, now: u64) {
        if let Some(mut socket) = conn.socket.take() {
            let _ = registry.deregister(&mut socket);
        }
        let abandoned = conn.session.abandon(now, &self.plan.window);
        self.rec.abandoned(abandoned);
        conn.phase = Phase::Idle;
    }

    pub(super) fn finish(&mut self, registry: &Registry, conn: &mut Conn, now: u64) {
        if conn.phase != Phase::Done {
            self.done += 1;
        }
        self.close(registry, conn, now);
        conn.phase = Phase::Done;
        conn.session.schedule.cancel_wake();
    }

    pub(super) fn connect(&mut self, registry: &Registry, conn: &mut Conn, now: u64) {
        if self.plan.window_over(&conn.session.schedule, now) {
            self.finish(registry, conn, now);
            return;
        }
        let id = conn.slot as u64 + conn.generation * self.plan.connections;
        conn.generation += 1;
        conn.session.stream.restart(id);
        conn.connect_started_ns = now;
        let source = if self.source_addrs.is_empty() {
            None
        } else {
            let ip = self.source_addrs[self.next_source % self.source_addrs.len()];
            self.next_source = self.next_source.wrapping_add(1);
            Some(SocketAddr::new(ip, 0))
        };
        match start_connect(self.target, source) {
            Ok(mut socket) => {
                let token = Token(conn.index);
                if let Err(e) =
                    registry.register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)
                {
                    let kind = ErrorKind::from_io(&e);
                    self.fail(registry, conn, now, kind, ErrorAt::default(), || {
                        format!("registering a new connection: {e}")
                    });
                    return;
                }
                conn.socket = Some(socket);
                conn.phase = Phase::Connecting;
            }
            Err(e) => self.connect_failed(registry, conn, now, e),
        }
    }

    fn connect_failed(&mut self, registry: &Registry, conn: &mut Conn, now: u64, e: io::Error) {
        let kind = ErrorKind::from_io(&e);
        let target = self.target;
        self.fail(registry, conn, now, kind, ErrorAt::default(), || {
            if kind == ErrorKind::AddrNotAvailable {
                format!(
                    "connect to {target}: {e} (out of local ports, or a source address that is \
                     not configured on this host: spread connections over more local addresses \
                     with --source-addrs 127.0.0.2-127.0.0.64, or use only addresses this host \
                     has)"
                )
            } else {
                format!("connect to {target}: {e}")
            }
        });
    }

    pub(super) fn on_connect_ready(&mut self, registry: &Registry, conn: &mut Conn, now: u64) {
        let Some(socket) = conn.socket.as_ref() else {
            return;
        };
        // The connect time ends now, not when the poll batch began.
        let now = self.timing.now_ns().max(now);
        match socket.take_error() {
            Ok(Some(e)) | Err(e) => {
                self.connect_failed(registry, conn, now, e);
                return;
            }
            Ok(None) => {}
        }
        match socket.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => {
                self.connect_failed(registry, conn, now, e);
                return;
            }
        }
        let _ = socket.set_nodelay(true);
        conn.phase = Phase::Open;
        conn.session.opened(now);
        self.rec
            .connected(now.saturating_sub(conn.connect_started_ns), now);
        self.pump(registry, conn, now);
    }

    /// Ends a connection that has nothing in flight and will issue nothing more.
    pub(super) fn maybe_end_connection(&mut self, registry: &Registry, conn: &mut Conn, now: u64) {
        let issued = conn.session.stream.issued();
        match self.plan.ending(&conn.session.schedule, issued, now) {
            Some(Ending::Last) => self.start_drain(registry, conn, now, false),
            // Churn: close (after the drain) and connect again at once.
            Some(Ending::Churn) => self.start_drain(registry, conn, now, true),
            None => {}
        }
    }

    /// A normal end: shut our write side down and read to EOF (up to [`DRAIN_MAX_NS`] or
    /// `--timeout`, whichever is shorter), so that bytes the server sends after the last echo
    /// are seen and counted as `corrupt`.
    fn start_drain(&mut self, registry: &Registry, conn: &mut Conn, now: u64, reconnect: bool) {
        let shut = conn
            .socket
            .as_ref()
            .map(|s| s.shutdown(std::net::Shutdown::Write));
        if !matches!(shut, Some(Ok(()))) {
            self.end_after_drain(registry, conn, now, reconnect);
            return;
        }
        conn.phase = Phase::Draining;
        conn.reconnect_after_drain = reconnect;
        conn.drain_deadline_ns = now + DRAIN_MAX_NS.min(self.timeout_ms * 1_000_000);
        // Bytes may already be waiting (edge-triggered: no new event would come for them).
        self.on_drain_readable(registry, conn);
    }

    pub(super) fn end_after_drain(
        &mut self,
        registry: &Registry,
        conn: &mut Conn,
        now: u64,
        reconnect: bool,
    ) {
        if reconnect && !self.plan.window_over(&conn.session.schedule, now) {
            self.close(registry, conn, now);
            conn.phase = Phase::Idle;
            conn.retry_at_ns = now;
            self.connect(registry, conn, now);
        } else {
            self.finish(registry, conn, now);
        }
    }

    /// Draining: reads to EOF; any byte is `corrupt` ("extra bytes after the last echo").
    pub(super) fn on_drain_readable(&mut self, registry: &Registry, conn: &mut Conn) {
        loop {
            let Some(socket) = conn.socket.as_mut() else {
                return;
            };
            let read = socket.read(&mut self.recv_buf);
            let now = self.timing.now_ns();
            match read {
                Ok(0) => {
                    let reconnect = conn.reconnect_after_drain;
                    self.end_after_drain(registry, conn, now, reconnect);
                    return;
                }
                Ok(n) => {
                    self.rec.bytes_received(n, now);
                    let fault = conn.session.stream.extra_after_end(&self.recv_buf[..n]);
                    self.fail_with(registry, conn, now, fault);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The echoes are all in; a reset after our shutdown is no error of the echo.
                Err(_) => {
                    let reconnect = conn.reconnect_after_drain;
                    self.end_after_drain(registry, conn, now, reconnect);
                    return;
                }
            }
        }
    }
}

/// Starts a nonblocking connect (optionally from a source address).
fn start_connect(target: SocketAddr, source: Option<SocketAddr>) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(source) = source {
        // Let connect() pick the local port (by the 4-tuple), not bind(): without this every
        // bound socket takes a port of its own and a source address runs out at ~28,000.
        if source.is_ipv4() {
            use std::os::fd::AsRawFd;
            let one: libc::c_int = 1;
            // SAFETY: setsockopt reads an int from a valid pointer for our own descriptor.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        socket.bind(&source.into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}
