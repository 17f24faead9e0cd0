//! The environment a measurement ran in: host, cores, kernel, tool version, git commit, start
//! time. Recorded in every report (`env`) and reused by `xtask` for its run manifests.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

/// Where and when a measurement ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Env {
    /// Host name.
    pub host: String,
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// Kernel name and release, e.g. `Linux 6.8.0-45-generic`.
    pub kernel: String,
    /// Version of the loadgen package that wrote the report.
    pub loadgen_version: String,
    /// Git commit of the source tree loadgen was built from, if known.
    pub git_commit: Option<String>,
    /// Start time of the run, RFC 3339 UTC.
    pub start_time: String,
    /// Start time of the run, seconds since the UNIX epoch.
    pub start_unix_s: f64,
}

/// Captures the environment now (start time = now).
pub fn capture() -> Env {
    capture_at(SystemTime::now())
}

/// Captures the environment with the given start time.
pub fn capture_at(start: SystemTime) -> Env {
    Env {
        host: host_name(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        kernel: kernel(),
        loadgen_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: git_commit(Path::new(env!("CARGO_MANIFEST_DIR"))),
        start_time: humantime::format_rfc3339_millis(start).to_string(),
        start_unix_s: start
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
    }
}

/// This machine's host name (empty if it cannot be read as UTF-8).
pub fn host_name() -> String {
    gethostname::gethostname().into_string().unwrap_or_default()
}

/// Kernel name and release from `uname(2)`, e.g. `Linux 6.8.0`.
pub fn kernel() -> String {
    // SAFETY: utsname is plain old data; uname fills it and we read NUL-terminated fields.
    unsafe {
        let mut uts: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut uts) != 0 {
            return String::from("unknown");
        }
        let field = |f: &[libc::c_char]| {
            let bytes: Vec<u8> = f
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        format!("{} {}", field(&uts.sysname), field(&uts.release))
    }
}

/// The commit `HEAD` of the git work tree containing `dir` (with `-dirty` when it has
/// uncommitted changes), or `None` when git or the repository is unavailable.
pub fn git_commit(dir: &Path) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    if commit.is_empty() {
        return None;
    }
    let dirty = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_something_plausible() {
        let env = capture();
        assert!(env.cores >= 1);
        assert!(!env.kernel.is_empty());
        assert!(env.start_time.ends_with('Z'), "{}", env.start_time);
        assert!(env.start_unix_s > 1.6e9);
        assert_eq!(env.loadgen_version, env!("CARGO_PKG_VERSION"));
    }
}
