//! The poll loop of one client thread: waits for socket readiness (and, in open loop, for the
//! next intended send time), feeds what the sockets say into each connection's [`Session`], and
//! runs the housekeeping (connects, timeouts, intervals, finished steps, live counters) every
//! 10 ms.
//!
//! How it waits is the [`WaitPolicy`]'s call: block in the poll (with the send timer armed
//! shortly before the next send), or spin with zero-timeout polls. A spin round that finds
//! nothing to do is *spin-waiting*: its time is counted (`spin_ns`) and is not work, so
//! `loadgen.work_s` and the `saturated` judgement see what the thread did, not how it waited.
//!
//! Every read and write is timestamped when the call returns, not once per poll batch (up to 1024
//! events would share one stale time); a write is also timestamped as it starts, for the loop lag
//! of the messages whose first byte it carries. The vDSO clock costs ~20 ns.

use super::conn::{Conn, Phase};
use super::record::{ErrorAt, Recorder};
use super::schedule::{DueQueue, Plan};
use super::session::Session;
use super::splice::SplicePipe;
use super::timeline::Timeline;
use super::timer::{SendTimer, SpinMeter, TIMER_TOKEN, Wait, set_timer_slack, thread_cpu_clock_ns};
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
        timeline,
        feed,
        wait: policy,
        live,
        stop,
        to_coordinator,
        recycled,
    } = setup;
    // The timer fires when asked, not up to 50 µs later (the default slack).
    set_timer_slack(1);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let (mut feed_version, timeline) = match &feed {
        Some(feed) => feed.snapshot(),
        None => (0, timeline),
    };
    let plan = Plan::new(&config, timeline.clone());
    let size = config.size_bytes as u64;
    let mut conns: Vec<Conn> = slots
        .iter()
        .enumerate()
        .map(|(index, &slot)| Conn::new(index, slot, Session::new(&plan, index, slot, size)))
        .collect();
    let rec = Recorder::new(thread, &slots, timeline, live, to_coordinator, recycled);
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
    // Open loop: a timerfd wakes the loop shortly before the next intended send time.
    let open_loop = ctx.plan.is_open_loop();
    let mut timer = if open_loop {
        Some(SendTimer::new(&registry, ctx.timing.now_ns())?)
    } else {
        None
    };
    let mut last_housekeeping_ns: Option<u64> = None;
    // Spin-waiting (`thread_cpu_ns` and the spin meter both count CPU time of this thread).
    let mut spin = SpinMeter::default();
    loop {
        let round_start = ctx.timing.now_ns();
        let now = round_start;
        let spin_ns = spin.total(now);
        if let Some(feed) = &feed
            && feed.version() != feed_version
        {
            let (version, timeline) = feed.snapshot();
            feed_version = version;
            ctx.set_timeline(&registry, &mut conns, timeline, now);
        }
        if !ctx.rec.window_started() && now >= ctx.plan.window.measure_start_ns {
            ctx.rec.start_window(now, ThreadCpu::now(), spin_ns);
        }
        while let Some(edge) = ctx.rec.next_edge()
            && edge <= now
        {
            ctx.rec.pass_edge(now, ThreadCpu::now(), spin_ns);
        }
        if stop.load(Ordering::Relaxed) {
            for conn in &mut conns {
                if conn.phase != Phase::Done {
                    ctx.finish(conn, now);
                }
            }
        }
        // Every 10 ms (and at once at the start): connect idle slots whose time has come, check
        // timeouts, flush intervals and finished steps. Nothing in the loop scans all connections
        // more often.
        let housekeeping =
            last_housekeeping_ns.is_none_or(|last| now.saturating_sub(last) >= HOUSEKEEPING_NS);
        if housekeeping {
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
        let mut deadline = last_housekeeping_ns.unwrap_or(now) + HOUSEKEEPING_NS;
        if let Some(edge) = ctx.plan.timeline.next_edge(now) {
            deadline = deadline.min(edge);
        }
        let wait = policy.wait(
            now,
            open_loop,
            ctx.due.earliest(),
            ctx.rec.in_flight() > 0,
            deadline,
        );
        let timeout = match wait {
            Wait::Now | Wait::Spin => Duration::ZERO,
            Wait::Block {
                deadline_ns,
                timer_at_ns,
            } => {
                if let (Some(timer), Some(at)) = (timer.as_mut(), timer_at_ns) {
                    timer.arm(at);
                }
                Duration::from_nanos(deadline_ns - now)
            }
        };
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let now = ctx.timing.now_ns();
        let mut worked = housekeeping;
        for event in events.iter() {
            let index = event.token().0;
            if index == TIMER_TOKEN.0 {
                if let Some(timer) = timer.as_mut() {
                    timer.fired();
                }
                continue;
            }
            worked = true;
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
                        conn.session.writable(now);
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
            worked = true;
            if conn.phase == Phase::Open {
                ctx.pump(&registry, conn, now);
            }
        }
        if wait == Wait::Spin && !worked {
            spin.idle(round_start, now, thread_cpu_clock_ns);
        } else {
            spin.busy(round_start, thread_cpu_clock_ns);
        }
    }

    // Every connection is done here; stalls still open when it ended were counted then.
    let end_ns = ctx.timing.now_ns();
    spin.busy(end_ns, thread_cpu_clock_ns);
    let spin_ns = spin.total(end_ns);
    let slots = conns.iter().map(|conn| SlotStats {
        slot: conn.slot,
        messages: conn.session.progress.messages_verified,
        max_gap_ns: conn.session.progress.max_gap_ns,
    });
    Ok(ctx.rec.finish(end_ns, slots, ThreadCpu::now(), spin_ns))
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
    pub(super) fn write_pending(&mut self, conn: &mut Conn) {
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
                let started = self.timing.now_ns();
                let written = pipe.send_to(socket.as_raw_fd());
                if !self.wrote(conn, len, started, written, "splice") {
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
            let started = self.timing.now_ns();
            let written = if vectored {
                socket.write_vectored(&self.iov)
            } else {
                socket.write(&self.send_buf[..len])
            };
            if !self.wrote(conn, len, started, written, "write") {
                return;
            }
        }
    }

    /// Books a `what` call (`write`, `splice`) that started at `started`, was offered `len`
    /// bytes and wrote `written`; whether to write more now. The loop lag of a message whose
    /// first byte went out in it runs to `started`.
    fn wrote(
        &mut self,
        conn: &mut Conn,
        len: usize,
        started: u64,
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
                conn.session.wrote(written, started, now, &mut self.rec);
                // Less than offered: the socket buffer is full; a writable event follows.
                let full = written < len && self.write_chunk == usize::MAX;
                conn.session.write_blocked |= full;
                !full
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.session.write_blocked = true;
                false
            }
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
        let mut oldest_in_flight_ns: Option<u64> = None;
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
            if let Some(front) = conn.session.stream.front() {
                oldest_in_flight_ns = Some(
                    oldest_in_flight_ns.map_or(front.intended_ns, |o| o.min(front.intended_ns)),
                );
            }
        }
        self.rec.hand_over_steps(now, oldest_in_flight_ns, None);
        self.rec.publish(Some(starved_now));
    }

    /// The timeline changed (a step was read, or the input ended): every open connection looks
    /// at its schedule again, and those with nothing to send and no more steps to come end.
    fn set_timeline(
        &mut self,
        registry: &Registry,
        conns: &mut [Conn],
        timeline: Timeline,
        now: u64,
    ) {
        self.plan.set_timeline(timeline.clone());
        self.rec.set_timeline(timeline);
        for conn in conns.iter_mut() {
            if conn.phase == Phase::Open {
                self.pump(registry, conn, now);
            }
        }
    }
}
