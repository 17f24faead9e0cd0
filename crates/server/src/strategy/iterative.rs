//! `iterative`: the seed's loop. The accepting thread serves each connection to the end before it
//! accepts the next, so exactly one client is served at a time: the baseline every other strategy
//! is measured against.

use std::sync::Arc;

use crate::core::registry::Conn;
use crate::core::shared::{Dispatch, Shared};
use crate::session::blocking as session;

pub struct Iterative {
    shared: Arc<Shared>,
}

impl Iterative {
    pub fn new(shared: &Arc<Shared>) -> Self {
        Iterative {
            shared: Arc::clone(shared),
        }
    }
}

impl Dispatch for Iterative {
    fn dispatch(&mut self, conn: Conn) {
        session::run(conn, &self.shared);
    }

    fn finish(self: Box<Self>) {}
}
