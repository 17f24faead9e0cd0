//! The poll loop of one client thread: waits for socket readiness (and, in open loop, for the
//! next intended send time), feeds what the sockets say into each connection's [`Session`], and
//! runs the housekeeping (connects, timeouts, intervals, live counters) every 10 ms.
//!
//! Every read and write is timestamped when the call returns, not once per poll batch (up to 1024
//! events would share one stale time); the vDSO clock costs ~20 ns.

use super::conn::{Conn, Phase};
use super::record::{ErrorAt, Recorder};
use super::schedule::{DueQueue, Plan};
use super::session::Session;
use super::splice::SplicePipe;
use super::timer::{SendTimer, TIMER_TOKEN};
use super::{Timing, WorkerSetup};
use crate::buffer::PageAligned;
use crate::errors::ErrorKind;
use crate::stats::{SlotStats, ThreadCpu, ThreadResult};
use mio::{Events, Poll, Registry};
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Send buffer size (small messages are copied into it and written in one call).
const SEND_BUF_BYTES: usize = 64 * 1024;
/// Receive buffer size: larger than a 64 KiB message, so that reading one whole message is a
/// short read and needs no second call to learn that the socket is empty. Page-aligned (see
/// [`crate::buffer`]).
const RECV_BUF_BYTES: usize = 256 * 1024;
/// Messages at least this large are written straight from the payload table (`writev`);
/// smaller ones are copied into the send buffer first, so that many pipelined small messages
/// still go out in one call.
const VECTORED_MIN_BYTES: u64 = 1024;
/// Messages at least this large go out through the thread's pipe (`vmsplice` + `splice`, no
/// copy; see [`super::splice`]); below it a copy costs less than the two calls.
const SPLICE_MIN_BYTES: u64 = 16 * 1024;
/// Slices per `writev` at most.
const MAX_IOV: usize = 32;
/// Bytes per `writev` at most (a 1 MiB message in one call when the socket takes it).
const VECTORED_MAX_BYTES: usize = 1024 * 1024;
/// How often housekeeping (timeouts, intervals, live counters) runs at most.
const HOUSEKEEPING_NS: u64 = 10_000_000;

/// What one thread shares between its connections: the plan, the recorder, the scratch buffers.
pub(super) struct Ctx {
    pub plan: Plan,
    pub rec: Recorder,
    pub timing: Timing,
    pub target: SocketAddr,
    pub source_addrs: Arc<Vec<IpAddr>>,
    pub next_source: usize,
    /// Bytes per write call (`--write-chunk`; `usize::MAX` = as much as the socket takes).
    pub write_chunk: usize,
    pub timeout_ms: u64,
    pub stall_threshold_ms: u64,
    pub send_buf: Vec<u8>,
    pub recv_buf: PageAligned,
    /// The slices of the payload table the next `writev` sends (capacity [`MAX_IOV`], reused).
    pub iov: Vec<IoSlice<'static>>,
    /// Large messages go out through this pipe without a copy (`None`: `writev` only).
    pub pipe: Option<SplicePipe>,
    /// Open loop: connections waiting for their next intended send time.
    pub due: DueQueue,
    /// Connections in `Phase::Done`.
    pub done: usize,
}

/// Runs one client thread to the end and returns what it measured.
pub(crate) fn run_worker(setup: WorkerSetup) -> io::Result<ThreadResult> {
    let WorkerSetup {
        thread,
        config,
        target,
        source_addrs,
        slots,
        timing,
        live,
        stop,
        intervals,
        recycled,
    } = setup;
    // CPU and wall time are counted over the measured window only.
    let mut window_started: Option<(ThreadCpu, u64)> = None;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let plan = Plan::new(&config, timing.window);
    let size = config.size_bytes as u64;
    let mut conns: Vec<Conn> = slots
        .iter()
        .enumerate()
        .map(|(index, &slot)| Conn::new(index, slot, Session::new(&plan, slot, size)))
        .collect();
    let rec = Recorder::new(
        thread,
        slots.len(),
        timing.window,
        plan.is_open_loop(),
        live,
        intervals,
        recycled,
    );
    let mut ctx = Ctx {
        rec,
        timing,
        target,
        source_addrs,
        next_source: thread,
        write_chunk: config.write_chunk_bytes.unwrap_or(usize::MAX).max(1),
        timeout_ms: config.timeout_ms,
        stall_threshold_ms: config.stall_threshold_ms,
        send_buf: vec![0u8; SEND_BUF_BYTES],
        recv_buf: PageAligned::zeroed(RECV_BUF_BYTES),
        iov: Vec::with_capacity(MAX_IOV),
        pipe: if config.size_bytes as u64 >= SPLICE_MIN_BYTES {
            SplicePipe::new().ok()
        } else {
            None
        },
        due: DueQueue::with_capacity(conns.len() + 1),
        done: conns.iter().filter(|c| c.phase == Phase::Done).count(),
        plan,
    };

    let registry = poll.registry().try_clone()?;
    // Open loop: a timerfd wakes the loop at the next intended send time.
    let mut timer = if ctx.plan.is_open_loop() {
        Some(SendTimer::new(&registry, ctx.timing.now_ns())?)
    } else {
        None
    };
    let window = ctx.timing.window;
    let mut last_housekeeping_ns: Option<u64> = None;
    loop {
        let now = ctx.timing.now_ns();
        if window_started.is_none() && now >= window.measure_start_ns {
            window_started = Some((ThreadCpu::now(), now));
        }
        if stop.load(Ordering::Relaxed) {
            for conn in &mut conns {
                if conn.phase != Phase::Done {
                    ctx.finish(conn, now);
                }
            }
        }
        // Every 10 ms (and at once at the start): connect idle slots whose time has come, check
        // timeouts, flush intervals. Nothing in the loop scans all connections more often.
        if last_housekeeping_ns.is_none_or(|last| now.saturating_sub(last) >= HOUSEKEEPING_NS) {
            last_housekeeping_ns = Some(now);
            for conn in &mut conns {
                if conn.phase == Phase::Idle && conn.retry_at_ns <= now {
                    ctx.connect(&registry, conn, now);
                }
            }
            ctx.housekeeping(&registry, &mut conns, now);
        }
        if ctx.done == conns.len() {
            break;
        }
        let mut timeout_ns = HOUSEKEEPING_NS;
        if let Some(due) = ctx.due.earliest() {
            if due <= now {
                timeout_ns = 0;
            } else if let Some(timer) = timer.as_mut() {
                timer.arm(due);
            } else {
                timeout_ns = timeout_ns.min(due - now);
            }
        }
        if let Some(end) = window.measure_end_ns
            && end > now
        {
            timeout_ns = timeout_ns.min(end - now);
        }
        if now < window.measure_start_ns {
            timeout_ns = timeout_ns.min(window.measure_start_ns - now);
        }
        match poll.poll(&mut events, Some(Duration::from_nanos(timeout_ns))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let now = ctx.timing.now_ns();
        for event in events.iter() {
            let index = event.token().0;
            if index == TIMER_TOKEN.0 {
                if let Some(timer) = timer.as_mut() {
                    timer.fired();
                }
                continue;
            }
            let Some(conn) = conns.get_mut(index) else {
                continue;
            };
            match conn.phase {
                Phase::Connecting => {
                    let failed = event.is_error() || event.is_read_closed();
                    if event.is_writable() || failed {
                        ctx.on_connect_ready(&registry, conn, now, failed);
                    }
                }
                Phase::Open => {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        ctx.on_readable(&registry, conn, event.is_read_closed());
                    }
                    if conn.phase == Phase::Open && event.is_writable() {
                        ctx.write_pending(conn);
                    }
                }
                Phase::Draining => {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        ctx.on_drain_readable(&registry, conn);
                    }
                }
                Phase::Idle | Phase::Done => {}
            }
        }
        while let Some((due, index)) = ctx.due.pop_due(now) {
            let conn = &mut conns[index];
            if !conn.session.schedule.take_wake(due) {
                continue;
            }
            if conn.phase == Phase::Open {
                ctx.pump(&registry, conn, now);
            }
        }
    }

    // Every connection is done here; stalls still open when it ended were counted then.
    let end_ns = ctx.timing.now_ns();
    let (cpu_start, wall_start_ns) = window_started.unwrap_or((ThreadCpu::now(), end_ns));
    let cpu = ThreadCpu::now().since(cpu_start);
    let wall_ns = end_ns.saturating_sub(wall_start_ns);
    let slots = conns.iter().map(|conn| SlotStats {
        slot: conn.slot,
        messages: conn.session.progress.messages_verified,
        max_gap_ns: conn.session.progress.max_gap_ns,
    });
    let mut result = ctx.rec.finish(end_ns, slots, cpu.total_ns(), wall_ns);
    result.user_cpu_ns = cpu.user_ns;
    Ok(result)
}

impl Ctx {
    /// Issues every message that is due and writes what it can.
    pub(super) fn pump(&mut self, registry: &Registry, conn: &mut Conn, now: u64) {
        // The loop's own lateness is measured against the clock now, not the poll's timestamp.
        let now = if self.plan.is_open_loop() {
            self.timing.now_ns().max(now)
        } else {
            now
        };
        if conn.phase == Phase::Open
            && let Some(due) = conn.session.issue_due(&self.plan, &mut self.rec, now)
        {
            self.due
                .wake_at(&mut conn.session.schedule, due, conn.index);
        }
        self.write_pending(conn);
        if conn.phase == Phase::Open && conn.session.stream.in_flight() == 0 {
            self.maybe_end_connection(registry, conn, now);
        }
    }

    /// Writes the bytes of issued messages until they are all out or the socket is full: large
    /// messages straight from the payload table, small ones through the send buffer.
    fn write_pending(&mut self, conn: &mut Conn) {
        let vectored = conn.session.stream.message_bytes() >= VECTORED_MIN_BYTES;
        let cap = if vectored {
            VECTORED_MAX_BYTES.min(self.write_chunk)
        } else {
            self.send_buf.len().min(self.write_chunk)
        };
        loop {
            let Some(socket) = conn.socket.as_mut() else {
                return;
            };
            // This connection's bytes already in the pipe go first.
            if let Some(pipe) = self.pipe.as_mut()
                && pipe.holds(conn.index)
            {
                let len = pipe.pending();
                let written = pipe.send_to(socket.as_raw_fd());
                if !self.wrote(conn, len, written, "splice") {
                    return;
                }
                continue;
            }
            let stream = &conn.session.stream;
            let len = if vectored {
                self.iov.clear();
                let iov = &mut self.iov;
                stream.unsent_segments(cap, |segment| {
                    iov.push(IoSlice::new(segment));
                    iov.len() < MAX_IOV
                })
            } else {
                stream.fill_unsent(&mut self.send_buf[..cap])
            };
            if len == 0 {
                return;
            }
            if vectored
                && let Some(pipe) = self.pipe.as_mut()
                && pipe.is_free()
            {
                match pipe.load(conn.index, &self.iov) {
                    // Sent from the pipe at the top of the loop.
                    Ok(n) if n > 0 => continue,
                    // No room or no splicing here: write it instead, from now on.
                    _ => self.pipe = None,
                }
            }
            let written = if vectored {
                socket.write_vectored(&self.iov)
            } else {
                socket.write(&self.send_buf[..len])
            };
            if !self.wrote(conn, len, written, "write") {
                return;
            }
        }
    }

    /// Books a `what` call (`write`, `splice`) that was offered `len` bytes and wrote
    /// `written`; whether to write more now.
    fn wrote(
        &mut self,
        conn: &mut Conn,
        len: usize,
        written: io::Result<usize>,
        what: &str,
    ) -> bool {
        let now = self.timing.now_ns();
        match written {
            Ok(0) => {
                let msg = conn.session.stream.send_message();
                self.fail(conn, now, ErrorKind::Reset, ErrorAt::message(msg), || {
                    format!("{what} returned 0 bytes")
                });
                false
            }
            Ok(written) => {
                conn.session.wrote(written, now, &mut self.rec);
                // Less than offered: the socket buffer is full; a writable event follows.
                !(written < len && self.write_chunk == usize::MAX)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            // The kernel does not splice into this socket: nothing of the pipe went out; write
            // those bytes (and all later ones) instead.
            Err(e)
                if what == "splice"
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                    ) =>
            {
                self.pipe = None;
                true
            }
            Err(e) => {
                let msg = conn.session.stream.send_message();
                self.fail_io(conn, now, what, msg, e);
                false
            }
        }
    }

    /// Reads and verifies everything the socket has, then issues what that made due.
    fn on_readable(&mut self, registry: &Registry, conn: &mut Conn, read_closed: bool) {
        let mut now;
        loop {
            let Some(socket) = conn.socket.as_mut() else {
                return;
            };
            let read = socket.read(&mut self.recv_buf);
            now = self.timing.now_ns();
            match read {
                Ok(0) => {
                    let fault = conn.session.stream.closed_by_server();
                    self.fail_with(conn, now, fault);
                    return;
                }
                Ok(n) => {
                    self.rec.bytes_received(n, now);
                    let data = &self.recv_buf[..n];
                    if let Err(fault) = conn.session.received(data, now, &self.plan, &mut self.rec)
                    {
                        self.fail_with(conn, now, fault);
                        return;
                    }
                    if n < self.recv_buf.len() && !read_closed {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let msg = conn.session.stream.recv_message();
                    self.fail_io(conn, now, "read", msg, e);
                    return;
                }
            }
        }
        self.pump(registry, conn, now);
    }

    /// Connect and echo timeouts, drains that waited long enough, finished connections,
    /// interval histograms and live counters.
    fn housekeeping(&mut self, registry: &Registry, conns: &mut [Conn], now: u64) {
        self.rec.flush_intervals(now, false);
        let timeout_ms = self.timeout_ms;
        let timeout_ns = timeout_ms * 1_000_000;
        let stall_ns = self.stall_threshold_ms * 1_000_000;
        let mut starved_now = 0u64;
        for conn in conns.iter_mut() {
            match conn.phase {
                Phase::Connecting if now.saturating_sub(conn.connect_started_ns) > timeout_ns => {
                    self.fail(conn, now, ErrorKind::Timeout, ErrorAt::default(), || {
                        format!("connect did not complete within {timeout_ms} ms")
                    });
                }
                Phase::Draining if now >= conn.drain_deadline_ns => {
                    // No EOF in time: not an error (some servers do not close on a half-close).
                    let reconnect = conn.reconnect_after_drain;
                    self.end_after_drain(registry, conn, now, reconnect, false);
                }
                Phase::Open => match conn.session.echo_wait_since(conn.connect_started_ns) {
                    Some(since) if now.saturating_sub(since) > timeout_ns => {
                        let stream = &conn.session.stream;
                        let at = ErrorAt::byte(stream.recv_message(), stream.recv_offset());
                        self.fail(conn, now, ErrorKind::Timeout, at, || {
                            format!("no complete echo within {timeout_ms} ms")
                        });
                    }
                    Some(_) => {}
                    None => self.maybe_end_connection(registry, conn, now),
                },
                _ => {}
            }
            if conn.phase != Phase::Done && conn.session.stalled(now, stall_ns, &self.plan.window) {
                starved_now += 1;
            }
        }
        self.rec.publish(Some(starved_now));
    }
}
