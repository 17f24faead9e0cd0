//! Helpers shared by xtask's integration tests: the measured binaries (built once, dev profile,
//! by a nested `cargo build` whose features match `cargo test --workspace`'s), the xtask binary itself and commands of it, reading what a run
//! wrote, and a /proc scan for leftover processes.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use xtask::shell::{Binaries, build_test_binaries, project_root};

pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        build_test_binaries(&project_root()).expect("building echo-server and loadgen")
    })
}

pub fn bin_dir() -> PathBuf {
    binaries()
        .echo_server
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

pub fn xtask_binary() -> &'static str {
    env!("CARGO_BIN_EXE_xtask")
}

/// The hidden `fixture-echo` server as an external `--server` command: it sleeps `delay` before
/// echoing each 64-byte read (a 64-byte message), so its per-message cost is known.
pub fn fixture_echo(delay: &str) -> String {
    format!(
        "{} fixture-echo --port {{port}} --delay {delay} --buffer-size 64",
        xtask_binary()
    )
}

/// `xtask ARGS`.
pub fn xtask<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Command {
    let mut command = Command::new(xtask_binary());
    command.args(args);
    command
}

/// `xtask ARGS --bin-dir <the built binaries> --out OUT`: a measuring command (bench, capacity,
/// regress) that builds nothing and writes its run directory to `out`.
pub fn xtask_run<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>, out: &Path) -> Command {
    let mut command = xtask(args);
    command
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(out);
    command
}

/// Runs `command` to its end and asserts its exit code (showing both outputs when it differs);
/// returns its stdout and stderr.
pub fn run_to_exit(command: &mut Command, code: i32) -> (String, String) {
    let output = command.output().expect("xtask runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "{command:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// A server command that never listens: `sleep MARKER` (`{port}` is swallowed by a comment),
/// started with `& exec` so a grandchild sleeps too, which only stopping the whole process group
/// ends. Returns the command and the `sleep MARKER` text its processes carry.
pub fn mute_server(seed: u32) -> (String, String) {
    let marker = format!("sleep {seed}.{}", std::process::id());
    (format!("{marker}1 & exec {marker}2 # {{port}}"), marker)
}

/// Runs xtask with `args` against a server from [`mute_server`]: it must exit 1 with `expected`
/// in its stderr, and no process of that server may be left running.
pub fn fails_and_leaves_no_process(args: &[&str], marker: &str, expected: &str) {
    let out = tempfile::tempdir().expect("temp dir");
    let (_, stderr) = run_to_exit(&mut xtask_run(args, out.path()), 1);
    assert!(stderr.contains(expected), "{stderr}");
    assert!(
        processes_mentioning(marker).is_empty(),
        "the server (or its grandchild) was left running: {:?}",
        processes_mentioning(marker)
    );
}

/// A JSON file parsed (the test fails naming the file when it is missing or malformed).
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("parsing {}: {error}", path.display()))
}

/// Files in `dir` whose names end with `suffix`, sorted.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("listing {}: {error}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().ends_with(suffix))
        })
        .collect();
    files.sort();
    files
}

/// PIDs of live processes whose command line mentions `marker` (zombies excluded).
pub fn processes_mentioning(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if cmdline.contains(marker) && pid != std::process::id() && !zombie {
            found.push(pid);
        }
    }
    found
}
