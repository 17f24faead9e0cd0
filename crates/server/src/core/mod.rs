//! The core: what every other layer stands on, importing nothing above it. Configuration
//! ([`config`]), the error of starting a server ([`error`]), counters and how sessions end
//! ([`stats`]), the registry of open connections ([`registry`]), and the state shared by the
//! accept loop, the strategies and the sessions, with the [`shared::Dispatch`] trait that
//! strategies implement ([`shared`]).

pub mod config;
pub mod error;
pub mod registry;
pub mod shared;
pub mod stats;
