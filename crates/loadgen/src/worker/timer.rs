//! How the poll loop waits ([`WaitPolicy`], pure), and the open-loop send timer: a timerfd armed
//! shortly before the next intended send time, registered with the poll loop. The timer wakes the
//! loop with microsecond precision (epoll_wait's own timeout has millisecond granularity); the
//! loop then spins the rest, so that a late wake-up of an idle (virtual) CPU is not charged to the
//! server as latency.
//!
//! Try it: `cargo test -p loadgen --lib worker::timer`.

use mio::{Interest, Registry, Token};
use std::io;

/// How a client thread waits: the rules of its timing mode (`--timing`, see
/// [`crate::timing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaitPolicy {
    /// Precise: spin rather than block while messages are in flight (their echoes are read the
    /// moment they arrive) and, in closed loop, always (busy-poll).
    pub precise: bool,
    /// Stop sleeping this long before a send is due and spin the rest.
    pub wake_early_ns: u64,
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// A send is due: poll the sockets without waiting, then send.
    Now,
    /// Spin: poll the sockets without waiting; time that finds nothing to do is spin-waiting,
    /// not work.
    Spin,
    /// Block in the poll until `deadline_ns` at the latest; in open loop the send timer wakes it
    /// at `timer_at_ns`.
    Block {
        deadline_ns: u64,
        timer_at_ns: Option<u64>,
    },
}

impl WaitPolicy {
    /// How to wait at `now`: `next_due` is the earliest intended send time queued (open loop),
    /// `in_flight` whether any message awaits its echo, `deadline_ns` when the loop must look
    /// again anyway (housekeeping, a window's edge).
    pub fn wait(
        &self,
        now: u64,
        open_loop: bool,
        next_due: Option<u64>,
        in_flight: bool,
        deadline_ns: u64,
    ) -> Wait {
        if let Some(due) = next_due {
            if due <= now {
                return Wait::Now;
            }
            if due - now <= self.wake_early_ns {
                return Wait::Spin;
            }
        }
        if self.precise && (in_flight || !open_loop) {
            return Wait::Spin;
        }
        Wait::Block {
            deadline_ns: deadline_ns.max(now),
            timer_at_ns: next_due.map(|due| due - self.wake_early_ns),
        }
    }
}

/// Spin-waiting longer than this (one streak of idle poll rounds) is counted by the thread's CPU
/// clock from then on, not the wall clock: a thread preempted while it spins was not on a CPU, and
/// that time must not be taken off its CPU time as "spin".
pub(crate) const SPIN_WALL_LIMIT_NS: u64 = 20_000;

/// Counts spin-waiting: poll rounds that found nothing to do, back to back (a *streak*). A
/// streak counts from the start of its first idle round to the start of the next round that
/// found work, by the wall clock up to [`SPIN_WALL_LIMIT_NS`] and by the thread's CPU clock
/// beyond (read twice per long streak, never for short ones).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SpinMeter {
    total_ns: u64,
    streak: Option<Streak>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Streak {
    start_ns: u64,
    /// (wall, CPU) when the streak passed the wall-clock limit.
    cpu_mark: Option<(u64, u64)>,
}

impl SpinMeter {
    /// A round that began at `round_start` found nothing to do; it ended at `now`. `cpu` reads
    /// the thread's CPU clock (ns).
    pub fn idle(&mut self, round_start: u64, now: u64, cpu: impl FnOnce() -> u64) {
        let streak = self.streak.get_or_insert(Streak {
            start_ns: round_start,
            cpu_mark: None,
        });
        if streak.cpu_mark.is_none() && now.saturating_sub(streak.start_ns) >= SPIN_WALL_LIMIT_NS {
            streak.cpu_mark = Some((now, cpu()));
        }
    }

    /// A round that began at `round_start` found work: a streak before it ends there.
    pub fn busy(&mut self, round_start: u64, cpu: impl FnOnce() -> u64) {
        if let Some(streak) = self.streak.take() {
            self.total_ns += match streak.cpu_mark {
                None => round_start.saturating_sub(streak.start_ns),
                Some((wall, cpu_then)) => {
                    wall.saturating_sub(streak.start_ns) + cpu().saturating_sub(cpu_then)
                }
            };
        }
    }

    /// Spin-waiting so far, an unfinished streak counted by the wall clock up to `now`.
    pub fn total(&self, now: u64) -> u64 {
        self.total_ns + self.streak.map_or(0, |s| now.saturating_sub(s.start_ns))
    }
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), ns.
pub(crate) fn thread_cpu_clock_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sets the calling thread's timer slack (how late the kernel may fire its timers to batch
/// wake-ups; 50 µs by default) to `ns`.
pub(crate) fn set_timer_slack(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0);
    }
}

/// The token of the open-loop send timer (connections use their index).
pub(super) const TIMER_TOKEN: Token = Token(usize::MAX - 1);

/// A timerfd armed at the next intended send time (absolute, CLOCK_MONOTONIC).
pub(super) struct SendTimer {
    fd: std::os::fd::OwnedFd,
    /// CLOCK_MONOTONIC nanoseconds at the run's base instant.
    base_mono_ns: u64,
    armed_at_ns: Option<u64>,
}

impl SendTimer {
    pub fn new(registry: &Registry, now_ns: u64) -> io::Result<SendTimer> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: timerfd_create returns a new descriptor we own (or -1).
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a valid descriptor that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        registry.register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            TIMER_TOKEN,
            Interest::READABLE,
        )?;
        // Instant is CLOCK_MONOTONIC on Linux, so the base instant is now minus elapsed.
        let base_mono_ns = monotonic_ns().saturating_sub(now_ns);
        Ok(SendTimer {
            fd,
            base_mono_ns,
            armed_at_ns: None,
        })
    }

    /// Arms the timer for `due_ns` (relative to the run's base) unless it already is.
    pub fn arm(&mut self, due_ns: u64) {
        use std::os::fd::AsRawFd;
        if self.armed_at_ns == Some(due_ns) {
            return;
        }
        let at = self.base_mono_ns + due_ns;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                tv_nsec: (at % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: the descriptor is ours; spec is a valid itimerspec; old value not wanted.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc == 0 {
            self.armed_at_ns = Some(due_ns);
        }
    }

    /// Consumes the expiration so that the next one is a new readiness edge.
    pub fn fired(&mut self) {
        use std::os::fd::AsRawFd;
        let mut ticks = [0u8; 8];
        // SAFETY: reads at most 8 bytes into our buffer from our nonblocking descriptor.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), ticks.as_mut_ptr().cast(), 8) };
        self.armed_at_ns = None;
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;

    const SLEEP: WaitPolicy = WaitPolicy {
        precise: false,
        wake_early_ns: 100 * US,
    };
    const PRECISE: WaitPolicy = WaitPolicy {
        precise: true,
        wake_early_ns: 2_000 * US,
    };

    #[test]
    fn spin_streaks_count_by_the_wall_clock_then_by_cpu_time() {
        let mut m = SpinMeter::default();
        // Three idle rounds from 0 to 6 µs, then a round with work at 6 µs: 6 µs of spin,
        // and the CPU clock is never read.
        for (start, end) in [(0, 2), (2, 4), (4, 6)] {
            m.idle(start * US, end * US, || {
                panic!("short streaks need no CPU clock")
            });
        }
        m.busy(6 * US, || panic!("short streaks need no CPU clock"));
        assert_eq!(m.total(6 * US), 6 * US);
        // A long streak from 100 µs to 1,100 µs during which the thread was preempted: 30 µs
        // by the wall clock, then only what the CPU clock says (70 µs of the remaining 970).
        m.idle(100 * US, 105 * US, || 0);
        m.idle(105 * US, 130 * US, || 5_000 * US);
        m.idle(130 * US, 1_000 * US, || panic!("read once per streak"));
        assert_eq!(
            m.total(1_000 * US),
            6 * US + 900 * US,
            "unfinished: wall clock"
        );
        m.busy(1_100 * US, || 5_070 * US);
        assert_eq!(m.total(2_000 * US), 6 * US + 30 * US + 70 * US);
        // A round with work and no streak before it changes nothing.
        m.busy(3_000 * US, || panic!("no streak"));
        assert_eq!(m.total(3_000 * US), 106 * US);
    }

    #[test]
    fn sleep_mode_blocks_until_shortly_before_the_send_then_spins() {
        let hk = 10_000 * US;
        // A send 500 µs away: sleep, the timer 100 µs early.
        assert_eq!(
            SLEEP.wait(0, true, Some(500 * US), true, hk),
            Wait::Block {
                deadline_ns: hk,
                timer_at_ns: Some(400 * US)
            }
        );
        // Within 100 µs: spin; due: send.
        assert_eq!(
            SLEEP.wait(420 * US, true, Some(500 * US), false, hk),
            Wait::Spin
        );
        assert_eq!(
            SLEEP.wait(500 * US, true, Some(500 * US), false, hk),
            Wait::Now
        );
        // Closed loop: block in the poll until an echo comes.
        assert_eq!(
            SLEEP.wait(0, false, None, true, hk),
            Wait::Block {
                deadline_ns: hk,
                timer_at_ns: None
            }
        );
    }

    #[test]
    fn precise_mode_spins_across_short_gaps_and_while_echoes_are_due() {
        let hk = 10_000 * US;
        // A send 1.5 ms away: spin.
        assert_eq!(
            PRECISE.wait(0, true, Some(1_500 * US), false, hk),
            Wait::Spin
        );
        // 5 ms away with nothing in flight: sleep, waking 2 ms early.
        assert_eq!(
            PRECISE.wait(0, true, Some(5_000 * US), false, hk),
            Wait::Block {
                deadline_ns: hk,
                timer_at_ns: Some(3_000 * US)
            }
        );
        // ... but with a message in flight, spin so its echo is read when it arrives.
        assert_eq!(
            PRECISE.wait(0, true, Some(5_000 * US), true, hk),
            Wait::Spin
        );
        // Closed loop busy-polls.
        assert_eq!(PRECISE.wait(0, false, None, false, hk), Wait::Spin);
        // Open loop waiting for a step that has not come, nothing in flight: sleep.
        assert_eq!(
            PRECISE.wait(0, true, None, false, hk),
            Wait::Block {
                deadline_ns: hk,
                timer_at_ns: None
            }
        );
    }
}
