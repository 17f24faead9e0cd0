//! 10,000 concurrent connections from one loadgen process (2 threads) against an echo server in
//! a separate process (the open-files limit is per process). The server is a small mio event
//! loop in this file; the test re-executes its own binary to run it as a child process.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "LOADGEN_TEST_ECHO_CHILD";
const LISTENER: Token = Token(usize::MAX);

/// A single-threaded nonblocking echo server; runs until `stop` returns true.
fn serve(listener: std::net::TcpListener, stop: impl Fn() -> bool) -> std::io::Result<()> {
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
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let t = Token(next);
                            next += 1;
                            poll.registry().register(
                                &mut s,
                                t,
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns.insert(t.0, (s, Vec::new()));
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

fn bind() -> std::net::TcpListener {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(8192).unwrap();
    socket.into()
}

/// Kills the child server (by its PID, through its handle) when the test ends, however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// In the child: serve until killed. Otherwise: check the test server itself in-process.
#[test]
fn mio_echo_test_server() {
    if std::env::var_os(CHILD_ENV).is_some() {
        loadgen::run::raise_nofile_limit(15_000).unwrap();
        let listener = bind();
        println!("listening on {}", listener.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
        serve(listener, || false).unwrap();
        return;
    }
    let listener = bind();
    let addr = listener.local_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        serve(listener, move || {
            stop2.load(std::sync::atomic::Ordering::SeqCst)
        })
    });
    let mut c = loadgen::Config::new(addr.to_string());
    c.connections = 50;
    c.threads = 2;
    c.warmup_ms = 0;
    c.duration_ms = None;
    c.messages = Some(5_000);
    c.size_bytes = 70_000;
    c.depth = Some(2);
    let r = loadgen::run(&c).unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    server.join().unwrap().unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!(r.messages.verified, 5_000);
}

#[test]
fn ten_thousand_connections_from_two_threads() {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "mio_echo_test_server",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().unwrap();
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            // libtest may print "test NAME ... " on the same line first.
            l.split_once("listening on ")
                .map(|(_, addr)| addr.trim().to_string())
        })
        .expect("the child server reports its address");

    let mut c = loadgen::Config::new(addr);
    c.connections = 10_000;
    c.threads = 2;
    c.warmup_ms = 2_000;
    c.duration_ms = Some(2_000);
    c.timeout_ms = 20_000;
    // Spread the 10,000 local ports over several loopback source addresses, so that this test
    // does not eat the shared ephemeral port range of 127.0.0.1 (TIME_WAIT lasts 60 s).
    c.source_addrs = vec!["127.0.0.2-127.0.0.9".into()];
    let r = loadgen::run(&c).unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors.samples);
    assert_eq!(r.connections.opened, 10_000);
    assert_eq!(r.messages.verified, r.messages.sent);
    assert!(r.connections.min_messages > 0, "{:?}", r.connections);
    assert_eq!(r.loadgen.threads, 2);
}
