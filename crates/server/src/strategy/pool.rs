//! `pool`, the classic worker pool: the acceptor pushes admitted connections into a bounded
//! crossbeam channel; a fixed set of `--workers` threads pull and serve them, one connection at a
//! time each, until it ends.
//!
//! Threads stay bounded however many clients come, and a full queue pushes back (`--overflow
//! block`) or sheds load (`--overflow reject`). The price: with more open connections than
//! workers, the extra connections wait in the queue until a worker is free, even when the ones
//! being served are silent. That is the pool's defining property, measured by the tests and shown
//! by `cargo xtask bench`; it is the comparison point for `reactor-pool` (the default), which
//! keeps a fixed pool but hands a worker only connections with bytes to echo.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};

use crate::core::config::Overflow;
use crate::core::error::Error;
use crate::core::registry::Conn;
use crate::core::shared::{Dispatch, Shared};
use crate::session::blocking as session;

pub struct Pool {
    queue: Sender<Conn>,
    workers: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Pool {
    pub fn start(shared: &Arc<Shared>) -> Result<Self, Error> {
        let (queue, jobs) = crossbeam_channel::bounded::<Conn>(shared.config.queue);
        let workers = (0..shared.config.workers)
            .map(|i| {
                let jobs = jobs.clone();
                let shared = Arc::clone(shared);
                std::thread::Builder::new()
                    .name(format!("pool-worker-{i}"))
                    .spawn(move || {
                        // Ends when the acceptor drops the sender and the queue is empty.
                        for conn in jobs {
                            session::run(conn, &shared);
                        }
                    })
                    .map_err(|e| Error::io("spawning a pool worker", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pool {
            queue,
            workers,
            shared: Arc::clone(shared),
        })
    }
}

impl Dispatch for Pool {
    /// With `--overflow reject`, a full queue rejects before admission. The acceptor is the only
    /// sender, so the queue cannot fill between this answer and `dispatch`.
    fn has_room(&self) -> bool {
        self.shared.config.overflow == Overflow::Block || !self.queue.is_full()
    }

    fn dispatch(&mut self, conn: Conn) {
        let result = match self.shared.config.overflow {
            Overflow::Block => self
                .queue
                .send(conn)
                .map_err(|e| TrySendError::Disconnected(e.0)),
            Overflow::Reject => self.queue.try_send(conn),
        };
        match result {
            Ok(()) => {}
            Err(TrySendError::Full(conn)) => {
                self.shared.counters.rejected.fetch_add(1, Relaxed);
                drop(conn);
            }
            Err(TrySendError::Disconnected(conn)) => {
                // Every worker is gone (cannot happen while sessions catch their panics).
                self.shared
                    .counters
                    .error(crate::core::stats::ErrorKind::Io);
                drop(conn);
            }
        }
    }

    fn finish(self: Box<Self>) {
        let Pool { queue, workers, .. } = *self;
        drop(queue);
        for worker in workers {
            if worker.join().is_err() {
                eprintln!("echo-server: a pool worker panicked outside a session");
            }
        }
    }
}
