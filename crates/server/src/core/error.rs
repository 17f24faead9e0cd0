//! The one error type of the library: what can stop a server from starting. Per-connection
//! failures are never errors: they are counted ([`super::stats::ErrorKind`]).

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
