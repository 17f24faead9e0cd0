//! Concurrency strategies: how an admitted connection reaches the echo session.
//!
//! A strategy is one file implementing [`Dispatch`]; the accept loop (`server.rs`) is shared, so
//! admission, limits and descriptor exhaustion behave the same for all of them. Adding a strategy
//! touches one new file, one `Strategy` variant and one match arm below.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Error;
use crate::config::Strategy;
use crate::registry::Conn;
use crate::server::Shared;

mod async_tokio;
mod event_loop;
mod iterative;
mod pool;
mod rayon;
mod thread;

pub use thread::SESSION_STACK_BYTES;
#[cfg(all(target_os = "linux", feature = "uring"))]
mod uring;

/// Receives admitted connections from the accept loop.
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

/// Starts the strategy's threads (if any) and returns its dispatcher.
pub fn start(shared: &Arc<Shared>) -> Result<Box<dyn Dispatch>, Error> {
    Ok(match shared.config.strategy {
        Strategy::Iterative => Box::new(iterative::Iterative::new(shared)),
        Strategy::Thread => Box::new(thread::PerConnection::new(shared)),
        Strategy::Pool => Box::new(pool::Pool::start(shared)?),
        Strategy::Rayon => Box::new(rayon::Rayon::start(shared)?),
        Strategy::EventLoop => Box::new(event_loop::start(shared)?),
        Strategy::Async => Box::new(async_tokio::AsyncTokio::start(shared)?),
        #[cfg(all(target_os = "linux", feature = "uring"))]
        Strategy::Uring => Box::new(uring::start(shared)?),
    })
}

/// Sessions spawned and not yet ended (queued or running), for strategies that hand sessions to
/// a pool they do not join one by one (`rayon`, `async`), so `finish` can wait for them.
#[derive(Debug, Default)]
pub(crate) struct LiveSessions(Arc<AtomicUsize>);

impl LiveSessions {
    /// Counts one session until the returned guard is dropped (when its job or task ends, or is
    /// dropped unrun).
    pub(crate) fn guard(&self) -> LiveGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        LiveGuard(Arc::clone(&self.0))
    }

    /// Waits until no session is live, or the drain timeout plus a margin has passed (the
    /// server's drain cuts sessions that outlive it, so they end well before).
    pub(crate) fn wait_for_none(&self, shared: &Shared) {
        let limit = Instant::now() + shared.config.drain_timeout + Duration::from_secs(10);
        while self.0.load(Ordering::Acquire) > 0 && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One live session; see [`LiveSessions::guard`].
pub(crate) struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
