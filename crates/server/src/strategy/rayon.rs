//! `rayon`: the acceptor spawns each session onto a rayon thread pool of `--workers` threads.
//!
//! Like `pool`, at most W connections are served at once and the rest wait; unlike `pool`, the
//! waiting sessions sit in rayon's queues (a global injector plus per-worker deques with work
//! stealing) instead of one bounded crossbeam channel. Rayon is built for short CPU-bound jobs; a
//! session blocks its worker on socket I/O for its whole life, which is what the comparison shows.
//! The queue is unbounded (`--queue`/`--overflow` are the pool's); `--max-connections` bounds it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Dispatch;
use crate::Error;
use crate::registry::Conn;
use crate::server::Shared;
use crate::session;

pub struct Rayon {
    pool: rayon::ThreadPool,
    /// Sessions spawned and not yet ended (queued or running), so `finish` can wait for them.
    live: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

impl Rayon {
    pub fn start(shared: &Arc<Shared>) -> Result<Self, Error> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(shared.config.workers)
            .thread_name(|i| format!("rayon-worker-{i}"))
            .build()
            .map_err(|e| Error::io("starting the rayon pool", std::io::Error::other(e)))?;
        Ok(Rayon {
            pool,
            live: Arc::new(AtomicUsize::new(0)),
            shared: Arc::clone(shared),
        })
    }
}

impl Dispatch for Rayon {
    fn dispatch(&mut self, conn: Conn) {
        let shared = Arc::clone(&self.shared);
        let live = Live::new(&self.live);
        // `session::run` catches a panic in the session, so a worker never unwinds.
        self.pool.spawn(move || {
            let _live = live;
            session::run(conn, &shared);
        });
    }

    /// Waits for the queued and running sessions (the server's drain cuts those that outlive
    /// it), then drops the pool, which ends its threads.
    fn finish(self: Box<Self>) {
        let limit = Instant::now() + self.shared.config.drain_timeout + Duration::from_secs(10);
        while self.live.load(Ordering::Acquire) > 0 && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Counts a spawned session until its job ends (or is dropped unrun).
struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::AcqRel);
        Live(Arc::clone(live))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
