//! What the accept loop, the strategies and every session share: the [`Shared`] state (config,
//! counters, the registry of open connections, the stopping flag and the accept gate), the
//! [`Dispatch`] trait through which the accept loop hands admitted connections to a strategy, and
//! a rate-limited log for conditions that may repeat quickly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::config::Config;
use super::registry::{Conn, Registry};
use super::stats::Counters;

/// State shared by the acceptor, the strategy's threads and every session.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub counters: Arc<Counters>,
    pub registry: Arc<Registry>,
    stopping: AtomicBool,
    /// Held by the acceptor from `accept(2)` until the connection is admitted (registered) or
    /// rejected; false once shutdown closed it. Closing it waits for an admission in progress:
    /// after that no connection can join the registry, so the drain clock starts with every
    /// admitted connection in it.
    accept_gate: Mutex<bool>,
}

impl Shared {
    pub fn new(config: Config) -> Self {
        let log_connections = config.log_connections;
        Shared {
            config,
            counters: Arc::new(Counters::default()),
            registry: Arc::new(Registry::new(log_connections)),
            stopping: AtomicBool::new(false),
            accept_gate: Mutex::new(true),
        }
    }

    /// True once shutdown began: the acceptor stops admitting connections.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Shutdown begins: [`Shared::stopping`] is true from now on.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// The accept gate, held while one connection is admitted; `false` inside once closed.
    pub fn accept_gate(&self) -> MutexGuard<'_, bool> {
        self.accept_gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the accept gate, waiting for an admission in progress.
    pub fn close_accept_gate(&self) {
        *self.accept_gate() = false;
    }
}

/// Receives admitted connections from the accept loop: what a strategy implements.
pub trait Dispatch: Send {
    /// Serve (or queue) one admitted connection. Must not fail: a connection that cannot be
    /// served is dropped (closed) and counted.
    fn dispatch(&mut self, conn: Conn);
    /// Whether a new connection would be taken now; false makes the acceptor close it at once
    /// and count it `rejected` before admitting it (so it never counts as open). Only
    /// `pool --overflow reject` with a full queue says no.
    fn has_room(&self) -> bool {
        true
    }
    /// Called once when accepting stops: finish queued work and join owned threads. Sessions still
    /// open are ended by the server's drain (`Registry::shutdown_all`).
    fn finish(self: Box<Self>);
}

/// A log line for a condition that may repeat quickly (accept failures, a full io_uring): at
/// most one line a second; lines held back are counted into the next one.
#[derive(Debug, Default)]
pub struct RateLimitedLog {
    last: Option<Instant>,
    held_back: u64,
}

impl RateLimitedLog {
    pub fn log(&mut self, message: impl FnOnce() -> String) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            self.held_back += 1;
            return;
        }
        let held_back = std::mem::take(&mut self.held_back);
        if held_back > 0 {
            eprintln!("echo-server: {} ({held_back} more since)", message());
        } else {
            eprintln!("echo-server: {}", message());
        }
        self.last = Some(Instant::now());
    }
}
