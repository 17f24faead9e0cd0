//! One client thread: a mio poll loop over its share of nonblocking connections.
//!
//! Each connection is a small state machine (idle → connecting → open → draining → done) over
//! two byte counters: `send_pos` (bytes written) and `recv_pos` (bytes verified). Messages all have the
//! same size, so a stream position names a message and an offset without any framing. Messages
//! that have been issued but not fully verified sit in `in_flight` (front = the one being
//! received), each with its intended send time (open loop: from the schedule; closed loop: when it
//! was issued) and the time its first byte was written. Closed loop keeps `depth` messages in
//! flight; open loop issues each message when its intended time comes, up to the optional cap.
//!
//! The hot path records into per-thread histograms and counters only; nothing is allocated per
//! message (payloads are generated into and verified from two per-thread scratch buffers).

use crate::config::{Arrival, Config};
use crate::errors::{ErrorKind, ErrorSample, MAX_SAMPLES};
use crate::payload;
use crate::stats::{LiveCounters, ThreadResult, new_histogram, record_ns_as_us, thread_cpu_ns};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

/// Scratch buffer size for reads and writes.
const SCRATCH_BYTES: usize = 64 * 1024;
/// How often housekeeping (timeouts, intervals, live counters) runs at most.
const HOUSEKEEPING_NS: u64 = 10_000_000;
/// Wait before a churn slot reconnects after a failed connection.
const RETRY_NS: u64 = 10_000_000;
/// Longest wait for the server's EOF after the last echo of a connection.
const DRAIN_MAX_NS: u64 = 1_000_000_000;
/// Length of one interval histogram.
pub(crate) const INTERVAL_NS: u64 = 1_000_000_000;

/// Timing shared by all threads of a run (nanoseconds since `base`).
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    pub base: Instant,
    pub measure_start_ns: u64,
    pub measure_end_ns: Option<u64>,
}

impl Timing {
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// A finished interval histogram from one thread.
pub(crate) struct IntervalReport {
    /// The sending thread: the coordinator hands the histogram back to it for reuse.
    pub thread: usize,
    pub index: u64,
    pub latency: Histogram<u64>,
}

/// Everything a worker needs to start.
pub(crate) struct WorkerSetup {
    pub thread: usize,
    pub config: Arc<Config>,
    pub target: SocketAddr,
    pub source_addrs: Arc<Vec<IpAddr>>,
    pub slots: Vec<usize>,
    pub timing: Timing,
    pub live: Arc<LiveCounters>,
    pub stop: Arc<AtomicBool>,
    pub intervals: Sender<IntervalReport>,
    /// Interval histograms the coordinator has added up, handed back to be reset and reused
    /// (so that no ~188 KB histogram is allocated per second per thread).
    pub recycled: Receiver<Histogram<u64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not connected; (re)connect at `retry_at_ns`.
    Idle,
    Connecting,
    Open,
    /// Every echo is in; our write side is shut down and we read to EOF: any byte that still
    /// arrives is `corrupt` (more came back than was sent).
    Draining,
    Done,
}

/// Where in the stream an error happened (fields that do not apply are `None`).
#[derive(Debug, Clone, Copy, Default)]
struct ErrorAt {
    /// Message sequence number on the connection.
    message: Option<u64>,
    /// Byte offset within that message.
    offset: Option<u64>,
    /// The byte sent and the byte received (corruption).
    bytes: Option<(u8, u8)>,
}

impl ErrorAt {
    /// At message `message`; the byte within it is not known.
    fn message(message: u64) -> ErrorAt {
        ErrorAt {
            message: Some(message),
            ..ErrorAt::default()
        }
    }

    /// At byte `offset` of message `message`.
    fn byte(message: u64, offset: u64) -> ErrorAt {
        ErrorAt {
            message: Some(message),
            offset: Some(offset),
            bytes: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    intended_ns: u64,
    /// 0 until the first byte is written.
    sent_ns: u64,
    measured: bool,
}

struct Conn {
    /// Index in this thread's connection list (the mio token).
    index: usize,
    slot: usize,
    /// The connection id in payloads and error reports: `slot + generation * connections`.
    id: u64,
    generation: u64,
    stream: Option<TcpStream>,
    phase: Phase,
    retry_at_ns: u64,
    /// Draining: give up waiting for the server's EOF at this time.
    drain_deadline_ns: u64,
    /// Draining: connect again (churn) rather than finish once the EOF came.
    reconnect_after_drain: bool,
    connect_started_ns: u64,
    send_pos: u64,
    recv_pos: u64,
    /// Messages issued on this connection (their bytes are due to be written).
    issued: u64,
    in_flight: VecDeque<Pending>,
    /// Measured messages this slot may still issue (`--messages`).
    quota: Option<u64>,
    // open loop schedule
    next_intended_ns: u64,
    schedule_k: u64,
    heap_due: Option<u64>,
    /// When the connection last became able to take another message (opened, or the cap on
    /// messages in flight freed a place): a message due before that was held back by the
    /// server, not by the loop.
    unblocked_ns: u64,
    rng: u64,
    // fairness
    messages_verified: u64,
    last_progress_ns: u64,
    max_gap_ns: u64,
}

impl Conn {
    fn recv_msg(&self, size: u64) -> u64 {
        self.recv_pos / size
    }
}

/// Counters and histograms of one thread, plus its scratch buffers.
struct Ctx {
    thread: usize,
    config: Arc<Config>,
    size: u64,
    max_in_flight: usize,
    write_chunk: usize,
    target: SocketAddr,
    source_addrs: Arc<Vec<IpAddr>>,
    timing: Timing,
    live: Arc<LiveCounters>,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
    result: ThreadResult,
    interval: Histogram<u64>,
    interval_index: u64,
    intervals: Sender<IntervalReport>,
    recycled: Receiver<Histogram<u64>>,
    /// Messages verified in the window so far, published to `live` at housekeeping.
    live_verified: u64,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    open_loop: bool,
    per_conn_interval_ns: f64,
    ever_connected: bool,
    next_source: usize,
    /// Connections in `Phase::Done`.
    done: usize,
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
    let mut window_started: Option<(u64, u64)> = None;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let size = config.size_bytes as u64;
    let total_conns = config.connections as u64;
    let rate = config.rate_per_s.unwrap_or(0.0);
    let per_conn_interval_ns = if rate > 0.0 {
        1e9 * total_conns as f64 / rate
    } else {
        0.0
    };
    let mut conns: Vec<Conn> = slots
        .iter()
        .enumerate()
        .map(|(index, &slot)| {
            let quota = config.messages.map(|n| {
                let base = n / total_conns;
                base + u64::from((slot as u64) < n % total_conns)
            });
            // Spread the open-loop phases so that connections do not send in bursts.
            let phase_ns = (per_conn_interval_ns * slot as f64 / total_conns as f64) as u64;
            Conn {
                index,
                slot,
                id: slot as u64,
                generation: 0,
                stream: None,
                phase: if quota == Some(0) {
                    Phase::Done
                } else {
                    Phase::Idle
                },
                retry_at_ns: 0,
                drain_deadline_ns: 0,
                reconnect_after_drain: false,
                connect_started_ns: 0,
                send_pos: 0,
                recv_pos: 0,
                issued: 0,
                in_flight: VecDeque::with_capacity(config.max_in_flight().min(64)),
                quota,
                next_intended_ns: phase_ns,
                schedule_k: 0,
                heap_due: None,
                unblocked_ns: 0,
                rng: (slot as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                messages_verified: 0,
                last_progress_ns: timing.measure_start_ns,
                max_gap_ns: 0,
            }
        })
        .collect();
    let mut ctx = Ctx {
        thread,
        size,
        max_in_flight: config.max_in_flight(),
        write_chunk: config.write_chunk_bytes.unwrap_or(usize::MAX).max(1),
        target,
        source_addrs,
        result: ThreadResult::new(slots.len()),
        interval: new_histogram(),
        interval_index: 0,
        intervals,
        recycled,
        live_verified: 0,
        heap: BinaryHeap::with_capacity(conns.len() + 1),
        open_loop: config.open_loop(),
        per_conn_interval_ns,
        ever_connected: false,
        next_source: thread,
        done: 0,
        send_buf: vec![0u8; SCRATCH_BYTES],
        recv_buf: vec![0u8; SCRATCH_BYTES],
        timing,
        live,
        config,
    };
    if ctx.open_loop && ctx.config.arrival == Arrival::Poisson {
        for conn in &mut conns {
            conn.next_intended_ns = ctx.exp_gap_ns(conn);
        }
    }

    ctx.done = conns.iter().filter(|c| c.phase == Phase::Done).count();
    let registry = poll.registry().try_clone()?;
    // Open loop: a timerfd wakes the loop at the next intended send time with microsecond
    // precision (epoll_wait's own timeout has millisecond granularity, and every millisecond a
    // send is late would be charged to the server as latency).
    let mut timer = if ctx.open_loop {
        Some(SendTimer::new(&registry, ctx.timing.now_ns())?)
    } else {
        None
    };
    let mut last_housekeeping_ns: Option<u64> = None;
    loop {
        let now = ctx.timing.now_ns();
        if window_started.is_none() && now >= ctx.timing.measure_start_ns {
            window_started = Some((thread_cpu_ns(), now));
        }
        if stop.load(Ordering::Relaxed) {
            for conn in &mut conns {
                if conn.phase != Phase::Done {
                    ctx.finish(&registry, conn, now);
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
        if let Some(Reverse((due, _))) = ctx.heap.peek() {
            if *due <= now {
                timeout_ns = 0;
            } else if let Some(timer) = timer.as_mut() {
                timer.arm(*due);
            } else {
                timeout_ns = timeout_ns.min(due - now);
            }
        }
        if let Some(end) = ctx.timing.measure_end_ns
            && end > now
        {
            timeout_ns = timeout_ns.min(end - now);
        }
        if now < ctx.timing.measure_start_ns {
            timeout_ns = timeout_ns.min(ctx.timing.measure_start_ns - now);
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
                    if event.is_writable() || event.is_error() || event.is_read_closed() {
                        ctx.on_connect_ready(&registry, conn, now);
                    }
                }
                Phase::Open => {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        ctx.on_readable(&registry, conn, event.is_read_closed());
                    }
                    if conn.phase == Phase::Open && event.is_writable() {
                        ctx.write_pending(&registry, conn);
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
        if ctx.open_loop {
            while let Some(&Reverse((due, index))) = ctx.heap.peek() {
                if due > now {
                    break;
                }
                ctx.heap.pop();
                let conn = &mut conns[index];
                if conn.heap_due != Some(due) {
                    continue;
                }
                conn.heap_due = None;
                if conn.phase == Phase::Open {
                    ctx.pump(&registry, conn, now);
                }
            }
        }
    }

    let end_ns = ctx.timing.now_ns();
    ctx.flush_intervals(end_ns, true);
    ctx.live
        .verified
        .store(ctx.live_verified, Ordering::Relaxed);
    // Every connection is done here; stalls still open when it ended were counted then.
    for (i, conn) in conns.iter().enumerate() {
        let slot = &mut ctx.result.slots[i];
        slot.slot = conn.slot;
        slot.messages = conn.messages_verified;
        slot.max_gap_ns = conn.max_gap_ns;
    }
    ctx.result.ever_connected = ctx.ever_connected;
    ctx.result.finished_ns = end_ns;
    let (cpu_start_ns, wall_start_ns) = window_started.unwrap_or((thread_cpu_ns(), end_ns));
    ctx.result.cpu_ns = thread_cpu_ns().saturating_sub(cpu_start_ns);
    ctx.result.wall_ns = end_ns.saturating_sub(wall_start_ns);
    // Over at least the planned window: a thread whose connections all failed at once was not
    // busy for the run, however briefly it spun.
    let planned_ns = ctx
        .timing
        .measure_end_ns
        .map_or(0, |end| end - ctx.timing.measure_start_ns);
    let busy_wall_ns = ctx.result.wall_ns.max(planned_ns);
    ctx.result.max_busy_fraction = if busy_wall_ns > 0 {
        (ctx.result.cpu_ns as f64 / busy_wall_ns as f64).min(1.0)
    } else {
        0.0
    };
    Ok(ctx.result)
}

impl Ctx {
    fn measuring(&self, now: u64) -> bool {
        now >= self.timing.measure_start_ns && self.timing.measure_end_ns.is_none_or(|e| now < e)
    }

    /// Records an error, keeps a sample, and ends the connection (churn slots retry later).
    fn fail(
        &mut self,
        registry: &Registry,
        conn: &mut Conn,
        now: u64,
        kind: ErrorKind,
        at: ErrorAt,
        detail: impl FnOnce() -> String,
    ) {
        self.result.errors[kind.index()] += 1;
        self.live.errors.fetch_add(1, Ordering::Relaxed);
        if self.result.samples.len() < MAX_SAMPLES {
            self.result.samples.push(ErrorSample {
                kind,
                connection: Some(conn.id),
                message: at.message,
                offset: at.offset,
                expected: at.bytes.map(|b| b.0),
                got: at.bytes.map(|b| b.1),
                at_s: now as f64 / 1e9,
                detail: detail(),
            });
        }
        self.close(registry, conn, now);
        let churn = self.config.messages_per_connection.is_some();
        if churn && self.ever_connected && !self.window_over(conn, now) {
            conn.phase = Phase::Idle;
            conn.retry_at_ns = now + RETRY_NS;
        } else {
            self.finish(registry, conn, now);
        }
    }

    /// Extends the connection's longest stall to `now` (clamped to the window) for a message
    /// outstanding since `outstanding_since_ns` without an echo.
    fn note_gap(&self, conn: &mut Conn, now: u64, outstanding_since_ns: u64) {
        let until = self.timing.measure_end_ns.map_or(now, |end| now.min(end));
        let since = conn
            .last_progress_ns
            .max(outstanding_since_ns)
            .max(self.timing.measure_start_ns);
        conn.max_gap_ns = conn.max_gap_ns.max(until.saturating_sub(since));
    }

    fn close(&mut self, registry: &Registry, conn: &mut Conn, now: u64) {
        if let Some(mut stream) = conn.stream.take() {
            let _ = registry.deregister(&mut stream);
        }
        // Messages abandoned without an echo: their wait counts as a stall.
        if let Some(front) = conn.in_flight.front() {
            let since = front.intended_ns;
            self.note_gap(conn, now, since);
        }
        conn.in_flight.clear();
        conn.phase = Phase::Idle;
    }

    fn finish(&mut self, registry: &Registry, conn: &mut Conn, now: u64) {
        if conn.phase != Phase::Done {
            self.done += 1;
        }
        self.close(registry, conn, now);
        conn.phase = Phase::Done;
        conn.heap_due = None;
    }

    /// No more messages will be issued for this slot.
    fn window_over(&self, conn: &Conn, now: u64) -> bool {
        if conn.quota == Some(0) {
            return true;
        }
        match self.timing.measure_end_ns {
            Some(end) if self.open_loop => conn.next_intended_ns >= end,
            Some(end) => now >= end,
            None => false,
        }
    }

    fn connect(&mut self, registry: &Registry, conn: &mut Conn, now: u64) {
        if self.window_over(conn, now) {
            self.finish(registry, conn, now);
            return;
        }
        conn.id = conn.slot as u64 + conn.generation * self.config.connections as u64;
        conn.generation += 1;
        conn.send_pos = 0;
        conn.recv_pos = 0;
        conn.issued = 0;
        conn.in_flight.clear();
        conn.connect_started_ns = now;
        let source = if self.source_addrs.is_empty() {
            None
        } else {
            let ip = self.source_addrs[self.next_source % self.source_addrs.len()];
            self.next_source = self.next_source.wrapping_add(1);
            Some(SocketAddr::new(ip, 0))
        };
        match start_connect(self.target, source) {
            Ok(mut stream) => {
                let token = Token(conn.index);
                if let Err(e) =
                    registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                {
                    let kind = ErrorKind::from_io(&e);
                    self.fail(registry, conn, now, kind, ErrorAt::default(), || {
                        format!("registering a new connection: {e}")
                    });
                    return;
                }
                conn.stream = Some(stream);
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

    fn on_connect_ready(&mut self, registry: &Registry, conn: &mut Conn, now: u64) {
        let Some(stream) = conn.stream.as_ref() else {
            return;
        };
        // The connect time ends now, not when the poll batch began.
        let now = self.timing.now_ns().max(now);
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => {
                self.connect_failed(registry, conn, now, e);
                return;
            }
            Ok(None) => {}
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => {
                self.connect_failed(registry, conn, now, e);
                return;
            }
        }
        let _ = stream.set_nodelay(true);
        conn.phase = Phase::Open;
        conn.unblocked_ns = now;
        self.ever_connected = true;
        self.result.opened += 1;
        record_ns_as_us(
            &mut self.result.connect,
            now.saturating_sub(conn.connect_started_ns),
        );
        self.pump(registry, conn, now);
    }

    /// One exponential gap (mean: the per-connection interval) from the connection's xorshift.
    fn exp_gap_ns(&self, conn: &mut Conn) -> u64 {
        conn.rng ^= conn.rng << 13;
        conn.rng ^= conn.rng >> 7;
        conn.rng ^= conn.rng << 17;
        let u = ((conn.rng >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        (-u.ln() * self.per_conn_interval_ns) as u64
    }

    /// Whether the connection may issue another message now; the intended send time if so.
    fn next_issue(&mut self, conn: &mut Conn, now: u64) -> Option<u64> {
        if conn.phase != Phase::Open || conn.in_flight.len() >= self.max_in_flight {
            return None;
        }
        if conn.quota == Some(0) {
            return None;
        }
        if let Some(m) = self.config.messages_per_connection
            && conn.issued >= m
        {
            return None;
        }
        if self.open_loop {
            let intended = conn.next_intended_ns;
            if let Some(end) = self.timing.measure_end_ns
                && intended >= end
            {
                return None;
            }
            if intended > now {
                if conn.heap_due != Some(intended) {
                    conn.heap_due = Some(intended);
                    self.heap.push(Reverse((intended, conn.index)));
                }
                return None;
            }
            conn.schedule_k += 1;
            conn.next_intended_ns = match self.config.arrival {
                Arrival::Uniform => {
                    let phase = (self.per_conn_interval_ns * conn.slot as f64
                        / self.config.connections as f64) as u64;
                    phase + (self.per_conn_interval_ns * conn.schedule_k as f64) as u64
                }
                Arrival::Poisson => intended + self.exp_gap_ns(conn),
            };
            Some(intended)
        } else {
            if self.timing.measure_end_ns.is_some_and(|end| now >= end) {
                return None;
            }
            Some(now)
        }
    }

    /// Issues every message that is due and writes what it can.
    fn pump(&mut self, registry: &Registry, conn: &mut Conn, now: u64) {
        // The loop's own lateness is measured against the clock now, not the poll's timestamp.
        let now = if self.open_loop {
            self.timing.now_ns().max(now)
        } else {
            now
        };
        while let Some(intended_ns) = self.next_issue(conn, now) {
            let measured = intended_ns >= self.timing.measure_start_ns;
            if measured && let Some(q) = conn.quota.as_mut() {
                *q -= 1;
            }
            if measured && self.open_loop {
                // Due while the connection could not take it: the server held it back.
                if conn.unblocked_ns > intended_ns {
                    self.result.held_back += 1;
                }
                let ready = intended_ns.max(conn.unblocked_ns);
                record_ns_as_us(&mut self.result.loop_lag, now.saturating_sub(ready));
            }
            conn.in_flight.push_back(Pending {
                intended_ns,
                sent_ns: 0,
                measured,
            });
            conn.issued += 1;
        }
        self.write_pending(registry, conn);
        if conn.phase == Phase::Open && conn.in_flight.is_empty() {
            self.maybe_end_connection(registry, conn, now);
        }
    }

    /// Ends a connection that has nothing in flight and will issue nothing more.
    fn maybe_end_connection(&mut self, registry: &Registry, conn: &mut Conn, now: u64) {
        if self.window_over(conn, now) {
            self.start_drain(registry, conn, now, false);
            return;
        }
        if let Some(m) = self.config.messages_per_connection
            && conn.issued >= m
        {
            // Churn: close (after the drain) and connect again at once.
            self.start_drain(registry, conn, now, true);
        }
    }

    /// A normal end: shut our write side down and read to EOF (up to [`DRAIN_MAX_NS`] or
    /// `--timeout`, whichever is shorter), so that bytes the server sends after the last echo
    /// are seen and counted as `corrupt`.
    fn start_drain(&mut self, registry: &Registry, conn: &mut Conn, now: u64, reconnect: bool) {
        let shut = conn
            .stream
            .as_ref()
            .map(|s| s.shutdown(std::net::Shutdown::Write));
        if !matches!(shut, Some(Ok(()))) {
            self.end_after_drain(registry, conn, now, reconnect);
            return;
        }
        conn.phase = Phase::Draining;
        conn.reconnect_after_drain = reconnect;
        conn.drain_deadline_ns = now + DRAIN_MAX_NS.min(self.config.timeout_ms * 1_000_000);
        // Bytes may already be waiting (edge-triggered: no new event would come for them).
        self.on_drain_readable(registry, conn);
    }

    fn end_after_drain(&mut self, registry: &Registry, conn: &mut Conn, now: u64, reconnect: bool) {
        if reconnect && !self.window_over(conn, now) {
            self.close(registry, conn, now);
            conn.phase = Phase::Idle;
            conn.retry_at_ns = now;
            self.connect(registry, conn, now);
        } else {
            self.finish(registry, conn, now);
        }
    }

    /// Draining: reads to EOF; any byte is `corrupt` ("extra bytes after the last echo").
    fn on_drain_readable(&mut self, registry: &Registry, conn: &mut Conn) {
        loop {
            let Some(stream) = conn.stream.as_mut() else {
                return;
            };
            let read = stream.read(&mut self.recv_buf);
            let now = self.timing.now_ns();
            match read {
                Ok(0) => {
                    let reconnect = conn.reconnect_after_drain;
                    self.end_after_drain(registry, conn, now, reconnect);
                    return;
                }
                Ok(n) => {
                    if self.measuring(now) {
                        self.result.bytes_received += n as u64;
                    }
                    let size = self.size;
                    let msg = conn.send_pos / size;
                    let got = self.recv_buf[0];
                    self.fail(
                        registry,
                        conn,
                        now,
                        ErrorKind::Corrupt,
                        ErrorAt::byte(msg, 0),
                        || {
                            format!(
                                "extra bytes after the last echo: {n} byte(s) came back after \
                                 every message was verified (first: {got:#04x})"
                            )
                        },
                    );
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

    fn write_pending(&mut self, registry: &Registry, conn: &mut Conn) {
        let size = self.size;
        let target = conn.issued * size;
        let cap = self.send_buf.len().min(self.write_chunk);
        while conn.send_pos < target {
            let mut len = 0usize;
            let mut pos = conn.send_pos;
            while len < cap && pos < target {
                let msg = pos / size;
                let off = pos % size;
                let n = ((size - off) as usize)
                    .min(cap - len)
                    .min((target - pos) as usize);
                payload::fill(
                    payload::message_seed(conn.id, msg),
                    off,
                    &mut self.send_buf[len..len + n],
                );
                len += n;
                pos += n as u64;
            }
            let Some(stream) = conn.stream.as_mut() else {
                return;
            };
            let written = stream.write(&self.send_buf[..len]);
            // Timestamps are taken when the call returns, not once per poll batch (up to 1024
            // events would share one stale `now`); the vDSO clock costs ~20 ns.
            let now = self.timing.now_ns();
            match written {
                Ok(0) => {
                    let msg = conn.send_pos / size;
                    self.fail(
                        registry,
                        conn,
                        now,
                        ErrorKind::Reset,
                        ErrorAt::message(msg),
                        || "write returned 0 bytes".into(),
                    );
                    return;
                }
                Ok(written) => {
                    let start = conn.send_pos;
                    let end = start + written as u64;
                    // Messages whose first byte is in [start, end) have just been sent.
                    let first_msg = start.div_ceil(size);
                    let base_msg = conn.recv_msg(size);
                    let mut msg = first_msg;
                    while msg * size < end {
                        if let Some(p) = conn.in_flight.get_mut((msg - base_msg) as usize) {
                            p.sent_ns = now;
                            if p.measured {
                                self.result.messages_sent += 1;
                                if self.open_loop {
                                    record_ns_as_us(
                                        &mut self.result.schedule_lag,
                                        now.saturating_sub(p.intended_ns),
                                    );
                                }
                            }
                        }
                        msg += 1;
                    }
                    conn.send_pos = end;
                    if self.measuring(now) {
                        self.result.bytes_sent += written as u64;
                    }
                    if written < len && self.write_chunk == usize::MAX {
                        // The socket buffer is full; a writable event follows.
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = ErrorKind::from_io(&e);
                    let msg = conn.send_pos / size;
                    self.fail(registry, conn, now, kind, ErrorAt::message(msg), || {
                        format!("write: {e}")
                    });
                    return;
                }
            }
        }
    }

    fn on_readable(&mut self, registry: &Registry, conn: &mut Conn, read_closed: bool) {
        let size = self.size;
        let mut now;
        loop {
            let Some(stream) = conn.stream.as_mut() else {
                return;
            };
            let read = stream.read(&mut self.recv_buf);
            now = self.timing.now_ns();
            match read {
                Ok(0) => {
                    let msg = conn.recv_msg(size);
                    let off = conn.recv_pos % size;
                    let (kind, what) = if off == 0 {
                        (ErrorKind::Eof, "the server closed the connection")
                    } else {
                        (
                            ErrorKind::Short,
                            "the server closed the connection in the middle of a message",
                        )
                    };
                    let owed = conn.in_flight.len();
                    self.fail(registry, conn, now, kind, ErrorAt::byte(msg, off), || {
                        format!("{what} ({owed} message(s) still owed)")
                    });
                    return;
                }
                Ok(n) => {
                    if self.measuring(now) {
                        self.result.bytes_received += n as u64;
                    }
                    if !self.verify_received(registry, conn, now, n) {
                        return;
                    }
                    if n < self.recv_buf.len() && !read_closed {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = ErrorKind::from_io(&e);
                    let msg = conn.recv_msg(size);
                    self.fail(registry, conn, now, kind, ErrorAt::message(msg), || {
                        format!("read: {e}")
                    });
                    return;
                }
            }
        }
        self.pump(registry, conn, now);
    }

    /// Verifies `recv_buf[..n]` against the payload stream; completes messages. False when the
    /// connection failed.
    fn verify_received(
        &mut self,
        registry: &Registry,
        conn: &mut Conn,
        now: u64,
        n: usize,
    ) -> bool {
        let size = self.size;
        let owed = (conn.send_pos - conn.recv_pos) as usize;
        let checked = n.min(owed);
        let mut i = 0usize;
        while i < checked {
            let msg = conn.recv_pos / size;
            let off = conn.recv_pos % size;
            let seg = ((size - off) as usize).min(checked - i);
            let seed = payload::message_seed(conn.id, msg);
            if let Err(m) = payload::verify(seed, off, &self.recv_buf[i..i + seg]) {
                let id = conn.id;
                self.fail(
                    registry,
                    conn,
                    now,
                    ErrorKind::Corrupt,
                    ErrorAt {
                        message: Some(msg),
                        offset: Some(m.offset),
                        bytes: Some((m.expected, m.got)),
                    },
                    || {
                        format!(
                            "connection {id} message {msg} byte {}: sent {:#04x}, got {:#04x}",
                            m.offset, m.expected, m.got
                        )
                    },
                );
                return false;
            }
            conn.recv_pos += seg as u64;
            i += seg;
            if off + seg as u64 == size {
                self.complete(conn, now);
            }
        }
        if n > owed {
            let msg = conn.send_pos / size;
            let off = conn.send_pos % size;
            let got = self.recv_buf[checked];
            let extra = n - owed;
            self.fail(
                registry,
                conn,
                now,
                ErrorKind::Corrupt,
                ErrorAt::byte(msg, off),
                || format!("{extra} more byte(s) came back than were sent (first: {got:#04x})"),
            );
            return false;
        }
        true
    }

    fn complete(&mut self, conn: &mut Conn, now: u64) {
        let was_full = conn.in_flight.len() >= self.max_in_flight;
        let Some(p) = conn.in_flight.pop_front() else {
            return;
        };
        if was_full {
            conn.unblocked_ns = now;
        }
        // A stall is time with a message outstanding and no echo: from the later of the last
        // echo and this message's intended time (an idle connection is not stalled). Noted for
        // warm-up messages too: one issued in the warm-up and held by the server into the window
        // (a pool with fewer workers than connections) is exactly a starved connection.
        self.note_gap(conn, now, p.intended_ns);
        conn.last_progress_ns = now;
        if !p.measured {
            return;
        }
        let latency_ns = now.saturating_sub(p.intended_ns);
        record_ns_as_us(&mut self.result.latency, latency_ns);
        record_ns_as_us(&mut self.result.service, now.saturating_sub(p.sent_ns));
        let index = now.saturating_sub(self.timing.measure_start_ns) / INTERVAL_NS;
        if index != self.interval_index {
            self.flush_intervals(now, false);
        }
        record_ns_as_us(&mut self.interval, latency_ns);
        // Throughput and fairness count only echoes that complete inside the window: one that
        // arrives during the post-window drain was not served within the window (its latency,
        // wait included, is in the histogram above all the same).
        if self.measuring(now) {
            self.result.messages_verified += 1;
            self.live_verified += 1;
            self.result.last_echo_ns = now;
            conn.messages_verified += 1;
        }
    }

    /// Sends the interval histograms that ended before `now` (all of them when `last`).
    fn flush_intervals(&mut self, now: u64, last: bool) {
        if now < self.timing.measure_start_ns {
            return;
        }
        let current = (now - self.timing.measure_start_ns) / INTERVAL_NS;
        while self.interval_index < current || (last && self.interval_index == current) {
            let fresh = match self.recycled.try_recv() {
                Ok(mut h) => {
                    h.reset();
                    h
                }
                // Only the first interval or two: the coordinator has not handed one back yet.
                Err(_) => new_histogram(),
            };
            let latency = std::mem::replace(&mut self.interval, fresh);
            let _ = self.intervals.send(IntervalReport {
                thread: self.thread,
                index: self.interval_index,
                latency,
            });
            self.interval_index += 1;
        }
    }

    fn housekeeping(&mut self, registry: &Registry, conns: &mut [Conn], now: u64) {
        self.flush_intervals(now, false);
        self.live
            .verified
            .store(self.live_verified, Ordering::Relaxed);
        let timeout_ns = self.config.timeout_ms * 1_000_000;
        let stall_ns = self.config.stall_threshold_ms * 1_000_000;
        let mut starved_now = 0u64;
        for conn in conns.iter_mut() {
            match conn.phase {
                Phase::Connecting if now.saturating_sub(conn.connect_started_ns) > timeout_ns => {
                    let ms = self.config.timeout_ms;
                    self.fail(
                        registry,
                        conn,
                        now,
                        ErrorKind::Timeout,
                        ErrorAt::default(),
                        || format!("connect did not complete within {ms} ms"),
                    );
                }
                Phase::Draining if now >= conn.drain_deadline_ns => {
                    // No EOF in time: not an error (some servers do not close on a half-close).
                    let reconnect = conn.reconnect_after_drain;
                    self.end_after_drain(registry, conn, now, reconnect);
                }
                Phase::Open => {
                    if let Some(front) = conn.in_flight.front() {
                        let since = if front.sent_ns != 0 {
                            front.sent_ns
                        } else {
                            front.intended_ns.max(conn.connect_started_ns)
                        };
                        if now.saturating_sub(since) > timeout_ns {
                            let msg = conn.recv_msg(self.size);
                            let off = conn.recv_pos % self.size;
                            let ms = self.config.timeout_ms;
                            self.fail(
                                registry,
                                conn,
                                now,
                                ErrorKind::Timeout,
                                ErrorAt::byte(msg, off),
                                || format!("no complete echo within {ms} ms"),
                            );
                        }
                    } else {
                        self.maybe_end_connection(registry, conn, now);
                    }
                }
                _ => {}
            }
            if conn.phase != Phase::Done
                && self.measuring(now)
                && let Some(front) = conn.in_flight.front()
                && now.saturating_sub(
                    conn.last_progress_ns
                        .max(front.intended_ns)
                        .max(self.timing.measure_start_ns),
                ) > stall_ns
            {
                starved_now += 1;
            }
        }
        self.live.starved_now.store(starved_now, Ordering::Relaxed);
    }
}

/// The token of the open-loop send timer (connections use their index).
const TIMER_TOKEN: Token = Token(usize::MAX - 1);

/// A timerfd armed at the next intended send time (absolute, CLOCK_MONOTONIC).
struct SendTimer {
    fd: std::os::fd::OwnedFd,
    /// CLOCK_MONOTONIC nanoseconds at the run's base instant.
    base_mono_ns: u64,
    armed_at_ns: Option<u64>,
}

impl SendTimer {
    fn new(registry: &Registry, now_ns: u64) -> io::Result<SendTimer> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: timerfd_create returns a new descriptor we own (or -1).
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a valid descriptor that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        registry.register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            TIMER_TOKEN,
            Interest::READABLE,
        )?;
        // Instant is CLOCK_MONOTONIC on Linux, so the base instant is now minus elapsed.
        let base_mono_ns = monotonic_ns().saturating_sub(now_ns);
        Ok(SendTimer {
            fd,
            base_mono_ns,
            armed_at_ns: None,
        })
    }

    /// Arms the timer for `due_ns` (relative to the run's base) unless it already is.
    fn arm(&mut self, due_ns: u64) {
        use std::os::fd::AsRawFd;
        if self.armed_at_ns == Some(due_ns) {
            return;
        }
        let at = self.base_mono_ns + due_ns;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                tv_nsec: (at % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: the descriptor is ours; spec is a valid itimerspec; old value not wanted.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc == 0 {
            self.armed_at_ns = Some(due_ns);
        }
    }

    /// Consumes the expiration so that the next one is a new readiness edge.
    fn fired(&mut self) {
        use std::os::fd::AsRawFd;
        let mut ticks = [0u8; 8];
        // SAFETY: reads at most 8 bytes into our buffer from our nonblocking descriptor.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), ticks.as_mut_ptr().cast(), 8) };
        self.armed_at_ns = None;
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
