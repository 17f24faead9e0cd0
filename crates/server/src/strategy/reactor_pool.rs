//! `reactor-pool`: a fixed pool of `--workers` threads that serves thousands of keep-alive
//! connections, because an idle connection never holds a worker (Tomcat's NIO connector,
//! Apache's event MPM, half-sync/half-async).
//!
//! A poller thread owns every open connection's readiness (mio over epoll, each socket registered
//! once for both directions, edge-triggered). A connection that becomes ready goes through a
//! bounded crossbeam channel (`--queue`) to the workers; a worker serves it with the nonblocking
//! session state machine (`session/nonblocking.rs`, the one `event-loop` and `async` use) until
//! it would block or its fairness turn (`--reads-per-turn`) is used, and then takes the next.
//! Buffers belong to the workers (one scratch buffer each), so an idle connection holds none.
//!
//! The hand-off costs no system call per message. Instead of re-arming a one-shot interest after
//! each turn (an `epoll_ctl` per message), each connection has a state flag:
//! `IDLE` → (readiness) → `QUEUED` → (a worker takes it) → `RUNNING` → back to `IDLE` when it
//! would block. Readiness that arrives while a worker serves the connection turns `RUNNING` into
//! `NOTIFIED`, and the worker serves it again before letting it go, so no edge is lost and a
//! connection is in the queue at most once. Two more choices keep wake-ups rare:
//! - while the workers are busy, the poller does not wait in `epoll_wait` (where every arriving
//!   message would wake it and take the CPU from a worker) but until a worker runs out of work
//!   (at most [`ROUND_WAIT`]); then one `epoll_wait` collects everything that became ready
//!   meanwhile. "Busy" means work still queued, or as many workers awake as can run at once:
//!   `--workers`, at most the CPUs the process may run on (a server pinned to one CPU keeps one
//!   worker awake; more would only take turns on it). Polling again while a woken worker is on
//!   its way to queued work would only spin;
//! - the poller queues a whole batch before it wakes a sleeping worker (if a CPU is free for it),
//!   and a worker that takes work while more waits wakes the next one the same way.
//!
//! Measured against `event-loop` (system calls and context switches per message, and CPU per
//! message, server pinned to one CPU): `docs/performance.md`, "reactor-pool: the hand-off".
//!
//! A connection that used its turn goes to the back of the queue (or, when the queue is full, to
//! its worker's own list, served in alternation with the queue). Deadlines: each turn leaves the
//! session's deadline (idle, or write while output is pending) in the connection's flags; the
//! poller scans them a few times per timeout and hands an expired connection to a worker, which
//! gives it `Session::on_deadline` (bytes waiting are served, otherwise it times out). Workers
//! close connections; the poller forgets them when told through a channel.
//!
//! Try it: `cargo run -p echo-server -- --addr 127.0.0.1:0 --strategy reactor-pool --workers 2`.

use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::TcpStream;
use mio::{Events, Poll, Token, Waker};
use slab::Slab;

use super::loops::{self, Incoming, LoopHandle, LoopThreads};
use crate::core::config::{Config, available_cores};
use crate::core::error::Error;
use crate::core::registry::Conn;
use crate::core::shared::Shared;
use crate::core::stats::{ErrorKind, Outcome};
use crate::session::nonblocking::{Session, Step, scan_period};

const WAKER: Token = Token(usize::MAX);

/// Readiness events taken per `epoll_wait`.
const EVENTS_PER_POLL: usize = 1024;
/// The longest the poller waits for a worker to run out of work before it polls again:
/// connections that keep using their whole turn can keep every worker busy for long.
pub const ROUND_WAIT: Duration = Duration::from_millis(1);

/// The acceptor's side: the poller's channel and waker (one loop thread, which owns the workers).
pub type ReactorPool = LoopThreads<Arc<Waker>>;

// The states of a connection (`Entry::state`).
/// Waiting for readiness; nobody holds it.
const IDLE: u8 = 0;
/// In the ready queue (or a worker's own list), at most once.
const QUEUED: u8 = 1;
/// A worker is serving it.
const RUNNING: u8 = 2;
/// A worker is serving it and new readiness arrived meanwhile: serve it again before `IDLE`.
const NOTIFIED: u8 = 3;
/// Its session is over.
const CLOSED: u8 = 4;

/// Starts the workers and the poller.
pub fn start(shared: &Arc<Shared>) -> Result<ReactorPool, Error> {
    let poll = Poll::new().map_err(|e| Error::io("creating the reactor-pool poller", e))?;
    let waker = Arc::new(
        Waker::new(poll.registry(), WAKER).map_err(|e| Error::io("creating a poller waker", e))?,
    );
    let (closed_sender, closed) = crossbeam_channel::unbounded();
    let queue = Arc::new(ReadyQueue::new(&shared.config, Arc::clone(&waker)));
    let epoch = Instant::now();
    let mut workers = Vec::with_capacity(shared.config.workers);
    for i in 0..shared.config.workers {
        let worker = Worker {
            queue: Arc::clone(&queue),
            closed: closed_sender.clone(),
            shared: Arc::clone(shared),
            epoch,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("reactor-worker-{i}"))
            .spawn(move || worker.run());
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(err) => {
                queue.stop();
                for worker in workers {
                    let _ = worker.join();
                }
                return Err(Error::io("spawning a reactor-pool worker", err));
            }
        }
    }
    let (incoming, receiver) = crossbeam_channel::unbounded();
    let poller = Poller {
        poll,
        incoming: Incoming::new(receiver),
        conns: Slab::new(),
        queue: Arc::clone(&queue),
        batch: Vec::new(),
        closed,
        workers,
        scan_every: scan_period(&shared.config),
        shared: Arc::clone(shared),
        epoch,
    };
    let thread = std::thread::Builder::new()
        .name("reactor-poller".into())
        .spawn(move || poller.run())
        .map_err(|e| {
            queue.stop(); // the workers end (their handles went with the poller)
            Error::io("spawning the reactor-pool poller", e)
        })?;
    // Set before any connection exists, so every worker that may need to wake the poller can.
    let _ = queue.poller.set(thread.thread().clone());
    let handle = LoopHandle {
        incoming,
        waker,
        thread,
    };
    Ok(LoopThreads::new(vec![handle], shared))
}

/// One connection: its state flag, what the poller tells the worker, and the session (taken by
/// the worker that closes it).
struct Entry {
    /// Its key in the poller's slab (its token).
    key: usize,
    state: AtomicU8,
    /// The poller saw the peer end its side (or an error): read on to end of file.
    read_closed: AtomicBool,
    /// The deadline scan found it expired: its next turn is `Session::on_deadline`.
    deadline_due: AtomicBool,
    /// The session's deadline, in nanoseconds since the pool's epoch, as its last turn left it.
    deadline_ns: AtomicU64,
    /// Locked only by the worker holding the connection (the state flag makes it exclusive).
    session: Mutex<Option<Served>>,
}

/// The connection and its session state.
struct Served {
    conn: Conn<TcpStream>,
    session: Session,
}

impl Entry {
    /// Ends the session (counted as `outcome`) and closes the connection, unless it was closed
    /// already.
    fn finish(&self, outcome: Outcome) {
        let served = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(Served { conn, session }) = served {
            session.finish(conn, outcome);
        }
    }

    /// Readiness from the poller: queue an idle connection (returns true: the caller queues it),
    /// or tell a worker serving it to serve it once more.
    fn notify(&self) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => QUEUED,
                RUNNING => NOTIFIED,
                _ => return false, // queued, notified already, or closed
            };
            match self
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next == QUEUED,
                Err(now) => state = now,
            }
        }
    }
}

fn nanos_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// The bounded channel of ready connections, and who sleeps when: a worker while the queue is
/// empty; the poller while every worker that can run at once is busy (readiness then gathers in
/// epoll's ready list, collected by one `epoll_wait` when a worker runs out of work).
struct ReadyQueue {
    sender: Sender<Arc<Entry>>,
    receiver: Receiver<Arc<Entry>>,
    /// Workers in the pool.
    workers: usize,
    /// Workers that can run at once: `--workers`, at most the CPUs this process may run on.
    /// More awake workers than that would only take turns on the same CPUs.
    runnable: usize,
    /// Workers asleep (or about to sleep) on `wake` and not woken yet: a waker counts the one it
    /// wakes out at once, so the poller never takes a worker it just woke for an idle one.
    sleepers: AtomicUsize,
    /// Wake-ups given and not yet taken by a sleeping worker.
    sleep: Mutex<usize>,
    wake: Condvar,
    stopped: AtomicBool,
    /// The poller waits for a worker to run out of work (`ROUND_WAIT` at most).
    poller_waiting: AtomicBool,
    poller: OnceLock<Thread>,
    /// The acceptor has stopped: every close wakes the poller, so that it ends promptly.
    draining: AtomicBool,
    poller_waker: Arc<Waker>,
}

impl ReadyQueue {
    fn new(config: &Config, poller_waker: Arc<Waker>) -> Self {
        let (sender, receiver) = crossbeam_channel::bounded(config.queue);
        ReadyQueue {
            sender,
            receiver,
            workers: config.workers,
            runnable: config.workers.min(available_cores()),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(0),
            wake: Condvar::new(),
            stopped: AtomicBool::new(false),
            poller_waiting: AtomicBool::new(false),
            poller: OnceLock::new(),
            draining: AtomicBool::new(false),
            poller_waker,
        }
    }

    /// Whether as many workers as can run at once are awake.
    fn busy(&self) -> bool {
        let awake = self
            .workers
            .saturating_sub(self.sleepers.load(Ordering::SeqCst));
        awake >= self.runnable
    }

    /// Queues one connection without waking anyone: the caller wakes a worker after its batch. A
    /// full queue wakes a worker first and then waits for room (only the poller waits; workers
    /// never block on the queue).
    fn push(&self, entry: Arc<Entry>) {
        match self.sender.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(entry)) => {
                self.wake_one();
                // The queue owns a receiver, so it cannot be disconnected.
                let _ = self.sender.send(entry);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// After the poller queued a batch: wakes a sleeping worker unless as many as can run at
    /// once are awake (they take the batch). A worker announces its sleep and then looks at the
    /// queue again, and the poller queues and then looks at the sleepers; with a full fence on
    /// both sides, at least one of them sees the other, so no batch waits for nobody.
    fn queued(&self) {
        fence(Ordering::SeqCst);
        if !self.busy() {
            self.wake_one();
        }
    }

    fn wake_one(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let mut wakeups = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
            // Checked again under the lock: sleepers only fall asleep holding it.
            if self.sleepers.load(Ordering::SeqCst) > 0 {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                *wakeups += 1;
                self.wake.notify_one();
            }
        }
    }

    /// The next connection for a worker: from the queue, or its own list of connections that
    /// used their turn while the queue was full (every other time, so neither waits for long);
    /// sleeps while there is none. `None` once stopped and empty.
    fn next(&self, own: &mut VecDeque<Arc<Entry>>, prefer_own: &mut bool) -> Option<Arc<Entry>> {
        loop {
            if *prefer_own && let Some(entry) = own.pop_front() {
                *prefer_own = false;
                return Some(entry);
            }
            *prefer_own = !own.is_empty();
            if let Ok(entry) = self.receiver.try_recv() {
                // More waits and a CPU is free for it: wake the next sleeper (best effort; the
                // awake workers take it anyway).
                if !self.receiver.is_empty() && !self.busy() {
                    self.wake_one();
                }
                return Some(entry);
            }
            if let Some(entry) = own.pop_front() {
                return Some(entry);
            }
            if self.stopped.load(Ordering::Acquire) {
                return None;
            }
            let mut wakeups = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if !self.receiver.is_empty() || self.stopped.load(Ordering::Acquire) {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            // Out of work: the poller may poll now.
            if self.poller_waiting.load(Ordering::SeqCst)
                && self.poller_waiting.swap(false, Ordering::AcqRel)
                && let Some(poller) = self.poller.get()
            {
                poller.unpark();
            }
            loop {
                wakeups = self
                    .wake
                    .wait(wakeups)
                    .unwrap_or_else(PoisonError::into_inner);
                if *wakeups > 0 {
                    *wakeups -= 1; // the waker counted this worker awake already
                    break;
                }
                if self.stopped.load(Ordering::Acquire) {
                    self.sleepers.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
            }
        }
    }

    /// Whether the pool has nothing for the poller to add to: work is queued (a woken worker is
    /// on its way to it), or as many workers as can run at once are awake.
    fn occupied(&self) -> bool {
        !self.receiver.is_empty() || self.busy()
    }

    /// The poller waits while the pool is [occupied](ReadyQueue::occupied), until `limit`; a
    /// worker that runs out of work wakes it. (The poller sets its flag and then looks at the
    /// sleepers, a worker counts itself asleep and then looks at the flag; full fences on both
    /// sides.)
    fn wait_for_an_idle_worker(&self, limit: Instant) {
        loop {
            let now = Instant::now();
            if !self.occupied() || now >= limit {
                break;
            }
            self.poller_waiting.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if !self.occupied() {
                break;
            }
            std::thread::park_timeout(limit - now);
        }
        self.poller_waiting.store(false, Ordering::Relaxed);
    }

    /// A connection closed: while draining, the poller is told at once (it ends once none is
    /// left).
    fn closed(&self) {
        if self.draining.load(Ordering::Acquire) {
            if let Err(err) = self.poller_waker.wake() {
                eprintln!("echo-server: could not wake the reactor-pool poller: {err}");
            }
            if let Some(poller) = self.poller.get() {
                poller.unpark();
            }
        }
    }

    /// Ends the workers once the queue is empty.
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let _wakeups = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
        self.wake.notify_all();
    }
}

/// The poller thread: readiness, new connections, deadlines; owns the workers.
struct Poller {
    poll: Poll,
    incoming: Incoming,
    conns: Slab<Arc<Entry>>,
    queue: Arc<ReadyQueue>,
    /// Connections made ready by one poll, queued together (kept to reuse its capacity).
    batch: Vec<Arc<Entry>>,
    /// Keys of connections the workers closed.
    closed: Receiver<usize>,
    workers: Vec<JoinHandle<()>>,
    scan_every: Duration,
    shared: Arc<Shared>,
    epoch: Instant,
}

impl Poller {
    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        let mut next_scan = Instant::now() + self.scan_every;
        while self.incoming.accepting() || !self.conns.is_empty() {
            self.forget_closed();
            // While the workers are busy, new readiness gathers in epoll's ready list without
            // waking this thread; one poll collects it once a worker runs out of work.
            self.queue
                .wait_for_an_idle_worker(next_scan.min(Instant::now() + ROUND_WAIT));
            let timeout = if !self.queue.occupied() {
                next_scan.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!(
                    "echo-server: the reactor-pool poller failed, closing its connections: {err}"
                );
                break;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    self.take_incoming();
                    continue;
                }
                let Some(entry) = self.conns.get(event.token().0) else {
                    continue;
                };
                if event.is_read_closed() || event.is_error() {
                    entry.read_closed.store(true, Ordering::Release);
                }
                if entry.notify() {
                    self.batch.push(Arc::clone(entry));
                }
            }
            let now = Instant::now();
            if now >= next_scan {
                self.queue_expired(now);
                next_scan = now + self.scan_every;
            }
            if !self.batch.is_empty() {
                for entry in self.batch.drain(..) {
                    self.queue.push(entry);
                }
                self.queue.queued();
            }
        }
        self.stop_workers();
    }

    /// Registers the connections the acceptor sent; notices when it stopped.
    fn take_incoming(&mut self) {
        while let Some(conn) = self.incoming.take() {
            let slot = self.conns.vacant_entry();
            let key = slot.key();
            let counters = &self.shared.counters;
            let Some(conn) = loops::register(conn, self.poll.registry(), Token(key), counters)
            else {
                continue;
            };
            let session = Session::new(conn.accepted_at());
            let deadline = nanos_since(self.epoch, session.deadline(&self.shared.config));
            slot.insert(Arc::new(Entry {
                key,
                state: AtomicU8::new(IDLE),
                read_closed: AtomicBool::new(false),
                deadline_due: AtomicBool::new(false),
                deadline_ns: AtomicU64::new(deadline),
                session: Mutex::new(Some(Served { conn, session })),
            }));
        }
        if !self.incoming.accepting() {
            self.queue.draining.store(true, Ordering::Release);
            self.forget_closed(); // closes reported before draining began woke nobody
        }
    }

    fn forget_closed(&mut self) {
        while let Ok(key) = self.closed.try_recv() {
            self.conns.try_remove(key);
        }
    }

    /// Hands idle connections whose deadline has passed to the workers (`Session::on_deadline`).
    fn queue_expired(&mut self, now: Instant) {
        let now_ns = nanos_since(self.epoch, now);
        for (_, entry) in self.conns.iter() {
            // Only the poller moves a connection out of `IDLE`, so this cannot race with a
            // readiness event; `Acquire` makes the deadline the last turn stored visible.
            if entry.state.load(Ordering::Acquire) == IDLE
                && entry.deadline_ns.load(Ordering::Relaxed) <= now_ns
            {
                entry.deadline_due.store(true, Ordering::Relaxed);
                entry.state.store(QUEUED, Ordering::Release);
                self.batch.push(Arc::clone(entry));
            }
        }
    }

    /// Stops the workers (they finish what is queued) and joins them; connections still open
    /// (only when the poller failed) are closed and counted.
    fn stop_workers(&mut self) {
        self.queue.stop();
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                eprintln!("echo-server: a reactor-pool worker panicked outside a connection");
            }
        }
        for entry in self.conns.drain() {
            entry.finish(Outcome::Failed(ErrorKind::Io));
        }
    }
}

/// One worker thread: its own read buffer, and connections to serve.
struct Worker {
    queue: Arc<ReadyQueue>,
    closed: Sender<usize>,
    shared: Arc<Shared>,
    epoch: Instant,
}

impl Worker {
    fn run(self) {
        let mut scratch = vec![0u8; self.shared.config.buffer_size];
        let mut own = VecDeque::new();
        let mut prefer_own = false;
        while let Some(entry) = self.queue.next(&mut own, &mut prefer_own) {
            self.serve(entry, &mut scratch, &mut own);
        }
    }

    /// Serves one connection until it would block, used its turn, or ended.
    fn serve(&self, entry: Arc<Entry>, scratch: &mut [u8], own: &mut VecDeque<Arc<Entry>>) {
        entry.state.store(RUNNING, Ordering::Release);
        loop {
            match self.turn(&entry, scratch) {
                Step::Wait => {
                    let idle = entry.state.compare_exchange(
                        RUNNING,
                        IDLE,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    if idle.is_ok() {
                        return;
                    }
                    // Readiness arrived during the turn (`NOTIFIED`): serve it again.
                    entry.state.store(RUNNING, Ordering::Release);
                }
                Step::Yield => {
                    // To the back of the queue; to this worker's own list if the queue is full.
                    entry.state.store(QUEUED, Ordering::Release);
                    if let Err(TrySendError::Full(entry) | TrySendError::Disconnected(entry)) =
                        self.queue.sender.try_send(entry)
                    {
                        own.push_back(entry);
                    }
                    return;
                }
                Step::Close(outcome) => {
                    entry.state.store(CLOSED, Ordering::Release);
                    entry.finish(outcome);
                    // The poller forgets it; its descriptor is closed, so no event follows.
                    let _ = self.closed.send(entry.key);
                    self.queue.closed();
                    return;
                }
            }
        }
    }

    /// One turn of the connection's session (`Session::advance`, or `Session::on_deadline` when
    /// the deadline scan sent it), inside `catch_unwind`: a panic ends this connection only.
    /// Leaves the session's deadline in the connection's flags for the poller's scan.
    fn turn(&self, entry: &Entry, scratch: &mut [u8]) -> Step {
        let config = &self.shared.config;
        let mut guard = entry.session.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(served) = guard.as_mut() else {
            return Step::Wait; // already closed (a connection is never queued after that)
        };
        if self.queue.stopped.load(Ordering::Relaxed) {
            // Only when the poller failed: nobody would report this connection's readiness.
            return Step::Close(Outcome::Failed(ErrorKind::Io));
        }
        if entry.read_closed.load(Ordering::Acquire) {
            served.session.mark_read_closed();
        }
        let now = Instant::now();
        let on_deadline = entry.deadline_due.swap(false, Ordering::Relaxed);
        let step = catch_unwind(AssertUnwindSafe(|| {
            let stream = served.conn.stream();
            if on_deadline {
                served.session.on_deadline(stream, scratch, now, config)
            } else {
                served.session.advance(stream, scratch, now, config)
            }
        }))
        .unwrap_or(Step::Close(Outcome::Failed(ErrorKind::Panic)));
        let deadline = nanos_since(self.epoch, served.session.deadline(config));
        entry.deadline_ns.store(deadline, Ordering::Relaxed);
        step
    }
}
