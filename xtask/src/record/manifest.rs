//! Run directories and their `manifest.json`: what makes every number reproducible.
//!
//! A run directory is `results/runs/<UTC stamp>-<command>/` (or `--out DIR`). Its manifest
//! records the command line, host, cores, kernel, git commit (and whether the tree was dirty),
//! tool versions, the seed and the full configuration. `results/README.md` documents the fields.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{read_json, write_json};
use crate::shell::command_output;

/// Schema id of `manifest.json`.
pub const MANIFEST_SCHEMA: &str = "echolab.xtask.manifest/1";

/// The contents of `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub schema: String,
    /// `bench`, `capacity`, `regress` …
    pub command: String,
    /// xtask's own argv, as given.
    pub command_line: Vec<String>,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub host: String,
    /// CPUs available to xtask (sched_getaffinity).
    pub cores: usize,
    /// `uname -r`-style kernel release.
    pub kernel: String,
    pub os: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub versions: Versions,
    /// Command-specific configuration (the bench plan, the SLO …).
    pub config: serde_json::Value,
    /// CPUs the server was pinned to (None: not pinned). A built-in strategy sizes its default
    /// worker count from these, so on 2 cores a pinned server sees one CPU.
    #[serde(default)]
    pub server_cpus: Option<Vec<usize>>,
    /// CPUs the loadgen was pinned to (None: not pinned).
    #[serde(default)]
    pub loadgen_cpus: Option<Vec<usize>>,
}

/// Versions of the tools involved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Versions {
    pub xtask: String,
    pub rustc: Option<String>,
    pub echo_server: Option<String>,
    pub loadgen: Option<String>,
}

impl Manifest {
    /// Collects the environment now; `config` is the command's own settings.
    pub fn collect(command: &str, config: serde_json::Value, root: &Path) -> Self {
        let git_commit = command_output("git", &["rev-parse", "HEAD"], root);
        let git_dirty = git_commit.as_ref().and_then(|_| {
            command_output(
                "git",
                &["status", "--porcelain", "--untracked-files=no"],
                root,
            )
            .map(|status| !status.is_empty())
        });
        Self {
            schema: MANIFEST_SCHEMA.to_string(),
            command: command.to_string(),
            command_line: std::env::args().collect(),
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            cores: crate::shell::allowed_cpus().len(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|release| release.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            os: std::env::consts::OS.to_string(),
            git_commit,
            git_dirty,
            server_cpus: None,
            loadgen_cpus: None,
            versions: Versions {
                xtask: env!("CARGO_PKG_VERSION").to_string(),
                rustc: command_output("rustc", &["--version"], root),
                echo_server: None,
                loadgen: None,
            },
            config,
        }
    }

    /// Writes `manifest.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json(&dir.join("manifest.json"), self)
    }

    /// Reads `manifest.json` from a run directory.
    pub fn read(dir: &Path) -> Result<Self> {
        read_json(&dir.join("manifest.json"))
    }
}

/// `20261125T120000Z` for a time.
pub fn utc_stamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace(['-', ':'], "")
}

/// Creates the run directory: `out` if given, else `results/runs/<stamp>-<name>` under `root`
/// (with a numeric suffix if that exists already).
pub fn create_run_dir(root: &Path, name: &str, out: Option<&Path>) -> Result<PathBuf> {
    let dir = match out {
        Some(dir) => dir.to_path_buf(),
        None => {
            let base = root
                .join("results")
                .join("runs")
                .join(format!("{}-{name}", utc_stamp(SystemTime::now())));
            let mut candidate = base.clone();
            let mut suffix = 2;
            while candidate.exists() {
                candidate = PathBuf::from(format!("{}-{suffix}", base.display()));
                suffix += 1;
            }
            candidate
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_with_every_field() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = serde_json::json!({"trials": 3, "seed": 42});
        let manifest = Manifest::collect("bench", config.clone(), &crate::shell::project_root());
        manifest.write(dir.path()).expect("writes");
        let text = std::fs::read_to_string(dir.path().join("manifest.json")).expect("file");
        let raw: serde_json::Value = serde_json::from_str(&text).expect("json");
        for key in [
            "schema",
            "command",
            "command_line",
            "started_at",
            "host",
            "cores",
            "kernel",
            "os",
            "git_commit",
            "git_dirty",
            "versions",
            "config",
        ] {
            assert!(raw.get(key).is_some(), "manifest lacks {key}");
        }
        let back = Manifest::read(dir.path()).expect("reads back");
        assert_eq!(back, manifest);
        assert_eq!(back.config, config);
        assert_eq!(back.schema, MANIFEST_SCHEMA);
        assert!(back.cores >= 1);
        assert!(back.versions.rustc.is_some_and(|v| v.starts_with("rustc")));
        // The workspace is a git repository: the commit is a full hex id.
        let commit = back.git_commit.expect("git commit");
        assert_eq!(commit.len(), 40);
        assert!(commit.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn stamps_and_run_dirs() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_072_000);
        assert_eq!(utc_stamp(time), "20251125T120000Z");
        let root = tempfile::tempdir().expect("temp dir");
        let first = create_run_dir(root.path(), "bench", None).expect("creates");
        let second = create_run_dir(root.path(), "bench", None).expect("creates");
        assert_ne!(
            first, second,
            "a second run in the same second gets its own directory"
        );
        assert!(first.starts_with(root.path().join("results/runs")));
        assert!(first.to_string_lossy().ends_with("-bench"));
    }
}
