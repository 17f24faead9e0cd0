//! Helpers shared by the test binaries (and the `reactor_pool` bench) that run `echo-server` as a
//! child process: the `listening on ADDR` ready line, SIGTERM, a bounded wait for the exit, and
//! pinning processes to CPUs.

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

/// A CPU set holding just `cpu`.
fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain old data; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Runs the command's process on `cpu` only (as `taskset -c CPU` would).
pub fn pin_command(command: &mut std::process::Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    let set = cpu_set(cpu);
    // SAFETY: only sched_setaffinity (async-signal-safe) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Pins the calling thread, and the threads it spawns later, to `cpu`.
pub fn pin_self(cpu: usize) -> std::io::Result<()> {
    let set = cpu_set(cpu);
    // SAFETY: sched_setaffinity reads a valid cpu_set_t.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs this process may run on, lowest first.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity with a zeroed set of the right size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}
