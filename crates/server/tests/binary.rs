//! The `echo-server` binary's contract: `--help` names every strategy, the `listening on` line,
//! and clear failures (address in use: exit 1; bad flags: exit 2). SIGTERM, the stats file and the
//! limits are checked per strategy by the conformance suite (`tests/conformance.rs`).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

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
