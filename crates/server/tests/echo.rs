//! The echo contract, for every blocking strategy: exact echo of small to large payloads,
//! half-close, concurrency where the strategy has it, panics contained, counters right.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use echo_server::{Config, Server, Strategy};

/// A payload that differs at every offset, so a dropped or repeated chunk cannot pass.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
        .collect()
}

/// Sends `data` from a writer thread while reading the echo here (so large payloads cannot
/// deadlock on full socket buffers), half-closes, and returns everything read until EOF.
fn echo_round_trip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let owned = data.to_vec();
    let sender = std::thread::spawn(move || {
        writer.write_all(&owned).expect("write");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut echoed = Vec::with_capacity(data.len());
    (&stream).read_to_end(&mut echoed).expect("read echo");
    sender.join().expect("writer thread");
    echoed
}

fn start(strategy: Strategy) -> Server {
    Server::start(Config::loopback(strategy)).expect("server starts")
}

macro_rules! for_each_strategy {
    ($($strategy:ident => $variant:expr),* $(,)?) => {$(
        mod $strategy {
            use super::*;

            #[test]
            fn echoes_1_byte_64k_and_8m_exactly() {
                let server = start($variant);
                for (i, len) in [1usize, 64 * 1024, 8 * 1024 * 1024].into_iter().enumerate() {
                    let data = payload(len, i as u8);
                    let echoed = echo_round_trip(server.local_addr(), &data);
                    assert_eq!(echoed.len(), data.len(), "{len}-byte echo length");
                    assert!(echoed == data, "{len}-byte echo differs");
                }
                let stats = server.shutdown();
                assert_eq!(stats.completed, 3);
                assert_eq!(stats.errors, 0);
                let total = (1 + 64 * 1024 + 8 * 1024 * 1024) as u64;
                assert_eq!((stats.bytes_in, stats.bytes_out), (total, total));
            }

            #[test]
            fn half_close_gets_every_byte_then_eof() {
                let server = start($variant);
                let mut stream = TcpStream::connect(server.local_addr()).expect("connect");
                stream.write_all(b"hello, half-closed world").expect("write");
                stream.shutdown(Shutdown::Write).expect("half-close");
                let mut echoed = Vec::new();
                stream.read_to_end(&mut echoed).expect("read to EOF");
                assert_eq!(echoed, b"hello, half-closed world");
                assert_eq!(server.shutdown().completed, 1);
            }

            #[test]
            fn a_panicking_session_ends_only_that_connection() {
                let mut config = Config::loopback($variant);
                config.panic_trigger = Some(b"PANIC!".to_vec());
                let server = Server::start(config).expect("start");
                let mut bad = TcpStream::connect(server.local_addr()).expect("connect");
                bad.write_all(b"xxPANIC!xx").expect("write");
                let mut rest = Vec::new();
                // The server closes the connection without echoing.
                let _ = bad.read_to_end(&mut rest);
                assert!(rest.is_empty());
                let echoed = echo_round_trip(server.local_addr(), b"still here");
                assert_eq!(echoed, b"still here");
                let stats = server.shutdown();
                assert_eq!(stats.errors_by_kind["panic"], 1);
                assert_eq!(stats.completed, 1);
            }
        }
    )*};
}

for_each_strategy! {
    iterative => Strategy::Iterative,
    thread => Strategy::Thread,
    pool => Strategy::Pool,
}

/// 100 clients at once, each with its own payload; all must be echoed exactly.
fn hundred_concurrent_clients(strategy: Strategy) {
    let server = start(strategy);
    let addr = server.local_addr();
    let clients: Vec<_> = (0..100u8)
        .map(|i| std::thread::spawn(move || (i, echo_round_trip(addr, &payload(4096, i)))))
        .collect();
    for client in clients {
        let (i, echoed) = client.join().expect("client thread");
        assert!(echoed == payload(4096, i), "client {i} got a wrong echo");
    }
    let stats = server.shutdown();
    assert_eq!(stats.completed, 100);
    assert_eq!(stats.errors, 0);
}

#[test]
fn thread_serves_100_concurrent_clients() {
    hundred_concurrent_clients(Strategy::Thread);
}

#[test]
fn pool_serves_100_concurrent_clients() {
    hundred_concurrent_clients(Strategy::Pool);
}

/// Opens a connection, proves it is being served (one echo), and keeps it open.
fn served_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).expect("first echo");
    stream
}

/// Whether a fresh connection gets its echo within `wait`.
fn echoed_within(addr: SocketAddr, wait: Duration) -> bool {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    stream.write_all(b"x").expect("write");
    let mut buf = [0u8; 1];
    stream.read_exact(&mut buf).is_ok()
}

#[test]
fn iterative_serves_one_client_at_a_time() {
    let server = start(Strategy::Iterative);
    let first = served_connection(server.local_addr());
    assert!(
        !echoed_within(server.local_addr(), Duration::from_millis(300)),
        "a second client was served while the first was still connected"
    );
    drop(first);
    assert!(echoed_within(server.local_addr(), Duration::from_secs(10)));
    server.shutdown();
}

#[test]
fn pool_serves_at_most_its_workers_at_once() {
    let mut config = Config::loopback(Strategy::Pool);
    config.workers = 2;
    let server = Server::start(config).expect("start");
    let busy: Vec<_> = (0..2)
        .map(|_| served_connection(server.local_addr()))
        .collect();
    assert!(
        !echoed_within(server.local_addr(), Duration::from_millis(300)),
        "a third client was served while both workers were busy"
    );
    drop(busy);
    assert!(echoed_within(server.local_addr(), Duration::from_secs(10)));
    server.shutdown();
}

#[test]
fn thread_serves_a_new_client_while_others_stay_connected() {
    let server = start(Strategy::Thread);
    let _held: Vec<_> = (0..8)
        .map(|_| served_connection(server.local_addr()))
        .collect();
    assert!(echoed_within(server.local_addr(), Duration::from_secs(10)));
    let started = Instant::now();
    drop(_held);
    server.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain waited on closed clients"
    );
}

#[test]
fn idle_connections_are_closed_and_counted() {
    let mut config = Config::loopback(Strategy::Pool);
    config.idle_timeout = Duration::from_millis(200);
    let server = Server::start(config).expect("start");
    let mut idle = TcpStream::connect(server.local_addr()).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server should close an idle connection");
    assert_eq!(server.shutdown().timed_out, 1);
}

#[test]
fn drain_cuts_sessions_that_outlive_the_drain_timeout() {
    let mut config = Config::loopback(Strategy::Thread);
    config.drain_timeout = Duration::from_millis(100);
    let server = Server::start(config).expect("start");
    let _stuck = served_connection(server.local_addr());
    let started = Instant::now();
    let stats = server.shutdown();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(stats.drain_closed, 1);
}

#[test]
fn max_connections_rejects_the_excess() {
    let mut config = Config::loopback(Strategy::Thread);
    config.max_connections = 2;
    let server = Server::start(config).expect("start");
    let _held: Vec<_> = (0..2)
        .map(|_| served_connection(server.local_addr()))
        .collect();
    assert!(!echoed_within(server.local_addr(), Duration::from_secs(5)));
    let stats = server.shutdown();
    assert_eq!(stats.rejected, 1);
}
