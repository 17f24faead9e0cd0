//! A single-threaded mio echo server: used by the scale test (as a separate process) and by the
//! `vs_blocking` bench (so the server is not the bottleneck of the comparison).
#![allow(dead_code)]

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

const LISTENER: Token = Token(usize::MAX);

/// A single-threaded nonblocking echo server; runs until `stop` returns true.
pub fn serve(listener: std::net::TcpListener, stop: impl Fn() -> bool) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: HashMap<usize, (TcpStream, Vec<u8>)> = HashMap::new();
    let mut next = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while !stop() {
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let t = Token(next);
                            next += 1;
                            if poll
                                .registry()
                                .register(&mut s, t, Interest::READABLE | Interest::WRITABLE)
                                .is_ok()
                            {
                                conns.insert(t.0, (s, Vec::new()));
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
                continue;
            }
            let key = event.token().0;
            let Some((stream, pending)) = conns.get_mut(&key) else {
                continue;
            };
            let mut close = false;
            // Flush what could not be written before.
            while !pending.is_empty() {
                match stream.write(pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
            while !close && pending.is_empty() {
                match stream.read(&mut buf) {
                    Ok(0) => close = true,
                    Ok(n) => {
                        let mut off = 0;
                        while off < n {
                            match stream.write(&buf[off..n]) {
                                Ok(w) => off += w,
                                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                    pending.extend_from_slice(&buf[off..n]);
                                    break;
                                }
                                Err(_) => {
                                    close = true;
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => close = true,
                }
            }
            if close && let Some((mut s, _)) = conns.remove(&key) {
                let _ = poll.registry().deregister(&mut s);
            }
        }
    }
    Ok(())
}

pub fn bind() -> std::net::TcpListener {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(8192).unwrap();
    socket.into()
}
