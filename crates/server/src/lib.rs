//! echo-server: a TCP echo server with interchangeable concurrency strategies, built to be
//! measured. Every strategy serves the same echo session (read up to the buffer, write it all
//! back, until the peer ends its side) and reports the same counters, so that comparing
//! strategies compares designs, not bugs.
//!
//! ```no_run
//! use echo_server::{Config, Server, Strategy};
//! let server = Server::start(Config::loopback(Strategy::Pool))?;
//! println!("listening on {}", server.local_addr());
//! let stats = server.shutdown();
//! println!("{} sessions completed", stats.completed);
//! # Ok::<(), echo_server::Error>(())
//! ```

pub mod cli;
pub mod config;
pub mod nonblocking;
pub mod registry;
pub mod server;
pub mod session;
pub mod stats;
pub mod strategy;

pub use config::{Config, Overflow, Strategy};
pub use server::Server;
pub use stats::{STATS_SCHEMA, Stats};

use std::net::SocketAddr;

/// Errors starting a server. Per-connection failures are never errors: they are counted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(
        "address {0} is already in use (another server is listening there; pick another --addr or port 0)"
    )]
    AddrInUse(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: &'static str, source: std::io::Error) -> Self {
        Error::Io { context, source }
    }
}
