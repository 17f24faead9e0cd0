//! A connection's life over a real socket: idle → connecting → open → draining → done, with
//! churn (`--messages-per-connection`) going round again, errors that end a connection (and
//! retry a churn slot), and the socket options of a new connection.
//!
//! A normal end shuts our write side down and reads to EOF: any byte that still arrives is
//! `corrupt` (more came back than was sent).
//!
//! Churn (`--messages-per-connection 1`) makes a connection's system calls the loadgen's main
//! cost, so a connection makes only the calls whose answer is not known already. A slot's first
//! socket: `socket` (nonblocking in the same call), `setsockopt(TCP_NODELAY)`, with
//! `--source-addrs` `setsockopt(IP_BIND_ADDRESS_NO_PORT)` and `bind`, `connect`,
//! `epoll_ctl(ADD)`. Each connection: the messages' writes and reads, `shutdown(SHUT_WR)`, the
//! read of the server's EOF; after that clean end the slot's next connection reuses the socket
//! ([`reconnect`]: `connect(AF_UNSPEC)`, `bind` with `--source-addrs`, `connect`), so a churned
//! connection with one 64-byte echo costs 6 calls (7 with source addresses), where it cost 16
//! (18) with a new socket per connection. A connection that ends any other way is closed, and
//! its slot starts again on a new socket.

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
        conn: &mut Conn,
        now: u64,
        kind: ErrorKind,
        at: ErrorAt,
        detail: impl FnOnce() -> String,
    ) {
        let connection = conn.session.stream.connection();
        self.rec.error(kind, connection, at, now, detail);
        self.close(conn, now);
        let churn = self.plan.messages_per_connection.is_some();
        if churn && self.rec.ever_connected() && !self.plan.window_over(&conn.session.schedule, now)
        {
            conn.phase = Phase::Idle;
            conn.retry_at_ns = now + RETRY_NS;
        } else {
            self.finish(conn, now);
        }
    }

    /// [`Self::fail`] for an I/O error `e` of a `what` call (`read`, `write`) at `message`.
    pub(super) fn fail_io(
        &mut self,
        conn: &mut Conn,
        now: u64,
        what: &str,
        message: u64,
        e: io::Error,
    ) {
        let kind = ErrorKind::from_io(&e);
        let at = ErrorAt::message(message);
        self.fail(conn, now, kind, at, || format!("{what}: {e}"));
    }

    /// [`Self::fail`] with what the echo got wrong.
    pub(super) fn fail_with(&mut self, conn: &mut Conn, now: u64, f: Fault) {
        let connection = conn.session.stream.connection();
        self.fail(conn, now, f.kind(), f.at(), || f.describe(connection));
    }

    /// Closes the socket. No `epoll_ctl(DEL)`: closing the last descriptor of a socket takes it
    /// out of the epoll set (the loadgen never duplicates one), and a churning loadgen would
    /// otherwise pay one more system call per connection.
    fn close(&mut self, conn: &mut Conn, now: u64) {
        drop(conn.socket.take());
        // Bytes of this connection still in the thread's pipe are thrown away with it.
        if let Some(pipe) = self.pipe.as_mut()
            && pipe.holds(conn.index)
            && pipe.discard().is_err()
        {
            self.pipe = None;
        }
        let abandoned = conn.session.abandon(now, &self.plan.window);
        self.rec.abandoned(abandoned);
        conn.phase = Phase::Idle;
    }

    pub(super) fn finish(&mut self, conn: &mut Conn, now: u64) {
        if conn.phase != Phase::Done {
            self.done += 1;
        }
        self.close(conn, now);
        conn.phase = Phase::Done;
        conn.session.schedule.cancel_wake();
    }

    /// Starts the slot's next connection on a new socket.
    pub(super) fn connect(&mut self, registry: &Registry, conn: &mut Conn, now: u64) {
        self.connect_on(registry, conn, now, None);
    }

    /// Starts the slot's next connection: on `reuse`, a socket whose previous connection ended
    /// cleanly (already registered with the poll), or else on a new socket.
    fn connect_on(
        &mut self,
        registry: &Registry,
        conn: &mut Conn,
        now: u64,
        reuse: Option<TcpStream>,
    ) {
        if self.plan.window_over(&conn.session.schedule, now) {
            self.finish(conn, now);
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
        if let Some(socket) = reuse {
            match reconnect(&socket, self.target, source) {
                Ok(()) => {
                    conn.socket = Some(socket);
                    conn.phase = Phase::Connecting;
                }
                // Closed here; the slot retries on a new socket.
                Err(e) => self.connect_failed(conn, now, e),
            }
            return;
        }
        match start_connect(self.target, source) {
            Ok(mut socket) => {
                let token = Token(conn.index);
                if let Err(e) =
                    registry.register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)
                {
                    let kind = ErrorKind::from_io(&e);
                    self.fail(conn, now, kind, ErrorAt::default(), || {
                        format!("registering a new connection: {e}")
                    });
                    return;
                }
                conn.socket = Some(socket);
                conn.phase = Phase::Connecting;
            }
            Err(e) => self.connect_failed(conn, now, e),
        }
    }

    fn connect_failed(&mut self, conn: &mut Conn, now: u64, e: io::Error) {
        let kind = ErrorKind::from_io(&e);
        let target = self.target;
        self.fail(conn, now, kind, ErrorAt::default(), || {
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

    /// The connecting socket reported readiness: `failed` when the event carried an error or a
    /// hang-up. On Linux a connecting TCP socket is reported writable only once the connection
    /// is established, and a failed connect always carries `EPOLLERR`/`EPOLLHUP`; so a plain
    /// writable event needs no `getsockopt(SO_ERROR)` or `getpeername` to confirm it (two
    /// system calls per connection saved when churning). Only a failure asks for its error.
    pub(super) fn on_connect_ready(
        &mut self,
        registry: &Registry,
        conn: &mut Conn,
        now: u64,
        failed: bool,
    ) {
        let Some(socket) = conn.socket.as_ref() else {
            return;
        };
        // The connect time ends now, not when the poll batch began.
        let now = self.timing.now_ns().max(now);
        if failed {
            match socket.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.connect_failed(conn, now, e);
                    return;
                }
                // A hang-up without an error: established and closed at once by the server,
                // or not established yet. Ask.
                Ok(None) => match socket.peer_addr() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => {
                        self.connect_failed(conn, now, e);
                        return;
                    }
                },
            }
        }
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
            self.end_after_drain(registry, conn, now, reconnect, false);
            return;
        }
        conn.phase = Phase::Draining;
        conn.reconnect_after_drain = reconnect;
        conn.drain_deadline_ns = now + DRAIN_MAX_NS.min(self.timeout_ms * 1_000_000);
        // No read here: the socket was read until it was empty (a short read or EWOULDBLOCK)
        // before every echo could be verified, and any byte that arrived since raised an
        // edge-triggered event of its own, which brings us to `on_drain_readable`.
    }

    /// The drain is over: `clean` when the server's EOF came (both sides closed, nothing left
    /// over), not when it was given up on. A churn slot then connects again, on the same socket
    /// when it ended cleanly (see [`reconnect`]).
    pub(super) fn end_after_drain(
        &mut self,
        registry: &Registry,
        conn: &mut Conn,
        now: u64,
        reconnect: bool,
        clean: bool,
    ) {
        if reconnect && !self.plan.window_over(&conn.session.schedule, now) {
            let reuse = if clean { conn.socket.take() } else { None };
            self.close(conn, now);
            conn.phase = Phase::Idle;
            conn.retry_at_ns = now;
            self.connect_on(registry, conn, now, reuse);
        } else {
            self.finish(conn, now);
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
                    self.end_after_drain(registry, conn, now, reconnect, true);
                    return;
                }
                Ok(n) => {
                    self.rec.bytes_received(n, now);
                    let fault = conn.session.stream.extra_after_end(&self.recv_buf[..n]);
                    self.fail_with(conn, now, fault);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The echoes are all in; a reset after our shutdown is no error of the echo.
                Err(_) => {
                    let reconnect = conn.reconnect_after_drain;
                    self.end_after_drain(registry, conn, now, reconnect, false);
                    return;
                }
            }
        }
    }
}

/// Starts a nonblocking connect (optionally from a source address).
fn start_connect(target: SocketAddr, source: Option<SocketAddr>) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    // Nonblocking from the start (`SOCK_NONBLOCK`: no `fcntl` pair), and `TCP_NODELAY` once,
    // before connecting (the connected socket keeps it).
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
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

/// Connects `socket` again, to `target` from `source`: dissolves its finished connection with
/// `connect(AF_UNSPEC)` (Linux's TCP disconnect; on a socket whose connection closed cleanly it
/// sends nothing), binds it to the next source address, and connects. The server sees a new
/// connection like any other (a new handshake, a new local port); the loadgen saves the
/// `socket`, `setsockopt`, `epoll_ctl(ADD)` and `close` of a new socket (the socket stays
/// registered with the poll; `TCP_NODELAY` and `IP_BIND_ADDRESS_NO_PORT` stay set).
fn reconnect(socket: &TcpStream, target: SocketAddr, source: Option<SocketAddr>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let unspec = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: connect reads a sockaddr of the given size from a valid pointer, for our own
    // descriptor.
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            &unspec,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let socket = socket2::SockRef::from(socket);
    if let Some(source) = source {
        socket.bind(&source.into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    /// Repeats a nonblocking call while it says "not yet" (for at most 5 s).
    fn retry<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match call() {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                    ) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                result => return result,
            }
        }
    }

    #[test]
    fn a_cleanly_closed_socket_connects_again_as_a_new_connection_with_its_options() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let mut socket = start_connect(target, None).unwrap();
        let (mut server, first_peer) = listener.accept().unwrap();
        // One exchange, then the clean end the drain sees: our shutdown, the server's EOF.
        let mut buf = [0u8; 8];
        retry(|| socket.write(b"ping")).unwrap();
        let n = server.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        socket.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(server.read(&mut buf).unwrap(), 0);
        drop(server);
        assert_eq!(retry(|| socket.read(&mut buf)).unwrap(), 0);

        reconnect(&socket, target, Some("127.0.0.1:0".parse().unwrap())).unwrap();
        let (mut server, peer) = listener.accept().unwrap();
        assert_ne!(
            peer.port(),
            first_peer.port(),
            "a new connection on a new port"
        );
        assert!(
            socket.nodelay().unwrap(),
            "TCP_NODELAY survives the reconnect"
        );
        retry(|| socket.write(b"again")).unwrap();
        let n = server.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"again");
        server.write_all(b"back").unwrap();
        let n = retry(|| socket.read(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"back");
    }

    #[test]
    fn a_reconnect_to_a_closed_port_fails_with_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let mut socket = start_connect(target, None).unwrap();
        let (server, _) = listener.accept().unwrap();
        socket.shutdown(std::net::Shutdown::Write).unwrap();
        drop(server);
        let mut buf = [0u8; 8];
        assert_eq!(retry(|| socket.read(&mut buf)).unwrap(), 0);
        drop(listener);
        let refused = reconnect(&socket, target, None)
            .and_then(|()| retry(|| socket.write(b"x")).map(|_| ()))
            .unwrap_err();
        assert_eq!(
            ErrorKind::from_io(&refused),
            ErrorKind::Refused,
            "{refused}"
        );
    }
}
