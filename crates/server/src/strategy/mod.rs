//! Concurrency strategies: how an admitted connection reaches the echo session.
//!
//! A strategy is one file implementing [`Dispatch`]; the accept loop (`server.rs`) is shared, so
//! admission, limits and descriptor exhaustion behave the same for all of them. Adding a strategy
//! touches one new file, one `Strategy` variant and one match arm below.

use std::sync::Arc;

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
        Strategy::EventLoop => Box::new(event_loop::EventLoop::start(shared)?),
        Strategy::Async => Box::new(async_tokio::AsyncTokio::start(shared)?),
        #[cfg(all(target_os = "linux", feature = "uring"))]
        Strategy::Uring => Box::new(uring::Uring::start(shared)?),
    })
}
