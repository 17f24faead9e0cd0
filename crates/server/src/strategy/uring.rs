//! `uring`: io_uring submission and completion rings (Linux, cargo feature `uring`, on by
//! default), on `--loops` ring threads that each own their connections, fed by the acceptor
//! through a channel and an eventfd.
//!
//! Completion-based echo: each connection has exactly one operation in flight, a `recv` or a
//! `send`. The `recv` names no buffer: the kernel picks one from the loop's provided-buffer ring
//! when bytes arrive, so an idle connection holds no buffer (the same memory rule as
//! `event-loop`). The echo is sent from that same buffer (no copy), and the buffer goes back to
//! the ring when the send is done; reading pauses meanwhile (backpressure). A loop has
//! `BUFFERS_PER_LOOP` buffers of `--buffer-size`; a `recv` that finds none waiting fails with
//! `ENOBUFS`, and the connection is re-armed when a buffer comes back. One `io_uring_enter`
//! submits every new operation and reaps every completion of a round, so a busy loop makes far
//! fewer system calls per message than epoll's `epoll_wait` + `read` + `write`.
//!
//! Deadlines use the shared [`Session`] clocks, checked by a scan as in `event-loop`; an expired
//! connection is `shutdown(2)`, which completes its in-flight operation, and is then closed as
//! timed out. Where the kernel refuses io_uring (old kernel, `io_uring_disabled`, seccomp), the
//! server does not start and says so.
//!
//! Try it: `cargo run -p echo-server -- --addr 127.0.0.1:0 --strategy uring`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use slab::Slab;

use super::loops::{Incoming, LoopHandle, LoopThreads, Wake};
use crate::core::error::Error;
use crate::core::registry::Conn;
use crate::core::shared::{RateLimitedLog, Shared};
use crate::core::stats::{ErrorKind, Outcome};
use crate::session::nonblocking::{Session, scan_period};

/// Submission queue entries per ring (the completion queue is twice that; the kernel keeps
/// overflowing completions instead of dropping them).
const RING_ENTRIES: u32 = 4096;
/// Provided buffers per loop: a power of two. Only connections with bytes in flight hold one.
const BUFFERS_PER_LOOP: u16 = 64;
const BUFFER_GROUP: u16 = 0;
/// User data of the eventfd read that wakes a loop for new connections.
const WAKE: u64 = u64::MAX;
/// How many times queuing an operation submits (and reaps) to make room before it gives up and
/// the connection is closed as an error: a ring that stays full is not waited on forever.
const PUSH_ATTEMPTS: usize = 8;

/// A completion as the loop keeps it: user data, result, flags.
type Completion = (u64, i32, u32);

/// The submission side of a ring, as `push_bounded` needs it (a seam for the test).
trait Submission {
    /// Queues `entry`; false when the submission queue is full.
    fn try_push(&mut self, entry: &squeue::Entry) -> bool;
    /// Submits what is queued, and moves completions waiting in the completion queue to
    /// `reaped` (so the kernel has room to post more: a full one makes submit fail with EBUSY).
    fn submit_and_reap(&mut self, reaped: &mut Vec<Completion>) -> io::Result<()>;
}

impl Submission for IoUring {
    fn try_push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: every buffer an entry points to (provided buffers, the wake counter) lives as
        // long as the ring.
        unsafe { self.submission().push(entry) }.is_ok()
    }

    fn submit_and_reap(&mut self, reaped: &mut Vec<Completion>) -> io::Result<()> {
        let submitted = self.submit().map(drop);
        reaped.extend(
            self.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        submitted
    }
}

/// Queues `entry`, submitting and reaping between tries while the submission queue is full, at
/// most `PUSH_ATTEMPTS` times; the error says why it gave up.
fn push_bounded(
    ring: &mut impl Submission,
    entry: &squeue::Entry,
    reaped: &mut Vec<Completion>,
) -> io::Result<()> {
    let mut last_error = None;
    for _ in 0..PUSH_ATTEMPTS {
        if ring.try_push(entry) {
            return Ok(());
        }
        if let Err(err) = ring.submit_and_reap(reaped) {
            last_error = Some(err);
        }
    }
    if ring.try_push(entry) {
        return Ok(());
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("the submission queue stayed full")))
}

/// The acceptor's side: one channel and eventfd per loop, used in turn.
pub type Uring = LoopThreads<EventFd>;

/// The eventfd that wakes a ring loop (its read is always in flight on the ring).
pub struct EventFd(Arc<OwnedFd>);

impl Wake for EventFd {
    fn wake(&self) -> io::Result<()> {
        signal(&self.0)
    }
}

/// Starts the ring loops; fails (with the kernel's answer) where io_uring is refused.
pub fn start(shared: &Arc<Shared>) -> Result<Uring, Error> {
    let loops = (0..shared.config.loops)
        .map(|i| {
            let wake = Arc::new(eventfd().map_err(|e| Error::io("creating an eventfd", e))?);
            let (incoming, receiver) = crossbeam_channel::unbounded();
            let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
            let loop_wake = Arc::clone(&wake);
            let loop_shared = Arc::clone(shared);
            // The ring is created on the thread that uses it (a single-issuer ring must be
            // submitted to by the thread that created it); setup errors come back here.
            let thread = std::thread::Builder::new()
                .name(format!("uring-{i}"))
                .spawn(
                    move || match RingLoop::new(receiver, loop_wake, loop_shared) {
                        Ok(mut ring_loop) => {
                            let _ = ready_tx.send(Ok(()));
                            ring_loop.arm_wake();
                            ring_loop.run();
                        }
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                        }
                    },
                )
                .map_err(|e| Error::io("spawning a ring loop", e))?;
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    let _ = thread.join();
                    return Err(err);
                }
                Err(_) => {
                    let _ = thread.join();
                    return Err(Error::io(
                        "setting up io_uring",
                        io::Error::other("the ring thread ended before it was ready"),
                    ));
                }
            }
            Ok(LoopHandle {
                incoming,
                waker: EventFd(wake),
                thread,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(LoopThreads::new(loops, shared))
}

/// A ring for one thread: single issuer with deferred task work (completions are run when the
/// loop asks for them, not by interrupting it; Linux 6.1+), or a plain ring on older kernels.
fn new_ring() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .or_else(|err| match err.raw_os_error() {
            Some(libc::EINVAL) => IoUring::new(RING_ENTRIES),
            _ => Err(err),
        })
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal(fd: &OwnedFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    if n == 8 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The loop's provided buffers: `BUFFERS_PER_LOOP` buffers of `size` bytes in one allocation,
/// offered to the kernel through a registered buffer ring (page-aligned array of entries whose
/// tail we advance when a buffer comes back).
struct BufferRing {
    entries: *mut types::BufRingEntry,
    entries_layout: std::alloc::Layout,
    memory: Box<[u8]>,
    size: usize,
    tail: u16,
}

// SAFETY: the raw pointer is owned by this struct (allocated in `new`, freed in `drop`) and only
// used by the thread that owns the struct.
unsafe impl Send for BufferRing {}

impl BufferRing {
    fn new(ring: &IoUring, size: usize) -> io::Result<BufferRing> {
        let bytes = size_of::<types::BufRingEntry>() * BUFFERS_PER_LOOP as usize;
        let entries_layout =
            std::alloc::Layout::from_size_align(bytes.max(4096), 4096).map_err(io::Error::other)?;
        // SAFETY: non-zero size layout.
        let entries: *mut types::BufRingEntry =
            unsafe { std::alloc::alloc_zeroed(entries_layout) }.cast();
        if entries.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mut buffers = BufferRing {
            entries,
            entries_layout,
            memory: vec![0u8; size * BUFFERS_PER_LOOP as usize].into_boxed_slice(),
            size,
            tail: 0,
        };
        // SAFETY: the entries stay valid (and are not moved: heap) until the ring is dropped,
        // which happens before `buffers` is dropped (field order in `RingLoop`).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries as u64,
                BUFFERS_PER_LOOP,
                BUFFER_GROUP,
                0,
            )?;
        }
        for bid in 0..BUFFERS_PER_LOOP {
            buffers.recycle(bid);
        }
        Ok(buffers)
    }

    /// Buffer `bid`, `len` bytes of it.
    fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * self.size;
        &self.memory[start..start + len.min(self.size)]
    }

    /// Gives buffer `bid` back to the kernel.
    fn recycle(&mut self, bid: u16) {
        let mask = BUFFERS_PER_LOOP - 1;
        // SAFETY: index within the allocated entries; the kernel reads only entries up to the
        // published tail, and this one is past it until the store below.
        unsafe {
            let entry = &mut *self.entries.add((self.tail & mask) as usize);
            entry.set_addr(self.memory.as_ptr().add(bid as usize * self.size) as u64);
            entry.set_len(self.size as u32);
            entry.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let tail = types::BufRingEntry::tail(self.entries).cast_mut();
            std::sync::atomic::AtomicU16::from_ptr(tail)
                .store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring that used it is already closed.
        unsafe { std::alloc::dealloc(self.entries.cast(), self.entries_layout) }
    }
}

/// What a connection's one in-flight operation is.
#[derive(Debug, Clone, Copy)]
enum InFlight {
    /// A `recv` into a buffer the kernel picks.
    Recv,
    /// Echoing `len` bytes of buffer `bid`; `sent` of them are written.
    Send { bid: u16, sent: u32, len: u32 },
    /// Nothing in flight: the `recv` found no free buffer; re-armed when one comes back.
    Starved,
}

struct Connection {
    conn: Conn,
    session: Session,
    in_flight: InFlight,
    /// Set when the loop shut the socket down (deadline passed): how the session ends once
    /// the in-flight operation completes.
    cut: Option<Outcome>,
}

struct RingLoop {
    // Field order: the ring closes before the buffers it reads are freed.
    ring: IoUring,
    buffers: BufferRing,
    incoming: Incoming,
    wake: Arc<OwnedFd>,
    /// Target of the in-flight eventfd read (heap: its address must not move).
    wake_counter: Box<u64>,
    conns: Slab<Connection>,
    /// Connections waiting for a free buffer, in arrival order.
    starved: VecDeque<usize>,
    /// Completions of one round; capacity kept between rounds.
    completions: Vec<Completion>,
    /// Completions reaped while making room in the submission queue, handled next round.
    deferred: Vec<Completion>,
    /// Whether the eventfd read is in flight (if queuing it failed, the channel is polled each
    /// round until it is).
    wake_armed: bool,
    push_failures: RateLimitedLog,
    scan_every: Duration,
    shared: Arc<Shared>,
}

impl RingLoop {
    fn new(
        incoming: Receiver<Conn>,
        wake: Arc<OwnedFd>,
        shared: Arc<Shared>,
    ) -> Result<RingLoop, Error> {
        let ring = new_ring().map_err(|e| {
            Error::io(
                "setting up io_uring (io_uring_setup refused by the kernel)",
                e,
            )
        })?;
        let buffers = BufferRing::new(&ring, shared.config.buffer_size).map_err(|e| {
            Error::io(
                "registering io_uring provided buffers (needs Linux 5.19 or newer)",
                e,
            )
        })?;
        Ok(RingLoop {
            ring,
            buffers,
            incoming: Incoming::new(incoming),
            wake,
            wake_counter: Box::new(0),
            conns: Slab::new(),
            starved: VecDeque::new(),
            completions: Vec::new(),
            deferred: Vec::new(),
            wake_armed: false,
            push_failures: RateLimitedLog::default(),
            scan_every: scan_period(&shared.config),
            shared,
        })
    }

    fn run(mut self) {
        let mut next_scan = Instant::now() + self.scan_every;
        while self.incoming.accepting() || !self.conns.is_empty() {
            if !self.wake_armed {
                self.take_incoming();
                self.arm_wake();
            }
            let mut wait = next_scan.saturating_duration_since(Instant::now());
            if !self.wake_armed {
                wait = wait.min(Duration::from_millis(10));
            }
            if !self.deferred.is_empty() {
                wait = Duration::ZERO;
            }
            let timespec = types::Timespec::from(wait);
            let args = types::SubmitArgs::new().timespec(&timespec);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(err)
                    if matches!(
                        err.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                    ) => {}
                Err(err) => {
                    eprintln!("echo-server: a ring loop failed, closing its connections: {err}");
                    break;
                }
            }
            let now = Instant::now();
            let mut completions = std::mem::take(&mut self.completions);
            completions.append(&mut self.deferred);
            completions.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, result, flags) in &completions {
                if user_data == WAKE {
                    self.wake_armed = false;
                    self.take_incoming();
                    self.arm_wake();
                } else {
                    self.complete(user_data as usize, result, flags, now);
                }
            }
            completions.clear();
            self.completions = completions;
            if now >= next_scan {
                self.cut_expired(now);
                next_scan = now + self.scan_every;
            }
        }
        // Only reached with connections left if the ring failed: count them and close.
        for connection in self.conns.drain() {
            connection
                .session
                .finish(connection.conn, Outcome::Failed(ErrorKind::Io));
        }
    }

    /// Queues an operation (see `push_bounded`); false, logged at most once a second, when the
    /// ring stayed full.
    fn push(&mut self, entry: &squeue::Entry) -> bool {
        match push_bounded(&mut self.ring, entry, &mut self.deferred) {
            Ok(()) => true,
            Err(err) => {
                self.push_failures.log(|| {
                    format!("io_uring submission queue stayed full ({err}); closing a connection")
                });
                false
            }
        }
    }

    fn arm_wake(&mut self) {
        let target: *mut u64 = &mut *self.wake_counter;
        let entry = opcode::Read::new(types::Fd(self.wake.as_raw_fd()), target.cast(), 8)
            .build()
            .user_data(WAKE);
        self.wake_armed = self.push(&entry);
    }

    fn take_incoming(&mut self) {
        while let Some(conn) = self.incoming.take() {
            self.register(conn);
        }
    }

    fn register(&mut self, conn: Conn) {
        if let Err(err) = conn.stream().set_nodelay(true) {
            conn.finish(Outcome::Failed(ErrorKind::of(&err)), 0, 0);
            return;
        }
        let session = Session::new(conn.accepted_at());
        let key = self.conns.insert(Connection {
            conn,
            session,
            in_flight: InFlight::Recv,
            cut: None,
        });
        self.submit_recv(key);
    }

    fn fd(&self, key: usize) -> RawFd {
        self.conns[key].conn.stream().as_raw_fd()
    }

    fn submit_recv(&mut self, key: usize) {
        let entry = opcode::Recv::new(
            types::Fd(self.fd(key)),
            std::ptr::null_mut(),
            self.buffers.size as u32,
        )
        .buf_group(BUFFER_GROUP)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT)
        .user_data(key as u64);
        self.conns[key].in_flight = InFlight::Recv;
        if !self.push(&entry) {
            self.close(key, Outcome::Failed(ErrorKind::Io));
        }
    }

    fn submit_send(&mut self, key: usize, bid: u16, sent: u32, len: u32) {
        let data = &self.buffers.get(bid, len as usize)[sent as usize..];
        let entry = opcode::Send::new(types::Fd(self.fd(key)), data.as_ptr(), data.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(key as u64);
        self.conns[key].in_flight = InFlight::Send { bid, sent, len };
        if !self.push(&entry) {
            self.recycle(bid);
            self.close(key, Outcome::Failed(ErrorKind::Io));
        }
    }

    /// Gives a buffer back and lets a starved connection receive again.
    fn recycle(&mut self, bid: u16) {
        self.buffers.recycle(bid);
        while let Some(key) = self.starved.pop_front() {
            if self
                .conns
                .get(key)
                .is_some_and(|c| matches!(c.in_flight, InFlight::Starved))
            {
                self.submit_recv(key);
                return;
            }
        }
    }

    fn complete(&mut self, key: usize, result: i32, flags: u32, now: Instant) {
        let Some(connection) = self.conns.get(key) else {
            return;
        };
        let in_flight = connection.in_flight;
        let cut = connection.cut;
        match in_flight {
            InFlight::Recv => {
                let bid = cqueue::buffer_select(flags);
                if let Some(outcome) = cut {
                    if let Some(bid) = bid {
                        self.recycle(bid);
                    }
                    return self.close(key, outcome);
                }
                match (result, bid) {
                    (n, Some(bid)) if n > 0 => self.received(key, bid, n as u32, now),
                    (0, bid) => {
                        if let Some(bid) = bid {
                            self.recycle(bid);
                        }
                        self.close(key, Outcome::Completed);
                    }
                    (n, _) if n == -libc::ENOBUFS => {
                        self.conns[key].in_flight = InFlight::Starved;
                        self.starved.push_back(key);
                    }
                    (n, _) if n == -libc::EINTR || n == -libc::EAGAIN => self.submit_recv(key),
                    (n, bid) => {
                        if let Some(bid) = bid {
                            self.recycle(bid);
                        }
                        let outcome = if n < 0 {
                            errno_outcome(-n)
                        } else {
                            Outcome::Failed(ErrorKind::Io) // bytes without a buffer: cannot be
                        };
                        self.close(key, outcome);
                    }
                }
            }
            InFlight::Send { bid, sent, len } => {
                if let Some(outcome) = cut {
                    self.recycle(bid);
                    return self.close(key, outcome);
                }
                if result < 0 && result != -libc::EINTR && result != -libc::EAGAIN {
                    self.recycle(bid);
                    return self.close(key, errno_outcome(-result));
                }
                let written = result.max(0) as u32;
                let sent = sent + written;
                self.conns[key].session.sent(written as usize, now);
                if sent < len {
                    self.submit_send(key, bid, sent, len);
                } else {
                    self.conns[key].session.write_done(now);
                    self.recycle(bid);
                    self.submit_recv(key);
                }
            }
            InFlight::Starved => {}
        }
    }

    /// Bytes arrived in buffer `bid`: account for them and echo them from the same buffer.
    fn received(&mut self, key: usize, bid: u16, len: u32, now: Instant) {
        let data = self.buffers.get(bid, len as usize);
        let config = &self.shared.config;
        let session = &mut self.conns[key].session;
        let accounted = catch_unwind(AssertUnwindSafe(|| {
            session.received(data, now, config);
            session.write_started(now);
        }));
        if accounted.is_err() {
            self.recycle(bid);
            return self.close(key, Outcome::Failed(ErrorKind::Panic));
        }
        self.submit_send(key, bid, 0, len);
    }

    fn close(&mut self, key: usize, outcome: Outcome) {
        if let Some(connection) = self.conns.try_remove(key) {
            connection.session.finish(connection.conn, outcome);
            // Dropping the connection deregisters it and closes the socket; nothing is in flight.
        }
    }

    /// Shuts down connections whose idle or write deadline passed; their in-flight operation
    /// completes and they close as timed out.
    fn cut_expired(&mut self, now: Instant) {
        let config = &self.shared.config;
        for (_, connection) in self.conns.iter_mut() {
            // A starved connection has bytes waiting: never idle.
            if connection.cut.is_some() || matches!(connection.in_flight, InFlight::Starved) {
                continue;
            }
            if connection.session.expired(now, config) {
                connection.cut = Some(Outcome::TimedOut);
                // SAFETY: shutdown(2) on the connection's own open socket.
                unsafe {
                    libc::shutdown(connection.conn.stream().as_raw_fd(), libc::SHUT_RDWR);
                }
            }
        }
    }
}

fn errno_outcome(errno: i32) -> Outcome {
    Outcome::Failed(ErrorKind::of(&io::Error::from_raw_os_error(errno)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring whose submission queue never has room and whose submit fails with EBUSY.
    struct AlwaysFull {
        submits: usize,
    }

    impl Submission for AlwaysFull {
        fn try_push(&mut self, _entry: &squeue::Entry) -> bool {
            false
        }

        fn submit_and_reap(&mut self, reaped: &mut Vec<Completion>) -> io::Result<()> {
            self.submits += 1;
            reaped.push((7, 0, 0));
            Err(io::Error::from_raw_os_error(libc::EBUSY))
        }
    }

    #[test]
    fn a_ring_that_stays_full_gives_up_after_bounded_tries_keeping_what_it_reaped() {
        let mut ring = AlwaysFull { submits: 0 };
        let mut reaped = Vec::new();
        let entry = opcode::Nop::new().build();
        let err = push_bounded(&mut ring, &entry, &mut reaped).expect_err("gives up");
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
        assert_eq!(ring.submits, PUSH_ATTEMPTS);
        assert_eq!(
            reaped.len(),
            PUSH_ATTEMPTS,
            "completions reaped between tries are kept"
        );
    }

    /// Room appears after a submit: the entry is queued.
    #[test]
    fn a_submit_that_makes_room_lets_the_entry_in() {
        struct FullOnce(bool);
        impl Submission for FullOnce {
            fn try_push(&mut self, _entry: &squeue::Entry) -> bool {
                !std::mem::replace(&mut self.0, false)
            }
            fn submit_and_reap(&mut self, _reaped: &mut Vec<Completion>) -> io::Result<()> {
                Ok(())
            }
        }
        let entry = opcode::Nop::new().build();
        assert!(push_bounded(&mut FullOnce(true), &entry, &mut Vec::new()).is_ok());
    }
}
