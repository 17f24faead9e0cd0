//! Zero-copy sends of large payloads: `vmsplice` the payload table's pages into a pipe, then
//! `splice` the pipe into the socket. The kernel's send copy (user memory into new socket
//! buffers, a fifth of the loadgen's CPU at 64 KiB) goes away: the socket's buffers reference the
//! table's pages, which never change (the table is generated once and never written or freed
//! again), so what goes out is exactly the payload. The echo server still copies what it reads,
//! as with any client.
//!
//! One pipe per thread, lent to one connection at a time: bytes that entered the pipe but not the
//! socket (the socket was full) belong to that connection and go first the next time it can
//! write; meanwhile other connections write with `writev` from the table. If the pipe cannot be
//! made or the kernel refuses to splice, the thread writes with `writev` only.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Pipe capacity asked for (the unprivileged maximum by default): 256 pages, room for a 1 MiB
/// write.
const PIPE_BYTES: libc::c_int = 1024 * 1024;

/// The thread's pipe and whose bytes are in it.
#[derive(Debug)]
pub(super) struct SplicePipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe, not yet in a socket.
    pending: usize,
    /// The connection (index in the thread's list) those bytes belong to.
    owner: Option<usize>,
}

impl SplicePipe {
    /// A nonblocking pipe, as large as the system allows up to [`PIPE_BYTES`].
    pub fn new() -> io::Result<SplicePipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array we pass.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A smaller pipe only means shorter splices.
        // SAFETY: fcntl on our own descriptor with an integer argument.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
        Ok(SplicePipe {
            read,
            write,
            pending: 0,
            owner: None,
        })
    }

    /// Whether connection `index` has bytes waiting in the pipe.
    pub fn holds(&self, index: usize) -> bool {
        self.owner == Some(index)
    }

    /// Whether the pipe is free for any connection.
    pub fn is_free(&self) -> bool {
        self.owner.is_none()
    }

    /// Bytes waiting in the pipe.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Puts the bytes of `iov` (slices of the payload table, which must never change) into the
    /// pipe for connection `index`, without copying them; how many went in.
    pub fn load(&mut self, index: usize, iov: &[IoSlice<'static>]) -> io::Result<usize> {
        debug_assert!(self.is_free());
        // SAFETY: IoSlice has the layout of iovec; the slices are 'static and never written,
        // so the pages the pipe references keep their bytes until the socket is done with them.
        let n = unsafe {
            libc::vmsplice(
                self.write.as_raw_fd(),
                iov.as_ptr().cast::<libc::iovec>(),
                iov.len(),
                libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n > 0 {
            self.pending = n;
            self.owner = Some(index);
        }
        Ok(n)
    }

    /// Moves the pipe's bytes into `socket`; how many went.
    pub fn send_to(&mut self, socket: RawFd) -> io::Result<usize> {
        // SAFETY: splice between two descriptors we own, without offsets.
        let n = unsafe {
            libc::splice(
                self.read.as_raw_fd(),
                std::ptr::null_mut(),
                socket,
                std::ptr::null_mut(),
                self.pending,
                libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (n as usize).min(self.pending);
        self.pending -= n;
        if self.pending == 0 {
            self.owner = None;
        }
        Ok(n)
    }

    /// Throws away what is in the pipe (its connection ended): a new, empty pipe.
    pub fn discard(&mut self) -> io::Result<()> {
        *self = SplicePipe::new()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn table_bytes_go_through_the_pipe_into_a_socket_unchanged() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut pipe = SplicePipe::new().unwrap();
        assert!(pipe.is_free());
        // One message of 100,000 bytes: two table blocks.
        let mut iov = Vec::new();
        let mut offset = 0u64;
        while offset < 100_000 {
            let segment = payload::segment(4, 9, offset, 100_000 - offset as usize);
            offset += segment.len() as u64;
            iov.push(IoSlice::new(segment));
        }
        let loaded = pipe.load(3, &iov).unwrap();
        assert!(loaded > 0 && pipe.holds(3) && !pipe.holds(2));
        assert_eq!(pipe.pending(), loaded);
        let mut sent = 0;
        let mut got = vec![0u8; loaded];
        let mut received = 0;
        while received < loaded {
            if pipe.pending() > 0 {
                sent += pipe.send_to(client.as_raw_fd()).unwrap();
            }
            received += server.read(&mut got[received..]).unwrap();
        }
        assert_eq!(sent, loaded);
        assert!(pipe.is_free());
        assert_eq!(payload::verify_message(4, 9, 0, &got), Ok(()));

        // Bytes left in the pipe are thrown away with it.
        pipe.load(1, &iov[..1]).unwrap();
        assert!(pipe.holds(1));
        pipe.discard().unwrap();
        assert!(pipe.is_free() && pipe.pending() == 0);
    }
}
