//! echo-server: a TCP echo server with interchangeable concurrency strategies, built to be
//! measured. Every strategy serves the same echo session (read up to the buffer, write it all
//! back, until the peer ends its side) and reports the same counters, so that comparing
//! strategies compares designs, not bugs.
//!
//! ```no_run
//! use echo_server::{Config, Server, Strategy};
//! let server = Server::start(Config::loopback(Strategy::ReactorPool))?;
//! println!("listening on {}", server.local_addr());
//! let stats = server.shutdown();
//! println!("{} sessions completed", stats.completed);
//! # Ok::<(), echo_server::Error>(())
//! ```
//!
//! # Layers
//! Each layer imports only the layers below it (no import circle):
//!
//! 1. `core`: configuration, the start-up error, counters and outcomes, the registry of open
//!    connections, the state shared by everything above, and the `Dispatch` trait.
//! 2. `session`: the echo session on the core: `blocking` (one function for the blocking
//!    strategies) and `nonblocking` (one state machine for the readiness- and completion-driven
//!    ones).
//! 3. `strategy`: one file per strategy, each a `Dispatch` over a session.
//! 4. `server`: bind, the accept loop (admission, limits, descriptor exhaustion) and the drain.
//! 5. `cli`: the `echo-server` command line over [`Server`].
//!
//! Only the items re-exported here and [`cli`] are the library's API; the layers are
//! crate-private.

pub mod cli;
mod core;
mod server;
mod session;
mod strategy;

pub use crate::core::config::{Config, Overflow, Strategy};
pub use crate::core::error::Error;
pub use crate::core::stats::{STATS_SCHEMA, Stats};
pub use server::Server;
pub use strategy::SESSION_STACK_BYTES;
