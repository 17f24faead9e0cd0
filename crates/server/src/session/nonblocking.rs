//! The echo session for the nonblocking strategies (`event-loop`, `async`, `uring`): one
//! per-connection state machine (clocks, counters, the pending-output rule), driven by whoever
//! learns that the socket can make progress: readiness (epoll or tokio, [`Session::advance`]) or
//! completions (io_uring, which reads into a kernel-chosen buffer and writes from it, see
//! `strategy/uring.rs`).
//!
//! The memory rule that lets one thread hold thousands of connections: a connection holds **no
//! buffer while it is idle**. Bytes are read into the thread's scratch buffer (one per thread,
//! `--buffer-size` bytes) and written back at once; only when the socket does not take all of them
//! does the rest move into a per-connection buffer ([`Pending`], at most `--buffer-size` bytes), and
//! reading pauses until that buffer is flushed (backpressure: a client that sends without reading
//! cannot grow the server's memory). That buffer is allocated the first time a write backs up and
//! kept for the connection's life, so the steady state allocates nothing per message, even for a
//! client that keeps stalling.
//!
//! Time: idle time runs from accept, the last byte received or the last echo completed (the
//! same rule as the blocking strategies); while output is pending the connection is not idle
//! (the client is the one not reading) and the write timeout runs instead, from the last write
//! that made progress. [`Session::deadline`] and [`Session::expired`] answer for a loop's deadline
//! scan or a timer, and [`Session::on_deadline`] says what an expired connection gets.
//!
//! Try it: `cargo run -p echo-server -- --addr 127.0.0.1:0 --strategy event-loop`.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::core::config::Config;
use crate::core::registry::Conn;
use crate::core::stats::{ErrorKind, Outcome};

/// How often a loop scans its connections' deadlines: a few times per timeout (at most 1/8
/// late), at least every 5 ms, at most every second.
pub fn scan_period(config: &Config) -> Duration {
    (config.idle_timeout.min(config.write_timeout) / 8)
        .clamp(Duration::from_millis(5), Duration::from_secs(1))
}

/// What the connection needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Waiting for the socket (readable, or writable while output is pending).
    Wait,
    /// Still readable but its fair share of this round is used: call again soon.
    Yield,
    /// The session is over; count the outcome and close.
    Close(Outcome),
}

/// Output the socket did not take yet: the only per-connection buffer, allocated the first time
/// a write backs up and kept (empty) for the connection's life after that, so a connection that
/// keeps stalling allocates once, not per partial write.
#[derive(Debug)]
pub struct Pending {
    bytes: Vec<u8>,
    written: usize,
}

impl Pending {
    /// The bytes still to write.
    pub fn rest(&self) -> &[u8] {
        &self.bytes[self.written..]
    }
}

/// The state of one connection: no buffer unless output is pending, counters, and the times the
/// deadlines run from.
#[derive(Debug)]
pub struct Session {
    pending: Option<Pending>,
    /// The buffer of the last pending output, emptied, for the next stash.
    spare: Vec<u8>,
    /// When the connection was accepted, the last byte arrived or the last echo completed:
    /// the idle clock.
    idle_since: Instant,
    /// When the pending output was stashed or last made progress: the write clock.
    last_written: Instant,
    /// The peer ended its side (EPOLLRDHUP seen): read to EOF, never stop at a short read.
    read_closed: bool,
    /// A completion-based write (io_uring) is in flight: the write clock runs, not the idle one.
    writing: bool,
    bytes_in: u64,
    bytes_out: u64,
}

impl Session {
    pub fn new(accepted_at: Instant) -> Self {
        Session {
            pending: None,
            spare: Vec::new(),
            idle_since: accepted_at,
            last_written: accepted_at,
            read_closed: false,
            writing: false,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// Whether output is waiting for the socket (reading is paused until it is written).
    pub fn pending(&self) -> Option<&Pending> {
        self.pending.as_ref()
    }

    /// Records that the peer has ended its side (from the poller), so that the next read goes on
    /// to end of file.
    pub fn mark_read_closed(&mut self) {
        self.read_closed = true;
    }

    /// Accounts for `data` just received: counts it, restarts the idle clock, applies the panic
    /// test hook and the calibration cost (both off unless a hidden flag asks).
    pub fn received(&mut self, data: &[u8], now: Instant, config: &Config) {
        self.bytes_in += data.len() as u64;
        self.idle_since = now;
        config.check_panic_trigger(data);
        config.spend_calibration_cost(data.len());
    }

    /// Accounts for `n` bytes written back.
    pub fn sent(&mut self, n: usize, now: Instant) {
        self.bytes_out += n as u64;
        if n > 0 {
            self.last_written = now;
        }
    }

    /// Keeps the bytes the socket did not take; reading pauses until they are written.
    pub fn stash(&mut self, rest: &[u8], now: Instant) {
        debug_assert!(self.pending.is_none(), "stash while output is pending");
        let mut bytes = std::mem::take(&mut self.spare);
        bytes.clear();
        bytes.extend_from_slice(rest);
        self.pending = Some(Pending { bytes, written: 0 });
        self.last_written = now;
    }

    /// Accounts for `n` bytes of the pending output written; frees the buffer once all are.
    /// Returns true when nothing is pending any more.
    pub fn pending_sent(&mut self, n: usize, now: Instant) -> bool {
        self.sent(n, now);
        match &mut self.pending {
            Some(pending) => {
                pending.written += n;
                if pending.written >= pending.bytes.len() {
                    if let Some(done) = self.pending.take() {
                        self.spare = done.bytes;
                    }
                    // The echo completed: the idle clock restarts (a stall longer than the idle
                    // timeout must not close the connection the moment it recovers).
                    self.idle_since = now;
                    true
                } else {
                    false
                }
            }
            None => true,
        }
    }

    /// For completion-based I/O (io_uring): a write of received bytes was submitted; until
    /// [`Session::write_done`], the write clock runs instead of the idle one.
    pub fn write_started(&mut self, now: Instant) {
        self.writing = true;
        self.last_written = now;
    }

    /// The submitted write finished (all bytes written): the echo completed, so the idle clock
    /// restarts.
    pub fn write_done(&mut self, now: Instant) {
        self.writing = false;
        self.idle_since = now;
    }

    /// When the connection's deadline passes: the write timeout after the last progress while
    /// output is pending, otherwise the idle timeout after the idle clock's start.
    /// (A timeout too long for the clock, e.g. `--idle-timeout 1000years`, means a century.)
    pub fn deadline(&self, config: &Config) -> Instant {
        let (since, timeout) = self.clock(config);
        since
            .checked_add(timeout)
            .unwrap_or_else(|| since + Duration::from_secs(100 * 365 * 24 * 3600))
    }

    /// Whether the deadline ([`Session::deadline`]) has passed at `now`.
    pub fn expired(&self, now: Instant, config: &Config) -> bool {
        let (since, timeout) = self.clock(config);
        now.saturating_duration_since(since) >= timeout
    }

    /// The running clock: when it started, and the timeout it runs to.
    fn clock(&self, config: &Config) -> (Instant, Duration) {
        if self.pending.is_some() || self.writing {
            (self.last_written, config.write_timeout)
        } else {
            (self.idle_since, config.idle_timeout)
        }
    }

    /// What to do with a connection found [`Session::expired`] (by a deadline scan or a timer):
    /// one whose output is pending made no progress for the write timeout and ends; an idle one
    /// is served first, since bytes already waiting mean it is not idle, and ends only if it is
    /// still expired after that. Returns what [`Session::advance`] would, or `Close(TimedOut)`.
    pub fn on_deadline<S>(
        &mut self,
        stream: S,
        scratch: &mut [u8],
        now: Instant,
        config: &Config,
    ) -> Step
    where
        S: Read + Write + Copy,
    {
        if self.pending.is_none() {
            let step = self.advance(stream, scratch, now, config);
            if step != Step::Wait || !self.expired(now, config) {
                return step;
            }
        }
        Step::Close(Outcome::TimedOut)
    }

    /// Readiness-driven progress (epoll): flushes pending output, then reads into `scratch` and
    /// echoes at once, until the socket has nothing more, output backs up, or the turn is used.
    /// The socket must be nonblocking.
    pub fn advance<S>(
        &mut self,
        mut stream: S,
        scratch: &mut [u8],
        now: Instant,
        config: &Config,
    ) -> Step
    where
        S: Read + Write + Copy,
    {
        if self.pending.is_some() {
            match self.flush(stream, now) {
                Ok(true) => {}
                Ok(false) => return Step::Wait,
                Err(err) => return Step::Close(failed(&err)),
            }
        }
        for _ in 0..config.reads_per_turn {
            let n = match stream.read(scratch) {
                Ok(0) => return Step::Close(Outcome::Completed),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Step::Close(failed(&err)),
            };
            let data = &scratch[..n];
            self.received(data, now, config);
            let (written, result) = write_some(stream, data);
            self.sent(written, now);
            if let Err(err) = result {
                return Step::Close(failed(&err));
            }
            if written < n {
                self.stash(&data[written..], now);
                return Step::Wait;
            }
            // A short read drained the socket: new bytes (or the peer's FIN, unless it was
            // already announced) bring a new edge, so the next read would only say EAGAIN.
            if n < scratch.len() && !self.read_closed {
                return Step::Wait;
            }
        }
        Step::Yield
    }

    /// Writes pending output; true when all of it is written.
    fn flush<S: Write>(&mut self, stream: S, now: Instant) -> io::Result<bool> {
        let Some(pending) = &self.pending else {
            return Ok(true);
        };
        let (written, result) = write_some(stream, pending.rest());
        let all_written = self.pending_sent(written, now);
        result.map(|()| all_written)
    }

    /// Ends the connection: its byte counts and how it ended go to the counters
    /// ([`Conn::finish`]), then the socket closes.
    pub fn finish<S>(&self, conn: Conn<S>, outcome: Outcome) {
        conn.finish(outcome, self.bytes_in, self.bytes_out);
    }
}

/// Writes as much of `data` as the socket takes now. Returns how many bytes were written (also
/// when a write then failed: they reached the peer's side and count as sent) and whether it
/// ended in an error; `(n < data.len(), Ok)` means the socket is full.
pub fn write_some<S: Write>(mut stream: S, data: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while written < data.len() {
        match stream.write(&data[written..]) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return (written, Err(err)),
        }
    }
    (written, Ok(()))
}

/// The outcome of a failed read or write.
pub fn failed(err: &io::Error) -> Outcome {
    Outcome::Failed(ErrorKind::of(err))
}

#[cfg(test)]
mod tests {
    //! The state machine without sockets: a scripted stream stands in for the kernel.

    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;
    use std::time::Duration;

    use super::*;

    /// Reads come from a script (`None` = EAGAIN); writes take at most `room` bytes, then EAGAIN.
    #[derive(Default)]
    struct Scripted {
        reads: RefCell<VecDeque<Option<Vec<u8>>>>,
        read_calls: Cell<usize>,
        room: Cell<usize>,
        /// Once `room` is used up, writes fail with a reset instead of EAGAIN.
        reset_when_full: Cell<bool>,
        written: RefCell<Vec<u8>>,
    }

    impl Scripted {
        fn new(reads: Vec<Option<&[u8]>>, room: usize) -> Self {
            Scripted {
                reads: RefCell::new(reads.into_iter().map(|r| r.map(<[u8]>::to_vec)).collect()),
                room: Cell::new(room),
                ..Scripted::default()
            }
        }
    }

    impl Read for &Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.read_calls.set(self.read_calls.get() + 1);
            match self.reads.borrow_mut().pop_front() {
                Some(Some(data)) => {
                    buf[..data.len()].copy_from_slice(&data);
                    Ok(data.len())
                }
                Some(None) | None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    impl Write for &Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room.get());
            if n == 0 && self.reset_when_full.get() {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.room.set(self.room.get() - n);
            self.written.borrow_mut().extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn config() -> Config {
        Config {
            buffer_size: 8,
            idle_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(3),
            ..Config::default()
        }
    }

    #[test]
    fn a_short_read_is_echoed_and_ends_the_turn_without_another_read() {
        let stream = Scripted::new(vec![Some(b"abc"), Some(b"never read")], 100);
        let now = Instant::now();
        let mut session = Session::new(now);
        let step = session.advance(&stream, &mut [0u8; 8], now, &config());
        assert_eq!(step, Step::Wait);
        assert_eq!(stream.read_calls.get(), 1);
        assert_eq!(*stream.written.borrow(), b"abc");
        assert!(session.pending().is_none());
    }

    #[test]
    fn after_the_peer_closed_it_reads_on_to_end_of_file() {
        let stream = Scripted::new(vec![Some(b"abc"), Some(b"")], 100);
        let now = Instant::now();
        let mut session = Session::new(now);
        session.mark_read_closed();
        let step = session.advance(&stream, &mut [0u8; 8], now, &config());
        assert_eq!(step, Step::Close(Outcome::Completed));
        assert_eq!(*stream.written.borrow(), b"abc");
    }

    #[test]
    fn a_partial_write_keeps_the_rest_pauses_reading_and_resumes_once_flushed() {
        let stream = Scripted::new(vec![Some(b"12345678"), Some(b"9")], 5);
        let now = Instant::now();
        let mut session = Session::new(now);
        let mut scratch = [0u8; 8];
        assert_eq!(
            session.advance(&stream, &mut scratch, now, &config()),
            Step::Wait
        );
        assert_eq!(session.pending().map(Pending::rest), Some(&b"678"[..]));
        assert_eq!(
            stream.read_calls.get(),
            1,
            "reading paused while output is pending"
        );

        // Still no room: nothing read, nothing lost.
        stream.room.set(0);
        assert_eq!(
            session.advance(&stream, &mut scratch, now, &config()),
            Step::Wait
        );
        assert_eq!(stream.read_calls.get(), 1);

        stream.room.set(100);
        assert_eq!(
            session.advance(&stream, &mut scratch, now, &config()),
            Step::Wait
        );
        assert!(session.pending().is_none(), "nothing pending once flushed");
        assert_eq!(*stream.written.borrow(), b"123456789");
        assert_eq!((session.bytes_in, session.bytes_out), (9, 9));
    }

    #[test]
    fn the_idle_clock_runs_from_the_last_byte_and_the_write_clock_while_output_is_pending() {
        let config = config();
        let start = Instant::now();
        let mut session = Session::new(start);
        assert!(!session.expired(start + Duration::from_secs(9), &config));
        assert!(session.expired(start + Duration::from_secs(10), &config));

        let later = start + Duration::from_secs(8);
        session.received(b"x", later, &config);
        assert!(!session.expired(start + Duration::from_secs(17), &config));

        session.stash(b"rest", later);
        assert!(!session.expired(later + Duration::from_secs(2), &config));
        assert!(
            session.expired(later + Duration::from_secs(3), &config),
            "write timeout while output is pending"
        );
        assert!(session.pending_sent(4, later + Duration::from_secs(2)));
        assert!(!session.expired(later + Duration::from_secs(9), &config));
    }

    #[test]
    fn the_idle_clock_restarts_when_a_stalled_echo_completes() {
        let config = config(); // idle 10 s, write 3 s
        let start = Instant::now();
        let mut session = Session::new(start);
        session.received(b"x", start, &config);
        session.stash(b"rest", start);
        // The client takes a byte every 2.5 s: the write clock never runs out, but the stall
        // lasts longer than the idle timeout.
        let mut now = start;
        for _ in 0..3 {
            now += Duration::from_millis(2500);
            assert!(!session.expired(now, &config));
            assert!(!session.pending_sent(1, now));
        }
        now += Duration::from_millis(2500);
        assert!(!session.expired(now, &config));
        now += Duration::from_millis(1000);
        assert!(session.pending_sent(1, now), "all pending output written");
        assert!(
            !session.expired(now + Duration::from_millis(10), &config),
            "closed as idle right after the stalled echo completed"
        );
        assert!(session.expired(now + Duration::from_secs(10), &config));

        // The same for a completion-based write (io_uring).
        let mut session = Session::new(start);
        session.received(b"x", start, &config);
        session.write_started(start);
        let done = start + Duration::from_secs(12);
        session.sent(1, start + Duration::from_secs(2)); // slow, but progressing
        session.write_done(done);
        assert!(!session.expired(done + Duration::from_millis(10), &config));
        assert!(session.expired(done + Duration::from_secs(10), &config));
    }

    #[test]
    fn the_pending_buffer_is_reused_across_stalls() {
        let stream = Scripted::new(vec![Some(b"12345678"), Some(b"abcdefgh")], 5);
        let now = Instant::now();
        let mut session = Session::new(now);
        let mut scratch = [0u8; 8];
        session.advance(&stream, &mut scratch, now, &config());
        let first = session.pending().map(|p| p.bytes.as_ptr());
        assert!(first.is_some());
        stream.room.set(8); // flushes "678", then echoes 5 of "abcdefgh"
        session.advance(&stream, &mut scratch, now, &config());
        assert_eq!(session.pending().map(Pending::rest), Some(&b"fgh"[..]));
        assert_eq!(session.pending().map(|p| p.bytes.as_ptr()), first);
    }

    #[test]
    fn bytes_written_before_a_write_fails_are_counted() {
        // A write that fails part-way: 5 of 8 bytes written at once, then a reset.
        let stream = Scripted::new(vec![Some(b"12345678")], 5);
        stream.reset_when_full.set(true);
        let now = Instant::now();
        let mut session = Session::new(now);
        let step = session.advance(&stream, &mut [0u8; 8], now, &config());
        assert_eq!(step, Step::Close(Outcome::Failed(ErrorKind::Reset)));
        assert_eq!((session.bytes_in, session.bytes_out), (8, 5));

        // The same when flushing pending output: 3 stashed, 1 more written, then a reset.
        let stream = Scripted::new(vec![Some(b"12345678")], 5);
        let mut session = Session::new(now);
        assert_eq!(
            session.advance(&stream, &mut [0u8; 8], now, &config()),
            Step::Wait
        );
        stream.room.set(1);
        stream.reset_when_full.set(true);
        let step = session.advance(&stream, &mut [0u8; 8], now, &config());
        assert_eq!(step, Step::Close(Outcome::Failed(ErrorKind::Reset)));
        assert_eq!((session.bytes_in, session.bytes_out), (8, 6));
    }

    #[test]
    fn a_busy_connection_yields_after_its_turn() {
        let full: &[u8] = b"12345678";
        let config = Config {
            reads_per_turn: 3,
            ..config()
        };
        let stream = Scripted::new(vec![Some(full); 4], usize::MAX);
        let now = Instant::now();
        let mut session = Session::new(now);
        let step = session.advance(&stream, &mut [0u8; 8], now, &config);
        assert_eq!(step, Step::Yield);
        assert_eq!(stream.read_calls.get(), 3);
    }
}
