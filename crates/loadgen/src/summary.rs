//! The human summary printed on stdout after a run: what was measured, in a few aligned lines,
//! with plain-words warnings when the numbers should not be trusted or some connections were
//! starved. Written to any `impl Write` so tests check it through a `Vec<u8>`.

use crate::errors::ErrorKind;
use crate::report::{Percentiles, Report};
use std::io::{self, Write};

const MIB: f64 = 1024.0 * 1024.0;

fn percentiles_line(p: &Percentiles) -> String {
    format!(
        "min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        p.min, p.p50, p.p90, p.p99, p.p999, p.max
    )
}

/// Writes the human summary of `report`.
pub fn write_summary(report: &Report, w: &mut (impl Write + ?Sized)) -> io::Result<()> {
    let c = &report.config;
    let model = match (c.rate_per_s, c.depth) {
        (None, cap) if c.stepped() => format!(
            "open loop in {} steps ({:?} arrivals){}",
            report.steps.len(),
            c.arrival,
            cap.map(|d| format!(", at most {d} in flight per connection"))
                .unwrap_or_default()
        )
        .to_lowercase(),
        (Some(rate), cap) => format!(
            "open loop {rate} msg/s ({:?} arrivals){}",
            c.arrival,
            cap.map(|d| format!(", at most {d} in flight per connection"))
                .unwrap_or_default()
        )
        .to_lowercase(),
        (None, d) => format!("closed loop, depth {}", d.unwrap_or(1)),
    };
    let churn = c
        .messages_per_connection
        .map(|m| format!(", reconnect every {m} messages"))
        .unwrap_or_default();
    writeln!(
        w,
        "loadgen → {}: {} connections on {} threads, {}-byte messages, {model}{churn}",
        c.target, c.connections, report.loadgen.threads, c.size_bytes
    )?;
    writeln!(
        w,
        "duration      {:.2} s measured (after {:.2} s warm-up)",
        report.duration_s,
        c.warmup_ms as f64 / 1000.0
    )?;
    if let Some(t) = &report.timing {
        writeln!(w, "timing        {}: {}", t.mode.as_str(), t.reason)?;
    }
    writeln!(
        w,
        "messages      {} verified of {} sent",
        report.messages.verified, report.messages.sent
    )?;
    let d = report.duration_s.max(f64::MIN_POSITIVE);
    writeln!(
        w,
        "throughput    {:.1} messages/s, {:.2} MiB/s sent, {:.2} MiB/s received",
        report.throughput.messages_per_s,
        report.bytes.sent as f64 / MIB / d,
        report.bytes.received as f64 / MIB / d
    )?;
    writeln!(w, "latency µs    {}", percentiles_line(&report.latency_us))?;
    if c.rate_per_s.is_some() {
        writeln!(
            w,
            "service µs    {}",
            percentiles_line(&report.service_time_us)
        )?;
    }
    if c.messages_per_connection.is_some() {
        writeln!(w, "connect µs    {}", percentiles_line(&report.connect_us))?;
    }
    let kinds: Vec<String> = ErrorKind::ALL
        .iter()
        .map(|k| format!("{} {}", k.as_str(), report.errors.count(*k)))
        .collect();
    writeln!(
        w,
        "errors        {} ({})",
        report.errors.total,
        kinds.join(", ")
    )?;
    for s in report.errors.samples.iter().take(3) {
        writeln!(w, "  {}: {}", s.kind.as_str(), s.detail)?;
    }
    let conns = &report.connections;
    writeln!(
        w,
        "connections   {} opened; messages per connection min {} median {} max {}; \
         Jain fairness {:.3}; {} starved",
        conns.opened,
        conns.min_messages,
        conns.median_messages,
        conns.max_messages,
        conns.jain_fairness,
        conns.starved
    )?;
    let l = &report.loadgen;
    writeln!(
        w,
        "loadgen cost  {:.2} s CPU ({:.2} s work, {:.2} s spin-waiting), {:.2} µs CPU and {:.2} µs \
         work per message; busiest thread {:.0}% busy, {:.0}% working",
        l.cpu_s,
        l.work_s,
        l.spin_s,
        l.cpu_per_message_us,
        l.work_per_message_us,
        l.busy_fraction * 100.0,
        l.work_fraction * 100.0
    )?;
    if let Some(s) = &report.schedule {
        writeln!(
            w,
            "schedule      target {:.1} msg/s, achieved {:.1}% of it; send lag p99 {} µs, max {} µs; \
             {} held back by the server",
            report.throughput.target_per_s.unwrap_or(0.0),
            report.throughput.achieved_ratio.unwrap_or(0.0) * 100.0,
            s.p99_lag_us,
            s.max_lag_us,
            s.held_back
        )?;
        writeln!(w, "loop lag µs   {}", percentiles_line(&s.loop_lag_us))?;
        if s.behind {
            writeln!(
                w,
                "WARNING: the load generator's own lateness is material: its loop wrote messages \
                 late by more than 5% of the latency it reports (at least 20 µs), so part of that \
                 latency is the instrument's, not the server's."
            )?;
        }
    }
    for step in &report.steps {
        writeln!(
            w,
            "step {:<3}     {:.0} msg/s for {:.2} s: achieved {:.1}%, latency p50 {} p99 {} µs, \
             loop lag p99 {} µs, errors {}, {:.0}% working{}{}",
            step.index,
            step.target_per_s,
            step.duration_s,
            step.throughput.achieved_ratio.unwrap_or(0.0) * 100.0,
            step.latency_us.p50,
            step.latency_us.p99,
            step.schedule.loop_lag_us.p99,
            step.errors.total,
            step.loadgen.work_fraction * 100.0,
            match step.slo_met {
                Some(true) => ", SLO met",
                Some(false) => ", SLO NOT MET",
                None => "",
            },
            if step.valid { "" } else { ", NOT VALID" }
        )?;
    }
    if conns.starved > 0 {
        writeln!(
            w,
            "WARNING: {} of {} connections waited longer than {} ms without any echo while \
             others were served (the server serves fewer connections at a time than are open, \
             e.g. a pool with fewer workers than connections).",
            conns.starved, c.connections, conns.stall_threshold_ms
        )?;
    }
    if report.unreachable() {
        writeln!(
            w,
            "ERROR: the target {} could not be reached: no connection was established.",
            c.target
        )?;
    }
    if !report.valid {
        writeln!(w, "NOT VALID: {}", report.invalid_reasons.join("; "))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::errors::{ErrorKind, ErrorSample};
    use crate::report::BuildInputs;
    use crate::stats::{SlotStats, ThreadResult, record_ns_as_us};

    /// A report over fixed data: 8 connections, two of them starved, one corrupt echo.
    fn fixed_report(open_loop: bool) -> Report {
        let mut config = Config::new("127.0.0.1:7878");
        config.connections = 8;
        config.threads = 2;
        config.duration_ms = Some(2_000);
        if open_loop {
            config.rate_per_s = Some(5_000.0);
        }
        let mut t = ThreadResult::new(0);
        for i in 0..1_000u64 {
            record_ns_as_us(&mut t.latency, 20_000 + i * 1_000);
            record_ns_as_us(&mut t.service, 20_000 + i * 100);
            record_ns_as_us(&mut t.schedule_lag, 50_000 + i * 30);
            record_ns_as_us(&mut t.loop_lag, 12_000_000 + i * 30);
        }
        t.messages_sent = 1_001;
        t.messages_verified = 1_000;
        t.bytes_sent = 1_001 * 64;
        t.bytes_received = 1_000 * 64 + 30;
        t.errors[ErrorKind::Corrupt.index()] = 1;
        t.samples.push(ErrorSample {
            kind: ErrorKind::Corrupt,
            connection: Some(3),
            message: Some(17),
            offset: Some(30),
            expected: Some(0x41),
            got: Some(0x40),
            at_s: 1.5,
            detail: "connection 3 message 17 byte 30: sent 0x41, got 0x40".into(),
        });
        t.opened = 8;
        t.ever_connected = true;
        t.slots = (0..8)
            .map(|slot| SlotStats {
                slot,
                messages: if slot < 2 { 0 } else { 1_000 / 6 },
                max_gap_ns: if slot < 2 { 2_000_000_000 } else { 1_000_000 },
            })
            .collect();
        t.cpu_ns = 500_000_000;
        t.wall_ns = 4_000_000_000;
        t.max_busy_fraction = 0.125;
        t.spin_ns = 100_000_000;
        t.max_work_fraction = 0.1;
        Report::build(
            &config,
            crate::env::capture(),
            &t,
            BuildInputs {
                threads: 2,
                duration_s: 2.0,
                cpu_s: 0.5,
                timing: Some(crate::timing::choose(
                    crate::config::TimingMode::Auto,
                    2,
                    &crate::timing::CpuView {
                        allowed: vec![0, 1, 2, 3],
                        online: 4,
                        busiest: None,
                    },
                )),
                ..BuildInputs::default()
            },
        )
        .unwrap()
    }

    fn summary(report: &Report) -> String {
        let mut out = Vec::new();
        write_summary(report, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn closed_loop_summary() {
        insta::assert_snapshot!(summary(&fixed_report(false)));
    }

    #[test]
    fn open_loop_summary_says_it_fell_behind() {
        insta::assert_snapshot!(summary(&fixed_report(true)));
    }
}
