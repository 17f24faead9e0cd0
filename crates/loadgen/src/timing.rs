//! Which timing mode a run uses (`--timing auto|precise|sleep`), and why, in plain words.
//!
//! `precise` spins rather than sleeps, so it must never take the cores of a server under test on
//! the same machine, nor every core of a shared CI machine. `auto` therefore picks it only when
//! the loadgen's threads have cores of their own: its CPU affinity mask (what `taskset`, xtask's
//! pinning or a container's cpuset allow) is a strict subset of the online CPUs, holds at least
//! one CPU per client thread, and none of those CPUs was busy with other work just before the
//! run (sampled from `/proc/stat` over [`BUSY_SAMPLE`]). Otherwise `sleep`: it blocks until
//! shortly before each send and its lateness is measured and judged like any other
//! (`schedule.loop_lag_us`, `valid`). The last condition matters on a shared machine: a spinning
//! thread is always runnable, so the scheduler never lets it preempt other work on its core and
//! it waits out their time slices (milliseconds), while a sleeping one that wakes up does
//! preempt them.
//!
//! [`choose`] is pure (the CPUs are an argument); [`CpuView::current`] and
//! [`CpuView::sample_busy`] read them from the OS.
//! The choice goes into the report as `timing` and into the human summary.

use crate::config::TimingMode;
use serde::{Deserialize, Serialize};

/// Sleep mode: the timer wakes the loop this long before a send, and it spins the rest. On the
/// 2-vCPU KVM guest this was measured on, a timerfd wake-up with 1 ns timer slack was late by
/// p50 26–43 µs and p99 64–98 µs for gaps of 0.5–2 ms (p99.9 0.3–1.5 ms): waking 100 µs early
/// puts ~99% of sends on time while spinning at most 100 µs per gap.
pub const SLEEP_WAKE_EARLY_NS: u64 = 100_000;
/// Precise mode: it sleeps only across gaps longer than this with nothing in flight, and wakes
/// this long before the send (the same guest's p99.9 wake-up lateness stayed below 2 ms).
pub const PRECISE_WAKE_EARLY_NS: u64 = 2_000_000;
/// How long `auto` watches the loadgen's CPUs before a run to see whether other work runs there.
pub const BUSY_SAMPLE: std::time::Duration = std::time::Duration::from_millis(100);
/// `auto` spins only when none of its CPUs was busier than this with other work in the sample.
pub const MAX_OTHERS_BUSY: f64 = 0.1;

/// The CPUs a process may use.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuView {
    /// CPUs in the calling thread's affinity mask, ascending.
    pub allowed: Vec<usize>,
    /// CPUs online on the machine.
    pub online: usize,
    /// The busiest allowed CPU and the fraction of time it was busy just before the run (not
    /// sampled: `None`).
    pub busiest: Option<(usize, f64)>,
}

impl CpuView {
    /// The calling thread's affinity mask (`sched_getaffinity`) and the online CPU count.
    pub fn current() -> CpuView {
        // SAFETY: sysconf has no preconditions.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
        // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size into it.
        let allowed = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                (0..online).collect()
            } else {
                (0..libc::CPU_SETSIZE as usize)
                    .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                    .collect()
            }
        };
        CpuView {
            allowed,
            online,
            busiest: None,
        }
    }

    /// Whether the process may run on only some of the online CPUs (it is pinned).
    pub fn pinned(&self) -> bool {
        self.allowed.len() < self.online
    }

    /// Watches the allowed CPUs for `over` (`/proc/stat`) and keeps the busiest one's busy
    /// fraction (time not idle, steal included) in [`Self::busiest`]. Left `None` where
    /// `/proc/stat` cannot be read.
    pub fn sample_busy(&mut self, over: std::time::Duration) {
        let before = read_cpu_times();
        std::thread::sleep(over);
        let after = read_cpu_times();
        self.busiest = busiest(&self.allowed, &before, &after);
    }
}

/// One CPU's times from `/proc/stat`, in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub cpu: usize,
    /// Every field but idle and iowait (steal included).
    pub busy: u64,
    pub total: u64,
    /// Time the hypervisor ran something else while this virtual CPU wanted to run.
    pub steal: u64,
}

/// The times of every CPU in `/proc/stat` (empty when it cannot be read).
pub fn read_cpu_times() -> Vec<CpuTimes> {
    std::fs::read_to_string("/proc/stat")
        .map(|text| parse_cpu_times(&text))
        .unwrap_or_default()
}

/// The `cpuN` lines of `/proc/stat`.
fn parse_cpu_times(text: &str) -> Vec<CpuTimes> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let cpu = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
            let values: Vec<u64> = fields.take(8).filter_map(|v| v.parse().ok()).collect();
            let field = |i: usize| values.get(i).copied().unwrap_or(0);
            let total: u64 = values.iter().sum();
            Some(CpuTimes {
                cpu,
                busy: total.saturating_sub(field(3) + field(4)),
                total,
                steal: field(7),
            })
        })
        .collect()
}

/// Steal time (ms) of `cpus` between two readings of [`read_cpu_times`]: how long the
/// hypervisor kept them from running while they had work. `None` when a CPU is missing from
/// either reading (no `/proc/stat`).
pub fn steal_ms(cpus: &[usize], before: &[CpuTimes], after: &[CpuTimes]) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0;
    for &cpu in cpus {
        let then = before.iter().find(|t| t.cpu == cpu)?;
        let now = after.iter().find(|t| t.cpu == cpu)?;
        ticks += now.steal.saturating_sub(then.steal);
    }
    Some(ticks as f64 * 1000.0 / ticks_per_s)
}

/// The allowed CPU that was busiest between two samples, and its busy fraction.
fn busiest(allowed: &[usize], before: &[CpuTimes], after: &[CpuTimes]) -> Option<(usize, f64)> {
    allowed
        .iter()
        .filter_map(|&cpu| {
            let then = before.iter().find(|t| t.cpu == cpu)?;
            let now = after.iter().find(|t| t.cpu == cpu)?;
            let total = now.total.saturating_sub(then.total);
            (total > 0).then(|| {
                (
                    cpu,
                    now.busy.saturating_sub(then.busy) as f64 / total as f64,
                )
            })
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The timing a run used (`timing` in the report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimingChoice {
    /// What `--timing` asked for (`auto`, `precise` or `sleep`).
    pub requested: TimingMode,
    /// What ran: `precise` or `sleep`.
    pub mode: TimingMode,
    /// Why, in plain words.
    pub reason: String,
    /// How long before a send the loop stops sleeping and spins (µs).
    pub wake_early_us: u64,
}

impl TimingChoice {
    /// Whether the loop spins rather than sleeps (closed loop: busy-polls).
    pub fn precise(&self) -> bool {
        self.mode == TimingMode::Precise
    }
}

/// Resolves `requested` for an open-loop (`open_loop`) or closed-loop run of `threads` client
/// threads on `cpus`. In closed loop `auto` blocks until an echo comes: it has no schedule to
/// keep, and a busy-polling thread on a shared machine waits out other work's time slices
/// (`--timing precise` busy-polls, so that a 1-connection round trip shows the server rather
/// than two wake-ups).
pub fn choose_for(
    requested: TimingMode,
    open_loop: bool,
    threads: usize,
    cpus: &CpuView,
) -> TimingChoice {
    if open_loop || requested != TimingMode::Auto {
        return choose(requested, threads, cpus);
    }
    TimingChoice {
        requested,
        mode: TimingMode::Sleep,
        reason: "closed loop: the loop blocks until an echo comes (give --timing precise to \
                 busy-poll)"
            .to_string(),
        wake_early_us: SLEEP_WAKE_EARLY_NS / 1_000,
    }
}

/// Resolves `requested` for an open-loop run of `threads` client threads on `cpus`.
pub fn choose(requested: TimingMode, threads: usize, cpus: &CpuView) -> TimingChoice {
    let list = cpu_list(&cpus.allowed);
    let n = cpus.allowed.len();
    let (mode, reason) = match requested {
        TimingMode::Precise => (
            TimingMode::Precise,
            "--timing precise was given: the loop spins rather than sleeps".to_string(),
        ),
        TimingMode::Sleep => (
            TimingMode::Sleep,
            "--timing sleep was given: the loop sleeps until shortly before each send".to_string(),
        ),
        TimingMode::Auto
            if n < cpus.online
                && n >= threads
                && let Some((cpu, busy)) = cpus.busiest
                && busy > MAX_OTHERS_BUSY =>
        {
            (
                TimingMode::Sleep,
                format!(
                    "the loadgen is pinned (CPU {list}), but CPU {cpu} was {:.0}% busy with other                      work just before the run: a spinning loop would wait out that work's time                      slices, so the loop sleeps until shortly before each send",
                    busy * 100.0
                ),
            )
        }
        TimingMode::Auto if n < cpus.online && n >= threads => (
            TimingMode::Precise,
            format!(
                "the loadgen has cores of its own (pinned to CPU {list}, {n} of {} online, for \
                 {threads} client thread{}), so its loop spins rather than sleeps",
                cpus.online,
                plural(threads)
            ),
        ),
        TimingMode::Auto if n < cpus.online => (
            TimingMode::Sleep,
            format!(
                "{threads} client threads share {n} CPU{} (CPU {list}): spinning threads would \
                 take each other's turns, so the loop sleeps until shortly before each send",
                plural(n)
            ),
        ),
        TimingMode::Auto => (
            TimingMode::Sleep,
            format!(
                "the loadgen may run on every online CPU ({}), where spinning could take a \
                 server's cores, so the loop sleeps until shortly before each send (pin it, e.g. \
                 `taskset -c N`, or give --timing precise to spin)",
                cpus.online
            ),
        ),
    };
    let wake_early_ns = if mode == TimingMode::Precise {
        PRECISE_WAKE_EARLY_NS
    } else {
        SLEEP_WAKE_EARLY_NS
    };
    TimingChoice {
        requested,
        mode,
        reason,
        wake_early_us: wake_early_ns / 1_000,
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `0-3,6`: CPU numbers with runs collapsed.
fn cpu_list(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(allowed: &[usize], online: usize) -> CpuView {
        CpuView {
            allowed: allowed.to_vec(),
            online,
            busiest: None,
        }
    }

    #[test]
    fn auto_sleeps_where_other_work_runs_on_its_cores() {
        let mut view = cpus(&[1], 2);
        view.busiest = Some((1, 0.02));
        assert_eq!(choose(TimingMode::Auto, 1, &view).mode, TimingMode::Precise);
        view.busiest = Some((1, 0.85));
        let c = choose(TimingMode::Auto, 1, &view);
        assert_eq!(c.mode, TimingMode::Sleep);
        assert!(c.reason.contains("CPU 1 was 85% busy"), "{}", c.reason);
        // An explicit mode is kept.
        assert_eq!(
            choose(TimingMode::Precise, 1, &view).mode,
            TimingMode::Precise
        );
    }

    #[test]
    fn busy_fractions_come_from_proc_stat() {
        let before = parse_cpu_times(
            "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 0 5 50 0 0 0 0 0 0\ncpu1 5 0 5 50 0 0 0 0 0 0\nintr 1",
        );
        let after = parse_cpu_times(
            "cpu  99 0 10 200 0 0 0 0 0 0\ncpu0 5 0 5 150 0 0 0 0 0 0\ncpu1 80 0 5 55 20 0 0 0 0 0\n",
        );
        let summary: Vec<_> = before.iter().map(|t| (t.cpu, t.busy, t.total)).collect();
        assert_eq!(summary, [(0, 10, 60), (1, 10, 60)]);
        // CPU 1: 75 busy jiffies of 100 (its 20 of iowait count as idle).
        assert_eq!(busiest(&[0, 1], &before, &after), Some((1, 0.75)));
        assert_eq!(busiest(&[0], &before, &after), Some((0, 0.0)));
        assert_eq!(busiest(&[7], &before, &after), None);
        // Steal is the eighth field: CPU 1 lost 30 ticks to the hypervisor, CPU 0 none.
        let stolen = parse_cpu_times("cpu0 5 0 5 150 0 0 0 0 0 0\ncpu1 80 0 5 55 20 0 0 30 0 0\n");
        // SAFETY: sysconf has no preconditions.
        let ms_per_tick = 1000.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(steal_ms(&[1], &after, &stolen), Some(30.0 * ms_per_tick));
        assert_eq!(steal_ms(&[0, 1], &after, &stolen), Some(30.0 * ms_per_tick));
        assert_eq!(steal_ms(&[0], &after, &stolen), Some(0.0));
        assert_eq!(steal_ms(&[2], &after, &stolen), None);
        let mut view = CpuView::current();
        view.sample_busy(std::time::Duration::from_millis(5));
        if let Some((cpu, busy)) = view.busiest {
            assert!(view.allowed.contains(&cpu) && (0.0..=1.0).contains(&busy));
        }
    }

    #[test]
    fn auto_spins_only_with_cores_of_its_own() {
        // Pinned to one of two CPUs, one thread (xtask's pinning on a 2-core machine).
        let c = choose(TimingMode::Auto, 1, &cpus(&[1], 2));
        assert_eq!(c.mode, TimingMode::Precise);
        assert!(
            c.reason.contains("pinned to CPU 1, 1 of 2 online"),
            "{}",
            c.reason
        );
        assert_eq!(c.wake_early_us, PRECISE_WAKE_EARLY_NS / 1_000);
        // Unpinned: every online CPU is allowed.
        let c = choose(TimingMode::Auto, 1, &cpus(&[0, 1], 2));
        assert_eq!(c.mode, TimingMode::Sleep);
        assert!(c.reason.contains("every online CPU (2)"), "{}", c.reason);
        assert_eq!(c.wake_early_us, SLEEP_WAKE_EARLY_NS / 1_000);
        // Pinned, but more threads than CPUs.
        let c = choose(TimingMode::Auto, 4, &cpus(&[4, 5, 6], 8));
        assert_eq!(c.mode, TimingMode::Sleep);
        assert!(
            c.reason.contains("4 client threads share 3 CPUs (CPU 4-6)"),
            "{}",
            c.reason
        );
        // Enough CPUs for the threads.
        let c = choose(TimingMode::Auto, 2, &cpus(&[2, 3, 6], 8));
        assert_eq!(c.mode, TimingMode::Precise);
        assert!(
            c.reason
                .contains("CPU 2-3,6, 3 of 8 online, for 2 client threads")
        );
    }

    #[test]
    fn closed_loop_busy_polls_only_when_asked() {
        let pinned = cpus(&[1], 2);
        let c = choose_for(TimingMode::Auto, false, 1, &pinned);
        assert_eq!(c.mode, TimingMode::Sleep);
        assert!(c.reason.starts_with("closed loop"), "{}", c.reason);
        assert_eq!(
            choose_for(TimingMode::Precise, false, 1, &pinned).mode,
            TimingMode::Precise
        );
        assert_eq!(
            choose_for(TimingMode::Auto, true, 1, &pinned),
            choose(TimingMode::Auto, 1, &pinned)
        );
    }

    #[test]
    fn an_explicit_mode_is_kept_and_says_so() {
        for (asked, mode) in [
            (TimingMode::Precise, TimingMode::Precise),
            (TimingMode::Sleep, TimingMode::Sleep),
        ] {
            let c = choose(asked, 16, &cpus(&[0, 1], 2));
            assert_eq!((c.requested, c.mode), (asked, mode));
            assert!(c.reason.contains(&format!("--timing {}", asked.as_str())));
        }
    }

    #[test]
    fn the_current_cpus_are_read() {
        let view = CpuView::current();
        assert!(view.online >= 1);
        assert!(!view.allowed.is_empty());
        assert!(view.allowed.len() <= view.online.max(view.allowed.len()));
    }
}
