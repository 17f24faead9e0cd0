//! The `echo-server` binary's contract: `--help` names every strategy, the `listening on` line,
//! and clear failures (address in use: exit 1; bad flags: exit 2). SIGTERM, the stats file and the
//! limits are checked per strategy by the conformance suite (`tests/conformance.rs`).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_echo-server");

mod common;
use common::sigterm;

/// Starts the binary on port 0 and returns it with the address from its first stdout line.
fn spawn(args: &[&str]) -> (Child, String, BufReader<ChildStdout>) {
    let mut child = Command::new(BIN)
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn echo-server");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let addr = common::listening_addr(&mut stdout).to_string();
    (child, addr, stdout)
}

#[test]
fn help_lists_every_strategy_with_what_it_shows() {
    let output = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for strategy in echo_server::Strategy::ALL {
        let line = format!("- {}:", strategy.name());
        assert!(help.contains(&line), "--help lacks {line}\n{help}");
    }
}

#[test]
fn prints_the_real_port_on_the_first_line() {
    let (child, addr, _stdout) = spawn(&[]);
    sigterm(&child);
    let mut child = child;
    assert!(child.wait().expect("wait").success());
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );
}

#[test]
fn address_in_use_is_a_clear_error_with_exit_1() {
    let (mut first, addr, _stdout) = spawn(&[]);
    let output = Command::new(BIN)
        .args(["--addr", &addr])
        .output()
        .expect("run second server");
    sigterm(&first);
    first.wait().expect("wait first");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("in use"),
        "{stderr}"
    );
}

/// `--verbose`: a connection that ends in an error is logged on stderr with the client's address
/// and the kind (without the flag it is only counted).
#[test]
fn verbose_logs_a_failed_connection_with_its_peer_and_kind() {
    use std::io::{Read, Write};
    use std::time::Duration;

    let (mut child, addr, _stdout) = spawn(&["--verbose"]);
    let mut stderr = stderr_lines(&mut child);
    let mut client = std::net::TcpStream::connect(&addr).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let peer = client.local_addr().expect("local addr").to_string();
    client.write_all(&vec![7u8; 256 * 1024]).expect("write");
    let mut some = [0u8; 1024];
    client.read_exact(&mut some).expect("some echo");
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .expect("linger 0");
    drop(client); // RST while the server is echoing
    let line = stderr
        .find(|line| line.contains(&peer))
        .unwrap_or_else(|| panic!("no stderr line names {peer}"));
    assert!(line.contains("reset"), "{line}");
    sigterm(&child);
    assert!(child.wait().expect("wait").success());
}

/// The child's stderr as lines, read on a thread (so the pipe never fills); the iterator ends
/// when no line comes for 20 s.
fn stderr_lines(child: &mut Child) -> impl Iterator<Item = String> + use<> {
    let stderr = child.stderr.take().expect("stderr");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    std::iter::from_fn(move || {
        receiver
            .recv_timeout(std::time::Duration::from_secs(20))
            .ok()
    })
}

/// The calibration fixture's hidden flag: absent from `--help`, refused (exit 2) where the
/// nonblocking session does not serve, and an event-loop server with it still echoes every byte.
#[test]
fn the_hidden_calibration_cost_keeps_the_echo_exact() {
    use std::io::{Read, Write};

    let help = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(!String::from_utf8_lossy(&help.stdout).contains("calibration"));
    let refused = Command::new(BIN)
        .args(["--strategy", "pool", "--calibration-cost", "1us"])
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--calibration-cost"));
    let (mut child, addr, _stdout) =
        spawn(&["--strategy", "event-loop", "--calibration-cost", "2us"]);
    let mut client = std::net::TcpStream::connect(&addr).expect("connect");
    let sent: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    client.write_all(&sent).expect("write");
    let mut echoed = vec![0u8; sent.len()];
    client.read_exact(&mut echoed).expect("echo");
    assert!(echoed == sent, "the echo differs");
    drop(client);
    sigterm(&child);
    assert!(child.wait().expect("wait").success());
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    for args in [
        &["--strategy", "nonsense"][..],
        &["--idle-timeout", "soon"],
        &["--workers", "0"],
        &["--no-such-flag"],
    ] {
        let output = Command::new(BIN).args(args).output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.is_empty(), "{args:?} printed no message");
    }
}

/// Where the kernel refuses io_uring, `--strategy uring` fails at start with exit 1 and a message
/// that names io_uring and the kernel's answer. The refusal is simulated with a seccomp filter
/// that makes `io_uring_setup` fail with EPERM in the child (as Docker's default profile does).
#[cfg(all(target_os = "linux", target_arch = "x86_64", feature = "uring"))]
#[test]
fn uring_refused_by_the_kernel_is_a_clear_error_with_exit_1() {
    use std::os::unix::process::CommandExt;

    let mut command = Command::new(BIN);
    command.args(["--addr", "127.0.0.1:0", "--strategy", "uring"]);
    // SAFETY: only prctl(2) (async-signal-safe) between fork and exec, on a filter that lives on
    // this stack frame until the call returns.
    unsafe {
        command.pre_exec(|| {
            const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
            const SYS_IO_URING_SETUP: u32 = 425;
            let filter = [
                // arch check: anything but x86_64 is allowed through untouched
                bpf_stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
                bpf_jump(
                    libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                    AUDIT_ARCH_X86_64,
                    0,
                    3,
                ),
                bpf_stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
                bpf_jump(
                    libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                    SYS_IO_URING_SETUP,
                    0,
                    1,
                ),
                bpf_stmt(
                    libc::BPF_RET | libc::BPF_K,
                    libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
                ),
                bpf_stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
            ];
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().expect("run echo-server");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("io_uring") && stderr.contains("os error 1"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "printed a listening line");
}

#[cfg(all(target_os = "linux", target_arch = "x86_64", feature = "uring"))]
fn bpf_stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64", feature = "uring"))]
fn bpf_jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}
