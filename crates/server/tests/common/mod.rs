//! Helpers shared by the test binaries that run `echo-server` as a child process: the
//! `listening on ADDR` ready line, SIGTERM, and a bounded wait for the exit.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Reads the server's first stdout line, `listening on ADDR`, and returns the address: the ready
/// signal (never a sleep).
pub fn listening_addr(stdout: &mut impl BufRead) -> SocketAddr {
    let mut line = String::new();
    stdout.read_line(&mut line).expect("first stdout line");
    line.strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim()
        .parse()
        .expect("address on the listening line")
}

/// Sends SIGTERM to a child we started.
pub fn sigterm(child: &Child) {
    // SAFETY: plain kill(2) on the child we spawned.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill");
}

/// Waits for the child to exit, at most `within`; kills it and panics if it does not.
pub fn wait_for_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("echo-server did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
