//! The open loop's timing and cost, in one run (issue 9's figures): an in-process `event-loop`
//! echo server pinned to core 0, loadgen with one thread pinned to core 1 (as `cargo xtask`
//! pins them), 16 connections, 64-byte messages. Every figure from `OPEN_LOOP_TRIALS` trials
//! (default 3), interleaved, printed as median [min–max].
//!
//! 1. Timing: loop lag p99 and latency p99 at 2k, 20k and 60k msg/s, `--timing precise` against
//!    `--timing sleep`.
//! 2. The schedule from outside: the same rates (precise) against a server that stamps each
//!    message's arrival in the kernel; its lateness against the uniform schedule beside the loop
//!    lag loadgen reports.
//! 3. Work: closed loop against open loop at 60k and 100k msg/s, work (CPU minus spin-waiting)
//!    per message, and the ratio (goal: open ≤ 1.5× closed at ≥ 50k msg/s).
//! 4. The most one open-loop thread sustains (a stepped run, the highest step that is valid and
//!    achieves 99% of its rate) against what one closed-loop thread reaches (goal: ≥ 0.8×).
//! 5. Coordinated omission's ground truth: a server that pauses 100 ms every second; corrected
//!    p99 should be 100 − 0.01 × 1000 = 90 ms.
//!
//! Run: `cargo bench -p loadgen --bench open_loop` (about two minutes with the defaults; under
//! an exclusive lock that keeps other work off the machine, or on a quiet machine). Environment: `OPEN_LOOP_TRIALS`,
//! `OPEN_LOOP_SECONDS` (measured time per run, default 2), `OPEN_LOOP_PIN=0` to leave threads
//! unpinned, `OPEN_LOOP_SECTIONS` (e.g. `1,3`; default all).

#[path = "../tests/common/bench_env.rs"]
mod bench_env;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/stamp_echo.rs"]
mod stamp_echo;

use bench_env::{env_or, pin_to_cores};
use echo_server::{Config as ServerConfig, Server, Strategy};
use loadgen::{Config, RateStep, Report, TimingMode};

const CONNECTIONS: usize = 16;
const RATES: [f64; 3] = [2_000.0, 20_000.0, 60_000.0];

struct Bench {
    trials: usize,
    seconds: f64,
}

fn main() -> anyhow::Result<()> {
    let sections: Vec<u32> = std::env::var("OPEN_LOOP_SECTIONS")
        .unwrap_or_else(|_| "1,2,3,4,5".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let pin = std::env::var("OPEN_LOOP_PIN").map_or(true, |v| v != "0");
    let cores = loadgen::config::default_threads();
    let pinned = pin && cores >= 2 && pin_to_cores(&[0]);
    let bench = Bench {
        trials: env_or("OPEN_LOOP_TRIALS", 3),
        seconds: env_or("OPEN_LOOP_SECONDS", 2.0),
    };
    // Servers start while this thread is on core 0 (their threads inherit it); loadgen runs
    // after it moved to core 1.
    let mut server_config = ServerConfig::loopback(Strategy::EventLoop);
    server_config.workers = 1;
    let server = Server::start(server_config)?;
    let stamp_servers: Vec<_> = if sections.contains(&2) {
        (0..RATES.len())
            .map(|_| stamp_echo::StampServer::start(64))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let pause = sections.contains(&5).then(|| {
        common::TestServer::start(common::Behavior::Pause {
            period_ms: 1_000,
            pause_ms: 100,
        })
    });
    let pinned = pinned && pin_to_cores(&[1]);
    let target = server.local_addr().to_string();
    println!(
        "open_loop: {CONNECTIONS} connections, 64 B, 1 loadgen thread, {} s per run, {} trials; \
         event-loop server in-process on {target}; {}",
        bench.seconds,
        bench.trials,
        if pinned {
            "server on core 0, loadgen on core 1"
        } else {
            "not pinned"
        }
    );
    println!("load average at start: {}", load_average());
    if sections.contains(&1) {
        bench.timing(&target)?;
    }
    if sections.contains(&2) {
        bench.outside(stamp_servers)?;
    }
    if sections.contains(&3) || sections.contains(&4) {
        bench.work(&target, sections.contains(&4))?;
    }
    if let Some(pause) = pause {
        bench.ground_truth(&pause.target())?;
    }
    server.shutdown();
    println!("load average at end: {}", load_average());
    Ok(())
}

impl Bench {
    fn config(&self, target: &str, timing: TimingMode) -> Config {
        let mut c = Config::new(target);
        c.connections = CONNECTIONS;
        c.threads = 1;
        c.warmup_ms = 500;
        c.duration_ms = Some((self.seconds * 1000.0) as u64);
        c.timing = timing;
        c.quiet = true;
        c
    }

    fn open(&self, target: &str, rate: f64, timing: TimingMode) -> anyhow::Result<Report> {
        let mut c = self.config(target, timing);
        c.rate_per_s = Some(rate);
        loadgen::run(&c)
    }

    /// 1. Loop lag and latency, precise against sleep, at each rate.
    fn timing(&self, target: &str) -> anyhow::Result<()> {
        println!("\n1. timing: loop lag and latency p99 (µs), median [min-max] of the trials");
        let modes = [TimingMode::Precise, TimingMode::Sleep];
        let mut runs: Vec<Vec<Vec<Report>>> = vec![vec![Vec::new(); modes.len()]; RATES.len()];
        for trial in 0..self.trials {
            for (r, &rate) in RATES.iter().enumerate() {
                // Alternate which mode goes first so that drift spreads evenly.
                for m in order(modes.len(), trial + r) {
                    let report = self.open(target, rate, modes[m])?;
                    println!(
                        "   trial {trial} {rate:>6} msg/s {:<8} loop lag p50 {:>4} p99 {:>5} p99.9 {:>6} \
                         | latency p50 {:>4} p99 {:>6} | work {:.2} µs/msg | {}",
                        modes[m].as_str(),
                        report.schedule.map_or(0, |s| s.loop_lag_us.p50),
                        report.schedule.map_or(0, |s| s.loop_lag_us.p99),
                        report.schedule.map_or(0, |s| s.loop_lag_us.p999),
                        report.latency_us.p50,
                        report.latency_us.p99,
                        report.loadgen.work_per_message_us,
                        validity(&report)
                    );
                    runs[r][m].push(report);
                }
            }
        }
        println!(
            "   {:>8} {:<8} {:>26} {:>26} {:>18} {:>6}",
            "msg/s", "timing", "loop lag p99", "latency p99", "work µs/msg", "valid"
        );
        for (r, &rate) in RATES.iter().enumerate() {
            for (m, mode) in modes.iter().enumerate() {
                let reports = &runs[r][m];
                let lag: Vec<f64> = reports
                    .iter()
                    .map(|x| x.schedule.map_or(0, |s| s.loop_lag_us.p99) as f64)
                    .collect();
                let latency: Vec<f64> = reports.iter().map(|x| x.latency_us.p99 as f64).collect();
                let work: Vec<f64> = reports
                    .iter()
                    .map(|x| x.loadgen.work_per_message_us)
                    .collect();
                println!(
                    "   {rate:>8} {:<8} {:>26} {:>26} {:>18} {:>3}/{}",
                    mode.as_str(),
                    spread(&lag, 0),
                    spread(&latency, 0),
                    spread(&work, 2),
                    reports.iter().filter(|x| x.valid).count(),
                    reports.len()
                );
            }
        }
        Ok(())
    }

    /// 2. The schedule from outside, one server per rate.
    fn outside(&self, servers: Vec<stamp_echo::StampServer>) -> anyhow::Result<()> {
        println!(
            "\n2. the schedule from outside (precise; kernel arrival stamps against the uniform \
             schedule), µs"
        );
        for (server, &rate) in servers.into_iter().zip(RATES.iter()) {
            let report = self.open(&server.target(), rate, TimingMode::Precise)?;
            let arrivals = server.finish();
            let interval_ns = CONNECTIONS as f64 / rate * 1e9;
            let mut outside = stamp_echo::lateness_ns(&arrivals, interval_ns, 500e6);
            outside.sort_unstable();
            let at = |q: f64| {
                outside
                    .get(((outside.len().max(1) - 1) as f64 * q) as usize)
                    .map_or(0, |ns| ns / 1_000)
            };
            let lag = report.schedule.map(|s| s.loop_lag_us).unwrap_or_default();
            println!(
                "   {rate:>6} msg/s  loop lag p50 {:>4} p99 {:>5} p99.9 {:>6} | from outside \
                 p50 {:>4} p99 {:>5} p99.9 {:>6} ({} messages) | {}",
                lag.p50,
                lag.p99,
                lag.p999,
                at(0.5),
                at(0.99),
                at(0.999),
                outside.len(),
                validity(&report)
            );
        }
        Ok(())
    }

    /// 3. and 4. Work per message and the most one thread sustains, open against closed loop.
    fn work(&self, target: &str, sustain: bool) -> anyhow::Result<()> {
        println!("\n3. work (CPU minus spin-waiting) per message, open against closed loop");
        let (mut closed_rate, mut closed_work) = (Vec::new(), Vec::new());
        let mut open_work: Vec<Vec<f64>> = vec![Vec::new(); 2];
        let open_rates = [60_000.0, 100_000.0];
        let mut sustained = Vec::new();
        for trial in 0..self.trials {
            let closed = loadgen::run(&self.config(target, TimingMode::Precise))?;
            println!(
                "   trial {trial} closed loop: {:.0} msg/s, work {:.2} µs/msg, CPU {:.2} µs/msg, \
                 {:.0}% working | {}",
                closed.throughput.messages_per_s,
                closed.loadgen.work_per_message_us,
                closed.loadgen.cpu_per_message_us,
                closed.loadgen.work_fraction * 100.0,
                validity(&closed)
            );
            closed_rate.push(closed.throughput.messages_per_s);
            closed_work.push(closed.loadgen.work_per_message_us);
            for (i, &rate) in open_rates.iter().enumerate() {
                let open = self.open(target, rate, TimingMode::Precise)?;
                println!(
                    "   trial {trial} open loop {rate:.0}/s: achieved {:.1}%, work {:.2} µs/msg, \
                     CPU {:.2} µs/msg, {:.0}% working | {}",
                    open.throughput.achieved_ratio.unwrap_or(0.0) * 100.0,
                    open.loadgen.work_per_message_us,
                    open.loadgen.cpu_per_message_us,
                    open.loadgen.work_fraction * 100.0,
                    validity(&open)
                );
                open_work[i].push(open.loadgen.work_per_message_us);
            }
            if sustain {
                sustained.push(self.most_sustained(target)?);
            }
        }
        println!(
            "   closed loop: {} msg/s, work {} µs/msg",
            spread(&closed_rate, 0),
            spread(&closed_work, 2)
        );
        for (i, rate) in open_rates.iter().enumerate() {
            let ratios: Vec<f64> = open_work[i]
                .iter()
                .zip(&closed_work)
                .map(|(o, c)| o / c)
                .collect();
            println!(
                "   open loop {rate:.0}/s: work {} µs/msg; open/closed per trial {} (goal ≤ 1.5)",
                spread(&open_work[i], 2),
                spread(&ratios, 2)
            );
        }
        if sustain {
            let ratios: Vec<f64> = sustained
                .iter()
                .zip(&closed_rate)
                .map(|(s, c)| s / c)
                .collect();
            println!(
                "\n4. the most one open-loop thread sustains (valid, ≥ 99% achieved): {} msg/s; \
                 closed loop {} msg/s; ratio per trial {} (goal ≥ 0.8)",
                spread(&sustained, 0),
                spread(&closed_rate, 0),
                spread(&ratios, 2)
            );
        }
        Ok(())
    }

    /// The highest rate of a stepped run (60k msg/s up in steps of 20k, 1 s each) that was valid
    /// and achieved 99% of its target.
    fn most_sustained(&self, target: &str) -> anyhow::Result<f64> {
        let mut c = self.config(target, TimingMode::Precise);
        c.duration_ms = None;
        c.rate_steps = (0..10)
            .map(|k| RateStep {
                rate_per_s: 60_000.0 + 20_000.0 * k as f64,
                duration_ms: 1_000,
            })
            .collect();
        let report = loadgen::run(&c)?;
        let held: Vec<String> = report
            .steps
            .iter()
            .map(|s| {
                format!(
                    "{:.0}k{}",
                    s.target_per_s / 1e3,
                    if s.valid && s.throughput.achieved_ratio.unwrap_or(0.0) >= 0.99 {
                        ""
                    } else if s.loadgen.saturated {
                        " (saturated)"
                    } else if s.schedule.behind {
                        " (late)"
                    } else {
                        " (below rate)"
                    }
                )
            })
            .collect();
        println!("   steps: {}", held.join(", "));
        Ok(report
            .steps
            .iter()
            .take_while(|s| s.valid && s.throughput.achieved_ratio.unwrap_or(0.0) >= 0.99)
            .map(|s| s.target_per_s)
            .last()
            .unwrap_or(0.0))
    }

    /// 5. A server that pauses 100 ms every second: corrected p99 ≈ 90 ms.
    fn ground_truth(&self, target: &str) -> anyhow::Result<()> {
        let mut c = self.config(target, TimingMode::Auto);
        c.connections = 4;
        c.rate_per_s = Some(2_000.0);
        c.duration_ms = Some(((self.seconds.max(3.0)) * 1000.0) as u64);
        let mut p99 = Vec::new();
        for _ in 0..self.trials {
            let r = loadgen::run(&c)?;
            p99.push(r.latency_us.p99 as f64 / 1e3);
            println!(
                "   pause 100 ms every 1 s: corrected p99 {:.1} ms, p95 {:.1} ms, service p99 \
                 {:.1} ms | {}",
                r.latency_us.p99 as f64 / 1e3,
                r.latency_us.p95 as f64 / 1e3,
                r.service_time_us.p99 as f64 / 1e3,
                validity(&r)
            );
        }
        println!(
            "\n5. coordinated omission's ground truth: corrected p99 {} ms (expected 90)",
            spread(&p99, 1)
        );
        Ok(())
    }
}

/// `0..n` starting at `start % n`.
fn order(n: usize, start: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + start) % n)
}

/// `median [min–max]`.
fn spread(xs: &[f64], decimals: usize) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[(sorted.len() - 1) / 2];
    format!(
        "{median:.decimals$} [{:.decimals$}–{:.decimals$}]",
        sorted[0],
        sorted[sorted.len() - 1]
    )
}

fn validity(r: &Report) -> String {
    if r.valid {
        "valid".into()
    } else if r.loadgen.saturated {
        "invalid: saturated".into()
    } else if r.schedule.is_some_and(|s| s.behind) {
        "invalid: loop late".into()
    } else {
        format!("invalid: {}", r.invalid_reasons.join("; "))
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
