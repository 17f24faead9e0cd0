//! Concurrency strategies, on the sessions: how an admitted connection reaches the echo session.
//!
//! A strategy is one file implementing [`Dispatch`]; the accept loop (`server.rs`, the layer
//! above) is shared, so admission, limits and descriptor exhaustion behave the same for all of
//! them. Adding a strategy touches one new file, one `Strategy` variant and one match arm below.

use std::sync::Arc;

use crate::core::config::Strategy;
use crate::core::error::Error;
use crate::core::shared::{Dispatch, Shared};

mod async_tokio;
mod event_loop;
mod iterative;
mod live;
mod loops;
mod pool;
mod rayon;
mod reactor_pool;
mod thread;
#[cfg(all(target_os = "linux", feature = "uring"))]
mod uring;

pub use thread::SESSION_STACK_BYTES;

/// Starts the strategy's threads (if any) and returns its dispatcher.
pub fn start(shared: &Arc<Shared>) -> Result<Box<dyn Dispatch>, Error> {
    Ok(match shared.config.strategy {
        Strategy::Iterative => Box::new(iterative::Iterative::new(shared)),
        Strategy::Thread => Box::new(thread::PerConnection::new(shared)),
        Strategy::Pool => Box::new(pool::Pool::start(shared)?),
        Strategy::ReactorPool => Box::new(reactor_pool::start(shared)?),
        Strategy::Rayon => Box::new(rayon::Rayon::start(shared)?),
        Strategy::EventLoop => Box::new(event_loop::start(shared)?),
        Strategy::Async => Box::new(async_tokio::AsyncTokio::start(shared)?),
        #[cfg(all(target_os = "linux", feature = "uring"))]
        Strategy::Uring => Box::new(uring::start(shared)?),
    })
}
