//! An echo server that timestamps each message's arrival: the open-loop schedule seen from
//! outside the load generator, to check its loop-lag figure against.
//!
//! Each connection has a thread that reads exactly up to the next message boundary with
//! `recvmsg` and `SO_TIMESTAMPNS`, so the time it keeps for a message is the kernel's receive
//! timestamp of the packet that carried its first byte (on loopback: taken inside the sender's
//! `write`), not the moment this server got around to reading it. Its own scheduling therefore
//! does not enter the figure; only if it falls a whole message gap behind can the kernel merge two
//! packets and stamp the earlier message with the later time (a message would then look later,
//! never earlier).
//!
//! [`lateness_ns`] turns the arrival times into lateness against a uniform schedule without
//! knowing when the load generator's schedule started: message `k` of a connection is meant to go
//! `k` intervals after message 0, so `arrival(k) - k * interval` is the connection's start plus
//! the message's lateness plus the transit, and its minimum over the connection's messages is the
//! start plus the shortest transit (the most punctual message). What is left is each message's
//! lateness as seen from outside, with the transit's jitter (a few µs on loopback).
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

type Arrivals = Arc<Mutex<Vec<Option<u64>>>>;
/// Every connection's arrivals and the thread that serves it.
type Connections = Arc<Mutex<Vec<(Arrivals, JoinHandle<()>)>>>;

/// The running server.
pub struct StampServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    connections: Connections,
}

impl StampServer {
    /// Starts the server on 127.0.0.1:0 for messages of `size` bytes.
    pub fn start(size: usize) -> std::io::Result<StampServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections: Connections = Arc::default();
        let acceptor = {
            let stop = stop.clone();
            let connections = connections.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let arrivals: Arrivals = Arc::default();
                    let log = arrivals.clone();
                    let handle = std::thread::spawn(move || serve(stream, size, &log));
                    if let Ok(mut list) = connections.lock() {
                        list.push((arrivals, handle));
                    }
                }
            })
        };
        Ok(StampServer {
            addr,
            stop,
            acceptor: Some(acceptor),
            connections,
        })
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Stops accepting, waits for every connection to end (the client closed it), and returns
    /// each connection's arrival times (ns, `CLOCK_REALTIME`), message by message (`None` for a
    /// message that arrived before its connection's timestamps were switched on).
    pub fn finish(mut self) -> Vec<Vec<Option<u64>>> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        let list = std::mem::take(&mut *self.connections.lock().unwrap());
        list.into_iter()
            .map(|(arrivals, handle)| {
                let _ = handle.join();
                std::mem::take(&mut *arrivals.lock().unwrap())
            })
            .filter(|a| !a.is_empty())
            .collect()
    }
}

/// Echoes one connection, stamping the first byte of every message.
fn serve(mut stream: TcpStream, size: usize, arrivals: &Mutex<Vec<Option<u64>>>) {
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads an int from a valid pointer for our own descriptor.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let mut buf = vec![0u8; size];
    let mut filled = 0usize;
    let mut control = [0u8; 256];
    let mut stamps = Vec::new();
    loop {
        let mut iov = libc::iovec {
            iov_base: buf[filled..].as_mut_ptr().cast(),
            iov_len: size - filled,
        };
        // SAFETY: msghdr is plain data; every pointer in it is to our own live buffers.
        let (n, stamp) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control.len() as _;
            let n = libc::recvmsg(fd, &mut msg, 0);
            let mut stamp = None;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SO_TIMESTAMPNS
                {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            (n, stamp)
        };
        if n <= 0 {
            break;
        }
        let n = n as usize;
        if filled == 0 {
            stamps.push(stamp);
        }
        if stream.write_all(&buf[filled..filled + n]).is_err() {
            break;
        }
        filled = (filled + n) % size;
    }
    *arrivals.lock().unwrap() = stamps;
}

/// Lateness (ns) of every stamped message from outside, per connection against a uniform
/// schedule of one message every `interval_ns` (see the module doc); messages meant to go in the
/// first `skip_ns` of a connection's schedule (the warm-up) are left out.
pub fn lateness_ns(arrivals: &[Vec<Option<u64>>], interval_ns: f64, skip_ns: f64) -> Vec<u64> {
    let mut out = Vec::new();
    for connection in arrivals {
        let offsets: Vec<(usize, f64)> = connection
            .iter()
            .enumerate()
            .filter_map(|(k, at)| at.map(|at| (k, at as f64 - k as f64 * interval_ns)))
            .collect();
        let start = offsets
            .iter()
            .map(|&(_, o)| o)
            .fold(f64::INFINITY, f64::min);
        out.extend(
            offsets
                .iter()
                .filter(|(k, _)| *k as f64 * interval_ns >= skip_ns)
                .map(|&(_, o)| (o - start) as u64),
        );
    }
    out
}
