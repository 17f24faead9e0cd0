//! The error taxonomy: what can go wrong on a connection, counted by kind and sampled with
//! enough detail (connection, message, byte offset, expected and received byte) to find it.

use serde::{Deserialize, Serialize};
use std::io;

/// What went wrong on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The connection was refused (nothing listening).
    Refused,
    /// The peer reset the connection (or the pipe broke).
    Reset,
    /// The server closed the connection at a message boundary while echoes were owed.
    Eof,
    /// No complete echo (or no connect) within `--timeout`.
    Timeout,
    /// The server closed the connection in the middle of a message.
    Short,
    /// An echoed byte differs from the byte sent (or more bytes came back than were sent).
    Corrupt,
    /// No local address/port available to connect from (ephemeral ports exhausted).
    AddrNotAvailable,
    /// Any other I/O error.
    Other,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Refused,
        ErrorKind::Reset,
        ErrorKind::Eof,
        ErrorKind::Timeout,
        ErrorKind::Short,
        ErrorKind::Corrupt,
        ErrorKind::AddrNotAvailable,
        ErrorKind::Other,
    ];

    /// The name used in `errors.by_kind` and samples.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Eof => "eof",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Short => "short",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::AddrNotAvailable => "addr_not_available",
            ErrorKind::Other => "other",
        }
    }

    /// Index into per-kind counter arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Classifies an I/O error from connect, read or write.
    pub fn from_io(err: &io::Error) -> ErrorKind {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            // EADDRINUSE comes from bind/connect when a source address has no local port left.
            io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse => {
                ErrorKind::AddrNotAvailable
            }
            _ => ErrorKind::Other,
        }
    }
}

/// One recorded error, as it appears in `errors.samples`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorSample {
    /// The kind, as in `errors.by_kind`.
    pub kind: ErrorKind,
    /// Connection id (slot index for persistent connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<u64>,
    /// Message sequence number on that connection (counting from 0, warm-up included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<u64>,
    /// Byte offset within the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The byte that was sent (corrupt only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u8>,
    /// The byte that came back (corrupt only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub got: Option<u8>,
    /// Seconds since the start of the run (warm-up included).
    pub at_s: f64,
    /// A human-readable description.
    pub detail: String,
}

/// How many error samples a report keeps.
pub const MAX_SAMPLES: usize = 16;
