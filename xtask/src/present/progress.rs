//! Progress of a run on stderr: one indicatif bar (with the time left) on a terminal, one plain
//! line per finished step otherwise, so logs of CI runs stay readable.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress output: one indicatif bar on a terminal, plain lines otherwise (each with the
/// estimated time left).
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: std::cell::Cell<u64>,
    started: Instant,
}

/// `about 2m 10s left`, from the mean time per finished step; empty before the first step.
pub fn time_left(done: u64, total: u64, elapsed: Duration) -> String {
    if done == 0 || done >= total {
        return String::new();
    }
    let left = elapsed.as_secs_f64() / done as f64 * (total - done) as f64;
    format!(
        "about {} left",
        humantime::format_duration(Duration::from_secs(left.ceil() as u64))
    )
}

impl Progress {
    /// A bar over `total` steps when stderr is a terminal.
    pub fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg} (about {eta} left)")
            {
                bar.set_style(style);
            }
            bar
        });
        Self {
            bar,
            total,
            done: std::cell::Cell::new(0),
            started: Instant::now(),
        }
    }

    /// Says what runs now.
    pub fn start(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// A finished step with its result line.
    pub fn finish_step(&self, line: String) {
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                bar.inc(1);
            }
            None => {
                self.done.set(self.done.get() + 1);
                let left = time_left(self.done.get(), self.total, self.started.elapsed());
                if left.is_empty() {
                    eprintln!("{line}");
                } else {
                    eprintln!("{line} ({left})");
                }
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_is_the_mean_step_times_the_steps_left() {
        assert_eq!(time_left(0, 10, Duration::from_secs(5)), "");
        assert_eq!(time_left(10, 10, Duration::from_secs(5)), "");
        assert_eq!(time_left(2, 10, Duration::from_secs(3)), "about 12s left");
        assert_eq!(
            time_left(1, 100, Duration::from_secs(2)),
            "about 3m 18s left"
        );
    }
}
