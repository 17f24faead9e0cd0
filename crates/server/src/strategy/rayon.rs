//! `rayon`: the acceptor spawns each session onto a rayon thread pool of `--workers` threads.
//!
//! Like `pool`, at most W connections are served at once and the rest wait; unlike `pool`, the
//! waiting sessions sit in rayon's queues (a global injector plus per-worker deques with work
//! stealing) instead of one bounded crossbeam channel. Rayon is built for short CPU-bound jobs; a
//! session blocks its worker on socket I/O for its whole life, which is what the comparison shows.
//! The queue is unbounded (`--queue`/`--overflow` are the pool's); `--max-connections` bounds it.

use std::sync::Arc;

use super::live::LiveSessions;
use crate::core::error::Error;
use crate::core::registry::Conn;
use crate::core::shared::{Dispatch, Shared};
use crate::session::blocking as session;

pub struct Rayon {
    pool: rayon::ThreadPool,
    /// Sessions spawned and not yet ended (queued or running), so `finish` can wait for them.
    live: LiveSessions,
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
            live: LiveSessions::default(),
            shared: Arc::clone(shared),
        })
    }
}

impl Dispatch for Rayon {
    fn dispatch(&mut self, conn: Conn) {
        let shared = Arc::clone(&self.shared);
        let live = self.live.guard();
        // `session::run` catches a panic in the session, so a worker never unwinds.
        self.pool.spawn(move || {
            let _live = live;
            session::run(conn, &shared);
        });
    }

    /// Waits for the queued and running sessions (the server's drain cuts those that outlive
    /// it), then drops the pool, which ends its threads.
    fn finish(self: Box<Self>) {
        self.live.wait_for_none(&self.shared);
    }
}
