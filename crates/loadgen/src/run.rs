//! Runs a measurement: resolves the target, raises the open-files limit, starts the client
//! threads, relays their interval histograms and live counters to an [`Observer`] (the CLI's
//! progress bar and `.hlog` writer), then merges what they measured into a [`Report`].

use crate::config::Config;
use crate::report::{BuildInputs, Report};
use crate::stats::{LiveCounters, ThreadResult, new_histogram};
use crate::worker::{INTERVAL_NS, IntervalReport, Timing, Window, WorkerSetup, run_worker};
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// A snapshot for a live display, taken about ten times a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Time since the start of the run (warm-up included).
    pub elapsed: Duration,
    /// Length of the warm-up.
    pub warmup: Duration,
    /// Planned length of the measured window (`None` for a `--messages` bound).
    pub window: Option<Duration>,
    /// Messages verified in the measured window so far.
    pub verified: u64,
    /// Planned messages (`--messages`), if bounded by count.
    pub messages_planned: Option<u64>,
    /// Errors so far.
    pub errors: u64,
    /// Connections without a verified echo for longer than the stall threshold, right now.
    pub starved_now: u64,
    /// Verified messages per second over the last complete interval.
    pub last_interval_per_s: Option<f64>,
    /// p99 latency (µs) of the last complete one-second interval.
    pub last_interval_p99_us: Option<u64>,
}

/// Receives what a run produces while it runs. Every method has a do-nothing default.
pub trait Observer {
    /// Called about ten times a second.
    fn on_progress(&mut self, _progress: &Progress) {}
    /// One complete interval of the measured window: `start` is its offset from the start of
    /// the window; `latency` holds the latencies (µs) of messages completed in it.
    fn on_interval(
        &mut self,
        _start: Duration,
        _length: Duration,
        _window_start: SystemTime,
        _latency: &Histogram<u64>,
    ) {
    }
    /// Polled about ten times a second: true ends the run early (e.g. on Ctrl-C). Messages in
    /// flight are abandoned (not counted as errors) and the report covers the time run so far.
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// Runs the measurement described by `config` and returns its report. No output is written.
pub fn run(config: &Config) -> anyhow::Result<Report> {
    run_with(config, &mut NoObserver)
}

/// Like [`run`], reporting progress and interval histograms to `observer` as it goes.
pub fn run_with(config: &Config, observer: &mut dyn Observer) -> anyhow::Result<Report> {
    config.validate().map_err(|e| anyhow::anyhow!(e))?;
    let target = resolve(&config.target)?;
    let source_addrs = parse_source_addrs(&config.source_addrs)?;
    check_source_family(target, &source_addrs)?;
    raise_nofile_limit(config.connections as u64 + 64)?;
    if let Some(at) = config.start_at_unix_s {
        wait_until_unix(at);
    }

    let threads = config.threads.min(config.connections).max(1);
    let start_wall = SystemTime::now();
    let env = crate::env::capture_at(start_wall);
    let base = Instant::now();
    let measure_start_ns = config.warmup_ms * 1_000_000;
    let measure_end_ns = match (config.messages, config.duration_ms) {
        (Some(_), _) => None,
        (None, Some(d)) => Some(measure_start_ns + d * 1_000_000),
        (None, None) => bail!("give --duration or --messages"),
    };
    let timing = Timing {
        base,
        window: Window {
            measure_start_ns,
            measure_end_ns,
        },
    };
    let config_arc = Arc::new(config.clone());
    let source_addrs = Arc::new(source_addrs);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<IntervalReport>();
    // Per thread: interval histograms handed back after they were added up, for reuse.
    let mut recycle = Vec::new();
    let mut lives = Vec::new();
    let mut handles = Vec::new();
    for thread in 0..threads {
        let live = Arc::new(LiveCounters::default());
        lives.push(live.clone());
        let (back_tx, back_rx) = mpsc::channel::<Histogram<u64>>();
        recycle.push(back_tx);
        let setup = WorkerSetup {
            thread,
            config: config_arc.clone(),
            target,
            source_addrs: source_addrs.clone(),
            slots: (thread..config.connections).step_by(threads).collect(),
            timing: timing.clone(),
            live,
            stop: stop.clone(),
            intervals: tx.clone(),
            recycled: back_rx,
        };
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-{thread}"))
            .spawn(move || run_worker(setup))
            .context("spawning a client thread")?;
        handles.push(handle);
    }
    drop(tx);

    let window_start_wall = start_wall + Duration::from_nanos(measure_start_ns);
    let mut pending: BTreeMap<u64, (usize, Histogram<u64>)> = BTreeMap::new();
    let mut next_interval = 0u64;
    let mut last_interval: Option<(f64, u64)> = None;
    // Emitted interval sums, reset for the next interval (no allocation per second).
    let mut spare: Vec<Histogram<u64>> = Vec::new();
    let emit = |index: u64, h: &Histogram<u64>, observer: &mut dyn Observer| {
        observer.on_interval(
            Duration::from_nanos(index * INTERVAL_NS),
            Duration::from_nanos(INTERVAL_NS),
            window_start_wall,
            h,
        );
    };
    loop {
        if !stop.load(Ordering::Relaxed) && observer.should_stop() {
            stop.store(true, Ordering::Relaxed);
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => {
                let entry = pending.entry(r.index).or_insert_with(|| {
                    let h = spare.pop().unwrap_or_else(new_histogram);
                    (0, h)
                });
                entry.0 += 1;
                let _ = entry.1.add(&r.latency);
                if let Some(back) = recycle.get(r.thread) {
                    let _ = back.send(r.latency);
                }
                while let Some((count, _)) = pending.get(&next_interval) {
                    if *count < threads {
                        break;
                    }
                    if let Some((_, mut h)) = pending.remove(&next_interval) {
                        emit(next_interval, &h, observer);
                        last_interval = Some((h.len() as f64, h.value_at_quantile(0.99)));
                        h.reset();
                        spare.push(h);
                    }
                    next_interval += 1;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        observer.on_progress(&Progress {
            elapsed: base.elapsed(),
            warmup: Duration::from_millis(config.warmup_ms),
            window: config
                .messages
                .is_none()
                .then(|| Duration::from_millis(config.duration_ms.unwrap_or(0))),
            verified: lives
                .iter()
                .map(|l| l.verified.load(Ordering::Relaxed))
                .sum(),
            messages_planned: config.messages,
            errors: lives.iter().map(|l| l.errors.load(Ordering::Relaxed)).sum(),
            starved_now: lives
                .iter()
                .map(|l| l.starved_now.load(Ordering::Relaxed))
                .sum(),
            last_interval_per_s: last_interval.map(|l| l.0),
            last_interval_p99_us: last_interval.map(|l| l.1),
        });
    }
    // Threads that finished early sent fewer intervals; emit what is left, in order.
    for (index, (_, h)) in std::mem::take(&mut pending) {
        emit(index, &h, observer);
    }

    let mut merged: Option<ThreadResult> = None;
    for handle in handles {
        let result = match handle.join() {
            Ok(r) => r.context("client thread failed")?,
            Err(_) => bail!("a client thread panicked"),
        };
        match merged.as_mut() {
            None => merged = Some(result),
            Some(m) => m.merge(&result),
        }
    }
    let mut merged = merged.context("no client threads ran")?;
    merged.slots.sort_by_key(|s| s.slot);
    let ran_ns = merged.finished_ns.saturating_sub(measure_start_ns);
    let duration_s = match measure_end_ns {
        Some(end) if !stop.load(Ordering::Relaxed) => (end - measure_start_ns) as f64 / 1e9,
        Some(end) => ran_ns.min(end - measure_start_ns) as f64 / 1e9,
        // To the last echo: not the end of the drain (the wait for each connection's EOF).
        None if merged.last_echo_ns > measure_start_ns => {
            (merged.last_echo_ns - measure_start_ns) as f64 / 1e9
        }
        None => ran_ns as f64 / 1e9,
    };
    let cpu_s = merged.cpu_ns as f64 / 1e9;
    Report::build(
        config,
        env,
        &merged,
        BuildInputs {
            threads,
            duration_s,
            cpu_s,
        },
    )
}

/// Fails when a source address is not of the target's address family (IPv4 vs IPv6).
pub fn check_source_family(target: SocketAddr, sources: &[IpAddr]) -> anyhow::Result<()> {
    if let Some(bad) = sources.iter().find(|a| a.is_ipv4() != target.is_ipv4()) {
        bail!(
            "source address {bad} is not of the target's address family ({target}): give \
             --source-addrs of the same family (IPv4 or IPv6) as --target"
        );
    }
    Ok(())
}

/// Resolves `host:port` to its first socket address.
pub fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve target {target:?} (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("target {target:?} resolves to no address"))
}

/// Expands `--source-addrs` items: single addresses or IPv4 ranges `A.B.C.D-A.B.C.E`.
pub fn parse_source_addrs(items: &[String]) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for item in items.iter().flat_map(|s| s.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        if let Some((a, b)) = item.split_once('-') {
            let a: std::net::Ipv4Addr = a
                .trim()
                .parse()
                .with_context(|| format!("bad source address range {item:?}"))?;
            let b: std::net::Ipv4Addr = b
                .trim()
                .parse()
                .with_context(|| format!("bad source address range {item:?}"))?;
            let (lo, hi) = (u32::from(a), u32::from(b));
            if hi < lo || hi - lo > 1 << 20 {
                bail!("source address range {item:?} is empty or too large");
            }
            out.extend((lo..=hi).map(|x| IpAddr::V4(x.into())));
        } else {
            out.push(
                item.parse()
                    .with_context(|| format!("bad source address {item:?}"))?,
            );
        }
    }
    Ok(out)
}

/// Raises the soft open-files limit to the hard limit when `needed` is more than the soft limit;
/// fails with what is needed and what is available when even the hard limit is too low.
pub fn raise_nofile_limit(needed: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(());
    }
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max < needed {
        bail!(
            "{needed} open files are needed (one per connection plus a few), but the hard limit \
             (RLIMIT_NOFILE) is {}: use fewer --connections, or raise the hard limit \
             (ulimit -Hn, /etc/security/limits.conf) or split the load over several processes",
            lim.rlim_max
        );
    }
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        bail!(
            "{needed} open files are needed but the soft limit is {} and raising it to the hard \
             limit {} failed: {}",
            lim.rlim_cur,
            lim.rlim_max,
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Sleeps until the given UNIX time (returns at once if it has passed).
fn wait_until_unix(at_s: f64) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    if at_s > now {
        std::thread::sleep(Duration::from_secs_f64(at_s - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_address_ranges_expand() {
        let v = parse_source_addrs(&["127.0.0.2-127.0.0.4,127.0.0.9".into()]).unwrap();
        let s: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        assert_eq!(s, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9"]);
        assert!(parse_source_addrs(&["127.0.0.9-127.0.0.2".into()]).is_err());
        assert!(parse_source_addrs(&["nonsense".into()]).is_err());
    }
}
