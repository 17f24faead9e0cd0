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
    /// Descriptor of each open connection, and whether the drain has shut it down already.
    open: Mutex<HashMap<u64, (RawFd, bool)>>,
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
        self.lock().insert(id, (stream.as_raw_fd(), false));
        counters.admitted();
        Conn {
            registration: Registration {
                id,
                registry: Arc::clone(self),
                counters: Arc::clone(counters),
            },
            stream,
            accepted_at,
        }
    }

    /// Shuts down every open connection (both directions): blocked reads return 0 and blocked
    /// writes fail, so every session ends promptly. Used when the drain timeout expires (and
    /// again for connections admitted after that). Returns how many it shut down that were not
    /// shut down before.
    pub fn shutdown_all(&self) -> usize {
        let mut open = self.lock();
        let mut newly_cut = 0;
        for (fd, cut) in open.values_mut() {
            // SAFETY: the fd belongs to a live `Conn`: entries are removed (under this lock)
            // before their stream is closed, so it cannot have been reused.
            unsafe {
                libc::shutdown(*fd, libc::SHUT_RDWR);
            }
            if !*cut {
                *cut = true;
                newly_cut += 1;
            }
        }
        newly_cut
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (RawFd, bool)>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An admitted connection: the stream (std's blocking `TcpStream` as accepted, or the same socket
/// converted for a nonblocking strategy with [`Conn::map_stream`]) and its registration.
/// Dropping it deregisters the connection, counts it closed, then closes the stream.
#[derive(Debug)]
pub struct Conn<S = TcpStream> {
    // Field order matters: fields drop in declaration order, so the registration is removed
    // before the stream (and with it the descriptor) is closed.
    registration: Registration,
    stream: S,
    accepted_at: Instant,
}

impl<S> Conn<S> {
    pub fn stream(&self) -> &S {
        &self.stream
    }

    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// When the connection was accepted: idle time runs from here (queue time included).
    pub fn accepted_at(&self) -> Instant {
        self.accepted_at
    }

    pub fn id(&self) -> u64 {
        self.registration.id
    }

    /// Converts the stream (e.g. into a mio or tokio stream over the same socket), keeping the
    /// registration. On failure the connection is closed, counted closed, and the error returned.
    pub fn map_stream<T: AsRawFd>(
        self,
        convert: impl FnOnce(S) -> std::io::Result<T>,
    ) -> std::io::Result<Conn<T>> {
        let Conn {
            registration,
            stream,
            accepted_at,
        } = self;
        // Out of the drain's reach while the conversion may close the descriptor on failure.
        registration.registry.lock().remove(&registration.id);
        let stream = convert(stream)?;
        registration
            .registry
            .lock()
            .insert(registration.id, (stream.as_raw_fd(), false));
        Ok(Conn {
            registration,
            stream,
            accepted_at,
        })
    }
}

/// Registration of one open connection; removed (and counted closed) on drop.
#[derive(Debug)]
struct Registration {
    id: u64,
    registry: Arc<Registry>,
    counters: Arc<Counters>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        self.counters.closed();
    }
}
