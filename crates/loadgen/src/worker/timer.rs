//! The open-loop send timer: a timerfd armed at the next intended send time, registered with
//! the poll loop. It wakes the loop with microsecond precision (epoll_wait's own timeout has
//! millisecond granularity, and every millisecond a send is late would be charged to the server
//! as latency).

use mio::{Interest, Registry, Token};
use std::io;

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
