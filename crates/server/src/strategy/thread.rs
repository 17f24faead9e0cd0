//! `thread`: a new OS thread per connection. The simplest concurrency there is; what it costs
//! (a spawn per connection, a stack per open connection) is what the comparison shows.

use std::sync::Arc;

use crate::core::registry::Conn;
use crate::core::shared::{Dispatch, Shared};
use crate::core::stats::ErrorKind;
use crate::session::blocking as session;

/// Stack size of a session thread: a session needs little (its buffer is on the heap).
pub const SESSION_STACK_BYTES: usize = 64 * 1024;

pub struct PerConnection {
    shared: Arc<Shared>,
}

impl PerConnection {
    pub fn new(shared: &Arc<Shared>) -> Self {
        PerConnection {
            shared: Arc::clone(shared),
        }
    }
}

impl Dispatch for PerConnection {
    fn dispatch(&mut self, conn: Conn) {
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("session".into())
            .stack_size(SESSION_STACK_BYTES)
            .spawn(move || session::run(conn, &shared));
        if let Err(err) = spawned {
            // The closure (and with it the connection) was dropped: it is closed.
            self.shared.counters.error(ErrorKind::Io);
            eprintln!("echo-server: could not spawn a session thread: {err}");
        }
    }

    /// Session threads are detached; the server's drain waits for their connections to close.
    fn finish(self: Box<Self>) {}
}
