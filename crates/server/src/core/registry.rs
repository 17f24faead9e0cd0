//! The set of open connections, so that a drain that runs out of time can close what is left.
//!
//! An accepted stream travels as a [`Conn`]: registered when it is admitted, deregistered (and
//! counted closed) when it ends, whichever strategy and thread ends it. Deregistration happens
//! before the descriptor is closed, so the drain never shuts down a reused descriptor.
//!
//! A session ends through [`Conn::finish`], which counts how it ended exactly once: a connection
//! the drain cut ([`Registry::shutdown_all`]) counts only as `drain_closed`, whatever its session
//! then saw (EOF after the cut, EPIPE on a blocked write); any other counts its own outcome.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::stats::{Counters, Outcome};

/// Open connections by id.
#[derive(Debug, Default)]
pub struct Registry {
    /// Log connections that end in an error or a timeout (`--verbose`).
    log_connections: bool,
    next_id: AtomicU64,
    /// Descriptor of each open connection, and whether the drain has shut it down already.
    open: Mutex<HashMap<u64, (RawFd, bool)>>,
}

impl Registry {
    pub fn new(log_connections: bool) -> Self {
        Registry {
            log_connections,
            ..Registry::default()
        }
    }

    /// Admits a freshly accepted stream: counts it open and remembers its descriptor.
    pub fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
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
                peer,
                ended: false,
            },
            stream,
            accepted_at,
        }
    }

    /// Shuts down every open connection (both directions): blocked reads return 0 and blocked
    /// writes fail, so every session ends promptly, and marks them cut: each is counted
    /// `drain_closed` when it ends, instead of its outcome. Used when the drain timeout expires
    /// (and again for connections admitted after that). Returns how many it shut down that were
    /// not shut down before.
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
/// End it with [`Conn::finish`]; dropping it unfinished (a connection that never reached a
/// session) deregisters it and counts it closed (and `drain_closed` if it was cut) but counts no
/// outcome: the dropper counts why.
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

    /// Ends the session: adds its byte counts, counts how it ended (`drain_closed` instead when
    /// the drain cut it), deregisters it and closes the stream.
    pub fn finish(mut self, outcome: Outcome, bytes_in: u64, bytes_out: u64) {
        let counters = Arc::clone(&self.registration.counters);
        counters.add_bytes(bytes_in, bytes_out);
        if self.registration.end() {
            return;
        }
        counters.count_outcome(outcome);
        if self.registration.registry.log_connections {
            let how = match outcome {
                Outcome::Completed => return,
                Outcome::TimedOut => "timed out".to_string(),
                Outcome::Failed(kind) => format!("failed ({} error)", kind.name()),
            };
            eprintln!(
                "echo-server: connection from {} {how} after {bytes_in} bytes in, {bytes_out} out",
                self.registration.peer
            );
        }
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
        let was_cut = registration
            .registry
            .lock()
            .remove(&registration.id)
            .is_some_and(|(_, cut)| cut);
        let stream = convert(stream)?;
        registration
            .registry
            .lock()
            .insert(registration.id, (stream.as_raw_fd(), was_cut));
        Ok(Conn {
            registration,
            stream,
            accepted_at,
        })
    }
}

/// Registration of one open connection; removed (and counted closed) when it ends, at the
/// latest on drop.
#[derive(Debug)]
struct Registration {
    id: u64,
    registry: Arc<Registry>,
    counters: Arc<Counters>,
    peer: SocketAddr,
    ended: bool,
}

impl Registration {
    /// Deregisters (once) and counts the connection closed, and `drain_closed` if the drain cut
    /// it. Returns whether it was cut (the first time; false after).
    fn end(&mut self) -> bool {
        if std::mem::replace(&mut self.ended, true) {
            return false;
        }
        let cut = self
            .registry
            .lock()
            .remove(&self.id)
            .is_some_and(|(_, cut)| cut);
        self.counters.closed();
        if cut {
            self.counters.drain_closed.fetch_add(1, Relaxed);
        }
        cut
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.end();
    }
}
