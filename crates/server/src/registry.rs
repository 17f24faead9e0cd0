//! The set of open connections, so that a drain that runs out of time can close what is left.
//!
//! An accepted stream travels as a [`Conn`]: registered when it is admitted, deregistered (and
//! counted closed) when it is dropped, whichever strategy and thread drops it. Deregistration
//! happens before the descriptor is closed, so the drain never shuts down a reused descriptor.

use std::collections::HashMap;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::stats::Counters;

/// Open connections by id.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, RawFd>>,
}

impl Registry {
    /// Admits a freshly accepted stream: counts it open and remembers its descriptor.
    pub fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        accepted_at: Instant,
        counters: &Arc<Counters>,
    ) -> Conn {
        let id = self.next_id.fetch_add(1, Relaxed);
        self.lock().insert(id, stream.as_raw_fd());
        counters.admitted();
        Conn {
            stream,
            accepted_at,
            id,
            registry: Arc::clone(self),
            counters: Arc::clone(counters),
        }
    }

    /// Shuts down every open connection (both directions): blocked reads return 0 and blocked
    /// writes fail, so every session ends promptly. Used when the drain timeout expires.
    pub fn shutdown_all(&self) -> usize {
        let open = self.lock();
        for fd in open.values() {
            // SAFETY: the fd belongs to a live `Conn`: entries are removed (under this lock)
            // before their stream is closed, so it cannot have been reused.
            unsafe {
                libc::shutdown(*fd, libc::SHUT_RDWR);
            }
        }
        open.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, RawFd>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An admitted connection. Dropping it closes the stream and counts the connection closed.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    accepted_at: Instant,
    id: u64,
    registry: Arc<Registry>,
    counters: Arc<Counters>,
}

impl Conn {
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// When the connection was accepted: idle time runs from here (queue time included).
    pub fn accepted_at(&self) -> Instant {
        self.accepted_at
    }

    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        self.counters.closed();
        // `self.stream` is closed after this body returns, i.e. after deregistration.
    }
}
