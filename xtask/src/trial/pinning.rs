//! Where the measured processes run: the server on one half of the CPUs xtask may use, the
//! loadgen on the other, so neither measures the other's work (off with `--no-pin` or on one
//! CPU).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use crate::error::input_error;
use crate::shell;

/// Where processes run: (server CPUs, loadgen CPUs), or unpinned.
#[derive(Debug, Clone, Default)]
pub struct Pinning {
    pub server: Option<Vec<usize>>,
    pub loadgen: Option<Vec<usize>>,
}

impl Pinning {
    /// Separate halves of the allowed CPUs when `pin` and there are two or more.
    pub fn new(pin: bool) -> Self {
        match pin
            .then(|| shell::split_cpus(&shell::allowed_cpus()))
            .flatten()
        {
            Some((server, loadgen)) => Self {
                server: Some(server),
                loadgen: Some(loadgen),
            },
            None => Self::default(),
        }
    }
}

/// `--keep-awake`: one spinner thread per server CPU, pinned there at the `SCHED_IDLE` policy,
/// for as long as this guard lives. The server preempts it as soon as it is woken, and while the
/// server is busy it gets next to nothing (weight 3 against a normal thread's 1,024, about
/// 0.3%); what it removes is the idle state in between. On a virtual machine an idle vCPU
/// halts, and waking it takes 50 µs to milliseconds of the host's time — counted in the
/// server's latency and, while the host runs the waking vCPU's request, taken from the
/// loadgen's CPU (docs/performance.md, section 9). Bare-metal C-states do the same on a smaller
/// scale. The spinners change the server's surroundings, not its work: its CPU time and memory
/// are its own, and the manifest records `keep_awake`.
#[derive(Debug)]
pub struct KeepAwake {
    stop: Arc<AtomicBool>,
    spinners: Vec<JoinHandle<()>>,
    tids: Vec<libc::pid_t>,
}

impl KeepAwake {
    /// Starts the spinners when `keep_awake`; `None` otherwise. An error when the server is not
    /// pinned (its CPUs unknown) or a spinner cannot be made idle-priority: it never spins at a
    /// priority that could take time from the server.
    pub fn start(keep_awake: bool, pinning: &Pinning) -> Result<Option<Self>> {
        if !keep_awake {
            return Ok(None);
        }
        let Some(cpus) = pinning.server.as_deref() else {
            return Err(input_error(
                "--keep-awake keeps the server's CPUs busy while idle, so it needs the server \
                 pinned to CPUs of its own: at least two CPUs, and no --no-pin",
            ));
        };
        let awake = Self::on(cpus)?;
        eprintln!(
            "keep-awake: an idle-priority spinner on each of the server's CPUs {cpus:?} while it \
             is measured"
        );
        Ok(Some(awake))
    }

    /// Starts one spinner on each of `cpus`.
    pub fn on(cpus: &[usize]) -> Result<Self> {
        let mut awake = Self {
            stop: Arc::new(AtomicBool::new(false)),
            spinners: Vec::with_capacity(cpus.len()),
            tids: Vec::with_capacity(cpus.len()),
        };
        for &cpu in cpus {
            let stop = Arc::clone(&awake.stop);
            let (ready_tx, ready_rx) = mpsc::channel();
            let spinner = std::thread::Builder::new()
                .name(format!("keep-awake-{cpu}"))
                .spawn(move || {
                    let ready = idle_on(cpu);
                    let ok = ready.is_ok();
                    // SAFETY: gettid has no preconditions.
                    let _ = ready_tx.send(ready.map(|()| unsafe { libc::gettid() }));
                    while ok && !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
                .context("starting a --keep-awake spinner thread")?;
            awake.spinners.push(spinner);
            // Dropping `awake` on an error stops the spinners already started.
            let tid = ready_rx
                .recv()
                .context("a --keep-awake spinner ended before it started")?
                .with_context(|| format!("--keep-awake on CPU {cpu}"))?;
            awake.tids.push(tid);
        }
        Ok(awake)
    }

    /// The spinner threads' ids (one per CPU, in order).
    pub fn tids(&self) -> &[libc::pid_t] {
        &self.tids
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for spinner in self.spinners.drain(..) {
            let _ = spinner.join();
        }
    }
}

/// Makes the calling thread idle-priority, then moves it to `cpu` (in that order, so it never
/// runs there at normal priority).
fn idle_on(cpu: usize) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let set = shell::cpu_set(&[cpu]);
    // SAFETY: `set` is a valid cpu_set_t of the size given; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field `n` (1-based, as in proc(5)) of /proc/self/task/TID/stat.
    fn task_stat_field(tid: libc::pid_t, n: usize) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        shell::stat_fields(&stat)
            .ok()?
            .get(n - 3)
            .map(|f| f.to_string())
    }

    #[test]
    fn spinners_run_idle_priority_on_their_cpu_and_stop_when_dropped() {
        let cpu = shell::allowed_cpus()[0];
        let awake = KeepAwake::on(&[cpu]).expect("SCHED_IDLE needs no privilege");
        let tid = awake.tids()[0];
        // Field 41: the scheduling policy.
        assert_eq!(
            task_stat_field(tid, 41).as_deref(),
            Some(libc::SCHED_IDLE.to_string().as_str())
        );
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
            .expect("the spinner's status");
        let allowed = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .map(str::trim);
        assert_eq!(allowed, Some(cpu.to_string().as_str()));
        drop(awake);
        assert!(
            task_stat_field(tid, 41).is_none(),
            "the spinner thread {tid} still exists after the guard was dropped"
        );
    }

    #[test]
    fn keep_awake_is_off_unless_asked_and_needs_a_pinned_server() {
        assert!(
            KeepAwake::start(false, &Pinning::default())
                .expect("off")
                .is_none()
        );
        let error = KeepAwake::start(true, &Pinning::default()).expect_err("unpinned");
        assert!(format!("{error:#}").contains("pinned"), "{error:#}");
    }
}
