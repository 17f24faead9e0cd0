//! The `echo-server` binary's contract: the `listening on` line, SIGTERM drains and exits 0 with
//! the stats file written, and clear failures (address in use: exit 1; bad flags: exit 2).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_echo-server");

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
    let mut line = String::new();
    stdout.read_line(&mut line).expect("first stdout line");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim()
        .to_string();
    (child, addr, stdout)
}

fn sigterm(child: &Child) {
    // SAFETY: plain kill(2) on the child we spawned.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
}

#[test]
fn prints_the_real_port_and_drains_an_in_flight_session_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stats_path = dir.path().join("stats.json");
    let (mut child, addr, _stdout) = spawn(&[
        "--strategy",
        "thread",
        "--stats-json",
        stats_path.to_str().expect("utf-8 path"),
    ]);
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );

    // A session in flight when the signal arrives: it must complete.
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream.write_all(b"before").expect("write");
    let mut buf = [0u8; 6];
    stream.read_exact(&mut buf).expect("echo before SIGTERM");
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(100));
    stream.write_all(b"after").expect("write after SIGTERM");
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).expect("echo after SIGTERM");
    assert_eq!(&buf, b"after");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("EOF");

    let status = child.wait().expect("wait");
    assert!(status.success(), "exit status {status}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(stderr.contains("completed  1"), "{stderr}");

    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_path).expect("stats file"))
            .expect("stats JSON");
    assert_eq!(stats["schema"], "echolab.server-stats/1");
    assert_eq!(stats["strategy"], "thread");
    assert_eq!(stats["accepted"], 1);
    assert_eq!(stats["completed"], 1);
    assert_eq!(stats["bytes_in"], 11);
    assert_eq!(stats["bytes_out"], 11);
    for key in [
        "rejected",
        "timed_out",
        "errors",
        "errors_by_kind",
        "peak_open_connections",
        "uptime_s",
        "workers",
    ] {
        assert!(stats.get(key).is_some(), "stats lacks {key}");
    }
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
