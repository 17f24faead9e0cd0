//! `reactor-pool --workers 2` against `event-loop` at many persistent connections (issue 11,
//! item 5): the server pinned to one CPU, loadgen (in this process) to another, interleaved
//! trials, every figure printed beside the target it is read against. It measures; it asserts
//! nothing about speed (a shared machine moves throughput by 2× between trials).
//!
//! ```sh
//! cargo bench -p echo-server --bench reactor_pool
//! ECHO_BENCH_TRIALS=5 ECHO_BENCH_SECS=3 ECHO_BENCH_CONNECTIONS=128,1000 cargo bench -p echo-server --bench reactor_pool
//! # Unpinned (server and loadgen share every CPU, as with no taskset), 4 messages in flight:
//! ECHO_BENCH_PIN=0 ECHO_BENCH_DEPTH=4 ECHO_BENCH_CONNECTIONS=8,16 cargo bench -p echo-server --bench reactor_pool
//! ```
//!
//! Per trial: a fresh server (`--strategy reactor-pool --workers 2` or `--strategy event-loop`,
//! which runs one loop on its one CPU), a warm-up run, then a measured closed-loop run of 64-byte
//! ping-pong messages. Server CPU is utime + stime from `/proc/PID/stat` over the measured run;
//! context switches are the sum over the server's threads (`/proc/PID/task/*/status`). The
//! targets: 0 starved and Jain ≥ 0.99 in every trial; median messages/s ≥ 0.8× event-loop's;
//! median server CPU per message ≤ 1.25× event-loop's.

use std::io::BufReader;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "../tests/common/mod.rs"]
mod common;

const SERVERS: [(&str, &[&str]); 2] = [
    (
        "reactor-pool",
        &["--strategy", "reactor-pool", "--workers", "2"],
    ),
    ("event-loop", &["--strategy", "event-loop"]),
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one trial measured.
#[derive(Debug, Clone)]
struct Trial {
    messages_per_s: f64,
    starved: u64,
    jain: f64,
    p99_us: u64,
    server_cpu_us_per_message: f64,
    context_switches_per_message: f64,
    loadgen_saturated: bool,
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(args: &[&str], cpu: Option<usize>) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_echo-server"));
        command
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(cpu) = cpu {
            common::pin_command(&mut command, cpu);
        }
        let mut child = command.spawn().expect("spawn echo-server");
        let addr =
            common::listening_addr(&mut BufReader::new(child.stdout.take().expect("stdout")));
        Server { child, addr }
    }

    /// utime + stime of the whole process, in seconds.
    fn cpu_s(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/PID/stat");
        let after = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // SAFETY: sysconf has no preconditions.
        ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }

    /// Voluntary and involuntary context switches, summed over the server's threads.
    fn context_switches(&self) -> u64 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .expect("read /proc/PID/task");
        tasks
            .filter_map(Result::ok)
            .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
            .flat_map(|status| {
                status
                    .lines()
                    .filter(|l| l.contains("ctxt_switches:"))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        common::sigterm(&self.child);
        common::wait_for_exit(&mut self.child, Duration::from_secs(20));
    }
}

fn loadgen_config(addr: SocketAddr, connections: usize, window: Duration) -> loadgen::Config {
    let mut config = loadgen::Config::new(addr.to_string());
    config.connections = connections;
    config.depth = Some(env_or("ECHO_BENCH_DEPTH", 1));
    config.duration_ms = Some(window.as_millis() as u64);
    config.warmup_ms = 0;
    config.timeout_ms = 20_000;
    config.quiet = true;
    config
}

fn trial(args: &[&str], connections: usize, window: Duration, server_cpu: Option<usize>) -> Trial {
    let server = Server::start(args, server_cpu);
    // Warm-up: connections, buffers, the poller's batch sizes; not measured.
    loadgen::run(&loadgen_config(server.addr, connections, window / 4)).expect("warm-up run");
    let (cpu_before, switches_before) = (server.cpu_s(), server.context_switches());
    let report =
        loadgen::run(&loadgen_config(server.addr, connections, window)).expect("measured run");
    let (cpu_after, switches_after) = (server.cpu_s(), server.context_switches());
    assert_eq!(report.errors.total, 0, "{:?}", report.errors.by_kind);
    let messages = report.messages.verified.max(1) as f64;
    Trial {
        messages_per_s: report.throughput.messages_per_s,
        starved: report.connections.starved,
        jain: report.connections.jain_fairness,
        p99_us: report.latency_us.p99,
        server_cpu_us_per_message: (cpu_after - cpu_before) * 1e6 / messages,
        context_switches_per_message: (switches_after - switches_before) as f64 / messages,
        loadgen_saturated: report.loadgen.saturated,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() {
    let trials: usize = env_or("ECHO_BENCH_TRIALS", 3);
    let window = Duration::from_secs_f64(env_or("ECHO_BENCH_SECS", 2.0));
    let connections: Vec<usize> = std::env::var("ECHO_BENCH_CONNECTIONS")
        .unwrap_or_else(|_| "128,1000".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let depth: usize = env_or("ECHO_BENCH_DEPTH", 1);
    let cpus = common::allowed_cpus();
    let (server_cpu, loadgen_cpu) = match cpus.as_slice() {
        [first, second, ..] if env_or("ECHO_BENCH_PIN", 1) == 1 => (Some(*first), Some(*second)),
        _ => (None, None),
    };
    match (server_cpu, loadgen_cpu) {
        (Some(server), Some(loadgen)) => {
            common::pin_self(loadgen).expect("pin loadgen");
            println!("server pinned to CPU {server}, loadgen to CPU {loadgen}");
        }
        _ => println!("not pinned: server and loadgen share CPUs {cpus:?}"),
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average before: {}", load.trim());
    }
    println!(
        "{trials} interleaved trials of {window:?} per cell, 64-byte messages, closed loop, \
         {depth} in flight per connection"
    );
    println!(
        "{:<13} {:>6} {:>5} {:>10} {:>7} {:>6} {:>8} {:>10} {:>9}  loadgen",
        "server", "conns", "trial", "msg/s", "starved", "Jain", "p99 µs", "cpu µs/msg", "csw/msg"
    );
    let mut results: Vec<(usize, &str, Trial)> = Vec::new();
    for &conns in &connections {
        for t in 0..trials {
            // Alternate which server goes first, so drift spreads evenly.
            let order: Vec<usize> = if t % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
            for i in order {
                let (name, args) = SERVERS[i];
                let r = trial(args, conns, window, server_cpu);
                println!(
                    "{:<13} {:>6} {:>5} {:>10.0} {:>7} {:>6.3} {:>8} {:>10.2} {:>9.3}  {}",
                    name,
                    conns,
                    t + 1,
                    r.messages_per_s,
                    r.starved,
                    r.jain,
                    r.p99_us,
                    r.server_cpu_us_per_message,
                    r.context_switches_per_message,
                    if r.loadgen_saturated {
                        "saturated"
                    } else {
                        "ok"
                    }
                );
                results.push((conns, name, r));
            }
        }
    }
    println!("\nmedians, and reactor-pool against its targets:");
    for &conns in &connections {
        let of = |name: &str| -> Vec<Trial> {
            results
                .iter()
                .filter(|(c, n, _)| *c == conns && *n == name)
                .map(|(_, _, r)| r.clone())
                .collect()
        };
        let (pool, event_loop) = (of("reactor-pool"), of("event-loop"));
        let mps = |v: &[Trial]| median(v.iter().map(|r| r.messages_per_s).collect());
        let cpu = |v: &[Trial]| median(v.iter().map(|r| r.server_cpu_us_per_message).collect());
        let worst_jain = pool.iter().map(|r| r.jain).fold(1.0, f64::min);
        let starved: u64 = pool.iter().map(|r| r.starved).max().unwrap_or(0);
        let mps_ratio = mps(&pool) / mps(&event_loop);
        let cpu_ratio = cpu(&pool) / cpu(&event_loop);
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "{conns:>5} conns: reactor-pool {:.0} msg/s, {:.2} µs CPU/msg; event-loop {:.0} msg/s, \
             {:.2} µs CPU/msg",
            mps(&pool),
            cpu(&pool),
            mps(&event_loop),
            cpu(&event_loop)
        );
        println!(
            "             starved max {starved} (0: {}), Jain min {worst_jain:.3} (≥ 0.99: {}), \
             msg/s {mps_ratio:.2}× (≥ 0.8×: {}), CPU/msg {cpu_ratio:.2}× (≤ 1.25×: {})",
            verdict(starved == 0),
            verdict(worst_jain >= 0.99),
            verdict(mps_ratio >= 0.8),
            verdict(cpu_ratio <= 1.25)
        );
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average after: {}", load.trim());
    }
}
