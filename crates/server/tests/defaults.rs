//! Defaults that work together (issue 11): `echo-server` with no flags and `loadgen --target
//! ADDR` with no other flag serve every connection, also with the server pinned to one CPU (one
//! worker by default), and silent connections held open beside the load never keep a client
//! waiting. The server is the binary as a child process (only `--addr 127.0.0.1:0`, so that
//! tests never collide on a port); the client is loadgen's library with `Config::new(ADDR)`, the
//! defaults of its command line.

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;

/// The server with no flags but a free port; on one CPU when asked (as `cargo xtask bench` pins
/// it), so that it sizes itself to one worker.
fn default_server(one_cpu: bool) -> (KillOnDrop, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_echo-server"));
    command
        .args(["--addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if one_cpu {
        let cpu = *common::allowed_cpus().first().expect("some CPU is allowed");
        common::pin_command(&mut command, cpu);
    }
    let mut child = command.spawn().expect("spawn echo-server");
    let addr = common::listening_addr(&mut BufReader::new(child.stdout.take().expect("stdout")));
    (KillOnDrop(child), addr)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// loadgen with no flag but the target.
fn default_loadgen(addr: SocketAddr) -> loadgen::Report {
    let mut config = loadgen::Config::new(addr.to_string());
    config.quiet = true; // (the live display only; nothing measured changes)
    loadgen::run(&config).expect("loadgen runs")
}

#[test]
fn no_flags_on_either_side_serve_every_connection_even_on_one_cpu() {
    let (_server, addr) = default_server(true);
    let report = default_loadgen(addr);
    let connections = &report.connections;
    assert_eq!(connections.opened, 16, "{connections:?}");
    assert_eq!(connections.starved, 0, "{connections:?}");
    assert_eq!(report.errors.total, 0, "{:?}", report.errors.by_kind);
    assert!(
        connections.min_messages > 0,
        "a connection got no echo: {connections:?}"
    );
}

#[test]
fn fifteen_hundred_silent_connections_keep_no_client_waiting() {
    const SILENT: usize = 1_500;
    loadgen::run::raise_nofile_limit(SILENT as u64 + 256).expect("open-files limit");
    let (_server, addr) = default_server(false);
    let silent: Vec<TcpStream> = (0..SILENT)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("silent connection {i}: {e}")))
        .collect();
    let report = default_loadgen(addr);
    for stream in &silent {
        // A reset instead of a close: 1,500 client ports do not sit in TIME_WAIT for a minute.
        socket2::SockRef::from(stream)
            .set_linger(Some(Duration::ZERO))
            .expect("linger 0");
    }
    drop(silent);
    assert_eq!(report.errors.total, 0, "{:?}", report.errors.by_kind);
    assert_eq!(report.connections.starved, 0, "{:?}", report.connections);
    assert!(
        report.connections.min_messages > 0,
        "{:?}",
        report.connections
    );
}
