//! Runs a measurement: resolves the target, raises the open-files limit, chooses how the client
//! threads wait (`--timing`, [`crate::timing`]), starts them, relays their interval histograms,
//! finished steps and live counters to an [`Observer`] (the CLI's progress bar, `.hlog` writer
//! and step lines), then merges what they measured into a [`Report`].
//!
//! A stepped run reads its steps from `--rate-steps`, or as it goes from `--steps-from` (a file,
//! or `-` for standard input; one `RATE DURATION` line per step): a reader thread adds each step
//! to the timeline the client threads follow, and the end of the input ends the run after the
//! last step. Each step's report is built as soon as every thread has handed its part over.

use crate::config::{Config, RateStep, TimingMode};
use crate::report::{BuildInputs, Report, StepReport};
use crate::stats::{LiveCounters, ThreadResult, new_histogram};
use crate::timing::{BUSY_SAMPLE, CpuView, choose_for};
use crate::validity::{InvalidKind, add_kind};
use crate::worker::{
    FromWorker, INTERVAL_NS, StepFeed, Timeline, Timing, WaitPolicy, WorkerSetup, run_worker,
};
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
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
    /// Stepped runs: a step has ended and its last messages are in (called in step order).
    fn on_step(&mut self, _step: &StepReport) {}
    /// Stepped runs: the `--steps-from` input had a line that is not a step; the run ended after
    /// the steps before it (the report says so in `invalid_reasons`).
    fn on_steps_input_error(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// Runs the measurement described by `config` and returns its report. No output is written.
pub fn run(config: &Config) -> anyhow::Result<Report> {
    run_with(config, &mut NoObserver)
}

/// Like [`run`], reporting progress, interval histograms and steps to `observer` as it goes.
/// With `--steps-from`, the steps are read from that file (`-`: standard input).
pub fn run_with(config: &Config, observer: &mut dyn Observer) -> anyhow::Result<Report> {
    config.validate().map_err(|e| anyhow::anyhow!(e))?;
    let steps: Option<Box<dyn BufRead + Send>> = match config.steps_from.as_deref() {
        None => None,
        Some(path) if path.as_os_str() == "-" => {
            Some(Box::new(std::io::BufReader::new(std::io::stdin())))
        }
        Some(path) => Some(Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .with_context(|| format!("opening --steps-from {}", path.display()))?,
        ))),
    };
    run_inner(config, steps, observer)
}

/// Like [`run_with`], reading the steps of a `--steps-from` run from `steps` (the path in the
/// configuration is not opened): one `RATE DURATION` line per step, as they come.
pub fn run_steered(
    config: &Config,
    steps: impl BufRead + Send + 'static,
    observer: &mut dyn Observer,
) -> anyhow::Result<Report> {
    config.validate().map_err(|e| anyhow::anyhow!(e))?;
    if config.steps_from.is_none() {
        bail!("run_steered needs a configuration with steps_from set");
    }
    run_inner(config, Some(Box::new(steps)), observer)
}

fn run_inner(
    config: &Config,
    steps_input: Option<Box<dyn BufRead + Send>>,
    observer: &mut dyn Observer,
) -> anyhow::Result<Report> {
    let target = resolve(&config.target)?;
    let source_addrs = parse_source_addrs(&config.source_addrs)?;
    check_source_family(target, &source_addrs)?;
    raise_nofile_limit(config.connections as u64 + 64)?;
    // Steered: the first step is needed before anything starts.
    let mut steps_input = steps_input.map(|input| StepLines { input, line: 0 });
    let first_step = match steps_input.as_mut() {
        Some(lines) => match lines.next_step() {
            Some(Ok(step)) => Some(step),
            Some(Err(e)) => bail!("--steps-from {e}"),
            None => bail!("--steps-from gave no step (expected lines like `20000 2s`)"),
        },
        None => None,
    };
    let threads = config.threads.min(config.connections).max(1);
    let mut cpus = CpuView::current();
    if config.timing == TimingMode::Auto && config.open_loop() && cpus.pinned() {
        // Before --start-at's wait, so that agents still start together.
        cpus.sample_busy(BUSY_SAMPLE);
    }
    let timing_choice = choose_for(config.timing, config.open_loop(), threads, &cpus);
    if let Some(at) = config.start_at_unix_s {
        wait_until_unix(at);
    }
    let wait = WaitPolicy {
        precise: timing_choice.precise(),
        wake_early_ns: timing_choice.wake_early_us * 1_000,
    };
    let timeline = Timeline::new(config, first_step);
    let warmup_ns = config.warmup_ms * 1_000_000;
    let start_wall = SystemTime::now();
    let env = crate::env::capture_at(start_wall);
    let base = Instant::now();
    let steering = steps_input.map(|lines| {
        let feed = Arc::new(StepFeed::new(timeline.clone(), warmup_ns));
        let error = Arc::new(Mutex::new(None));
        let reader = FeedReader {
            feed: feed.clone(),
            base,
            error: error.clone(),
        };
        std::thread::Builder::new()
            .name("loadgen-steps".into())
            .spawn(move || reader.read(lines))
            .map(|_| Steering { feed, error })
    });
    let feed = steering.transpose().context("starting the step reader")?;
    let timing = Timing { base };
    let config_arc = Arc::new(config.clone());
    let source_addrs = Arc::new(source_addrs);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<FromWorker>();
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
            timeline: timeline.clone(),
            feed: feed.as_ref().map(|s| s.feed.clone()),
            wait,
            live,
            stop: stop.clone(),
            to_coordinator: tx.clone(),
            recycled: back_rx,
        };
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-{thread}"))
            .spawn(move || run_worker(setup))
            .context("spawning a client thread")?;
        handles.push(handle);
    }
    drop(tx);

    let measure_start_ns = timeline.first().measure_start_ns;
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
    let mut steps = StepCollector {
        config,
        threads,
        start_wall,
        parts: BTreeMap::new(),
        done: Vec::new(),
    };
    let planned_window = match (config.messages, config.stepped()) {
        (Some(_), _) => None,
        (None, false) => Some(Duration::from_millis(config.duration_ms.unwrap_or(0))),
        (None, true) if config.steps_from.is_none() => Some(Duration::from_millis(
            config.rate_steps.iter().map(|s| s.duration_ms).sum(),
        )),
        (None, true) => None,
    };
    loop {
        if !stop.load(Ordering::Relaxed) && observer.should_stop() {
            stop.store(true, Ordering::Relaxed);
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(FromWorker::Interval(r)) => {
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
            Ok(FromWorker::Step { step, result }) => {
                let timeline = current_timeline(&feed, &timeline);
                steps.add(step, *result, &timeline, observer)?;
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        observer.on_progress(&Progress {
            elapsed: base.elapsed(),
            warmup: Duration::from_millis(config.warmup_ms),
            window: planned_window,
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
    let final_timeline = current_timeline(&feed, &timeline);
    // Steps a thread could not hand over whole (the run was stopped) are built from what came.
    steps.finish(&final_timeline, stop.load(Ordering::Relaxed), observer)?;

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
    let window = final_timeline.window();
    let ran_ns = merged.finished_ns.saturating_sub(measure_start_ns);
    let step_reports = steps.done;
    let duration_s = if config.stepped() {
        step_reports.iter().map(|s| s.duration_s).sum()
    } else {
        match window.measure_end_ns {
            Some(end) if !stop.load(Ordering::Relaxed) => (end - measure_start_ns) as f64 / 1e9,
            Some(end) => ran_ns.min(end - measure_start_ns) as f64 / 1e9,
            // To the last echo: not the end of the drain (the wait for each connection's EOF).
            None if merged.last_echo_ns > measure_start_ns => {
                (merged.last_echo_ns - measure_start_ns) as f64 / 1e9
            }
            None => ran_ns as f64 / 1e9,
        }
    };
    let cpu_s = merged.cpu_ns as f64 / 1e9;
    let mut report = Report::build(
        config,
        env,
        &merged,
        BuildInputs {
            threads,
            duration_s,
            cpu_s,
            timing: Some(timing_choice),
            steps: step_reports,
        },
    )?;
    if let Some(s) = &feed
        && let Some(message) = s.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    {
        observer.on_steps_input_error(&message);
        report.invalid_reasons.push(format!(
            "--steps-from {message}: the run ended after the steps before it"
        ));
        add_kind(&mut report.invalid_kinds, InvalidKind::StepsInput);
        report.valid = false;
    }
    Ok(report)
}

/// The timeline now: the feed's, when steps are read as the run goes.
fn current_timeline(steering: &Option<Steering>, fixed: &Timeline) -> Timeline {
    match steering {
        Some(s) => s.feed.snapshot().1,
        None => fixed.clone(),
    }
}

/// A run whose steps are read as it goes: the timeline they are added to, and the first bad
/// line of the input, if any.
struct Steering {
    feed: Arc<StepFeed>,
    error: Arc<Mutex<Option<String>>>,
}

/// `--steps-from` lines: `RATE DURATION`, blank lines and `#` comments skipped.
struct StepLines {
    input: Box<dyn BufRead + Send>,
    line: usize,
}

impl StepLines {
    /// The next step; `None` at the end of the input (or when it cannot be read).
    fn next_step(&mut self) -> Option<Result<RateStep, String>> {
        let mut text = String::new();
        loop {
            text.clear();
            match self.input.read_line(&mut text) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(format!("line {}: {e}", self.line + 1))),
            }
            self.line += 1;
            if let Some(parsed) = RateStep::parse_line(&text) {
                return Some(parsed.map_err(|e| format!("line {}: {e}", self.line)));
            }
        }
    }
}

/// The thread that adds steps to the timeline as their lines come.
struct FeedReader {
    feed: Arc<StepFeed>,
    base: Instant,
    /// The first bad line, for the report.
    error: Arc<Mutex<Option<String>>>,
}

impl FeedReader {
    fn read(self, mut lines: StepLines) {
        while let Some(step) = lines.next_step() {
            match step {
                Ok(step) => self.feed.push(step, self.base.elapsed().as_nanos() as u64),
                Err(e) => {
                    *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    break;
                }
            }
        }
        self.feed.close();
    }
}

/// Stepped runs: the threads' parts of each step, added up into its report once all are in.
struct StepCollector<'a> {
    config: &'a Config,
    threads: usize,
    start_wall: SystemTime,
    /// Step → (parts received, their sum).
    parts: BTreeMap<usize, (usize, ThreadResult)>,
    /// Reports built, in step order.
    done: Vec<StepReport>,
}

impl StepCollector<'_> {
    /// Adds one thread's part of step `index` (counts and histograms add up; CPU, spin and
    /// wall times add up, the busiest thread's fractions are kept); builds the steps whose parts
    /// are all in.
    fn add(
        &mut self,
        index: usize,
        part: ThreadResult,
        timeline: &Timeline,
        observer: &mut dyn Observer,
    ) -> anyhow::Result<()> {
        let entry = self
            .parts
            .entry(index)
            .or_insert_with(|| (0, ThreadResult::new(0)));
        entry.0 += 1;
        entry.1.merge(&part);
        self.build_ready(timeline, None, observer)
    }

    /// Builds, in order, every step whose parts are all in (with `last`, every step; `Some(true)`
    /// when the run was stopped early, so the last steps may be cut short).
    fn build_ready(
        &mut self,
        timeline: &Timeline,
        last: Option<bool>,
        observer: &mut dyn Observer,
    ) -> anyhow::Result<()> {
        while let Some((&index, (count, _))) = self.parts.first_key_value() {
            if *count < self.threads && last.is_none() {
                return Ok(());
            }
            let Some((_, (_, sum))) = self.parts.pop_first() else {
                return Ok(());
            };
            let Some(step) = timeline.get(index) else {
                continue;
            };
            // The planned window, unless the run was stopped in it (a thread whose connections
            // all ended may hand over before the window's end: its last messages were intended
            // before it, and nothing more was to be sent).
            let planned_ns = step.measured_ns().unwrap_or(0);
            let ran_ns = sum.finished_ns.saturating_sub(step.measure_start_ns);
            let duration_s = if last == Some(true) {
                planned_ns.min(ran_ns)
            } else {
                planned_ns
            } as f64
                / 1e9;
            let start_unix_s = (self.start_wall + Duration::from_nanos(step.measure_start_ns))
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let report = StepReport::build(
                self.config,
                index,
                step.rate_per_s.unwrap_or(0.0),
                (step.measure_start_ns - step.start_ns) / 1_000_000,
                start_unix_s,
                duration_s,
                &sum,
                self.threads,
            )?;
            observer.on_step(&report);
            self.done.push(report);
        }
        Ok(())
    }

    /// Builds what is left once every thread has finished (`stopped`: the run ended early).
    fn finish(
        &mut self,
        timeline: &Timeline,
        stopped: bool,
        observer: &mut dyn Observer,
    ) -> anyhow::Result<()> {
        self.build_ready(timeline, Some(stopped), observer)
    }
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
