//! What the strategies with poll loops share (`event-loop`, `reactor-pool`, `uring`): the
//! acceptor's side (a channel and a waker per loop thread, used in turn), the loop thread's side
//! of its channel ([`Incoming`]), and registering an admitted connection with a mio poller.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::net::TcpStream;
use mio::{Interest, Token, Waker};

use crate::core::registry::Conn;
use crate::core::shared::{Dispatch, Shared};
use crate::core::stats::{Counters, ErrorKind, Outcome};

/// How the acceptor wakes a loop thread that may be blocked waiting for I/O.
pub trait Wake: Send {
    fn wake(&self) -> io::Result<()>;
}

impl Wake for Arc<Waker> {
    fn wake(&self) -> io::Result<()> {
        Waker::wake(self)
    }
}

/// The acceptor's side of the loop strategies: a channel and a waker per loop thread, used in
/// turn.
pub struct LoopThreads<W: Wake> {
    loops: Vec<LoopHandle<W>>,
    next: usize,
    shared: Arc<Shared>,
}

/// One loop thread as the acceptor sees it.
pub struct LoopHandle<W> {
    pub incoming: Sender<Conn>,
    pub waker: W,
    pub thread: JoinHandle<()>,
}

impl<W: Wake> LoopThreads<W> {
    pub fn new(loops: Vec<LoopHandle<W>>, shared: &Arc<Shared>) -> Self {
        LoopThreads {
            loops,
            next: 0,
            shared: Arc::clone(shared),
        }
    }
}

impl<W: Wake> Dispatch for LoopThreads<W> {
    fn dispatch(&mut self, conn: Conn) {
        let target = &self.loops[self.next];
        self.next = (self.next + 1) % self.loops.len();
        if let Err(err) = target.incoming.send(conn) {
            // The loop is gone (it cannot panic outside a connection); the connection closes.
            drop(err.0);
            self.shared.counters.error(ErrorKind::Io);
            return;
        }
        if let Err(err) = target.waker.wake() {
            eprintln!("echo-server: could not wake a loop thread: {err}");
        }
    }

    /// Closes the channels (each loop ends once its connections are closed) and joins the loops.
    fn finish(self: Box<Self>) {
        let mut running = Vec::with_capacity(self.loops.len());
        for handle in self.loops {
            let LoopHandle {
                incoming,
                waker,
                thread,
            } = handle;
            drop(incoming);
            if let Err(err) = waker.wake() {
                eprintln!("echo-server: could not wake a loop thread: {err}");
            }
            // The waker lives until the loop ended: closing its descriptor could take the
            // wake-up out of the loop's poll set before the loop saw it.
            running.push((thread, waker));
        }
        for (thread, _waker) in running {
            if thread.join().is_err() {
                eprintln!("echo-server: a loop thread panicked outside a connection");
            }
        }
    }
}

/// A loop thread's side of its channel: connections from the acceptor, and whether the acceptor
/// still sends any (a loop ends once it stopped and the loop's connections are closed).
pub struct Incoming {
    receiver: Receiver<Conn>,
    accepting: bool,
}

impl Incoming {
    pub fn new(receiver: Receiver<Conn>) -> Self {
        Incoming {
            receiver,
            accepting: true,
        }
    }

    /// The next connection waiting, if any; notices when the acceptor has stopped.
    pub fn take(&mut self) -> Option<Conn> {
        match self.receiver.try_recv() {
            Ok(conn) => Some(conn),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.accepting = false;
                None
            }
        }
    }

    pub fn accepting(&self) -> bool {
        self.accepting
    }
}

/// Makes an admitted connection ready for a mio poller (nonblocking, no Nagle delay) and
/// registers it under `token` for both directions, edge-triggered: registered once, so no
/// `epoll_ctl` per message to switch interest. Registration reports readiness that already exists,
/// so bytes that arrived before it are not missed. On failure the connection is closed, counted,
/// and `None` returned.
pub fn register(
    conn: Conn,
    registry: &mio::Registry,
    token: Token,
    counters: &Counters,
) -> Option<Conn<TcpStream>> {
    let converted = conn.map_stream(|stream| {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(TcpStream::from_std(stream))
    });
    let mut conn = match converted {
        Ok(conn) => conn,
        Err(err) => {
            // The connection is already closed (and deregistered).
            counters.count_outcome(Outcome::Failed(ErrorKind::of(&err)));
            return None;
        }
    };
    let registered = registry.register(
        conn.stream_mut(),
        token,
        Interest::READABLE | Interest::WRITABLE,
    );
    if let Err(err) = registered {
        conn.finish(Outcome::Failed(ErrorKind::of(&err)), 0, 0);
        return None;
    }
    Some(conn)
}
