//! The byte stream of one connection: which message and offset each byte belongs to, the
//! payload to write next, and the verification of what comes back. Pure.
//!
//! Messages all have the same size, so two counters place every byte without any framing:
//! `send_pos` (bytes written) and `recv_pos` (bytes verified); stream byte `p` is byte `p % size`
//! of message `p / size` (messages count from 0 on each connection, warm-up included). Messages
//! issued but not yet verified in full wait in `in_flight` (front = the one being received), each
//! with its intended send time and the time its first byte was written.
//!
//! What the bytes are is [`crate::payload`]'s business: every byte is a pure function of
//! (connection id, message, offset), so nothing that was sent is kept. This module asks for it
//! through two calls only: `payload::segment` (the next bytes as slices of the payload's table,
//! which the writer sends as they are, or copies for small messages) and
//! `payload::verify_message`.

use super::record::ErrorAt;
use crate::errors::ErrorKind;
use crate::payload::{self, Mismatch};
use std::collections::VecDeque;

/// A message issued and not yet verified in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    /// Intended send time: latency counts from here.
    pub intended_ns: u64,
    /// When its first byte was written; 0 until then.
    pub sent_ns: u64,
    /// Intended inside (or after) the warm-up: recorded.
    pub measured: bool,
}

/// What the echo got wrong, located exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// An echoed byte differs from the byte sent (the first one, within `message`).
    Corrupt { message: u64, mismatch: Mismatch },
    /// More bytes came back than were sent (`message`/`offset`: the first byte never sent).
    Extra {
        message: u64,
        offset: u64,
        extra: usize,
        first: u8,
    },
    /// Bytes came back after every echo was verified and our side was shut down.
    ExtraAfterEnd {
        message: u64,
        bytes: usize,
        first: u8,
    },
    /// The server closed the connection with `owed` messages not echoed in full.
    Closed {
        message: u64,
        offset: u64,
        owed: usize,
    },
}

impl Fault {
    /// The error kind it counts as.
    pub fn kind(&self) -> ErrorKind {
        match *self {
            Fault::Corrupt { .. } | Fault::Extra { .. } | Fault::ExtraAfterEnd { .. } => {
                ErrorKind::Corrupt
            }
            Fault::Closed { offset: 0, .. } => ErrorKind::Eof,
            Fault::Closed { .. } => ErrorKind::Short,
        }
    }

    /// Where it happened, for the error sample.
    pub fn at(&self) -> ErrorAt {
        match *self {
            Fault::Corrupt { message, mismatch } => ErrorAt {
                message: Some(message),
                offset: Some(mismatch.offset),
                bytes: Some((mismatch.expected, mismatch.got)),
            },
            Fault::Extra {
                message, offset, ..
            }
            | Fault::Closed {
                message, offset, ..
            } => ErrorAt::byte(message, offset),
            Fault::ExtraAfterEnd { message, .. } => ErrorAt::byte(message, 0),
        }
    }

    /// The sample's text, for connection `connection`.
    pub fn describe(&self, connection: u64) -> String {
        match *self {
            Fault::Corrupt { message, mismatch } => format!(
                "connection {connection} message {message} byte {}: sent {:#04x}, got {:#04x}",
                mismatch.offset, mismatch.expected, mismatch.got
            ),
            Fault::Extra { extra, first, .. } => {
                format!("{extra} more byte(s) came back than were sent (first: {first:#04x})")
            }
            Fault::ExtraAfterEnd { bytes, first, .. } => format!(
                "extra bytes after the last echo: {bytes} byte(s) came back after every message \
                 was verified (first: {first:#04x})"
            ),
            Fault::Closed { offset, owed, .. } => {
                let what = if offset == 0 {
                    "the server closed the connection"
                } else {
                    "the server closed the connection in the middle of a message"
                };
                format!("{what} ({owed} message(s) still owed)")
            }
        }
    }
}

/// The stream of one connection: positions, messages in flight, payload.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    size: u64,
    /// The connection id in payloads and error reports.
    connection: u64,
    send_pos: u64,
    recv_pos: u64,
    /// Messages issued on this connection (their bytes are due to be written).
    issued: u64,
    in_flight: VecDeque<Pending>,
}

impl Stream {
    /// A stream of `size_bytes` messages for connection id `connection`, with room for
    /// `capacity` messages in flight before it grows.
    pub fn new(size_bytes: u64, connection: u64, capacity: usize) -> Stream {
        Stream {
            size: size_bytes,
            connection,
            send_pos: 0,
            recv_pos: 0,
            issued: 0,
            in_flight: VecDeque::with_capacity(capacity),
        }
    }

    /// A new connection with id `connection`: message 0 next, nothing in flight.
    pub fn restart(&mut self, connection: u64) {
        self.connection = connection;
        self.send_pos = 0;
        self.recv_pos = 0;
        self.issued = 0;
        self.in_flight.clear();
    }

    /// The connection id.
    #[inline]
    pub fn connection(&self) -> u64 {
        self.connection
    }

    /// Messages issued on this connection.
    #[inline]
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// Messages issued and not yet verified in full.
    #[inline]
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The oldest message in flight (the one being received).
    #[inline]
    pub fn front(&self) -> Option<&Pending> {
        self.in_flight.front()
    }

    /// Issues a message: its bytes are due to be written.
    #[inline]
    pub fn issue(&mut self, p: Pending) {
        self.in_flight.push_back(p);
        self.issued += 1;
    }

    /// Forgets the messages in flight (the connection closed without their echoes).
    pub fn abandon(&mut self) {
        self.in_flight.clear();
    }

    /// The message the next byte received belongs to.
    pub fn recv_message(&self) -> u64 {
        self.recv_pos / self.size
    }

    /// The offset within [`Self::recv_message`] of the next byte received.
    pub fn recv_offset(&self) -> u64 {
        self.recv_pos % self.size
    }

    /// The message the next byte written belongs to.
    pub fn send_message(&self) -> u64 {
        self.send_pos / self.size
    }

    /// Bytes per message.
    #[inline]
    pub fn message_bytes(&self) -> u64 {
        self.size
    }

    /// The next bytes to write, as slices of the payload table passed to `each` in stream order
    /// (as many as are due, at most `max_bytes`, until `each` returns false: it has no room for
    /// more); their total, 0 when every issued message is written. A slice ends at a message's
    /// end or at a block of the table, so a message of up to one block is one slice.
    #[inline]
    pub fn unsent_segments(
        &self,
        max_bytes: usize,
        mut each: impl FnMut(&'static [u8]) -> bool,
    ) -> usize {
        let size = self.size;
        let target = self.issued * size;
        let mut len = 0usize;
        let mut pos = self.send_pos;
        while len < max_bytes && pos < target {
            let msg = pos / size;
            let off = pos % size;
            let n = ((size - off) as usize)
                .min(max_bytes - len)
                .min((target - pos) as usize);
            let segment = payload::segment(self.connection, msg, off, n);
            len += segment.len();
            pos += segment.len() as u64;
            if !each(segment) {
                break;
            }
        }
        len
    }

    /// Fills `out` with the next bytes to write (as many as are due and fit); their count, 0 when
    /// every issued message is written.
    #[inline]
    pub fn fill_unsent(&self, out: &mut [u8]) -> usize {
        let mut len = 0usize;
        self.unsent_segments(out.len(), |segment| {
            out[len..len + segment.len()].copy_from_slice(segment);
            len += segment.len();
            true
        })
    }

    /// `written` more bytes went out at `now`: every message whose first byte was among them is
    /// stamped as sent and passed to `first_byte_sent`.
    #[inline]
    pub fn wrote(&mut self, written: usize, now: u64, mut first_byte_sent: impl FnMut(&Pending)) {
        let size = self.size;
        let start = self.send_pos;
        let end = start + written as u64;
        // Messages whose first byte is in [start, end) have just been sent.
        let base_msg = self.recv_pos / size;
        let mut msg = start.div_ceil(size);
        while msg * size < end {
            if let Some(p) = self.in_flight.get_mut((msg - base_msg) as usize) {
                p.sent_ns = now;
                first_byte_sent(p);
            }
            msg += 1;
        }
        self.send_pos = end;
    }

    /// Verifies `data`, the next bytes received, against the payload. Each message verified in
    /// full leaves the stream and goes to `completed` with the number of messages that were in
    /// flight before it left. Stops at the first wrong byte, or at bytes beyond what was sent
    /// (after completing the messages before them).
    #[inline]
    pub fn verify(
        &mut self,
        data: &[u8],
        mut completed: impl FnMut(Pending, usize),
    ) -> Result<(), Fault> {
        let size = self.size;
        let n = data.len();
        let owed = (self.send_pos - self.recv_pos) as usize;
        let checked = n.min(owed);
        let mut i = 0usize;
        while i < checked {
            let msg = self.recv_pos / size;
            let off = self.recv_pos % size;
            let seg = ((size - off) as usize).min(checked - i);
            if let Err(mismatch) =
                payload::verify_message(self.connection, msg, off, &data[i..i + seg])
            {
                return Err(Fault::Corrupt {
                    message: msg,
                    mismatch,
                });
            }
            self.recv_pos += seg as u64;
            i += seg;
            if off + seg as u64 == size {
                let in_flight = self.in_flight.len();
                if let Some(p) = self.in_flight.pop_front() {
                    completed(p, in_flight);
                }
            }
        }
        if n > owed {
            return Err(Fault::Extra {
                message: self.send_pos / size,
                offset: self.send_pos % size,
                extra: n - owed,
                first: data[checked],
            });
        }
        Ok(())
    }

    /// The server closed the connection here (end of file with messages owed).
    pub fn closed_by_server(&self) -> Fault {
        Fault::Closed {
            message: self.recv_message(),
            offset: self.recv_offset(),
            owed: self.in_flight.len(),
        }
    }

    /// `data` came back after every echo was verified and our write side was shut down.
    pub fn extra_after_end(&self, data: &[u8]) -> Fault {
        Fault::ExtraAfterEnd {
            message: self.send_message(),
            bytes: data.len(),
            first: data.first().copied().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 10;

    fn pending(intended_ns: u64) -> Pending {
        Pending {
            intended_ns,
            sent_ns: 0,
            measured: true,
        }
    }

    /// Connection 7 with `messages` issued and written in full; the bytes on the wire.
    fn written(messages: u64) -> (Stream, Vec<u8>) {
        let mut s = Stream::new(SIZE, 7, 4);
        for m in 0..messages {
            s.issue(pending(m));
        }
        let mut wire = vec![0u8; (messages * SIZE) as usize];
        let n = s.fill_unsent(&mut wire);
        assert_eq!(n, wire.len());
        s.wrote(n, 1, |_| {});
        (s, wire)
    }

    #[test]
    fn writes_name_the_messages_whose_first_byte_went_out() {
        let mut s = Stream::new(SIZE, 7, 4);
        for m in 0..3 {
            s.issue(pending(m));
        }
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        // Writes of 7, 16 and 7 bytes: messages start at bytes 0, 10 and 20.
        for (cap, now) in [(7usize, 100u64), (16, 200), (64, 300)] {
            let mut buf = vec![0u8; cap];
            let n = s.fill_unsent(&mut buf);
            wire.extend_from_slice(&buf[..n]);
            s.wrote(n, now, |p| sent.push((p.intended_ns, p.sent_ns)));
        }
        assert_eq!(sent, [(0, 100), (1, 200), (2, 200)]);
        assert_eq!(wire.len(), 30);
        assert_eq!(
            s.fill_unsent(&mut [0u8; 8]),
            0,
            "everything issued is written"
        );
        for m in 0..3u64 {
            let mut expected = [0u8; SIZE as usize];
            payload::fill_message(7, m, 0, &mut expected);
            let at = (m * SIZE) as usize;
            assert_eq!(wire[at..at + SIZE as usize], expected, "message {m}");
        }
    }

    #[test]
    fn segments_are_the_bytes_fill_copies_cut_at_messages_and_blocks() {
        // Messages of one block and a half: each is two slices of the table.
        let size = (payload::BLOCK_BYTES + payload::BLOCK_BYTES / 2) as u64;
        let mut s = Stream::new(size, 3, 4);
        for m in 0..3 {
            s.issue(pending(m));
        }
        let mut copied = vec![0u8; 3 * size as usize];
        assert_eq!(s.fill_unsent(&mut copied), copied.len());
        let mut joined = Vec::new();
        let mut lens = Vec::new();
        let total = s.unsent_segments(usize::MAX, |seg| {
            joined.extend_from_slice(seg);
            lens.push(seg.len());
            true
        });
        assert_eq!(total, copied.len());
        assert_eq!(joined, copied);
        let (block, half) = (payload::BLOCK_BYTES, payload::BLOCK_BYTES / 2);
        assert_eq!(lens, [block, half, block, half, block, half]);

        // A byte cap, a stop after the first slice, and the rest after a partial write.
        assert_eq!(s.unsent_segments(100, |_| true), 100);
        assert_eq!(s.unsent_segments(usize::MAX, |_| false), block);
        s.wrote(block + 10, 1, |_| {});
        let mut rest = Vec::new();
        let total = s.unsent_segments(usize::MAX, |seg| {
            rest.extend_from_slice(seg);
            true
        });
        assert_eq!(total, copied.len() - block - 10);
        assert_eq!(rest, copied[block + 10..]);
        s.wrote(total, 2, |_| {});
        assert_eq!(s.unsent_segments(usize::MAX, |_| true), 0);
    }

    #[test]
    fn echoes_split_anywhere_complete_each_message_once_in_order() {
        let (mut s, wire) = written(3);
        let mut done = Vec::new();
        let parts = [
            &wire[..3],
            &wire[3..17],
            &wire[17..20],
            &wire[20..29],
            &wire[29..],
        ];
        for (read, part) in parts.into_iter().enumerate() {
            s.verify(part, |p, in_flight| {
                done.push((read, p.intended_ns, in_flight))
            })
            .unwrap();
        }
        // Each completes with the read that brought its last byte: reads 1, 2 and 4.
        assert_eq!(done, [(1, 0, 3), (2, 1, 2), (4, 2, 1)]);
        assert_eq!(
            (s.in_flight(), s.recv_message(), s.recv_offset()),
            (0, 3, 0)
        );
    }

    #[test]
    fn a_corrupt_byte_is_located_at_its_connection_message_and_offset() {
        for split in [0usize, 5, 20, 22, 23, 24] {
            let (mut s, mut wire) = written(3);
            let sent = wire[23];
            wire[23] ^= 0x40;
            let mut done = 0;
            let mut result = s.verify(&wire[..split], |_, _| done += 1);
            if result.is_ok() {
                result = s.verify(&wire[split..], |_, _| done += 1);
            }
            let fault = result.unwrap_err();
            assert_eq!(
                fault,
                Fault::Corrupt {
                    message: 2,
                    mismatch: Mismatch {
                        offset: 3,
                        expected: sent,
                        got: sent ^ 0x40,
                    },
                },
                "split at {split}"
            );
            assert_eq!(done, 2, "the messages before it were verified");
            assert_eq!(fault.kind(), ErrorKind::Corrupt);
            assert_eq!(
                fault.at(),
                ErrorAt {
                    message: Some(2),
                    offset: Some(3),
                    bytes: Some((sent, sent ^ 0x40)),
                }
            );
            assert_eq!(
                fault.describe(s.connection()),
                format!(
                    "connection 7 message 2 byte 3: sent {sent:#04x}, got {:#04x}",
                    sent ^ 0x40
                )
            );
        }
    }

    #[test]
    fn a_byte_of_another_message_or_connection_is_corrupt() {
        let (mut s, mut wire) = written(2);
        // The echo of message 0 arrives twice (message 1 replaced by it).
        let (first, _) = wire.split_at_mut(10);
        let copy = first.to_vec();
        wire[10..20].copy_from_slice(&copy);
        let fault = s.verify(&wire, |_, _| {}).unwrap_err();
        assert!(
            matches!(fault, Fault::Corrupt { message: 1, .. }),
            "{fault:?}"
        );
        // The same bytes on another connection.
        let (_, wire) = written(1);
        let mut other = Stream::new(SIZE, 8, 1);
        other.issue(pending(0));
        other.wrote(10, 1, |_| {});
        let fault = other.verify(&wire, |_, _| {}).unwrap_err();
        assert!(
            matches!(fault, Fault::Corrupt { message: 0, .. }),
            "{fault:?}"
        );
    }

    #[test]
    fn bytes_beyond_what_was_sent_are_extra_after_the_owed_echoes_complete() {
        let (mut s, mut wire) = written(2);
        wire.extend_from_slice(&[0xAB, 1, 2]);
        let mut done = 0;
        let fault = s.verify(&wire, |_, _| done += 1).unwrap_err();
        assert_eq!(done, 2);
        assert_eq!(
            fault,
            Fault::Extra {
                message: 2,
                offset: 0,
                extra: 3,
                first: 0xAB,
            }
        );
        assert_eq!(fault.kind(), ErrorKind::Corrupt);
        assert_eq!(fault.at(), ErrorAt::byte(2, 0));
        assert_eq!(
            fault.describe(7),
            "3 more byte(s) came back than were sent (first: 0xab)"
        );

        // Half of message 1 written: the byte after it is extra, at message 1 byte 5.
        let mut s = Stream::new(SIZE, 7, 2);
        s.issue(pending(0));
        s.issue(pending(1));
        let mut wire = vec![0u8; 15];
        assert_eq!(s.fill_unsent(&mut wire), 15);
        s.wrote(15, 1, |_| {});
        wire.push(0xCD);
        let fault = s.verify(&wire, |_, _| {}).unwrap_err();
        assert_eq!(fault.at(), ErrorAt::byte(1, 5));
    }

    #[test]
    fn bytes_after_the_last_echo_are_corrupt_at_the_next_message() {
        let (mut s, wire) = written(2);
        s.verify(&wire, |_, _| {}).unwrap();
        let fault = s.extra_after_end(&[0x5A, 0x5B]);
        assert_eq!(fault.kind(), ErrorKind::Corrupt);
        assert_eq!(fault.at(), ErrorAt::byte(2, 0));
        assert_eq!(
            fault.describe(7),
            "extra bytes after the last echo: 2 byte(s) came back after every message was \
             verified (first: 0x5a)"
        );
    }

    #[test]
    fn a_close_between_messages_is_eof_and_inside_one_is_short() {
        let (mut s, wire) = written(3);
        s.verify(&wire[..10], |_, _| {}).unwrap();
        let eof = s.closed_by_server();
        assert_eq!(eof.kind(), ErrorKind::Eof);
        assert_eq!(eof.at(), ErrorAt::byte(1, 0));
        assert_eq!(
            eof.describe(7),
            "the server closed the connection (2 message(s) still owed)"
        );
        s.verify(&wire[10..14], |_, _| {}).unwrap();
        let short = s.closed_by_server();
        assert_eq!(short.kind(), ErrorKind::Short);
        assert_eq!(short.at(), ErrorAt::byte(1, 4));
        assert!(short.describe(7).contains("in the middle of a message"));
    }

    #[test]
    fn a_restart_begins_again_at_message_zero_with_the_new_id() {
        let (mut s, _) = written(2);
        s.restart(15);
        assert_eq!((s.connection(), s.issued(), s.in_flight()), (15, 0, 0));
        s.issue(pending(0));
        let mut buf = [0u8; SIZE as usize];
        assert_eq!(s.fill_unsent(&mut buf), 10);
        let mut expected = [0u8; SIZE as usize];
        payload::fill_message(15, 0, 0, &mut expected);
        assert_eq!(buf, expected);
    }
}
