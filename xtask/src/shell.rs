//! Shared helpers for running things: the project root, building the binaries with a visible
//! command line, starting a server and waiting until it listens, running loadgen with a
//! deadline, stopping children by PID, pinning to cores, and reading `/proc` for CPU and memory.
//!
//! Every child runs in its own process group and is owned by a guard whose `Drop` stops it
//! (SIGTERM to the group, then SIGKILL after a grace period), so no error path, panic or Ctrl-C
//! (see [`crate::interrupt`]) leaves a process behind.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};

use crate::error::input_error;
use crate::flags::{BuildArgs, BuildProfile};
use crate::interrupt;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Shell-quotes one word for display (so printed command lines can be pasted).
pub fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A command line as one pasteable string.
pub fn display_command(program: &Path, args: &[String]) -> String {
    let mut words = vec![quote(&program.display().to_string())];
    words.extend(args.iter().map(|arg| quote(arg)));
    words.join(" ")
}

/// Paths of the two measured binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub echo_server: PathBuf,
    pub loadgen: PathBuf,
}

/// Builds (or locates, with `--bin-dir`) `echo-server` and `loadgen` for the tree at `root`.
pub fn binaries(root: &Path, build: &BuildArgs, target_dir: Option<&Path>) -> Result<Binaries> {
    if let Some(dir) = &build.bin_dir {
        let found = Binaries {
            echo_server: dir.join("echo-server"),
            loadgen: dir.join("loadgen"),
        };
        for path in [&found.echo_server, &found.loadgen] {
            if !path.is_file() {
                return Err(input_error(format!(
                    "--bin-dir: {} does not exist",
                    path.display()
                )));
            }
        }
        return Ok(found);
    }
    build_binaries(root, build.build_profile, target_dir)
}

/// Runs `cargo build [--release] -p echo-server -p loadgen` in `root` (command line printed) and
/// returns the executables cargo reports, so any target-dir configuration is respected.
pub fn build_binaries(
    root: &Path,
    profile: BuildProfile,
    target_dir: Option<&Path>,
) -> Result<Binaries> {
    let mut args: Vec<String> = vec!["build".into()];
    if profile == BuildProfile::Release {
        args.push("--release".into());
    }
    args.extend(["-p", "echo-server", "-p", "loadgen", "--bins"].map(String::from));
    cargo_build(root, args, target_dir)
}

/// The binaries for tests: `cargo build --workspace --bins --tests` (dev profile) in `root`.
/// Its features are resolved like `cargo test --workspace`'s (dev-dependencies included), so
/// after that command it builds nothing, where building the two packages alone would rebuild
/// every dependency whose features differ.
pub fn build_test_binaries(root: &Path) -> Result<Binaries> {
    let args = ["build", "--workspace", "--bins", "--tests"].map(String::from);
    cargo_build(root, args.to_vec(), None)
}

/// Runs `cargo <args> --message-format=json-render-diagnostics` in `root` (command line
/// printed) and returns the echo-server and loadgen executables it reports.
fn cargo_build(root: &Path, mut args: Vec<String>, target_dir: Option<&Path>) -> Result<Binaries> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    args.push("--message-format=json-render-diagnostics".into());
    let mut command = Command::new(&cargo);
    command.args(&args).current_dir(root).stdout(Stdio::piped());
    if let Some(dir) = target_dir {
        command.env("CARGO_TARGET_DIR", dir);
    }
    eprintln!(
        "$ {}{}",
        target_dir
            .map(|dir| format!("CARGO_TARGET_DIR={} ", quote(&dir.display().to_string())))
            .unwrap_or_default(),
        display_command(Path::new(&cargo), &args)
    );
    let mut child = command.spawn().context("starting cargo build")?;
    let stdout = child.stdout.take().context("cargo build stdout")?;
    let (mut echo_server, mut loadgen) = (None, None);
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo build output")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let (Some(name), Some(executable)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) else {
            continue;
        };
        // The executables themselves, not a bin target's unit-test harness (`--tests`).
        let is_bin = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"))
            && message["profile"]["test"] == false;
        match name {
            "echo-server" if is_bin => echo_server = Some(PathBuf::from(executable)),
            "loadgen" if is_bin => loadgen = Some(PathBuf::from(executable)),
            _ => {}
        }
    }
    let status = child.wait().context("waiting for cargo build")?;
    interrupt::check()?;
    if !status.success() {
        bail!("cargo build failed ({status}) in {}", root.display());
    }
    Ok(Binaries {
        echo_server: echo_server.context("cargo build produced no echo-server binary")?,
        loadgen: loadgen.context("cargo build produced no loadgen binary")?,
    })
}

/// CPUs this process may run on (from `sched_getaffinity`), in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most `size_of` bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Splits the allowed CPUs into (server, loadgen) halves; `None` with fewer than two CPUs.
pub fn split_cpus(cpus: &[usize]) -> Option<(Vec<usize>, Vec<usize>)> {
    if cpus.len() < 2 {
        return None;
    }
    let server_count = cpus.len() / 2;
    Some((cpus[..server_count].to_vec(), cpus[server_count..].to_vec()))
}

/// The CPU set of `cpus`, for `sched_setaffinity`.
pub fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: zeroed cpu_set_t is a valid empty set; CPU_SET only writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        set
    }
}

/// Makes `command` start pinned to `cpus` (sched_setaffinity in the child before exec, so every
/// thread it later spawns inherits the mask).
pub fn pin_command(command: &mut Command, cpus: &[usize]) {
    let set = cpu_set(cpus);
    // SAFETY: the closure only calls sched_setaffinity, which is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A child process in its own process group, stopped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
    grace: Duration,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `command` in a new process group.
    pub fn spawn(mut command: Command, name: &str, grace: Duration) -> Result<Self> {
        command.process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            child,
            name: name.to_string(),
            grace,
            status: None,
        })
    }

    /// The child's PID (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's standard input and output, when they were piped (each can be taken once).
    pub fn take_stdio(&mut self) -> (Option<ChildStdin>, Option<ChildStdout>) {
        (self.child.stdin.take(), self.child.stdout.take())
    }

    /// The exit status if the child has ended, without blocking. When it has, anything it left
    /// in its process group is killed *before* the child is reaped (while its zombie still
    /// holds the PID, so the group id cannot have been reused by an unrelated process).
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        if !exited_without_reaping(self.child.id()) {
            return Ok(None);
        }
        self.signal_group(libc::SIGKILL);
        let status = self
            .child
            .wait()
            .with_context(|| format!("reaping {}", self.name))?;
        self.status = Some(status);
        Ok(self.status)
    }

    /// Waits up to `timeout` for the child to end by itself; `Ok(None)` on timeout. Returns
    /// early with [`interrupt::Interrupted`] when a stop signal arrives.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(Some(status));
            }
            interrupt::check()?;
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal_group(&self, signal: i32) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscall; the group is our own child's (its pid is the pgid).
        unsafe {
            libc::kill(-pgid, signal);
        }
    }

    /// SIGTERM to the child's group, up to `grace` to exit, then SIGKILL. Returns the status and
    /// whether SIGKILL was needed.
    pub fn stop(&mut self) -> Result<(ExitStatus, bool)> {
        if let Some(status) = self.try_status()? {
            return Ok((status, false));
        }
        self.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status()? {
                return Ok((status, false));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.signal_group(libc::SIGKILL);
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        self.status = Some(status);
        Ok((status, true))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.stop();
        }
    }
}

/// True when the child `pid` has exited; it stays a zombie (not reaped), so its PID and process
/// group id stay reserved until [`Child::wait`].
fn exited_without_reaping(pid: u32) -> bool {
    // SAFETY: siginfo_t is plain data; waitid writes into it and never reaps with WNOWAIT.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let result = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        result == 0 && info.si_pid() != 0
    }
}

/// How xtask knows that a server is ready.
#[derive(Debug, Clone)]
pub enum Readiness {
    /// The first stdout line is `listening on ADDR` (echolab's contract).
    ListenLine,
    /// The server was given this port; ready once a TCP connect succeeds.
    Connect(SocketAddr),
}

/// A server to start: its command line and how it signals readiness.
#[derive(Debug, Clone)]
pub struct ServerLaunch {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub readiness: Readiness,
}

impl ServerLaunch {
    /// An external server from a shell command with `{port}`: picks a free loopback port,
    /// substitutes it, runs `sh -c 'exec CMD'`. The template was checked for `{port}` when the
    /// flag was parsed.
    pub fn external(name: &str, command_template: &str) -> Result<Self> {
        let port = free_port()?;
        let command = command_template.replace("{port}", &port.to_string());
        Ok(Self {
            name: name.to_string(),
            program: PathBuf::from("sh"),
            args: vec!["-c".into(), format!("exec {command}")],
            readiness: Readiness::Connect(SocketAddr::from(([127, 0, 0, 1], port))),
        })
    }

    /// The command line as printed.
    pub fn display(&self) -> String {
        display_command(&self.program, &self.args)
    }
}

/// A free port on 127.0.0.1 right now (bind port 0, read it, release it).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// A started server: its address and its process guard.
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    pub guard: ChildGuard,
    pub name: String,
}

/// Parses `listening on ADDR`.
pub fn parse_listen_line(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("listening on ")?
        .trim()
        .parse()
        .ok()
}

/// Starts `launch` (pinned to `cpus` if given; stderr to `log`) and waits until it is ready.
/// On any failure the child is stopped before the error returns.
pub fn start_server(
    launch: &ServerLaunch,
    cpus: Option<&[usize]>,
    log: Option<&Path>,
    ready_timeout: Duration,
) -> Result<RunningServer> {
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    match log {
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("creating {}", path.display()))?;
            command.stderr(file);
        }
        None => {
            command.stderr(Stdio::null());
        }
    }
    if let Some(cpus) = cpus {
        pin_command(&mut command, cpus);
    }
    let mut guard = ChildGuard::spawn(command, &launch.name, Duration::from_secs(5))
        .with_context(|| format!("command: {}", launch.display()))?;
    let stdout = guard.child.stdout.take().context("server stdout")?;
    let (line_tx, line_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        // Forward lines until the server ends; later lines are drained so it never blocks.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = line_tx.send(line);
        }
    });
    let started = Instant::now();
    let log_hint = log
        .map(|path| format!(" (its stderr is in {})", path.display()))
        .unwrap_or_default();
    loop {
        interrupt::check()?;
        if let Some(status) = guard.try_status()? {
            bail!(
                "server {} exited ({status}) before it was ready{log_hint}; command: {}",
                launch.name,
                launch.display()
            );
        }
        if started.elapsed() > ready_timeout {
            let expected = match launch.readiness {
                Readiness::ListenLine => "print `listening on ADDR`".to_string(),
                Readiness::Connect(addr) => format!("accept connections on {addr}"),
            };
            guard.stop()?;
            bail!(
                "server {} did not {expected} within {}{log_hint}; stopped it; command: {}",
                launch.name,
                humantime::format_duration(ready_timeout),
                launch.display()
            );
        }
        match &launch.readiness {
            Readiness::ListenLine => match line_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    let Some(addr) = parse_listen_line(&line) else {
                        guard.stop()?;
                        bail!(
                            "server {} printed {line:?} where `listening on ADDR` was expected; command: {}",
                            launch.name,
                            launch.display()
                        );
                    };
                    return Ok(RunningServer {
                        addr,
                        guard,
                        name: launch.name.clone(),
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
            },
            Readiness::Connect(addr) => {
                if TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok() {
                    return Ok(RunningServer {
                        addr: *addr,
                        guard,
                        name: launch.name.clone(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Server CPU time (user + system, all threads) in seconds, from `/proc/PID/stat`.
pub fn proc_cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_proc_stat_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / clock_ticks_per_second())
        .with_context(|| format!("parsing {path}"))
}

/// CPU time of a whole process group in seconds: utime + stime + cutime + cstime of every live
/// process whose process group is `pgid`. A server xtask starts leads its own group, so this
/// also counts the workers of a forking server (and, through cutime/cstime, the children they
/// already reaped), which `/proc/PID/stat` of the leader alone misses.
pub fn group_cpu_seconds(pgid: u32) -> Result<f64> {
    let mut ticks = 0;
    let mut found = false;
    for (stat, _) in group_members(pgid)? {
        ticks += parse_proc_stat_cpu_ticks(&stat)? + parse_proc_stat_child_ticks(&stat)?;
        found = true;
    }
    anyhow::ensure!(found, "no process in group {pgid}");
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// What a process group had used at one instant: CPU time and run-queue wait of every live
/// thread (from `/proc/PID/task/TID/schedstat`, in ns), and the same CPU time as `/proc/PID/stat`
/// counts it (10 ms ticks, but it keeps threads that exited and children already reaped).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuSample {
    /// When the thread counters were read (the middle of reading them).
    pub at: SystemTime,
    /// Σ time on a CPU of the live threads (schedstat field 1), ns.
    pub exec_ns: u64,
    /// Σ time runnable but waiting for a CPU (schedstat field 2), ns.
    pub wait_ns: u64,
    /// utime + stime + cutime + cstime of every member, in ns (10 ms resolution).
    pub ticks_ns: u64,
}

/// The CPU of process group `pgid` now (see [`CpuSample`]). The group is listed first, so the
/// instant `at` brackets only the quick reads of the threads' counters.
pub fn group_cpu_sample(pgid: u32) -> Result<CpuSample> {
    let members = group_members(pgid)?;
    anyhow::ensure!(!members.is_empty(), "no process in group {pgid}");
    let tick_ns = 1e9 / clock_ticks_per_second();
    let mut ticks = 0;
    for (stat, _) in &members {
        ticks += parse_proc_stat_cpu_ticks(stat)? + parse_proc_stat_child_ticks(stat)?;
    }
    let before = SystemTime::now();
    let (mut exec_ns, mut wait_ns) = (0, 0);
    for (_, pid) in &members {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            // Threads come and go while we read: a vanished one is skipped.
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat"))
                && let Some((exec, wait)) = parse_schedstat(&text)
            {
                exec_ns += exec;
                wait_ns += wait;
            }
        }
    }
    let after = SystemTime::now();
    let middle = after.duration_since(before).unwrap_or_default() / 2;
    Ok(CpuSample {
        at: before + middle,
        exec_ns,
        wait_ns,
        ticks_ns: (ticks as f64 * tick_ns) as u64,
    })
}

/// (time on a CPU, time waiting for one) in ns from a `schedstat` line.
pub fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    Some((fields.next()?.ok()?, fields.next()?.ok()?))
}

/// The CPU a process group used between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuWindow {
    /// Wall time between the samples, seconds.
    pub wall_s: f64,
    /// CPU time (all threads), seconds: from the threads' ns counters, or from the 10 ms ticks
    /// when those show more (a thread or child ended in between and took its counters along).
    pub cpu_s: f64,
    /// Time runnable but waiting for a CPU, seconds (live threads only).
    pub wait_s: f64,
}

impl CpuWindow {
    /// The window from `start` to `end`; `None` when the samples are not in order.
    pub fn between(start: &CpuSample, end: &CpuSample) -> Option<Self> {
        let wall_s = end.at.duration_since(start.at).ok()?.as_secs_f64();
        if wall_s <= 0.0 {
            return None;
        }
        let exec_ns = end.exec_ns.checked_sub(start.exec_ns);
        let ticks_ns = end.ticks_ns.saturating_sub(start.ticks_ns);
        // Two ticks of slack: the tick counts are read a moment before the thread counters.
        let tick_slack = (2e9 / clock_ticks_per_second()) as u64;
        let cpu_ns = match exec_ns {
            Some(exec) if ticks_ns <= exec + tick_slack => exec,
            _ => ticks_ns,
        };
        Some(Self {
            wall_s,
            cpu_s: cpu_ns as f64 / 1e9,
            wait_s: end.wait_ns.saturating_sub(start.wait_ns) as f64 / 1e9,
        })
    }

    /// CPU time over wall time (1.0 = one CPU busy the whole window).
    pub fn cpu_share(&self) -> f64 {
        self.cpu_s / self.wall_s
    }

    /// (CPU + run-queue wait) over wall time: how much of the window the server had work, on a
    /// CPU or waiting for one (1.0 for one thread that never slept).
    pub fn runnable_share(&self) -> f64 {
        (self.cpu_s + self.wait_s) / self.wall_s
    }
}

/// The largest peak RSS (`VmHWM`, KiB) of any live process in group `pgid`.
pub fn group_peak_rss_kib(pgid: u32) -> Result<u64> {
    group_members(pgid)?
        .into_iter()
        .filter_map(|(_, pid)| proc_peak_rss_kib(pid).ok())
        .max()
        .with_context(|| format!("no VmHWM for process group {pgid}"))
}

/// `(stat line, pid)` of every live process whose process group (field 5) is `pgid`.
fn group_members(pgid: u32) -> Result<Vec<(String, u32)>> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .context("listing /proc")?
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while we read: a vanished one is simply skipped.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if parse_proc_stat_pgrp(&stat).ok() == Some(pgid) {
            members.push((stat, pid));
        }
    }
    Ok(members)
}

/// The fields after the command name of a `/proc/PID/stat` line; `fields[0]` is field 3.
pub fn stat_fields(stat: &str) -> Result<Vec<&str>> {
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let after_name = stat
        .rfind(')')
        .map(|end| &stat[end + 1..])
        .context("no ')' in stat line")?;
    Ok(after_name.split_whitespace().collect())
}

/// The process group (field 5) from a `/proc/PID/stat` line.
pub fn parse_proc_stat_pgrp(stat: &str) -> Result<u32> {
    Ok(stat_fields(stat)?.get(2).context("no pgrp")?.parse()?)
}

/// cutime + cstime (fields 16 and 17): CPU of children already waited for, in clock ticks.
pub fn parse_proc_stat_child_ticks(stat: &str) -> Result<u64> {
    let fields = stat_fields(stat)?;
    let cutime: i64 = fields.get(13).context("no cutime")?.parse()?;
    let cstime: i64 = fields.get(14).context("no cstime")?.parse()?;
    Ok((cutime + cstime).max(0) as u64)
}

/// utime + stime (fields 14 and 15) from a `/proc/PID/stat` line, in clock ticks.
pub fn parse_proc_stat_cpu_ticks(stat: &str) -> Result<u64> {
    let fields = stat_fields(stat)?;
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Peak resident set size (`VmHWM`) in KiB, from `/proc/PID/status`.
pub fn proc_peak_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_hwm_kib(&status).with_context(|| format!("no VmHWM in {path}"))
}

/// The `VmHWM:` value in KiB from a `/proc/PID/status` text.
pub fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

/// The output of a finished (or stopped) loadgen run.
#[derive(Debug)]
pub struct LoadgenOutcome {
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
}

/// Runs loadgen with `args` (pinned to `cpus` if given), stdout+stderr into `log`; kills it if
/// it outlives `timeout`. Interrupt-aware.
pub fn run_loadgen(
    loadgen: &Path,
    args: &[String],
    cpus: Option<&[usize]>,
    log: &Path,
    timeout: Duration,
) -> Result<LoadgenOutcome> {
    let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = Command::new(loadgen);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    if let Some(cpus) = cpus {
        pin_command(&mut command, cpus);
    }
    let mut guard = ChildGuard::spawn(command, "loadgen", Duration::from_secs(2))?;
    match guard.wait_timeout(timeout)? {
        Some(status) => Ok(LoadgenOutcome {
            status: Some(status),
            timed_out: false,
        }),
        None => {
            guard.stop()?;
            Ok(LoadgenOutcome {
                status: None,
                timed_out: true,
            })
        }
    }
}

/// Output of a short command (git, uname …) or `None` if it fails.
pub fn command_output(program: &str, args: &[&str], dir: &Path) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_after_a_tricky_name() {
        // Field 2 may contain spaces and parentheses; utime=1234 stime=56 (fields 14, 15).
        let stat = "4242 (echo (server) x) S 1 4242 4242 0 -1 4194560 120 0 0 0 1234 56 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_proc_stat_cpu_ticks(stat).expect("parses"), 1290);
        assert!(parse_proc_stat_cpu_ticks("garbage").is_err());
        // Our own process has a readable stat.
        assert!(proc_cpu_seconds(std::process::id()).expect("own stat") >= 0.0);
    }

    #[test]
    fn cpu_windows_from_thread_counters_or_ticks() {
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let tick = (1e9 / clock_ticks_per_second()) as u64;
        let sample = |ms, exec_ns, wait_ns, ticks_ns| CpuSample {
            at: at(ms),
            exec_ns,
            wait_ns,
            ticks_ns,
        };
        // 0.8 s of CPU and 0.1 s of waiting in a 1 s window: the ns counters count.
        let start = sample(1_000, 5_000_000_000, 100, 50 * tick);
        let end = sample(2_000, 5_800_000_000, 100_000_100, 50 * tick + 800_000_000);
        let window = CpuWindow::between(&start, &end).expect("in order");
        assert!((window.cpu_s - 0.8).abs() < 1e-9 && (window.wall_s - 1.0).abs() < 1e-9);
        assert!((window.cpu_share() - 0.8).abs() < 1e-9);
        assert!((window.runnable_share() - 0.9).abs() < 1e-9);
        // A thread ended in between: its ns counter is gone, the ticks keep its time.
        let end = sample(2_000, 4_900_000_000, 0, 50 * tick + 700_000_000);
        let window = CpuWindow::between(&start, &end).expect("in order");
        assert!((window.cpu_s - 0.7).abs() < 1e-9, "{window:?}");
        assert_eq!(CpuWindow::between(&end, &start), None);
        assert_eq!(parse_schedstat("123 456 7\n"), Some((123, 456)));
        assert_eq!(parse_schedstat("x"), None);
        // Our own process: its threads have counters, and they grow.
        let first = group_cpu_sample(own_group()).expect("own group");
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        let second = group_cpu_sample(own_group()).expect("own group");
        assert!(second.exec_ns > first.exec_ns, "{first:?} {second:?}");
    }

    fn own_group() -> u32 {
        // SAFETY: getpgrp has no preconditions.
        unsafe { libc::getpgrp() as u32 }
    }

    #[test]
    fn vm_hwm_from_status() {
        let status =
            "Name:\techo-server\nVmPeak:\t  10000 kB\nVmHWM:\t    2876 kB\nVmRSS:\t 2800 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(2876));
        assert_eq!(parse_vm_hwm_kib("Name: x\n"), None);
        assert!(proc_peak_rss_kib(std::process::id()).expect("own status") > 0);
    }

    #[test]
    fn listen_lines() {
        assert_eq!(
            parse_listen_line("listening on 127.0.0.1:41234\n"),
            Some("127.0.0.1:41234".parse().expect("addr"))
        );
        assert_eq!(
            parse_listen_line("listening on [::1]:80"),
            Some("[::1]:80".parse().expect("addr"))
        );
        assert_eq!(parse_listen_line("Listening on 127.0.0.1:1"), None);
        assert_eq!(parse_listen_line("listening on somewhere"), None);
    }

    #[test]
    fn cpus_split_into_halves() {
        assert_eq!(split_cpus(&[0]), None);
        assert_eq!(split_cpus(&[0, 1]), Some((vec![0], vec![1])));
        assert_eq!(
            split_cpus(&[2, 3, 5, 7, 8]),
            Some((vec![2, 3], vec![5, 7, 8]))
        );
        assert!(!allowed_cpus().is_empty());
    }

    #[test]
    fn command_lines_are_pasteable() {
        assert_eq!(quote("--addr"), "--addr");
        assert_eq!(quote("p99<=1ms"), "'p99<=1ms'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(
            display_command(
                Path::new("/bin/loadgen"),
                &["--target".into(), "a b".into()]
            ),
            "/bin/loadgen --target 'a b'"
        );
    }

    #[test]
    fn external_servers_get_a_free_loopback_port() {
        let launch = ServerLaunch::external("s", "socat TCP-LISTEN:{port} PIPE").expect("valid");
        let Readiness::Connect(addr) = launch.readiness else {
            panic!("external servers are ready when they accept");
        };
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        assert_eq!(
            launch.args[1],
            format!("exec socat TCP-LISTEN:{} PIPE", addr.port())
        );
    }

    #[test]
    fn group_cpu_counts_a_forked_worker_the_leader_does_not_show() {
        use std::os::unix::process::CommandExt;
        // The leader only sleeps; its forked child burns CPU.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done & exec sleep 30"])
            .process_group(0)
            .spawn()
            .expect("sh starts");
        let pgid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut group = 0.0;
        while std::time::Instant::now() < deadline {
            group = group_cpu_seconds(pgid).unwrap_or(0.0);
            if group >= 0.2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let leader = proc_cpu_seconds(pgid).unwrap_or(f64::NAN);
        let members = group_members(pgid).map(|m| m.len()).unwrap_or(0);
        let peak = group_peak_rss_kib(pgid).unwrap_or(0);
        // SAFETY: kill(2) on the process group this test created.
        unsafe {
            libc::kill(-(pgid as i32), libc::SIGKILL);
        }
        let _ = child.wait();
        assert!(members >= 2, "leader and forked child: {members}");
        assert!(group >= 0.2, "group CPU {group}");
        assert!(leader < 0.1, "the sleeping leader itself used {leader}");
        assert!(peak > 0);
    }
}
